// Generated from clients/js/src/keystore.js (package keygate-client) by
// clients/js/scripts/vendor.js: edit the package and run that script, not this file.

// The browser's state in IndexedDB: the Ed25519 CryptoKeyPair (its private half is
// created non-extractable, so no script, this one included, can ever read it out;
// IndexedDB stores the CryptoKey object itself) and the current sign-in.

export const KEYPAIR = 'keypair';
export const SESSION = 'session';
const STORE = 'kv';

/**
 * A key-value store in the IndexedDB database `name` (one object store, `kv`):
 * `load`/`save`/`remove` by key, and the key pair under KEYPAIR.
 */
export function keyStore({ name = 'keygate' } = {}) {
  let dbPromise = null;
  const open = () => {
    dbPromise ??= new Promise((resolve, reject) => {
      const req = indexedDB.open(name, 1);
      req.onupgradeneeded = () => req.result.createObjectStore(STORE);
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    return dbPromise;
  };
  const run = async (mode, action) => {
    const db = await open();
    return new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const req = action(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  };
  return withKeyPair({
    name,
    load: (key) => run('readonly', (s) => s.get(key)),
    save: (key, value) => run('readwrite', (s) => s.put(value, key)),
    remove: (key) => run('readwrite', (s) => s.delete(key)),
  });
}

/** The same interface in memory (Node, tests): nothing survives the process. */
export function memoryStore() {
  const map = new Map();
  return withKeyPair({
    name: 'memory',
    load: async (key) => map.get(key),
    save: async (key, value) => { map.set(key, value); },
    remove: async (key) => { map.delete(key); },
  });
}

/** Adds the key names and the key-pair helpers to a load/save/remove store. */
function withKeyPair(store) {
  return Object.assign(store, {
    KEYPAIR,
    SESSION,
    /** A new Ed25519 key pair whose private key can sign but never be exported. */
    async createKeyPair() {
      const keyPair = await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
      const record = { keyPair, createdAt: new Date().toISOString() };
      await store.save(KEYPAIR, record);
      return record;
    },
    /** The stored key pair record, or a new one. */
    async loadOrCreateKeyPair() {
      return (await store.load(KEYPAIR)) ?? store.createKeyPair();
    },
  });
}
