/**
 * keylock keystore: the device side of keys (sealed keystore, unlock
 * providers, grants, revocation lists, reinstate tokens) and the small vendor
 * helpers that make those files. Nothing here imports Node built-ins except
 * lazily, for `file:` paths (filestore.ts).
 */
export { Keystore, type CreateKeystoreOptions, type OpenKeystoreOptions, type FailurePolicy, type GrantInfo, type RotationResult } from './keystore.ts';
export { memoryCounter, type MonotonicCounter } from './counter.ts';
export { memoryAttempts, retryAt, DEFAULT_LOCKOUT, type AttemptStore, type AttemptRecord, type LockoutPolicy } from './attempts.ts';
export { makeRotation, openRotation, KLV_FORMAT, KLV_VERSION, MAX_KLV_BYTES, type Rotation, type RotationRequest } from './rotation.ts';
export { memoryStorage, type KeystoreStorage } from './storage.ts';
export {
  parseUnlock, parseRawKey, newUnlockRecord, storageKey, DEFAULT_SCRYPT, SCRYPT_LIMITS, STORAGE_KEY_BYTES,
  type UnlockProvider, type UnlockRecord, type FileUnlock, type EnvUnlock, type PassUnlock, type HookUnlock, type ScryptCost,
} from './unlock.ts';
export { makeGrant, openGrant, inspectGrant, KLG_FORMAT, KLG_VERSION, MAX_KLG_BYTES, MODEL_KEY_BYTES, type Grant, type GrantRequest, type DeviceView } from './grant.ts';
export { makeRevocation, openRevocation, KLR_FORMAT, KLR_VERSION, MAX_KLR_BYTES, type RevocationList } from './revocation.ts';
export { makeReinstate, openReinstate, KLT_FORMAT, KLT_VERSION, MAX_KLT_BYTES, type ReinstateToken } from './reinstate.ts';
export { KLS_FORMAT, KLS_VERSION, MAX_KLS_BYTES, decodeKlsOuter, type KlsOuter } from './kls.ts';
export { keyId } from './hex.ts';
export { encodeCbor, decodeCbor, Fields } from './cbor.ts';
export { sealEnvelope, parseEnvelope, openEnvelope, type Envelope } from './envelope.ts';
export * from './keyfiles.ts';
