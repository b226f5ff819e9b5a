/**
 * Node device target: the runtime plus file-system loading. This is the entry
 * point of `dist/node/keylock.mjs`; ORT's wasm files sit beside the bundle.
 */
export * from '../../runtime/index.ts';
