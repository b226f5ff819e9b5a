/**
 * keylock device runtime: the public surface of the `keylock` entry point.
 * Everything here may ship in a device bundle; nothing here parses or rewrites models.
 */
export * from '../keystore/errors.ts';
export * from './tensor.ts';
export type { Backend, BackendOptions, BackendSession, IOInfo } from './backend.ts';
export { createOrtSession, ortWasmBackend, setOrtWasmPaths } from './ort.ts';
export { createNativeSession, ortNativeBackend } from './ort-native.ts';
export { decodeRecorded, encodeRecorded, MAX_RECORDED_BYTES, type RecordedKind, type Sample } from './recorded.ts';
export { memoryRecordSink, type RecordOptions, type RecordSink, type RecordStats } from './recorder.ts';
export { loadModel, LockedModel, BACKENDS, checkInputs, type LoadOptions, type LoadPhase, type ModelState, type RunStats } from './model.ts';
export { openKlm, openKlmAsync, keyId, type Manifest, type KlmFile, type LockEntry, type Scheme, type IOSpec, type Policy } from './klm.ts';
export { Keystore, memoryStorage, parseUnlock, type KeystoreStorage, type UnlockProvider } from '../keystore/index.ts';
