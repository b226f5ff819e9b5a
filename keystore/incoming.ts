/**
 * What a vendor file does to a keystore, once its signature has verified
 * (grant.ts, revocation.ts, reinstate.ts, rotation.ts): the checks against
 * the keystore's state (revoked, disabled, rolled back, replayed, which key
 * may rotate which) and the change it makes. Each `apply*` edits the copy of
 * the state that `SealedStore.mutate` (transaction.ts) hands it, and throws to
 * refuse the file, so a refused file changes nothing.
 */
import { equalBytes, wipe } from './nacl.ts';
import { keyId } from './hex.ts';
import { hasId, sameRevocations, type RevocationList } from './revocation.ts';
import type { ReinstateToken } from './reinstate.ts';
import type { Rotation } from './rotation.ts';
import { MAX_RETIRED_KEYS, type GrantRecord, type KeystoreState } from './kls.ts';
import {
  DisabledError, ExpiredGrantError, KeylockError, ReplayError, RevokedError, RollbackError, SizeLimitError, UntrustedSignerError,
} from './errors.ts';

/**
 * Installs a verified grant, replacing an earlier one for the same model.
 * Refused: revoked, a disabled model, a grant issued before the model's grant
 * floor (RollbackError), or already expired at `max(now, lastTrustedTime)`.
 * `rec.installedAt` is the device time of installation; `rec.modelKey` is
 * copied, so the caller wipes its own.
 */
export function applyGrant(s: KeystoreState, rec: GrantRecord, now: number): void {
  checkRevoked(s, rec.modelId, rec.grantId);
  const d = s.disabled.get(rec.modelId);
  if (d) throw new DisabledError(rec.modelId, d.at, d.reason);
  const floor = s.grantFloors.get(rec.modelId) ?? 0;
  if (rec.issued < floor) {
    throw new RollbackError(`grant ${rec.grantId} for model "${rec.modelId}": expected one issued at or after ${floor} (the newest grant installed for this model), got one issued at ${rec.issued}`);
  }
  s.grantFloors.set(rec.modelId, rec.issued);
  s.lastTrustedTime = Math.max(s.lastTrustedTime, rec.issued);
  const t = Math.max(now, s.lastTrustedTime);
  if (t >= rec.notAfter) throw new ExpiredGrantError(rec.modelId, rec.notBefore, rec.notAfter, t);
  for (const old of s.grants) if (old.modelId === rec.modelId) wipe(old.modelKey);
  s.grants = s.grants.filter((x) => x.modelId !== rec.modelId);
  s.grants.push({ ...rec, modelKey: rec.modelKey.slice() });
}

/**
 * Installs a verified revocation list. A lower list version than the
 * installed one is RollbackError; the same version is accepted only with the
 * same ids, and then changes nothing (returns false), otherwise RollbackError.
 */
export function applyRevocation(s: KeystoreState, list: RevocationList): boolean {
  const cur = s.revocation;
  if (list.listVersion < cur.listVersion) {
    throw new RollbackError(`revocation list: expected version >= ${cur.listVersion} (installed), got ${list.listVersion}`);
  }
  if (list.listVersion === cur.listVersion) {
    if (sameRevocations(list, cur)) return false;
    throw new RollbackError(`revocation list: version ${list.listVersion} is installed with other ids; expected a higher version for a changed list, got the same`);
  }
  s.revocation = { ...list };
  s.lastTrustedTime = Math.max(s.lastTrustedTime, list.issued);
  return true;
}

/**
 * Uses a verified reinstate token: clears the model's disabled flag and
 * failure counter and remembers the token (a second use is ReplayError).
 * Returns whether the model was disabled.
 */
export function applyReinstate(s: KeystoreState, tok: ReinstateToken): boolean {
  if (s.usedTokens.includes(tok.tokenId)) throw new ReplayError(`reinstate token ${tok.tokenId}: expected a token not used before, got one this device already used`);
  const wasDisabled = s.disabled.delete(tok.modelId);
  s.failures.delete(tok.modelId);
  s.usedTokens = [...s.usedTokens, tok.tokenId].sort();
  s.lastTrustedTime = Math.max(s.lastTrustedTime, tok.issued);
  return wasDisabled;
}

/**
 * Applies a verified key rotation (docs/SPEC.md, "Vendor key rotation"):
 * decides whether its signer may replace its old key, then swaps the key in
 * its list and retires the old one. Returns which list the old key was in.
 */
export function applyRotation(s: KeystoreState, rot: Rotation): 'vendor' | 'backup' {
  const has = (list: readonly Uint8Array[], k: Uint8Array): boolean => list.some((x) => equalBytes(x, k));
  if (has(s.retiredKeys, rot.oldKey)) throw new RollbackError(`key rotation: expected a pinned old key, got key ${keyId(rot.oldKey)}, which this device rotated out before (a replayed rotation)`);
  if (has(s.retiredKeys, rot.newKey)) throw new RollbackError(`key rotation: expected a fresh new key, got key ${keyId(rot.newKey)}, which this device rotated out before`);
  if (has(s.vendorKeys, rot.newKey) || has(s.backupKeys, rot.newKey)) throw new KeylockError('key-pinned', `key rotation: expected a new key not pinned yet, got key ${keyId(rot.newKey)}, which is pinned already`);
  const signerIsBackup = has(s.backupKeys, rot.signer);
  if (!signerIsBackup && !has(s.vendorKeys, rot.signer)) throw new UntrustedSignerError(`key rotation: expected a signer pinned on this device, got key ${keyId(rot.signer)}`);
  let role: 'vendor' | 'backup';
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
  return role;
}

/**
 * RevokedError when the installed revocation list names this device, the
 * model, or (when given) the grant; checked on install and on every key lookup.
 * Each lookup is a binary search in the (sorted) installed id arrays, not a
 * scan, so a list of 100,000 grant ids costs a load microseconds (revocation.ts `hasId`).
 */
export function checkRevoked(s: KeystoreState, modelId: string, grantId?: string): void {
  const r = s.revocation;
  if (hasId(r.devices, s.deviceId)) throw new RevokedError(`device "${s.deviceId}" is revoked by revocation list version ${r.listVersion}; expected it absent`);
  if (hasId(r.models, modelId)) throw new RevokedError(`model "${modelId}" is revoked by revocation list version ${r.listVersion}; expected it absent`);
  if (grantId !== undefined && hasId(r.grants, grantId)) throw new RevokedError(`grant ${grantId} for model "${modelId}" is revoked by revocation list version ${r.listVersion}; expected it absent`);
}
