/**
 * The device keystore: device identity, pinned vendor keys, installed grants,
 * revocation list, failure counters and disabled flags, sealed at rest in a
 * `.kls` (see kls.ts) under a storage key from an unlock provider.
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
import { boxKeyPair, equalBytes, SIZES, wipe } from './nacl.ts';
import { encodeDevicePub } from './keyfiles.ts';
import { openGrant, checkId } from './grant.ts';
import { openRevocation, sameRevocations } from './revocation.ts';
import { openReinstate } from './reinstate.ts';
import { openRotation } from './rotation.ts';
import { checkLockoutPolicy, DEFAULT_LOCKOUT, retryAt, type LockoutPolicy } from './attempts.ts';
import type { MonotonicCounter } from './counter.ts';
import { keyId, unixNow } from './vendorfile.ts';
import { memoryStorage, type KeystoreStorage } from './storage.ts';
import { newUnlockRecord, storageKey, type UnlockProvider, type UnlockRecord } from './unlock.ts';
import {
  decodeKlsOuter, encodeKls, klsKeys, MAX_RETIRED_KEYS, MAX_VENDOR_KEYS, openKlsBody, wipeState,
  type GrantRecord, type KeystoreState, type RevocationState,
} from './kls.ts';
import {
  DisabledError, ExpiredGrantError, KeylockError, LockoutError, NoGrantError, RevokedError, RollbackError,
  ReplayError, SizeLimitError, TamperedError, UnlockError, UntrustedSignerError,
} from './errors.ts';

/** Options of `Keystore.create`. */
export interface CreateKeystoreOptions {
  /** Default: the key id of the new device key (16 hex digits). */
  deviceId?: string;
  /** The vendor Ed25519 public keys this device trusts (1..16). */
  vendorKeys: Uint8Array[];
  /**
   * Backup (recovery) Ed25519 keys (0..16): they may sign a key rotation
   * (`installRotation`) and nothing else, so a lost or stolen vendor key can be
   * replaced. Keep their secret halves offline.
   */
  backupKeys?: Uint8Array[];
  unlock: UnlockProvider;
}

/** Options of `Keystore.open`. */
export interface OpenKeystoreOptions {
  unlock: UnlockProvider;
  /** Unix seconds, for the lockout (default: the clock). */
  now?: number;
  /** How wrong storage keys lock the keystore out (default DEFAULT_LOCKOUT), when the store counts them. */
  lockout?: LockoutPolicy;
}

/** What `installRotation` did. */
export interface RotationResult {
  /** Which list the replaced key was in. */
  role: 'vendor' | 'backup';
  oldKey: Uint8Array;
  newKey: Uint8Array;
}

/** What the keystore tells about an installed grant (never the key). */
export interface GrantInfo {
  grantId: string;
  modelId: string;
  notBefore: number;
  notAfter: number;
  issued: number;
  installedAt: number;
  vendorKey: Uint8Array;
}

/** A model's failure policy (the `.klm` manifest's `policy`). */
export interface FailurePolicy {
  onInvalidKey: 'halt' | 'disable';
  /** Failures that disable the model when `onInvalidKey` is `disable`; 0 = never. */
  maxFailures: number;
}

type Keys = { sealKey: Uint8Array; kcv: Uint8Array };

/** The device keystore (see the module comment). */
export class Keystore {
  #storage: KeystoreStorage;
  #state: KeystoreState;
  #bytes: Uint8Array;
  #keys: Keys;
  #unlock: UnlockRecord;
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;

  private constructor(storage: KeystoreStorage, state: KeystoreState, bytes: Uint8Array, keys: Keys, unlock: UnlockRecord) {
    this.#storage = storage;
    this.#state = state;
    this.#bytes = bytes;
    this.#keys = keys;
    this.#unlock = unlock;
  }

  /**
   * Creates a keystore with a fresh X25519 device identity. Fails (KeylockError
   * code `exists`) when the target already holds one. A `file:` provider's key
   * file is created (32 random bytes, mode 0600) when missing.
   */
  static async create(target: string | KeystoreStorage, opts: CreateKeystoreOptions): Promise<Keystore> {
    const storage = await resolveStorage(target);
    if (!Array.isArray(opts.vendorKeys) || opts.vendorKeys.length < 1 || opts.vendorKeys.length > MAX_VENDOR_KEYS) {
      throw new RangeError(`vendorKeys: expected 1..${MAX_VENDOR_KEYS} Ed25519 public keys, got ${Array.isArray(opts.vendorKeys) ? opts.vendorKeys.length : typeof opts.vendorKeys}`);
    }
    for (const k of opts.vendorKeys) if (!(k instanceof Uint8Array) || k.byteLength !== SIZES.signPublic) throw new RangeError(`vendor keys must be ${SIZES.signPublic} bytes`);
    const backupKeys = opts.backupKeys ?? [];
    if (!Array.isArray(backupKeys) || backupKeys.length > MAX_VENDOR_KEYS) throw new RangeError(`backupKeys: expected 0..${MAX_VENDOR_KEYS} Ed25519 public keys`);
    for (const k of backupKeys) {
      if (!(k instanceof Uint8Array) || k.byteLength !== SIZES.signPublic) throw new RangeError(`backup keys must be ${SIZES.signPublic} bytes`);
      if (opts.vendorKeys.some((v) => equalBytes(v, k))) throw new RangeError(`key ${keyId(k)} is given both as a vendor key and as a backup key; a backup key may only sign rotations`);
    }
    if (opts.deviceId !== undefined) checkId('deviceId', opts.deviceId);
    if (await storage.read().then(() => true, () => false)) {
      throw new KeylockError('exists', `${storage.where}: expected no keystore there, got an existing one`);
    }
    const unlock = newUnlockRecord(opts.unlock);
    const sk = await storageKey(opts.unlock, unlock, { create: true });
    const keys = klsKeys(sk);
    wipe(sk);
    const kp = boxKeyPair();
    const state: KeystoreState = {
      deviceId: opts.deviceId ?? keyId(kp.publicKey),
      devicePub: kp.publicKey, deviceSecret: kp.secretKey,
      vendorKeys: opts.vendorKeys.map((k) => k.slice()),
      backupKeys: backupKeys.map((k) => k.slice()), retiredKeys: [],
      generation: 1, grants: [], grantFloors: new Map(),
      revocation: { listVersion: 0, issued: 0, grants: [], models: [], devices: [] },
      failures: new Map(), disabled: new Map(), usedTokens: [], lastTrustedTime: 0,
    };
    try {
      // A counter that cannot be reset (a TPM's) may already stand above 0: the generation starts just past it.
      if (storage.counter) state.generation = (await storage.counter.read()) + 1;
      const bytes = encodeKls(state, keys, unlock);
      await storage.create(bytes);
      await storage.counter?.increment();
      return new Keystore(storage, state, bytes, keys, unlock);
    } catch (e) {
      wipeState(state);
      wipe(keys.sealKey);
      throw e;
    }
  }

  /**
   * Opens a keystore. Wrong storage key: UnlockError (counted, when the store
   * counts attempts; too many in a row: LockoutError until the wait is over,
   * before any key is derived); truncated or malformed: FormatError /
   * SizeLimitError; changed bytes: TamperedError; a generation that disagrees
   * with the store's counter: RollbackError.
   */
  static async open(target: string | KeystoreStorage, opts: OpenKeystoreOptions): Promise<Keystore> {
    const storage = await resolveStorage(target);
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
    return new Keystore(storage, state, bytes.slice(), keys, outer.unlock);
  }

  /** Opens keystore bytes held in memory (browsers persist `toBytes()` themselves, e.g. in IndexedDB). */
  static fromBytes(bytes: Uint8Array, unlock: UnlockProvider): Promise<Keystore> {
    return Keystore.open(memoryStorage(bytes), { unlock });
  }

  /** The sealed bytes as last written (safe to store anywhere: nothing secret is readable without the storage key). */
  toBytes(): Uint8Array {
    return this.#bytes.slice();
  }

  /** This device's id (in grants, tokens and revocation lists). */
  get deviceId(): string {
    return this.#state.deviceId;
  }
  /** The device's X25519 public key (grants are sealed to it). */
  get devicePub(): Uint8Array {
    return this.#state.devicePub.slice();
  }
  /** The pinned vendor Ed25519 keys. */
  get vendorKeys(): Uint8Array[] {
    return this.#state.vendorKeys.map((k) => k.slice());
  }
  /** The pinned backup keys (they sign rotations only). */
  get backupKeys(): Uint8Array[] {
    return this.#state.backupKeys.map((k) => k.slice());
  }
  /** Keys rotated out of this device (never pinned again). */
  get retiredKeys(): Uint8Array[] {
    return this.#state.retiredKeys.map((k) => k.slice());
  }
  /** Write counter: 1 after create, + 1 for every stored change. */
  get generation(): number {
    return this.#state.generation;
  }
  /** Installed revocation list version (0: none). */
  get revocationVersion(): number {
    return this.#state.revocation.listVersion;
  }
  /** Where the keystore lives. */
  get where(): string {
    return this.#storage.where;
  }

  /** The `device.pub` file for this device (what a vendor needs to issue grants). */
  devicePubFile(): Uint8Array {
    return encodeDevicePub(this.#state.deviceId, this.#state.devicePub);
  }

  /** Installed grants (no keys). */
  grants(): GrantInfo[] {
    return this.#state.grants.map(info);
  }

  /** The grant installed for a model, if any (no key). */
  grantFor(modelId: string): GrantInfo | undefined {
    const g = this.#state.grants.find((x) => x.modelId === modelId);
    return g && info(g);
  }

  /**
   * Verifies and installs a `.klg` for this device; it replaces an earlier grant
   * for the same model. Refused: unpinned signer, another device, revoked,
   * already expired at `now` (a grant that is not valid yet is kept for later),
   * a disabled model (install the reinstate token first), or a grant issued
   * before the newest one this device has installed for the model (RollbackError,
   * also after that one was removed by a disable).
   */
  async installGrant(bytes: Uint8Array, now = unixNow()): Promise<GrantInfo> {
    this.#live();
    const g = openGrant(bytes, this.#state);
    try {
      const rec: GrantRecord = {
        grantId: g.grantId, modelId: g.modelId, modelKey: g.modelKey, notBefore: g.notBefore, notAfter: g.notAfter,
        issued: g.issued, vendorKey: g.vendorKey, installedAt: now,
      };
      await this.#mutate((s) => {
        checkRevoked(s, g.modelId, g.grantId);
        const d = s.disabled.get(g.modelId);
        if (d) throw new DisabledError(g.modelId, d.at, d.reason);
        const floor = s.grantFloors.get(g.modelId) ?? 0;
        if (g.issued < floor) {
          throw new RollbackError(`grant ${g.grantId} for model "${g.modelId}": expected one issued at or after ${floor} (the newest grant installed for this model), got one issued at ${g.issued}`);
        }
        s.grantFloors.set(g.modelId, g.issued);
        s.lastTrustedTime = Math.max(s.lastTrustedTime, g.issued);
        const t = Math.max(now, s.lastTrustedTime);
        if (t >= g.notAfter) throw new ExpiredGrantError(g.modelId, g.notBefore, g.notAfter, t);
        for (const old of s.grants) if (old.modelId === g.modelId) wipe(old.modelKey);
        s.grants = s.grants.filter((x) => x.modelId !== g.modelId);
        s.grants.push({ ...rec, modelKey: rec.modelKey.slice() });
      });
      return info(rec);
    } finally {
      wipe(g.modelKey);
    }
  }

  /**
   * Installs a `.klr`. A lower list version than the installed one is
   * RollbackError; the same version is accepted only with the same ids (no
   * write, `changed: false`), otherwise RollbackError too.
   */
  async installRevocation(bytes: Uint8Array): Promise<{ listVersion: number; changed: boolean }> {
    this.#live();
    const list = openRevocation(bytes, this.#state.vendorKeys);
    let changed = true;
    await this.#mutate((s) => {
      const cur = s.revocation;
      if (list.listVersion < cur.listVersion) {
        throw new RollbackError(`revocation list: expected version >= ${cur.listVersion} (installed), got ${list.listVersion}`);
      }
      if (list.listVersion === cur.listVersion) {
        if (sameRevocations(list, cur)) {
          changed = false;
          return false;
        }
        throw new RollbackError(`revocation list: version ${list.listVersion} is installed with other ids; expected a higher version for a changed list, got the same`);
      }
      s.revocation = { ...list };
      s.lastTrustedTime = Math.max(s.lastTrustedTime, list.issued);
    });
    return { listVersion: list.listVersion, changed };
  }

  /**
   * Installs a `.klt`: clears the model's disabled flag and failure counter.
   * Each token works once (ReplayError after). The model key is not restored:
   * install a fresh grant next.
   */
  async installReinstate(bytes: Uint8Array): Promise<{ modelId: string; tokenId: string; wasDisabled: boolean }> {
    this.#live();
    const tok = openReinstate(bytes, this.#state);
    let wasDisabled = false;
    await this.#mutate((s) => {
      if (s.usedTokens.includes(tok.tokenId)) throw new ReplayError(`reinstate token ${tok.tokenId}: expected a token not used before, got one this device already used`);
      wasDisabled = s.disabled.delete(tok.modelId);
      s.failures.delete(tok.modelId);
      s.usedTokens = [...s.usedTokens, tok.tokenId].sort();
      s.lastTrustedTime = Math.max(s.lastTrustedTime, tok.issued);
    });
    return { modelId: tok.modelId, tokenId: tok.tokenId, wasDisabled };
  }

  /**
   * Installs a `.klv` key rotation: the old key is replaced in its list (vendor
   * or backup keys) by the new one and remembered as retired. A vendor key is
   * replaced by a rotation signed by itself or by a backup key; a backup key
   * only by a backup key's signature. Refused: unpinned signer or old key
   * (UntrustedSignerError), a replay or a retired new key (RollbackError), a new
   * key already pinned (KeylockError `key-pinned`). Files signed only by the
   * rotated-out key are refused from then on; installed grants stay.
   */
  async installRotation(bytes: Uint8Array): Promise<RotationResult> {
    this.#live();
    const rot = openRotation(bytes, [...this.#state.vendorKeys, ...this.#state.backupKeys]);
    let role: 'vendor' | 'backup' = 'vendor';
    await this.#mutate((s) => {
      const has = (list: readonly Uint8Array[], k: Uint8Array): boolean => list.some((x) => equalBytes(x, k));
      if (has(s.retiredKeys, rot.oldKey)) throw new RollbackError(`key rotation: expected a pinned old key, got key ${keyId(rot.oldKey)}, which this device rotated out before (a replayed rotation)`);
      if (has(s.retiredKeys, rot.newKey)) throw new RollbackError(`key rotation: expected a fresh new key, got key ${keyId(rot.newKey)}, which this device rotated out before`);
      if (has(s.vendorKeys, rot.newKey) || has(s.backupKeys, rot.newKey)) throw new KeylockError('key-pinned', `key rotation: expected a new key not pinned yet, got key ${keyId(rot.newKey)}, which is pinned already`);
      const signerIsBackup = has(s.backupKeys, rot.signer);
      if (!signerIsBackup && !has(s.vendorKeys, rot.signer)) throw new UntrustedSignerError(`key rotation: expected a signer pinned on this device, got key ${keyId(rot.signer)}`);
      if (has(s.vendorKeys, rot.oldKey)) {
        if (!signerIsBackup && !equalBytes(rot.signer, rot.oldKey)) {
          throw new UntrustedSignerError(`key rotation of vendor key ${keyId(rot.oldKey)}: expected a signature by that key or by a backup key, got one by vendor key ${keyId(rot.signer)}`);
        }
        role = 'vendor';
      } else if (has(s.backupKeys, rot.oldKey)) {
        if (!signerIsBackup) throw new UntrustedSignerError(`key rotation of backup key ${keyId(rot.oldKey)}: expected a signature by a backup key, got one by vendor key ${keyId(rot.signer)}`);
        role = 'backup';
      } else {
        throw new UntrustedSignerError(`key rotation: expected the old key to be pinned on this device, got key ${keyId(rot.oldKey)}`);
      }
      if (s.retiredKeys.length >= MAX_RETIRED_KEYS) throw new SizeLimitError('keystore retired keys (entries)', MAX_RETIRED_KEYS, s.retiredKeys.length + 1);
      const list = role === 'vendor' ? s.vendorKeys : s.backupKeys;
      list[list.findIndex((k) => equalBytes(k, rot.oldKey))] = rot.newKey.slice();
      s.retiredKeys.push(rot.oldKey.slice());
      s.lastTrustedTime = Math.max(s.lastTrustedTime, rot.issued);
    });
    return { role, oldKey: rot.oldKey, newKey: rot.newKey };
  }

  /**
   * The model key for `modelId` (a copy: wipe it when done), or the typed
   * reason there is none: RevokedError, DisabledError, NoGrantError,
   * ExpiredGrantError. The clock counts as no earlier than the latest
   * vendor-signed time this keystore has seen, so turning it back does not
   * revive an expired grant.
   */
  modelKeyFor(modelId: string, now = unixNow()): Uint8Array {
    this.#live();
    const s = this.#state;
    checkRevoked(s, modelId);
    const d = s.disabled.get(modelId);
    if (d) throw new DisabledError(modelId, d.at, d.reason);
    const g = s.grants.find((x) => x.modelId === modelId);
    if (!g) throw new NoGrantError(`model "${modelId}": expected a grant installed on device "${s.deviceId}", got none`);
    checkRevoked(s, modelId, g.grantId);
    const t = Math.max(now, s.lastTrustedTime);
    if (t < g.notBefore || t >= g.notAfter) throw new ExpiredGrantError(modelId, g.notBefore, g.notAfter, t);
    return g.modelKey.slice();
  }

  /** Failures counted for a model since its last success. */
  failureCount(modelId: string): number {
    return this.#state.failures.get(modelId) ?? 0;
  }

  /** Whether the model is disabled on this device. */
  isDisabled(modelId: string): boolean {
    return this.#state.disabled.has(modelId);
  }

  /**
   * Counts one failed unlock of a model and persists it. With policy `disable`,
   * reaching `maxFailures` (> 0) disables the model and deletes its grants' key
   * material from the keystore. On a model that is already disabled nothing is written.
   */
  async recordFailure(modelId: string, policy: FailurePolicy, now = unixNow()): Promise<{ failures: number; disabled: boolean }> {
    this.#live();
    checkId('modelId', modelId);
    if (policy?.onInvalidKey !== 'halt' && policy?.onInvalidKey !== 'disable') throw new RangeError(`policy.onInvalidKey must be "halt" or "disable", got ${String(policy?.onInvalidKey)}`);
    if (!Number.isSafeInteger(policy.maxFailures) || policy.maxFailures < 0) throw new RangeError(`policy.maxFailures must be a non-negative integer, got ${policy.maxFailures}`);
    let result = { failures: 0, disabled: false };
    await this.#mutate((s) => {
      if (s.disabled.has(modelId)) {
        result = { failures: s.failures.get(modelId) ?? 0, disabled: true };
        return false;
      }
      const n = (s.failures.get(modelId) ?? 0) + 1;
      s.failures.set(modelId, n);
      const disable = policy.onInvalidKey === 'disable' && policy.maxFailures > 0 && n >= policy.maxFailures;
      if (disable) {
        s.disabled.set(modelId, { at: Math.max(now, s.lastTrustedTime), reason: `${n} failed unlocks (limit ${policy.maxFailures})` });
        for (const g of s.grants) if (g.modelId === modelId) wipe(g.modelKey);
        s.grants = s.grants.filter((g) => g.modelId !== modelId);
      }
      result = { failures: n, disabled: disable };
    });
    return result;
  }

  /** Clears a model's failure counter after a successful unlock (no write when it is already 0). */
  async resetFailures(modelId: string): Promise<void> {
    this.#live();
    await this.#mutate((s) => {
      if (!s.failures.has(modelId)) return false;
      s.failures.delete(modelId);
    });
  }

  /**
   * Re-seals the keystore under another unlock provider (e.g. a new passphrase or
   * stronger scrypt cost); a new salt is drawn for passphrases.
   */
  async changeUnlock(unlock: UnlockProvider): Promise<void> {
    this.#live();
    const record = newUnlockRecord(unlock);
    const sk = await storageKey(unlock, record, { create: true });
    const keys = klsKeys(sk);
    wipe(sk);
    try {
      await this.#mutate(() => {}, { keys, unlock: record });
    } catch (e) {
      wipe(keys.sealKey);
      throw e;
    }
  }

  /** Re-reads the stored keystore (another process may have changed it). */
  async reload(): Promise<void> {
    this.#live();
    await this.#mutate(() => false);
  }

  /** Wipes the keys this object holds in memory; it cannot be used afterwards. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    wipeState(this.#state);
    wipe(this.#keys.sealKey);
  }

  #live(): void {
    if (this.#closed) throw new TypeError('this Keystore was closed');
  }

  /**
   * Read-modify-write under the writer lock. `change` edits a copy; returning
   * `false` means "nothing to store". The state and bytes move only after the write.
   */
  #mutate(change: (s: KeystoreState) => void | boolean, rekey?: { keys: Keys; unlock: UnlockRecord }): Promise<void> {
    const run = async () => {
      const release = this.#storage.lock ? await this.#storage.lock() : undefined;
      try {
        const base = await this.#current();
        const counter = this.#storage.counter;
        // Under the lock: catch up after a crash between a write and its increment, else insist on equality.
        if (counter && checkCounter(this.#storage.where, counter, base.generation, await counter.read()) === 'ahead') await counter.increment();
        const next = structuredClone(base);
        let keep = false;
        try {
          if (change(next) === false && !rekey) return;
          next.generation = base.generation + 1;
          const bytes = encodeKls(next, rekey?.keys ?? this.#keys, rekey?.unlock ?? this.#unlock);
          await this.#storage.write(bytes);
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
    const bytes = await this.#storage.read();
    if (equalBytes(bytes, this.#bytes)) return this.#state;
    const outer = decodeKlsOuter(bytes);
    const s = openKlsBody(outer, this.#keys);
    if (s.deviceId !== this.#state.deviceId || !equalBytes(s.devicePub, this.#state.devicePub)) {
      wipeState(s);
      throw new TamperedError(`${this.#storage.where}: expected the keystore of device "${this.#state.deviceId}", got device "${s.deviceId}"`);
    }
    if (s.generation <= this.#state.generation) {
      wipeState(s);
      throw new RollbackError(`${this.#storage.where}: expected keystore generation >= ${this.#state.generation + 1} (it changed since it was read), got ${s.generation}`);
    }
    this.#adopt(s);
    this.#bytes = bytes.slice();
    return s;
  }
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

function info(g: GrantRecord): GrantInfo {
  return { grantId: g.grantId, modelId: g.modelId, notBefore: g.notBefore, notAfter: g.notAfter, issued: g.issued, installedAt: g.installedAt, vendorKey: g.vendorKey.slice() };
}

function checkRevoked(s: KeystoreState, modelId: string, grantId?: string): void {
  const r: RevocationState = s.revocation;
  if (r.devices.includes(s.deviceId)) throw new RevokedError(`device "${s.deviceId}" is revoked by revocation list version ${r.listVersion}; expected it absent`);
  if (r.models.includes(modelId)) throw new RevokedError(`model "${modelId}" is revoked by revocation list version ${r.listVersion}; expected it absent`);
  if (grantId !== undefined && r.grants.includes(grantId)) throw new RevokedError(`grant ${grantId} for model "${modelId}" is revoked by revocation list version ${r.listVersion}; expected it absent`);
}

async function resolveStorage(target: string | KeystoreStorage): Promise<KeystoreStorage> {
  if (typeof target !== 'string') return target;
  const { fileStorage } = await import('./filestore.ts');
  return fileStorage(target);
}
