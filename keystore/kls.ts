/**
 * The `.kls` keystore file: an unsealed outer map (what a tool may read without
 * the storage key) around a secretbox-sealed body that repeats every outer
 * field that matters, so the outer copies cannot be swapped.
 *
 *   outer: { format: "keylock/kls", version: 1, deviceId, devicePub: bstr(32), vendorKeys: [bstr(32)],
 *            unlock: { kind, ... }, kcv: bstr(16), generation: uint, nonce: bstr(24), body: bstr }
 *   body = secretbox(CBOR(state), nonce, sealKey)   (MAC || ciphertext)
 *
 * From the 32-byte storage key: sealKey = HMAC-SHA-256(storageKey, "keylock/v1/kls/seal"),
 * kcv = HMAC-SHA-256(storageKey, "keylock/v1/kls/kcv")[0..16]. The check value
 * tells a wrong storage key (UnlockError) from a damaged body (TamperedError).
 */
import { decodeCbor, encodeCbor, Fields } from './cbor.ts';
import { equalBytes, hmacSha256, open, randomBytes, seal, SIZES, wipe } from './nacl.ts';
import { ids } from './revocation.ts';
import { parseUnlockRecord, unlockRecordToCbor, type UnlockRecord } from './unlock.ts';
import { parseFormat } from './envelope.ts';
import { FormatError, TamperedError, UnlockError } from './errors.ts';

export const KLS_FORMAT = 'keylock/kls';
export const KLS_VERSION = 1;
/** Largest `.kls` accepted. */
export const MAX_KLS_BYTES = 16 << 20;
/** Most pinned vendor keys. */
export const MAX_VENDOR_KEYS = 16;
/** Most grants, failure counters, disabled entries each. */
export const MAX_KLS_ENTRIES = 1 << 16;
/** Most used reinstate token ids remembered. */
export const MAX_USED_TOKENS = 1 << 18;
/** Most CBOR items in a sealed body: a full keystore (2^16 grants of 17 items, 2^18 used tokens, ...) fits. */
export const MAX_KLS_ITEMS = 1 << 22;
/** Most keys rotated out that are remembered (and never pinned again). */
export const MAX_RETIRED_KEYS = 1024;

const enc = new TextEncoder();
const SEAL_LABEL = enc.encode('keylock/v1/kls/seal');
const KCV_LABEL = enc.encode('keylock/v1/kls/kcv');

/** One installed grant, as the keystore keeps it. */
export interface GrantRecord {
  grantId: string;
  modelId: string;
  modelKey: Uint8Array;
  notBefore: number;
  notAfter: number;
  issued: number;
  vendorKey: Uint8Array;
  /** Device time (Unix seconds) when it was installed. */
  installedAt: number;
  /** The grant's grace seconds after `notAfter` for a running model; absent (never 0) when it gives none. */
  grace?: number;
}

/** The installed revocation list (listVersion 0: none yet). */
export interface RevocationState {
  listVersion: number;
  issued: number;
  grants: string[];
  models: string[];
  devices: string[];
  /**
   * SHA-256 of the signed `.klr` kept beside the keystore (a side file), when
   * the list lives there: the sealed body then holds only this, the version
   * and `issued`, and its id arrays are read from that file (transaction.ts).
   */
  file?: Uint8Array;
}

/** Everything inside the sealed body. */
export interface KeystoreState {
  deviceId: string;
  devicePub: Uint8Array;
  deviceSecret: Uint8Array;
  vendorKeys: Uint8Array[];
  /** Backup (recovery) keys: they may sign key rotations and nothing else. */
  backupKeys: Uint8Array[];
  /** Keys rotated out; never pinned again, so a rotation cannot be replayed. */
  retiredKeys: Uint8Array[];
  generation: number;
  grants: GrantRecord[];
  /** Per model, the highest grant `issued` ever installed: an older grant is a rollback, even after its successor was removed. */
  grantFloors: Map<string, number>;
  revocation: RevocationState;
  failures: Map<string, number>;
  disabled: Map<string, { at: number; reason: string }>;
  usedTokens: string[];
  /** Latest vendor-signed time seen (Unix seconds); the clock never counts as earlier than this. */
  lastTrustedTime: number;
}

/** The parsed outer map, before the body is opened. */
export interface KlsOuter {
  deviceId: string;
  devicePub: Uint8Array;
  vendorKeys: Uint8Array[];
  unlock: UnlockRecord;
  kcv: Uint8Array;
  generation: number;
  nonce: Uint8Array;
  body: Uint8Array;
}

/** The two keys a storage key gives: the secretbox key and the check value. */
export function klsKeys(storageKey: Uint8Array): { sealKey: Uint8Array; kcv: Uint8Array } {
  if (!(storageKey instanceof Uint8Array) || storageKey.byteLength !== 32) throw new RangeError('storage key must be 32 bytes');
  return { sealKey: hmacSha256(storageKey, SEAL_LABEL), kcv: hmacSha256(storageKey, KCV_LABEL).slice(0, 16) };
}

/** Seals `state` into `.kls` bytes (fresh random nonce each time). */
export function encodeKls(state: KeystoreState, keys: { sealKey: Uint8Array; kcv: Uint8Array }, unlock: UnlockRecord): Uint8Array {
  const plain = encodeCbor({
    format: KLS_FORMAT, version: KLS_VERSION,
    deviceId: state.deviceId, devicePub: state.devicePub, deviceSecret: state.deviceSecret,
    vendorKeys: state.vendorKeys, backupKeys: state.backupKeys, retiredKeys: state.retiredKeys, generation: state.generation,
    grants: state.grants.map((g) => ({ ...g })),
    grantFloors: [...state.grantFloors].map(([modelId, issued]) => ({ modelId, issued })),
    revocation: state.revocation.file
      ? { listVersion: state.revocation.listVersion, issued: state.revocation.issued, grants: [], models: [], devices: [], file: state.revocation.file }
      : { ...state.revocation },
    failures: [...state.failures].map(([modelId, count]) => ({ modelId, count })),
    disabled: [...state.disabled].map(([modelId, d]) => ({ modelId, at: d.at, reason: d.reason })),
    usedTokens: state.usedTokens,
    lastTrustedTime: state.lastTrustedTime,
  });
  const nonce = randomBytes(SIZES.secretboxNonce);
  const body = seal(plain, nonce, keys.sealKey);
  wipe(plain);
  return encodeCbor({
    format: KLS_FORMAT, version: KLS_VERSION,
    deviceId: state.deviceId, devicePub: state.devicePub, vendorKeys: state.vendorKeys,
    unlock: unlockRecordToCbor(unlock), kcv: keys.kcv, generation: state.generation, nonce, body,
  });
}

/** Parses the outer map (no key needed). */
export function decodeKlsOuter(bytes: Uint8Array): KlsOuter {
  const f = parseFormat(bytes, KLS_FORMAT, KLS_VERSION, MAX_KLS_BYTES);
  return {
    deviceId: f.text('deviceId', 256),
    devicePub: f.bytes('devicePub', { len: SIZES.boxPublic }),
    vendorKeys: keyList(f),
    unlock: parseUnlockRecord(f.map('unlock')),
    kcv: f.bytes('kcv', { len: 16 }),
    generation: f.uint('generation'),
    nonce: f.bytes('nonce', { len: SIZES.secretboxNonce }),
    body: f.bytes('body', { max: MAX_KLS_BYTES }),
  };
}

/**
 * Opens the sealed body with the storage key's derived keys. A check-value
 * mismatch is UnlockError; a MAC failure, or a body that disagrees with the
 * outer map, is TamperedError.
 */
export function openKlsBody(outer: KlsOuter, keys: { sealKey: Uint8Array; kcv: Uint8Array }): KeystoreState {
  if (!equalBytes(keys.kcv, outer.kcv)) {
    throw new UnlockError(`${KLS_FORMAT}: the storage key does not match this keystore's key check value (wrong key file, variable, passphrase or hook)`);
  }
  const plain = open(outer.body, outer.nonce, keys.sealKey, () => new TamperedError(`${KLS_FORMAT}: the sealed body's MAC does not verify (the file was changed)`));
  let b: Fields;
  try {
    b = Fields.of(`${KLS_FORMAT} body`, decodeCbor(plain, `${KLS_FORMAT} body`, MAX_KLS_BYTES, MAX_KLS_ITEMS));
  } catch (e) {
    wipe(plain);
    throw e;
  }
  // Decoded byte strings may share `plain`'s memory: copy the secrets out before wiping it.
  try {
    if (b.text('format', 64) !== KLS_FORMAT || b.uint('version') !== KLS_VERSION) throw new FormatError(`${KLS_FORMAT}: the sealed body names another format or version`);
    // Secrets are copied last, and wiped again if a later entry fails, so a malformed
    // body never leaves copies of keys behind for the garbage collector.
    const pub = {
      deviceId: b.text('deviceId', 256),
      devicePub: b.bytes('devicePub', { len: SIZES.boxPublic }).slice(),
      vendorKeys: keyList(b).map((k) => k.slice()),
      backupKeys: keyList(b, 'backupKeys', MAX_VENDOR_KEYS, 0).map((k) => k.slice()),
      retiredKeys: keyList(b, 'retiredKeys', MAX_RETIRED_KEYS, 0).map((k) => k.slice()),
      generation: b.uint('generation'),
      grantFloors: new Map(b.array('grantFloors', MAX_KLS_ENTRIES).map((v, i) => {
        const e = Fields.of(`${b.what}.grantFloors[${i}]`, v);
        return [e.text('modelId', 256), e.uint('issued')] as const;
      })),
      revocation: revocation(b.map('revocation')),
      failures: new Map(b.array('failures', MAX_KLS_ENTRIES).map((v, i) => {
        const e = Fields.of(`${b.what}.failures[${i}]`, v);
        return [e.text('modelId', 256), e.uint('count')] as const;
      })),
      disabled: new Map(b.array('disabled', MAX_KLS_ENTRIES).map((v, i) => {
        const e = Fields.of(`${b.what}.disabled[${i}]`, v);
        return [e.text('modelId', 256), { at: e.uint('at'), reason: e.text('reason', 1024) }] as const;
      })),
      usedTokens: ids(b, 'usedTokens', MAX_USED_TOKENS),
      lastTrustedTime: b.uint('lastTrustedTime'),
    };
    const grantList = b.array('grants', MAX_KLS_ENTRIES);
    const secretView = b.bytes('deviceSecret', { len: SIZES.boxSecret });
    const grants: GrantRecord[] = [];
    try {
      for (const [i, v] of grantList.entries()) grants.push(grantRecord(Fields.of(`${b.what}.grants[${i}]`, v)));
    } catch (e) {
      for (const g of grants) wipe(g.modelKey);
      throw e;
    }
    const state: KeystoreState = { ...pub, deviceSecret: secretView.slice(), grants };
    const same = state.deviceId === outer.deviceId && equalBytes(state.devicePub, outer.devicePub)
      && state.generation === outer.generation && state.vendorKeys.length === outer.vendorKeys.length
      && state.vendorKeys.every((k, i) => equalBytes(k, outer.vendorKeys[i]));
    if (!same) {
      wipeState(state);
      throw new TamperedError(`${KLS_FORMAT}: the outer device id, device key, vendor keys or generation differ from the sealed copies (the file was changed)`);
    }
    return state;
  } finally {
    wipe(plain);
  }
}

/** Overwrites every secret a state holds (best effort). */
export function wipeState(s: KeystoreState): void {
  wipe(s.deviceSecret);
  for (const g of s.grants) wipe(g.modelKey);
}

function keyList(f: Fields, key = 'vendorKeys', max = MAX_VENDOR_KEYS, min = 1): Uint8Array[] {
  const list = f.array(key, max);
  if (list.length < min) throw new FormatError(`${f.what}.${key}: expected at least ${min} key(s), got ${list.length}`);
  return list.map((k, i) => {
    if (!(k instanceof Uint8Array) || k.byteLength !== SIZES.signPublic) throw new FormatError(`${f.what}.${key}[${i}]: expected ${SIZES.signPublic} bytes, got ${k instanceof Uint8Array ? `${k.byteLength} bytes` : typeof k}`);
    return k;
  });
}

function grantRecord(g: Fields): GrantRecord {
  const rec = {
    grantId: g.text('grantId', 64), modelId: g.text('modelId', 256),
    notBefore: g.uint('notBefore'), notAfter: g.uint('notAfter'), issued: g.uint('issued'),
    vendorKey: g.bytes('vendorKey', { len: SIZES.signPublic }).slice(), installedAt: g.uint('installedAt'),
  };
  const grace = g.has('grace') ? g.uint('grace') : 0;
  return { ...rec, ...(grace > 0 ? { grace } : {}), modelKey: g.bytes('modelKey', { len: 32 }).slice() };
}

function revocation(r: Fields): RevocationState {
  const base = { listVersion: r.uint('listVersion'), issued: r.uint('issued'), grants: ids(r, 'grants'), models: ids(r, 'models'), devices: ids(r, 'devices') };
  if (!r.has('file')) return base;
  if (base.grants.length || base.models.length || base.devices.length) throw new FormatError(`${r.what}: a list kept in a side file, but ids in the body too`);
  return { ...base, file: r.bytes('file', { len: 32 }).slice() };
}
