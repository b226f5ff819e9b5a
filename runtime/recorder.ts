/**
 * The device-side recorder (`LoadOptions.record`): appends the inputs and
 * outputs of live runs to a recorded file, so that a field device can capture a
 * session for offline replay (`keylock run M.klm --inputs S.cbor --expect S.cbor`).
 *
 * The file is a recorded file (docs/SPEC.md, "Recorded inputs") whose samples
 * carry both `inputs` and `outputs`; its top-level array header is written with
 * an 8-byte count (0x9b + uint64) that is rewritten in place after each sample,
 * so the file is well-formed CBOR after every run and needs no closing step.
 * Only the caller's declared inputs are recorded: key tensors (sign-flip keys)
 * and shuffled inputs are made after this point and never reach the file.
 *
 * The runtime writes through a `RecordSink`, so it carries no file-system code;
 * the node target's `recordToFile` gives one backed by a file.
 */
import { encodeSample } from './recorded.ts';
import type { TensorMap } from './tensor.ts';

/** Where recorded bytes go: positional writes into one growing file (or buffer). */
export interface RecordSink {
  /** Writes `bytes` at byte `offset` (at most the bytes written so far: in place, or appended at the end). */
  write(offset: number, bytes: Uint8Array): void;
  /** Cuts the file back to `size` bytes, after a write that failed part-way. */
  truncate?(size: number): void;
  /** Flushes and closes; called once, when the model is released or halts. */
  close(): void;
}

/** `LoadOptions.record`: where to record live runs, and how much at most. */
export interface RecordOptions {
  sink: RecordSink;
  /** The file never grows past this many bytes: a run that would not fit is counted in `dropped`, not written. */
  maxBytes: number;
  /** Record the outputs beside the inputs (default true). */
  outputs?: boolean;
}

/** What a recorder has written so far (`LockedModel.stats.recorded`). */
export interface RecordStats {
  /** Samples in the file. */
  samples: number;
  /** The file's size in bytes. */
  bytes: number;
  /** Runs not recorded because the next sample would pass `maxBytes`. */
  dropped: number;
  /** Set when a write failed (e.g. a full disk): recording stopped there, inference went on. */
  error?: string;
}

/** Bytes of the array header: 0x9b and a big-endian uint64 sample count. */
const HEADER = 9;

function header(count: number): Uint8Array {
  const h = new Uint8Array(HEADER);
  h[0] = 0x9b;
  new DataView(h.buffer).setBigUint64(1, BigInt(count));
  return h;
}

/** Copies tensors whose buffers the caller may reuse once `run()` has been called. */
function snapshot(m: TensorMap): TensorMap {
  const c: TensorMap = {};
  for (const [k, t] of Object.entries(m)) c[k] = { dtype: t.dtype, dims: [...t.dims], data: t.data.slice() } as TensorMap[string];
  return c;
}

/** Throws RangeError for options no recorder can honour (API misuse, checked before a load starts). */
export function checkRecordOptions(opts: RecordOptions): void {
  if (!opts.sink || typeof opts.sink.write !== 'function') throw new TypeError('record.sink must be a RecordSink (write, close)');
  if (!Number.isSafeInteger(opts.maxBytes) || opts.maxBytes < HEADER) {
    throw new RangeError(`record.maxBytes must be an integer of at least ${HEADER} (the file header), got ${opts.maxBytes}`);
  }
}

/** Appends runs to a sink; see the module comment. */
export class Recorder {
  private readonly stats: RecordStats = { samples: 0, bytes: HEADER, dropped: 0 };
  private readonly withOutputs: boolean;
  private closed = false;

  constructor(private readonly opts: RecordOptions) {
    checkRecordOptions(opts);
    this.withOutputs = opts.outputs !== false;
    this.put(0, header(0));
  }

  /** Takes a copy of the inputs before the run, so a caller that reuses its buffers records what it ran. */
  begin(inputs: TensorMap): TensorMap | undefined {
    return this.stats.error || this.closed ? undefined : snapshot(inputs);
  }

  /** Appends one run (inputs from `begin`, outputs as returned), unless it would pass the cap. */
  add(inputs: TensorMap | undefined, outputs: TensorMap): void {
    if (!inputs || this.stats.error || this.closed) return;
    const b = encodeSample({ inputs, outputs: this.withOutputs ? outputs : undefined });
    if (this.stats.bytes + b.byteLength > this.opts.maxBytes) {
      this.stats.dropped++;
      return;
    }
    if (!this.put(this.stats.bytes, b) || !this.put(0, header(this.stats.samples + 1))) return;
    this.stats.bytes += b.byteLength;
    this.stats.samples++;
  }

  /**
   * One write; false once a write failed. A device keeps inferring when its
   * capture disk fills or the file cannot be made: recording stops, the error is
   * in the figures, and the file is cut back to its last counted sample.
   */
  private put(offset: number, bytes: Uint8Array): boolean {
    try {
      this.opts.sink.write(offset, bytes);
      return true;
    } catch (e) {
      this.stats.error = (e as Error)?.message ?? String(e);
      try {
        this.opts.sink.truncate?.(this.stats.bytes);
      } catch {
        // The count still names only whole samples; a reader reports the partial one as trailing bytes.
      }
      return false;
    }
  }

  /** A copy of the figures so far. */
  get figures(): RecordStats {
    return { ...this.stats };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.opts.sink.close();
  }
}

/** A sink in memory (a browser page can offer `bytes()` as a download); `bytes()` is the file so far. */
export function memoryRecordSink(): RecordSink & { bytes(): Uint8Array } {
  let buf = new Uint8Array(1024);
  let size = 0;
  return {
    write(offset, bytes) {
      if (offset > size) throw new RangeError(`write at ${offset} past the end (${size})`);
      const end = offset + bytes.byteLength;
      if (end > buf.byteLength) {
        const grown = new Uint8Array(Math.max(end, buf.byteLength * 2));
        grown.set(buf.subarray(0, size));
        buf = grown;
      }
      buf.set(bytes, offset);
      size = Math.max(size, end);
    },
    truncate(n) { size = Math.min(size, n); },
    close() {},
    bytes: () => buf.slice(0, size),
  };
}
