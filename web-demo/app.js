// The page: wires the identity and the protocol client (the keygate-client package,
// vendored here as keygate-*.js) to the DOM. All state lives in IndexedDB, so a reload
// keeps both the key and the sign-in. It signs in for tokens bound to its key (DPoP,
// RFC 9449): every call with the token carries a fresh proof signed by that key.

import {
  identityOf, keyStore, signIn, refresh, whoami, listSessions, revokeSession, logout, decodeJwt, boundThumbprint,
  ChallengeRefused, SignInCancelled,
  accountKeys, removeKey, inviteUrl, linkCodeFromUrl, acceptLink, enrolTotp, verifyTotp, qrDataUrl, accountEvents,
  createRecoveryKey, recoverAccount, RECOVERY_LABEL,
} from './keygate-client.js';
import { describe, describeRecovery, SESSION_OVER } from './errors.js';

const CLIENT_ID = 'web-demo';
const store = keyStore({ name: 'keygate-demo' });

const $ = (id) => document.getElementById(id);

/** What every call with the token takes: the key pair a key-bound token needs proofs by. */
const withKey = () => ({ dpop: state.keyRecord.keyPair });

const state = {
  keyRecord: null, // { keyPair, createdAt }
  identity: null,
  session: null, // { token, refresh_token, session_id, expires_at, expires_in, receivedAt, via }
  challenge: null, // { deadline, settle } while the person looks at a challenge
};

// ---- small DOM helpers ---------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

/** Shows a message in one of the cards' status lines; kind is ok, bad or info. */
function say(target, kind, text, code = null) {
  const box = $(target);
  box.className = `msg ${kind}`;
  box.replaceChildren(text);
  if (code) box.append(el('span', { class: 'code', text: code }));
}

/** Empties a status line, kind included, so a later wait never sees an old kind. */
function quiet(target) {
  const box = $(target);
  box.className = 'msg';
  box.replaceChildren();
}

function sayError(target, err) {
  const { text, code, detail } = describe(err);
  say(target, 'bad', text, [code, detail].filter(Boolean).join(' · ') || null);
}

/** Runs an action with its button disabled, so double clicks don't fire twice. */
async function busy(button, action) {
  if (button.disabled) return;
  button.disabled = true;
  button.classList.add('busy');
  try {
    await action();
  } finally {
    button.classList.remove('busy');
    button.disabled = false;
  }
}

function countdown(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, '0');
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
function ago(iso) {
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return null;
  const s = Math.round((t - Date.now()) / 1000);
  const [n, unit] = Math.abs(s) < 60 ? [s, 'second'] : Math.abs(s) < 3600 ? [s / 60, 'minute']
    : Math.abs(s) < 86400 ? [s / 3600, 'hour'] : [s / 86400, 'day'];
  return Math.abs(s) < 10 ? 'just now' : relative.format(Math.round(n), unit);
}

const when = (iso) => {
  const t = Date.parse(iso);
  return Number.isFinite(t) ? new Date(t).toLocaleString() : '';
};

function device(ua) {
  if (!ua) return 'Unknown device';
  const browser = /Edg\//.test(ua) ? 'Edge' : /Firefox\//.test(ua) ? 'Firefox'
    : /Chrom(e|ium)\//.test(ua) ? 'Chrome' : /Safari\//.test(ua) ? 'Safari' : ua.split(/[/ ]/)[0];
  const os = /Android/.test(ua) ? 'Android' : /iPhone|iPad/.test(ua) ? 'iOS' : /Windows/.test(ua) ? 'Windows'
    : /Mac OS X/.test(ua) ? 'macOS' : /CrOS/.test(ua) ? 'ChromeOS' : /Linux/.test(ua) ? 'Linux' : null;
  return os ? `${browser} on ${os}` : browser;
}

// ---- identity --------------------------------------------------------------------------

async function loadIdentity() {
  state.keyRecord = (await store.load(store.KEYPAIR)) ?? (await store.createKeyPair());
  state.identity = await identityOf(state.keyRecord.keyPair.publicKey);
  $('identity').textContent = state.identity;
  $('key-meta').textContent = `Key created ${when(state.keyRecord.createdAt)} · Ed25519 · private key not extractable`;
  for (const id of ['copy', 'new-identity', 'sign-in']) $(id).disabled = false;
}

async function copyIdentity() {
  try {
    await navigator.clipboard.writeText(state.identity);
  } catch {
    // Clipboard refused (permissions, insecure context): select the text instead.
    getSelection().selectAllChildren($('identity'));
    say('identity-msg', 'info', 'Selected — press Ctrl+C (⌘C) to copy.');
    return;
  }
  $('copy').textContent = 'Copied ✓';
  setTimeout(() => { $('copy').textContent = 'Copy'; }, 1600);
}

async function replaceIdentity() {
  const dialog = $('confirm-new');
  $('confirm-old').textContent = `${state.identity.slice(0, 16)}…`;
  const answer = await new Promise((resolve) => {
    const done = (value) => () => dialog.close(value);
    $('keep-identity').onclick = done('keep');
    $('replace-identity').onclick = done('replace');
    dialog.addEventListener('close', () => resolve(dialog.returnValue), { once: true });
    dialog.returnValue = 'keep';
    dialog.showModal();
  });
  if (answer !== 'replace') return;
  if (state.session) {
    await logout(state.session.token, 'local', withKey()).catch(() => {}); // best effort: the key is going anyway
    await forgetSession();
  }
  await store.remove(store.KEYPAIR);
  await loadIdentity();
  quiet('signin-msg');
  say('identity-msg', 'ok', 'New identity ready. The old key is gone from this browser.');
}

// ---- sign-in ---------------------------------------------------------------------------

function showChallenge(challenge, { refused = false } = {}) {
  const items = challenge.checks.map((c) => el('li', { class: c.ok ? 'ok' : 'bad' },
    el('span', {},
      el('span', { class: 'what', text: c.ok ? `${c.label} matches: ` : `${c.label} is wrong. ` }),
      c.ok ? el('span', { class: c.label === 'Identity' ? 'mono' : '', text: c.label === 'Identity' ? 'your identity' : c.value })
        : c.problem)));
  if (!refused) items.push(el('li', { class: 'time' }, el('span', {}, 'Expires in ', el('strong', { id: 'challenge-left', class: 'mono', text: countdown(challenge.deadline - Date.now()) }))));
  $('checks').replaceChildren(...items);
  $('challenge-text').textContent = challenge.text;
  $('challenge-actions').hidden = refused;
  $('challenge').hidden = false;
}

function hideChallenge() {
  $('challenge').hidden = true;
  state.challenge = null;
}

/** Shows the checked challenge and waits for Sign (true) or Cancel / expiry (false). */
function approve(challenge) {
  showChallenge(challenge);
  $('approve').focus({ preventScroll: true });
  return new Promise((resolve) => {
    state.challenge = { deadline: challenge.deadline, settle: resolve, expired: false };
  });
}

function settleChallenge(yes) {
  const pending = state.challenge;
  if (!pending) return;
  $('challenge-actions').hidden = true;
  pending.settle(yes);
}

async function doSignIn() {
  quiet('signin-msg');
  hideChallenge();
  say('signin-msg', 'info', 'Asking the server for a challenge…');
  try {
    const result = await signIn({
      identity: state.identity,
      keyPair: state.keyRecord.keyPair,
      dpop: true, // a token bound to this browser's key
      clientId: CLIENT_ID,
      offline: true,
      approve: (challenge) => { quiet('signin-msg'); return approve(challenge); },
    });
    hideChallenge();
    await adoptSession({ ...result, receivedAt: Date.now() });
    say('signin-msg', 'ok', `Signed in over ${result.via}. The server checked your signature and issued a token.`);
    if (matchMedia('(max-width: 959px)').matches) $('token-card').scrollIntoView({ behavior: 'smooth', block: 'start' });
    await showSessions();
    await showAccount();
  } catch (err) {
    const expired = state.challenge?.expired;
    if (err instanceof ChallengeRefused) {
      state.challenge = null;
      showChallenge(err.challenge, { refused: true });
      say('signin-msg', 'bad', 'Not signed. This challenge isn’t for this page or this identity, so it could be a phishing relay.');
      return;
    }
    hideChallenge();
    if (err instanceof SignInCancelled) {
      say('signin-msg', 'info', expired
        ? 'The challenge expired before you signed it. Nothing was signed — sign in again.'
        : 'Cancelled. Nothing was signed.');
    } else {
      sayError('signin-msg', err);
    }
  }
}

// ---- token and sessions ----------------------------------------------------------------

async function adoptSession(session) {
  state.session = session;
  await store.save(store.SESSION, session);
  renderSession();
}

async function forgetSession() {
  state.session = null;
  await store.remove(store.SESSION);
  renderSession();
}

/** After an error: when the sign-in is gone for good, drop it and say so. */
async function handleSessionError(target, err) {
  if (SESSION_OVER.has(err?.code)) {
    await forgetSession();
    sayError('signin-msg', err);
    return;
  }
  sayError(target, err);
}

function renderSession() {
  const s = state.session;
  const signedIn = Boolean(s);
  $('token-card').hidden = !signedIn;
  $('recover-box').hidden = !signedIn;
  $('recover-hint').hidden = signedIn;
  $('sessions-card').hidden = !signedIn;
  $('account-card').hidden = !signedIn;
  $('signed-out-card').hidden = signedIn;
  document.body.classList.toggle('signed-in', signedIn);
  $('sign-in').textContent = signedIn ? 'Sign in again (new session)' : 'Sign in';
  if (!signedIn) {
    hideRecoveryWords();
    $('recovery-notice').hidden = true;
    $('sessions').replaceChildren();
    $('whoami-out').hidden = true;
    for (const id of ['token-msg', 'sessions-msg', 'recover-msg']) quiet(id);
    return;
  }
  let decoded;
  try {
    decoded = decodeJwt(s.token);
  } catch {
    decoded = { header: null, payload: {} };
  }
  $('claims').textContent = JSON.stringify({ header: decoded.header, claims: decoded.payload }, null, 2);
  $('claim-sub').textContent = decoded.payload.sub ?? '–';
  $('claim-sid').textContent = decoded.payload.sid ?? s.session_id ?? '–';
  $('claim-exp').textContent = when(s.expires_at) || '–';
  $('via').textContent = s.via;
  $('refresh-state').textContent = s.refresh_token ? 'refresh token held (offline access)' : 'no refresh token';
  const jkt = boundThumbprint(s.token);
  $('binding-kind').textContent = jkt ? 'key-bound (DPoP) to this browser’s key, thumbprint' : 'bearer (whoever holds it can use it)';
  $('jkt').textContent = jkt ?? '';
  $('jkt').hidden = !jkt;
  $('token-raw').textContent = s.token;
  $('token-note').textContent = jkt
    ? 'Safe to look at: without a fresh proof signed by this browser’s key, every server refuses it.'
    : 'A bearer token: anyone who copies it can use it until it expires.';
  $('refresh').disabled = !s.refresh_token;
  $('whoami-out').hidden = true;
  tick();
}

function tick() {
  const s = state.session;
  if (s) {
    const total = (s.expires_in ?? 3600) * 1000;
    const left = s.receivedAt + total - Date.now();
    $('countdown').textContent = countdown(left);
    const pill = $('token-state');
    pill.textContent = left > 0 ? 'valid' : 'expired';
    pill.className = `pill ${left > 0 ? 'ok' : 'bad'}`;
    const bar = $('bar');
    bar.style.width = `${Math.max(0, Math.min(100, (left / total) * 100))}%`;
    bar.classList.toggle('low', left < total * 0.1);
  }
  const c = state.challenge;
  if (c && !c.expired) {
    const left = c.deadline - Date.now();
    const out = $('challenge-left');
    if (out) out.textContent = countdown(left);
    if (left <= 0) {
      c.expired = true;
      settleChallenge(false);
    }
  }
}

async function doRefresh() {
  quiet('token-msg');
  try {
    // A key-bound session is refreshed with a proof by the same key.
    const bound = boundThumbprint(state.session.token) !== null;
    const fresh = await refresh(state.session.refresh_token, { clientId: CLIENT_ID, ...(bound && withKey()) });
    await adoptSession({ ...fresh, refresh_token: fresh.refresh_token ?? null, receivedAt: Date.now(), via: 'refresh' });
    say('token-msg', 'ok', 'New access token issued. The old refresh token is now spent; a new one replaced it.');
    await showSessions();
  } catch (err) {
    await handleSessionError('token-msg', err);
  }
}

async function doWhoami() {
  quiet('token-msg');
  try {
    const me = await whoami(state.session.token, withKey());
    $('whoami-out').textContent = JSON.stringify(me, null, 2);
    $('whoami-out').hidden = false;
  } catch (err) {
    await handleSessionError('token-msg', err);
  }
}

function sessionItem(s) {
  const mine = s.current || s.session_id === state.session?.session_id;
  const times = [
    s.created_at && `started ${ago(s.created_at)}`,
    s.last_used_at && `last used ${ago(s.last_used_at)}`,
    s.expires_at && `ends ${ago(s.expires_at)}`,
  ].filter(Boolean).join(' · ');
  const revoke = el('button', { type: 'button', class: 'small danger', text: 'Revoke', 'data-sid': s.session_id });
  revoke.addEventListener('click', () => busy(revoke, () => doRevoke(s.session_id, mine)));
  return el('li', { class: `session${mine ? ' current' : ''}`, 'data-sid': s.session_id },
    el('div', { class: 'title' }, s.client_id ?? 'no client id', mine ? el('span', { class: 'pill here', text: 'this browser' }) : null),
    el('div', { class: 'detail', title: s.user_agent ?? '' }, [device(s.user_agent), s.address].filter(Boolean).join(' · ')),
    times ? el('div', { class: 'detail', text: times }) : null,
    el('div', { class: 'sid mono', text: s.session_id }),
    revoke);
}

async function showSessions() {
  if (!state.session) return;
  try {
    const { sessions } = await listSessions(state.session.token, withKey());
    const mineFirst = (a, b) => Number(Boolean(b.current)) - Number(Boolean(a.current))
      || String(b.created_at ?? '').localeCompare(String(a.created_at ?? ''));
    $('sessions').replaceChildren(...[...sessions].sort(mineFirst).map(sessionItem));
  } catch (err) {
    await handleSessionError('sessions-msg', err);
  }
}

async function doRevoke(sid, mine) {
  quiet('sessions-msg');
  try {
    await revokeSession(state.session.token, sid, withKey());
  } catch (err) {
    await handleSessionError('sessions-msg', err);
    return;
  }
  if (mine) {
    await forgetSession();
    say('signin-msg', 'info', 'You revoked this browser’s session, so you are signed out here.');
  } else {
    say('sessions-msg', 'ok', 'Session revoked. Its tokens stop working right away.');
    await showSessions();
  }
}

async function doLogout(scope) {
  quiet('sessions-msg');
  let revoked;
  try {
    ({ revoked } = await logout(state.session.token, scope, withKey()));
  } catch (err) {
    await handleSessionError('sessions-msg', err);
    return;
  }
  const n = `${revoked ?? 0} session${revoked === 1 ? '' : 's'}`;
  if (scope === 'others') {
    say('sessions-msg', 'ok', `Logged out everywhere else (${n} ended). You stay signed in here.`);
    await showSessions();
    return;
  }
  await forgetSession();
  say('signin-msg', 'info', scope === 'global'
    ? `Logged out everywhere: ${n} ended, this one included.`
    : 'Logged out. This session has ended on the server.');
}

// ---- account (account.js) --------------------------------------------------------------

function accountKeyItem(k) {
  const remove = el('button', { type: 'button', class: 'small danger', text: 'Remove' });
  remove.addEventListener('click', () => busy(remove, () => doRemoveKey(k.identity, k.current)));
  const times = [`added ${ago(k.added_at)}`, k.last_used_at && `last used ${ago(k.last_used_at)}`]
    .filter(Boolean).join(' · ');
  const recovery = k.label === RECOVERY_LABEL;
  return el('li', { class: `session${k.current ? ' current' : ''}`, 'data-label': k.label ?? '' },
    el('div', { class: 'title' }, k.label ?? 'key',
      k.current ? el('span', { class: 'pill here', text: 'this browser' }) : null,
      recovery ? el('span', { class: 'pill', text: 'recovery key: can only add a device' }) : null),
    el('div', { class: 'detail', text: times }),
    el('div', { class: 'sid mono', text: k.identity }),
    remove);
}

async function showAccount() {
  if (!state.session) return;
  try {
    const view = await accountKeys(state.session.token, withKey());
    $('account-id').textContent = `${view.account}${view.totp ? ' · TOTP enrolled' : ''}`;
    $('account-keys').replaceChildren(...view.keys.map(accountKeyItem));
  } catch (err) {
    await handleSessionError('account-msg', err);
    return;
  }
  await showRecoveryNotice();
}

/** A notice when the account's events show its recovery key was used (newest use). */
async function showRecoveryNotice() {
  let events;
  try {
    ({ events } = await accountEvents(state.session.token, { limit: 50, ...withKey() }));
  } catch {
    return; // the events are a courtesy here: the key list above is what matters
  }
  const used = events.find((e) => e.kind === 'recovery_used' && !e.outcome); // a refused try has an outcome
  const notice = $('recovery-notice');
  notice.hidden = !used;
  if (!used) return;
  const from = [used.user_agent && device(used.user_agent), used.address].filter(Boolean).join(', ');
  notice.textContent = `This account was recovered with its recovery key ${ago(used.at) ?? ''} (${when(used.at)}` +
    `${from ? `, from ${from}` : ''}). Every session from before then was ended, and that recovery key is spent. ` +
    'If that wasn’t you, remove the keys below that you don’t know, then make a new recovery key.';
}

async function doRemoveKey(identity, mine) {
  quiet('account-msg');
  try {
    await removeKey(state.session.token, identity, withKey());
  } catch (err) {
    await handleSessionError('account-msg', err);
    return;
  }
  if (mine) {
    await forgetSession();
    say('signin-msg', 'info', 'You removed this browser’s key from the account, so its sessions have ended.');
    return;
  }
  say('account-msg', 'ok', 'Key removed. Every session it made has ended.');
  await showAccount();
}

async function doInvite() {
  quiet('account-msg');
  try {
    const url = await inviteUrl({
      token: state.session.token, identity: state.identity,
      privateKey: state.keyRecord.keyPair.privateKey, newIdentity: $('new-device').value, ...withKey(),
    });
    $('invite-url').textContent = url;
    $('invite-box').hidden = false;
    const qr = await qrDataUrl(state.session.token, url, withKey());
    if (qr) $('invite-qr').src = qr;
    $('invite-qr').hidden = !qr;
    say('account-msg', 'info', 'Open this link on the new device within 5 minutes. It works only for that device’s key.');
  } catch (err) {
    await handleSessionError('account-msg', err);
  }
}

/** After a second factor: the raised token replaces the current one (same session). */
async function adoptRaised(fresh, via) {
  await adoptSession({
    ...fresh, refresh_token: fresh.refresh_token ?? state.session.refresh_token ?? null,
    receivedAt: Date.now(), via,
  });
}

async function doEnrolTotp() {
  quiet('account-msg');
  try {
    const e = await enrolTotp(state.session.token, withKey());
    $('totp-uri').textContent = `${e.otpauth_uri}\n\nsecret: ${e.secret}`;
    $('totp-box').hidden = false;
    const qr = await qrDataUrl(state.session.token, e.otpauth_uri, withKey());
    if (qr) $('totp-qr').src = qr;
    say('account-msg', 'info', 'Enter a code from your app to confirm it.');
  } catch (err) {
    await handleSessionError('account-msg', err);
  }
}

async function doVerifyTotp() {
  quiet('account-msg');
  try {
    const fresh = await verifyTotp(state.session.token, $('totp-code').value.trim(), withKey());
    await adoptRaised(fresh, 'TOTP');
    $('totp-box').hidden = true;
    $('totp-code').value = '';
    say('account-msg', 'ok', 'Code accepted: this session is at aal2 (see acr and amr in the token).');
    await showAccount();
  } catch (err) {
    await handleSessionError('account-msg', err);
  }
}

// ---- recovery key (keygate-recovery.js) ------------------------------------------------

/** Takes the words off the page: they were shown once and are kept nowhere. */
function hideRecoveryWords() {
  $('recovery-words').replaceChildren();
  $('recovery-box').hidden = true;
}

async function doCreateRecovery() {
  quiet('account-msg');
  hideRecoveryWords();
  let made;
  try {
    made = await createRecoveryKey({
      token: state.session.token, identity: state.identity, privateKey: state.keyRecord.keyPair.privateKey, ...withKey(),
    });
  } catch (err) {
    await handleSessionError('account-msg', err);
    return;
  }
  // Only in the DOM, until "I wrote them down" (or a reload) removes them.
  $('recovery-words').replaceChildren(...made.words.split(' ').map((w) => el('li', { text: w })));
  $('recovery-box').hidden = false;
  $('recovery-box').scrollIntoView({ behavior: 'smooth', block: 'nearest' });
  say('account-msg', 'ok', 'Recovery key created and linked to your account as “recovery”. Any earlier one no longer works.');
  await showAccount();
}

async function doRecover() {
  quiet('recover-msg');
  const before = state.session.token;
  let raised;
  try {
    raised = await recoverAccount({
      token: before, words: $('recover-words').value, identity: state.identity,
      privateKey: state.keyRecord.keyPair.privateKey,
      label: navigator.userAgent ? device(navigator.userAgent) : undefined, ...withKey(),
    });
  } catch (err) {
    if (SESSION_OVER.has(err?.code)) {
      await handleSessionError('recover-msg', err);
      return;
    }
    const { text, code, detail } = describeRecovery(err);
    say('recover-msg', 'bad', text, [code, detail].filter(Boolean).join(' · ') || null);
    return;
  }
  $('recover-words').value = '';
  await adoptRaised(raised, 'recovery');
  let acct = null;
  try {
    acct = decodeJwt(raised.token).payload.acct ?? null;
  } catch { /* shown as unknown */ }
  say('recover-msg', 'ok', `Account ${acct ?? ''} recovered: this browser’s key is in it now, this session is at aal2, ` +
    'and every other session of the account has ended. The words are used up: make a new recovery key (step 5).');
  await showSessions();
  await showAccount();
}

async function doAcceptLink(code) {
  quiet('link-msg');
  try {
    const linked = await acceptLink({
      code, identity: state.identity, privateKey: state.keyRecord.keyPair.privateKey,
      label: navigator.userAgent ? device(navigator.userAgent) : null,
    });
    history.replaceState(null, '', location.pathname);
    say('link-msg', 'ok', `Linked to account ${linked.account}. Sign in to use it.`);
    $('accept-link').disabled = true;
  } catch (err) {
    sayError('link-msg', err);
  }
}

function offerLink() {
  const code = linkCodeFromUrl();
  if (!code) return;
  $('link-account').textContent = code.fields.account;
  $('link-card').hidden = false;
  if (code.fields['new-identity'] !== state.identity) {
    say('link-msg', 'bad', 'This link is for another key, not this browser’s.');
    $('accept-link').disabled = true;
    return;
  }
  $('accept-link').addEventListener('click', () => busy($('accept-link'), () => doAcceptLink(code)));
  $('dismiss-link').addEventListener('click', () => {
    history.replaceState(null, '', location.pathname);
    $('link-card').hidden = true;
  });
}

// ---- start -----------------------------------------------------------------------------

function wire() {
  $('copy').addEventListener('click', copyIdentity);
  $('new-identity').addEventListener('click', () => busy($('new-identity'), replaceIdentity));
  $('sign-in').addEventListener('click', () => busy($('sign-in'), doSignIn));
  $('approve').addEventListener('click', () => settleChallenge(true));
  $('cancel').addEventListener('click', () => settleChallenge(false));
  $('refresh').addEventListener('click', () => busy($('refresh'), doRefresh));
  $('whoami').addEventListener('click', () => busy($('whoami'), doWhoami));
  $('load-sessions').addEventListener('click', () => busy($('load-sessions'), showSessions));
  for (const button of $('logout').querySelectorAll('button')) {
    button.addEventListener('click', () => busy(button, () => doLogout(button.dataset.scope)));
  }
  $('load-account').addEventListener('click', () => busy($('load-account'), showAccount));
  $('invite').addEventListener('click', () => busy($('invite'), doInvite));
  $('copy-invite').addEventListener('click', () => navigator.clipboard?.writeText($('invite-url').textContent));
  $('enrol-totp').addEventListener('click', () => busy($('enrol-totp'), doEnrolTotp));
  $('verify-totp').addEventListener('click', () => busy($('verify-totp'), doVerifyTotp));
  $('create-recovery').addEventListener('click', () => busy($('create-recovery'), doCreateRecovery));
  $('recovery-done').addEventListener('click', () => {
    hideRecoveryWords();
    say('account-msg', 'info', 'The words are gone from this page. Keep your copy safe.');
  });
  $('recover').addEventListener('click', () => busy($('recover'), doRecover));
  setInterval(tick, 1000);
}

async function start() {
  if (!window.isSecureContext || !crypto.subtle) {
    $('unsupported').textContent = 'This page must be opened over https:// or on localhost: browsers only offer WebCrypto there.';
    $('unsupported').hidden = false;
    return;
  }
  wire();
  try {
    await loadIdentity();
  } catch (err) {
    $('unsupported').textContent = err?.name === 'NotSupportedError'
      ? 'This browser can’t make Ed25519 keys with WebCrypto. Try a current Chrome, Edge, Firefox or Safari.'
      : `Couldn’t set up your key: ${err?.message ?? err}. Private windows sometimes block the storage this needs.`;
    $('unsupported').hidden = false;
    return;
  }
  offerLink();
  state.session = (await store.load(store.SESSION)) ?? null;
  renderSession();
  if (state.session) {
    await showSessions();
    await showAccount();
  }
}

start();
