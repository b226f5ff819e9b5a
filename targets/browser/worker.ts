/**
 * The Web Worker script of worker mode (runtime/worker-host.ts serves the
 * model), for browsers, Electron renderers and Deno: `keylock-worker.mjs`
 * beside the browser and deno bundles, started as a module worker by
 * `webWorkerSpawner` (targets/browser/spawn.ts).
 */
import { serveModel } from '../../runtime/worker-host.ts';
import type { ToWorker } from '../../runtime/worker.ts';

interface WorkerScope {
  postMessage(msg: unknown, transfer?: Transferable[]): void;
  onmessage: ((ev: MessageEvent) => void) | null;
  close(): void;
}

const scope = globalThis as unknown as WorkerScope;
serveModel({
  post: (msg, transfer) => scope.postMessage(msg, transfer ?? []),
  listen: (fn) => { scope.onmessage = (ev) => fn(ev.data as ToWorker); },
  close: () => scope.close(),
});
