/**
 * A keystore kept in the browser's IndexedDB: one record per keystore name in
 * the object store `keystores` of the database `keylock`. The record holds the
 * sealed `.kls` bytes only; nothing in it is readable without the storage key,
 * which the app's unlock provider supplies (a hook, a passphrase).
 *
 * Writes are single IndexedDB transactions, so a reader sees the old or the new
 * bytes, never a mix. The writer lock uses the Web Locks API, which is
 * exclusive across every tab and worker of the origin, so two tabs cannot
 * both read-modify-write the same keystore.
 */
import { KeylockError } from '../../keystore/errors.ts';
import type { KeystoreStorage } from '../../keystore/storage.ts';

const DB = 'keylock';
const STORE = 'keystores';

function request<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function openDb(): Promise<IDBDatabase> {
  if (typeof indexedDB === 'undefined') {
    return Promise.reject(new KeylockError('no-indexeddb', 'indexedDbStorage: expected IndexedDB in this context, got none (a browser page or worker has it)'));
  }
  const r = indexedDB.open(DB, 1);
  r.onupgradeneeded = () => { r.result.createObjectStore(STORE); };
  return request(r);
}

/** Runs one request in its own transaction; resolves once the transaction has committed. */
async function withStore<T>(mode: IDBTransactionMode, fn: (s: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  const db = await openDb();
  try {
    const tx = db.transaction(STORE, mode);
    const req = fn(tx.objectStore(STORE));
    return await new Promise<T>((resolve, reject) => {
      tx.oncomplete = () => resolve(req.result);
      // A failed request aborts the transaction; its own error (e.g. ConstraintError) says why.
      tx.onerror = tx.onabort = () => reject(req.error ?? tx.error ?? new Error('IndexedDB transaction aborted'));
    });
  } finally {
    db.close();
  }
}

/** Copies into a Uint8Array that owns its whole buffer, as IndexedDB stores the buffer. */
function own(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

/**
 * A `KeystoreStorage` backed by IndexedDB, for `Keystore.create` / `Keystore.open`
 * in a browser. `name` tells keystores of one origin apart.
 */
export function indexedDbStorage(name: string): KeystoreStorage & { remove(): Promise<void> } {
  if (typeof name !== 'string' || !name) throw new TypeError('indexedDbStorage needs a non-empty name');
  const where = `indexeddb:${DB}/${STORE}/${name}`;
  return {
    where,
    async read() {
      const v = await withStore('readonly', (s) => s.get(name) as IDBRequest<unknown>);
      if (v === undefined) throw new KeylockError('not-found', `${where}: expected a stored keystore, got nothing`);
      if (!(v instanceof Uint8Array)) throw new KeylockError('format', `${where}: expected stored bytes, got ${Object.prototype.toString.call(v)}`);
      return v;
    },
    async write(bytes) {
      await withStore('readwrite', (s) => s.put(own(bytes), name));
    },
    async create(bytes) {
      try {
        // add() refuses an existing key inside the transaction, so two creators cannot both win.
        await withStore('readwrite', (s) => s.add(own(bytes), name));
      } catch (e) {
        if ((e as DOMException)?.name === 'ConstraintError') throw new KeylockError('exists', `${where}: expected an empty slot, got an existing keystore`);
        throw e;
      }
    },
    lock() {
      const locks = (globalThis.navigator as Navigator | undefined)?.locks;
      if (!locks) return Promise.resolve(() => {});
      return new Promise<() => void>((resolve, reject) => {
        locks.request(`keylock:${where}`, () => new Promise<void>((release) => resolve(() => release()))).catch(reject);
      });
    },
    /** Deletes the stored keystore (a factory reset of this slot). */
    async remove() {
      await withStore('readwrite', (s) => s.delete(name));
    },
  };
}
