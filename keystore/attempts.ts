/**
 * Wrong unlock secrets, counted outside the keystore: a keystore that does not
 * open cannot record anything inside itself, so failed attempts go to a small
 * unsealed record next to it (`F.kls.attempts` on disk) and, past a number of
 * free attempts, each further try waits twice as long as the one before.
 *
 * What this stops: guessing a passphrase through keylock itself (the CLI, an
 * app's unlock prompt), across restarts. What it does not: anyone who copies
 * the `.kls` and guesses offline (scrypt's cost is the defence there; raw
 * 32-byte keys cannot be guessed), nor anyone who can delete the record or set
 * the clock forward. A TPM's dictionary-attack lockout is the hardware answer.
 */
import { encodeCbor } from './cbor.ts';
import { parseFormat } from './envelope.ts';

/** Consecutive wrong secrets and the time of the last one (Unix seconds). */
export interface AttemptRecord {
  failures: number;
  last: number;
}

/** Where the record lives. */
export interface AttemptStore {
  readonly where: string;
  /** The record; `{ failures: 0, last: 0 }` when there is none. */
  read(): Promise<AttemptRecord>;
  /** Replaces the record (failures 0 may delete it). */
  write(r: AttemptRecord): Promise<void>;
}

/** How many wrong secrets are free, and how the wait grows after them. */
export interface LockoutPolicy {
  /** Wrong secrets allowed without any wait. */
  free: number;
  /** Wait after the first counted failure past `free`; doubles with each further one. */
  baseSeconds: number;
  /** Longest wait. */
  maxSeconds: number;
}

/** Five free attempts, then 1 s, 2 s, 4 s, ... up to one hour between attempts. */
export const DEFAULT_LOCKOUT: LockoutPolicy = { free: 5, baseSeconds: 1, maxSeconds: 3600 };

/** Checks a policy (RangeError on misuse). */
export function checkLockoutPolicy(p: LockoutPolicy): void {
  for (const k of ['free', 'baseSeconds', 'maxSeconds'] as const) {
    if (!Number.isSafeInteger(p?.[k]) || p[k] < 0) throw new RangeError(`lockout policy ${k}: expected a non-negative integer, got ${String(p?.[k])}`);
  }
}

/** The earliest time (Unix seconds) another attempt is allowed; 0 when there is no wait. */
export function retryAt(r: AttemptRecord, p: LockoutPolicy): number {
  if (r.failures < p.free || r.failures === 0) return 0;
  const doublings = Math.min(r.failures - p.free, 40);
  return r.last + Math.min(p.baseSeconds * 2 ** doublings, p.maxSeconds);
}

/** A record in memory (tests, or apps that persist it themselves). */
export function memoryAttempts(): AttemptStore & { record: AttemptRecord } {
  const s = {
    where: 'memory attempts',
    record: { failures: 0, last: 0 },
    async read() { return { ...s.record }; },
    async write(r: AttemptRecord) { s.record = { ...r }; },
  };
  return s;
}

/** Format name of the attempts file. */
export const ATTEMPTS_FORMAT = 'keylock/kls-attempts';
/** Largest attempts file accepted. */
export const MAX_ATTEMPTS_BYTES = 256;

/** Encodes `{ format: "keylock/kls-attempts", version: 1, failures: uint, last: uint }`. */
export function encodeAttempts(r: AttemptRecord): Uint8Array {
  return encodeCbor({ format: ATTEMPTS_FORMAT, version: 1, failures: r.failures, last: r.last });
}

/** Decodes an attempts file (FormatError, UnsupportedVersionError, SizeLimitError when it is not one). */
export function decodeAttempts(bytes: Uint8Array): AttemptRecord {
  const f = parseFormat(bytes, ATTEMPTS_FORMAT, 1, MAX_ATTEMPTS_BYTES);
  return { failures: f.uint('failures'), last: f.uint('last') };
}
