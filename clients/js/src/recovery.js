// The self-service recovery key (docs/accounts.md): an ordinary Ed25519 key whose
// 32-byte seed is the entropy of a 24-word BIP-39 mnemonic (English list; no
// passphrase, no PBKDF2: the entropy itself is the RFC 8032 private key). It is linked
// to the account with the label `recovery`, the person writes the words down, and
// nothing of the seed is stored or sent. Later, on a new device that signed in with
// its own key, the words authorize linking that key into the account: every other
// session of the account ends and the recovery key is spent.
//
// The word list and checksum come from @scure/bip39 (audited); in the web demo it is
// the bundle keygate-bip39.js that clients/js/scripts/vendor.js generates.

import { entropyToMnemonic, mnemonicToEntropy } from '@scure/bip39';
import { wordlist } from '@scure/bip39/wordlists/english.js';
import { KeygateError } from './errors.js';
import { fromBase64url, identityFromRawKey } from './identity.js';
import { call, signText } from './protocol.js';
import { completeLink, parseFields, signedLinkChallenge } from './account.js';

/** The label a recovery key carries in the account's key list. */
export const RECOVERY_LABEL = 'recovery';
/** Words of a recovery key: 256 bits of entropy and an 8-bit checksum. */
export const RECOVERY_WORDS = 24;
/** PKCS#8 (RFC 8410) of an Ed25519 private key, up to the 32-byte seed. */
const PKCS8_ED25519 = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

const wordsRefused = (message) => new KeygateError('invalid_recovery_words', message);

/**
 * The signing key and identity of a 32-byte seed. The private key is not extractable;
 * the public key is read from the JWK of a second, extractable import that is dropped.
 */
async function keyOfSeed(seed) {
  const pkcs8 = new Uint8Array([...PKCS8_ED25519, ...seed]);
  try {
    const readable = await crypto.subtle.importKey('pkcs8', pkcs8, { name: 'Ed25519' }, true, ['sign']);
    const { x } = await crypto.subtle.exportKey('jwk', readable);
    const privateKey = await crypto.subtle.importKey('pkcs8', pkcs8, { name: 'Ed25519' }, false, ['sign']);
    return { identity: identityFromRawKey(fromBase64url(x)), privateKey };
  } finally {
    pkcs8.fill(0);
  }
}

/**
 * The recovery key of a 32-byte seed: `{ words, identity, privateKey }` (words: the
 * 24 BIP-39 words, one space between them).
 */
export async function recoveryKeyFromSeed(seed) {
  const bytes = new Uint8Array(seed);
  if (bytes.length !== 32) throw new TypeError(`a recovery key's seed has 32 bytes, not ${bytes.length}`);
  return { words: entropyToMnemonic(bytes, wordlist), ...(await keyOfSeed(bytes)) };
}

/** A new recovery key from 32 random bytes: `{ words, identity, privateKey }`. */
export async function newRecoveryKey() {
  const seed = crypto.getRandomValues(new Uint8Array(32));
  try {
    return await recoveryKeyFromSeed(seed);
  } finally {
    seed.fill(0);
  }
}

/**
 * The words as the BIP-39 list spells them: lower case, single spaces, without the
 * numbers a copied numbered list brings along ("1. abandon 2. ability …").
 */
export function normaliseRecoveryWords(text) {
  return String(text).normalize('NFKD').toLowerCase().split(/\s+/)
    .map((w) => w.replace(/^\d+[.):]?/, ''))
    .filter(Boolean)
    .join(' ');
}

/**
 * The recovery key the words encode: `{ words, identity, privateKey }`. Throws a
 * KeygateError `invalid_recovery_words` naming what is wrong (the count, the position
 * of a word not in the list, or the checksum), never echoing the words.
 */
export async function recoveryKeyFromWords(text) {
  const words = normaliseRecoveryWords(text);
  const list = words ? words.split(' ') : [];
  if (list.length !== RECOVERY_WORDS) {
    throw wordsRefused(`A recovery key is ${RECOVERY_WORDS} words; this is ${list.length}.`);
  }
  const unknown = list.findIndex((w) => !wordlist.includes(w));
  if (unknown >= 0) throw wordsRefused(`Word ${unknown + 1} is not in the BIP-39 English word list.`);
  let seed;
  try {
    seed = mnemonicToEntropy(words, wordlist);
  } catch {
    throw wordsRefused('The words do not add up (their checksum is wrong): one is mistyped or out of order.');
  }
  try {
    return { words, ...(await keyOfSeed(seed)) };
  } finally {
    seed.fill(0);
  }
}

/** The fields of a recovery challenge text, or null if it is not one. */
export const parseRecoveryChallenge = (text) => parseFields(text, 'keygate recovery challenge v1', 9);

export const recoveryChallenge = (token, identity, { baseUrl, dpop } = {}) =>
  call('POST', '/v1/account/recover/challenge', { token, baseUrl, dpop, body: { identity } });
export const completeRecovery = (token, body, { baseUrl, dpop } = {}) =>
  call('POST', '/v1/account/recover', { token, baseUrl, dpop, body });

/**
 * On a signed-in device (`identity`, `privateKey`, its `token`): makes a new recovery
 * key and links it to the account with the label `recovery` (replacing the account's
 * previous one). Resolves to `{ words, identity, account }`: show the words once.
 */
export async function createRecoveryKey({ token, identity, privateKey, baseUrl, dpop }) {
  const recovery = await newRecoveryKey();
  const { challenge, sig } = await signedLinkChallenge({
    token, identity, privateKey, newIdentity: recovery.identity, baseUrl, dpop,
  });
  const newSig = await signText(recovery.privateKey, challenge);
  const linked = await completeLink({ challenge, sig, new_sig: newSig, label: RECOVERY_LABEL }, { baseUrl });
  return { words: recovery.words, identity: recovery.identity, account: linked.account };
}

/**
 * On a new device that signed in with its own key (`identity`, `privateKey`, its
 * `token`): the words bring this key into the account they recover. The words are
 * checked before anything is sent; the challenge is signed only when it names the
 * recovery key and this key. Resolves to the token body of this device's session,
 * now in the recovered account (`acct`) at `acr` aal2; every other session of that
 * account has ended and the recovery key is spent.
 */
export async function recoverAccount({ token, words, identity, privateKey, label, baseUrl, dpop }) {
  const recovery = await recoveryKeyFromWords(words);
  const { challenge } = await recoveryChallenge(token, recovery.identity, { baseUrl, dpop });
  const f = parseRecoveryChallenge(challenge);
  if (!f || f.identity !== recovery.identity || f['new-identity'] !== identity) {
    throw new Error('The server sent a recovery challenge for other keys; nothing was signed.');
  }
  const body = {
    challenge,
    sig: await signText(recovery.privateKey, challenge),
    new_sig: await signText(privateKey, challenge),
  };
  if (label != null) body.label = label;
  return completeRecovery(token, body, { baseUrl, dpop });
}
