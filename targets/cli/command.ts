/** What every CLI command is made of: its declaration, and the two errors the CLI reports with a hint. */
import type { ParseArgsConfig } from 'node:util';

/** A usage mistake: wrong flags or arguments (exit 2). */
export class UsageError extends Error {
  constructor(message: string, readonly hint?: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** An error the CLI reports with a hint (exit 1, or `exitCode`). */
export class CliError extends Error {
  constructor(message: string, readonly hint?: string, readonly exitCode = 1) {
    super(message);
    this.name = 'CliError';
  }
}

/** What a command declares: its flags and what it does. */
export interface Command {
  summary: string;
  usage: string;
  options: NonNullable<ParseArgsConfig['options']>;
  /** How many positional arguments it takes: [min, max]. */
  positionals: [number, number];
  /** `raw` is the command's own arguments, as typed (for flags whose meaning depends on order). */
  run(args: { values: Record<string, string | boolean | string[] | undefined>; positionals: string[]; raw: string[] }): Promise<number | void>;
}
