/**
 * Probe: could `sealed` inline on `wasm` keep onnxruntime-web's *own* weight memory encrypted
 * between runs (XOR keystream into the initializers where ORT keeps them), instead of feeding
 * the weights as inputs? That needs (1) each initializer's bytes to sit in ORT's heap exactly
 * once, in the tensor's own layout, at an address that can be found; (2) no derived copy
 * (prepacked, fused, folded, transposed weights) that would stay in plaintext; (3) the run to
 * cost less than feeding the weights as inputs.
 *
 *   node --import tsx eval/residency-heap.ts MODEL_ID copies CONFIG   # one config, fresh process
 *   node --import tsx eval/residency-heap.ts MODEL_ID time            # the configs interleaved
 *   node --import tsx eval/residency-heap.ts MODEL_ID cycle CONFIG [all]  # prototype: ORT's copies encrypted between runs
 *   node --import tsx eval/residency-heap.ts MODEL_ID control         # chance floor of the value count
 *   node --import tsx eval/residency-heap.ts oww-embedding scrub      # the input scrubber's cost
 *
 * CONFIG: `default` (what keylock's wasm backend makes: graph optimizations all, prepacking on),
 * `noprepack` (session.disable_prepacking = 1), `noopt` (that, and graph optimizations disabled).
 * `copies` counts, after the session is made and has run once, the float32 initializers found in
 * the heap byte for byte (whole tensor, 4-aligned), how many times, and the float32 values of
 * the model found anywhere in the heap (eval/residency.ts `ValueIndex`: a moved, packed or fused
 * copy keeps them), before and after the float32 initializer copies found are zeroed.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-web';
import { xchacha20 } from '@noble/ciphers/chacha.js';
import { decodeModel, normalizeModel } from '../models/onnx/codec.ts';
import { catchOrtMemory, ortHeap } from '../runtime/ort-scrub.ts';
import { interleaveCalls, ratios, seededFloats, summarize } from './bench/stats.ts';
import { RESIDENCY_MODELS, ValueIndex, weightWindows, WindowIndex } from './residency.ts';

const CONFIGS: Record<string, ort.InferenceSession.SessionOptions> = {
  default: { graphOptimizationLevel: 'all' },
  noprepack: { graphOptimizationLevel: 'all', extra: { session: { disable_prepacking: '1' } } },
  noopt: { graphOptimizationLevel: 'disabled', extra: { session: { disable_prepacking: '1' } } },
};

const root = fileURLToPath(new URL('..', import.meta.url));
const [id, what, config] = process.argv.slice(2);
const m = RESIDENCY_MODELS.find((x) => x.id === id);
if (!m) throw new Error(`model must be one of ${RESIDENCY_MODELS.map((x) => x.id).join(', ')}, got ${id}`);
const onnx = new Uint8Array(readFileSync(`${root}${m.file}`));
const model = decodeModel(normalizeModel(onnx));
const inits = model.graph.initializer.filter((t) => t.data_type === 1 && t.raw_data && t.raw_data.byteLength >= 64);
const inputName = model.graph.input[0].name!;
const feeds = { [inputName]: new ort.Tensor('float32', seededFloats((m.dims as readonly number[]).reduce((a, b) => a * b, 1), 7), m.dims as unknown as number[]) };
ort.env.wasm.numThreads = 1;

async function session(c: string): Promise<ort.InferenceSession> {
  const s = await catchOrtMemory(() => ort.InferenceSession.create(onnx.slice(), { executionProviders: ['wasm'], logSeverityLevel: 3, ...CONFIGS[c] }));
  await s.run(feeds);
  return s;
}

/** Every 4-aligned address of `h` where all of `b` sits. */
function findAll(h: Uint8Array, b: Uint8Array): number[] {
  const w = new Uint32Array(h.buffer, 0, h.byteLength >>> 2);
  const first = new Uint32Array(b.buffer.slice(b.byteOffset, b.byteOffset + 4))[0];
  const out: number[] = [];
  outer: for (let i = 0; i < w.length; i++) {
    if (w[i] !== first) continue;
    const at = 4 * i;
    if (at + b.byteLength > h.byteLength) break;
    for (let j = 0; j < b.byteLength; j++) if (h[at + j] !== b[j]) continue outer;
    out.push(at);
  }
  return out;
}

function valuesIn(vindex: ValueIndex, h: Uint8Array): number {
  const w = new Uint32Array(h.buffer, 0, h.byteLength >>> 2);
  const seen = new Set<number>();
  const vs = new Set(vindex.values);
  for (const x of w) if (vs.has(x)) seen.add(x);
  return seen.size;
}

if (what === 'copies') {
  const s = await session(config);
  const first = Float32Array.from((await s.run(feeds))[s.outputNames[0]].data as Float32Array);
  const h = new Uint8Array(ortHeap()!.buffer);
  const vindex = new ValueIndex(onnx);
  const counts = inits.map((t) => findAll(h, t.raw_data!));
  const once = counts.filter((c) => c.length === 1).length;
  const twice = counts.filter((c) => c.length >= 2).length;
  const none = counts.filter((c) => c.length === 0).length;
  const bytes = inits.reduce((n, t) => n + t.raw_data!.byteLength, 0);
  const valuesBefore = valuesIn(vindex, h);
  for (const [i, c] of counts.entries()) for (const at of c) h.fill(0, at, at + inits[i].raw_data!.byteLength);
  const valuesAfter = valuesIn(vindex, h);
  let ok = 'fails';
  try {
    const after = (await s.run(feeds))[s.outputNames[0]].data as Float32Array;
    ok = after.every((v, i) => v === first[i]) ? 'gives the same outputs (the kernels do not read those copies)' : 'gives other outputs (the kernels read those copies)';
  } catch { /* reported */ }
  process.stdout.write(`${id} ${config}: ${inits.length} float32 initializers (${(bytes / 1e6).toFixed(2)} MB); in ORT's heap (${(h.byteLength / 1048576).toFixed(0)} MiB) byte for byte: once ${once}, twice or more ${twice}, not found ${none}; ` +
    `float32 values of the model in the heap: ${valuesBefore} of ${vindex.values.length}, ${valuesAfter} after zeroing every copy found; a run after zeroing ${ok}\n`);
} else if (what === 'time') {
  const ss = [];
  for (const c of Object.keys(CONFIGS)) ss.push(await session(c));
  const sides = ss.map((s) => () => s.run(feeds));
  const t = await interleaveCalls(sides, 9, 20);
  Object.keys(CONFIGS).forEach((c, i) => process.stdout.write(`${id} ${c}: ${summarize(t.sides[i]).median.toFixed(2)} ms, / default ${summarize(ratios(t.sides[i], t.sides[0])).median.toFixed(3)}x\n`));
} else if (what === 'cycle') {
  // The prototype: the copies found encrypted in place in ORT's heap between runs (XChaCha20 by
  // @noble/ciphers over views of the heap: in place, no copy), decrypted just before each run.
  const s = await session(config ?? 'noprepack');
  const want = Float32Array.from((await s.run(feeds))[s.outputNames[0]].data as Float32Array);
  const h = new Uint8Array(ortHeap()!.buffer);
  const key = new Uint8Array(32).fill(7);
  // Only tensors found exactly once: a second copy may be a freed block, whose allocator fields an XOR would break.
  const found = inits.map((t) => findAll(h, t.raw_data!));
  // With `all` (4th argument), every copy found, duplicates included (each its own nonce).
  const all = process.argv[5] === 'all';
  const places = inits.flatMap((t, i) => (found[i].length === 1 || all ? found[i].map((at, k) => ({ at, len: t.raw_data!.byteLength, nonce: new Uint8Array(24).fill(i).map((v, j) => (j === 23 ? k : v)) })) : []));
  const skipped = all ? 0 : found.filter((f) => f.length !== 1).length;
  const xor = (): void => { for (const p of places) xchacha20(key, p.nonce, h.subarray(p.at, p.at + p.len), h.subarray(p.at, p.at + p.len)); };
  xor(); // encrypted between runs from now on
  const cycle = async (): Promise<ort.InferenceSession.ReturnType> => { xor(); try { return await s.run(feeds); } finally { xor(); } };
  const got = (await cycle())[s.outputNames[0]].data as Float32Array;
  const same = got.every((v, i) => v === want[i]);
  const vindex = new ValueIndex(onnx);
  const hb = new Uint8Array(ortHeap()!.buffer);
  const between = valuesIn(vindex, hb);
  const w = weightWindows(onnx);
  const seenW = new Uint8Array(w.count);
  const windows = new WindowIndex(w).scan(new Uint32Array(hb.buffer), hb.byteLength >>> 2, seenW);
  const left = inits.filter((_, i) => !all && found[i].length !== 1).map((t, i) => `${t.name} (${t.raw_data!.byteLength} B, ${found[inits.indexOf(t)].length}×)`).slice(0, 6).join(', ');
  const t = await interleaveCalls([() => s.run(feeds), cycle], 9, 20);
  process.stdout.write(`${id} cycle (${config ?? 'noprepack'}): ${places.length} places (${(places.reduce((n, p) => n + p.len, 0) / 1e6).toFixed(2)} MB) encrypted in ORT's heap between runs (${skipped} tensors found more or less than once left alone); outputs ${same ? 'equal' : 'differ from'} the session's own before encryption; ` +
    `32-byte windows of the weights in the heap between runs: ${windows} of ${w.count}; float32 values: ${between} of ${vindex.values.length}; left alone: ${left}; run with decrypt + re-encrypt (JavaScript XChaCha20) ${summarize(t.sides[1]).median.toFixed(2)} ms vs the same session alone ${summarize(t.sides[0]).median.toFixed(2)} ms, ${summarize(ratios(t.sides[1], t.sides[0])).median.toFixed(3)}x\n`);
} else if (what === 'scrub') {
  // What runtime/ort-scrub.ts costs: the `sealed` inline graph fed its weights (decrypted once) in
  // keylock's wasm session (which clears ORT's input copies after each run) and in a raw ORT
  // session, interleaved; and where ORT put the copies run after run.
  const { lockOnnx } = await import('../models/lock/index.ts');
  const { openKlm } = await import('../runtime/klm.ts');
  const { createOrtSession } = await import('../runtime/ort.ts');
  const { prepareAead, xchachaDecryptInto } = await import('../keystore/aead.ts');
  const { sealedXchachaKey, sealedXchachaNonce } = await import('../runtime/keys/derive.ts');
  await prepareAead();
  const r = await lockOnnx(onnx, { schemes: ['sealed'], sealedInline: true, vendorSeed: new Uint8Array(32), modelId: 'probe' });
  const o = openKlm(r.klm);
  const entry = o.manifest.locks.find((l) => l.scheme === 'sealed') as { salt?: Uint8Array; tensors: { name: string; offset: number; length: number; input?: string; dims?: number[] }[] };
  const key = sealedXchachaKey(r.modelKey);
  const x = seededFloats((m.dims as readonly number[]).reduce((a, b) => a * b, 1), 7);
  const kfeeds: Record<string, { dtype: 'float32'; dims: number[]; data: Float32Array }> = { [inputName]: { dtype: 'float32', dims: [...m.dims], data: x } };
  const ofeeds: Record<string, ort.Tensor> = { [inputName]: new ort.Tensor('float32', x, [...m.dims]) };
  for (const t of entry.tensors.filter((t) => t.input !== undefined)) {
    const p = new Uint8Array(t.length);
    xchachaDecryptInto(p, o.model.subarray(t.offset, t.offset + t.length), sealedXchachaNonce('probe', t.name, entry.salt), key);
    kfeeds[t.input!] = { dtype: 'float32', dims: t.dims!, data: new Float32Array(p.buffer) };
    ofeeds[t.input!] = new ort.Tensor('float32', new Float32Array(p.buffer), t.dims!);
  }
  const k = await createOrtSession(o.model, { threads: 1 });
  const raw = await ort.InferenceSession.create(o.model, { executionProviders: ['wasm'], logSeverityLevel: 3 });
  const t = await interleaveCalls([() => raw.run(ofeeds), () => k.run(kfeeds)], 9, 15);
  const counts = (k as unknown as { scrubber: { counts: Record<string, number> } }).scrubber.counts;
  process.stdout.write(`${id} scrub: ${Object.keys(kfeeds).length} inputs; raw ORT ${summarize(t.sides[0]).median.toFixed(2)} ms, keylock's session (input copies cleared) ${summarize(t.sides[1]).median.toFixed(2)} ms, ` +
    `${summarize(ratios(t.sides[1], t.sides[0])).median.toFixed(3)}x; over ${t.sides[1].length * t.calls} runs: copies cleared where ORT wrote them ${counts.atKnown}, searched for ${counts.searched}, at another address than the run before ${counts.moved}\n`);
} else if (what === 'control') {
  // The chance floor: the model's float32 values in the heap of a session of another model (the MNIST MLP).
  const s = await catchOrtMemory(() => ort.InferenceSession.create(new Uint8Array(readFileSync(`${root}models/reference/mnist-mlp.onnx`)), { executionProviders: ['wasm'], logSeverityLevel: 3 }));
  const name = s.inputNames[0];
  await s.run({ [name]: new ort.Tensor('float32', seededFloats(784, 7), [1, 1, 28, 28]) });
  const vindex = new ValueIndex(onnx);
  process.stdout.write(`${id} control (the MNIST MLP's session instead): float32 values of ${id} in the heap: ${valuesIn(vindex, new Uint8Array(ortHeap()!.buffer))} of ${vindex.values.length}\n`);
} else {
  throw new Error('usage: residency-heap.ts MODEL_ID copies CONFIG | MODEL_ID time | MODEL_ID cycle [CONFIG] | MODEL_ID control');
}
process.exit(0);
