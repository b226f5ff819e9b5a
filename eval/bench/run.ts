/**
 * The performance benchmark: locked over plain, side by side.
 *
 *   npm run bench                       full run; writes docs/BENCH.md and docs/bench.json
 *   node --import tsx eval/bench/run.ts --quick --out DIR   tiny run (the CI check), writes DIR/
 *   node --import tsx eval/bench/run.ts --render           BENCH.md again from docs/bench.json and notes.md
 *   node --import tsx eval/bench/run.ts --only cold,memory re-measure some sections, keep the rest of docs/bench.json
 *
 * Every figure is a ratio measured in one process with both sides interleaved
 * (plain, locked, plain, locked …), reported as the median and spread of the
 * per-round ratios: the machine is shared and noisy, single timings mean
 * little. Each measurement runs in its own child process (eval/bench/child.ts):
 * ORT-web fixes its thread count per process, and peak RSS is per process.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { prepare, ROOT, type Plan } from './plan.ts';
import { render, type BenchResults } from './report.ts';
import { EXTRA_SECTIONS, type ExtraSection } from './sections/index.ts';

const CHILD = fileURLToPath(new URL('./child.ts', import.meta.url));
const SECTION_CHILD = fileURLToPath(new URL('./sections/child.ts', import.meta.url));

/** Runs `node --import tsx …args` and returns the JSON of its BENCH-RESULT line; its progress lines pass through to stderr. */
function childResult(args: string[], what: string): Promise<any> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.on('error', reject);
    p.on('close', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('BENCH-RESULT '));
      if (code !== 0 || !line) reject(new Error(`${what} exited ${code}: ${out.slice(-2000)}`));
      else resolve(JSON.parse(line.slice('BENCH-RESULT '.length)));
    });
  });
}

/** Runs one extra section (eval/bench/sections/) in a child process and returns its result. */
function runSection(id: string, quick: boolean): Promise<unknown> {
  return childResult(['--import', 'tsx', SECTION_CHILD, id, ...(quick ? ['--quick'] : [])], `bench section ${id}`);
}

/** Runs one child task and returns its result; its progress lines pass through to stderr. */
export async function runChild(task: string, args: object, workDir: string, opts: { gc?: boolean } = {}): Promise<any> {
  const argFile = join(workDir, `args-${task}-${Date.now()}-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(argFile, JSON.stringify(args));
  return childResult([...(opts.gc ? ['--expose-gc'] : []), '--import', 'tsx', CHILD, task, argFile], `bench child ${task}`);
}

/** Options of one benchmark run. */
export interface BenchOptions {
  quick?: boolean;
  /** Folder for BENCH.md and bench.json (default docs/). */
  out?: string;
  progress?: (s: string) => void;
  /** Measure only these sections and keep the others from the existing bench.json in `out`. */
  only?: Section[];
}

/** Sections of bench.json that `--only` can re-measure. */
export type Section = 'latency' | 'cold' | 'throughput' | 'memory' | 'alloc' | 'bundles' | ExtraSection['id'];

async function bundleSizes(quick: boolean, progress: (s: string) => void): Promise<BenchResults['bundles']> {
  const { TARGETS, TFLITE_LIB, buildTarget } = await import('../../targets/build.mjs');
  const names = quick ? ['node'] : Object.keys(TARGETS);
  const dir = mkdtempSync(join(tmpdir(), 'keylock-bench-build-'));
  const rows: BenchResults['bundles'] = [];
  try {
    for (const n of names) {
      progress(`bundle ${n}`);
      const { files, inputs } = await buildTarget(n, { outDir: join(dir, n) });
      const ort = new Set(TARGETS[n].ortFiles);
      const tflite = new Set([TFLITE_LIB, ...TARGETS[n].tfliteFiles]);
      const size = (fs: string[]): { bytes: number; gzip: number } => fs.reduce((a, f) => {
        const b = readFileSync(f);
        return { bytes: a.bytes + b.byteLength, gzip: a.gzip + gzipSync(b, { level: 9 }).byteLength };
      }, { bytes: 0, gzip: 0 });
      const js = files.filter((f) => !ort.has(basename(f)) && !tflite.has(basename(f)));
      rows.push({
        target: n, files: js.map((f) => basename(f)), js: size(js), ort: size(files.filter((f) => ort.has(basename(f)))),
        tflite: size(files.filter((f) => tflite.has(basename(f)))),
        nativeInside: inputs.some((i) => i.includes('onnxruntime-node')),
      });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

/** Runs the benchmark and writes BENCH.md and bench.json into `out`. */
export async function bench(o: BenchOptions = {}): Promise<BenchResults> {
  const quick = !!o.quick;
  const progress = o.progress ?? ((s: string) => process.stderr.write(`${s}\n`));
  const out = o.out ?? join(ROOT, 'docs');
  const work = mkdtempSync(join(tmpdir(), 'keylock-bench-'));
  const t0 = performance.now();
  try {
    progress('[1/7] locking the cases');
    const plan: Plan = await prepare(work, quick, (s) => progress(`  ${s}`));
    const planFile = join(work, 'plan.json');
    const results: BenchResults = {
      date: new Date().toISOString(), quick, node: process.version, models: plan.models.map(({ path: _p, ...m }) => m),
      latency: [], cold: [], throughput: undefined, memory: [], alloc: undefined, bundles: [], seconds: 0,
    };
    const only = o.only;
    const want = (s: Section): boolean => !only || only.includes(s);
    const previous: BenchResults | undefined = only ? JSON.parse(readFileSync(join(out, 'bench.json'), 'utf8')) : undefined;

    progress('[2/7] per-inference latency, locked / plain (one process per backend and thread count)');
    const latencyRuns = quick
      ? [{ backend: 'wasm', threads: 1 }]
      : [{ backend: 'wasm', threads: 1 }, { backend: 'wasm', threads: 2 }, { backend: 'native', threads: 1 }, { backend: 'native', threads: 2 }];
    for (const r of want('latency') ? latencyRuns : []) {
      progress(`  ${r.backend}, ${r.threads} thread(s)`);
      results.latency.push(await runChild('latency', { plan: planFile, ...r, rounds: quick ? 3 : 21, targetMs: quick ? 5 : 100 }, work));
    }

    progress('[3/7] cold start, bytes to first output');
    const coldCases = quick ? ['mnist-cnn.sealed'] : plan.cases.filter((c) => c.model === 'ppocr-rec' || c.model === 'embedding_model' || c.id === 'mnist-cnn.sealed').map((c) => c.id);
    for (const r of !want('cold') ? [] : quick ? [{ backend: 'wasm', threads: 1 }] : [{ backend: 'wasm', threads: 1 }, { backend: 'wasm', threads: 2 }]) {
      progress(`  ${r.backend}, ${r.threads} thread(s)`);
      results.cold.push(await runChild('cold', { plan: planFile, ...r, rounds: quick ? 2 : 9, cases: coldCases }, work));
    }
    if (!quick && want('cold')) {
      progress('  native, 1 thread (sealed only)');
      results.cold.push(await runChild('cold', { plan: planFile, backend: 'native', threads: 1, rounds: 9, cases: ['ppocr-rec.sealed', 'embedding_model.sealed'] }, work));
    }

    progress('[4/7] restore throughput');
    if (want('throughput')) results.throughput = await runChild('throughput', { plan: planFile, mb: quick ? 1 : 32, rounds: quick ? 2 : 9 }, work);

    progress('[5/7] peak RSS, plain vs locked (one process each)');
    const memCases = quick ? ['mnist-cnn.sealed'] : ['ppocr-rec.sealed', 'ppocr-rec.deeplock', 'ppocr-rec.signflip-input', 'embedding_model.sealed'];
    const reps = quick ? 1 : 7;
    for (const c of want('memory') ? memCases : []) {
      for (let i = 0; i < reps; i++) {
        for (const variant of i % 2 === 0 ? ['plain', 'locked'] as const : ['locked', 'plain'] as const) {
          progress(`  ${c} ${variant} #${i + 1}`);
          results.memory.push(await runChild('mem', { plan: planFile, variant, case: c, runs: quick ? 10 : 50 }, work, { gc: true }));
        }
      }
    }

    progress('[6/7] heap growth over many runs');
    if (want('alloc')) results.alloc = await runChild('alloc', {
      plan: planFile,
      runs: quick ? 300 : 10_000, every: quick ? 100 : 1000,
      cases: quick ? ['plain:mnist-cnn', 'mnist-cnn.signflip-input'] : ['plain:mnist-cnn', 'mnist-cnn.signflip-input', 'mnist-cnn.sealed', 'mnist-mlp.shuffle-m-4-negpos-absorbed', 'plain:mnist-mlp'],
    }, work, { gc: true });

    progress('[7/7] bundle sizes');
    if (want('bundles')) results.bundles = await bundleSizes(quick, (s) => progress(`  ${s}`));
    results.extra = {};
    for (const [i, x] of EXTRA_SECTIONS.entries()) {
      if (!want(x.id)) continue;
      progress(`[+${i + 1}/${EXTRA_SECTIONS.length}] ${x.title}`);
      results.extra[x.id] = await runSection(x.id, quick);
    }
    if (previous) {
      // Sections not measured now keep their earlier figures (and BENCH.md says which run made them).
      for (const x of EXTRA_SECTIONS) if (!want(x.id) && previous.extra?.[x.id] !== undefined) results.extra[x.id] = previous.extra[x.id];
      if (!want('latency')) results.latency = previous.latency;
      if (!want('cold')) results.cold = previous.cold;
      if (!want('throughput')) results.throughput = previous.throughput;
      if (!want('memory')) results.memory = previous.memory;
      if (!want('alloc')) results.alloc = previous.alloc;
      if (!want('bundles')) results.bundles = previous.bundles;
      // Sections an earlier partial run re-measured stay listed as such: they are not from the full run.
      const sections = [...new Set([...(previous.partial?.sections ?? []), ...only!])];
      results.partial = { sections, previousDate: previous.partial?.previousDate ?? previous.date };
    }

    results.seconds = (performance.now() - t0) / 1000;
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'bench.json'), JSON.stringify(results, null, 1) + '\n');
    writeFileSync(join(out, 'BENCH.md'), render(results));
    progress(`wrote ${join(out, 'BENCH.md')} and bench.json in ${results.seconds.toFixed(0)} s`);
    return results;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argv = process.argv.slice(2);
  const i = argv.indexOf('--out');
  const out = i >= 0 ? argv[i + 1] : join(ROOT, 'docs');
  const j = argv.indexOf('--only');
  if (argv.includes('--render')) {
    // Re-renders BENCH.md from bench.json (after editing eval/bench/notes.md), measuring nothing.
    writeFileSync(join(out, 'BENCH.md'), render(JSON.parse(readFileSync(join(out, 'bench.json'), 'utf8'))));
  } else {
    await bench({ quick: argv.includes('--quick'), out, only: j >= 0 ? (argv[j + 1].split(',') as Section[]) : undefined });
  }
}
