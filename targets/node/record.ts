/** The node target's file-backed recorder sink, for `LoadOptions.record`. */
import { closeSync, fsyncSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import type { RecordOptions, RecordSink } from '../../runtime/recorder.ts';

/**
 * Records a model's runs into a new file at `path` (see runtime/recorder.ts):
 * `loadModelFile('m.klm', { keystore, record: recordToFile('session.cbor', { maxBytes: 64 << 20 }) })`.
 * The file is created on the first write, only once the model is ready, and an
 * existing file is never overwritten (the first write fails with EEXIST and
 * recording stops; `stats.recorded.error` says so). It is flushed to disk when
 * the model is released or halts.
 */
export function recordToFile(path: string, opts: { maxBytes: number; outputs?: boolean }): RecordOptions {
  let fd = -1;
  const sink: RecordSink = {
    write(offset, bytes) {
      if (fd < 0) fd = openSync(path, 'wx', 0o600);
      let done = 0;
      while (done < bytes.byteLength) done += writeSync(fd, bytes, done, bytes.byteLength - done, offset + done);
    },
    truncate(size) {
      if (fd >= 0) ftruncateSync(fd, size);
    },
    close() {
      if (fd < 0) return;
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
        fd = -1;
      }
    },
  };
  return { sink, maxBytes: opts.maxBytes, outputs: opts.outputs };
}
