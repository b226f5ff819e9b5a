/**
 * The `.klr` revocation list: a vendor-signed, monotonically numbered list of
 * revoked grant, model and device ids.
 *
 *   envelope: { format: "keylock/klr", version: 1, signed: bstr, sig: bstr(64), vendorKey: bstr(32) }
 *   body:     { format, version, listVersion: uint >= 1, issued: uint, vendorKey: bstr(32),
 *               grants: [text], models: [text], devices: [text] }
 *
 * `listVersion` (the brief's "version") is renamed because every signed body
 * already carries `version`, the file format's version.
 */
import type { Fields } from './cbor.ts';
import { openVendorFile, sealVendorFile, unixNow } from './vendorfile.ts';
import { parseEnvelope } from './envelope.ts';
import { decodeCbor, Fields as CborFields } from './cbor.ts';
import { hex } from './hex.ts';
import { checkId } from './grant.ts';
import { FormatError } from './errors.ts';

export const KLR_FORMAT = 'keylock/klr';
export const KLR_VERSION = 1;
/** Largest `.klr` accepted. */
export const MAX_KLR_BYTES = 16 << 20;
/** Most ids in each of a list's arrays. */
export const MAX_REVOKED_IDS = 1 << 18;

/** A verified revocation list (ids sorted, duplicates dropped). */
export interface RevocationList {
  listVersion: number;
  issued: number;
  grants: string[];
  models: string[];
  devices: string[];
}

/** Builds and signs a revocation list (vendor side). */
export function makeRevocation(req: { listVersion: number; grants?: string[]; models?: string[]; devices?: string[]; issued?: number; vendorSeed: Uint8Array }): Uint8Array {
  if (!Number.isSafeInteger(req.listVersion) || req.listVersion < 1) throw new RangeError(`listVersion must be an integer >= 1, got ${req.listVersion}`);
  const lists = { grants: req.grants ?? [], models: req.models ?? [], devices: req.devices ?? [] };
  for (const [k, ids] of Object.entries(lists)) for (const id of ids) checkId(`revoked ${k} id`, id);
  return sealVendorFile(KLR_FORMAT, KLR_VERSION, {
    listVersion: req.listVersion, issued: req.issued ?? unixNow(),
    grants: normalizeIds(lists.grants), models: normalizeIds(lists.models), devices: normalizeIds(lists.devices),
  }, req.vendorSeed);
}

/** Verifies a revocation list against the pinned vendor keys and decodes it. */
export function openRevocation(bytes: Uint8Array, vendorKeys: readonly Uint8Array[]): RevocationList {
  const { body } = openVendorFile(bytes, KLR_FORMAT, KLR_VERSION, MAX_KLR_BYTES, vendorKeys);
  const listVersion = body.uint('listVersion');
  if (listVersion < 1) throw new FormatError(`${KLR_FORMAT}.listVersion: expected >= 1, got ${listVersion}`);
  return { listVersion, issued: body.uint('issued'), grants: ids(body, 'grants'), models: ids(body, 'models'), devices: ids(body, 'devices') };
}

/**
 * A list with at least this many ids in all is kept beside the keystore as
 * the signed `.klr` it came in (when the storage keeps side files), not in the
 * sealed body: installing it then writes the list once instead of re-encoding
 * and re-sealing the keystore around it (docs/SPEC.md, "Revocation list").
 */
export const SIDE_LIST_MIN_IDS = 4096;

/** The side file name of an installed list: its SHA-256's first 8 bytes in hex. */
export function revocationFileName(sha256: Uint8Array): string {
  return `revocation.${hex(sha256.subarray(0, 8))}.klr`;
}

/**
 * The ids of a `.klr` kept beside the keystore. Its signature was checked at
 * install; what binds it now is its SHA-256 in the sealed body, which the
 * caller has compared, so only the envelope and the body are parsed here.
 */
export function revocationFromSideFile(bytes: Uint8Array): RevocationList {
  const env = parseEnvelope(bytes, KLR_FORMAT, KLR_VERSION, MAX_KLR_BYTES);
  const body = CborFields.of(`${KLR_FORMAT} body`, decodeCbor(env.signed, `${KLR_FORMAT} body`, MAX_KLR_BYTES));
  return { listVersion: body.uint('listVersion'), issued: body.uint('issued'), grants: ids(body, 'grants'), models: ids(body, 'models'), devices: ids(body, 'devices') };
}

/** Reads an array of ids from a decoded map (shared with the keystore body). */
export function ids(f: Fields, key: string, max = MAX_REVOKED_IDS): string[] {
  return normalizeIds(f.array(key, max).map((v, i) => {
    if (typeof v !== 'string' || v.length === 0 || v.length > 256) throw new FormatError(`${f.what}.${key}[${i}]: expected an id (1..256 characters), got ${typeof v === 'string' ? `${v.length} characters` : typeof v}`);
    return v;
  }));
}

/** Per id array: true when it is strictly sorted (binary search), else a Set of it. Built once per array. */
const ID_INDEX = new WeakMap<readonly string[], true | ReadonlySet<string>>();

/**
 * Sorted, without duplicates: two lists with the same ids compare equal. A list
 * that is already strictly increasing (every list keylock writes) is only
 * checked and copied, O(n), instead of deduplicated and sorted again.
 */
export function normalizeIds(list: readonly string[]): string[] {
  const out = isStrictlySorted(list) ? list.slice() : [...new Set(list)].sort();
  // Known sorted now: the first lookup in it need not check that again (hasId).
  if (out.length > 16) ID_INDEX.set(out, true);
  return out;
}

/** Every id greater than the one before (so sorted, and no duplicates), in the order `sort()` uses (UTF-16 code units). */
function isStrictlySorted(list: readonly string[]): boolean {
  for (let i = 1; i < list.length; i++) if (!(list[i - 1] < list[i])) return false;
  return true;
}


/**
 * Whether `id` is in `list`, without a scan: O(log n) by binary search in a
 * normalized (sorted) list, O(1) through a Set for any other; the O(n) check of
 * which one it is happens once per array (arrays in a keystore's state are
 * replaced, never edited in place). A 100,000-id revocation list is one check
 * of about 1 ms, then about 17 comparisons per lookup.
 */
export function hasId(list: readonly string[], id: string): boolean {
  if (list.length <= 16) return list.includes(id);
  let ix = ID_INDEX.get(list);
  if (ix === undefined) {
    ix = isStrictlySorted(list) ? true : new Set(list);
    ID_INDEX.set(list, ix);
  }
  if (ix !== true) return ix.has(id);
  let lo = 0;
  let hi = list.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const v = list[mid];
    if (v === id) return true;
    if (v < id) lo = mid + 1;
    else hi = mid - 1;
  }
  return false;
}

/** Same ids in all three arrays (both normalized). */
export function sameRevocations(a: Pick<RevocationList, 'grants' | 'models' | 'devices'>, b: Pick<RevocationList, 'grants' | 'models' | 'devices'>): boolean {
  const eq = (x: string[], y: string[]) => x.length === y.length && x.every((v, i) => v === y[i]);
  return eq(a.grants, b.grants) && eq(a.models, b.models) && eq(a.devices, b.devices);
}
