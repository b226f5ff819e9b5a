/**
 * The contract between the lock pipeline and the one-file-per-scheme lockers.
 *
 * A locker works in one of two stages. Graph-stage locks (shuffle absorption,
 * signflip, advparams) change the decoded model: weights, nodes, inputs. The
 * model is then encoded once, and byte-stage locks (deeplock, sealed) change
 * the encoded bytes in place, so every range in the manifest refers to the final
 * file and the runtime needs no model parser.
 */
import type { LockEntry, TensorRange } from '../../runtime/klm.ts';
import type { Sample } from '../../runtime/recorded.ts';
import type { InitializerInfo } from '../onnx/layout.ts';
import type { OnnxModel } from '../onnx/types.ts';

/** Options of `keylock lock`, shared by every scheme. */
export interface LockOptions {
  /** shuffle: block size m (the input's H and W must be divisible by it). */
  block?: number;
  /** shuffle: the negative/positive variant. */
  negpos?: boolean;
  /** shuffle: the model was trained with the key (no absorption into the first layer). */
  trainedWithKey?: boolean;
  /** signflip: `input` (key tensors fed on every run, the default) or `fold` (negated back at load). */
  signflipMode?: 'input' | 'fold';
  /** signflip: one key bit per MAC unit (channel j uses bit j mod U); 0 or undefined: one bit per channel. */
  units?: number;
  /** advparams: the encryption set (recorded inputs with labels). */
  data?: Sample[];
  /** advparams: tuning knobs (see models/lock/advparams.ts). */
  advparams?: Record<string, number>;
  /** Random seed for lockers that choose at random (advparams' layers). */
  seed?: number;
}

/**
 * A lock option with a missing or out-of-range value (no block size for
 * shuffle, an unknown scheme, a bad signflip mode). It is a RangeError, as
 * option errors were before, so existing `instanceof RangeError` checks hold;
 * the class lets a front end (the CLI) tell a caller's option mistake from a
 * RangeError thrown by a bug or a malformed file, and report it as a usage error.
 */
export class LockOptionError extends RangeError {
  /**
   * @param option the `LockOptions` field (or `schemes`) at fault
   * @param flag the CLI flag that sets it, e.g. `--block`
   * @param expected what a valid value looks like
   * @param got what was given (`undefined` when missing)
   */
  constructor(readonly option: string, readonly flag: string, readonly expected: string, readonly got: string | undefined, message: string) {
    super(message);
    this.name = 'LockOptionError';
  }
}

/** What every locker gets. */
export interface LockContext {
  modelId: string;
  modelKey: Uint8Array;
  opts: LockOptions;
  /** One line of the lock report (what was locked, what could not be kept exact). */
  report(line: string): void;
}

/** Builds a graph-stage lock's manifest entry once the final byte ranges are known. */
export type FinishEntry = (ranges: ReadonlyMap<string, InitializerInfo>, bytes: Uint8Array) => LockEntry;

/** A scheme's vendor side. Exactly one of `graph` and `bytes` is set. */
export interface Locker {
  scheme: LockEntry['scheme'];
  graph?(model: OnnxModel, ctx: LockContext): Promise<FinishEntry> | FinishEntry;
  bytes?(bytes: Uint8Array, inits: readonly InitializerInfo[], ctx: LockContext): LockEntry;
}

/** The manifest range of an initializer. */
export function rangeOf(i: InitializerInfo): TensorRange {
  return { name: i.name, offset: i.byteOffset, length: i.byteLength, dtype: i.dtype };
}

/** Learned-parameter dtypes: what `sealed` encrypts. Integer shape/index tensors stay plain so the file stays a valid model. */
export const PARAMETER_DTYPES: ReadonlySet<string> = new Set(['float32', 'float16', 'bfloat16', 'float64', 'int8', 'uint8']);
