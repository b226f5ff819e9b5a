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
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
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

/** Inputs handed to `run()` do not match the model's declared inputs. */
export class InputMismatchError extends KeylockError {
  constructor(message: string) {
    super('input-mismatch', message);
  }
}

/** The asked-for backend cannot run here; keylock never falls back silently. */
export class BackendUnavailableError extends KeylockError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('backend-unavailable', message, options);
  }
}

/** Shorthand for "expected X, got Y" messages. */
export function expectedGot(what: string, expected: unknown, got: unknown): string {
  return `${what}: expected ${String(expected)}, got ${String(got)}`;
}
