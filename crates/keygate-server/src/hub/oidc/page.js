// keygate's sign-in page for OpenID Connect clients (docs/oidc.md). The key is the
// web demo's: a non-extractable Ed25519 CryptoKeyPair in IndexedDB (`keygate`),
// created on the first visit (that is sign-up). The page signs the Hub's
// challenge only after checking that it names this origin and this key.
import { keyStore } from './keygate-keystore.js';
import { identityOf, didKeyOf } from './keygate-identity.js';
import { inspectChallenge, signText } from './keygate-protocol.js';

const main = document.querySelector('main');
const request = main.dataset.request;
const promptNone = main.dataset.prompt === 'none';
const hint = main.dataset.hint;
const $ = (id) => document.getElementById(id);
const show = (id, on = true) => { $(id).hidden = !on; };
const status = (text) => { $('status').textContent = text; };
const fail = (text) => { $('error').textContent = text; show('error'); status(''); };

const SCOPES = {
  openid: 'Know who you are (your account id and the key you sign in with)',
  profile: 'See your basic profile',
  offline_access: 'Stay signed in when you are not using it (a refresh token)',
};

let token = null;

async function post(path, body, bearer) {
  const headers = { 'content-type': 'application/json' };
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  const res = await fetch(path, { method: 'POST', headers, body: JSON.stringify(body), credentials: 'omit' });
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(json.message || json.error || `HTTP ${res.status}`);
  return json;
}

async function finish(allow) {
  const body = { request };
  if (allow !== undefined) body.allow = allow;
  const answer = await post('/oauth/authorize/finish', body, token);
  if (answer.redirect) {
    status('Returning to the app…');
    window.location.assign(answer.redirect);
    return;
  }
  if (answer.consent) {
    $('consent-client').textContent = answer.consent.client;
    const list = $('scopes');
    list.replaceChildren();
    for (const s of answer.consent.scopes) {
      const li = document.createElement('li');
      li.className = 'scope';
      li.dataset.scope = s;
      li.textContent = SCOPES[s] ?? s;
      list.append(li);
    }
    show('signin', false);
    show('mfa', false);
    show('consent');
    status('');
  }
}

async function stop(error) {
  const answer = await post('/oauth/authorize/finish', { request, error });
  if (answer.redirect) window.location.assign(answer.redirect);
}

async function signIn(store) {
  const record = (await store.load(store.KEYPAIR)) ?? (await store.createKeyPair());
  const identity = await identityOf(record.keyPair.publicKey);
  $('identity').textContent = didKeyOf(identity);
  status('Signing in…');
  const { challenge } = await post('/oauth/authorize/challenge', { request, pubkey: identity });
  const checked = inspectChallenge(challenge, { origin: window.location.origin, identity });
  const problem = checked.checks.find((c) => !c.ok);
  if (problem) throw new Error(problem.problem);
  const sig = await signText(record.keyPair.privateKey, challenge);
  const issued = await post('/oauth/authorize/signin', { request, pubkey: identity, challenge, sig });
  token = issued.token;
  if (issued.mfa_required) {
    show('signin', false);
    show('mfa');
    status('');
    $('totp').focus();
    return;
  }
  await finish();
}

async function start() {
  const store = keyStore();
  const record = await store.load(store.KEYPAIR);
  if (promptNone) {
    // No UI at all: the key signs if there is one, else the client hears why not.
    if (!record) return stop('login_required');
    return signIn(store);
  }
  if (record) $('identity').textContent = didKeyOf(await identityOf(record.keyPair.publicKey));
  else $('continue').textContent = 'Create a key and continue';
  if (hint) {
    $('hint-value').textContent = hint;
    const mine = record ? await identityOf(record.keyPair.publicKey) : null;
    show('hint', !mine || (hint !== mine && hint !== didKeyOf(mine)));
  }
  const guard = (fn) => async () => {
    for (const b of document.querySelectorAll('button')) b.disabled = true;
    show('error', false);
    try {
      await fn();
    } catch (err) {
      fail(err.message);
    } finally {
      for (const b of document.querySelectorAll('button')) b.disabled = false;
    }
  };
  $('continue').addEventListener('click', guard(() => signIn(store)));
  $('cancel').addEventListener('click', guard(() => stop('access_denied')));
  $('verify').addEventListener('click', guard(async () => {
    const issued = await post('/v1/mfa/totp/verify', { code: $('totp').value.trim() }, token);
    token = issued.token;
    await finish();
  }));
  $('allow').addEventListener('click', guard(() => finish(true)));
  $('deny').addEventListener('click', guard(() => finish(false)));
  $('continue').disabled = false;
}

start().catch((err) => fail(err.message));
