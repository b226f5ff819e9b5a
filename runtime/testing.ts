/**
 * `keylock/testing`: what an app's tests need beside the runtime, kept out of
 * the device entry. Unlocked sessions on the same engines (to compare a locked
 * model with the plain one), recorded input and output files (docs/SPEC.md,
 * "Recorded inputs") and a recorder sink in memory, and opening a `.klm` to
 * look at its manifest.
 */
export { createOrtSession } from './ort.ts';
export { createNativeSession } from './ort-native.ts';
export { backendNames } from './backends.ts';
export { decodeRecorded, encodeRecorded, MAX_RECORDED_BYTES, type RecordedKind, type Sample } from './recorded.ts';
export { memoryRecordSink } from './recorder.ts';
export { openKlm, openKlmAsync, type KlmFile, type Manifest, type IOSpec, type LockEntry, type Scheme, type Policy } from './klm.ts';
