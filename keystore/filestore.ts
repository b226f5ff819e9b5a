/**
 * The Node file store of a keystore, and the few file reads the unlock
 * providers need. Loaded lazily, so browser bundles never touch `node:fs`.
 */
import { closeSync, fsyncSync, linkSync, openSync, readFileSync, readSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { writeFileAtomic } from './atomic.ts';
import { KeylockError, KeystoreBusyError } from '../runtime/errors.ts';
import type { KeystoreStorage } from './storage.ts';

/** Options of the file store. */
export interface FileStorageOptions {
  /** How long a writer waits for another writer's lock before `KeystoreBusyError` (default 10 s). */
  lockTimeoutMs?: number;
}

/**
 * A keystore in one file, replaced atomically (temp file, fsync, rename, fsync
 * folder) with mode 0600. Writers serialise on `PATH.lock`, created with
 * O_EXCL and holding the writer's pid; a lock whose pid is gone is broken.
 */
export function fileStorage(path: string, opts: FileStorageOptions = {}): KeystoreStorage {
  const lockTimeoutMs = opts.lockTimeoutMs ?? 10_000;
  return {
    where: path,
    async read() {
      const b = readFileIfExists(path);
      if (!b) throw new KeylockError('not-found', `${path}: expected a keystore file, got no such file`);
      return b;
    },
    async write(bytes) {
      writeFileAtomic(path, bytes, 0o600);
    },
    async create(bytes) {
      createExclusive(path, bytes);
    },
    lock: () => acquireLock(`${path}.lock`, lockTimeoutMs),
  };
}

/**
 * Writes a new file that must not exist yet: the complete file is written and
 * synced under a temp name, then hard-linked to `path`, which fails if `path`
 * exists. A crash never leaves a half-written keystore under the real name.
 */
function createExclusive(path: string, data: Uint8Array): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    let off = 0;
    while (off < data.byteLength) off += writeSync(fd, data, off, data.byteLength - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(tmp, path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') {
      rmSync(tmp, { force: true });
      throw new KeylockError('exists', `${path}: expected no file there, got an existing one`);
    }
    // File systems without hard links (FAT, some network mounts): check, then rename.
    if (exists(path)) {
      rmSync(tmp, { force: true });
      throw new KeylockError('exists', `${path}: expected no file there, got an existing one`);
    }
    renameSync(tmp, path);
    return;
  }
  rmSync(tmp, { force: true });
  const dfd = (() => { try { return openSync(dir, 'r'); } catch { return -1; } })();
  if (dfd >= 0) {
    try { fsyncSync(dfd); } catch { /* not supported on every file system */ } finally { closeSync(dfd); }
  }
}

function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Age after which a lock file with no readable pid counts as left behind by a crash. */
const EMPTY_LOCK_STALE_MS = 10_000;

async function acquireLock(lockPath: string, timeoutMs: number): Promise<() => void> {
  const deadline = Date.now() + timeoutMs;
  let delay = 2;
  for (;;) {
    try {
      const fd = openSync(lockPath, 'wx', 0o600);
      try {
        writeSync(fd, `${process.pid}\n`);
      } finally {
        closeSync(fd);
      }
      return () => rmSync(lockPath, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    if (breakIfStale(lockPath)) continue;
    if (Date.now() >= deadline) {
      throw new KeystoreBusyError(`${lockPath}: expected to take the keystore's writer lock within ${timeoutMs} ms, got it still held by pid ${readPid(lockPath) ?? '?'}`);
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 100);
  }
}

function readPid(lockPath: string): number | undefined {
  let fd = -1;
  try {
    fd = openSync(lockPath, 'r');
    const buf = Buffer.alloc(32);
    const n = readSync(fd, buf, 0, buf.length, 0);
    const pid = Number.parseInt(buf.subarray(0, n).toString('utf8').trim(), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

/**
 * Removes a lock whose owner is gone: its pid no longer exists on this host, or
 * it holds no pid and is older than a crash window. Pids only mean something on
 * one host: a keystore shared over a network mount needs another lock.
 */
function breakIfStale(lockPath: string): boolean {
  const pid = readPid(lockPath);
  let stale = false;
  if (pid === undefined) {
    try {
      stale = Date.now() - statSync(lockPath).mtimeMs > EMPTY_LOCK_STALE_MS;
    } catch {
      return true; // vanished meanwhile: just retry
    }
  } else if (pid !== process.pid) {
    try {
      process.kill(pid, 0);
    } catch (e) {
      stale = (e as NodeJS.ErrnoException).code === 'ESRCH';
    }
  }
  if (stale) rmSync(lockPath, { force: true });
  return stale;
}

/** Reads a whole file; `undefined` when it does not exist. */
export function readFileIfExists(path: string): Uint8Array | undefined {
  try {
    const b = readFileSync(path);
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/**
 * Creates a secret file with mode 0600 that must not exist yet (O_EXCL through
 * `createExclusive`), so two initialisations never overwrite each other's key.
 */
export function createSecretFile(path: string, data: Uint8Array): void {
  createExclusive(path, data);
}
