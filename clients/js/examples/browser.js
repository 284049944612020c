import { keyStore, identityOf, signIn, TokenStore, whoami, KeygateError } from 'keygate-client';

const store = keyStore(); // IndexedDB: a non-extractable Ed25519 key pair and the session
const { keyPair } = await store.loadOrCreateKeyPair();
const identity = await identityOf(keyPair.publicKey);
const tokens = new TokenStore({ store, clientId: 'my-app', dpop: keyPair }); // dpop: refreshes carry proofs
if (!(await tokens.load())) {
  const approve = (/** @type {any} */ c) => confirm(`Sign in to ${c.fields.audience}?`);
  await tokens.set(await signIn({ identity, keyPair, dpop: true, clientId: 'my-app', offline: true, approve }));
}
try {
  console.log(await whoami(await tokens.accessToken(), { dpop: keyPair })); // refreshed when due, once across tabs
} catch (err) {
  if (err instanceof KeygateError && err.code === 'session_revoked') await tokens.clear();
}
