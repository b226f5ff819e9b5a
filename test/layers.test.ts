// The layer rules (.dependency-cruiser.cjs, docs/ARCHITECTURE.md) hold over the whole repository, and
// they do catch what they forbid: the same rules run over a small tree that breaks each of them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const cruiser = join(root, 'node_modules/dependency-cruiser/bin/dependency-cruise.mjs');
const config = join(root, '.dependency-cruiser.cjs');

function cruise(cwd: string, paths: string[]): { code: number; out: string } {
  const r = spawnSync(process.execPath, [cruiser, '--config', config, '--output-type', 'err', ...paths], { cwd, encoding: 'utf8' });
  return { code: r.status ?? -1, out: r.stdout + r.stderr };
}

test('no import breaks a layer rule: no cycle, keystore/ imports nothing of ours, no shipped code imports eval/, test/ or build scripts', () => {
  const r = cruise(root, ['runtime', 'keystore', 'models', 'targets', 'eval', 'test', 'bin', 'build-lib.mjs']);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /no dependency violations found \((\d{3,}) modules/);
});

test('the rules catch each violation they forbid', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-layers-'));
  try {
    const files: Record<string, string> = {
      'keystore/cbor.ts': "import { x } from '../runtime/model.ts';\nexport const y = x;\n",
      'runtime/model.ts': "import { v } from '../models/lock.ts';\nexport const x = v;\n",
      'models/lock.ts': "import { t } from './train/fit.ts';\nimport { a } from '../eval/accuracy.ts';\nexport const v = t + a;\n",
      'models/train/fit.ts': 'export const t = 1;\n',
      'eval/accuracy.ts': "import { f } from '../test/fixture.ts';\nexport const a = f;\n",
      'test/fixture.ts': 'export const f = 2;\n',
      'targets/cli/a.ts': "import { b } from './b.ts';\nexport const a = 1 + b;\n",
      'targets/cli/b.ts': "import { a } from './a.ts';\nimport { s } from '../../build-script.mjs';\nexport const b = a + s;\n",
      'build-script.mjs': 'export const s = 3;\n',
    };
    for (const [f, src] of Object.entries(files)) {
      mkdirSync(dirname(join(dir, f)), { recursive: true });
      writeFileSync(join(dir, f), src);
    }
    const r = cruise(dir, ['keystore', 'runtime', 'models', 'eval', 'targets', 'test']);
    assert.notEqual(r.code, 0);
    for (const rule of ['keystore-is-the-ground-floor', 'runtime-builds-on-keystore-only', 'models-build-on-runtime-and-keystore',
      'lockers-do-not-carry-training', 'tools-never-reach-into-tests', 'no-cycle', 'shipped-code-never-imports-tools-tests-or-build-scripts']) {
      assert.match(r.out, new RegExp(`error ${rule}:`), `${rule} is reported:\n${r.out}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
