/**
 * Worker mode on the web platform (browsers, Electron renderers, Deno): a
 * module Web Worker running `keylock-worker.mjs` (targets/browser/worker.ts),
 * for `env.spawnWorker`. Same origin as the bundle, so a page's CSP
 * `worker-src 'self'` allows it; nothing is fetched from elsewhere.
 */
import type { WorkerLike } from '../../runtime/env.ts';

interface WebWorker {
  postMessage(msg: unknown, transfer: Transferable[]): void;
  onmessage: ((ev: MessageEvent) => void) | null;
  onerror: ((ev: ErrorEvent) => void) | null;
  onmessageerror: ((ev: MessageEvent) => void) | null;
  terminate(): void;
}
type WorkerCtor = new (url: URL | string, opts: { type: 'module'; name?: string }) => WebWorker;

/** Whether this platform has module Web Workers. */
export function hasWebWorkers(): boolean {
  return typeof (globalThis as { Worker?: unknown }).Worker === 'function';
}

/** A spawner of module Web Workers running the script at `url`. */
export function webWorkerSpawner(url: URL): () => WorkerLike {
  return () => {
    const W = (globalThis as unknown as { Worker: WorkerCtor }).Worker;
    const w = new W(url, { type: 'module', name: 'keylock-model' });
    let ended = false;
    const me: WorkerLike = {
      onmessage: null,
      ondeath: null,
      postMessage: (msg, transfer) => w.postMessage(msg, transfer ?? []),
      terminate: () => {
        w.terminate();
        // A Web Worker tells nobody that it ended: the runtime hears it here.
        if (!ended) { ended = true; queueMicrotask(() => me.ondeath?.('terminated')); }
      },
    };
    w.onmessage = (ev) => me.onmessage?.(ev.data);
    w.onerror = (ev) => {
      ev.preventDefault?.();
      if (ended) return;
      ended = true;
      w.terminate();
      me.ondeath?.(`error: ${ev.message || 'the worker script failed'}`);
    };
    w.onmessageerror = () => {
      if (ended) return;
      ended = true;
      w.terminate();
      me.ondeath?.('a message could not be decoded');
    };
    return me;
  };
}
