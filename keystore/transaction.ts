/**
 * How a keystore is kept: its state sealed in a `.kls` (kls.ts) in a
 * `KeystoreStorage` (storage.ts), opened, created and changed here. The
 * keystore (keystore.ts) decides what a change is; this module makes it stick.
 *
 * Every change is read-modify-write under the store's writer lock: re-read the
 * stored bytes, apply the change to a copy, seal it with generation + 1, write
 * it atomically, and only then let the in-memory state move. A failed check or
 * write leaves both the stored bytes and the in-memory state as they were.
 *
 * When the store has a monotonic counter (counter.ts; a file by default on
 * disk), the generation must equal it: checked at open and before every write,
 * advanced after every write. When it counts unlock attempts (attempts.ts),
 * wrong storage keys are counted across restarts and lock the keystore out
 * for a growing time.
 */
import { equalBytes, sha256Async, wipe } from './nacl.ts';
import { revocationFileName, revocationFromSideFile } from './revocation.ts';
import { hex } from './hex.ts';
import { checkLockoutPolicy, DEFAULT_LOCKOUT, retryAt, type LockoutPolicy } from './attempts.ts';
import type { MonotonicCounter } from './counter.ts';
import type { KeystoreStorage } from './storage.ts';
import { storageKey, type UnlockProvider, type UnlockRecord } from './unlock.ts';
import { decodeKlsOuter, encodeKls, klsKeys, openKlsBody, wipeState, type KeystoreState } from './kls.ts';
import { LockoutError, RollbackError, TamperedError, UnlockError } from './errors.ts';
import { unixNow } from './vendorfile.ts';

/** The keys a storage key gives (kls.ts `klsKeys`). */
export type SealKeys = ReturnType<typeof klsKeys>;

/** A new storage key for `SealedStore.mutate` to re-seal under. */
interface Rekey {
  keys: SealKeys;
  unlock: UnlockRecord;
}

/**
 * A change to the state: it edits the copy it is given; returning `false`
 * means "nothing to store". It throws to refuse the change.
 */
type Change = (s: KeystoreState) => void | boolean;

/**
 * One opened keystore: its storage, the state and sealed bytes as last read or
 * written, and the keys that seal them. Changes run one at a time, in order.
 */
export class SealedStore {
  readonly storage: KeystoreStorage;
  #state: KeystoreState;
  #bytes: Uint8Array;
  #keys: SealKeys;
  #unlock: UnlockRecord;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(storage: KeystoreStorage, state: KeystoreState, bytes: Uint8Array, keys: SealKeys, unlock: UnlockRecord) {
    this.storage = storage;
    this.#state = state;
    this.#bytes = bytes;
    this.#keys = keys;
    this.#unlock = unlock;
  }

  /**
   * Stores the first version of a keystore, `state` sealed under `keys`. A
   * counter that cannot be reset (a TPM's) may already stand above 0: the
   * generation starts just past it. On failure `state` and `keys` are wiped.
   */
  static async create(storage: KeystoreStorage, state: KeystoreState, keys: SealKeys, unlock: UnlockRecord): Promise<SealedStore> {
    try {
      if (storage.counter) state.generation = (await storage.counter.read()) + 1;
      const bytes = encodeKls(state, keys, unlock);
      await storage.create(bytes);
      await storage.counter?.increment();
      return new SealedStore(storage, state, bytes, keys, unlock);
    } catch (e) {
      wipeState(state);
      wipe(keys.sealKey);
      throw e;
    }
  }

  /**
   * Opens the stored keystore (see `Keystore.open` for the errors): lockout
   * first, before any key is derived; then the storage key, the sealed body,
   * the count of wrong secrets, and the generation against the counter.
   */
  static async open(storage: KeystoreStorage, opts: { unlock: UnlockProvider; now?: number; lockout?: LockoutPolicy }): Promise<SealedStore> {
    // The counter is read before the file: a writer stores the file first and then advances the
    // counter, so a file read after the counter is never older than it, even while another
    // process writes (reading the other way round races with that writer).
    const counterBefore = storage.counter ? await storage.counter.read() : undefined;
    const bytes = await storage.read();
    const outer = decodeKlsOuter(bytes);
    const now = opts.now ?? unixNow();
    const policy = opts.lockout ?? DEFAULT_LOCKOUT;
    checkLockoutPolicy(policy);
    const tried = storage.attempts ? await storage.attempts.read() : undefined;
    if (tried) {
      const at = retryAt(tried, policy);
      if (now < at) throw new LockoutError(tried.failures, at, now);
    }
    const sk = await storageKey(opts.unlock, outer.unlock);
    const keys = klsKeys(sk);
    wipe(sk);
    let state: KeystoreState;
    try {
      state = openKlsBody(outer, keys);
      try {
        await fillRevocation(storage, state);
      } catch (e) {
        wipeState(state);
        throw e;
      }
    } catch (e) {
      wipe(keys.sealKey);
      // Only a key that derives but does not match counts: a missing key file or a failing hook is no guess.
      if (tried && storage.attempts && e instanceof UnlockError) {
        const next = { failures: tried.failures + 1, last: now };
        await storage.attempts.write(next);
        const at = retryAt(next, policy);
        throw new UnlockError(`${e.message}; ${next.failures} wrong secret(s) in a row${at > now ? `, next attempt allowed in ${at - now} s` : ''}`, { cause: e });
      }
      throw e;
    }
    try {
      // Without the writer lock other processes may write meanwhile. The file is never older than
      // the counter read before it (else an older copy was put back), and never more than one
      // ahead of the counter read after it (else the counter was reset or lost). The exact
      // check runs under the lock before every write.
      if (storage.counter && counterBefore !== undefined) {
        if (state.generation < counterBefore) checkCounter(storage.where, storage.counter, state.generation, counterBefore);
        const after = await storage.counter.read();
        if (state.generation > after + 1) checkCounter(storage.where, storage.counter, state.generation, after);
      }
      if (tried && storage.attempts && tried.failures > 0) await storage.attempts.write({ failures: 0, last: now });
    } catch (e) {
      wipeState(state);
      wipe(keys.sealKey);
      throw e;
    }
    return new SealedStore(storage, state, bytes.slice(), keys, outer.unlock);
  }

  /** The state as last read or written. Read it; change it only through `mutate`. */
  get state(): KeystoreState {
    return this.#state;
  }

  /** The sealed bytes as last read or written (not a copy). */
  get bytes(): Uint8Array {
    return this.#bytes;
  }

  /**
   * Read-modify-write under the writer lock: `change` edits a copy of the
   * stored state; the state and bytes move only after the write. With `rekey`,
   * the keystore is re-sealed under those keys even when `change` stores nothing.
   */
  mutate(change: Change, rekey?: Rekey): Promise<void> {
    const run = async () => {
      const release = this.storage.lock ? await this.storage.lock() : undefined;
      try {
        const base = await this.#current();
        const counter = this.storage.counter;
        // Under the lock: catch up after a crash between a write and its increment, else insist on equality.
        if (counter && checkCounter(this.storage.where, counter, base.generation, await counter.read()) === 'ahead') await counter.increment();
        const next = cloneState(base);
        let keep = false;
        try {
          if (change(next) === false && !rekey) return;
          next.generation = base.generation + 1;
          const bytes = encodeKls(next, rekey?.keys ?? this.#keys, rekey?.unlock ?? this.#unlock);
          await this.storage.write(bytes);
          keep = true;
          this.#adopt(next);
          this.#bytes = bytes;
          if (rekey) {
            wipe(this.#keys.sealKey);
            this.#keys = rekey.keys;
            this.#unlock = rekey.unlock;
          }
          await counter?.increment();
        } finally {
          if (!keep) wipeState(next);
        }
      } finally {
        release?.();
      }
    };
    const p = this.#queue.then(run, run);
    this.#queue = p.catch(() => {});
    return p;
  }

  /** Wipes the secrets held in memory (the state's and the seal key). */
  wipe(): void {
    wipeState(this.#state);
    wipe(this.#keys.sealKey);
  }

  /** Swaps in a new state, wiping the old one's secrets. */
  #adopt(s: KeystoreState): void {
    if (s === this.#state) return;
    const old = this.#state;
    this.#state = s;
    wipeState(old);
  }

  /**
   * The stored state: ours when the stored bytes are the ones we wrote, else
   * the stored keystore opened again. A stored generation at or below ours with
   * other bytes means the store went back in time (RollbackError); another
   * device's keystore under the same storage key is TamperedError.
   */
  async #current(): Promise<KeystoreState> {
    const bytes = await this.storage.read();
    if (equalBytes(bytes, this.#bytes)) return this.#state;
    const outer = decodeKlsOuter(bytes);
    const s = openKlsBody(outer, this.#keys);
    try {
      await fillRevocation(this.storage, s, this.#state.revocation);
    } catch (e) {
      wipeState(s);
      throw e;
    }
    if (s.deviceId !== this.#state.deviceId || !equalBytes(s.devicePub, this.#state.devicePub)) {
      wipeState(s);
      throw new TamperedError(`${this.storage.where}: expected the keystore of device "${this.#state.deviceId}", got device "${s.deviceId}"`);
    }
    if (s.generation <= this.#state.generation) {
      wipeState(s);
      throw new RollbackError(`${this.storage.where}: expected keystore generation >= ${this.#state.generation + 1} (it changed since it was read), got ${s.generation}`);
    }
    this.#adopt(s);
    this.#bytes = bytes.slice();
    return s;
  }
}

/**
 * A copy of the state for a change to edit. The revocation id arrays are
 * shared, not copied (100,000 ids would be most of the cost): a change
 * replaces them (incoming.ts `applyRevocation`), never edits them in place.
 */
function cloneState(s: KeystoreState): KeystoreState {
  const r = s.revocation;
  const next: KeystoreState = structuredClone({ ...s, revocation: { ...r, grants: [] as string[], models: [] as string[], devices: [] as string[] } });
  next.revocation.grants = r.grants;
  next.revocation.models = r.models;
  next.revocation.devices = r.devices;
  return next;
}

/**
 * Fills the ids of a revocation list kept beside the keystore (its SHA-256 in
 * the sealed body): from `known` when that is the same list, else from the
 * side file, whose SHA-256 must match. A missing, changed or replaced file is
 * TamperedError: an older list put back is refused like any other change.
 */
async function fillRevocation(storage: KeystoreStorage, s: KeystoreState, known?: KeystoreState['revocation']): Promise<void> {
  const want = s.revocation.file;
  if (!want) return;
  if (known?.file && equalBytes(known.file, want)) {
    s.revocation = { ...s.revocation, grants: known.grants, models: known.models, devices: known.devices };
    return;
  }
  const name = revocationFileName(want);
  if (!storage.side) throw new TamperedError(`${storage.where}: the keystore keeps its revocation list in a side file (${name}), but this storage has no side files`);
  const bytes = await storage.side.read(name);
  if (!bytes) throw new TamperedError(`${storage.where}: expected the revocation list ${name} beside the keystore, found none (removed?)`);
  const got = await sha256Async(bytes);
  if (!equalBytes(got, want)) throw new TamperedError(`${storage.where}: the revocation list ${name} beside the keystore has SHA-256 ${hex(got)}, expected ${hex(want)} (changed or replaced)`);
  const list = revocationFromSideFile(bytes);
  if (list.listVersion !== s.revocation.listVersion) throw new TamperedError(`${storage.where}: the revocation list ${name} is version ${list.listVersion}, the keystore recorded ${s.revocation.listVersion}`);
  s.revocation = { ...s.revocation, grants: list.grants, models: list.models, devices: list.devices };
}

/**
 * The storage behind a keystore target: a path is a file store (filestore.ts,
 * imported only then, so browser bundles never load `node:fs`).
 */
export async function resolveStorage(target: string | KeystoreStorage): Promise<KeystoreStorage> {
  if (typeof target !== 'string') return target;
  const { fileStorage } = await import('./filestore.ts');
  return fileStorage(target);
}

/**
 * The keystore's generation against its counter: equal, or one ahead (the
 * process stopped between writing the file and advancing the counter). An
 * older generation is an older copy put back; a counter two or more behind was
 * reset or replaced. Both are RollbackError.
 */
function checkCounter(where: string, counter: MonotonicCounter, generation: number, value: number): 'same' | 'ahead' {
  if (generation === value) return 'same';
  if (generation === value + 1) return 'ahead';
  if (generation < value) throw new RollbackError(`${where}: expected keystore generation ${value} (counter ${counter.where}), got ${generation}: an older copy of the keystore was put back`);
  throw new RollbackError(`${where}: expected counter ${counter.where} at ${generation} or ${generation - 1}, got ${value}: the counter was reset, replaced or lost`);
}
