/**
 * A monotonic counter kept outside the keystore file, so that putting an older
 * copy of the `.kls` back is noticed even when no process had it open: the
 * keystore's generation must equal the counter (docs/SPEC.md, "Keystore").
 *
 * The keystore writes the file first and advances the counter second; a crash
 * between the two leaves the file one generation ahead, which the next open
 * accepts and the next write repairs. Any other difference is a RollbackError.
 *
 * The file counter (filestore.ts) is the default for keystores on disk. It lives
 * next to the keystore, so it stops a copy of the `.kls` alone being restored,
 * not an attacker who restores (or edits) both files. A TPM NV counter or a
 * secure element's counter, wired in through this interface, cannot be set back.
 */
import { encodeCbor } from './cbor.ts';
import { parseFormat } from './envelope.ts';

/** A counter that only goes up (TPM2_NV_Increment, a secure element, a file). */
export interface MonotonicCounter {
  /** Human-readable location, for messages. */
  readonly where: string;
  /** The current value; 0 for a counter never incremented. */
  read(): Promise<number>;
  /** Adds one and resolves to the new value. */
  increment(): Promise<number>;
}

/** A counter in memory (tests; browsers that keep it elsewhere). */
export function memoryCounter(start = 0): MonotonicCounter & { value: number } {
  if (!Number.isSafeInteger(start) || start < 0) throw new RangeError(`counter start must be a non-negative integer, got ${start}`);
  const c = {
    where: 'memory counter',
    value: start,
    async read() { return c.value; },
    async increment() { return ++c.value; },
  };
  return c;
}

/** Format name of the counter file. */
export const COUNTER_FORMAT = 'keylock/kls-counter';
/** Largest counter file accepted. */
export const MAX_COUNTER_BYTES = 256;

/** Encodes a counter file: `{ format: "keylock/kls-counter", version: 1, value: uint }`. */
export function encodeCounter(value: number): Uint8Array {
  return encodeCbor({ format: COUNTER_FORMAT, version: 1, value });
}

/** Decodes a counter file (FormatError, UnsupportedVersionError, SizeLimitError when it is not one). */
export function decodeCounter(bytes: Uint8Array): number {
  return parseFormat(bytes, COUNTER_FORMAT, 1, MAX_COUNTER_BYTES).uint('value');
}
