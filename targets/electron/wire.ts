/**
 * What crosses Electron's IPC between the main process (which holds the
 * keystore and the model) and the renderer: tensors in, tensors or a typed
 * error out, and a small status record. Never a key, a grant or model bytes.
 *
 * The main process replies with a result record instead of throwing, because
 * `ipcMain.handle` turns a thrown error into "Error invoking remote method …"
 * and drops its class. And since `contextBridge` copies only an error's message
 * into the page, the preload puts the typed name at the start of the message
 * too (`KeyMismatchError: …`); `errorName` reads it back either way.
 *
 * This module is shared by main.ts and preload.ts and must stay free of the
 * runtime: the preload bundle carries no model code.
 */
import type { IOSpec } from '../../runtime/klm.ts';
import type { ModelState, RunStats } from '../../runtime/model.ts';
import type { TensorMap } from '../../runtime/tensor.ts';

/** Channel of `run`: args `[inputs: TensorMap]`, reply `RunReply`. */
export const RUN_CHANNEL = 'keylock:run';
/** Channel of `info`: no args, reply `ModelInfo`. */
export const INFO_CHANNEL = 'keylock:info';

/** A typed error as data: the class name, its stable code, the message. */
export interface WireError {
  name: string;
  code?: string;
  message: string;
}

/** The main process's answer to `run`. */
export type RunReply = { ok: true; outputs: TensorMap } | { ok: false; error: WireError };

/** The model's state as the renderer may see it. */
export interface ModelInfo {
  modelId?: string;
  state: ModelState;
  error?: WireError;
  inputs: IOSpec[];
  outputs: IOSpec[];
  stats: RunStats;
}

/** An error as data. Only the name, code and message cross; stacks and causes stay in the main process. */
export function toWireError(e: unknown): WireError {
  const err = e as { name?: unknown; code?: unknown; message?: unknown } | undefined;
  const name = typeof err?.name === 'string' && /^[A-Za-z][A-Za-z0-9]{0,63}$/.test(err.name) ? err.name : 'Error';
  const out: WireError = { name, message: typeof err?.message === 'string' ? err.message : String(e) };
  if (typeof err?.code === 'string') out.code = err.code;
  return out;
}

/** The Error the renderer's `run` rejects with: typed `name`, and the message starting with the name (see module comment). */
export function fromWireError(w: WireError): Error {
  const e = new Error(`${w.name}: ${w.message}`);
  e.name = w.name;
  if (w.code) (e as Error & { code?: string }).code = w.code;
  return e;
}

/** The typed name of an error that came through the bridge, whether or not `name` survived. */
export function errorName(e: unknown): string {
  const err = e as { name?: unknown; message?: unknown } | undefined;
  if (typeof err?.name === 'string' && err.name !== 'Error') return err.name;
  const m = typeof err?.message === 'string' ? /^([A-Za-z][A-Za-z0-9]*Error): /.exec(err.message) : null;
  return m ? m[1] : 'Error';
}
