/**
 * Electron target, main process: the keystore and the model live here; the
 * renderer reaches the model only through two IPC channels (wire.ts) and gets
 * tensors or typed errors back, never key material.
 *
 * Written against a tiny `{ handle, removeHandler }` interface rather than
 * importing `electron`, so the app passes its `ipcMain` and the code runs
 * (and is tested) under plain Node. In the app:
 *
 *   import { ipcMain } from 'electron';
 *   import { startKeylock } from './keylock/main.mjs';
 *   await startKeylock({ ipcMain, klm: 'model.klm', keystore: 'device.kls', unlock });
 */
import { readFile } from 'node:fs/promises';
import { InputMismatchError } from '../../keystore/errors.ts';
import { loadModel } from '../../runtime/index.ts';
import { env } from '../../runtime/env.ts';
import { spawnNodeWorker } from '../node/spawn.ts';
import type { LockedModel } from '../../runtime/model.ts';
import { isDType, shapeSize, type DType, type TensorArray, type TensorMap } from '../../runtime/tensor.ts';
import { Keystore } from '../../keystore/keystore.ts';
import type { KeystoreStorage } from '../../keystore/storage.ts';
import type { UnlockProvider } from '../../keystore/unlock.ts';
import { INFO_CHANNEL, RUN_CHANNEL, toWireError, type ModelInfo, type RunReply } from './wire.ts';

export * from './wire.ts';
export * from '../../runtime/index.ts';

// Worker mode in the main process: each model on its own worker_threads thread (keylock-worker.mjs beside
// main.mjs), so inference never stalls the main process's event loop, which also serves every window's IPC.
env.spawnWorker ??= spawnNodeWorker;

/** The part of an IPC event keylock looks at (Electron's `IpcMainInvokeEvent`). */
export interface IpcEventLike {
  senderFrame?: { url?: string } | null;
}

/** The part of Electron's `ipcMain` keylock uses. */
export interface IpcMainLike {
  handle(channel: string, listener: (event: IpcEventLike, ...args: unknown[]) => unknown): void;
  removeHandler(channel: string): void;
}

/** Options of `registerKeylock`. */
export interface RegisterOptions {
  /**
   * Which senders may use the model, e.g. `(e) => e.senderFrame?.url.startsWith('app://')`.
   * A refused sender gets an error reply (`ForbiddenSenderError`). Default: every sender.
   */
  allow?: (event: IpcEventLike) => boolean;
}

/** At most this many input tensors per call. */
const MAX_INPUTS = 64;
/** At most this many bytes of input per call (256 MiB). */
const MAX_INPUT_BYTES = 256 << 20;
const MAX_RANK = 16;

const CTOR_OF: Record<DType, string> = {
  float32: 'Float32Array', float64: 'Float64Array', int8: 'Int8Array', uint8: 'Uint8Array', int16: 'Int16Array',
  uint16: 'Uint16Array', int32: 'Int32Array', uint32: 'Uint32Array', int64: 'BigInt64Array', uint64: 'BigUint64Array', bool: 'Uint8Array',
};

/**
 * Checks what a renderer sent, which is untrusted: a plain map of
 * `{ dtype, dims, data }` whose typed array matches the dtype and the dims.
 * Throws InputMismatchError saying what was expected.
 */
export function checkWireInputs(x: unknown): TensorMap {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new InputMismatchError(`inputs: expected a map of tensors, got ${Array.isArray(x) ? 'an array' : typeof x}`);
  const entries = Object.entries(x);
  if (entries.length > MAX_INPUTS) throw new InputMismatchError(`inputs: expected at most ${MAX_INPUTS} tensors, got ${entries.length}`);
  const out: TensorMap = {};
  let bytes = 0;
  for (const [name, v] of entries) {
    const t = v as { dtype?: unknown; dims?: unknown; data?: unknown } | null;
    if (typeof t !== 'object' || t === null) throw new InputMismatchError(`input "${name}": expected { dtype, dims, data }, got ${t === null ? 'null' : typeof t}`);
    if (!isDType(t.dtype)) throw new InputMismatchError(`input "${name}": expected a dtype name (float32, int64, ...), got ${JSON.stringify(t.dtype)}`);
    const dims = t.dims;
    if (!Array.isArray(dims) || dims.length > MAX_RANK || !dims.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new InputMismatchError(`input "${name}": expected dims as up to ${MAX_RANK} non-negative integers, got ${JSON.stringify(dims)}`);
    }
    const want = CTOR_OF[t.dtype];
    const data = t.data as TensorArray | undefined;
    if (!ArrayBuffer.isView(data) || data.constructor.name !== want) {
      throw new InputMismatchError(`input "${name}": expected a ${want} for ${t.dtype}, got ${data?.constructor?.name ?? typeof data}`);
    }
    const n = shapeSize(dims);
    if (data.length !== n) throw new InputMismatchError(`input "${name}": dims [${dims.join(',')}] need ${n} elements, got ${data.length}`);
    bytes += data.byteLength;
    if (bytes > MAX_INPUT_BYTES) throw new InputMismatchError(`inputs: expected at most ${MAX_INPUT_BYTES} bytes in one call, got more`);
    out[name] = { dtype: t.dtype, dims: [...dims], data };
  }
  return out;
}

/** The model's state as data for the renderer. */
export function modelInfo(model: LockedModel): ModelInfo {
  const info: ModelInfo = {
    modelId: model.manifest?.modelId,
    state: model.state,
    inputs: model.inputs,
    outputs: model.outputs,
    stats: model.stats,
  };
  if (model.error) info.error = toWireError(model.error);
  return info;
}

/**
 * Serves `model` on the two keylock channels. Returns the function that
 * removes the handlers. Handlers never throw: `run` replies with outputs or a
 * typed error (see wire.ts).
 */
export function registerKeylock(ipcMain: IpcMainLike, model: LockedModel, opts: RegisterOptions = {}): () => void {
  const allowed = (e: IpcEventLike): boolean => !opts.allow || opts.allow(e);
  const forbidden = { name: 'ForbiddenSenderError', code: 'forbidden-sender', message: 'this renderer may not use the keylock model; expected an allowed sender frame' };
  ipcMain.handle(RUN_CHANNEL, async (event, inputs): Promise<RunReply> => {
    if (!allowed(event)) return { ok: false, error: forbidden };
    try {
      return { ok: true, outputs: await model.run(checkWireInputs(inputs)) };
    } catch (e) {
      return { ok: false, error: toWireError(e) };
    }
  });
  ipcMain.handle(INFO_CHANNEL, (event): ModelInfo | RunReply => (allowed(event) ? modelInfo(model) : { ok: false, error: forbidden }));
  return () => {
    ipcMain.removeHandler(RUN_CHANNEL);
    ipcMain.removeHandler(INFO_CHANNEL);
  };
}

/** Options of `startKeylock`. */
export interface StartOptions extends RegisterOptions {
  ipcMain: IpcMainLike;
  /** The `.klm`: a path or its bytes. */
  klm: string | Uint8Array;
  /** The device keystore: a `.kls` path, a storage, or an open Keystore. */
  keystore: string | KeystoreStorage | Keystore;
  /** How to unlock a keystore given by path or storage (e.g. a hook wired to Electron's safeStorage). */
  unlock?: UnlockProvider;
  backend?: string;
  threads?: number;
}

/**
 * Opens the keystore, loads the model and registers the handlers. A model
 * that fails its checks is still served: the renderer's `run` gets its typed
 * error, and `info` says halted or disabled.
 */
export async function startKeylock(opts: StartOptions): Promise<{ model: LockedModel; keystore: Keystore; stop(): Promise<void> }> {
  let keystore: Keystore;
  if (opts.keystore instanceof Keystore) keystore = opts.keystore;
  else {
    if (!opts.unlock) throw new TypeError('startKeylock: a keystore given by path or storage needs an unlock provider');
    keystore = await Keystore.open(opts.keystore, { unlock: opts.unlock });
  }
  const klm = typeof opts.klm === 'string' ? new Uint8Array(await readFile(opts.klm)) : opts.klm;
  const model = await loadModel(klm, { keystore, backend: opts.backend, threads: opts.threads });
  const unregister = registerKeylock(opts.ipcMain, model, opts);
  return {
    model,
    keystore,
    async stop() {
      unregister();
      await model.release();
      if (!(opts.keystore instanceof Keystore)) keystore.close();
    },
  };
}
