/**
 * The Node file store of a keystore, and the few file reads the unlock
 * providers need. Loaded lazily, so browser bundles never touch `node:fs`.
 */
import { closeSync, linkSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fsyncDir, writeFileAtomic, writeTempFile } from './atomic.ts';
import { decodeCounter, encodeCounter, type MonotonicCounter } from './counter.ts';
import { decodeAttempts, encodeAttempts, type AttemptStore } from './attempts.ts';
import { KeylockError, KeystoreBusyError } from './errors.ts';
import type { KeystoreStorage } from './storage.ts';

/** Options of the file store. */
export interface FileStorageOptions {
  /** How long a writer waits for another writer's lock before `KeystoreBusyError` (default 10 s). */
  lockTimeoutMs?: number;
  /**
   * The counter the generation must equal: default a file counter at `PATH.counter`
   * (stops a restore of the `.kls` alone); pass a hardware counter, or `false` for none.
   */
  counter?: MonotonicCounter | false;
  /** Where wrong unlock secrets are counted: default `PATH.attempts`; `false` for no lockout. */
  attempts?: AttemptStore | false;
}

/**
 * A keystore in one file, replaced atomically (temp file, fsync, rename, fsync
 * folder) with mode 0600. Writers serialise on `PATH.lock`, created with
 * O_EXCL and holding the writer's pid; a lock whose pid is gone is broken.
 * Beside it: `PATH.counter` (the generation counter) and `PATH.attempts`
 * (wrong unlock secrets), unless other ones are given, and a large revocation
 * list as `PATH.revocation.<hash>.klr` (side files).
 */
export function fileStorage(path: string, opts: FileStorageOptions = {}): KeystoreStorage {
  const lockTimeoutMs = opts.lockTimeoutMs ?? 10_000;
  const counter = opts.counter === undefined ? fileCounter(`${path}.counter`) : opts.counter || undefined;
  const attempts = opts.attempts === undefined ? fileAttempts(`${path}.attempts`) : opts.attempts || undefined;
  return {
    ...(counter ? { counter } : {}),
    ...(attempts ? { attempts } : {}),
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
    side: {
      async read(name) {
        return readFileIfExists(sidePath(path, name));
      },
      async write(name, bytes) {
        writeFileAtomic(sidePath(path, name), bytes, 0o600);
      },
      async remove(name) {
        rmSync(sidePath(path, name), { force: true });
        fsyncDir(dirname(path));
      },
    },
    async lock() {
      const release = await acquireLock(`${path}.lock`, lockTimeoutMs);
      sweepTemps(path);
      return release;
    },
  };
}

/** `PATH.NAME`, for a side file name of the keystore's own making. */
function sidePath(path: string, name: string): string {
  if (!/^[a-z0-9][a-z0-9.-]{0,99}$/.test(name)) throw new RangeError(`side file name: expected [a-z0-9.-], got "${name}"`);
  return `${path}.${name}`;
}

/**
 * Removes temp files that writers of this keystore and its counter left when
 * they were killed between creating and renaming them. Called with the writer
 * lock held: every such write happens under the lock, so none is in flight.
 */
function sweepTemps(path: string): void {
  const dir = dirname(path);
  const base = basename(path).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const stale = new RegExp(`^\\.${base}(\\.counter|\\.revocation\\.[0-9a-f]+\\.klr)?\\.[0-9a-f]{12}\\.tmp$`);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) if (stale.test(n)) rmSync(join(dir, n), { force: true });
}

/**
 * A monotonic counter in a small CBOR file (counter.ts), replaced atomically.
 * A missing file reads as 0. It can be copied back along with the keystore:
 * see counter.ts for what it does and does not stop.
 */
export function fileCounter(path: string): MonotonicCounter {
  const read = (): number => {
    const b = readFileIfExists(path);
    return b === undefined ? 0 : decodeCounter(b);
  };
  return {
    where: path,
    async read() { return read(); },
    async increment() {
      const n = read() + 1;
      writeFileAtomic(path, encodeCounter(n), 0o600);
      return n;
    },
  };
}

/** The wrong-secret record in a small CBOR file (attempts.ts); deleted when it drops to 0. */
export function fileAttempts(path: string): AttemptStore {
  return {
    where: path,
    async read() {
      const b = readFileIfExists(path);
      return b === undefined ? { failures: 0, last: 0 } : decodeAttempts(b);
    },
    async write(r) {
      if (r.failures === 0) rmSync(path, { force: true });
      else writeFileAtomic(path, encodeAttempts(r), 0o600);
    },
  };
}

/**
 * Writes a new file that must not exist yet: the complete file is written and
 * synced under a temp name, then hard-linked to `path`, which fails if `path`
 * exists. A crash never leaves a half-written keystore under the real name.
 */
function createExclusive(path: string, data: Uint8Array): void {
  const tmp = writeTempFile(path, data, 0o600);
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
  fsyncDir(dirname(path));
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
 *
 * Breakers serialise on `LOCK.break` (O_EXCL) and read the pid again under it:
 * without that, two waiters that both read a dead holder's pid could both
 * remove "the" lock, the second removing the live lock the first had just
 * taken, and both would then write. A break lock older than the crash window
 * was left by a breaker that died, and is removed.
 */
function breakIfStale(lockPath: string): boolean {
  const breakPath = `${lockPath}.break`;
  try {
    closeSync(openSync(breakPath, 'wx', 0o600));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    try {
      if (Date.now() - statSync(breakPath).mtimeMs > EMPTY_LOCK_STALE_MS) rmSync(breakPath, { force: true });
    } catch {
      // Gone meanwhile: the next round takes it.
    }
    return false;
  }
  try {
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
  } finally {
    rmSync(breakPath, { force: true });
  }
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
