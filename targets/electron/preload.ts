/**
 * Electron target, preload script: exposes `window.keylock` to the page through
 * `contextBridge`, forwarding to the main process with `ipcRenderer.invoke`.
 * The bridge carries tensors and typed error names/messages only; the page
 * never holds a key, a grant, the keystore or the model bytes, and this bundle
 * holds no runtime code.
 *
 * Written against injected `{ contextBridge, ipcRenderer }` so it runs (and is
 * tested) without Electron. Loaded by Electron as a preload (a CommonJS script
 * with `require`), it wires itself to the real modules.
 */
import type { TensorMap } from '../../runtime/tensor.ts';
import { fromWireError, INFO_CHANNEL, RUN_CHANNEL, type ModelInfo, type RunReply } from './wire.ts';

export { errorName } from './wire.ts';

/** The part of Electron's `contextBridge` keylock uses. */
export interface ContextBridgeLike {
  exposeInMainWorld(apiKey: string, api: unknown): void;
}

/** The part of Electron's `ipcRenderer` keylock uses. */
export interface IpcRendererLike {
  invoke(channel: string, ...args: unknown[]): Promise<unknown>;
}

/** What the page gets as `window.keylock`. */
export interface KeylockBridge {
  /** Runs the model in the main process; rejects with the typed error (name at the start of the message). */
  run(inputs: TensorMap): Promise<TensorMap>;
  /** The model's state, typed error and latency figures, as data. */
  info(): Promise<ModelInfo>;
}

/** Builds the bridge and exposes it on `window[apiKey]`; returns it too. */
export function exposeKeylock(deps: { contextBridge: ContextBridgeLike; ipcRenderer: IpcRendererLike }, apiKey = 'keylock'): KeylockBridge {
  const { contextBridge, ipcRenderer } = deps;
  const api: KeylockBridge = {
    async run(inputs) {
      const r = (await ipcRenderer.invoke(RUN_CHANNEL, inputs)) as RunReply;
      if (!r.ok) throw fromWireError(r.error);
      return r.outputs;
    },
    async info() {
      const r = (await ipcRenderer.invoke(INFO_CHANNEL)) as ModelInfo | RunReply;
      if ('ok' in r && !r.ok) throw fromWireError(r.error);
      return r as ModelInfo;
    },
  };
  contextBridge.exposeInMainWorld(apiKey, api);
  return api;
}

// In Electron the preload runs as a CommonJS script whose `require('electron')`
// gives the real modules. Elsewhere (an ESM import, a test) there is no
// `require`, and the caller wires `exposeKeylock` itself.
if (typeof require === 'function' && typeof window !== 'undefined') {
  const electron = require('electron') as { contextBridge?: ContextBridgeLike; ipcRenderer?: IpcRendererLike };
  if (electron.contextBridge && electron.ipcRenderer) exposeKeylock({ contextBridge: electron.contextBridge, ipcRenderer: electron.ipcRenderer });
}
