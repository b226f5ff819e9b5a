/** File helpers for the CLI: clear errors for missing files, atomic writes. */
import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../../keystore/atomic.ts';
import { CliError, UsageError } from './main.ts';

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

/** An optional positive integer flag. */
export function intFlag(values: Record<string, unknown>, name: string, min = 1): number | undefined {
  const v = values[name];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got "${String(v)}"`);
  return n;
}
