/**
 * The conformance zoo's invariants and its section of docs/RESULTS.md.
 */
import type { ModelFormat } from '../../runtime/klm.ts';
import { check, type Check } from '../section.ts';
import { FORCED_KEYS, type ZooRow } from './measure.ts';

/** A model of the run, and whether its backend ran the plain file. */
export interface ZooModelInfo {
  name: string;
  path: string;
  format: ModelFormat;
  bytes: number;
  operators: number;
  customOps: string[];
  inputs: string;
  steps: number;
  stateful: boolean;
  /** Made by the zoo from a shipped model: what was changed. */
  derived?: string;
  /** The plain model did not run on its backend: the error. Its locks were not tried. */
  backendFailure?: string;
}

/** Everything a run found (docs/zoo.json). */
export interface ZooResult {
  quick: boolean;
  /** The models were picked by name (`--only`): the custom-op check applies only if one is among them. */
  only: boolean;
  date: string;
  seconds: number;
  roundingTolerance: number;
  models: ZooModelInfo[];
  rows: ZooRow[];
  checks: Check[];
  /** KNOWN_FAILURES rows of the run and whether each still fails. */
  knownFailures?: string[];
}

/**
 * Models `sealed` refuses today, with why: known failures, listed so the check
 * below still fails on any other model. Empty: sealed locks every model of the zoo.
 */
export const SEALED_KNOWN_REFUSALS: Readonly<Record<string, string>> = {};

/**
 * Model × lock rows that fail an invariant today, with why: listed so they are
 * reported rather than hidden, while the checks still fail on any other row.
 * A row listed here that no longer fails is reported as fixed.
 */
export const KNOWN_FAILURES: Readonly<Record<string, string>> = {};

const known = (x: ZooRow): string | undefined => KNOWN_FAILURES[`${x.model} ${x.lock}`];

/** Op names the lockers speak of in their refusals, besides the model's own. */
const LOCKER_OPS = /\b(Conv|Gemm|MatMul|Constant|CONV_2D|DEPTHWISE_CONV_2D|FULLY_CONNECTED|MUL|DEQUANTIZE|LSTM|GRU|If|Loop|Scan)\b/;
const DTYPE = /\b(b?float(16|32|64)|u?int(4|8|16|32|64)|bool|string|fp16|int8)\b/;
const QUOTED = /"[^"]+"|'[^']+'/;

/** A refusal reason that names what it refuses: a tensor or input (quoted), a dtype, or an operator. */
export function namesWhat(reason: string | undefined): boolean {
  return !!reason && (QUOTED.test(reason) || DTYPE.test(reason) || LOCKER_OPS.test(reason));
}

/** The invariants of a run. */
export function checkZoo(r: ZooResult): Check[] {
  const checks: Check[] = [];
  if (!r.quick && !r.only) {
    // The full run covers what the dev dependencies ship: at least 12 models, 4 of them TFLite.
    const shipped = r.models.filter((m) => !m.derived);
    const tfl = shipped.filter((m) => m.format === 'tflite').length;
    checks.push(check('the full run finds at least 12 shipped models, at least 4 TFLite', shipped.length >= 12 && tfl >= 4, `${shipped.length} models, ${tfl} TFLite`));
  }
  const locked = r.rows.filter((x) => x.outcome === 'locked');
  // Recomputed from the measures, not taken from `withKeyOk`: bit-identical, or a rounding case within its bound.
  const exact = (x: ZooRow): boolean => x.bitDiffs === 0 || (x.roundingBound !== undefined && x.maxAbsDiff !== undefined && x.maxAbsDiff <= x.roundingBound);
  const bad = locked.filter((x) => x.withKeyHalt === undefined && !exact(x));
  checks.push(check('with the key: every lock bit-identical (absorbed shuffle: within the rounding tolerance)', bad.length === 0,
    bad.length ? bad.map((x) => `${x.model} ${x.lock}: ${x.withKeyNote}`).join('; ') : `${locked.filter((x) => x.withKeyHalt === undefined).length} lock(s)`));
  const undetected = locked.filter((x) => x.wrongKeyError !== 'KeyMismatchError' || x.wrongKeySessions !== 0 || !x.wrongKeyRunRejected);
  checks.push(check('wrong key: KeyMismatchError before any backend session, run() rejects', undetected.length === 0,
    undetected.length ? undetected.map((x) => `${x.model} ${x.lock}: ${x.wrongKeyError}, ${x.wrongKeySessions} session(s), run rejected ${x.wrongKeyRunRejected}`).join('; ') : `${locked.length} lock(s)`));
  const refused = r.rows.filter((x) => x.outcome === 'refused' || x.outcome === 'error');
  const vague = refused.filter((x) => !known(x) && (x.outcome !== 'refused' || x.errorName !== 'UnsupportedModelError' || !namesWhat(x.reason)));
  checks.push(check('every refusal is an UnsupportedModelError naming a tensor, dtype or operator', vague.length === 0,
    vague.length ? vague.map((x) => `${x.model} ${x.lock}: ${x.errorName}: ${x.reason}`).join('; ') : `${refused.length} refusal(s)`));
  const run = r.models.filter((m) => !m.backendFailure);
  const sealedMissing = run.filter((m) => !(m.name in SEALED_KNOWN_REFUSALS) && !r.rows.some((x) => x.model === m.name && x.lock === 'sealed' && x.outcome === 'locked'));
  checks.push(check('sealed locks every model its backend runs', sealedMissing.length === 0,
    sealedMissing.length ? sealedMissing.map((m) => m.name).join(', ') : `${run.length} model(s)`));
  const unrunnable = locked.filter((x) => x.withKeyHalt !== undefined);
  if (unrunnable.length) {
    const untyped = unrunnable.filter((x) => !/^(BackendUnavailableError|UnsupportedModelError): ./.test(x.withKeyHalt!));
    checks.push(check('a locked model its backend cannot run: the load with the right key halts with BackendUnavailableError or UnsupportedModelError', untyped.length === 0,
      untyped.length ? untyped.map((x) => `${x.model} ${x.lock}: ${x.withKeyHalt}`).join('; ') : `${unrunnable.length} lock(s)`));
  }
  const custom = r.models.filter((m) => m.customOps.length);
  if (!r.only || custom.length) {
    const names = (m: ZooModelInfo, text: string | undefined): boolean => !!text && m.customOps.some((op) => text.includes(op.split(':').pop()!));
    const unreported = custom.filter((m) => !names(m, m.backendFailure) || r.rows.some((x) => x.model === m.name && x.outcome === 'locked' && !names(m, x.withKeyHalt)));
    checks.push(check('a model with a custom op is reported as one its backend cannot run, naming the op (plain file and every locked load)', custom.length > 0 && unreported.length === 0,
      custom.length ? (unreported.length ? unreported.map((m) => `${m.name}: ${m.backendFailure ?? 'ran'}`).join('; ') : custom.map((m) => `${m.name}: ${m.customOps.join(', ')}`).join('; ')) : 'no custom-op model in the run'));
  }
  return checks;
}

/** The rows of KNOWN_FAILURES in a run: whether each still fails. */
export function knownFailureNotes(r: Pick<ZooResult, 'rows'>): string[] {
  return r.rows.filter(known).map((x) => `${x.model} ${x.lock}: ${x.outcome === 'error' ? `still fails (${x.errorName}: ${x.reason}); ${known(x)}` : `no longer fails (${x.outcome}): remove it from KNOWN_FAILURES`}`);
}

function zooCaseCount(r: ZooResult): string {
  const per = new Set(r.models.map((m) => r.rows.filter((x) => x.model === m.name).length));
  return [...per].join(' or ');
}

const pct = (x: number): string => `${(100 * x).toFixed(0)}%`;
const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function withKey(x: ZooRow): string {
  // onnxruntime's messages put the cause after ERROR_MESSAGE; keep the error class and the cause.
  if (x.withKeyHalt !== undefined) return `load halts: ${cell(x.withKeyHalt.replace(/^(\w+): .*ERROR_MESSAGE: /, '$1: … ').slice(0, 160))}`;
  if (x.bitDiffs === undefined) return `**${x.withKeyNote}**`;
  if (x.bitDiffs === 0) return `bit-identical (${x.elements} values)`;
  return x.withKeyOk ? `float rounding: ${x.bitDiffs}/${x.elements} differ, max \\|Δ\\| ${x.maxAbsDiff!.toExponential(1)} (≤ ${x.roundingBound!.toExponential(1)})` : `**MISMATCH**: ${x.withKeyNote}`;
}

function moved(d: { failure?: string; nonFinite?: number; elements?: number; relL2?: number; argmax?: number }): string {
  if (d.failure) return `does not run (${cell(d.failure.slice(0, 90))})`;
  const parts: string[] = [];
  if (d.nonFinite) parts.push(d.nonFinite === d.elements ? `all ${d.elements} outputs NaN/±Inf` : `${d.nonFinite}/${d.elements} outputs NaN/±Inf`);
  const l2 = d.relL2;
  if (l2 !== undefined) parts.push(`rel. L2 ${!Number.isFinite(l2) ? '∞' : l2 >= 1000 ? l2.toExponential(1) : l2.toFixed(2)}${d.nonFinite ? ' (finite ones)' : ''}`);
  if (d.argmax !== undefined) parts.push(`arg-max agrees ${pct(d.argmax)}`);
  return parts.join(', ');
}

const noKey = (x: ZooRow): string => (x.noKeyFailure === undefined && x.noKeyElements === undefined ? '–' : moved({ failure: x.noKeyFailure, nonFinite: x.noKeyNonFinite, elements: x.noKeyElements, relL2: x.noKeyRelL2, argmax: x.noKeyArgmax }));

/** The section's markdown: how it was made, the models, the table, the invariants. */
export function renderZoo(r: ZooResult): string {
  const shipped = r.models.filter((m) => !m.derived);
  const nOnnx = shipped.filter((m) => m.format === 'onnx').length;
  const derived = r.models.length - shipped.length;
  const locked = r.rows.filter((x) => x.outcome === 'locked').length;
  const refused = r.rows.filter((x) => x.outcome === 'refused').length;
  const errors = r.rows.filter((x) => x.outcome === 'error').length;
  const skipped = r.rows.filter((x) => x.outcome === 'skipped').length;
  const lines: string[] = [
    `Command: \`npm run zoo${r.quick ? ' -- --quick' : ''}\` (eval/zoo.ts; ${r.date.slice(0, 10)}, ${r.seconds.toFixed(0)} s on a shared 2-core machine under load; rows also in docs/zoo.json).`,
    `${shipped.length} shipped models (${nOnnx} ONNX, ${shipped.length - nOnnx} TFLite)${derived ? ` and ${derived} made from one for the custom-op check` : ''}; `
      + `${r.rows.length} model × lock cases (${zooCaseCount(r)} locks per model): `
      + `${locked} locked, ${refused} refused with UnsupportedModelError, ${errors} other error(s), ${skipped} not tried. `
      + 'Backends: onnxruntime-web 1.30.0 wasm for ONNX, @tensorflow/tfjs-tflite for TFLite, the same for the plain and the locked file. '
      + '*With the key*: `loadModel` with the model key, outputs over the whole input sequence against the plain file\'s, bit for bit '
      + `(absorbed shuffle re-associates the first layer's sums: accepted up to max |Δ| ${r.roundingTolerance} × the largest plain output). `
      + '*Wrong key*: the error of `loadModel` with another key, and the backend sessions it created (a counting wrapper registered with `registerBackend`). '
      + '*Without the key*: the copied locked file run plainly (signflip key inputs fed with ones), relative L2 distance of all outputs from the plain ones, '
      + `arg-max agreement on class outputs (last axis ≥ 2). *Wrong key forced through*: what a device that skipped the key check value and MACs would compute with a wrong key, the least moved of ${FORCED_KEYS} seeded wrong keys `
      + '(every lock undone and every hook made with it, eval/harness.ts `bypassRunner`), same measures. advparams gets the model\'s own inputs labelled by the plain model\'s arg-max (no labelled data ships with these models).',
    '',
    '| model | format | size | ops | inputs (seeded) | plain file on its backend |',
    '| --- | --- | --- | --- | --- | --- |',
  ];
  for (const m of r.models) {
    const run = m.backendFailure ? `**cannot run** (locks still tried): ${cell(m.backendFailure)}` : `runs (${m.steps} step(s)${m.stateful ? ', state fed back' : ''})`;
    lines.push(`| ${m.name} | ${m.format} | ${(m.bytes / 1e6).toFixed(2)} MB | ${m.operators}${m.customOps.length ? ` (custom: ${m.customOps.join(', ')})` : ''} | ${cell(m.inputs)} | ${run} |`);
  }
  lines.push('', '| lock | format | locked | refused | other error | not tried | median lock ms (locked) | slowest lock ms |', '| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const [lock, format] of [...new Set(r.rows.map((x) => `${x.lock}\u0000${x.format}`))].map((k) => k.split('\u0000'))) {
    const rs = r.rows.filter((x) => x.lock === lock && x.format === format);
    const n = (o: ZooRow['outcome']): number => rs.filter((x) => x.outcome === o).length;
    const ms = rs.filter((x) => x.outcome === 'locked').map((x) => x.lockMs).sort((a, b) => a - b);
    const med = ms.length ? (ms.length % 2 ? ms[ms.length >> 1] : (ms[ms.length / 2 - 1] + ms[ms.length / 2]) / 2).toFixed(0) : '–';
    lines.push(`| ${lock} | ${format} | ${n('locked')} | ${n('refused')} | ${n('error')} | ${n('skipped')} | ${med} | ${ms.length ? ms[ms.length - 1].toFixed(0) : '–'} |`);
  }
  lines.push('', '| model | lock | outcome | with the key | wrong key | without the key | wrong key forced through | lock ms | case ms |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const x of r.rows) {
    if (x.outcome !== 'locked') {
      const what = x.outcome === 'skipped' ? 'not tried' : x.outcome === 'refused' ? 'refused' : `**${x.errorName}**${known(x) ? ' (known failure)' : ''}`;
      lines.push(`| ${x.model} | ${x.lock}${x.note ? ` (${cell(x.note)})` : ''} | ${what}: ${cell(x.reason ?? '')} | – | – | – | – | ${x.lockMs.toFixed(0)} | ${x.totalMs.toFixed(0)} |`);
      continue;
    }
    const wk = `${x.wrongKeyError}${x.wrongKeySessions === 0 ? ', before any session' : `, **${x.wrongKeySessions} session(s)**`}`;
    lines.push(`| ${x.model} | ${x.lock}${x.note ? ` (${cell(x.note)})` : ''} | locked | ${withKey(x)} | ${wk} | ${noKey(x)} | ${x.forced ? moved(x.forced) : '–'} | ${x.lockMs.toFixed(0)} | ${x.totalMs.toFixed(0)} |`);
  }
  lines.push('', 'Invariants checked by the run (and by `test/zoo.test.ts` on the quick subset):', '');
  for (const c of r.checks) lines.push(`- ${c.ok ? 'ok' : '**FAILED**'}: ${c.name} (${cell(c.detail.slice(0, 300))})`);
  const notes = knownFailureNotes(r);
  if (notes.length) lines.push('', 'Known failures (`KNOWN_FAILURES` in eval/zoo/report.ts; left out of the checks above, which fail on any other row):', '', ...notes.map((n) => `- ${cell(n)}`));
  return lines.join('\n');
}
