/**
 * Raspberry Pi (arm64 Linux, Node 20) target: the Node target's code, with
 * `threads` defaulting to `RPI_THREADS`. Entry point of `dist/rpi/keylock.mjs`.
 *
 * Why 4: a Pi 4 or 5 has four cores (Cortex-A72 / A76) and nothing else to
 * offload to, and ORT's wasm backend fixes its thread count for the life of the
 * process at the first session, so the default has to be chosen up front. On a
 * board (or emulator) with fewer cores the default drops to the cores there are.
 * Pass `threads` explicitly to leave cores to the rest of the application.
 */
import { availableParallelism } from 'node:os';
import * as node from '../node/index.ts';
import type { LoadOptions, LockedModel } from '../../runtime/model.ts';

export * from '../node/index.ts';

/** Default wasm threads on this target: 4, or fewer when the machine has fewer cores. */
export const RPI_THREADS = Math.max(1, Math.min(4, availableParallelism()));

/** `loadModel` with `threads` defaulting to `RPI_THREADS`. */
export function loadModel(klm: Uint8Array, opts: LoadOptions): Promise<LockedModel> {
  return node.loadModel(klm, { ...opts, threads: opts.threads ?? RPI_THREADS });
}

/** `loadModelFile` with `threads` defaulting to `RPI_THREADS`. */
export function loadModelFile(path: string, opts: LoadOptions): Promise<LockedModel> {
  return node.loadModelFile(path, { ...opts, threads: opts.threads ?? RPI_THREADS });
}
