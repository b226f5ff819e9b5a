// Every usage mistake, for every command: `keylock: error: …` + `keylock: hint: …`, exit 2, no raw
// RangeError/TypeError. main() runs in this process (a spawn per case costs about a second);
// one spawned case checks the real launcher too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { COMMANDS } from '../targets/cli/commands.ts';
import { main, type Command } from '../targets/cli/main.ts';
import { LockOptionError } from '../models/lock/types.ts';
import { lockModel } from '../models/lock/index.ts';
import { randomBytes } from '../keystore/nacl.ts';
import { encodeVendorSecret } from '../keystore/keyfiles.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'keylock-usage-'));
/** A path in the temp dir; no file exists there unless a test made it, which is the point: flags are checked before files are read. */
const p = (f: string): string => join(dir, f);
const mlpOnnx = join(root, 'models/reference/mnist-mlp.onnx');

/**
 * Runs the CLI in this process, capturing stderr. Only stderr is swapped: the
 * test runner reports on stdout, and a usage error writes nothing there.
 */
async function cli(...argv: string[]): Promise<{ code: number; err: string }> {
  const write = process.stderr.write;
  let err = '';
  process.stderr.write = ((chunk: string | Uint8Array): boolean => {
    err += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    return true;
  }) as typeof process.stderr.write;
  try {
    return { code: await main(argv), err };
  } finally {
    process.stderr.write = write;
  }
}

function assertUsage(r: { code: number; err: string }, what: string, mentions?: RegExp): void {
  const show = `${what}\n--- stderr ---\n${r.err}`;
  assert.equal(r.code, 2, `exit code: ${show}`);
  assert.match(r.err, /^keylock: error: \S.*\n/m, `error line: ${show}`);
  assert.match(r.err, /^keylock: hint: \S.*\n/m, `hint line: ${show}`);
  assert.doesNotMatch(r.err, /RangeError|TypeError/, `raw error name: ${show}`);
  if (mentions) assert.match(r.err.split('\n')[0], mentions, `the error names the flag: ${show}`);
}

/** A valid invocation (files may be missing) and the flags it cannot do without. */
interface Case {
  /** Arguments after the command name. */
  args: string[];
  required: string[];
}

const unlock = `file:${p('d.secret')}`;
const REQUIRED: Record<string, Case[]> = {
  keygen: [{ args: ['--out', p('vendor')], required: ['out'] }],
  lock: [
    { args: [p('m.onnx'), '--scheme', 'sealed', '--vendor', p('v.key'), '--out', p('m.klm'), '--key-out', p('m.key')], required: ['scheme', 'vendor', 'out', 'key-out'] },
    { args: ['--pipeline', p('spec.json'), '--scheme', 'sealed', '--vendor', p('v.key'), '--out', p('p.klp'), '--key-out', p('p.key')], required: ['pipeline', 'scheme', 'vendor', 'out', 'key-out'] },
  ],
  inspect: [{ args: [p('m.klm')], required: [] }],
  extract: [{ args: [p('m.klm'), '--out', p('x.onnx')], required: ['out'] }],
  grant: [
    { args: [p('m.klm'), '--model-key', p('m.key'), '--vendor', p('v.key'), '--device', p('d.pub'), '--out', p('g.klg')], required: ['model-key', 'vendor', 'device', 'out'] },
    { args: [p('m.klm'), '--model-key', p('m.key'), '--vendor', p('v.key'), '--devices', p('fleet.csv'), '--out-dir', p('grants')], required: ['model-key', 'vendor', 'devices', 'out-dir'] },
  ],
  revoke: [{ args: ['--vendor', p('v.key'), '--version', '2', '--out', p('r.klr')], required: ['vendor', 'version', 'out'] }],
  reinstate: [{ args: ['--vendor', p('v.key'), '--device', p('d.pub'), '--model', 'm1', '--out', p('t.klt')], required: ['vendor', 'device', 'model', 'out'] }],
  rotate: [
    { args: ['--vendor', p('v.key'), '--new', p('v2.key'), '--out', p('r.klv')], required: ['vendor', 'new', 'out'] },
    { args: ['--backup', p('b.key'), '--old', p('v.pub'), '--new', p('v2.key'), '--out', p('r.klv')], required: ['backup', 'old', 'new', 'out'] },
  ],
  resign: [{ args: [p('m.klm'), '--vendor', p('v2.key'), '--out', p('m2.klm')], required: ['vendor', 'out'] }],
  'device init': [{ args: ['--keystore', p('d.kls'), '--unlock', unlock, '--trust', p('v.pub'), '--pub-out', p('d.pub')], required: ['keystore', 'unlock', 'trust', 'pub-out'] }],
  'device show': [{ args: ['--keystore', p('d.kls'), '--unlock', unlock], required: ['keystore', 'unlock'] }],
  install: [{ args: [p('g.klg'), '--keystore', p('d.kls'), '--unlock', unlock], required: ['keystore', 'unlock'] }],
  run: [
    { args: [p('m.klm'), '--model-key', p('m.key'), '--inputs', p('in.cbor'), '--out', p('out.cbor')], required: ['model-key', 'inputs', 'out'] },
    { args: [p('m.klm'), '--keystore', p('d.kls'), '--unlock', unlock, '--inputs', p('in.cbor'), '--out', p('out.cbor')], required: ['keystore', 'unlock', 'inputs'] },
    { args: [p('m.klm'), '--model-key', p('m.key'), '--inputs', p('in.cbor'), '--expect', p('golden.cbor')], required: ['expect'] },
  ],
  // No required flag, and a valid invocation runs the whole demo: nothing to drop.
  demo: [],
  image: [{ args: ['--target', 'node', '--model', p('m.klm'), '--vendor', p('v.key'), '--out', p('img')], required: ['target', 'model', 'vendor', 'out'] }],
  'verify-image': [{ args: [p('img'), '--trust', p('v.pub')], required: ['trust'] }],
};

/**
 * What a usage line says is required: the flags outside `[...]` (optional) and
 * `(... | ...)` (alternatives), and the positional placeholders.
 */
function fromUsage(name: string, cmd: Command): { flags: string[]; positionals: string[] } {
  let u = cmd.usage;
  for (let prev = ''; prev !== u;) { prev = u; u = u.replace(/\[[^[\]]*\]/g, ''); }
  for (let prev = ''; prev !== u;) { prev = u; u = u.replace(/\([^()]*\)/g, ''); }
  const words = u.trim().split(/\s+/).slice(name.split(' ').length);
  const flags: string[] = [];
  const positionals: string[] = [];
  for (let i = 0; i < words.length; i++) {
    if (words[i].startsWith('--')) {
      const f = words[i].slice(2);
      flags.push(f);
      if (cmd.options[f]?.type === 'string' && words[i + 1] && !words[i + 1].startsWith('--')) i++;
    } else {
      positionals.push(words[i]);
    }
  }
  return { flags, positionals };
}

/** A case made from the usage line alone, for a command this file has no entry for (e.g. one added later). */
function derived(name: string, cmd: Command): Case {
  const u = fromUsage(name, cmd);
  const args = u.positionals.map((x) => p(x.split('|')[0]));
  for (const f of u.flags) args.push(`--${f}`, ...(cmd.options[f]?.type === 'string' ? [p(`${f}.arg`)] : []));
  return { args, required: u.flags };
}

/** `args` without `--flag` and its value (both spellings, `--flag v` and `--flag=v`). */
function without(args: string[], flag: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === `--${flag}`) { if (args[i + 1] !== undefined && !args[i + 1].startsWith('--')) i++; continue; }
    if (args[i].startsWith(`--${flag}=`)) continue;
    out.push(args[i]);
  }
  return out;
}

test('the table covers the usage lines: every flag a usage line requires is in the table', () => {
  for (const [name, cmd] of Object.entries(COMMANDS)) {
    const cases = REQUIRED[name];
    if (!cases) continue; // handled by derivation in the next test
    const listed = new Set(cases.flatMap((c) => c.required));
    for (const f of fromUsage(name, cmd).flags) assert.ok(listed.has(f), `${name}: usage "${cmd.usage}" requires --${f}, the table does not`);
  }
});

test('every command: each required flag missing is a usage error (exit 2, error + hint), naming the flag', async () => {
  let checked = 0;
  for (const [name, cmd] of Object.entries(COMMANDS)) {
    const known = REQUIRED[name] !== undefined;
    const cases = REQUIRED[name] ?? [derived(name, cmd)];
    for (const c of cases) {
      for (const flag of c.required) {
        const argv = [...name.split(' '), ...without(c.args, flag)];
        assertUsage(await cli(...argv), `keylock ${argv.join(' ')}`, known ? new RegExp(`--${flag}\\b`) : undefined);
        checked++;
      }
      const [min] = cmd.positionals;
      if (min > 0) {
        // The positional count is checked before anything else.
        const argv = [...name.split(' '), ...c.args.filter((a, i) => i >= min)];
        assertUsage(await cli(...argv), `keylock ${argv.join(' ')} (no ${min} positional)`);
      }
    }
  }
  assert.ok(checked >= 40, `checked ${checked} missing flags`);
  assert.deepEqual(readdirSync(dir), [], 'a usage error writes no file');
});

/** Bad values: each is an otherwise valid invocation (files may be missing: flags are checked first). */
const lockArgs = (model: string, ...more: string[]): string[] => ['lock', model, '--vendor', p('v.key'), '--out', p('m.klm'), '--key-out', p('m.key'), ...more];
const runArgs = (...more: string[]): string[] => ['run', p('m.klm'), '--inputs', p('in.cbor'), ...more];
const grantArgs = (...more: string[]): string[] => ['grant', p('m.klm'), '--model-key', p('m.key'), '--vendor', p('v.key'), '--device', p('d.pub'), '--out', p('g.klg'), ...more];
const BAD: [string[], RegExp][] = [
  [lockArgs(p('m.onnx'), '--scheme', 'shuffle', '--block', 'x'), /--block/],
  [lockArgs(p('m.onnx'), '--scheme', 'shuffle', '--block', '0'), /--block/],
  [lockArgs(p('m.onnx'), '--scheme', 'shuffle', '--block', '0x4'), /--block/],
  [lockArgs(p('m.onnx'), '--scheme', 'nope'), /unknown scheme "nope"/],
  [lockArgs(p('m.onnx'), '--scheme', 'sealed+sealed'), /twice/],
  [lockArgs(p('m.onnx'), '--scheme', '+'), /no scheme/],
  [lockArgs(p('m.tflite'), '--scheme', 'shuffle'), /--block/],
  [lockArgs(p('m.onnx'), '--scheme', 'shuffle+sealed'), /--block/],
  [lockArgs(p('m.onnx'), '--scheme', 'sealed', '--block', '4'), /--block applies to --scheme shuffle/],
  [lockArgs(p('m.onnx'), '--scheme', 'sealed', '--negpos'), /--negpos/],
  [lockArgs(p('m.onnx'), '--scheme', 'advparams'), /--data/],
  [lockArgs(p('m.onnx'), '--scheme', 'signflip', '--mode', 'sideways'), /--mode/],
  [lockArgs(p('m.tflite'), '--scheme', 'signflip', '--mode', 'input'), /--mode input/],
  [lockArgs(p('m.onnx'), '--scheme', 'signflip', '--units', '-1'), /--units/],
  [lockArgs(p('m.onnx'), '--scheme', 'sealed', '--on-invalid-key', 'explode'), /--on-invalid-key/],
  [lockArgs(p('m.onnx'), '--scheme', 'sealed', '--max-failures=-1'), /--max-failures/],
  [lockArgs(p('m.onnx'), '--scheme', 'sealed', '--canary-count', '2'), /--canary-count/],
  [lockArgs(p('m.onnx'), '--scheme', 'sealed', '--model-id='), /--model-id/],
  [lockArgs(p('m.pt'), '--scheme', 'sealed'), /\.onnx or \.tflite/],
  [lockArgs(p('m.onnx'), '--scheme', 'sealed', '--seed', '1.5'), /--seed/],
  [runArgs('--model-key', p('m.key'), '--out', p('o.cbor'), '--threads', '0'), /--threads/],
  [runArgs('--model-key', p('m.key'), '--out', p('o.cbor'), '--threads', 'two'), /--threads/],
  [runArgs('--model-key', p('m.key'), '--out', p('o.cbor'), '--backend', 'nope'), /--backend/],
  [runArgs('--keystore', p('d.kls'), '--unlock', 'bogus:x', '--out', p('o.cbor')), /--unlock/],
  [runArgs('--keystore', p('d.kls'), '--unlock', 'pass:hunter2', '--out', p('o.cbor')), /--unlock/],
  [runArgs('--keystore', p('d.kls'), '--unlock', unlock, '--model-key', p('m.key'), '--out', p('o.cbor')), /--keystore or --model-key/],
  [runArgs('--keystore', p('d.kls'), '--unlock', unlock, '--trust', p('v.pub'), '--out', p('o.cbor')), /--trust/],
  [runArgs('--model-key', p('m.key'), '--unlock', unlock, '--out', p('o.cbor')), /--unlock/],
  [runArgs('--model-key', p('m.key'), '--expect', p('g.cbor'), '--atol', 'x'), /--atol/],
  [runArgs('--model-key', p('m.key'), '--expect', p('g.cbor'), '--rtol=-1'), /--rtol/],
  [runArgs('--model-key', p('m.key'), '--expect', p('g.cbor'), '--atol='), /--atol/],
  [runArgs('--model-key', p('m.key'), '--out', p('o.cbor'), '--atol', '1'), /--atol goes with --expect/],
  [runArgs('--model-key', p('m.key'), '--out', p('o.cbor'), '--json'), /--json/],
  [grantArgs('--not-after', 'notadate'), /--not-after/],
  [grantArgs('--not-before', '1960-01-01T00:00:00Z'), /--not-before/],
  [grantArgs('--not-after', '99999999999999999999'), /--not-after/],
  [grantArgs('--not-before', '2030-01-01T00:00:00Z', '--not-after', '2029-01-01T00:00:00Z'), /--not-after/],
  [grantArgs('--days', '0'), /--days/],
  [grantArgs('--grace', '0'), /--grace/],
  [grantArgs('--grace', '2592001'), /--grace: expected at most 2592000 seconds/],
  [grantArgs('--devices', p('fleet.csv')), /not both/],
  [['grant', p('m.klm'), '--model-key', p('m.key'), '--vendor', p('v.key'), '--devices', p('fleet.txt'), '--out-dir', p('grants')], /--devices/],
  [['grant', p('m.klm'), '--model-key', p('m.key'), '--vendor', p('v.key'), '--devices', p('fleet.csv'), '--out', p('g.klg')], /expected a name ending in \.tar/],
  [grantArgs('--strict'), /--strict goes with --devices/],
  [grantArgs('--days', '3', '--not-after', '2030-01-01T00:00:00Z'), /--days or --not-after/],
  [['revoke', '--vendor', p('v.key'), '--version', '0', '--out', p('r.klr')], /--version/],
  [['revoke', '--vendor', p('v.key'), '--version', 'x', '--out', p('r.klr')], /--version/],
  [['revoke', '--vendor', p('v.key'), '--version', '3', 'g1', '--out', p('r.klr')], /unexpected argument/],
  [['revoke', '--vendor', p('v.key'), '--version', '3', '--grant=', '--out', p('r.klr')], /--grant/],
  [['device', 'init', '--keystore', p('d.kls'), '--unlock', 'bogus:x', '--trust', p('v.pub'), '--pub-out', p('d.pub')], /--unlock/],
  [['device', 'init', '--keystore', p('d.kls'), '--unlock', 'hook', '--trust', p('v.pub'), '--pub-out', p('d.pub')], /--unlock/],
  [['device', 'init', '--keystore', p('d.kls'), '--unlock', unlock, '--trust', p('v.pub'), '--pub-out', p('d.pub'), '--device-id='], /--device-id/],
  [['device', 'show', '--keystore', p('d.kls'), '--unlock', 'env:'], /--unlock/],
  [['install', p('g.klg'), '--keystore', p('d.kls'), '--unlock', 'file:'], /--unlock/],
  [['image', '--target', 'nope', '--model', p('m.klm'), '--vendor', p('v.key'), '--out', p('img')], /--target/],
  [['rotate', '--vendor', p('v.key'), '--backup', p('b.key'), '--new', p('v2.key'), '--out', p('r.klv')], /exactly one signer/],
  [['rotate', '--vendor', p('v.key'), '--old', p('v.pub'), '--new', p('v2.key'), '--out', p('r.klv')], /--old/],
  [['frobnicate'], /unknown command/],
  [['lock', p('m.onnx'), '--bogus'], /bogus/],
  [['lock', p('m.onnx'), '--scheme'], /--scheme/],
  [['inspect'], /argument/],
];

test('bad flag values are usage errors too (exit 2, error + hint, no raw RangeError/TypeError)', async () => {
  for (const [argv, mentions] of BAD) assertUsage(await cli(...argv), `keylock ${argv.join(' ')}`, mentions);
  assert.deepEqual(readdirSync(dir), [], 'a usage error writes no file');
});

test('real files: shuffle without --block on the reference .onnx is a usage error, before any lock work', async () => {
  writeFileSync(p('vendor.key'), encodeVendorSecret(randomBytes(32)));
  const r = await cli('lock', mlpOnnx, '--scheme', 'shuffle', '--vendor', p('vendor.key'), '--out', p('s.klm'), '--key-out', p('s.key'));
  assertUsage(r, 'lock mnist-mlp.onnx --scheme shuffle (no --block)', /--block/);
  assert.ok(!existsSync(p('s.klm')) && !existsSync(p('s.key')));
});

test('the launcher: `keylock lock M.tflite --scheme shuffle` (no --block) exits 2 with error and hint', () => {
  const r = spawnSync(process.execPath, [join(root, 'bin/keylock.mjs'), 'lock', p('m.tflite'), '--scheme', 'shuffle', '--vendor', p('v.key'), '--out', p('m.klm'), '--key-out', p('m.key')], { encoding: 'utf8', cwd: dir });
  assertUsage({ code: r.status ?? -1, err: r.stderr }, 'spawned lock .tflite --scheme shuffle', /--block/);
});

test('main(): a LockOptionError from a command is a usage error; any other RangeError stays an error (exit 1)', async () => {
  const base = { summary: 'test', usage: 'probe', options: {}, positionals: [0, 0] as [number, number] };
  COMMANDS['probe-option'] = { ...base, run: () => Promise.reject(new LockOptionError('block', '--block', 'a positive integer', undefined, 'shuffle needs a block size (--block m)')) };
  COMMANDS['probe-bug'] = { ...base, run: () => Promise.reject(new RangeError('offset out of bounds')) };
  try {
    const opt = await cli('probe-option');
    assertUsage(opt, 'probe-option', /--block/);
    assert.match(opt.err, /keylock: hint: --block takes a positive integer; usage: keylock probe/);
    const bug = await cli('probe-bug');
    assert.equal(bug.code, 1, 'a RangeError that is not an option error is not a usage error');
    assert.match(bug.err, /keylock: error: RangeError: offset out of bounds/);
  } finally {
    delete COMMANDS['probe-option'];
    delete COMMANDS['probe-bug'];
  }
});

test('the library: a missing shuffle block is a LockOptionError (still a RangeError) naming the flag', async () => {
  const req = { schemes: ['shuffle' as const], vendorSeed: randomBytes(32) };
  await assert.rejects(lockModel(new Uint8Array(readFileSync(mlpOnnx)), req), (e: unknown) => {
    assert.ok(e instanceof LockOptionError && e instanceof RangeError);
    assert.deepEqual([e.option, e.flag, e.got], ['block', '--block', undefined]);
    return true;
  });
});
