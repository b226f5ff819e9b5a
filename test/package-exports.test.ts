/**
 * The package as an app installs it: `import ... from 'keylock'`,
 * `'keylock/vendor'` and `'keylock/testing'` from plain Node 20 (no TypeScript loader; under Node the
 * entry adds `loadModelFile`), and typed for a TypeScript app with node16 resolution. The entry points are dist/lib, which
 * `prepare` (build-lib.mjs) builds on `npm ci`; built here if missing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

test('an app imports keylock and keylock/vendor from node_modules: plain Node runs them, tsc types them', () => {
  if (!existsSync(join(root, 'dist/lib/keylock.mjs')) || !existsSync(join(root, 'dist/lib/testing.mjs')) || !existsSync(join(root, 'dist/lib/keylock-worker.mjs'))) execFileSync(process.execPath, [join(root, 'build-lib.mjs')], { stdio: 'pipe' });
  const app = mkdtempSync(join(tmpdir(), 'keylock-app-'));
  try {
    mkdirSync(join(app, 'node_modules'));
    symlinkSync(root, join(app, 'node_modules/keylock'), 'dir');
    writeFileSync(join(app, 'package.json'), '{ "type": "module" }');
    writeFileSync(join(app, 'app.mjs'), `
import { readFileSync } from 'node:fs';
import { loadModel, loadModelFile, KeyMismatchError } from 'keylock';
import { lockModel } from 'keylock/vendor';
import { decodeRecorded } from 'keylock/testing';
if (typeof decodeRecorded !== 'function') throw new Error('keylock/testing: expected decodeRecorded');
const onnx = new Uint8Array(readFileSync(${JSON.stringify(join(root, 'models/reference/mnist-mlp.onnx'))}));
const { klm, modelKey } = await lockModel(onnx, { schemes: ['signflip', 'sealed'], vendorSeed: new Uint8Array(32).fill(7) });
const m = await loadModel(klm, { modelKey });
const out = await m.run({ input: { dtype: 'float32', dims: [1, 1, 28, 28], data: new Float32Array(784).fill(0.5) } });
const wrong = await loadModel(klm, { modelKey: new Uint8Array(32) });
const { writeFileSync } = await import('node:fs');
writeFileSync('model.klm', klm);
const f = await loadModelFile('model.klm', { modelKey });
const out2 = await f.run({ input: { dtype: 'float32', dims: [1, 1, 28, 28], data: new Float32Array(784).fill(0.5) } });
console.log(JSON.stringify({ state: m.state, outputs: Object.keys(out), logits: out.logits.data.length, wrong: wrong.error instanceof KeyMismatchError, fromFile: Array.from(out2.logits.data).join() === Array.from(out.logits.data).join() }));
await m.release();
`);
    const run = spawnSync(process.execPath, ['app.mjs'], { cwd: app, encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(JSON.parse(run.stdout.trim().split('\n').pop()!), { state: 'ready', outputs: ['logits'], logits: 10, wrong: true, fromFile: true });

    writeFileSync(join(app, 'app.ts'), `
import { loadModel, loadModelFile, type TensorMap } from 'keylock';
import { lockModel } from 'keylock/vendor';
import { createOrtSession } from 'keylock/testing';
export const fromFile: typeof loadModelFile = loadModelFile;
export const unlocked: typeof createOrtSession = createOrtSession;
export async function classify(onnx: Uint8Array, vendorSeed: Uint8Array): Promise<number> {
  const { klm, modelKey } = await lockModel(onnx, { schemes: ['sealed'], vendorSeed });
  const m = await loadModel(klm, { modelKey });
  const feeds: TensorMap = { input: { dtype: 'float32', dims: [1, 1, 28, 28], data: new Float32Array(784) } };
  return (await m.run(feeds)).logits.data.length;
}
`);
    const tsconfig = { compilerOptions: { target: 'ES2022', module: 'node16', moduleResolution: 'node16', strict: true, noEmit: true, skipLibCheck: false, types: [] }, files: ['app.ts'] };
    writeFileSync(join(app, 'tsconfig.json'), JSON.stringify(tsconfig));
    const tsc = join(root, 'node_modules/typescript/bin/tsc');
    const ok = spawnSync(process.execPath, [tsc, '-p', '.'], { cwd: app, encoding: 'utf8' });
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    // The types are real: a misuse is caught.
    writeFileSync(join(app, 'app.ts'), `import { loadModel } from 'keylock';\nexport const n: number = loadModel;\n`);
    const bad = spawnSync(process.execPath, [tsc, '-p', '.'], { cwd: app, encoding: 'utf8' });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stdout + bad.stderr, /TS2322/);
  } finally {
    rmSync(app, { recursive: true, force: true });
  }
});
