/**
 * One model × lock of the conformance zoo, measured as a user meets it: lock
 * through `keylock/vendor`'s `lockModel`, load through the runtime's
 * `loadModel` with the model key, compare with the plain file under the same
 * backend (onnxruntime-web wasm for ONNX, tfjs-tflite for TFLite).
 *
 * The backend is wrapped (registerBackend, the public hook for a product's own
 * engine) to count the sessions it creates: a wrong key is "detected before
 * inference" only if the load halted with no session made and `run()` rejects.
 */
import { KeylockError, UnsupportedModelError } from '../../keystore/errors.ts';
import { sha256 } from '../../keystore/nacl.ts';
import { lockModel, type LockRequest } from '../../models/index.ts';
import { decodeModel, encodeModel, normalizeModel } from '../../models/onnx/codec.ts';
import { readTflite } from '../../models/tflite/codec.ts';
import { loadModel, registerBackend } from '../../runtime/index.ts';
import type { Backend, BackendSession } from '../../runtime/backend.ts';
import type { ModelFormat } from '../../runtime/klm.ts';
import { createOrtSession } from '../../runtime/ort.ts';
import type { TensorData, TensorMap } from '../../runtime/tensor.ts';
import { createTfliteSession } from '../../runtime/tflite.ts';
import { bypassRunner, stolenFeeds } from '../harness.ts';
import { prng, type ZooModel } from './models.ts';

/** A lock the zoo tries on every model of a format. */
export interface ZooCase {
  label: string;
  req: Omit<LockRequest, 'vendorSeed' | 'modelKey' | 'modelId'>;
  /** Outputs with the key may differ by float rounding (absorbed shuffle re-associates the first layer's sums). */
  rounding?: boolean;
}

/**
 * The locks tried: every scheme, its modes and variants, and one stack. Not
 * tried: shuffle with `trainedWithKey`, which is for a model trained under the
 * key (a shipped model is not, so its outputs with the key are not the plain
 * model's by design).
 */
export function zooCases(format: ModelFormat): ZooCase[] {
  return [
    { label: 'sealed', req: { schemes: ['sealed'] } },
    { label: 'sealed (xsalsa20-poly1305)', req: { schemes: ['sealed'], sealedCipher: 'xsalsa20-poly1305' } },
    { label: 'sealed (aes-256-gcm)', req: { schemes: ['sealed'], sealedCipher: 'aes-256-gcm' } },
    { label: 'deeplock', req: { schemes: ['deeplock'] } },
    { label: 'signflip (input)', req: { schemes: ['signflip'], signflipMode: 'input' } },
    { label: 'signflip (fold)', req: { schemes: ['signflip'], signflipMode: 'fold' } },
    { label: 'signflip (fold, 8 MAC units)', req: { schemes: ['signflip'], signflipMode: 'fold', units: 8 } },
    { label: 'shuffle m=4 (absorbed)', req: { schemes: ['shuffle'], block: 4 }, rounding: true },
    { label: 'shuffle m=4 negpos (absorbed)', req: { schemes: ['shuffle'], block: 4, negpos: true }, rounding: true },
    { label: 'advparams', req: { schemes: ['advparams'], seed: 1 } },
    { label: 'signflip+deeplock+sealed', req: { schemes: ['signflip', 'deeplock', 'sealed'], signflipMode: format === 'tflite' ? 'fold' : 'input' } },
  ];
}

/** What happened to one model × lock. */
export interface ZooRow {
  model: string;
  format: ModelFormat;
  lock: string;
  /** `locked`, `refused` (UnsupportedModelError), `error` (anything else), `skipped` (the zoo did not try; `reason` says why). */
  outcome: 'locked' | 'refused' | 'error' | 'skipped';
  /** Refusal or error: the error's class name and message; skipped: why. */
  errorName?: string;
  reason?: string;
  lockMs: number;
  /** Whole case (lock, loads, runs), ms. */
  totalMs: number;
  /** With the key: elements whose bits differ from the plain model's, of `elements`. */
  bitDiffs?: number;
  elements?: number;
  maxAbsDiff?: number;
  /** Rounding cases: the largest |with key − plain| accepted (roundingBound). */
  roundingBound?: number;
  /** With the key: bit-identical, or (rounding cases) within `roundingBound`. */
  withKeyOk?: boolean;
  withKeyNote?: string;
  /** Backend cannot run the model: how the load with the right key halted (error class and message). */
  withKeyHalt?: string;
  /** Wrong key: the load's error class, sessions created before it halted, and whether run() rejected. */
  wrongKeyError?: string;
  wrongKeySessions?: number;
  wrongKeyRunRejected?: boolean;
  /** Without the key (the copied locked file run plainly): ‖out − plain‖₂ / ‖plain‖₂ over all float outputs. */
  noKeyRelL2?: number;
  /** Without the key: arg-max agreement with the plain model on class outputs (last axis ≥ 2), when there are any. */
  noKeyArgmax?: number;
  /** Without the key: non-finite output elements, of `noKeyElements`. */
  noKeyNonFinite?: number;
  noKeyElements?: number;
  /** Without the key: the copied file did not run at all (the backend's error). */
  noKeyFailure?: string;
  /**
   * Wrong keys forced through the restore and the hooks, key check value and MACs skipped (eval/harness.ts
   * bypassRunner), the same measures as without the key: of FORCED_KEYS keys, the one that moved the outputs least.
   */
  forced?: Forced;
  /** What the zoo did to the model before locking it (shuffle: dynamic image axes pinned). */
  note?: string;
  /** Lock report lines (what each lock did), each cut to 240 characters. */
  report?: string[];
}

/** How far one forced wrong key moved the outputs (see ZooRow.forced). */
export interface Forced {
  relL2?: number;
  argmax?: number;
  nonFinite: number;
  elements: number;
  /** The wrong keys tried; this is the least moved of them. */
  keys: number;
  /** The locked file did not run under this key (the backend's error). */
  failure?: string;
}

/** Wrong keys forced through per lock. */
export const FORCED_KEYS = 3;

/** Orders forced outcomes least moved first: one that ran before one that failed, fewer NaN/±Inf, smaller relative L2, more arg-max agreement. */
function leastMovedFirst(a: Forced, b: Forced): number {
  return Number(a.failure !== undefined) - Number(b.failure !== undefined)
    || a.nonFinite - b.nonFinite
    || (a.relL2 ?? Infinity) - (b.relL2 ?? Infinity)
    || (b.argmax ?? 0) - (a.argmax ?? 0);
}

/**
 * Absorbed shuffle re-associates the first layer's float32 sums, so its outputs
 * with the key may differ from the plain model's by rounding: accepted up to
 * this fraction of the largest plain output magnitude (on the MNIST MLP,
 * absorbed shuffle moves the logits by at most 1e-5: docs/RESULTS.md "The locks").
 */
export const ROUNDING_TOLERANCE = 1e-4;

/** The largest |with key − plain| accepted for a rounding case: ROUNDING_TOLERANCE of the largest |plain| output (at least 1e-6). */
export function roundingBound(plain: TensorMap[]): number {
  let m = 0;
  for (const d of floats(plain)) for (let i = 0; i < d.length; i++) if (Math.abs(d[i]) > m) m = Math.abs(d[i]);
  return Math.max(1e-6, ROUNDING_TOLERANCE * m);
}

/** Runs a model's input sequence on a session, feeding a stateful model its own state. */
export async function runSequence(run: (x: TensorMap) => Promise<TensorMap>, m: ZooModel, feed: (x: TensorMap) => TensorMap = (x) => x): Promise<TensorMap[]> {
  const outs: TensorMap[] = [];
  let carry: TensorMap = {};
  for (const x of m.inputs) {
    const out = await run(feed({ ...x, ...carry }));
    outs.push(out);
    if (m.state) {
      carry = {};
      for (const [o, i] of Object.entries(m.state)) if (out[o]) carry[i] = out[o];
    }
  }
  return outs;
}

/** A plain session of `bytes` on the format's backend. */
export function plainSession(format: ModelFormat, bytes: Uint8Array): Promise<BackendSession> {
  return format === 'tflite' ? createTfliteSession(bytes) : createOrtSession(bytes);
}

/** The backend a user of the format gets by default, wrapped to count the sessions it creates. */
export const counted = { onnx: 0, tflite: 0 };
const wrap = (format: ModelFormat, create: Backend['create']): Backend => ({
  formats: [format],
  create: (model, opts) => {
    counted[format]++;
    return create(model, opts);
  },
});
registerBackend('zoo-wasm', wrap('onnx', createOrtSession));
registerBackend('zoo-tflite', wrap('tflite', createTfliteSession));
const BACKEND = { onnx: 'zoo-wasm', tflite: 'zoo-tflite' } as const;

function floats(outs: TensorMap[]): Float32Array[] {
  const r: Float32Array[] = [];
  for (const o of outs) for (const k of Object.keys(o).sort()) if (o[k].data instanceof Float32Array) r.push(o[k].data as Float32Array);
  return r;
}

/**
 * Every output of `a` against `b`, step by step and by name: elements whose
 * bits differ (any dtype: float32 by bit pattern, so −0 ≠ +0 and NaN payloads
 * count), max |a − b| over numeric elements (Infinity when non-finite), count.
 */
export function compare(a: TensorMap[], b: TensorMap[]): { bits: number; max: number; n: number } {
  if (a.length !== b.length) throw new Error(`expected ${b.length} steps of outputs, got ${a.length}`);
  let bits = 0, max = 0, n = 0;
  for (let s = 0; s < b.length; s++) {
    const names = Object.keys(b[s]).sort();
    if (Object.keys(a[s]).sort().join() !== names.join()) throw new Error(`step ${s}: expected outputs ${names.join(', ')}, got ${Object.keys(a[s]).sort().join(', ')}`);
    for (const k of names) {
      const x = a[s][k].data, y = b[s][k].data;
      if (x.length !== y.length || a[s][k].dtype !== b[s][k].dtype) throw new Error(`output "${k}": expected ${b[s][k].dtype} × ${y.length}, got ${a[s][k].dtype} × ${x.length}`);
      const xb = x instanceof Float32Array ? new Uint32Array(x.buffer, x.byteOffset, x.length) : x;
      const yb = y instanceof Float32Array ? new Uint32Array(y.buffer, y.byteOffset, y.length) : y;
      for (let i = 0; i < y.length; i++) {
        n++;
        if (xb[i] !== yb[i]) bits++;
        const d = Math.abs(Number(x[i]) - Number(y[i]));
        if (!(d <= max)) max = Number.isFinite(d) ? d : Infinity;
      }
    }
  }
  return { bits, max, n };
}

/** How far outputs moved from the plain model's: relative L2, arg-max agreement on class axes, non-finite count. */
export function divergence(a: TensorMap[], b: TensorMap[]): { relL2?: number; argmax?: number; nonFinite: number; elements: number } {
  let num = 0, den = 0, nonFinite = 0, rows = 0, agree = 0, elements = 0;
  for (let s = 0; s < b.length; s++) {
    for (const k of Object.keys(b[s])) {
      const y = b[s][k], x = a[s][k];
      if (!(y.data instanceof Float32Array) || !x) continue;
      const xd = x.data as Float32Array, yd = y.data as Float32Array;
      for (let i = 0; i < yd.length; i++) {
        elements++;
        if (!Number.isFinite(xd[i])) { nonFinite++; continue; }
        num += (xd[i] - yd[i]) ** 2;
        den += yd[i] ** 2;
      }
      const kdim = y.dims[y.dims.length - 1];
      if (kdim >= 2 && isClassOutput(k, y)) {
        for (let r = 0; r < yd.length / kdim; r++) {
          rows++;
          // A row holding NaN or ±Inf predicts nothing: it counts as disagreeing.
          if (xd.subarray(r * kdim, (r + 1) * kdim).every(Number.isFinite) && argmaxAt(xd, r * kdim, kdim) === argmaxAt(yd, r * kdim, kdim)) agree++;
        }
      }
    }
  }
  // Over the finite outputs only; undefined when none is finite.
  const relL2 = nonFinite === elements ? undefined : den > 0 ? Math.sqrt(num / den) : (num > 0 ? Infinity : 0);
  return { relL2, argmax: rows ? agree / rows : undefined, nonFinite, elements };
}

/** A class output: scores over a last axis of 2..100,000 classes (a softmax or logits), not a feature map or state. */
function isClassOutput(name: string, t: TensorData): boolean {
  return !/^(hn|cn|h|c)$/.test(name) && t.dims.length >= 2 && t.dims.length <= 3 && t.dims[t.dims.length - 1] <= 100_000;
}

function argmaxAt(d: Float32Array, off: number, k: number): number {
  let b = 0;
  for (let j = 1; j < k; j++) if (d[off + j] > d[off + b]) b = j;
  return b;
}

/** The model's operators, and those of a custom domain/code (ONNX: domain outside the standard ones; TFLite: CUSTOM). */
export function operatorsOf(m: { format: ModelFormat; bytes: Uint8Array }): { ops: string[]; custom: string[] } {
  const ops = new Set<string>();
  const custom = new Set<string>();
  if (m.format === 'onnx') {
    const model = decodeModel(normalizeModel(m.bytes));
    const walk = (nodes: typeof model.graph.node): void => {
      for (const n of nodes) {
        const d = n.domain ?? '';
        const name = d && d !== 'ai.onnx' ? `${d}:${n.op_type}` : n.op_type ?? '';
        ops.add(name);
        if (d && !['ai.onnx', 'ai.onnx.ml', 'com.microsoft'].includes(d)) custom.add(name);
        for (const a of n.attribute) {
          if (a.g) walk(a.g.node);
          for (const g of a.graphs ?? []) walk(g.node);
        }
      }
    };
    walk(model.graph.node);
  } else {
    for (const g of readTflite(m.bytes).subgraphs) {
      for (const o of g.operators) {
        ops.add(o.op);
        if (o.op.startsWith('CUSTOM')) custom.add(o.op);
      }
    }
  }
  return { ops: [...ops].sort(), custom: [...custom].sort() };
}

/** The model key of a case: derived from its names, so re-runs lock the same way. */
export function caseKey(model: string, lock: string): Uint8Array {
  return sha256(new TextEncoder().encode(`keylock/eval/zoo/${model}/${lock}`));
}

const errText = (e: unknown): { name: string; message: string } => ({ name: (e as Error)?.name ?? 'Error', message: (e as Error)?.message ?? String(e) });

/**
 * The encryption set advparams needs, for a model without labelled data: the
 * model's own inputs labelled with the plain model's arg-max (its first class
 * output). undefined when the model has no class output (a sigmoid score [1, 1]).
 */
export function pseudoLabelled(m: ZooModel, plain: TensorMap[]): { inputs: TensorMap; label: number }[] | undefined {
  const out = plain[0] && Object.entries(plain[0]).find(([k, t]) => t.dims[t.dims.length - 1] >= 2 && isClassOutput(k, t));
  if (!out) return undefined;
  const [name] = out;
  return m.inputs.map((inputs, i) => {
    const t = plain[i][name];
    const k = t.dims[t.dims.length - 1];
    return { inputs, label: argmaxAt(t.data as Float32Array, 0, k) };
  });
}

/**
 * For shuffle, an ONNX image model whose input has dynamic axes gets them fixed
 * to the size the zoo runs (as a user deploying at one size would), so the
 * locker judges its first layer rather than the missing H and W. Returns the
 * bytes to lock and a note, or undefined when there is nothing to pin.
 */
export function pinnedForShuffle(m: ZooModel): { bytes: Uint8Array; note: string } | undefined {
  if (m.format !== 'onnx') return undefined;
  const model = decodeModel(normalizeModel(m.bytes));
  const inits = new Set(model.graph.initializer.map((t) => t.name));
  const inputs = model.graph.input.filter((v) => !inits.has(v.name ?? ''));
  const dims = inputs.length === 1 ? inputs[0].type?.tensor_type?.shape?.dim : undefined;
  const feed = inputs.length === 1 ? m.inputs[0][inputs[0].name ?? ''] : undefined;
  if (!dims || !feed || dims.length !== 4 || feed.dims.length !== 4 || dims.every((d) => Number(d.dim_value ?? 0) > 0)) return undefined;
  dims.forEach((d, i) => {
    d.dim_value = feed.dims[i];
    delete d.dim_param;
  });
  return { bytes: encodeModel(model), note: `input '${inputs[0].name}' pinned to [${feed.dims.join(',')}]` };
}

/**
 * Measures one model × lock. `plain` holds the plain model's outputs on the
 * same backend, or is undefined when the backend cannot run the plain model:
 * then the lock is still tried (a vendor may lock a model its devices cannot
 * run) and the row records how the load with the right key halts.
 */
export async function measureCase(m: ZooModel, c: ZooCase, plain: TensorMap[] | undefined, vendorSeed: Uint8Array): Promise<ZooRow> {
  const t0 = performance.now();
  const row: ZooRow = { model: m.name, format: m.format, lock: c.label, outcome: 'locked', lockMs: 0, totalMs: 0 };
  const req: LockRequest & { format: ModelFormat } = { ...c.req, format: m.format, vendorSeed, modelKey: caseKey(m.name, c.label), modelId: `zoo-${m.name}` };
  if (c.req.schemes.includes('advparams') && !plain) {
    return { ...row, outcome: 'skipped', reason: 'no labels: the backend cannot run the plain model to label the encryption set', totalMs: performance.now() - t0 };
  }
  if (plain && c.req.schemes.includes('advparams')) {
    const data = pseudoLabelled(m, plain);
    if (!data) {
      const o = Object.entries(plain[0]).map(([k, t]) => `"${k}" [${t.dims.join(',')}]`).join(', ');
      return { ...row, outcome: 'skipped', reason: `no class output to take labels from (outputs ${o}); advparams needs labelled data and class scores`, totalMs: performance.now() - t0 };
    }
    req.data = data;
    // advparams runs its encryption set in batches (256 by default); these models declare a fixed batch of 1.
    req.advparams = { ...req.advparams, batch: 1 };
  }
  const pinned = c.req.schemes.includes('shuffle') ? pinnedForShuffle(m) : undefined;
  if (pinned) row.note = pinned.note;
  let res;
  try {
    res = await lockModel(pinned?.bytes ?? m.bytes, req);
  } catch (e) {
    const { name, message } = errText(e);
    return { ...row, outcome: e instanceof UnsupportedModelError ? 'refused' : 'error', errorName: name, reason: message, lockMs: performance.now() - t0, totalMs: performance.now() - t0 };
  }
  row.lockMs = performance.now() - t0;
  row.report = res.report.map((l) => (l.length > 240 ? `${l.slice(0, 239)}…` : l));

  // With the key.
  const model = await loadModel(res.klm, { modelKey: res.modelKey, backend: BACKEND[m.format] });
  if (!plain) {
    // The backend cannot run this model: the device's load must halt, with a typed error.
    row.withKeyHalt = model.state === 'ready' ? 'none: the model loaded' : `${model.error?.name}: ${model.error?.message.split('\n')[0].slice(0, 240)}`;
    await model.release();
  } else if (model.state !== 'ready') {
    row.withKeyOk = false;
    row.withKeyNote = `halted with the right key: ${model.error?.name}: ${model.error?.message}`;
  } else {
    try {
      const outs = await runSequence((x) => model.run(x), m);
      const d = compare(outs, plain);
      Object.assign(row, { bitDiffs: d.bits, elements: d.n, maxAbsDiff: d.max });
      if (c.rounding) row.roundingBound = roundingBound(plain);
      row.withKeyOk = d.bits === 0 || (c.rounding === true && d.max <= row.roundingBound!);
      row.withKeyNote = d.bits === 0 ? 'bit-identical' : `${d.bits} of ${d.n} differ, max |Δ| ${d.max.toExponential(2)}`;
    } catch (e) {
      row.withKeyOk = false;
      row.withKeyNote = `run failed with the right key: ${errText(e).name}: ${errText(e).message}`;
    } finally {
      await model.release();
    }
  }

  // A wrong key: a fresh seeded key that is not the model's.
  const r = prng(m.name.length * 7919 + c.label.length);
  const wrongKey = Uint8Array.from({ length: 32 }, () => Math.floor(r() * 256));
  const before = counted[m.format];
  const wrong = await loadModel(res.klm, { modelKey: wrongKey, backend: BACKEND[m.format] });
  row.wrongKeySessions = counted[m.format] - before;
  row.wrongKeyError = wrong.state === 'ready' ? 'none: the model loaded' : (wrong.error as KeylockError | undefined)?.name ?? wrong.state;
  try {
    await wrong.run(m.inputs[0]);
    row.wrongKeyRunRejected = false;
  } catch {
    row.wrongKeyRunRejected = true;
  }
  await wrong.release();
  if (!plain) {
    row.totalMs = performance.now() - t0;
    return row;
  }

  // Without the key: the copied locked file, run plainly (key inputs, if any, fed with ones).
  try {
    const s = await plainSession(m.format, res.locked);
    try {
      const outs = await runSequence((x) => s.run(x), m, (x) => stolenFeeds(s, x));
      const d = divergence(outs, plain);
      Object.assign(row, { noKeyRelL2: d.relL2, noKeyArgmax: d.argmax, noKeyNonFinite: d.nonFinite, noKeyElements: d.elements });
    } finally {
      await s.release();
    }
  } catch (e) {
    row.noKeyFailure = `${errText(e).name}: ${errText(e).message.split('\n')[0].slice(0, 160)}`;
  }

  // Wrong keys forced through: what a device that skipped the key check value and MACs would compute.
  // FORCED_KEYS keys (this case's wrong key and the next ones of its stream); the row keeps the one that
  // moved the outputs least, the case most favourable to someone holding a wrong key.
  const tried: Forced[] = [];
  for (let k = 0; k < FORCED_KEYS; k++) {
    const key = k === 0 ? wrongKey : Uint8Array.from({ length: 32 }, () => Math.floor(r() * 256));
    try {
      const b = await bypassRunner(res.klm, key, (bytes) => plainSession(m.format, bytes));
      try {
        const d = divergence(await runSequence((x) => b.run(x), m), plain);
        tried.push({ relL2: d.relL2, argmax: d.argmax, nonFinite: d.nonFinite, elements: d.elements, keys: FORCED_KEYS });
      } finally {
        await b.release();
      }
    } catch (e) {
      tried.push({ nonFinite: 0, elements: 0, keys: FORCED_KEYS, failure: `${errText(e).name}: ${errText(e).message.split('\n')[0].slice(0, 160)}` });
    }
  }
  row.forced = tried.sort(leastMovedFirst)[0];
  row.totalMs = performance.now() - t0;
  return row;
}
