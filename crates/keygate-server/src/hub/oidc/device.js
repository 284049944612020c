// Approving a device code (RFC 8628) in the browser, with the web demo's key
// (IndexedDB `keygate`). The page shows which client asks for what, then signs the
// challenge only after checking it names this origin and this key.
import { keyStore } from './keygate-keystore.js';
import { identityOf, didKeyOf } from './keygate-identity.js';
import { inspectChallenge, signText } from './keygate-protocol.js';

const $ = (id) => document.getElementById(id);
const fail = (text) => { $('error').textContent = text; $('error').hidden = false; $('status').textContent = ''; };

async function post(path, body) {
  const res = await fetch(path, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), credentials: 'omit',
  });
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(json.message || json.error || `HTTP ${res.status}`);
  return json;
}

let pending = null;

async function lookup() {
  const store = keyStore();
  const record = (await store.load(store.KEYPAIR)) ?? (await store.createKeyPair());
  const identity = await identityOf(record.keyPair.publicKey);
  const userCode = $('user-code').value.trim();
  const request = await post('/oauth/device/challenge', { user_code: userCode, pubkey: identity });
  const checked = inspectChallenge(request.challenge, { origin: window.location.origin, identity });
  const problem = checked.checks.find((c) => !c.ok);
  if (problem) throw new Error(problem.problem);
  pending = { record, identity, userCode, challenge: request.challenge };
  $('client').textContent = request.client;
  $('scope').textContent = request.scope || '-';
  $('identity').textContent = didKeyOf(identity);
  $('decide').hidden = false;
}

async function decide(approve) {
  const { record, identity, userCode, challenge } = pending;
  const sig = await signText(record.keyPair.privateKey, challenge);
  const answer = await post('/oauth/device/approve', { user_code: userCode, pubkey: identity, challenge, sig, approve });
  $('decide').hidden = true;
  $('status').textContent = answer.approved ? 'Approved: you can return to your device.' : 'Denied.';
}

const guard = (fn) => async () => {
  for (const b of document.querySelectorAll('button')) b.disabled = true;
  $('error').hidden = true;
  try {
    await fn();
  } catch (err) {
    fail(err.message);
  } finally {
    for (const b of document.querySelectorAll('button')) b.disabled = false;
  }
};

const given = new URLSearchParams(window.location.search).get('user_code');
if (given) $('user-code').value = given;
$('lookup').addEventListener('click', guard(lookup));
$('approve').addEventListener('click', guard(() => decide(true)));
$('deny').addEventListener('click', guard(() => decide(false)));
$('lookup').disabled = false;
