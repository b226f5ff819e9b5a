/** Helpers several test files share: the CLI as users call it, and whether the optional native backend is installed. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root. */
export const root = fileURLToPath(new URL('..', import.meta.url));

/** `node bin/keylock.mjs …` in `cwd`: `kl` returns code and output, `ok` asserts exit 0 and returns stdout. */
export function cli(cwd: string): { kl(...args: string[]): { code: number; out: string; err: string }; ok(...args: string[]): string } {
  const kl = (...args: string[]): { code: number; out: string; err: string } => {
    const r = spawnSync(process.execPath, [join(root, 'bin/keylock.mjs'), ...args], { encoding: 'utf8', cwd });
    return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
  };
  const ok = (...args: string[]): string => {
    const r = kl(...args);
    assert.equal(r.code, 0, `keylock ${args.join(' ')} failed:\n${r.err}`);
    return r.out;
  };
  return { kl, ok };
}

/** node:test's `skip` for tests of the native backend: false where onnxruntime-node is installed, else the reason. */
export const skipWithoutNative: false | string = (() => {
  try {
    createRequire(import.meta.url).resolve('onnxruntime-node');
    return false;
  } catch {
    return 'onnxruntime-node (optional dependency) is not installed';
  }
})();
