/**
 * The canary check at load: recorded inputs whose outputs the unlocked model
 * must reproduce before it is ready. A wrong key, changed weights or a broken
 * restore move outputs by tens of percent; another backend's rounding moves
 * them by about 1e-6 of their scale.
 */
import { CanaryMismatchError } from '../keystore/errors.ts';
import { equalBytes } from '../keystore/nacl.ts';
import type { Canary } from './klm.ts';
import { decodeRecorded } from './recorded.ts';
import type { TensorMap } from './tensor.ts';

/**
 * How far a canary output may be from the recorded one on a backend other than
 * the recording one, relative to the output's largest magnitude. Other kernels
 * sum in another order: measured 8.8e-7 for onnxruntime-node against
 * onnxruntime-web (docs/BENCH.md); a wrong key or changed weights move outputs
 * by tens of percent.
 */
export const CANARY_TOLERANCE = 1e-4;

/**
 * Runs every canary sample through `run` and compares the outputs with the
 * recorded ones: bit for bit when `exact` (the backend that recorded them: the
 * lock tool records with the format's default backend), within
 * CANARY_TOLERANCE of the output's scale on another one. CanaryMismatchError
 * at the first difference.
 */
export async function checkCanary(canary: Canary, run: (inputs: TensorMap) => Promise<TensorMap>, backend: string, exact: boolean): Promise<void> {
  const ins = decodeRecorded(canary.inputs, 'inputs');
  const outs = decodeRecorded(canary.outputs, 'outputs');
  for (let i = 0; i < ins.length; i++) compareSample(outs[i]?.outputs ?? {}, await run(ins[i].inputs!), i, backend, exact);
}

function compareSample(expected: TensorMap, got: TensorMap, i: number, backend: string, exact: boolean): void {
  for (const [name, e] of Object.entries(expected)) {
    const g = got[name];
    if (!g || g.dtype !== e.dtype || g.data.length !== e.data.length) {
      throw new CanaryMismatchError(`canary sample ${i}: expected output "${name}" as ${e.dtype} [${e.dims.join(',')}], got ${g ? `${g.dtype} [${g.dims.join(',')}]` : 'none'}`);
    }
    const eb = new Uint8Array(e.data.buffer, e.data.byteOffset, e.data.byteLength);
    const gb = new Uint8Array(g.data.buffer, g.data.byteOffset, g.data.byteLength);
    if (equalBytes(eb, gb)) continue;
    if (exact || (e.dtype !== 'float32' && e.dtype !== 'float64')) {
      throw new CanaryMismatchError(`canary sample ${i}: output "${name}" differs from the recorded one (expected bit for bit on backend ${backend}, which recorded it)`);
    }
    const ed = e.data as Float32Array | Float64Array;
    const gd = g.data as Float32Array | Float64Array;
    let scale = 0;
    for (let j = 0; j < ed.length; j++) scale = Math.max(scale, Math.abs(ed[j]));
    const allowed = CANARY_TOLERANCE * (scale || 1);
    let worst = 0;
    for (let j = 0; j < ed.length; j++) {
      const d = Math.abs(gd[j] - ed[j]);
      // NaN where the recording had a number (or the reverse) is a mismatch too.
      if (!(d <= allowed) && !(Number.isNaN(ed[j]) && Number.isNaN(gd[j]))) worst = Math.max(worst, Number.isNaN(d) ? Infinity : d);
    }
    if (worst > 0) {
      throw new CanaryMismatchError(`canary sample ${i}: output "${name}" differs from the recorded one by up to ${worst.toExponential(2)}; backend ${backend}, which did not record it, is allowed ${allowed.toExponential(2)} (${CANARY_TOLERANCE} of the output's scale)`);
    }
  }
}
