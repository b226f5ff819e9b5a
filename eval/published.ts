/**
 * Section "published": the published table reproduced on keylock's reference
 * MNIST MLP and CNN (2,000 held-out digits). Every lock is applied by
 * `lockOnnx` and measured three ways:
 *  - with the correct key, through the device runtime (and compared bit for bit
 *    with the plain model, or for shuffle with the trained model on shuffled digits);
 *  - with a wrong key: what the device does (the key check value stops it) and
 *    what the model would compute if the check were bypassed (eval/harness.ts
 *    `bypassLogits`; for shuffle the model is locked under the wrong key, so
 *    the real runtime shuffles with a wrong permutation);
 *  - with no key: the locked file as `keylock extract` writes it, run by plain
 *    onnxruntime-web on plain digits (sign-flip key inputs fed with ones).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { lockOnnx, type LockRequest } from '../models/lock/index.ts';
import { lockTrainedWithShuffleKey, mnistShuffleKey, shuffleMnistSet } from '../models/train/shuffle-train.ts';
import { mnistSamples } from '../models/train/make-fixtures.ts';
import { loadMnist, TRAIN_SIZE } from '../models/train/mnist.ts';
import { KeyMismatchError } from '../keystore/errors.ts';
import { loadModel } from '../runtime/load.ts';
import { wipeShuffleKey } from '../runtime/keys/shuffle-key.ts';
import { accuracyOf, bitDiffs, bypassLogits, keyedLogits, labelKey, pct, plainLogits, stolenLogits } from './harness.ts';
import { check, type Check, type Section, type SectionResult } from './section.ts';
import { barChart } from './svg.ts';
import { SHUFFLE_EPOCHS, shuffleModelKey, shuffleTrained, type ShuffleModelSpec } from './shuffle-cache.ts';

const root = fileURLToPath(new URL('..', import.meta.url));

/** The published figures beside each row. */
const PUBLISHED: Record<string, string> = {
  plain: 'ResNet-18/CIFAR-10 plain 95.45',
  'shuffle m=1': 'control: plain training with the same recipe',
  'shuffle m=2': 'm=2: 94.70 / wrong 25.84 / none 34.39',
  'shuffle m=4': 'm=4: 94.26 / wrong 20.01 / none 27.11',
  'shuffle m=7': 'm=8: 86.98 / wrong 14.98 / none 15.70 (nearest; 28 px allows no m=8)',
  'shuffle m=14': '–',
  signflip: 'HPNN: key within ±0.5; unauthorised −73.22…−80.17 points',
  deeplock: 'Deep-Lock: wrong key = random guess (MNIST, F-MNIST, CIFAR-10)',
  advparams: 'AdvParams: −80.65…−87.91 points with 23–48 parameters',
  sealed: '– (keylock\'s)',
  'signflip+sealed': '–',
};

interface Row {
  arch: string;
  lock: string;
  keyed: number;
  /** Bit-identical to the reference (plain model, or trained model on shuffled digits)? */
  exact: string;
  device: string;
  bypass: number | undefined;
  bypassNote: string;
  noKey: number;
  notes: string;
}

const CHANCE_BOUND = 0.2;
/** Locks whose copied file must be near chance without the key (a check in every run, quick included). */
const STRONG = new Set(['signflip', 'deeplock', 'sealed', 'signflip+sealed']);

/** The published table, reproduced. */
export const publishedSection: Section = async (ctx) => {
  const { quick, progress } = ctx;
  const { train, test } = loadMnist();
  const enc = mnistSamples(train, 512);
  const vendorSeed = labelKey('published/vendor');
  const archs = ['mlp', 'cnn'] as const;
  // m = 1 is the control: the same recipe (no pixel shifts, same epochs) with the identity shuffle, i.e. what training with the key costs.
  const blocks = quick ? [4] : [1, 2, 4, 7, 14];
  const cases: { label: string; req: Omit<LockRequest, 'vendorSeed'> }[] = [
    { label: 'signflip', req: { schemes: ['signflip'] } },
    { label: 'deeplock', req: { schemes: ['deeplock'] } },
    { label: 'advparams', req: { schemes: ['advparams'], data: enc, seed: 1 } },
    { label: 'sealed', req: { schemes: ['sealed'] } },
    { label: 'signflip+sealed', req: { schemes: ['signflip', 'sealed'] } },
  ];
  const shuffleArchs = quick ? (['mlp'] as const) : archs;
  progress.plan(archs.length * (1 + cases.length) + shuffleArchs.length * blocks.length);
  const rows: Row[] = [];
  const checks: Check[] = [];
  const training: string[] = [];

  for (const arch of archs) {
    const plainOnnx = new Uint8Array(readFileSync(`${root}models/reference/mnist-${arch}.onnx`));
    const plain = await plainLogits(plainOnnx, test);
    const plainAcc = accuracyOf(plain, test.y);
    rows.push({ arch, lock: 'plain', keyed: plainAcc, exact: '–', device: '–', bypass: undefined, bypassNote: '', noKey: plainAcc, notes: '' });
    progress.tick(`published: ${arch} plain`);

    for (const c of cases) {
      const modelKey = labelKey(`published/${arch}/${c.label}`);
      const wrongKey = labelKey(`published/${arch}/${c.label}/wrong`);
      const res = await lockOnnx(plainOnnx, { ...c.req, vendorSeed, modelKey, modelId: `eval-${arch}-${c.label}` });
      const keyed = await keyedLogits(res.klm, modelKey, test);
      const bits = bitDiffs(keyed, plain);
      const wrong = await loadModel(res.klm, { modelKey: wrongKey });
      const detected = wrong.error instanceof KeyMismatchError && wrong.stats.runs === 0;
      const by = await bypassLogits(res.klm, wrongKey, test);
      const noKey = accuracyOf(await stolenLogits(res.locked, test), test.y);
      const adv = res.report.find((r) => /modified \d+ parameter/.test(r));
      const row: Row = {
        arch, lock: c.label, keyed: accuracyOf(keyed, test.y), exact: bits === 0 ? 'bit-identical' : `${bits} element(s) differ`,
        device: detected ? 'detected (no output)' : `NOT detected (${wrong.state})`,
        bypass: accuracyOf(by.logits, test.y), bypassNote: by.notes.join('; '), noKey,
        notes: adv ? adv.replace(/^advparams: /, '').replace(/ in \d+ step\(s\).*$/, '') : '',
      };
      rows.push(row);
      checks.push(check(`${arch} ${c.label}: correct key equals plain`, bits === 0, `${bits} of ${plain.length} logits differ in bits`));
      checks.push(check(`${arch} ${c.label}: wrong key detected`, detected, row.device));
      if (STRONG.has(c.label)) {
        checks.push(check(`${arch} ${c.label}: no key near chance`, noKey <= CHANCE_BOUND, `no key ${pct(noKey)} <= ${pct(CHANCE_BOUND)}`));
      }
      progress.tick(`published: ${arch} ${c.label}`);
    }
  }

  for (const arch of shuffleArchs) {
    for (const m of blocks) {
      const spec: ShuffleModelSpec = quick
        ? { arch, block: m, epochs: 1, limit: 2000, seed: ctx.seed }
        : { arch, block: m, epochs: SHUFFLE_EPOCHS, limit: TRAIN_SIZE, seed: ctx.seed };
      const modelKey = shuffleModelKey(spec);
      const wrongKey = labelKey(`published/${arch}/shuffle-m${m}/wrong`);
      const t = await shuffleTrained(ctx.cache, spec);
      training.push(`${arch} m=${m}: ${t.cached ? 'from the cache' : `trained in ${t.seconds.toFixed(0)} s`}`);
      const res = await lockTrainedWithShuffleKey(t.onnx, { modelKey, block: m, negpos: false, vendorSeed, modelId: `eval-${arch}-shuffle-m${m}` });
      const keyed = await keyedLogits(res.klm, modelKey, test);
      const key = mnistShuffleKey(modelKey, m, false);
      const reference = await plainLogits(t.onnx, shuffleMnistSet(test, key));
      wipeShuffleKey(key);
      const bits = bitDiffs(keyed, reference);
      const wrong = await loadModel(res.klm, { modelKey: wrongKey });
      const detected = wrong.error instanceof KeyMismatchError && wrong.stats.runs === 0;
      // The device with a wrong key: the same trained weights locked under the wrong key, so the key check passes and the runtime shuffles with the wrong permutation.
      const underWrong = await lockTrainedWithShuffleKey(t.onnx, { modelKey: wrongKey, block: m, negpos: false, vendorSeed, modelId: `eval-${arch}-shuffle-m${m}-wrong` });
      const wrongAcc = accuracyOf(await keyedLogits(underWrong.klm, wrongKey, test), test.y);
      const noKey = accuracyOf(await stolenLogits(res.locked, test), test.y);
      const lock = `shuffle m=${m}`;
      rows.push({
        arch, lock, keyed: accuracyOf(keyed, test.y), exact: bits === 0 ? 'bit-identical' : `${bits} element(s) differ`,
        device: detected ? 'detected (no output)' : `NOT detected (${wrong.state})`, bypass: wrongAcc,
        bypassNote: 'runtime shuffles with a wrong permutation', noKey,
        notes: m === 1 ? 'control' : quick ? `${spec.epochs} epoch, ${spec.limit} digits` : '',
      });
      checks.push(check(`${arch} ${lock}: correct key equals the trained model on shuffled digits`, bits === 0, `${bits} of ${reference.length} logits differ in bits`));
      checks.push(check(`${arch} ${lock}: wrong key detected`, detected, detected ? 'key check value' : wrong.state));
      progress.tick(`published: ${arch} ${lock} (${t.cached ? 'cached' : `trained ${t.seconds.toFixed(0)} s`})`);
    }
  }

  return render(rows, checks, training, quick);
};

function render(rows: Row[], checks: Check[], training: string[], quick: boolean): SectionResult {
  const order = ['plain', 'shuffle m=1', 'shuffle m=2', 'shuffle m=4', 'shuffle m=7', 'shuffle m=14', 'signflip', 'deeplock', 'advparams', 'sealed', 'signflip+sealed'];
  const sorted = [...rows].sort((a, b) => (a.arch === b.arch ? order.indexOf(a.lock) - order.indexOf(b.lock) : a.arch === 'mlp' ? -1 : 1));
  const plainOf = (arch: string): number => rows.find((r) => r.arch === arch && r.lock === 'plain')!.keyed;
  const lines = [
    '| model | lock | correct key | wrong key: device | wrong key, check bypassed | no key (copied file) | drop without key (points) | published (ResNet-18/CIFAR-10 for shuffle) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of sorted) {
    const keyed = r.lock === 'plain' ? pct(r.keyed) : `${pct(r.keyed)}${r.exact === 'bit-identical' ? ' (bit-identical)' : ` (${r.exact})`}`;
    const drop = r.lock === 'plain' ? '–' : ((r.keyed - r.noKey) * 100).toFixed(2);
    const bypass = r.bypass === undefined ? '–' : pct(r.bypass);
    lines.push(`| ${r.arch.toUpperCase()} | ${r.lock}${r.notes ? ` (${r.notes})` : ''} | ${keyed} | ${r.device} | ${bypass} | ${pct(r.noKey)} | ${drop} | ${PUBLISHED[r.lock] ?? '–'} |`);
  }
  const shuffleRows = rows.filter((r) => r.lock.startsWith('shuffle'));
  const svg = barChart({
    title: 'Accuracy on 2,000 held-out digits by lock',
    yLabel: 'accuracy (%)', yMin: 0, yMax: 100,
    categories: sorted.filter((r) => r.lock !== 'plain').map((r) => `${r.arch.toUpperCase()} ${r.lock.replace('signflip+sealed', 'signflip+sealed')}`),
    series: [
      { name: 'correct key', values: sorted.filter((r) => r.lock !== 'plain').map((r) => r.keyed * 100) },
      { name: 'wrong key (bypassed)', values: sorted.filter((r) => r.lock !== 'plain').map((r) => (r.bypass === undefined ? null : r.bypass * 100)) },
      { name: 'no key', values: sorted.filter((r) => r.lock !== 'plain').map((r) => r.noKey * 100) },
    ],
    refLines: [{ y: 10, label: 'chance' }],
    width: 1100,
  });
  const text = [
    '## The published table, reproduced',
    '',
    `Command: \`npm run eval\` (section \`published\`; \`npm run eval -- --only published\` runs it alone). Reference MLP and CNN, 2,000 held-out digits, onnxruntime-web 1.30.0 wasm through the device runtime.${quick ? ' **Quick mode:** shuffle trained for 1 epoch on 2,000 digits, MLP, m = 4 only.' : ''}`,
    `Shuffle models are trained with the key by \`trainWithShuffleKey\` (the reference recipe without pixel shifts, ${quick ? 1 : SHUFFLE_EPOCHS} epochs: ${training.join('; ')}). "Wrong key, check bypassed" forces a different key through the runtime's restore functions (sealed decrypted without its MAC check; sign-flip ±1 tensors from the wrong key; AdvParams' sealed key list does not open, so the weights stay perturbed); for shuffle the trained model is locked under the wrong key, so the real runtime shuffles with a wrong permutation. "No key" runs the locked file on plain digits with plain ORT.`,
    '',
    ...lines,
    '',
    `Plain accuracy: MLP ${pct(plainOf('mlp'))}, CNN ${pct(plainOf('cnn'))}.`,
    '',
    ...discussion(rows, shuffleRows),
    '',
    '![accuracy by lock](img/published.svg)',
  ];
  return { id: 'published', title: 'The published table, reproduced', markdown: text.join('\n'), svgs: { 'published.svg': svg }, checks };
}

function discussion(rows: Row[], shuffleRows: Row[]): string[] {
  const out: string[] = [];
  const archs = [...new Set(rows.map((r) => r.arch))];
  const p1 = (x: number): string => (x * 100).toFixed(1);
  const keyed = shuffleRows.filter((r) => r.lock !== 'shuffle m=1');
  if (keyed.length) {
    const per = archs.map((a) => {
      const rs = keyed.filter((r) => r.arch === a);
      if (!rs.length) return '';
      const ctl = shuffleRows.find((r) => r.arch === a && r.lock === 'shuffle m=1');
      const ms = rs.map((r) => r.lock.replace('shuffle m=', '')).join('/');
      return `${a.toUpperCase()} m = ${ms}: correct key ${rs.map((r) => p1(r.keyed)).join('/')}%${ctl ? ` (same recipe unshuffled: ${p1(ctl.keyed)}%)` : ''}, wrong permutation ${rs.map((r) => p1(r.bypass ?? NaN)).join('/')}%, no key ${rs.map((r) => p1(r.noKey)).join('/')}%`;
    }).filter(Boolean);
    const ms = [...new Set(keyed.map((r) => Number(r.lock.replace('shuffle m=', ''))))];
    const weak = ms.filter((m) => keyed.filter((r) => r.lock === `shuffle m=${m}`).every((r) => r.noKey > 0.5));
    const strongM = ms.filter((m) => keyed.filter((r) => r.lock === `shuffle m=${m}`).every((r) => r.noKey < 0.5));
    out.push(`- Shuffle, trained with the key: ${per.join('; ')}. The paper's ResNet-18 on CIFAR-10 falls to 20–34% without the key already at m = 2 and 4; here ${weak.length ? `m = ${weak.join(', ')} leave${weak.length === 1 ? 's' : ''} the copied file above 50% on ${archs.length > 1 ? 'both nets' : 'this net'}` : 'every block size brings the copied file below 50%'}${strongM.length ? `, and only m = ${strongM.join(', ')} bring${strongM.length === 1 ? 's' : ''} it below 50% on ${archs.length > 1 ? 'both' : 'it'}` : ''}. A plausible reason, not tested here: a 2×2 or 4×4 shuffle keeps each block's mean, and the blurred strokes of a 28×28 digit mostly survive that, while CIFAR-10's textures do not.`);
  }
  const strong = rows.filter((r) => STRONG.has(r.lock));
  const exact = rows.filter((r) => r.lock !== 'plain' && r.exact === 'bit-identical').length;
  const locked = rows.filter((r) => r.lock !== 'plain').length;
  const lo = Math.min(...strong.map((r) => r.noKey)), hi = Math.max(...strong.map((r) => r.noKey));
  const drops = strong.filter((r) => r.lock === 'signflip').map((r) => `${r.arch.toUpperCase()} ${((r.keyed - r.noKey) * 100).toFixed(1)}`);
  out.push(`- ${exact} of ${locked} locked rows give, with the correct key, logits bit-identical to their reference. Without the key sign-flip, Deep-Lock, sealed and their composition leave ${p1(lo)}–${p1(hi)}% (chance is 10%). Sign-flip's loss (${drops.join(', ')} points) exceeds HPNN's published 73–80 points.`);
  const adv = rows.filter((r) => r.lock === 'advparams');
  if (adv.length) out.push(`- AdvParams drops ${adv.map((r) => `the ${r.arch.toUpperCase()} by ${((r.keyed - r.noKey) * 100).toFixed(1)} points (${r.notes})`).join(' and ')}, in line with the published 80–88 points from 23–48 parameters.`);
  const detected = rows.filter((r) => r.lock !== 'plain').every((r) => r.device.startsWith('detected'));
  const helps = rows.filter((r) => r.bypass !== undefined && r.bypass > r.noKey + 0.02);
  out.push(`- ${detected ? 'A wrong key never reaches inference on the device: the key check value stops it in every row.' : 'In some rows the device did NOT detect a wrong key (see the table).'} Forcing a wrong key past the check ${helps.length ? `beats the copied file by more than 2 points only for ${helps.map((r) => `${r.arch.toUpperCase()} ${r.lock} (${pct(r.bypass!)} vs ${pct(r.noKey)})`).join(', ')}` : 'never beats the copied file by more than 2 points'}; ${helps.length ? 'elsewhere ' : ''}garbage weights, wrong sign bits or a wrong permutation are no better than no key.`);
  return out;
}
