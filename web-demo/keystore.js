// Keeps the browser's state in IndexedDB: the Ed25519 CryptoKeyPair (its private half
// is created non-extractable, so no script, this one included, can ever read it out)
// and the current sign-in (access token, refresh token, session id).

const DB_NAME = 'keygate-demo';
const STORE = 'kv';
export const KEYPAIR = 'keypair';
export const SESSION = 'session';

let dbPromise = null;

function open() {
  dbPromise ??= new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
  return dbPromise;
}

async function run(mode, action) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const req = action(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(req.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

export const load = (key) => run('readonly', (store) => store.get(key));
export const save = (key, value) => run('readwrite', (store) => store.put(value, key));
export const remove = (key) => run('readwrite', (store) => store.delete(key));

/** A new Ed25519 key pair whose private key can sign but never be exported. */
export async function createKeyPair() {
  const keyPair = await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
  const record = { keyPair, createdAt: new Date().toISOString() };
  await save(KEYPAIR, record);
  return record;
}

