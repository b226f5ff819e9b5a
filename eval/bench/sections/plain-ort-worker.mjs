// The bench's control for worker mode (eval/bench/sections/realtime.ts): a plain onnxruntime-web
// session of an unlocked model on a worker_threads thread, answering one run per message, so the
// cost of running on a worker thread at all is measured apart from keylock's.
//   workerData: { model: Uint8Array }; message: { name, dtype, dims, data } -> { ms, outputs: count }
import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-web';

ort.env.wasm.numThreads = 1;
const session = await ort.InferenceSession.create(workerData.model, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
parentPort.on('message', async (x) => {
  const t = performance.now();
  const out = await session.run({ [x.name]: new ort.Tensor(x.dtype, x.data, x.dims) });
  parentPort.postMessage({ ms: performance.now() - t, outputs: Object.keys(out).length });
});
parentPort.postMessage('ready');
