/**
 * Crash-safe file writes. Every file keylock writes is first written whole
 * under a temp name in the same folder and fsynced, then put in place with one
 * atomic step (a rename over the target, or a hard link that must not
 * overwrite), then the folder is fsynced. A reader (or a process that starts
 * after a crash) sees either the old file or the new one, never a mix, and a
 * failed write leaves no partial output behind.
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';

/** Atomically writes `data` to `path` with file `mode` (default 0644). */
export function writeFileAtomic(path: string, data: Uint8Array, mode = 0o644): void {
  const tmp = writeTempFile(path, data, mode);
  try {
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDir(dirname(path));
}

/**
 * Writes `data` to a new temp file beside `path`, named
 * `.BASENAME.<12 hex digits>.tmp` (the file store sweeps that pattern after a
 * crash), with file `mode`, synced to disk; returns its path. On failure the
 * temp file is removed again and the error thrown.
 */
export function writeTempFile(path: string, data: Uint8Array, mode: number): string {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  let fd = -1;
  try {
    fd = openSync(tmp, 'wx', mode);
    let off = 0;
    while (off < data.byteLength) off += writeSync(fd, data, off, data.byteLength - off);
    fsyncSync(fd);
    closeSync(fd);
    fd = -1;
    return tmp;
  } catch (e) {
    if (fd >= 0) closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** Syncs a folder, so a rename or link in it survives a crash. */
export function fsyncDir(dir: string): void {
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
