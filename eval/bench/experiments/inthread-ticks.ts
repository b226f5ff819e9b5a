/**
 * How much a model's back-to-back runs on the caller's thread (`worker: false`) cost a 5 ms
 * `setInterval`, by model size and backend: the share of the expected ticks that fired while each
 * model ran back to back for 1 s, three windows per row, beside the timer alone (a 20 ms sleep loop).
 * The input to the `worker: 'auto'` limit (AUTO_IN_THREAD_MS in runtime/model.ts): onnxruntime-node
 * turns the event loop on every run (its `run` starts in a `setImmediate`), onnxruntime-web never does.
 *
 *   node --import tsx eval/bench/experiments/inthread-ticks.ts
 */
import { readFileSync } from 'node:fs';
import { decodeRecorded } from '../../../runtime/recorded.ts';
import { loadModel } from '../../../targets/node/index.ts';
import { lockOnnx } from '../../../models/lock/index.ts';
import { signKeyPair } from '../../../keystore/nacl.ts';
import { MODELS, ROOT, seeded } from '../plan.ts';
import { seededFloats } from '../stats.ts';

const digits = decodeRecorded(new Uint8Array(readFileSync(`${ROOT}test/fixtures/mnist-test.cbor`)));
const vendorSeed = seeded('vendor');
const trust = [signKeyPair(vendorSeed).publicKey];

async function ticks(run: () => Promise<unknown>, ms: number): Promise<{ share: number; perRunUs: number }> {
  let n = 0;
  const iv = setInterval(() => { n++; }, 5);
  const t0 = performance.now();
  let runs = 0;
  while (performance.now() - t0 < ms) { await run(); runs++; }
  const el = performance.now() - t0;
  clearInterval(iv);
  return { share: n / Math.floor(el / 5), perRunUs: (el / runs) * 1000 };
}
const pct = (x: number): string => `${(x * 100).toFixed(1)} %`;

for (const id of ['mnist-cnn', 'melspectrogram', 'embedding_model']) {
  const def = MODELS.find((m) => m.id === id)!;
  const bytes = new Uint8Array(readFileSync(`${ROOT}${def.file}`));
  const x = def.mnist ? digits[0].inputs! : { [def.input.name]: { dtype: 'float32' as const, dims: def.input.dims, data: seededFloats(def.input.dims.reduce((a, b) => a * b, 1), 7) } };
  const r = await lockOnnx(bytes, { schemes: ['sealed'], vendorSeed, modelKey: seeded(`key/inthread-ticks/${id}`), modelId: `inthread-ticks-${id}` });
  for (const backend of ['native', 'wasm']) {
    const m = await loadModel(r.klm, { modelKey: r.modelKey, trust, worker: false, backend, threads: 1 });
    if (m.state !== 'ready') throw m.error!;
    await ticks(() => m.run(x), 200);
    const rows: string[] = [];
    for (let i = 0; i < 3; i++) {
      const t = await ticks(() => m.run(x), 1000);
      const c = await ticks(() => new Promise((resolve) => setTimeout(resolve, 20)), 1000);
      rows.push(`${pct(t.share)} at ${t.perRunUs.toFixed(0)} µs/run (timer alone ${pct(c.share)})`);
    }
    console.log(`${id}, ${backend}, worker: false: ${rows.join(' | ')}`);
    await m.release();
  }
}
process.exit(0);
