/**
 * Crash-safe file replacement: write a temp file in the same folder, fsync it,
 * rename it over the target, fsync the folder. A reader (or a process that
 * starts after a crash) sees either the old file or the new one, never a mix,
 * and a failed write leaves no partial output behind.
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';

/** Atomically writes `data` to `path` with file `mode` (default 0644). */
export function writeFileAtomic(path: string, data: Uint8Array, mode = 0o644): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  let fd = -1;
  try {
    fd = openSync(tmp, 'wx', mode);
    let off = 0;
    while (off < data.byteLength) off += writeSync(fd, data, off, data.byteLength - off);
    fsyncSync(fd);
    closeSync(fd);
    fd = -1;
    renameSync(tmp, path);
  } catch (e) {
    if (fd >= 0) closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDir(dir);
}

function fsyncDir(dir: string): void {
  let fd = -1;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some file systems (and Windows) cannot fsync a directory; the rename is still atomic there.
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}
