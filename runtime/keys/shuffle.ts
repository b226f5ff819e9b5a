/**
 * `shuffle` (block-wise pixel shuffling), device side: every input image is
 * shuffled block by block with the key's permutation (and negative/positive
 * flips) into a buffer allocated once and reused, before the backend sees it.
 */
import { InputMismatchError } from '../errors.ts';
import type { ShuffleLock } from '../klm.ts';
import type { TensorData } from '../tensor.ts';
import { shuffleBlockKey, shuffleImageNCHW, wipeShuffleKey } from './shuffle-key.ts';
import type { ApplyContext, RunHooks } from './hooks.ts';

/** Hooks that shuffle the lock's input on every run. */
export function shuffleHooks(lock: ShuffleLock, ctx: ApplyContext): RunHooks {
  const key = shuffleBlockKey(ctx.modelKey, lock.block, lock.channels, lock.negpos);
  let buf = new Float32Array(0);
  return {
    transformInput(name: string, t: TensorData): TensorData {
      if (name !== lock.input) return t;
      const [n, c, h, w] = t.dims;
      if (t.dtype !== 'float32' || t.dims.length !== 4 || c !== lock.channels || h % lock.block !== 0 || w % lock.block !== 0) {
        throw new InputMismatchError(`input "${name}": the shuffle lock expects float32 NCHW with ${lock.channels} channel(s) and H, W divisible by ${lock.block}, got ${t.dtype} [${t.dims.join(',')}]`);
      }
      const len = n * c * h * w;
      if (buf.length < len) buf = new Float32Array(len);
      const out = buf.length === len ? buf : buf.subarray(0, len);
      shuffleImageNCHW(t.data as Float32Array, out, n, c, h, w, key);
      return { dtype: 'float32', dims: t.dims, data: out };
    },
    wipe(): void {
      wipeShuffleKey(key);
      buf.fill(0);
    },
  };
}
