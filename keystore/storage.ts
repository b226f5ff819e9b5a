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
}

/** A keystore held in memory (tests, browsers that persist `toBytes()` themselves). */
export function memoryStorage(initial?: Uint8Array): KeystoreStorage & { bytes: Uint8Array | undefined } {
  const s = {
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

