/**
 * Node device target: the runtime plus file-system helpers (`loadModelFile`,
 * `openKeystore`, `recordToFile`). This is `keylock` under Node, and, with a
 * few checking helpers beside it (targets/node/bundle.ts), the device bundle
 * `dist/node/keylock.mjs` (and, through targets/rpi, `dist/rpi/keylock.mjs`);
 * ORT's `ort-wasm-simd-threaded.{mjs,wasm}` sit beside the bundle and ORT finds
 * them there by itself, so the folder runs without node_modules.
 *
 * ```js
 * import { openKeystore, loadModelFile } from './keylock.mjs';
 * const keystore = await openKeystore('device.kls', 'file:/etc/keylock/storage.key');
 * const model = await loadModelFile('model.klm', { keystore });
 * if (model.state !== 'ready') fallBack(model.error);   // typed reason, never numbers
 * const out = await model.run({ input: { dtype: 'float32', dims: [1, 1, 28, 28], data } });
 * ```
 *
 * Backend: this entry sets `env.backend = 'auto'`: a load that names no backend
 * runs on the fastest one that reproduces the model's canary here, `native`
 * (onnxruntime-node, where it is installed beside the app) else `wasm` (ONNX),
 * `tflite` (TFLite); `model.backend` says which, `model.skippedBackends` what
 * was passed over and why. A device bundle's folder has no onnxruntime-node, so
 * it runs wasm. `{ backend: 'wasm' }` (or `env.backend = 'wasm'`) asks for the
 * browser-exact path; a backend named is never replaced by another.
 *
 * Threads: this entry sets `env.spawnWorker` and `env.worker = 'auto'`: each
 * model loads on its own `worker_threads` thread (worker mode, runtime/worker.ts),
 * which times its run. A model whose run takes more than 0.1 ms stays there:
 * inference never blocks the app's event loop, and the keys and decrypted model
 * live only in that thread. A shorter one (an MNIST-size model: 20–60 µs) runs
 * on the caller's thread, where a thread hop would cost more than the run, and
 * lets the event loop turn between back-to-back runs. `stats.mode` says which,
 * `stats.autoRunMs` why. `{ worker: true }` / `{ worker: false }` (or
 * `env.worker`) name the thread.
 */
import { readFile } from 'node:fs/promises';
import { Keystore } from '../../keystore/keystore.ts';
import { parseUnlock, type UnlockProvider } from '../../keystore/unlock.ts';
import type { LoadOptions } from '../../runtime/load.ts';
import { loadModel } from '../../runtime/index.ts';
import { spawnNodeWorker } from './spawn.ts';
import type { LockedModel } from '../../runtime/model.ts';
import { AUTO } from '../../runtime/backends.ts';
import { env } from '../../runtime/env.ts';

export * from '../../runtime/index.ts';
export { recordToFile } from './record.ts';

/**
 * Reads a `.klm` file and loads it (see `loadModel`: check failures come back
 * as a halted or disabled model). The bytes read are handed over (`consume`):
 * the model is restored inside them and they are wiped, so the load holds one
 * copy of the model fewer. A file that cannot be read throws the file
 * system's error.
 */
export async function loadModelFile(path: string, opts: LoadOptions): Promise<LockedModel> {
  const b = await readFile(path);
  return loadModel(new Uint8Array(b.buffer, b.byteOffset, b.byteLength), { ...opts, consume: true });
}

/**
 * Opens a keystore file. `unlock` is a provider or its CLI spelling
 * (`file:PATH`, `env:VAR`, `pass:env:VAR`, `pass:file:PATH`). Changes (failure
 * counters, grants) are written back atomically under a writer lock file.
 */
export function openKeystore(path: string, unlock: UnlockProvider | string): Promise<Keystore> {
  return Keystore.open(path, { unlock: typeof unlock === 'string' ? parseUnlock(unlock) : unlock });
}

// Under Node the fastest backend that reproduces the canary, unless something set a backend first.
env.backend ??= AUTO;
// Worker mode by default: each model on its own worker_threads thread (runtime/worker.ts), unless its run
// is so short that the thread hop costs more (worker: 'auto', runtime/index.ts; docs/BENCH.md sections 10, 14).
env.spawnWorker ??= spawnNodeWorker;
env.worker ??= 'auto';
