/**
 * What `recordFrom` (and `keylock record`) takes besides the source paths, and
 * the error for options that contradict each other or the model.
 */
import { KeylockError } from '../../keystore/errors.ts';
import type { InputSpec } from './spec.ts';

/** Source kinds an importer exists for; `image` covers PNG and JPEG (told apart by their magic bytes). */
export type SourceKind = 'npy' | 'npz' | 'image' | 'wav' | 'json';

/** Every source kind, for messages and `--kind`. */
export const SOURCE_KINDS: readonly SourceKind[] = ['npy', 'npz', 'image', 'wav', 'json'];

/** Options of {@link recordFrom}. Only `inputs` is required. */
export interface RecordOptions {
  /** The model's declared inputs (from {@link modelInputs} or {@link shapeInputs}): they drive shapes and dtypes. */
  inputs: InputSpec[];
  /** The input a one-tensor source (.npy, image, WAV, plain JSON array) fills; needed when the model has several. */
  input?: string;
  /** Overrides the kind told from each file's extension. */
  kind?: SourceKind;
  /** .npz array key -> model input name, for keys that do not name an input. */
  map?: Record<string, string>;

  /** Images: memory order of the image input; default told from the input shape. */
  layout?: 'nchw' | 'nhwc';
  /** Images: multiplier applied to 0..255 pixel values; default 1/255 for float inputs, 1 for integer inputs. */
  scale?: number;
  /** Images: per-channel mean subtracted after scaling (one value, or one per channel). */
  mean?: number[];
  /** Images: per-channel divisor applied after the mean (one value, or one per channel). */
  std?: number[];
  /** Images: 255 - pixel before scaling (black digits on white paper -> MNIST's white on black). */
  invert?: boolean;
  /** Images and WAV: a CSV of `file,label` rows; wins over labels from folder names. */
  labels?: string;

  /** WAV: samples per frame; default the model input's size. */
  frame?: number;
  /** WAV: samples between frame starts; default `frame` (no overlap). */
  hop?: number;
  /** WAV: required sample rate in Hz; a file at another rate is refused. */
  rate?: number;
  /** WAV: keep int16 magnitudes (-32768..32767) instead of scaling to [-1, 1]. */
  pcm16?: boolean;
}

/**
 * Options that cannot work together, or that the model or sources contradict
 * (no input named so, an input the layout cannot be told from, ...). The CLI
 * reports it as a usage error (exit 2).
 */
export class RecordOptionError extends KeylockError {
  constructor(message: string, readonly usageHint?: string) {
    super('record-option', message);
  }
}
