/**
 * Typed errors shared by the device runtime, the keystore and the vendor tools.
 *
 * Every error says what was expected and what was found. Callers branch on the
 * class (or on `code`, which survives structured cloning across IPC/workers),
 * never on the message text.
 */

/** Base class of every keylock error. `code` is stable across versions. */
export class KeylockError extends Error {
  /** Stable, machine-readable name of the failure (e.g. `key-mismatch`). */
  readonly code: string;
  /** What the user can do about it, when there is something (the CLI prints it as `hint:`). */
  readonly hint?: string;
  constructor(code: string, message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, options);
    this.code = code;
    if (options?.hint) this.hint = options.hint;
  }
}

/** A file does not parse: wrong magic, truncated, trailing bytes, bad field types. */
export class FormatError extends KeylockError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('format', message, options);
  }
}

/** A file or field is larger than the documented limit. */
export class SizeLimitError extends KeylockError {
  constructor(what: string, limit: number, got: number) {
    super('size-limit', `${what} is ${got} bytes; the limit is ${limit}`);
  }
}

/** A file's version is one this build does not know. */
export class UnsupportedVersionError extends KeylockError {
  constructor(format: string, expected: number | string, got: unknown) {
    super('unsupported-version', `${format}: expected version ${expected}, got ${String(got)}`);
  }
}

/** A signature, MAC or digest does not match: the bytes were changed. */
export class TamperedError extends KeylockError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('tampered', message, options);
  }
}

/** The model key does not open this model (key check value or MAC mismatch). */
export class KeyMismatchError extends KeylockError {
  constructor(message: string) {
    super('key-mismatch', message);
  }
}

/** A model or tensor that a lock (or backend) cannot handle. */
export class UnsupportedModelError extends KeylockError {
  constructor(message: string) {
    super('unsupported-model', message);
  }
}

/**
 * A model key whose derived lock would leave the model unchanged (a shuffle
 * permutation that is the identity, a signflip key that negates no channel).
 * Thrown by the vendor's lockers for a key the caller chose; a key the locker
 * draws itself is redrawn instead.
 */
export class WeakKeyError extends KeylockError {
  constructor(message: string) {
    super('weak-key', message);
  }
}

/** Inputs handed to `run()` do not match the model's declared inputs. */
export class InputMismatchError extends KeylockError {
  constructor(message: string) {
    super('input-mismatch', message);
  }
}

/** The asked-for backend cannot run here; keylock never falls back silently. */
export class BackendUnavailableError extends KeylockError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super('backend-unavailable', message, options);
  }
}

/** Shorthand for "expected X, got Y" messages. */
export function expectedGot(what: string, expected: unknown, got: unknown): string {
  return `${what}: expected ${String(expected)}, got ${String(got)}`;
}

/** The canary's recorded outputs did not come out of the unlocked model. */
export class CanaryMismatchError extends KeylockError {
  constructor(message: string) {
    super('canary-mismatch', message);
  }
}

/** Formats Unix seconds for messages (ISO time plus the raw number). */
function when(t: number): string {
  const d = new Date(t * 1000);
  return Number.isFinite(d.getTime()) ? `${d.toISOString()} (${t})` : String(t);
}

/** A grant is outside its licence window: expired, or not valid yet. */
export class ExpiredGrantError extends KeylockError {
  constructor(readonly modelId: string, readonly notBefore: number, readonly notAfter: number, readonly now: number) {
    super('expired', now < notBefore
      ? `the grant for model "${modelId}" is not valid yet: expected a time from ${when(notBefore)} to ${when(notAfter)}, got ${when(now)}`
      : `the grant for model "${modelId}" has expired: expected a time from ${when(notBefore)} to ${when(notAfter)}, got ${when(now)}`);
  }
}

/** A grant, model or device is on the installed revocation list. */
export class RevokedError extends KeylockError {
  constructor(message: string) {
    super('revoked', message);
  }
}

/** A file would move a monotonic state backwards (older revocation list, older keystore). */
export class RollbackError extends KeylockError {
  constructor(message: string) {
    super('rollback', message);
  }
}

/** A vendor token that works once was presented again. */
export class ReplayError extends KeylockError {
  constructor(message: string) {
    super('replay', message);
  }
}

/** The model was disabled after too many failures; only a vendor reinstate token lifts it. */
export class DisabledError extends KeylockError {
  constructor(readonly modelId: string, readonly at: number, readonly reason: string) {
    super('disabled', `model "${modelId}" is disabled on this device since ${when(at)} (${reason}); expected a vendor reinstate token to lift it`);
  }
}

/** A grant or token was issued for another device. */
export class WrongDeviceError extends KeylockError {
  constructor(message: string) {
    super('wrong-device', message);
  }
}

/** A file was signed by a vendor key this device has not pinned. */
export class UntrustedSignerError extends KeylockError {
  constructor(message: string) {
    super('untrusted-signer', message);
  }
}

/** The keystore's storage key could not be obtained, or does not open the keystore. */
export class UnlockError extends KeylockError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('unlock-failed', message, options);
  }
}

/** The keystore holds no grant for the model. */
export class NoGrantError extends KeylockError {
  constructor(message: string) {
    super('no-grant', message);
  }
}

/** Another writer holds the keystore's lock file for longer than the wait allows. */
export class KeystoreBusyError extends KeylockError {
  constructor(message: string) {
    super('busy', message);
  }
}

/** Too many wrong unlock secrets: the keystore refuses further attempts until `retryAt` (Unix seconds). */
export class LockoutError extends KeylockError {
  constructor(readonly failures: number, readonly retryAt: number, now: number) {
    super('locked-out', `keystore unlock: ${failures} wrong secret(s) in a row; expected no attempt before ${when(retryAt)}, got one at ${when(now)} (${Math.max(0, retryAt - now)} s early)`);
  }
}

/** A run was aborted by its caller's `AbortSignal` (before it started, or while it ran: its outputs are dropped). */
export class RunAbortedError extends KeylockError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('aborted', message, options);
  }
}

/** A run did not finish within its `deadlineMs`; its outputs, if they come later, are dropped. */
export class DeadlineError extends KeylockError {
  constructor(readonly deadlineMs: number, readonly elapsedMs: number, readonly started: boolean) {
    super('deadline', started
      ? `run: expected outputs within ${deadlineMs} ms, got none after ${elapsedMs.toFixed(1)} ms (the run had started; its outputs are dropped)`
      : `run: expected to start within ${deadlineMs} ms, got still queued after ${elapsedMs.toFixed(1)} ms (not run)`);
  }
}

/**
 * The thread that held the model's keys and session died (killed, out of
 * memory, crashed): the model halts with this error; a new load starts a new one.
 */
export class WorkerCrashedError extends KeylockError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('worker-crashed', message, options);
  }
}

/**
 * Each class's `name`, set on its prototype from this table's keys: property
 * names survive minification, class names do not, so device bundles need no
 * esbuild `keepNames` (about 11 KB of every bundle) for `err.name` to read
 * `KeyMismatchError`. A class missing here is caught by test/errors.test.ts.
 */
const NAMED: Record<string, { prototype: Error }> = {
  KeylockError,
  FormatError,
  SizeLimitError,
  UnsupportedVersionError,
  TamperedError,
  KeyMismatchError,
  UnsupportedModelError,
  WeakKeyError,
  InputMismatchError,
  BackendUnavailableError,
  CanaryMismatchError,
  ExpiredGrantError,
  RevokedError,
  RollbackError,
  ReplayError,
  DisabledError,
  WrongDeviceError,
  UntrustedSignerError,
  UnlockError,
  NoGrantError,
  KeystoreBusyError,
  LockoutError,
  RunAbortedError,
  DeadlineError,
  WorkerCrashedError,
};
for (const [name, cls] of Object.entries(NAMED)) Object.defineProperty(cls.prototype, 'name', { value: name, writable: true, configurable: true });

/** An error as it crosses a thread boundary (structured clone keeps no class): see `errorToWire`. */
export interface WireError {
  name: string;
  code?: string;
  message: string;
  hint?: string;
  /** Own enumerable fields of the error (e.g. ExpiredGrantError's window), copied as they are. */
  fields?: Record<string, unknown>;
}

/** Plain data for `postMessage`; `errorFromWire` gives the typed error back on the other side. */
export function errorToWire(e: unknown): WireError {
  if (e instanceof KeylockError) {
    const fields: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(e)) if (k !== 'code' && k !== 'hint' && (typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean')) fields[k] = v;
    return { name: e.name, code: e.code, message: e.message, hint: e.hint, fields };
  }
  return { name: (e as Error)?.name ?? 'Error', message: (e as Error)?.message ?? String(e) };
}

/** The typed error `w` came from: the same class (from the name table), code, message, hint and fields. */
export function errorFromWire(w: WireError): Error {
  const cls = Object.hasOwn(NAMED, w.name) ? NAMED[w.name] : undefined;
  if (!cls || w.code === undefined) {
    const e = w.name === 'TypeError' ? new TypeError(w.message) : w.name === 'RangeError' ? new RangeError(w.message) : new Error(w.message);
    return e;
  }
  const e = Object.create(cls.prototype) as KeylockError & Record<string, unknown>;
  Object.defineProperty(e, 'message', { value: w.message, writable: true, configurable: true });
  Object.defineProperty(e, 'stack', { value: `${w.name}: ${w.message}\n    (from the model's worker thread)`, writable: true, configurable: true });
  Object.assign(e, w.fields ?? {}, { code: w.code });
  if (w.hint !== undefined) Object.assign(e, { hint: w.hint });
  return e;
}
