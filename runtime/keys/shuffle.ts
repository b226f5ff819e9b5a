/**
 * `shuffle` (block-wise pixel shuffling), device side: every input image is
 * shuffled block by block with the key's permutation (and negative/positive
 * flips) into a buffer allocated once and reused, before the backend sees it.
 * Images are NCHW (ONNX) unless the lock says `nhwc` (TFLite). Nothing is
 * restored at load: the model was trained on (or absorbed) shuffled inputs.
 */
import type { Fields } from '../../keystore/cbor.ts';
import { FormatError, InputMismatchError } from '../../keystore/errors.ts';
import type { TensorData } from '../tensor.ts';
import { shuffleBlockKey, shuffleImagesChecked, wipeShuffleKey } from './shuffle-key.ts';
import { nhwcPlan, shuffleNHWC, wipeNhwcPlan, type NhwcPlan } from './shuffle-nhwc.ts';
import type { ApplyContext, RunHooks } from './hooks.ts';
import type { DeviceScheme } from './scheme.ts';

/** The manifest's `shuffle` entry. */
export interface ShuffleLock {
  scheme: 'shuffle';
  /** The model input the runtime shuffles (NCHW float32). */
  input: string;
  block: number;
  channels: number;
  negpos: boolean;
  /** True when the inverse permutation was absorbed into the first layer post hoc. */
  absorbed: boolean;
  /** Memory layout of the input image: `nchw` when absent (ONNX), `nhwc` for TFLite. */
  layout?: 'nchw' | 'nhwc';
}

/** Hooks that shuffle the lock's input on every run. */
export function shuffleHooks(lock: ShuffleLock, ctx: ApplyContext): RunHooks {
  const key = shuffleBlockKey(ctx.modelKey, lock.block, lock.channels, lock.negpos);
  const nhwc = lock.layout === 'nhwc';
  let plan: NhwcPlan | undefined;
  let buf = new Float32Array(0);
  return {
    transformInput(name: string, t: TensorData): TensorData {
      if (name !== lock.input) return t;
      // Runs on every input: plain reads, no destructuring into temporary arrays.
      const d = t.dims;
      const n = d[0];
      const h = nhwc ? d[1] : d[2];
      const w = nhwc ? d[2] : d[3];
      const ch = nhwc ? d[3] : d[1];
      if (t.dtype !== 'float32' || !(t.data instanceof Float32Array) || d.length !== 4 || ch !== lock.channels || h % lock.block !== 0 || w % lock.block !== 0) {
        throw new InputMismatchError(`input "${name}": the shuffle lock expects float32 ${nhwc ? 'NHWC' : 'NCHW'} with ${lock.channels} channel(s) and H, W divisible by ${lock.block}, got ${t.dtype} [${t.dims.join(',')}]`);
      }
      const len = n * ch * h * w;
      if (buf.length < len) buf = new Float32Array(len);
      const out = buf.length === len ? buf : buf.subarray(0, len);
      if (nhwc) {
        if (!plan || plan.h !== h || plan.w !== w) {
          if (plan) wipeNhwcPlan(plan);
          plan = nhwcPlan(key, h, w);
        }
        shuffleNHWC(t.data as Float32Array, out, n, plan);
      } else {
        // Checked above (dtype, rank, C, divisibility) and by run() (data length matches dims); `out` is ours.
        shuffleImagesChecked(t.data, out, n, h, w, key);
      }
      return { dtype: 'float32', dims: t.dims, data: out };
    },
    wipe(): void {
      wipeShuffleKey(key);
      if (plan) wipeNhwcPlan(plan);
      buf.fill(0);
    },
  };
}

/** The `shuffle` scheme for the registry (keys/index.ts). */
export const shuffleScheme: DeviceScheme<ShuffleLock> = {
  name: 'shuffle',
  decodeEntry(f: Fields): ShuffleLock {
    const e: ShuffleLock = {
      scheme: 'shuffle', input: f.text('input'), block: f.uint('block'), channels: f.uint('channels'),
      negpos: f.bool('negpos'), absorbed: f.bool('absorbed'),
    };
    if (f.has('layout')) e.layout = f.oneOf('layout', ['nchw', 'nhwc'] as const);
    if (e.block < 1 || e.channels < 1 || e.block * e.block * e.channels > 1 << 24) {
      throw new FormatError(`${f.what}: block ${e.block} x ${e.block} x ${e.channels} is out of range`);
    }
    return e;
  },
  hooks: shuffleHooks,
};

/** One line for `keylock inspect`: public parameters only. */
export function describeShuffle(l: ShuffleLock): string {
  return `shuffle  block ${l.block}x${l.block}x${l.channels} on "${l.input}"${l.layout === 'nhwc' ? ' (NHWC)' : ''}${l.negpos ? ', negative/positive' : ''}${l.absorbed ? ', absorbed into the first layer' : ', trained with the key'}`;
}
