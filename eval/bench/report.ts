/**
 * Renders benchmark results as docs/BENCH.md: every figure beside its goal,
 * with pass or miss, and the command that produced it. The hand-written part
 * (profiles, what was tried) lives in eval/bench/notes.md and is appended.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { GOALS } from './plan.ts';
import { EXTRA_SECTIONS } from './sections/index.ts';
import type { Summary } from './stats.ts';

const NOTES = fileURLToPath(new URL('./notes.md', import.meta.url));

export interface LatencyRow {
  case: string; model: string; label: string; goal: number; calls: number; rounds: number;
  plainMs: Summary; bareMs: Summary; lockedMs: Summary;
  /** locked / plain: the figure held to the goal. */
  ratio: Summary;
  /** bare locked graph / plain: what the lock changed in the graph. */
  graphRatio: Summary;
  /** locked / bare: keylock's per-run JavaScript (input checks, hooks, queue). */
  jsRatio: Summary;
}
export interface LatencyRun { backend: string; threads: number; rows: LatencyRow[]; vsWasm: { model: string; calls: number; wasmMs: Summary; nativeMs: Summary; ratio: Summary }[] }
export interface ColdRow {
  case: string; model: string; label: string; modelBytes: number; rounds: number;
  plainMs: Summary; keyMs: Summary; keystoreMs: Summary; keyRatio: Summary; keystoreRatio: Summary; phases: Record<string, number>;
  /** The model-key load with the digest hashed beside the restore (env.parallelDigest true); keyMs is the same load hashing first. */
  besideMs?: Summary; besideRatio?: Summary; besideOverKey?: Summary;
  /** SHA-256 then ChaCha20 of the model's size on one thread, and (plain + that) / plain per round: the floor of a load that hashes, then decrypts. */
  floorMs?: Summary; floorRatio?: Summary;
  /** env.parallelDigest as the platform's entry left it, which the keystore side used (null: unset, i.e. by core count). */
  platformDigest?: boolean | null;
}
export interface ColdRun { backend: string; threads: number; rows: ColdRow[] }
export interface Throughput { bytes: number; tensors: number; sealed: Summary; sealedJs: Summary; sealedLegacy: Summary; sealedPinned?: Summary; sealedSpeedup: Summary; deeplock: Summary; sha256js: Summary; sha256webcrypto: Summary; aesGcmWebcrypto?: Summary }
export interface MemRow { variant: 'plain' | 'locked'; case: string; modelBytes: number; fileBytes: number; peakReset: boolean; base: number; baseRss: number; afterLoad: number; afterRuns: number; arrayBuffersAfterGc: number; externalAfterGc: number }
export interface AllocRow { case: string; model: string; at: number[]; heapUsed: number[]; arrayBuffers: number[]; rss: number[]; msPerRun: Summary }
export interface BundleRow {
  target: string; files: string[]; js: { bytes: number; gzip: number }; ort: { bytes: number; gzip: number };
  /** keylock-tflite.mjs and tfjs-tflite's glue and wasm beside the bundle (absent in results from before they were staged). */
  tflite?: { bytes: number; gzip: number };
  nativeInside: boolean;
}

export interface BenchResults {
  date: string;
  quick: boolean;
  node: string;
  models: { id: string; file: string; bytes: number; note: string; input: { name: string; dims: number[] } }[];
  latency: LatencyRun[];
  cold: ColdRun[];
  throughput?: Throughput;
  memory: MemRow[];
  alloc?: { rows: AllocRow[] };
  bundles: BundleRow[];
  seconds: number;
  /** Set when only some sections were measured in this run (`--only`); the others come from `previousDate`. */
  partial?: { sections: string[]; previousDate: string };
  /** Results of the self-contained sections (eval/bench/sections/), by id. */
  extra?: Record<string, unknown>;
}

const x2 = (v: number): string => `${v.toFixed(3)}×`;
const ms = (v: number): string => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v >= 1 ? v.toFixed(2) : v.toFixed(3));
const mb = (b: number): string => `${(b / 1e6).toFixed(1)} MB`;
const spread = (s: Summary): string => `${s.p25.toFixed(3)}–${s.p75.toFixed(3)} (min ${s.min.toFixed(3)}, max ${s.max.toFixed(3)})`;
const verdict = (ok: boolean): string => (ok ? '**pass**' : '**miss**');
const med = (xs: number[]): number => { const a = [...xs].sort((p, q) => p - q); const n = a.length; return n ? (n % 2 ? a[(n - 1) / 2] : (a[n / 2 - 1] + a[n / 2]) / 2) : NaN; };

/** Median of the slope of heapUsed over runs, in bytes per run, and the growth first → last sample. */
export function heapGrowth(r: AllocRow): { bytesPerRun: number; growth: number } {
  const n = r.at.length;
  const mx = r.at.reduce((a, b) => a + b, 0) / n;
  const my = r.heapUsed.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) { num += (r.at[i] - mx) * (r.heapUsed[i] - my); den += (r.at[i] - mx) ** 2; }
  return { bytesPerRun: den ? num / den : NaN, growth: r.heapUsed[n - 1] - r.heapUsed[0] };
}

function latencySection(r: BenchResults): string[] {
  const L: string[] = ['## 1. Per-inference latency, locked / plain', ''];
  L.push('Command: `npm run bench` (child: `eval/bench/child.ts latency`, one process per backend and thread count). Three sides are loaded in one process and called in turn, one inference each (plain, bare, locked, plain, …, the order rotating every call), each call timed; per round (about 100 ms of calls per side; 21 rounds, 11 for inferences over 20 ms) the median call of each side is taken, and the ratios are per round. A call that the scheduler preempts is an outlier of its round and moves neither median, which is what makes sub-millisecond inferences measurable on this busy machine.', '');
  L.push('- **plain**: the original model in a backend session; **locked**: `loadModel(klm).run()`, everything keylock does per run included (input checks, shuffling the input, feeding key tensors, run queue, latency stats); **bare**: the restored locked graph in a plain backend session, fed the same tensors without keylock\'s JavaScript (the shuffled input precomputed).', '- **ratio** = locked / plain, held to the goal; **graph** = bare / plain (what the lock changed in the graph, e.g. the Mul nodes of signflip input mode); **JS** = locked / bare (keylock\'s per-run code).', '');
  L.push(`Goals: signflip input mode ≤ ${GOALS.signflipInput}×; shuffle incl. preprocessing ≤ ${GOALS.shuffle}×; load-time schemes (signflip fold, deeplock, advparams, sealed) 1.00× within noise, read as a median ≤ ${GOALS.loadTime}×. signflip+sealed is held to the signflip input-mode goal. Shuffle runs on the reference MLP only: it is the model where shuffle can be absorbed post hoc into the first layer (a Gemm over the whole image); the CNN's first conv cannot absorb it.`, '');
  for (const run of r.latency) {
    L.push(`### ${run.backend}, ${run.threads} thread(s)`, '');
    L.push('| model | lock | plain ms | locked ms | ratio (median) | ratio p25–p75 (min, max) | graph | JS | goal | |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const row of run.rows) {
      L.push(`| ${row.model} | ${row.label} | ${ms(row.plainMs.median)} | ${ms(row.lockedMs.median)} | ${x2(row.ratio.median)} | ${spread(row.ratio)} | ${x2(row.graphRatio.median)} | ${x2(row.jsRatio.median)} | ≤ ${row.goal.toFixed(2)}× | ${verdict(row.ratio.median <= row.goal)} |`);
    }
    L.push('');
    if (run.vsWasm.length) {
      L.push(`Native beside wasm (plain models, ${run.threads} thread(s) each, interleaved call by call in one process):`, '');
      L.push('| model | wasm ms/inference | native ms/inference | native / wasm (median) | p25–p75 (min, max) |', '| --- | --- | --- | --- | --- |');
      for (const v of run.vsWasm) L.push(`| ${v.model} | ${ms(v.wasmMs.median)} | ${ms(v.nativeMs.median)} | ${x2(v.ratio.median)} | ${spread(v.ratio)} |`);
      L.push('');
    }
  }
  return L;
}

function coldSection(r: BenchResults): string[] {
  const L: string[] = ['## 2. Cold start, bytes in memory to the first output', ''];
  L.push('Command: `npm run bench` (child: `eval/bench/child.ts cold`). Per round, in rotating order: plain = backend session create + first run (from bytes of its own, copied before the clock starts, as a device reads its file; since the run of this change, before it the same buffer every round); locked = `loadModel(klm, { modelKey, trust: [vendor key], consume: true })` + first run (as a device loads a file: the vendor key pinned, the bytes read handed over, as `loadModelFile` does; each round gets its own copy, made before the clock starts); keystore = `Keystore.open` (unseal) + `loadModel(klm, { keystore, consume: true })` + first run. ORT\'s one-time runtime start is paid before timing (it is the same for all). Ratios are per round, over the plain cold start of the same round. The model-key load runs twice per round: with the SHA-256 of the model bytes hashed first and the restore after (`env.parallelDigest = false`, "digest first"), and hashed on another thread beside the restore (`true`, "beside": WebCrypto\'s digest of a copy taken just before the restore, awaited before the session is created); "beside / first" is the per-round ratio of the two. "floor" is what every byte\'s SHA-256 and then its decryption cost on one thread here, measured in each round (Node\'s SHA-256 of the model bytes, then ChaCha20 of as many bytes in one node:crypto call); "floor / plain" = (plain + floor) / plain, per round: the best a load that hashes and then decrypts on one thread could reach.', '');
  L.push(`Goal: sealed on the model of several MB (ppocr-rec) ≤ ${GOALS.coldSealed}× plain, judged on the load as Node runs it by default (digest first; the keystore side too).`, '');
  for (const run of r.cold) {
    L.push(`### ${run.backend}, ${run.threads} thread(s)`, '');
    L.push('| model | lock | plain ms | locked ms (digest first) | locked / plain | p25–p75 | beside ms | beside / plain | beside / first | keystore ms | keystore / plain | floor ms | floor / plain | goal | |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const c of run.rows) {
      const goal = c.model === 'ppocr-rec' && c.label === 'sealed';
      const b = (x: Summary | undefined, f: (v: number) => string): string => (x ? f(x.median) : '–');
      L.push(`| ${c.model} (${mb(c.modelBytes)}) | ${c.label} | ${ms(c.plainMs.median)} | ${ms(c.keyMs.median)} | ${x2(c.keyRatio.median)} | ${c.keyRatio.p25.toFixed(3)}–${c.keyRatio.p75.toFixed(3)} | ${b(c.besideMs, ms)} | ${b(c.besideRatio, x2)} | ${b(c.besideOverKey, x2)} | ${ms(c.keystoreMs.median)} | ${x2(c.keystoreRatio.median)} | ${b(c.floorMs, ms)} | ${b(c.floorRatio, x2)} | ${goal ? `≤ ${GOALS.coldSealed}×` : '–'} | ${goal ? verdict(c.keyRatio.median <= GOALS.coldSealed && c.keystoreRatio.median <= GOALS.coldSealed) : ''} |`);
    }
    L.push('', 'Phases (median ms; `open` = envelope + Ed25519 signature + manifest, `key` = key check value (and the grant, with a keystore), `digest` = SHA-256 of the model bytes, digest first: hashed before the restore, in place (Node\'s native hash here), beside: the wait for it after the restore, `restore` = undo the load-time locks in the handed-over bytes (`sealed` with a pinned vendor key: XChaCha20 (XSalsa20 for entries that name no cipher) without the tags, the digest covers them; beside: including the copy WebCrypto takes), `create` = backend session, GC = garbage collection inside the plain cold start and inside the locked one (digest first), PerformanceObserver \'gc\' entries):', '');
    L.push('| model | lock | plain create | plain first run | open | key | digest | restore | create | first run | beside: restore | beside: digest wait | beside: create | keystore open | GC plain | GC locked |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const c of run.rows) {
      const p = (k: string): string => (c.phases[k] === undefined ? '–' : ms(c.phases[k]));
      L.push(`| ${c.model} | ${c.label} | ${p('plain create')} | ${p('plain first run')} | ${p('open')} | ${p('key')} | ${p('digest')} | ${p('restore')} | ${p('create')} | ${p('first run')} | ${p('beside: restore')} | ${p('beside: digest')} | ${p('beside: create')} | ${p('keystore: keystore open')} | ${p('plain gc')} | ${p('gc')} |`);
    }
    L.push('');
  }
  return L;
}

function throughputSection(r: BenchResults): string[] {
  const t = r.throughput;
  if (!t) return [];
  const L = ['## 3. Restore throughput', ''];
  L.push(`Command: \`npm run bench\` (child: \`eval/bench/child.ts throughput\`): ${mb(t.bytes)} in ${t.tensors} tensor(s) at odd byte offsets (as raw_data inside a protobuf), ${t.sealed.n} rounds; \`restoreSealed\` and \`restoreDeeplock\` from runtime/keys/. The sealed paths run in turn, the order rotating every round: WebAssembly SIMD (keystore/wasm/secretbox.c, what every target here runs), its JavaScript fallback (\`forceSecretboxJs(true)\`, what an engine without WebAssembly SIMD runs), the tweetnacl path of keylock's first version, and the path of a load whose signature verified against a pinned vendor key (\`authenticated\`: no MAC pass).`, '');
  L.push('| what | MB/s (median) | p25–p75 | goal | |', '| --- | --- | --- | --- | --- |');
  const row = (what: string, s: Summary, goal?: number): string => `| ${what} | ${s.median.toFixed(0)} | ${s.p25.toFixed(0)}–${s.p75.toFixed(0)} | ${goal ? `≥ ${goal}` : '–'} | ${goal ? verdict(s.median >= goal) : ''} |`;
  L.push(row('sealed: `restoreSealed`, WebAssembly SIMD XSalsa20 and Poly1305 (64 KiB slices, in place)', t.sealed, GOALS.sealedMBps));
  if (t.sealedPinned) L.push(row('sealed with a pinned vendor key: XSalsa20 only, WebAssembly SIMD (the signed digest, checked before the backend, covers the MACs)', t.sealedPinned));
  if (t.sealedJs) L.push(row('sealed, JavaScript fallback: Poly1305 by tweetnacl, then XSalsa20 by @noble/ciphers, in place', t.sealedJs));
  L.push(row('sealed, first version: tweetnacl `secretbox.open` + copy', t.sealedLegacy));
  L.push(`| speed-up of WebAssembly over the JavaScript fallback, per round | ${x2(t.sealedSpeedup.median)} | ${t.sealedSpeedup.p25.toFixed(2)}–${t.sealedSpeedup.p75.toFixed(2)} | | |`);
  L.push(row('deeplock: `restoreDeeplock` (AES schedule + inverse S-box)', t.deeplock));
  L.push(row('SHA-256 in JS (@noble/hashes)', t.sha256js));
  L.push(row('SHA-256 in native code (`sha256Async`, used by `loadModel`: Node\'s hash here, WebCrypto elsewhere)', t.sha256webcrypto));
  if (t.aesGcmWebcrypto) L.push(row('for comparison, not a keylock format: AES-256-GCM decryption by WebCrypto (native code)', t.aesGcmWebcrypto));
  L.push('');
  return L;
}

/** Per case: medians over processes of the load's own peak (VmHWM after load − RSS before reading the file). */
const range = (xs: number[]): string => `${(Math.min(...xs) / 1e6).toFixed(0)}–${(Math.max(...xs) / 1e6).toFixed(0)}`;

export function memoryRows(r: BenchResults): {
  case: string; size: number; plainLoad: number; lockedLoad: number; plainRuns: number; lockedRuns: number; plainJs: number; lockedJs: number; n: number;
  plainRange: string; lockedRange: string;
}[] {
  return [...new Set(r.memory.map((m) => m.case))].map((c) => {
    const p = r.memory.filter((m) => m.case === c && m.variant === 'plain');
    const l = r.memory.filter((m) => m.case === c && m.variant === 'locked');
    return {
      case: c, size: (p[0] ?? l[0]).modelBytes, n: Math.min(p.length, l.length),
      plainLoad: med(p.map((m) => m.afterLoad - m.base)), lockedLoad: med(l.map((m) => m.afterLoad - m.base)),
      plainRuns: med(p.map((m) => m.afterRuns - m.base)), lockedRuns: med(l.map((m) => m.afterRuns - m.base)),
      plainJs: med(p.map((m) => m.arrayBuffersAfterGc)), lockedJs: med(l.map((m) => m.arrayBuffersAfterGc)),
      plainRange: range(p.map((m) => m.afterLoad - m.base)), lockedRange: range(l.map((m) => m.afterLoad - m.base)),
    };
  });
}

function memorySection(r: BenchResults): string[] {
  if (!r.memory.length) return [];
  const L = ['## 4. Peak RSS, locked vs plain', ''];
  L.push('Command: `npm run bench` (child: `node --expose-gc … eval/bench/child.ts mem`, a fresh process per figure, plain and locked alternating, medians over the processes). Both variants import the same modules and first warm up the same way (ORT on the tiny CNN, and `loadModel` on the tiny sealed CNN: code, JIT, tables). Then the peak is reset (`/proc/self/clear_refs` 5), RSS is read, the file is read and loaded (locked: as `loadModelFile` does, the bytes read handed over with `consume`, the vendor key pinned) and run once: **load peak** = VmHWM − that RSS; **run peak** = the same after 50 more runs. "JS buffers" = `process.memoryUsage().arrayBuffers` after GC with the model loaded: for the locked model it holds the caller\'s `.klm` bytes and nothing of the size of the model beyond, so the decrypted copy was released, not only wiped.', '');
  L.push('Goal: locked peak ≤ plain peak + 1× model size.', '');
  L.push('| model | lock | model size | processes | plain load peak (min–max) | locked load peak (min–max) | locked − plain | after runs: locked − plain | goal | | JS buffers after load: plain / locked |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const m of memoryRows(r)) {
    const [model, ...lock] = m.case.split('.');
    const d = m.lockedLoad - m.plainLoad;
    const dr = m.lockedRuns - m.plainRuns;
    L.push(`| ${model} | ${lock.join('.')} | ${mb(m.size)} | ${m.n} + ${m.n} | ${mb(m.plainLoad)} (${m.plainRange}) | ${mb(m.lockedLoad)} (${m.lockedRange}) | ${mb(d)} (${(d / m.size).toFixed(2)}×) | ${mb(dr)} (${(dr / m.size).toFixed(2)}×) | ≤ ${mb(m.size)} | ${verdict(d <= m.size && dr <= m.size)} | ${mb(m.plainJs)} / ${mb(m.lockedJs)} |`);
  }
  L.push('');
  return L;
}

/** |heap slope| at or below this many bytes per run counts as flat. */
export const FLAT_BYTES_PER_RUN = 64;

function allocSection(r: BenchResults): string[] {
  if (!r.alloc) return [];
  const L = ['## 5. Allocations per run', ''];
  L.push(`Command: \`npm run bench\` (child: \`node --expose-gc … eval/bench/child.ts alloc\`). Heap used after a full GC, sampled every 1,000 runs over 10,000 runs (after 50 warm-up runs); the slope is the least-squares fit. Flat = |slope| ≤ ${FLAT_BYTES_PER_RUN} bytes per run (640 kB over 10,000 runs): retaining anything per run (an input of the CNN is 3,136 bytes) would show as more. The plain models are run the same way for comparison.`, '');
  L.push('| case | runs | heap at start | heap at end | growth | slope (bytes/run) | RSS start → end | ms/run (median of blocks) |', '| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const a of r.alloc.rows) {
    const g = heapGrowth(a);
    const n = a.at.length - 1;
    L.push(`| ${a.case} | ${a.at[n]} | ${(a.heapUsed[0] / 1e6).toFixed(2)} MB | ${(a.heapUsed[n] / 1e6).toFixed(2)} MB | ${(g.growth / 1e3).toFixed(1)} kB | ${g.bytesPerRun.toFixed(2)} | ${mb(a.rss[0])} → ${mb(a.rss[n])} | ${ms(a.msPerRun.median)} |`);
  }
  L.push('');
  return L;
}

function bundleSection(r: BenchResults): string[] {
  if (!r.bundles.length) return [];
  const L = ['## 6. Bundle sizes per target', ''];
  L.push('Command: `npm run bench` (`buildTarget` from targets/build.mjs for every target in its `TARGETS`, minified; gzip -9). "Bundle files" are the main file and `keylock-worker.mjs`, the script of the thread each model runs on in worker mode (both counted in "JS bytes"). "ORT files" are the onnxruntime-web glue and wasm copied beside each bundle; "TFLite files" are `keylock-tflite.mjs` (tfjs-tflite) and its glue and wasm, which the bundle reads on its first TFLite session only (docs/TARGETS.md). No bundle contains onnxruntime-node: the `native` backend imports it at run time by a name the bundler does not follow.', '');
  L.push('| target | bundle files | JS bytes | JS gzip | ORT files bytes | ORT gzip | TFLite files bytes | TFLite gzip | onnxruntime-node inside |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  const n = (v: number | undefined): string => (v === undefined ? '–' : v.toLocaleString('en'));
  for (const b of r.bundles) L.push(`| ${b.target} | ${b.files.join(', ')} | ${n(b.js.bytes)} | ${n(b.js.gzip)} | ${n(b.ort.bytes)} | ${n(b.ort.gzip)} | ${n(b.tflite?.bytes)} | ${n(b.tflite?.gzip)} | ${b.nativeInside ? 'yes' : 'no'} |`);
  L.push('');
  return L;
}

function summarySection(r: BenchResults): string[] {
  const L = ['## Goals at a glance', '', '| goal | measured (median) | |', '| --- | --- | --- |'];
  const wasm1 = r.latency.find((x) => x.backend === 'wasm' && x.threads === 1);
  const worst = (pred: (row: LatencyRow) => boolean, runs: LatencyRun[]): { v: number; where: string } | undefined => {
    let best: { v: number; where: string } | undefined;
    for (const run of runs) for (const row of run.rows) if (pred(row) && (!best || row.ratio.median > best.v)) best = { v: row.ratio.median, where: `${row.model}, ${run.backend} ${run.threads}T` };
    return best;
  };
  const runs = r.latency;
  const lines: [string, ((row: LatencyRow) => boolean), number][] = [
    [`signflip input mode ≤ ${GOALS.signflipInput}× plain per inference`, (row) => row.label === 'signflip (input)', GOALS.signflipInput],
    [`shuffle incl. preprocessing ≤ ${GOALS.shuffle}×`, (row) => row.label.startsWith('shuffle'), GOALS.shuffle],
    [`sealed, deeplock, advparams, signflip fold 1.00× (median ≤ ${GOALS.loadTime}×)`, (row) => ['sealed', 'deeplock', 'advparams', 'signflip (fold)'].includes(row.label), GOALS.loadTime],
  ];
  for (const [what, pred, goal] of lines) {
    const w = worst(pred, runs);
    if (w) {
      const all = runs.flatMap((run) => run.rows.filter(pred));
      const misses = all.filter((row) => row.ratio.median > goal).length;
      L.push(`| ${what} | worst ${x2(w.v)} (${w.where}); ${all.length - misses} of ${all.length} rows pass | ${verdict(misses === 0)} |`);
    }
  }
  void wasm1;
  const c = r.cold.find((x) => x.backend === 'wasm' && x.threads === 1)?.rows.find((row) => row.model === 'ppocr-rec' && row.label === 'sealed');
  if (c) L.push(`| cold start sealed, ppocr-rec (${mb(c.modelBytes)}) ≤ ${GOALS.coldSealed}× | ${x2(c.keyRatio.median)} with the model key, ${x2(c.keystoreRatio.median)} with a keystore (wasm 1T) | ${verdict(c.keyRatio.median <= GOALS.coldSealed && c.keystoreRatio.median <= GOALS.coldSealed)} |`);
  if (r.throughput) L.push(`| sealed decryption in JS ≥ ${GOALS.sealedMBps} MB/s | ${r.throughput.sealed.median.toFixed(0)} MB/s (JavaScript fallback ${r.throughput.sealedJs.median.toFixed(0)} MB/s) | ${verdict(r.throughput.sealed.median >= GOALS.sealedMBps)} |`);
  const mem = memoryRows(r);
  if (mem.length) {
    const worstX = Math.max(...mem.map((m) => Math.max(m.lockedLoad - m.plainLoad, m.lockedRuns - m.plainRuns) / m.size));
    const ok = mem.filter((m) => m.lockedLoad - m.plainLoad <= m.size && m.lockedRuns - m.plainRuns <= m.size).length;
    L.push(`| peak RSS ≤ plain + 1× model size | worst locked − plain = ${worstX.toFixed(2)}× model size; ${ok} of ${mem.length} pass | ${verdict(ok === mem.length)} |`);
  }
  if (r.alloc) {
    const flat = r.alloc.rows.map((a) => heapGrowth(a).bytesPerRun);
    L.push(`| heap flat over 10,000 runs (\\|slope\\| ≤ ${FLAT_BYTES_PER_RUN} B/run) | ${r.alloc.rows.map((a, i) => `${a.case} ${flat[i].toFixed(1)}`).join('; ')} bytes/run | ${verdict(flat.every((v) => Math.abs(v) <= FLAT_BYTES_PER_RUN))} |`);
  }
  L.push('');
  return L;
}

/** The whole BENCH.md. */
/** Sections 7 on: each self-contained section renders its own table under its heading. */
function extraSections(r: BenchResults): string[] {
  const L: string[] = [];
  EXTRA_SECTIONS.forEach((x, i) => {
    const res = r.extra?.[x.id];
    if (res === undefined) return;
    L.push(`## ${7 + i}. ${x.title}`, '', `Command: \`npm run bench\` (child: \`eval/bench/sections/${x.id}.ts\`; alone: \`node --import tsx eval/bench/sections/${x.id}.ts\`).`, '');
    L.push(...x.render(res as never), '');
  });
  return L;
}

export function render(r: BenchResults): string {
  const L: string[] = [
    '# keylock benchmark',
    '',
    `Generated by \`npm run bench\` (eval/bench/run.ts${r.quick ? ' --quick' : ''}) on ${r.date.slice(0, 10)}${r.partial ? ` (sections ${r.partial.sections.join(', ')} re-measured then by \`node --import tsx eval/bench/run.ts --only ${r.partial.sections.join(',')}\` after code changes to them; the others from the full \`npm run bench\` of ${r.partial.previousDate.slice(0, 16).replace('T', ' ')} UTC)` : ''}, Node ${r.node}, onnxruntime-web 1.30.0 (wasm), onnxruntime-node 1.30.0 (native), a shared 2-core machine with other processes running; the run took ${r.seconds.toFixed(0)} s. Absolute times move with the machine\'s load; the ratios, measured side by side in one process, are the figures to read.`,
    '',
    'Models:',
    '',
    '| model | file | size | input | note |', '| --- | --- | --- | --- | --- |',
    ...r.models.map((m) => `| ${m.id} | ${m.file} | ${mb(m.bytes)} | \`${m.input.name}\` [${m.input.dims.join(',')}] | ${m.note} |`),
    '',
    ...summarySection(r),
    ...latencySection(r),
    ...coldSection(r),
    ...throughputSection(r),
    ...memorySection(r),
    ...allocSection(r),
    ...bundleSection(r),
    ...extraSections(r),
  ];
  if (!r.quick && existsSync(NOTES)) L.push(readFileSync(NOTES, 'utf8'));
  return L.join('\n') + '\n';
}
