// Generated from clients/js/src/tokens.js (package keygate-client) by
// clients/js/scripts/vendor.js: edit the package and run that script, not this file.

// A token store that survives reloads and coordinates tabs. The sign-in (token body
// plus the time it arrived) lives in the given store (IndexedDB in a browser), and a
// refresh runs under a Web Lock shared by every tab of the origin: the first tab to
// take the lock spends the refresh token; a tab that was waiting finds, once it holds
// the lock, that the stored refresh token is no longer the one it meant to spend, and
// adopts the stored result instead of spending a token that is already spent (which
// the server would answer with refresh_token_reused and end the session). Tabs hear of
// every change over a BroadcastChannel and re-read the store, so all show the same
// token. Without Web Locks (Node) refreshes are serialised within this process only.
// Given the key pair (`dpop`), a key-bound (DPoP) session is refreshed with a proof by
// it, and fetch() sends the held token with a fresh proof.

import { refresh as refreshWithToken, authorizedFetch } from './keygate-protocol.js';
import { boundThumbprint } from './keygate-dpop.js';
import { KeygateError, SESSION_OVER } from './keygate-errors.js';

/** Whether a stored token body is bound to a key (DPoP). */
const isBound = (s) => s?.token_type === 'DPoP' || (s?.token ? boundThumbprint(s.token) !== null : false);

/** Without Web Locks: one queue per lock name for every TokenStore of this process. */
const queues = new Map();

export class TokenStore {
  #store;
  #key;
  #clientId;
  #baseUrl;
  #margin;
  #dpop;
  #lockName;
  #channel = null;
  #session = null;
  #loaded = null;
  #listeners = new Set();

  /**
   * `store`: { load, save, remove } (keyStore() or memoryStore()); `clientId`: the
   * client name the refresh token is bound to; `refreshMarginMs`: how long before
   * expiry accessToken() refreshes; `dpop`: the key pair of key-bound sessions.
   */
  constructor({ store, clientId, baseUrl, key = 'session', refreshMarginMs = 30_000, dpop }) {
    if (!store) throw new TypeError('TokenStore needs a store');
    this.#store = store;
    this.#key = key;
    this.#clientId = clientId;
    this.#baseUrl = baseUrl;
    this.#margin = refreshMarginMs;
    this.#dpop = dpop;
    const scope = `${store.name ?? 'keygate'}/${key}`;
    this.#lockName = `keygate-refresh:${scope}`;
    if (typeof BroadcastChannel === 'function') {
      this.#channel = new BroadcastChannel(`keygate-tokens:${scope}`);
      this.#channel.onmessage = () => { this.#reload(); };
      this.#channel.unref?.(); // Node: an open channel must not keep the process alive
    }
  }

  /** The session held now (token, refresh_token, session_id, expires_in, receivedAt…), or null. */
  get session() {
    return this.#session;
  }

  /** Reads the stored session (once; later calls wait for the same read). */
  load() {
    this.#loaded ??= this.#reload();
    return this.#loaded;
  }

  /** Stores a token body from signIn() or renew() and tells the other tabs. */
  async set(tokenBody) {
    const session = { ...tokenBody, receivedAt: tokenBody.receivedAt ?? Date.now() };
    await this.#store.save(this.#key, session);
    this.#adopt(session);
    this.#channel?.postMessage('changed');
    return session;
  }

  /** Forgets the session here and in every tab (logout()s it on the server first if you want that). */
  async clear() {
    await this.#store.remove(this.#key);
    this.#adopt(null);
    this.#channel?.postMessage('changed');
  }

  /**
   * Spends the refresh token once across all tabs. Resolves to the new session;
   * when another tab refreshed meanwhile, to that tab's result, with no request.
   */
  async refresh() {
    await this.load();
    const meant = this.#session?.refresh_token ?? null;
    return this.#exclusive(async () => {
      const stored = (await this.#store.load(this.#key)) ?? null;
      if (!stored) {
        this.#adopt(null);
        throw new KeygateError('invalid_refresh_token', 'not signed in');
      }
      if (stored.refresh_token !== meant) return this.#adopt(stored); // another tab refreshed
      if (!stored.refresh_token) throw new KeygateError('invalid_refresh_token', 'this session has no refresh token');
      const bound = isBound(stored);
      if (bound && !this.#dpop) throw new TypeError('this session is key-bound (DPoP): give the TokenStore its key pair (dpop)');
      let fresh;
      try {
        fresh = await refreshWithToken(stored.refresh_token, {
          clientId: this.#clientId, baseUrl: this.#baseUrl, dpop: bound ? this.#dpop : undefined,
        });
      } catch (err) {
        if (SESSION_OVER.has(err.code)) await this.clear();
        throw err;
      }
      return this.set({ ...fresh, refresh_token: fresh.refresh_token ?? stored.refresh_token, receivedAt: Date.now() });
    });
  }

  /** A usable access token: the held one, or a refreshed one when it is about to expire. */
  async accessToken() {
    await this.load();
    const s = this.#session;
    if (!s) throw new KeygateError('invalid_token', 'not signed in');
    const expiresAt = s.receivedAt + (s.expires_in ?? 0) * 1000;
    if (s.refresh_token && expiresAt - Date.now() < this.#margin) return (await this.refresh()).token;
    return s.token;
  }

  /**
   * `fetch` with the held (refreshed when due) access token: Bearer, or for a
   * key-bound session `DPoP` with a fresh proof (see authorizedFetch).
   */
  async fetch(url, init = {}) {
    const token = await this.accessToken();
    return authorizedFetch(token, this.#baseUrl ? new URL(url, this.#baseUrl).href : url, { ...init, dpop: this.#dpop });
  }

  /** Calls `listener(session | null)` on every change, from this tab or another. */
  onChange(listener) {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  close() {
    this.#channel?.close();
    this.#listeners.clear();
  }

  async #reload() {
    return this.#adopt((await this.#store.load(this.#key)) ?? null);
  }

  #adopt(session) {
    const changed = session?.token !== this.#session?.token;
    this.#session = session;
    if (changed) for (const l of this.#listeners) l(session);
    return session;
  }

  #exclusive(task) {
    const locks = globalThis.navigator?.locks;
    if (locks) return locks.request(this.#lockName, task);
    const run = (queues.get(this.#lockName) ?? Promise.resolve()).then(task);
    const tail = run.catch(() => {});
    queues.set(this.#lockName, tail);
    tail.then(() => { if (queues.get(this.#lockName) === tail) queues.delete(this.#lockName); });
    return run;
  }
}
