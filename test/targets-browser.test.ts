/**
 * The browser target in real headless Chromium: the built bundles
 * (dist/browser, dist/browser-webgpu, built into a temporary folder), the demo
 * page served with COOP/COEP by targets/browser/serve.ts, the locked CNN
 * unlocked from a keystore kept in IndexedDB. Compared with the Node runtime
 * on the same digits, bit for bit.
 *
 * Screenshots go to $KEYLOCK_SCREENSHOT_DIR (docs/img to refresh the README's)
 * or a temporary folder.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Page } from 'playwright-core';
import { buildTarget, TFLITE_LIB } from '../targets/build.mjs';
import { Keystore } from '../keystore/keystore.ts';
import { loadModel } from '../runtime/load.ts';
import { centreOfMass, inkBox, toMnist } from '../targets/browser/demo/digit.ts';
import { prepareDemo, type PreparedDemo } from '../targets/browser/prepare-demo.ts';
import { demoRoots, resolvePath, serve, type Served } from '../targets/browser/serve.ts';
import { chromiumMissing, launchChromium, type Browser } from '../targets/browser/chromium.ts';

const N = 50;
const shots = process.env.KEYLOCK_SCREENSHOT_DIR ? resolve(process.env.KEYLOCK_SCREENSHOT_DIR) : undefined;

interface Many { labels: number[]; preds: number[]; logits: number[][]; error?: { name: string; message: string }; stats?: { runs: number; p50: number; p99: number } }
interface PageStatus { state: string; error?: { name: string; message: string }; failures?: number; stats?: { runs: number; p50: number; p99: number; mode?: string } }
type Demo = {
  ready: Promise<PageStatus>;
  status(): Promise<PageStatus>;
  classifyMany(i: number[]): Promise<Many>;
  classifyDrawing(): Promise<{ pred?: number; input: number[]; error?: { name: string } }>;
  env(): Promise<{ crossOriginIsolated: boolean; backend?: { wasmThreads: number; wasmPaths: string; secretbox: string }; webgpu?: { architecture: string; fallback: boolean } }>;
};

/** Opens the demo page with `query` and waits until the model is ready or halted. */
async function open(b: Browser, origin: string, query: string): Promise<{ page: Page; status: PageStatus }> {
  const page = await b.context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${origin}/?${query}`);
  const status = await page.evaluate(() => (window as unknown as { keylockDemo: Demo }).keylockDemo.ready);
  assert.deepEqual(errors, [], 'no uncaught errors on the page');
  return { page, status };
}

const demoCall = <T>(page: Page, fn: (d: Demo, arg: unknown) => Promise<T>, arg?: unknown): Promise<T> =>
  page.evaluate(([f, a]) => new Function('d', 'a', `return (${f})(d, a)`)((window as unknown as { keylockDemo: Demo }).keylockDemo, a), [fn.toString(), arg] as const) as Promise<T>;

const bits = (v: ArrayLike<number>): string => Buffer.from(Float32Array.from(v).buffer).toString('hex');

describe('browser target in headless Chromium', { skip: chromiumMissing }, () => {
  let work: string;
  let demo: PreparedDemo;
  let server: Served;
  let browser: Browser;
  const served: string[] = [];
  let nodeLogits: number[][];
  let nodePreds: number[];
  let wasmLogits0: number[];

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'keylock-browser-'));
    const [wasm, webgpu] = [await buildTarget('browser', { outDir: join(work, 'browser') }), await buildTarget('browser-webgpu', { outDir: join(work, 'browser-webgpu') })];
    for (const b of [wasm, webgpu]) {
      const ext = Object.values(b.externals).flat().filter((e) => e !== `./${TFLITE_LIB}`);
      assert.deepEqual(ext, [], `browser bundles import nothing from outside but their TFLite library file (got ${ext.join(', ')})`);
      const leaked = b.inputs.filter((i: string) => /(^|\/)filestore\.ts$|^models\/|^targets\/cli\//.test(i) && !i.includes('keylock-browser-stub'));
      assert.deepEqual(leaked, [], 'no file store, no vendor code in a browser bundle');
    }
    demo = await prepareDemo(join(work, 'demo'), { digits: 60 });
    server = await serve({
      roots: demoRoots({ demo: demo.dir, browser: wasm.dir, browserWebgpu: webgpu.dir }),
      onRequest: (m, p, s) => served.push(`${m} ${p} ${s}`),
    });
    browser = await launchChromium(server.origin, ['--enable-unsafe-webgpu']);
    // The reference: the Node runtime (sources, wasm EP, 1 thread) on the same digits with the same keystore.
    const ks = await Keystore.fromBytes(demo.keystores.device.bytes, demo.keystores.device.unlock());
    const model = await loadModel(demo.klm, { keystore: ks });
    assert.equal(model.state, 'ready', `node runtime: ${model.error?.message}`);
    nodeLogits = [];
    nodePreds = [];
    for (const s of demo.digits.slice(0, N)) {
      const l = Array.from((await model.run(s.inputs!)).logits.data as Float32Array);
      nodeLogits.push(l);
      nodePreds.push(l.indexOf(Math.max(...l)));
    }
    await model.release();
    ks.close();
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('bundles carry no node: imports and ship their own ORT files', () => {
    for (const dir of ['browser', 'browser-webgpu']) {
      const js = readFileSync(join(work, dir, 'keylock.mjs'), 'utf8');
      assert.doesNotMatch(js, /(from\s*|import\s*\(\s*)["']node:/, `${dir}: no import of a node: module`);
      assert.doesNotMatch(js, /https?:\/\/(cdn|unpkg|jsdelivr)/i, `${dir}: no CDN URL`);
    }
    assert.ok(demo.appInputs.every((i) => !i.startsWith('runtime/') && !i.startsWith('keystore/')), `the page module carries no runtime code: ${demo.appInputs.join(', ')}`);
  });

  test('serve answers with isolation headers, application/wasm, and refuses paths outside its roots', async () => {
    const r = await fetch(`${server.origin}/keylock/ort-wasm-simd-threaded.wasm`, { method: 'HEAD' });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), 'application/wasm');
    assert.equal(r.headers.get('cross-origin-opener-policy'), 'same-origin');
    assert.equal(r.headers.get('cross-origin-embedder-policy'), 'require-corp');
    const roots = demoRoots({ demo: demo.dir, browser: join(work, 'browser'), browserWebgpu: join(work, 'browser-webgpu') });
    for (const p of ['/../package.json', '/keylock/../demo/index.html', '/%2e%2e/%2e%2e/etc/passwd', '/keylock/..%2f..%2fbuild.mjs', '/data/..\\..\\x']) {
      assert.equal(resolvePath(roots, p), undefined, p);
    }
    assert.equal((await fetch(`${server.origin}/%2e%2e/%2e%2e/%2e%2e/etc/passwd`)).status, 404);
    assert.equal((await fetch(`${server.origin}/index.html`, { method: 'POST' })).status, 405);
  });

  test(`the page classifies ${N} recorded digits on 2 wasm threads, bit for bit as the Node runtime`, async (t) => {
    const { page, status } = await open(browser, server.origin, 'keystore=device&backend=wasm&threads=2');
    assert.equal(status.state, 'ready', JSON.stringify(status.error));
    const env = await demoCall(page, (d) => d.env());
    assert.equal(env.crossOriginIsolated, true, 'COOP/COEP make the page cross-origin isolated');

    assert.ok(env.backend?.wasmPaths.startsWith(`${server.origin}/keylock/`), `ORT loads its wasm from the bundle's folder, got ${env.backend?.wasmPaths}`);
    // Worker mode: the model runs in keylock's module Web Worker, off the page's thread, and ORT's thread
    // pool starts inside that worker: 2 threads are one more worker (ORT starts none on 1 thread).
    const st = await demoCall(page, (d) => d.status());
    assert.equal(st.stats?.mode, 'worker', 'the model runs in a module Web Worker (keylock-worker.mjs beside the bundle)');
    const workers = page.workers().map((w) => w.url());
    assert.ok(workers.includes(`${server.origin}/keylock/keylock-worker.mjs`), `the page runs keylock-worker.mjs, got ${workers.join(', ')}`);
    assert.ok(workers.includes(`${server.origin}/keylock/ort-wasm-simd-threaded.mjs`), `ORT kept 2 threads in the model's worker (it drops to 1 without SharedArrayBuffer), got ${workers.join(', ')}`);
    assert.equal(env.backend?.secretbox, 'wasm-simd', 'the sealed demo model opened with the WebAssembly SIMD secretbox');
    const r = await demoCall(page, (d, n) => d.classifyMany([...Array(n as number).keys()]), N);
    assert.equal(r.error, undefined);
    const accPage = r.preds.filter((p, i) => p === r.labels[i]).length;
    const accNode = nodePreds.filter((p, i) => p === demo.digits[i].label).length;
    assert.equal(accPage, accNode, 'same accuracy');
    assert.ok(accPage >= 0.9 * N, `accuracy ${accPage}/${N}`);
    for (let i = 0; i < N; i++) assert.equal(bits(r.logits[i]), bits(nodeLogits[i]), `digit ${i}: logits bit for bit`);
    wasmLogits0 = r.logits[0];
    t.diagnostic(`Chromium wasm 2 threads: ${accPage}/${N} right; model.stats p50 ${r.stats!.p50.toFixed(3)} ms, p99 ${r.stats!.p99.toFixed(3)} ms over ${r.stats!.runs} runs`);

    // The page's own UI path: click a recorded digit, read what it shows.
    await page.click('#recorded button >> nth=3');
    await page.waitForFunction(() => document.getElementById('pred-text')!.textContent!.includes('recorded label'));
    assert.equal(await page.textContent('#prediction'), String(demo.digits[3].label));
    assert.match((await page.textContent('#latency'))!, /p50 \d+\.\d{3} ms · p99 \d+\.\d{3} ms over \d+ runs/);
    assert.equal(await page.locator('#probs li').count(), 10);
    assert.equal(await page.getAttribute('#status', 'class'), 'status ready');
    const file = join(shots ?? work, 'browser-demo.png');
    mkdirSync(join(file, '..'), { recursive: true });
    await page.screenshot({ path: file, fullPage: true });
    assert.equal(readFileSync(file).subarray(1, 4).toString(), 'PNG');

    // A digit drawn with the mouse: a vertical stroke is a 1, once cropped, scaled and centred.
    const box = (await page.locator('#pad').boundingBox())!;
    await page.click('#clear');
    await page.mouse.move(box.x + 150, box.y + 40);
    await page.mouse.down();
    await page.mouse.move(box.x + 135, box.y + 240, { steps: 12 });
    await page.mouse.up();
    const drawn = await demoCall(page, (d) => d.classifyDrawing());
    assert.equal(drawn.pred, 1, 'a drawn vertical stroke reads as 1');
    const x = Float32Array.from(drawn.input);
    const c = centreOfMass(x, 28, 28);
    assert.ok(Math.abs(c.x - 14) <= 1 && Math.abs(c.y - 14) <= 1, `centred by mass, got (${c.x.toFixed(2)}, ${c.y.toFixed(2)})`);
    const ink = inkBox(x, 28, 28)!;
    assert.equal(Math.max(ink.x1 - ink.x0, ink.y1 - ink.y0), 20, 'longer side scaled to 20 px');
    await page.close();
  });

  test('preprocessing: an off-centre blob lands centred and 20 px tall', () => {
    const w = 200, h = 150;
    const g = new Float32Array(w * h);
    for (let y = 10; y < 90; y++) for (let x = 150; x < 190; x++) g[y * w + x] = 1;
    const m = toMnist(g, w, h);
    const c = centreOfMass(m, 28, 28);
    assert.ok(Math.abs(c.x - 14) <= 0.5 && Math.abs(c.y - 14) <= 0.5, `(${c.x}, ${c.y})`);
    const b = inkBox(m, 28, 28)!;
    assert.deepEqual([b.x1 - b.x0, b.y1 - b.y0], [10, 20]);
    assert.deepEqual(toMnist(new Float32Array(16), 4, 4), new Float32Array(784), 'empty drawing → zeros');
  });

  test('a wrong-key grant halts the page with KeyMismatchError; failures persist in IndexedDB and disable the model', async () => {
    const { page, status } = await open(browser, server.origin, 'keystore=wrong&threads=2');
    assert.equal(status.state, 'halted');
    assert.equal(status.error?.name, 'KeyMismatchError');
    assert.equal(status.failures, 1);
    assert.equal(await page.getAttribute('#status', 'class'), 'status halted');
    assert.equal((await page.textContent('#status b'))!.trim(), 'HALTED');
    assert.equal((await page.textContent('#error-name'))!.trim(), 'KeyMismatchError');
    await page.click('#recorded button >> nth=0');
    await page.waitForFunction(() => document.getElementById('pred-text')!.textContent!.startsWith('run() rejected'));
    assert.equal(await page.textContent('#pred-text'), 'run() rejected: KeyMismatchError');
    const r = await demoCall(page, (d) => d.classifyMany([0, 1]));
    assert.deepEqual([r.preds.length, r.error?.name], [0, 'KeyMismatchError'], 'run() never returns numbers');
    const file = join(shots ?? work, 'browser-halted.png');
    await page.screenshot({ path: file, fullPage: true });
    assert.equal(readFileSync(file).subarray(1, 4).toString(), 'PNG');

    // The keystore lives in IndexedDB: the failure count survives reloads, and the policy (3) disables the model.
    await page.reload();
    const second = await page.evaluate(() => (window as unknown as { keylockDemo: Demo }).keylockDemo.ready);
    assert.deepEqual([second.error?.name, second.failures], ['KeyMismatchError', 2]);
    await page.reload();
    const third = await page.evaluate(() => (window as unknown as { keylockDemo: Demo }).keylockDemo.ready);
    assert.deepEqual([third.state, third.error?.name], ['disabled', 'DisabledError']);
    assert.equal(await page.getAttribute('#status', 'class'), 'status disabled');
    await page.close();
  });

  test('without COOP/COEP, 2 threads are refused with BackendUnavailableError, not run on 1', async () => {
    const page = await browser.context.newPage();
    await page.route('**', async (route) => {
      const r = await route.fetch();
      const headers = { ...r.headers() };
      delete headers['cross-origin-opener-policy'];
      delete headers['cross-origin-embedder-policy'];
      await route.fulfill({ response: r, headers });
    });
    await page.goto(`${server.origin}/?keystore=device&threads=2`);
    const s = await page.evaluate(() => (window as unknown as { keylockDemo: Demo }).keylockDemo.ready);
    assert.equal(await page.evaluate(() => globalThis.crossOriginIsolated), false);
    assert.deepEqual([s.state, s.error?.name], ['halted', 'BackendUnavailableError']);
    assert.match(s.error!.message, /expected crossOriginIsolated true, got false/);
    await page.close();
  });

  test('webgpu execution provider on the software adapter: one digit, close to wasm', async (t) => {
    const t0 = performance.now();
    const { page, status } = await open(browser, server.origin, 'keystore=device&backend=webgpu&threads=1');
    const loadMs = performance.now() - t0;
    assert.equal(status.state, 'ready', JSON.stringify(status.error));
    const env = await demoCall(page, (d) => d.env());
    assert.equal(env.webgpu?.fallback, true, `a (SwiftShader) fallback adapter: ${JSON.stringify(env.webgpu)}`);
    assert.ok(env.backend?.wasmPaths.includes('/keylock-webgpu/'), 'the webgpu page loads the JSEP bundle');
    const r = await demoCall(page, (d) => d.classifyMany([0]));
    assert.equal(r.error, undefined);
    const diff = Math.max(...r.logits[0].map((v, i) => Math.abs(v - wasmLogits0[i])));
    assert.ok(diff <= 1e-3, `webgpu logits within 1e-3 of wasm, got max |diff| ${diff}`);
    assert.equal(r.preds[0], demo.digits[0].label);
    t.diagnostic(`webgpu (SwiftShader): load ${loadMs.toFixed(0)} ms, max |logit diff| vs wasm ${diff.toExponential(2)}, first run ${r.stats!.p50.toFixed(1)} ms`);
    await page.close();
  });

  test('no request left the page: everything came from the local server', async () => {
    const page = await browser.context.newPage();
    await page.goto(`${server.origin}/data/setup.json`);
    // Control: a request elsewhere is caught and refused, so the recorder works.
    const outcome = await page.evaluate(() => fetch('https://example.com/probe').then(() => 'fetched', () => 'refused'));
    await page.close();
    assert.equal(outcome, 'refused');
    assert.deepEqual(browser.external, ['https://example.com/probe'], 'the only non-local request was the control');
    for (const f of ['/keylock/keylock.mjs', '/keylock/ort-wasm-simd-threaded.wasm', '/keylock/ort-wasm-simd-threaded.mjs', '/keylock-webgpu/ort-wasm-simd-threaded.jsep.wasm', '/data/cnn.klm', '/data/wrong.kls']) {
      assert.ok(served.includes(`GET ${f} 200`), `served ${f}`);
    }
    // The demo runs ONNX only: the TFLite library and its wasm beside the bundle were never fetched.
    assert.deepEqual(served.filter((x) => x.includes(TFLITE_LIB) || x.includes('tflite_web_api')), [], 'no TFLite file requested by an ONNX page');
  });
});
