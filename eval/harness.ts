/**
 * Measuring helpers shared by the evaluation sections: seeded keys, MNIST
 * accuracy through the device runtime (with the key), through a runtime whose
 * key check is bypassed (a wrong key forced through the restore functions), and
 * through plain onnxruntime-web on the copied locked file (no key at all).
 */
import { sha256 } from '../keystore/nacl.ts';
import { openKlm } from '../runtime/klm.ts';
import { restoreAdvparams } from '../runtime/keys/advparams.ts';
import { restoreDeeplock } from '../runtime/keys/deeplock.ts';
import { restoreSealed } from '../runtime/keys/sealed.ts';
import type { ApplyContext } from '../runtime/keys/hooks.ts';
import { restoreSignflip } from '../runtime/keys/signflip.ts';
import { loadModel } from '../runtime/load.ts';
import { runHooks } from '../runtime/keys/index.ts';
import { createOrtSession } from '../runtime/ort.ts';
import type { BackendSession } from '../runtime/backend.ts';
import type { TensorMap } from '../runtime/tensor.ts';
import { PIXELS, type MnistSet } from '../models/train/mnist.ts';

/** A 32-byte key derived from a label: the evaluation's keys are the same on every run. */
export function labelKey(label: string): Uint8Array {
  return sha256(new TextEncoder().encode(`keylock/eval/${label}`));
}

/** Digits per runtime call. */
export const EVAL_BATCH = 500;

/** Runs `run` over `set` in batches and returns the logits, [n,10]. */
export async function logitsOf(set: MnistSet, run: (x: TensorMap) => Promise<TensorMap>): Promise<Float32Array> {
  const out = new Float32Array(set.n * 10);
  for (let i = 0; i < set.n; i += EVAL_BATCH) {
    const k = Math.min(EVAL_BATCH, set.n - i);
    const r = await run({ input: { dtype: 'float32', dims: [k, 1, 28, 28], data: set.x.slice(i * PIXELS, (i + k) * PIXELS) } });
    const t = r.logits ?? Object.values(r)[0];
    if (!t || t.data.length !== k * 10) throw new Error(`expected logits [${k},10], got ${t ? `[${t.dims.join(',')}]` : 'no output'}`);
    out.set(t.data as Float32Array, i * 10);
  }
  return out;
}

/** Fraction of rows whose arg-max equals the label (first maximum wins; a row of NaN counts as class 0). */
export function accuracyOf(logits: Float32Array, labels: Uint8Array): number {
  let ok = 0;
  for (let r = 0; r < labels.length; r++) {
    let b = 0;
    for (let j = 1; j < 10; j++) if (logits[r * 10 + j] > logits[r * 10 + b]) b = j;
    if (b === labels[r]) ok++;
  }
  return ok / labels.length;
}

/** Elements whose float32 bits differ (0 means bit-identical). */
export function bitDiffs(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Math.max(a.length, b.length);
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  let n = 0;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) n++;
  return n;
}

/** max |a − b|; Infinity when any difference is NaN or infinite. */
export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = Number.isFinite(d) ? d : Infinity;
  }
  return m;
}

/** Logits of a plain ONNX model under onnxruntime-web. */
export async function plainLogits(onnx: Uint8Array, set: MnistSet): Promise<Float32Array> {
  const s = await createOrtSession(onnx);
  try {
    return await logitsOf(set, (x) => s.run(x));
  } finally {
    await s.release();
  }
}

/** Logits through the device runtime with the key; throws the runtime's typed error when the model does not come up ready. */
export async function keyedLogits(klm: Uint8Array, modelKey: Uint8Array, set: MnistSet): Promise<Float32Array> {
  const m = await loadModel(klm, { modelKey });
  if (m.state !== 'ready') throw m.error!;
  try {
    return await logitsOf(set, (x) => m.run(x));
  } finally {
    await m.release();
  }
}

/** Feeds for the copied file: the user's inputs plus ones for every extra (key) input, the natural guess. */
export function stolenFeeds(s: BackendSession, x: TensorMap): TensorMap {
  const f: TensorMap = { ...x };
  for (const i of s.inputs) {
    if (f[i.name]) continue;
    const dims = (i.shape ?? []).map((d) => (typeof d === 'number' && d > 0 ? d : 1));
    f[i.name] = { dtype: 'float32', dims, data: new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(1) };
  }
  return f;
}

/** Logits of the locked model bytes as `keylock extract` writes them, run by plain ORT without any key. */
export async function stolenLogits(locked: Uint8Array, set: MnistSet): Promise<Float32Array> {
  const s = await createOrtSession(locked);
  try {
    return await logitsOf(set, (x) => s.run(stolenFeeds(s, x)));
  } finally {
    await s.release();
  }
}

/** A model run as if the key check were skipped; see {@link bypassRunner}. */
export interface BypassRunner {
  run(x: TensorMap): Promise<TensorMap>;
  /** Per lock: how it was undone with the wrong key. */
  notes: string[];
  release(): Promise<void>;
}

/**
 * What a device would compute if it skipped the key check value and MACs and
 * ran with `wrongKey`: every load-time lock undone with the wrong key through
 * the runtime's own restore functions (sealed without its MAC check), and the
 * run-time hooks (shuffle permutation, sign-flip ±1 tensors) derived from it.
 * AdvParams' key list is authenticated-encrypted: under a wrong key it does not
 * open at all, so nothing is restored and the perturbed weights stay.
 * `create` makes the session (default onnxruntime-web; the zoo passes the
 * tflite backend's for TFLite files).
 */
export async function bypassRunner(klm: Uint8Array, wrongKey: Uint8Array, create: (model: Uint8Array) => Promise<BackendSession> = createOrtSession): Promise<BypassRunner> {
  const file = openKlm(klm);
  const ctx: ApplyContext = { modelId: file.manifest.modelId, modelKey: wrongKey };
  const bytes = new Uint8Array(file.model);
  const notes: string[] = [];
  const locks = file.manifest.locks;
  for (let i = locks.length - 1; i >= 0; i--) {
    const l = locks[i];
    // `authenticated` skips the MAC, as a device does when a pinned signature covers the bytes: here it lets a wrong key through.
    if (l.scheme === 'sealed') { restoreSealed(bytes, l, { ...ctx, authenticated: true }); notes.push('sealed: decrypted with the wrong key, MAC ignored'); }
    else if (l.scheme === 'deeplock') { restoreDeeplock(bytes, l, ctx); notes.push('deeplock: inverted with the wrong key schedule'); }
    else if (l.scheme === 'signflip') { restoreSignflip(bytes, l, ctx); notes.push(`signflip: wrong ±1 key bits (${l.mode} mode)`); }
    else if (l.scheme === 'advparams') {
      try { restoreAdvparams(bytes, l, ctx); notes.push('advparams: restored (unexpected)'); } catch { notes.push('advparams: key list does not open, weights stay perturbed'); }
    } else if (l.scheme === 'shuffle') notes.push('shuffle: inputs shuffled with the wrong permutation');
  }
  const s = await create(bytes);
  const hooks = runHooks(locks, ctx);
  return {
    notes,
    run(x) {
      const feeds: TensorMap = {};
      for (const [name, t] of Object.entries(x)) {
        let v = t;
        for (const h of hooks) if (h.transformInput) v = h.transformInput(name, v);
        feeds[name] = v;
      }
      for (const h of hooks) if (h.feeds) Object.assign(feeds, h.feeds);
      return s.run(feeds);
    },
    async release() {
      for (const h of hooks) h.wipe();
      await s.release();
    },
  };
}

/** MNIST logits of {@link bypassRunner}. */
export async function bypassLogits(klm: Uint8Array, wrongKey: Uint8Array, set: MnistSet): Promise<{ logits: Float32Array; notes: string[] }> {
  const r = await bypassRunner(klm, wrongKey);
  try {
    return { logits: await logitsOf(set, (x) => r.run(x)), notes: r.notes };
  } finally {
    await r.release();
  }
}

/** Percent with two decimals. */
export const pct = (x: number): string => `${(x * 100).toFixed(2)}%`;

/** A seeded subset of `set`: `count` distinct digits drawn by Fisher–Yates with mulberry32(seed). */
export function subsetOf(set: MnistSet, count: number, rand: () => number): MnistSet {
  const idx = new Uint32Array(set.n);
  for (let i = 0; i < idx.length; i++) idx[i] = i;
  for (let k = idx.length - 1; k > 0; k--) {
    const j = Math.floor(rand() * (k + 1));
    const t = idx[k]; idx[k] = idx[j]; idx[j] = t;
  }
  const n = Math.min(count, set.n);
  const x = new Float32Array(n * PIXELS);
  const y = new Uint8Array(n);
  for (let k = 0; k < n; k++) {
    x.set(set.x.subarray(idx[k] * PIXELS, (idx[k] + 1) * PIXELS), k * PIXELS);
    y[k] = set.y[idx[k]];
  }
  return { x, y, n };
}
