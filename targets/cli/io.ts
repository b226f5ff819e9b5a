/** File helpers for the CLI: clear errors for missing files, atomic writes. */
import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../../keystore/atomic.ts';
import { parseUnlock, type UnlockProvider } from '../../keystore/unlock.ts';
import { CliError, UsageError } from './command.ts';

/** Reads a file, turning "no such file" into a CLI error that names it. */
export function readInput(path: string, what: string): Uint8Array {
  try {
    const b = readFileSync(path);
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new CliError(`${what} not found: ${path}`);
    if (code === 'EISDIR') throw new CliError(`${what} is a directory, expected a file: ${path}`);
    throw e;
  }
}

/** Writes a file atomically (never a partial file); secrets get mode 0600. */
export function writeOutput(path: string, data: Uint8Array, secret = false): void {
  writeFileAtomic(path, data, secret ? 0o600 : 0o644);
}

/** A required string flag. */
export function req(values: Record<string, unknown>, name: string, usage: string): string {
  const v = values[name];
  if (typeof v !== 'string' || !v) throw new UsageError(`--${name} is required`, `usage: keylock ${usage}`);
  return v;
}

/**
 * An optional integer flag, at least `min`. Digits only: `Number()` would also
 * take "", " 3", "0x10" and "1e3", which are typos more often than intent.
 */
export function intFlag(values: Record<string, unknown>, name: string, min = 1, usage?: string): number | undefined {
  const v = values[name];
  if (v === undefined) return undefined;
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`--${name} must be an integer >= ${min}, got "${String(v)}"`, usage ? `usage: keylock ${usage}` : `give --${name} a whole number such as ${min + 1}`);
  }
  return n;
}

/** An optional finite number flag, at least `min` (e.g. a tolerance). */
export function numFlag(values: Record<string, unknown>, name: string, min: number, usage: string): number | undefined {
  const v = values[name];
  if (v === undefined) return undefined;
  // Number('') is 0 and Number(' ') too: an empty value is a mistake, not zero.
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  if (!Number.isFinite(n) || n < min) throw new UsageError(`--${name} must be a number >= ${min}, got "${String(v)}"`, `e.g. --${name} 1e-5; usage: keylock ${usage}`);
  return n;
}

/** The spellings `--unlock` takes, for hints. */
export const UNLOCK_SPECS = 'file:PATH, env:VAR, pass:env:VAR or pass:file:PATH';

/**
 * The required `--unlock` flag, parsed. parseUnlock only reads the spec string
 * (no file or variable is touched yet), so any RangeError it throws is about
 * the spec the user typed: a usage error, not a failure to unlock.
 */
export function unlockFlag(values: Record<string, unknown>, usage: string): UnlockProvider {
  const spec = req(values, 'unlock', usage);
  try {
    return parseUnlock(spec);
  } catch (e) {
    if (e instanceof RangeError) throw new UsageError(`--unlock: ${e.message}`, `--unlock takes ${UNLOCK_SPECS}`);
    throw e;
  }
}

/** Longest id keylock files hold (keystore/grant.ts `checkId`). */
const MAX_ID = 256;

/** Checks an id typed on the command line (model, device, grant): non-empty, at most 256 characters. */
export function checkIdFlag(flag: string, v: string): string {
  if (v.length === 0 || v.length > MAX_ID) {
    throw new UsageError(`--${flag}: expected an id of 1 to ${MAX_ID} characters, got ${v.length ? `${v.length} characters` : 'an empty one'}`, `ids are short names, e.g. --${flag} mnist-v2`);
  }
  return v;
}
