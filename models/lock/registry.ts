/**
 * The lockers, by format and scheme: the one list the lock pipeline
 * (models/lock/index.ts) reads. A scheme's vendor side is one file per format,
 * models/lock/onnx/<scheme>.ts and models/lock/tflite/<scheme>.ts; a new scheme
 * adds one line per format here. Order rules live on the lockers (`phase`),
 * not in the pipeline.
 */
import type { ModelFormat, Scheme } from '../../runtime/klm.ts';
import { onnxAdvparams } from './onnx/advparams.ts';
import { onnxDeeplock } from './onnx/deeplock.ts';
import { onnxSealed } from './onnx/sealed.ts';
import { onnxShuffle } from './onnx/shuffle.ts';
import { onnxSignflip } from './onnx/signflip.ts';
import { tfliteAdvparams } from './tflite/advparams.ts';
import { tfliteDeeplock } from './tflite/deeplock.ts';
import { tfliteSealed } from './tflite/sealed.ts';
import { tfliteShuffle } from './tflite/shuffle.ts';
import { tfliteSignflip } from './tflite/signflip.ts';
import type { OnnxLocker, TfliteLocker } from './types.ts';

/** The locker type of each format, for scheme `S`. */
interface LockerOf<S extends Scheme> {
  onnx: OnnxLocker<S>;
  tflite: TfliteLocker<S>;
}

/** Every format has a locker for every scheme (a scheme that cannot apply to a model refuses it with UnsupportedModelError). */
export type Lockers = { readonly [F in ModelFormat]: { readonly [S in Scheme]: LockerOf<S>[F] } };

/** The lockers by format, then scheme. */
export const LOCKERS: Lockers = {
  onnx: {
    shuffle: onnxShuffle,
    signflip: onnxSignflip,
    deeplock: onnxDeeplock,
    advparams: onnxAdvparams,
    sealed: onnxSealed,
  },
  tflite: {
    shuffle: tfliteShuffle,
    signflip: tfliteSignflip,
    deeplock: tfliteDeeplock,
    advparams: tfliteAdvparams,
    sealed: tfliteSealed,
  },
};

/**
 * Why the lockers' phases reorder what was asked, per format: the reason the
 * lock report gives on its `order:` line. Keep it in step with the phases.
 */
export const ORDER_REASON: Readonly<Record<ModelFormat, string>> = {
  onnx: 'graph-stage locks before byte-stage ones, advparams before signflip',
  tflite: 'shuffle, then advparams, need the plain weights',
};
