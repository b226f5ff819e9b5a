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
 * one, and the one the lock tool records canaries with: `tflite` for TFLite
 * models, `wasm` otherwise.
 */
export function defaultBackend(format: ModelFormat): string {
  return format === 'tflite' ? 'tflite' : 'wasm';
}

registerBackend('wasm', ortWasmBackend);
registerBackend('webgpu', { create: (m, o) => ortWasmBackend.create(m, { ...o, executionProvider: 'webgpu' }) });
registerBackend('native', ortNativeBackend);
registerBackend('tflite', { formats: ['tflite'], create: async (m, o) => (await import('./tflite.ts')).createTfliteSession(m, o) });
