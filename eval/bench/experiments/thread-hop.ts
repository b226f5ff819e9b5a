/**
 * What a thread hop costs here, without keylock or a model: the round trip of an
 * empty job to a worker_threads worker and back, median µs over interleaved
 * rounds, by three signalling paths:
 *
 * - message: `postMessage` both ways (what worker mode uses), a 3 KB Float32Array cloned there;
 * - atomics: the worker blocks in `Atomics.wait` on a SharedArrayBuffer word, the caller
 *   `Atomics.notify`s it and awaits `Atomics.waitAsync` for the answer (inputs written into shared memory);
 * - atomics + spin: as atomics, but the worker spins on the word for 200 µs before it blocks
 *   (a core kept busy between back-to-back runs).
 *
 *   node --import tsx eval/bench/experiments/thread-hop.ts
 *
 * It bounds what a different signalling path could take off worker mode's fixed cost
 * (docs/BENCH.md section 14, notes "Worker mode").
 */
import { Worker } from 'node:worker_threads';
import { quantile } from '../stats.ts';

const N = 784;
const code = `
const { parentPort, workerData } = require('node:worker_threads');
const ctl = new Int32Array(workerData.sab, 0, 2);
const data = new Float32Array(workerData.sab, 8, ${N});
parentPort.on('message', (m) => {
  if (m === 'atomics' || m === 'spin') {
    const spin = m === 'spin';
    for (;;) {
      if (spin) { const t = performance.now(); while (Atomics.load(ctl, 0) === 0 && performance.now() - t < 0.2); }
      Atomics.wait(ctl, 0, 0);
      const v = Atomics.exchange(ctl, 0, 0);
      if (v === 2) break;
      data[0] += 1; // the "run"
      Atomics.store(ctl, 1, 1);
      Atomics.notify(ctl, 1);
    }
    parentPort.postMessage('done');
    return;
  }
  parentPort.postMessage({ t: 'ran', id: m.id, outputs: { y: { dtype: 'float32', dims: [1, 10], data: new Float32Array(10) } } });
});
`;
const sab = new SharedArrayBuffer(8 + N * 4);
const ctl = new Int32Array(sab, 0, 2);
const w = new Worker(code, { eval: true, workerData: { sab } });
const x = new Float32Array(N).fill(0.5);

const viaMessage = (): Promise<unknown> => new Promise((resolve) => {
  w.once('message', resolve);
  w.postMessage({ t: 'run', id: 1, inputs: { input: { dtype: 'float32', dims: [1, 1, 28, 28], data: x } } });
});
const viaAtomics = async (): Promise<void> => {
  new Float32Array(sab, 8, N).set(x);
  Atomics.store(ctl, 1, 0);
  Atomics.store(ctl, 0, 1);
  Atomics.notify(ctl, 0);
  const r = (Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number): { async: boolean; value: Promise<string> | string } }).waitAsync(ctl, 1, 0);
  if (r.async) await r.value;
};
const stopAtomics = async (): Promise<void> => {
  const done = new Promise((resolve) => w.once('message', resolve));
  Atomics.store(ctl, 0, 2);
  Atomics.notify(ctl, 0);
  await done;
};

async function median(f: () => Promise<unknown>, n: number): Promise<number> {
  const t: number[] = [];
  for (let i = 0; i < n; i++) { const s = performance.now(); await f(); t.push((performance.now() - s) * 1000); }
  return quantile(t, 0.5);
}

const rows: Record<string, number[]> = { message: [], atomics: [], 'atomics + spin': [] };
for (let round = 0; round < 7; round++) {
  for (let i = 0; i < 200; i++) await viaMessage();
  rows.message.push(await median(viaMessage, 2000));
  for (const mode of ['atomics', 'spin'] as const) {
    w.postMessage(mode);
    await new Promise((r) => setTimeout(r, 5));
    for (let i = 0; i < 200; i++) await viaAtomics();
    rows[mode === 'spin' ? 'atomics + spin' : 'atomics'].push(await median(viaAtomics, 2000));
    await stopAtomics();
  }
}
for (const [k, v] of Object.entries(rows)) console.log(`${k.padEnd(16)} round trip ${quantile(v, 0.5).toFixed(1)} µs (median of ${v.length} rounds' medians; min ${Math.min(...v).toFixed(1)}, max ${Math.max(...v).toFixed(1)})`);
await w.terminate();
