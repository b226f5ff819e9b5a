/**
 * The device process of `npm run residency` (eval/residency.ts): loads one model the way an app
 * would, runs it a few times, collects garbage, prints `ready <pid>` and idles between runs until
 * it is killed. The measuring process then reads its whole memory.
 *
 *   node --expose-gc --import tsx eval/residency-child.ts JOB.json
 *
 * JOB.json: { mode: 'plain' | 'klm', backend, file, key?, trust?, inputs: { name: dims } }
 * (`plain`: the .onnx bytes straight into the backend, as an app without keylock does).
 */
import { readFileSync } from 'node:fs';
import { loadModel } from '../runtime/load.ts';
import { resolveBackend } from '../runtime/backends.ts';
import type { TensorMap } from '../runtime/tensor.ts';

interface Job { mode: 'plain' | 'klm'; backend: string; file: string; key?: string; trust?: string; inputs: Record<string, number[]>; runs: number }

const job = JSON.parse(readFileSync(process.argv[2], 'utf8')) as Job;
const feeds: TensorMap = {};
for (const [name, dims] of Object.entries(job.inputs)) {
  const data = new Float32Array(dims.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.37);
  feeds[name] = { dtype: 'float32', dims, data };
}

let run: (x: TensorMap) => Promise<TensorMap>;
let keep: unknown;
if (job.mode === 'plain') {
  let bytes: Uint8Array | undefined = new Uint8Array(readFileSync(job.file));
  const session = await (await resolveBackend(job.backend)).create(bytes, { threads: 1 });
  bytes = undefined; // an app drops its copy of the file; the collector reclaims it (not wiped)
  run = (x) => session.run(x);
  keep = session;
} else {
  const model = await loadModel(new Uint8Array(readFileSync(job.file)), {
    modelKey: new Uint8Array(Buffer.from(job.key!, 'hex')),
    trust: [new Uint8Array(Buffer.from(job.trust!, 'hex'))],
    backend: job.backend,
  });
  if (model.state !== 'ready') throw model.error;
  run = (x) => model.run(x);
  keep = model;
}
for (let i = 0; i < job.runs; i++) await run(feeds);
(globalThis as { gc?: () => void }).gc?.();
await new Promise((r) => setTimeout(r, 50));
(globalThis as { gc?: () => void }).gc?.();
process.stdout.write(`ready ${process.pid}\n`);
// Idle between runs, model loaded, until the measuring process kills it.
setInterval(() => { void keep; }, 1 << 30);
