/**
 * Section "recovery": key-recovery attacks on every lock that has a key to
 * recover (sealed has none within reach: XSalsa20-Poly1305 under a 256-bit key).
 *
 *   npm run eval -- --only recovery
 *   node --import tsx eval/recovery.ts [--quick] [--seed N]
 *
 * One report per lock, each in eval/recovery/ (the attack code in eval/attacks/):
 * - deeplock.ts: known plaintext (four consecutive parameters), guessed
 *   plaintext (a run of four zeros) and ciphertext only (exponent bits), each
 *   checked against the real master key and by unlocking the model bit for bit;
 * - signflip.ts: greedy bit search with stolen digits;
 * - shuffle.ts: a learned block map in front of the locked model, rounded to
 *   the key permutation;
 * - advparams.ts: locate, reset and fine-tune.
 * Every data-driven attack is reported beside training from scratch on the
 * same stolen digits with the same budget. This file loads the data, shares the
 * stolen subsets and the scratch baselines between the reports, and joins them.
 */
import { loadMnist, type MnistSet } from '../models/train/mnist.ts';
import { initTfjsWasm } from '../models/tfjs/setup.ts';
import { randFor, scratchAccuracy } from './attacks/common.ts';
import { subsetOf } from './harness.ts';
import { advparamsPart } from './recovery/advparams.ts';
import { deeplockPart } from './recovery/deeplock.ts';
import { read, sec, type Env, type Part } from './recovery/part.ts';
import { shufflePart } from './recovery/shuffle.ts';
import { signflipPart } from './recovery/signflip.ts';
import type { Section } from './section.ts';
import { isMain, runStandalone } from './standalone.ts';

/** Key-recovery attacks on every lock. */
export const recoverySection: Section = async (ctx) => {
  await initTfjsWasm();
  const { train, test } = loadMnist();
  const stolen = new Map<number, MnistSet>();
  const scratch = new Map<string, number>();
  const plain = { mlp: read('models/reference/mnist-mlp.onnx'), cnn: read('models/reference/mnist-cnn.onnx') };
  const env: Env = {
    quick: ctx.quick, seed: ctx.seed, progress: ctx.progress, cache: ctx.cache, train, test,
    stolen(n) {
      if (!stolen.has(n)) stolen.set(n, subsetOf(train, n, randFor(ctx.seed, `stolen/${n}`)));
      return stolen.get(n)!;
    },
    scratch(arch, n) {
      const k = `${arch}/${n}`;
      if (!scratch.has(k)) scratch.set(k, scratchAccuracy(plain[arch], this.stolen(n), test, ctx.seed + n));
      return scratch.get(k)!;
    },
  };
  ctx.progress.plan(ctx.quick ? 4 : 4 + 12 + 9 + 2 + 1 + 16 + 6);
  const t0 = performance.now();
  const parts: Part[] = [];
  const timings: string[] = [];
  for (const [name, fn] of [['Deep-Lock', deeplockPart], ['sign-flip', signflipPart], ['shuffle', shufflePart], ['AdvParams', advparamsPart]] as const) {
    const s0 = performance.now();
    parts.push(await fn(env));
    timings.push(`${name} ${sec(s0).toFixed(0)} s`);
  }
  const md = [
    '## Key recovery',
    '',
    `Command: \`npm run eval -- --only recovery\` (or \`node --import tsx eval/recovery.ts${ctx.quick ? ' --quick' : ''}\`; attack code in eval/attacks/).${ctx.quick ? ' **Quick mode:** one model and one data size per attack.' : ''} Stolen digits are seeded subsets of the 8,000 training digits (the same subset for every attack of a given size, seed ${ctx.seed}); accuracy is on the 2,000 held-out digits. Time per attack: ${timings.join(', ')} (${sec(t0).toFixed(0)} s in all, 2 cores shared with other jobs, so times are upper bounds).`,
    '',
    ...parts.flatMap((p) => [...p.md, '']),
  ];
  return { id: 'recovery', title: 'Key recovery', markdown: md.join('\n'), checks: parts.flatMap((p) => p.checks) };
};

if (isMain(import.meta.url)) await runStandalone(recoverySection);
