/**
 * The warm-up run of `LoadOptions.warmup`: zeros of each declared input's dtype
 * and shape (a dynamic dim taken as 1), run once and not counted in `stats`.
 */
import type { IOSpec } from './klm.ts';
import type { Model } from './model.ts';
import { KeylockError, UnsupportedModelError } from '../keystore/errors.ts';
import { dtypeSize, isDType, shapeSize, typedFromBytes, type TensorMap } from './tensor.ts';

/** Zeros for every declared input of `specs`. */
export function zeroInputs(specs: readonly IOSpec[]): TensorMap {
  const feeds: TensorMap = {};
  for (const s of specs) {
    if (!isDType(s.dtype)) throw new UnsupportedModelError(`warm-up: input "${s.name}" has dtype ${s.dtype}; expected one of keylock's tensor dtypes`);
    const dims = s.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : 1));
    feeds[s.name] = { dtype: s.dtype, dims, data: typedFromBytes(s.dtype, new Uint8Array(shapeSize(dims) * dtypeSize(s.dtype))) };
  }
  return feeds;
}

/** Runs `model` once on zeros; a failure halts it with the typed reason (a model that cannot run one input is not ready). */
export async function warmUp(model: Model): Promise<void> {
  try {
    await model.run(zeroInputs(model.inputs));
  } catch (e) {
    model.halt(e instanceof KeylockError ? e : new KeylockError('warmup', `the warm-up run failed: ${(e as Error)?.message ?? String(e)}`, { cause: e }));
  } finally {
    model.resetStats();
  }
}
