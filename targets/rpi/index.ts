/**
 * Raspberry Pi (arm64 Linux, Node 20) target: the Node device bundle's code,
 * with `env.threads` (the default of every load) set to `RPI_THREADS`. Entry
 * point of `dist/rpi/keylock.mjs`.
 *
 * Why 4: a Pi 4 or 5 has four cores (Cortex-A72 / A76) and nothing else to
 * offload to, and ORT's wasm backend fixes its thread count for the life of the
 * process at the first session, so the default has to be chosen up front. On a
 * board (or emulator) with fewer cores the default drops to the cores there are.
 * Pass `threads` explicitly to leave cores to the rest of the application.
 */
import { availableParallelism } from 'node:os';
import { env } from '../../runtime/env.ts';

export * from '../node/bundle.ts';

/** Default wasm threads on this target: 4, or fewer when the machine has fewer cores. */
export const RPI_THREADS = Math.max(1, Math.min(4, availableParallelism()));

env.threads = RPI_THREADS;
