/**
 * keylock device runtime: the public surface of the `keylock` entry point.
 * Everything here may ship in a device bundle; nothing here parses or rewrites models.
 */
export * from './errors.ts';
export * from './tensor.ts';
export type { Backend, BackendOptions, BackendSession, IOInfo } from './backend.ts';
export { createOrtSession, ortWasmBackend, setOrtWasmPaths } from './ort.ts';
export { decodeRecorded, encodeRecorded, MAX_RECORDED_BYTES, type RecordedKind, type Sample } from './recorded.ts';
