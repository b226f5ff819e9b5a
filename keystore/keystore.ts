/**
 * The device keystore: device identity, pinned vendor keys, installed grants,
 * revocation list, failure counters and disabled flags, sealed at rest in a
 * `.kls` (kls.ts) under a storage key from an unlock provider.
 *
 * This class is the keystore's API and its decisions about the runtime's own
 * requests (key lookup, failure counting). What a vendor file does to the
 * state is decided in incoming.ts; how every change is stored (writer lock,
 * generation, counter, atomic replace) and how a keystore is opened (lockout,
 * rollback checks) is transaction.ts.
 */
import { boxKeyPair, equalBytes, sha256Async, SIZES, wipe } from './nacl.ts';
import { keyId } from './hex.ts';
import { encodeDevicePub } from './keyfiles.ts';
import { openGrant, checkId } from './grant.ts';
import { openRevocation, revocationFileName, SIDE_LIST_MIN_IDS } from './revocation.ts';
import { openReinstate } from './reinstate.ts';
import { openRotation } from './rotation.ts';
import type { LockoutPolicy } from './attempts.ts';
import { unixNow } from './vendorfile.ts';
import { memoryStorage, type KeystoreStorage } from './storage.ts';
import { newUnlockRecord, storageKey, type UnlockProvider } from './unlock.ts';
import { klsKeys, MAX_VENDOR_KEYS, type GrantRecord, type KeystoreState } from './kls.ts';
import { applyGrant, applyReinstate, applyRevocation, applyRotation, checkRevoked } from './incoming.ts';
import { resolveStorage, SealedStore } from './transaction.ts';
import { DisabledError, ExpiredGrantError, KeylockError, NoGrantError } from './errors.ts';

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
  /** Grace seconds after `notAfter` for a model already running (0: none). */
  grace: number;
}

/**
 * The licence of a model as it stands now (`Keystore.licenceFor`), for enforcing it
 * while the model runs: its window, the grant's grace, and the trusted-time floor.
 */
export interface LicenceState {
  grantId: string;
  notBefore: number;
  notAfter: number;
  grace: number;
  /** The latest vendor-signed time seen: the clock counts as no earlier. */
  floor: number;
}

/** A model's failure policy (the `.klm` manifest's `policy`). */
export interface FailurePolicy {
  onInvalidKey: 'halt' | 'disable';
  /** Failures that disable the model when `onInvalidKey` is `disable`; 0 = never. */
  maxFailures: number;
}

/** The device keystore (see the module comment). */
export class Keystore {
  #store: SealedStore;
  #closed = false;
  #listeners = new Set<() => void>();

  private constructor(store: SealedStore) {
    this.#store = store;
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
    return new Keystore(await SealedStore.create(storage, state, keys, unlock));
  }

  /**
   * Opens a keystore. Wrong storage key: UnlockError (counted, when the store
   * counts attempts; too many in a row: LockoutError until the wait is over,
   * before any key is derived); truncated or malformed: FormatError /
   * SizeLimitError; changed bytes: TamperedError; a generation that disagrees
   * with the store's counter: RollbackError.
   */
  static async open(target: string | KeystoreStorage, opts: OpenKeystoreOptions): Promise<Keystore> {
    return new Keystore(await SealedStore.open(await resolveStorage(target), opts));
  }

  /** Opens keystore bytes held in memory (browsers persist `toBytes()` themselves, e.g. in IndexedDB). */
  static fromBytes(bytes: Uint8Array, unlock: UnlockProvider): Promise<Keystore> {
    return Keystore.open(memoryStorage(bytes), { unlock });
  }

  /** The sealed bytes as last written (safe to store anywhere: nothing secret is readable without the storage key). */
  toBytes(): Uint8Array {
    return this.#store.bytes.slice();
  }

  /** This device's id (in grants, tokens and revocation lists). */
  get deviceId(): string {
    return this.#store.state.deviceId;
  }
  /** The device's X25519 public key (grants are sealed to it). */
  get devicePub(): Uint8Array {
    return this.#store.state.devicePub.slice();
  }
  /** The pinned vendor Ed25519 keys. */
  get vendorKeys(): Uint8Array[] {
    return this.#store.state.vendorKeys.map((k) => k.slice());
  }
  /** The pinned backup keys (they sign rotations only). */
  get backupKeys(): Uint8Array[] {
    return this.#store.state.backupKeys.map((k) => k.slice());
  }
  /** Keys rotated out of this device (never pinned again). */
  get retiredKeys(): Uint8Array[] {
    return this.#store.state.retiredKeys.map((k) => k.slice());
  }
  /** Write counter: 1 after create, + 1 for every stored change. */
  get generation(): number {
    return this.#store.state.generation;
  }
  /** Installed revocation list version (0: none). */
  get revocationVersion(): number {
    return this.#store.state.revocation.listVersion;
  }
  /** Where the keystore lives. */
  get where(): string {
    return this.#store.storage.where;
  }

  /** The `device.pub` file for this device (what a vendor needs to issue grants). */
  devicePubFile(): Uint8Array {
    const s = this.#store.state;
    return encodeDevicePub(s.deviceId, s.devicePub);
  }

  /** Installed grants (no keys). */
  grants(): GrantInfo[] {
    return this.#store.state.grants.map(info);
  }

  /** The grant installed for a model, if any (no key). */
  grantFor(modelId: string): GrantInfo | undefined {
    const g = this.#store.state.grants.find((x) => x.modelId === modelId);
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
    const g = openGrant(bytes, this.#store.state);
    try {
      const rec: GrantRecord = {
        grantId: g.grantId, modelId: g.modelId, modelKey: g.modelKey, notBefore: g.notBefore, notAfter: g.notAfter,
        issued: g.issued, vendorKey: g.vendorKey, installedAt: now, ...(g.grace > 0 ? { grace: g.grace } : {}),
      };
      await this.#mutate((s) => applyGrant(s, rec, now));
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
    const list = openRevocation(bytes, this.#store.state.vendorKeys);
    const side = this.#store.storage.side;
    const before = this.#store.state.revocation.file;
    let changed = true;
    // A large list goes beside the keystore, written first under a name of its own hash: the sealed
    // body then records its hash and version only, so installing it re-seals a small body. A crash
    // before the body is written leaves the old list in force (its file is untouched).
    const beside = side !== undefined && list.listVersion > this.#store.state.revocation.listVersion
      && list.grants.length + list.models.length + list.devices.length >= SIDE_LIST_MIN_IDS;
    const file = beside ? await sha256Async(bytes) : undefined;
    if (file) await side!.write(revocationFileName(file), bytes);
    try {
      await this.#mutate((s) => {
        changed = applyRevocation(s, list);
        if (changed && file) s.revocation.file = file;
        return changed; // false: this very list is installed already, nothing to store
      });
    } catch (e) {
      const now = this.#store.state.revocation.file;
      if (file && !(now && equalBytes(now, file))) await side!.remove(revocationFileName(file)).catch(() => {});
      throw e;
    }
    // The list it replaced, if that one was kept beside.
    const now = this.#store.state.revocation.file;
    if (side && before && !(now && equalBytes(now, before))) await side.remove(revocationFileName(before)).catch(() => {});
    return { listVersion: list.listVersion, changed };
  }

  /**
   * Installs a `.klt`: clears the model's disabled flag and failure counter.
   * Each token works once (ReplayError after). The model key is not restored:
   * install a fresh grant next.
   */
  async installReinstate(bytes: Uint8Array): Promise<{ modelId: string; tokenId: string; wasDisabled: boolean }> {
    this.#live();
    const tok = openReinstate(bytes, this.#store.state);
    let wasDisabled = false;
    // Always stored: the token is used up whether or not the model was disabled.
    await this.#mutate((s) => {
      wasDisabled = applyReinstate(s, tok);
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
    const s = this.#store.state;
    const rot = openRotation(bytes, [...s.vendorKeys, ...s.backupKeys]);
    let role: 'vendor' | 'backup' = 'vendor';
    await this.#mutate((next) => {
      role = applyRotation(next, rot);
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
    const { s, g } = this.#grantOf(modelId);
    const t = Math.max(now, s.lastTrustedTime);
    if (t < g.notBefore || t >= g.notAfter) throw new ExpiredGrantError(modelId, g.notBefore, g.notAfter, t);
    return g.modelKey.slice();
  }

  /** The grant of `modelId` in the open keystore, or the typed reason it may not be used (revoked, disabled, none). */
  #grantOf(modelId: string) {
    this.#live();
    const s = this.#store.state;
    checkRevoked(s, modelId);
    const d = s.disabled.get(modelId);
    if (d) throw new DisabledError(modelId, d.at, d.reason);
    const g = s.grants.find((x) => x.modelId === modelId);
    if (!g) throw new NoGrantError(`model "${modelId}": expected a grant installed on device "${s.deviceId}", got none`);
    checkRevoked(s, modelId, g.grantId);
    return { s, g };
  }

  /**
   * The licence of `modelId` as it stands now, without the key: what a model
   * that is running checks again after every change of the keystore
   * (`onChange`). Throws what `modelKeyFor` throws for revocation, a disable or
   * a missing grant; the window itself is the caller's to compare with its clock
   * (a running model may be in the grant's grace period).
   */
  licenceFor(modelId: string): LicenceState {
    const { s, g } = this.#grantOf(modelId);
    return { grantId: g.grantId, notBefore: g.notBefore, notAfter: g.notAfter, grace: g.grace ?? 0, floor: s.lastTrustedTime };
  }

  /**
   * Calls `fn` after every change this object stores or reloads (grant,
   * revocation list, reinstate token, rotation, failure count, disable), so that
   * loaded models re-check their licence. Returns the function that unsubscribes.
   */
  onChange(fn: () => void): () => void {
    this.#listeners.add(fn);
    return () => { this.#listeners.delete(fn); };
  }

  /** Failures counted for a model since its last success. */
  failureCount(modelId: string): number {
    return this.#store.state.failures.get(modelId) ?? 0;
  }

  /** Whether the model is disabled on this device. */
  isDisabled(modelId: string): boolean {
    return this.#store.state.disabled.has(modelId);
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
    this.#listeners.clear();
    this.#store.wipe();
  }

  /** Every stored change goes through here: the store's transaction, then the change listeners. */
  async #mutate(...a: Parameters<SealedStore['mutate']>): Promise<void> {
    await this.#store.mutate(...a);
    for (const fn of [...this.#listeners]) {
      try { fn(); } catch { /* a listener's failure is its own */ }
    }
  }

  #live(): void {
    if (this.#closed) throw new TypeError('this Keystore was closed');
  }
}

function info(g: GrantRecord): GrantInfo {
  return { grantId: g.grantId, modelId: g.modelId, notBefore: g.notBefore, notAfter: g.notAfter, issued: g.issued, installedAt: g.installedAt, vendorKey: g.vendorKey.slice(), grace: g.grace ?? 0 };
}
