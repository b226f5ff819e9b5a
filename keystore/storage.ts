/**
 * Where a keystore's sealed bytes live. The keystore itself only seals and
 * opens bytes; a file, an IndexedDB record or a buffer in memory stores them,
 * so browser targets reuse everything but this small interface. Nothing here
 * imports Node built-ins (the file store lives in filestore.ts).
 */
import { KeylockError } from './errors.ts';
import type { MonotonicCounter } from './counter.ts';
import type { AttemptStore } from './attempts.ts';

/** Backing store of one keystore. */
export interface KeystoreStorage {
  /** Human-readable location, for messages. */
  readonly where: string;
  /** The stored bytes, whole. */
  read(): Promise<Uint8Array>;
  /** Replaces the stored bytes all at once (readers see the old or the new bytes, never a mix). */
  write(bytes: Uint8Array): Promise<void>;
  /** Stores the first version; MUST fail (KeylockError code `exists`) when something is stored already. */
  create(bytes: Uint8Array): Promise<void>;
  /**
   * Takes an exclusive writer lock across processes, when the store has such a
   * thing; resolves to the function that releases it.
   */
  lock?(): Promise<() => void>;
  /**
   * A monotonic counter the keystore's generation must equal (counter.ts). Without
   * one, a restored older copy is only noticed by a process that has the keystore open.
   */
  counter?: MonotonicCounter;
  /** Where wrong unlock secrets are counted (attempts.ts); without one there is no lockout. */
  attempts?: AttemptStore;
  /**
   * Files kept beside the keystore, named by it (a large revocation list, as
   * the signed `.klr` it came in: docs/SPEC.md). Each write is whole or absent.
   * Without this, everything lives in the sealed body.
   */
  side?: SideFiles;
}

/** Named byte blobs beside a keystore; `name` is `[a-z0-9.-]+`. */
export interface SideFiles {
  /** The bytes, or undefined when there is no such file. */
  read(name: string): Promise<Uint8Array | undefined>;
  /** Writes the file whole (atomically) and durably. */
  write(name: string, bytes: Uint8Array): Promise<void>;
  /** Removes it, if it is there. */
  remove(name: string): Promise<void>;
}

/**
 * A keystore held in memory (tests, browsers that persist `toBytes()` themselves).
 * `sideFiles`: keep side files too (in a Map; `toBytes()` does not carry them,
 * so only for callers that keep this storage object).
 */
export function memoryStorage(initial?: Uint8Array, opts: { sideFiles?: boolean } = {}): KeystoreStorage & { bytes: Uint8Array | undefined; files?: Map<string, Uint8Array> } {
  const files = new Map<string, Uint8Array>();
  const side: SideFiles = {
    async read(name) { return files.get(name)?.slice(); },
    async write(name, bytes) { files.set(name, bytes.slice()); },
    async remove(name) { files.delete(name); },
  };
  const s = {
    ...(opts.sideFiles ? { side, files } : {}),
    where: 'memory',
    bytes: initial ? initial.slice() : undefined,
    async read() {
      if (!s.bytes) throw new KeylockError('not-found', 'memory keystore: nothing stored yet');
      return s.bytes.slice();
    },
    async write(bytes: Uint8Array) {
      s.bytes = bytes.slice();
    },
    async create(bytes: Uint8Array) {
      if (s.bytes) throw new KeylockError('exists', 'memory keystore: expected an empty store, got an existing keystore');
      s.bytes = bytes.slice();
    },
  };
  return s;
}

