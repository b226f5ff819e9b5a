/**
 * What a lock scheme is on the device: one module per scheme in this folder
 * (shuffle.ts, signflip.ts, deeplock.ts, advparams.ts, sealed.ts), each
 * exporting one `DeviceScheme` and the one-line description `keylock inspect`
 * prints, both listed in the registry (index.ts). The manifest reader, the load
 * and `keylock inspect` go through the registry, so adding a scheme touches its
 * module and the registry, nothing else.
 *
 * Also here: the byte ranges that lock entries share, and their reader, which
 * checks every range against the model's size.
 */
import { FormatError } from '../../keystore/errors.ts';
import { Fields } from '../../keystore/cbor.ts';
import type { ApplyContext, RunHooks } from './hooks.ts';

/** A tensor's data inside the model bytes. */
export interface TensorRange {
  name: string;
  /** Byte offset of the first element in the model bytes. */
  offset: number;
  /** Byte length of the data. */
  length: number;
  /** Element type, e.g. `float32`. */
  dtype: string;
}

/**
 * Tensor data whose elements belong to output channels. With `outer` layout the
 * channel of element i is floor(i / (n / channels)) (OIHW conv weights, [out,in]
 * Gemm weights, biases); with `inner` it is i mod channels ([in,out] MatMul weights).
 */
export interface ChannelRange extends TensorRange {
  layout: 'outer' | 'inner';
}

/** A scheme's device side. `E` is its entry in the manifest's `locks`. */
export interface DeviceScheme<E extends { scheme: string }> {
  readonly name: E['scheme'];
  /**
   * Reads and checks the scheme's lock entry from the signed manifest; every
   * byte range must end inside the model's `modelBytes`. FormatError otherwise.
   */
  decodeEntry(f: Fields, modelBytes: number): E;
  /** Work before any model byte is restored, that may have to wait (e.g. compiling WebAssembly); it may depend on the entry. */
  prepare?(entry: E): Promise<unknown>;
  /**
   * Undoes the lock at load, in place, in the private copy of the model bytes;
   * a Promise where the platform's cipher is asynchronous (WebCrypto).
   */
  restore?(model: Uint8Array, entry: E, ctx: ApplyContext): void | Promise<void>;
  /** Whether `restore` changes bytes for this entry; default: it does wherever there is a `restore`. */
  rewrites?(entry: E): boolean;
  /** What the lock needs on every run (input rewrites, key feeds); undefined when nothing. */
  hooks?(entry: E, ctx: ApplyContext): RunHooks | undefined;
}

/** Reads one byte range; FormatError when it ends past the model. */
export function readRange(g: Fields, modelBytes: number): TensorRange {
  const r = { name: g.text('name'), offset: g.uint('offset'), length: g.uint('length'), dtype: g.text('dtype', 32) };
  if (r.offset + r.length > modelBytes) {
    throw new FormatError(`${g.what}: range ${r.offset}+${r.length} ends past the model's ${modelBytes} bytes`);
  }
  return r;
}

/** Reads the array of byte ranges at `key`. */
export function readRanges(f: Fields, key: string, modelBytes: number): TensorRange[] {
  return f.array(key).map((v, i) => readRange(Fields.of(`${f.what}.${key}[${i}]`, v), modelBytes));
}
