/**
 * What carrying TFLite costs a device bundle at load. The node bundle is built
 * (targets/build.mjs) into a temporary folder; each measurement is a fresh
 * `node` process (module loading is once per process), the four kinds
 * interleaved round by round in rotating order:
 * - `import`: `import('keylock.mjs')`, what every app pays;
 * - `import + library`: the same, then `import('keylock-tflite.mjs')`, what
 *   every app would pay if the bundle imported tfjs-tflite at load instead of on
 *   its first TFLite session;
 * - `ONNX cold`: import, `loadModel` of the locked reference CNN (signflip+sealed,
 *   model key given), first run;
 * - `TFLite cold`: the same for the CNN exported to TFLite and locked alike,
 *   which imports the library, compiles its wasm and creates the interpreter.
 * Times are taken inside the child (process start excluded). Medians of the
 * per-round values and of the per-round ratios.
 *
 *   node --import tsx eval/bench/sections/bundle-tflite.ts [--quick]
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildTarget, TFLITE_LIB } from '../../../targets/build.mjs';
import { lockModel } from '../../../models/lock/index.ts';
import { onnxToTflite } from '../../../models/tflite/export.ts';
import { ROOT, seeded } from '../plan.ts';
import { ratios, summarize, type Summary } from '../stats.ts';

const KINDS = ['import', 'import + library', 'ONNX cold', 'TFLite cold'] as const;
type Kind = (typeof KINDS)[number];

export interface BundleTfliteResults {
  node: string;
  rounds: number;
  /** keylock.mjs and keylock-tflite.mjs sizes in bytes. */
  bundleBytes: number;
  libraryBytes: number;
  /** Per kind: ms inside the child, from before the import to the end of its work. */
  ms: Record<Kind, Summary>;
  /** Per-round ratios: import + library / import, TFLite cold / ONNX cold. */
  eagerRatio: Summary;
  tfliteColdRatio: Summary;
}

/** The child: `CHILD KIND DIR [KLM KEY DIMS]`; prints the ms it measured. */
const CHILD = `import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
const [kind, dir, klm, key, dims] = process.argv.slice(2);
const t0 = performance.now();
const k = await import(pathToFileURL(join(dir, 'keylock.mjs')).href);
if (kind === 'import + library') await import(pathToFileURL(join(dir, '${TFLITE_LIB}')).href);
if (klm) {
  const m = await k.loadModel(new Uint8Array(readFileSync(klm)), { modelKey: new Uint8Array(readFileSync(key)) });
  if (m.state !== 'ready') throw m.error;
  const d = dims.split(',').map(Number);
  await m.run({ input: { dtype: 'float32', dims: d, data: new Float32Array(d.reduce((a, b) => a * b, 1)).fill(0.5) } });
}
process.stdout.write(String(performance.now() - t0));
process.exit(0);
`;

export async function measure(quick: boolean): Promise<BundleTfliteResults> {
  const rounds = quick ? 2 : 9;
  const dir = mkdtempSync(join(tmpdir(), 'keylock-bench-bundle-tflite-'));
  try {
    const built = await buildTarget('node', { outDir: join(dir, 'node') });
    const onnx = new Uint8Array(readFileSync(join(ROOT, 'models/reference/mnist-cnn.onnx')));
    const vendorSeed = seeded('bundle-tflite/vendor');
    const lockedOnnx = await lockModel(onnx, { schemes: ['signflip', 'sealed'], vendorSeed, modelId: 'bench-cnn-onnx' });
    const lockedTflite = await lockModel(onnxToTflite(onnx), { schemes: ['signflip', 'sealed'], vendorSeed, modelId: 'bench-cnn-tflite' });
    const files = {
      onnx: [join(dir, 'cnn.klm'), join(dir, 'cnn.key'), '1,1,28,28'], tflite: [join(dir, 'cnn-tflite.klm'), join(dir, 'cnn-tflite.key'), '1,28,28,1'],
    };
    writeFileSync(files.onnx[0], lockedOnnx.klm);
    writeFileSync(files.onnx[1], lockedOnnx.modelKey);
    writeFileSync(files.tflite[0], lockedTflite.klm);
    writeFileSync(files.tflite[1], lockedTflite.modelKey);
    const child = join(dir, 'child.mjs');
    writeFileSync(child, CHILD);
    const argsOf: Record<Kind, string[]> = { import: [], 'import + library': [], 'ONNX cold': files.onnx, 'TFLite cold': files.tflite };
    const per: Record<Kind, number[]> = { import: [], 'import + library': [], 'ONNX cold': [], 'TFLite cold': [] };
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < KINDS.length; i++) {
        const kind = KINDS[(i + r) % KINDS.length];
        const p = spawnSync(process.execPath, [child, kind, built.dir, ...argsOf[kind]], { encoding: 'utf8' });
        if (p.status !== 0) throw new Error(`bundle-tflite child ${kind}: exit ${p.status}: ${p.stderr}`);
        per[kind].push(Number(p.stdout));
      }
    }
    return {
      node: process.version,
      rounds,
      bundleBytes: statSync(join(built.dir, 'keylock.mjs')).size,
      libraryBytes: statSync(join(built.dir, TFLITE_LIB)).size,
      ms: Object.fromEntries(KINDS.map((k) => [k, summarize(per[k])])) as Record<Kind, Summary>,
      eagerRatio: summarize(ratios(per['import + library'], per.import)),
      tfliteColdRatio: summarize(ratios(per['TFLite cold'], per['ONNX cold'])),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const ms = (s: Summary): string => `${s.median.toFixed(1)} (${s.p25.toFixed(1)}–${s.p75.toFixed(1)})`;

export function render(r: BundleTfliteResults): string[] {
  return [
    `The node device bundle (keylock.mjs ${r.bundleBytes.toLocaleString('en')} bytes; ${TFLITE_LIB} ${r.libraryBytes.toLocaleString('en')} bytes beside it), a fresh \`node\` ${r.node} process per measurement, the four kinds interleaved over ${r.rounds} rounds in rotating order; ms inside the process from before the import (process start excluded), median (p25–p75). The models: the reference CNN locked with signflip+sealed, and the same CNN exported to TFLite and locked alike, loaded with the model key and run once.`,
    '',
    '| what the process does | ms |',
    '| --- | ---: |',
    ...KINDS.map((k) => `| ${k === 'import' ? '`import(keylock.mjs)`' : k === 'import + library' ? `\`import(keylock.mjs)\` + \`import(${TFLITE_LIB})\`` : k === 'ONNX cold' ? 'import + ONNX load + first run' : 'import + TFLite load + first run (library import, wasm compile)'} | ${ms(r.ms[k])} |`),
    '',
    `An app that runs ONNX only pays the first row: the library is imported by the first TFLite session, so the second row (${r.eagerRatio.median.toFixed(2)}× the first, per-round median, p25–p75 ${r.eagerRatio.p25.toFixed(2)}–${r.eagerRatio.p75.toFixed(2)}) is what importing it at load would cost every app. A TFLite cold start takes ${r.tfliteColdRatio.median.toFixed(2)}× the ONNX one (p25–p75 ${r.tfliteColdRatio.p25.toFixed(2)}–${r.tfliteColdRatio.p75.toFixed(2)}).`,
  ];
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await measure(process.argv.includes('--quick'));
  process.stdout.write(render(r).join('\n') + '\n');
  process.exit(0);
}
