/**
 * The contract between the lock pipeline (models/lock/index.ts) and the lockers:
 * one file per scheme per format, models/lock/onnx/<scheme>.ts and
 * models/lock/tflite/<scheme>.ts, listed in models/lock/registry.ts.
 *
 * An ONNX locker works in one of two stages. Graph-stage locks (shuffle
 * absorption, signflip, advparams) change the decoded model: weights, nodes,
 * inputs. The model is then encoded once, and byte-stage locks (deeplock,
 * sealed) change the encoded bytes in place, so every range in the manifest
 * refers to the final file and the runtime needs no model parser. A TFLite
 * file is never re-encoded: every TFLite locker edits its bytes in place.
 *
 * A TFLite locker takes the format-independent pieces of its scheme from the
 * scheme's ONNX file (option checks, sealRanges, the trivial-key checks).
 */
import type { LockEntry, Scheme, TensorRange } from '../../runtime/klm.ts';
import type { Sample } from '../../runtime/recorded.ts';
import type { InitializerInfo } from '../onnx/layout.ts';
import type { OnnxModel } from '../onnx/types.ts';
import type { TfliteModel } from '../tflite/codec.ts';
import type { WeightInfo } from '../tflite/weights.ts';

/** Options of `keylock lock`, shared by every scheme. */
export interface LockOptions {
  /** shuffle: block size m (the input's H and W must be divisible by it). */
  block?: number;
  /** shuffle: the negative/positive variant. */
  negpos?: boolean;
  /** shuffle: the model was trained with the key (no absorption into the first layer). */
  trainedWithKey?: boolean;
  /** signflip: `input` (key tensors fed on every run; the ONNX default) or `fold` (negated back at load; the only TFLite mode). */
  signflipMode?: 'input' | 'fold';
  /** signflip: one key bit per MAC unit (channel j uses bit j mod U); 0 or undefined: one bit per channel. */
  units?: number;
  /** advparams: the encryption set (recorded inputs with labels). */
  data?: Sample[];
  /** advparams: tuning knobs (see models/lock/onnx/advparams.ts). */
  advparams?: Record<string, number>;
  /**
   * sealed: the cipher; `xchacha20-poly1305` (default: fast everywhere, no AES
   * hardware needed), `aes-256-gcm` (fleets with AES instructions: x86 AES-NI,
   * ARMv8 crypto extensions; WebCrypto in secure-context pages; not inline), or
   * `xsalsa20-poly1305` (as files were before; for runtimes that predate the field).
   */
  sealedCipher?: 'xchacha20-poly1305' | 'xsalsa20-poly1305' | 'aes-256-gcm';
  /**
   * sealed, ONNX only: `true` seals every sealed tensor inline, a list of
   * initializer names seals those: each becomes a graph input too, and the
   * device decrypts it only during a run (docs/SPEC.md, sealed inline).
   */
  sealedInline?: boolean | readonly string[];
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
  /** Every scheme asked for in this lock (lockers that cannot combine with another refuse it). */
  schemes?: readonly Scheme[];
  /** One line of the lock report (what was locked, what could not be kept exact). */
  report(line: string): void;
}

/** The manifest entry of scheme `S`. */
export type EntryOf<S extends Scheme> = Extract<LockEntry, { scheme: S }>;

/** What a scheme's locker declares, whatever the format. */
export interface LockerBase<S extends Scheme = Scheme> {
  scheme: S;
  /**
   * Locks run in increasing phase, ties in the order asked (on ONNX within
   * their stage: graph-stage locks always run before byte-stage ones). A lock
   * that must see the plain weights, because it measures the model or moves
   * weights, takes a lower phase than the locks that change them; each
   * locker's comment says why it has its phase. The manifest lists the locks
   * in the order they ran, which the runtime undoes in reverse.
   */
  phase: number;
  /**
   * Why `entry`, locked under `modelKey`, leaves the model equal to the plain
   * one, or undefined when it does not. Only schemes whose key can act as the
   * identity have it (a shuffle permutation, a signflip key of all zeros); the
   * pipeline then draws another key (models/lock/index.ts).
   * @throws UnsupportedModelError when the entry admits no key but the identity.
   */
  trivial?(modelKey: Uint8Array, entry: EntryOf<S>): string | undefined;
}

/** Builds a graph-stage lock's manifest entry once the final byte ranges are known. */
export type FinishEntry = (ranges: ReadonlyMap<string, InitializerInfo>, bytes: Uint8Array) => LockEntry;

/** A scheme's vendor side for ONNX. Exactly one of `graph` and `bytes` is set. */
export interface OnnxLocker<S extends Scheme = Scheme> extends LockerBase<S> {
  graph?(model: OnnxModel, ctx: LockContext): Promise<FinishEntry> | FinishEntry;
  bytes?(bytes: Uint8Array, inits: readonly InitializerInfo[], ctx: LockContext): EntryOf<S>;
  /** A byte-stage lock's change to the graph, made after the graph stage and before the model is encoded (sealed inline: initializers listed as inputs). */
  prepareGraph?(model: OnnxModel, ctx: LockContext): void;
}

/** What every TFLite locker gets: the file's structure stays fixed while locks change its bytes. */
export interface TfliteLockContext extends LockContext {
  model: TfliteModel;
  weights: readonly WeightInfo[];
  /** Entries of the locks applied so far, in order. */
  applied: LockEntry[];
}

/** A scheme's vendor side for TFLite: `lock` edits `bytes` in place and returns the manifest entry. */
export interface TfliteLocker<S extends Scheme = Scheme> extends LockerBase<S> {
  lock(bytes: Uint8Array, ctx: TfliteLockContext): EntryOf<S> | Promise<EntryOf<S>>;
}

/** The manifest range of an ONNX initializer. */
export function rangeOf(i: InitializerInfo): TensorRange {
  return { name: i.name, offset: i.byteOffset, length: i.byteLength, dtype: i.dtype };
}

/** The manifest range of a TFLite weight buffer. */
export function tfliteRange(w: WeightInfo): TensorRange {
  return { name: w.name, offset: w.offset, length: w.length, dtype: w.dtype };
}

/** Learned-parameter dtypes: what `sealed` encrypts. Integer shape/index tensors stay plain so the file stays a valid model. */
export const PARAMETER_DTYPES: ReadonlySet<string> = new Set(['float32', 'float16', 'bfloat16', 'float64', 'int8', 'uint8']);
