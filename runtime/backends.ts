/**
 * The backend registry: backends by name, as onnxruntime-common's
 * `registerBackend`. A name that is not registered is an error, never a
 * fallback. A backend's `init()` runs once, on its first use; when it fails,
 * the reason is kept and every load on that backend halts with it.
 *
 * Built in: `wasm` and `webgpu` (onnxruntime-web), `native` (onnxruntime-node,
 * Node only: its init loads the optional package), `tflite` (tfjs-tflite,
 * imported on first use so that bundles of apps that never run TFLite do not
 * carry it).
 *
 * `auto` is not a backend but a choice among them (`autoBackends`): the load
 * takes the first candidate that inits, creates a session and reproduces the
 * canary. The Node target sets `env.backend = 'auto'`; the runtime's own
 * default stays the recording backend (`defaultBackend`), so browser bundles
 * never try `native`.
 */
import { BackendUnavailableError, UnsupportedModelError } from '../keystore/errors.ts';
import type { Backend } from './backend.ts';
import type { ModelFormat } from './klm.ts';
import { ortNativeBackend } from './ort-native.ts';
import { ortWasmBackend } from './ort.ts';

interface Registered {
  backend: Backend;
  priority: number;
  /** `init()`, started on first use and kept, rejected with the reason when it failed. */
  ready?: Promise<void>;
}

const registry = new Map<string, Registered>();

/**
 * Registers `backend` under `name` (e.g. a product's own engine, or a wrapper of
 * a built-in one). Registering a name again replaces the backend unless the one
 * in place has a higher `priority` (default 0), so a backend registered with a
 * higher priority stays whatever registers later. Returns the function that
 * removes this registration again (a test's spy, say); it does nothing once
 * another backend has replaced it.
 */
export function registerBackend(name: string, backend: Backend, priority = 0): () => void {
  if (name === AUTO) throw new TypeError(`"${AUTO}" is not a backend name: it asks the load to choose among autoBackends()`);
  if (typeof backend?.create !== 'function') throw new TypeError(`backend "${name}": expected an object with create()`);
  const had = registry.get(name);
  if (had && had.priority > priority) return () => undefined;
  const entry: Registered = { backend, priority };
  registry.set(name, entry);
  return () => {
    if (registry.get(name) === entry) registry.delete(name);
  };
}

/** The registered backend names, in registration order. */
export function backendNames(): string[] {
  return [...registry.keys()];
}

/** The backend registered under `name`, without initializing it; UnsupportedModelError when none is. */
export function registeredBackend(name: string): Backend {
  if (name === AUTO) throw new UnsupportedModelError(`"${AUTO}" chooses a backend at load (autoBackends); it is not one itself`);
  const r = registry.get(name);
  if (!r) throw new UnsupportedModelError(`unknown backend "${name}"; available: ${backendNames().join(', ')}`);
  return r.backend;
}

/**
 * The backend registered under `name`, once its `init()` has succeeded (run on
 * the first call, then remembered). BackendUnavailableError when it failed, now
 * or before: "backend NAME is unavailable: <why>".
 */
export async function resolveBackend(name: string): Promise<Backend> {
  const backend = registeredBackend(name);
  const r = registry.get(name)!;
  if (backend.init) {
    r.ready ??= backend.init().catch((e: unknown) => {
      throw new BackendUnavailableError(`backend ${name} is unavailable: ${(e as Error)?.message ?? String(e)}`, { cause: e, hint: (e as { hint?: string })?.hint });
    });
    await r.ready;
  }
  return backend;
}

/**
 * The backend a model runs on when neither the load nor `env.backend` names
 * one (outside the Node target, which sets `auto`), and the one the lock tool records canaries with: `tflite` for TFLite
 * models, `wasm` otherwise.
 */
export function defaultBackend(format: ModelFormat): string {
  return format === 'tflite' ? 'tflite' : 'wasm';
}

/** The `backend` value (`LoadOptions.backend`, `env.backend`) that asks the load to choose; see `autoBackends`. */
export const AUTO = 'auto';

/**
 * The candidates of an `auto` load, fastest first, of those registered: for
 * ONNX `native` (onnxruntime-node: 2-3x faster per inference than wasm on the
 * reference models, docs/BENCH.md), then `wasm` (which records canaries and
 * runs everywhere); for TFLite `tflite`. The load takes the first that inits,
 * creates a session and reproduces the canary (within CANARY_TOLERANCE on a
 * backend that did not record it); a model without a canary, the first that
 * creates a session.
 */
export function autoBackends(format: ModelFormat): string[] {
  const order = format === 'tflite' ? ['tflite'] : ['native', 'wasm'];
  return order.filter((n) => registry.has(n));
}

/**
 * Whether `name` (or `auto`) runs the same backend in a model's worker as here: a
 * built-in one nobody replaced. A backend an app registered exists on its own
 * thread only, so loads naming one run in-thread (runtime/worker.ts).
 */
export function isBuiltinBackend(name: string): boolean {
  return name === AUTO ? [...registry.keys()].every((n) => builtins.get(n) === registry.get(n)?.backend) : builtins.has(name) && builtins.get(name) === registry.get(name)?.backend;
}

const builtins = new Map<string, Backend>();
const BUILT_IN: [string, Backend][] = [
  ['wasm', ortWasmBackend],
  ['webgpu', { create: (m, o) => ortWasmBackend.create(m, { ...o, executionProvider: 'webgpu' }) }],
  ['native', ortNativeBackend],
  ['tflite', { formats: ['tflite'], create: async (m, o) => (await import('./tflite.ts')).createTfliteSession(m, o) }],
];
for (const [name, backend] of BUILT_IN) {
  builtins.set(name, backend);
  registerBackend(name, backend);
}

