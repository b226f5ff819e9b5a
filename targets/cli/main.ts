/**
 * `keylock <command>`: the CLI for vendors (keygen, lock, grant, revoke, ...)
 * and devices (device init, install, run). Errors go to stderr as
 * `keylock: error: …` and `keylock: hint: …`.
 *
 * Exit codes: 0 ok, 1 error (bad file, failed check), 2 usage (a wrong or
 * missing flag or argument), 3 the model is halted or disabled, 4 `run --expect`
 * found outputs that differ from the expected ones.
 */
import { parseArgs } from 'node:util';
import { KeylockError } from '../../keystore/errors.ts';
import { LockOptionError } from '../../models/lock/types.ts';
import { COMMANDS } from './commands.ts';
import { CliError, UsageError, type Command } from './command.ts';

export { CliError, UsageError, type Command };

function help(): string {
  const lines = ['usage: keylock <command> [options]', '', 'commands:'];
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(16)} ${c.summary}`);
  lines.push('', 'keylock <command> --help shows a command\'s options.');
  return lines.join('\n');
}

/** Runs the CLI; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  let [name, ...rest] = argv;
  if (name === 'device' && rest[0] && !rest[0].startsWith('-')) {
    name = `device ${rest[0]}`;
    rest = rest.slice(1);
  }
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(help() + '\n');
    return name ? 0 : 2;
  }
  const cmd = COMMANDS[name];
  try {
    if (!cmd) throw new UsageError(`unknown command "${name}"`, 'run `keylock --help` for the list of commands');
    if (rest.includes('--help') || rest.includes('-h')) {
      process.stdout.write(`usage: keylock ${cmd.usage}\n`);
      return 0;
    }
    let parsed;
    try {
      parsed = parseArgs({ args: rest, options: cmd.options, allowPositionals: true, strict: true });
    } catch (e) {
      throw new UsageError((e as Error).message, `usage: keylock ${cmd.usage}`);
    }
    const [min, max] = cmd.positionals;
    if (parsed.positionals.length < min || parsed.positionals.length > max) {
      throw new UsageError(`${name} takes ${min === max ? min : `${min} to ${max}`} argument(s), got ${parsed.positionals.length}`, `usage: keylock ${cmd.usage}`);
    }
    try {
      return (await cmd.run({ ...(parsed as Omit<Parameters<Command['run']>[0], 'raw'>), raw: rest })) ?? 0;
    } catch (e) {
      throw asUsage(e, cmd);
    }
  } catch (e) {
    return report(e);
  }
}

/**
 * Usage errors get the command's usage line when they carry no hint of their
 * own, so every one ends with a hint. A LockOptionError is the lock library
 * refusing an option value, i.e. a flag: it becomes a usage error too. Other
 * RangeErrors are left alone, since they may come from a bug or a bad file.
 */
function asUsage(e: unknown, cmd: Command): unknown {
  if (e instanceof UsageError && !e.hint) return new UsageError(e.message, `usage: keylock ${cmd.usage}`);
  if (e instanceof LockOptionError) return new UsageError(e.message, `${e.flag} takes ${e.expected}; usage: keylock ${cmd.usage}`);
  return e;
}

function report(e: unknown): number {
  const err = (m: string): void => { process.stderr.write(`keylock: error: ${m}\n`); };
  const hint = (m: string | undefined): void => { if (m) process.stderr.write(`keylock: hint: ${m}\n`); };
  if (e instanceof UsageError) {
    err(e.message); hint(e.hint);
    return 2;
  }
  if (e instanceof CliError) {
    err(e.message); hint(e.hint);
    return e.exitCode;
  }
  if (e instanceof KeylockError) {
    err(`${e.message} (${e.code})`); hint(e.hint);
    return 1;
  }
  const fsErr = e as NodeJS.ErrnoException;
  if (fsErr && typeof fsErr.code === 'string' && fsErr.path) {
    err(`${fsErr.code === 'ENOENT' ? 'no such file' : fsErr.code}: ${fsErr.path}`);
    return 1;
  }
  err(e instanceof Error ? `${e.name}: ${e.message}` : String(e));
  if (process.env.KEYLOCK_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
  return 1;
}
