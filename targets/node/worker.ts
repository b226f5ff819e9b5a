/**
 * The Node worker script of worker mode (runtime/worker-host.ts serves the
 * model): started by `spawnNodeWorker` (targets/node/spawn.ts). In a device
 * bundle it is `keylock-worker.mjs`, beside `keylock.mjs`.
 */
import { parentPort } from 'node:worker_threads';
import { serveModel } from '../../runtime/worker-host.ts';
import type { ToWorker } from '../../runtime/worker.ts';

const port = parentPort;
if (!port) throw new Error('keylock-worker: expected to run in a worker thread (worker_threads), got the main thread');
serveModel({
  post: (msg, transfer) => port.postMessage(msg, transfer ?? []),
  listen: (fn) => port.on('message', (m: ToWorker) => fn(m)),
  close: () => port.close(),
});
