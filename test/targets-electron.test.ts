/**
 * The Electron target without the Electron binary (it cannot be downloaded
 * here). What runs for real: the main-process module (sources and the built
 * dist/electron/main.mjs) with the real runtime and keystore, behind a fake
 * `ipcMain` that is a real handler map and clones arguments and replies with
 * the structured clone algorithm, as Electron's IPC does; the built
 * preload.cjs, evaluated as a CommonJS script whose `require('electron')`
 * returns a fake contextBridge/ipcRenderer; and the demo page as the renderer
 * in headless Chromium, with the bridge forwarded to the main module through
 * Playwright's exposeFunction. Not exercised: Electron itself, its real
 * contextIsolation and process boundary.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildTarget } from '../targets/build.mjs';
import { Keystore } from '../keystore/keystore.ts';
import { memoryStorage } from '../keystore/storage.ts';
import { loadModel } from '../runtime/load.ts';
import type { TensorMap } from '../runtime/tensor.ts';
import { startKeylock, type IpcEventLike, type IpcMainLike } from '../targets/electron/main.ts';
import { exposeKeylock, type KeylockBridge } from '../targets/electron/preload.ts';
import { errorName, type ModelInfo } from '../targets/electron/wire.ts';
import { prepareDemo, type PreparedDemo } from '../targets/browser/prepare-demo.ts';
import { demoRoots, serve } from '../targets/browser/serve.ts';
import { chromiumMissing, launchChromium } from '../targets/browser/chromium.ts';
import { addTfliteModel, makeFixture, referenceOutputs, outputsHex } from '../eval/fixtures/targets.ts';
import { decodeRecorded } from '../runtime/recorded.ts';

type Handler = (event: IpcEventLike, ...args: unknown[]) => unknown;

/** Electron's ipcMain as far as keylock uses it, plus `invoke` standing in for a renderer's ipcRenderer.invoke. */
class FakeIpcMain implements IpcMainLike {
  readonly handlers = new Map<string, Handler>();
  /** Every reply sent to a renderer, as it arrived there. */
  readonly replies: unknown[] = [];
  handle(channel: string, fn: Handler): void {
    if (this.handlers.has(channel)) throw new Error(`Attempted to register a second handler for '${channel}'`);
    this.handlers.set(channel, fn);
  }
  removeHandler(channel: string): void {
    this.handlers.delete(channel);
  }
  async invoke(channel: string, args: unknown[], url = 'app://keylock/index.html'): Promise<unknown> {
    const fn = this.handlers.get(channel);
    if (!fn) throw new Error(`No handler registered for '${channel}'`);
    const reply = structuredClone(await fn({ senderFrame: { url } }, ...structuredClone(args)));
    this.replies.push(reply);
    return reply;
  }
}

/** A renderer world with the preload's bridge, wired to `ipc` the way Electron wires it. */
function renderer(ipc: FakeIpcMain): KeylockBridge {
  const world: Record<string, unknown> = {};
  exposeKeylock({ contextBridge: { exposeInMainWorld: (k, api) => { world[k] = api; } }, ipcRenderer: { invoke: (ch, ...a) => ipc.invoke(ch, a) } });
  return world.keylock as KeylockBridge;
}

const bits = (d: ArrayLike<number>): string => Buffer.from(Float32Array.from(d).buffer).toString('hex');
const logitsOf = (o: TensorMap): Float32Array => o.logits.data as Float32Array;

/** Does `needle` occur anywhere in the bytes or strings of `v`? */
function contains(v: unknown, needle: Uint8Array): boolean {
  const hay: Buffer[] = [];
  const walk = (x: unknown): void => {
    if (ArrayBuffer.isView(x)) hay.push(Buffer.from(x.buffer, x.byteOffset, x.byteLength));
    else if (typeof x === 'string') hay.push(Buffer.from(x), Buffer.from(x, 'latin1'));
    else if (x && typeof x === 'object') Object.values(x).forEach(walk);
  };
  walk(v);
  const n = Buffer.from(needle);
  return hay.some((h) => h.includes(n) || h.toString('utf8').includes(n.toString('hex')) || h.toString('utf8').includes(n.toString('base64')));
}

describe('electron target (main process under Node, fake ipcMain)', () => {
  let work: string;
  let demo: PreparedDemo;
  let reference: Float32Array[];
  let built: Awaited<ReturnType<typeof buildTarget>>;
  const N = 30;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'keylock-electron-'));
    demo = await prepareDemo(join(work, 'demo'), { digits: N });
    built = await buildTarget('electron', { outDir: join(work, 'electron') });
    const ks = await Keystore.fromBytes(demo.keystores.device.bytes, demo.keystores.device.unlock());
    const m = await loadModel(demo.klm, { keystore: ks });
    reference = [];
    for (const s of demo.digits) reference.push(logitsOf(await m.run(s.inputs!)));
    await m.release();
    ks.close();
  });
  after(() => { if (work) rmSync(work, { recursive: true, force: true }); });

  test('the renderer gets the same logits as the runtime, and no key material in any reply', async () => {
    const ipc = new FakeIpcMain();
    const main = await startKeylock({ ipcMain: ipc, klm: demo.klm, keystore: memoryStorage(demo.keystores.device.bytes), unlock: demo.keystores.device.unlock() });
    const bridge = renderer(ipc);
    assert.deepEqual(Object.keys(bridge).sort(), ['info', 'run'], 'the page gets run and info, nothing else');
    let right = 0;
    for (let i = 0; i < N; i++) {
      const out = await bridge.run(demo.digits[i].inputs!);
      assert.equal(bits(logitsOf(out)), bits(reference[i]), `digit ${i}`);
      const l = logitsOf(out);
      if (l.indexOf(Math.max(...l)) === demo.digits[i].label) right++;
    }
    assert.ok(right >= N - 2, `${right}/${N} right`);
    const info = await bridge.info();
    assert.equal(info.state, 'ready');
    assert.equal(info.stats.runs, N);
    assert.equal(info.stats.mode, 'worker', 'the main process runs the model on a worker thread, off its event loop');
    assert.equal(info.modelId, demo.modelId);
    // The key that would unlock the model, and the keystore's unlock key, never appear in what the renderer got.
    const ks = await Keystore.fromBytes(demo.keystores.device.bytes, demo.keystores.device.unlock());
    const modelKey = ks.modelKeyFor(demo.modelId);
    ks.close();
    assert.ok(ipc.replies.length > N);
    assert.ok(contains([{ t: new Uint8Array([7, ...modelKey, 7]) }], modelKey), 'control: the search finds a key that is there');
    assert.equal(contains(ipc.replies, modelKey), false, 'model key absent from every reply');
    assert.equal(contains(ipc.replies, demo.keystores.device.unlockKey), false, 'unlock key absent from every reply');
    await main.stop();
    assert.equal(ipc.handlers.size, 0, 'stop() removes the handlers');
  });

  test('a wrong-key grant: run() rejects with KeyMismatchError, and the name survives a bridge that keeps only the message', async () => {
    const ipc = new FakeIpcMain();
    const main = await startKeylock({ ipcMain: ipc, klm: demo.klm, keystore: memoryStorage(demo.keystores.wrong.bytes), unlock: demo.keystores.wrong.unlock() });
    const bridge = renderer(ipc);
    const e = await bridge.run(demo.digits[0].inputs!).then(() => assert.fail('a halted model returned numbers'), (x: Error) => x);
    assert.equal(e.name, 'KeyMismatchError');
    assert.match(e.message, /^KeyMismatchError: the key does not open model "mnist-cnn-browser-demo"/);
    assert.equal((e as Error & { code?: string }).code, 'key-mismatch');
    assert.equal(errorName(new Error(e.message)), 'KeyMismatchError', 'contextBridge re-creates errors from the message only');
    const info: ModelInfo = await bridge.info();
    assert.deepEqual([info.state, info.error?.name, info.error?.code], ['halted', 'KeyMismatchError', 'key-mismatch']);
    await main.stop();
  });

  test('what the renderer sends is checked; a refused sender gets ForbiddenSenderError', async () => {
    const ipc = new FakeIpcMain();
    const main = await startKeylock({
      ipcMain: ipc, klm: demo.klm, keystore: memoryStorage(demo.keystores.device.bytes), unlock: demo.keystores.device.unlock(),
      allow: (ev) => ev.senderFrame?.url?.startsWith('app://keylock/') === true,
    });
    const x = demo.digits[0].inputs!.input;
    const bad: [unknown, RegExp][] = [
      [[x], /expected a map of tensors, got an array/],
      [{ input: { ...x, dtype: 'float16' } }, /expected a dtype name/],
      [{ input: { ...x, data: new Float64Array(784) } }, /expected a Float32Array for float32, got Float64Array/],
      [{ input: { ...x, dims: [1, 1, 28, 27] } }, /need 756 elements, got 784/],
      [{ input: { ...x, dims: [1, 784] } }, /expected shape \[N,1,28,28\], got \[1,784\]/],
      [{ input: x, extra: x }, /unknown input "extra"/],
    ];
    for (const [inputs, why] of bad) {
      const r = (await ipc.invoke('keylock:run', [inputs])) as { ok: boolean; error: { name: string; message: string } };
      assert.equal(r.ok, false);
      assert.equal(r.error.name, 'InputMismatchError', r.error.message);
      assert.match(r.error.message, why);
    }
    const refused = (await ipc.invoke('keylock:run', [{ input: x }], 'https://evil.example/')) as { ok: boolean; error: { name: string } };
    assert.deepEqual([refused.ok, refused.error.name], [false, 'ForbiddenSenderError']);
    await assert.rejects(startKeylock({ ipcMain: ipc, klm: demo.klm, keystore: memoryStorage(demo.keystores.device.bytes) }), TypeError, 'a keystore by storage needs an unlock provider');
    await main.stop();
  });

  test('the built bundles: main.mjs serves the model under Node; preload.cjs exposes the bridge through require("electron")', async () => {
    assert.deepEqual(built.externals['preload.cjs'], ['electron'], 'the preload requires electron and nothing else');
    const preload = readFileSync(join(built.dir, 'preload.cjs'), 'utf8');
    assert.ok(preload.length < 4096 && !/onnxruntime|tweetnacl|cbor/.test(preload), `the preload carries no runtime (${preload.length} bytes)`);
    const bundle = (await import(pathToFileURL(join(built.dir, 'main.mjs')).href)) as typeof import('../targets/electron/main.ts');
    const ipc = new FakeIpcMain();
    const main = await bundle.startKeylock({ ipcMain: ipc, klm: demo.klm, keystore: bundle.memoryStorage(demo.keystores.device.bytes), unlock: demo.keystores.device.unlock() });
    // Electron runs a sandboxed preload as a function of (require, module, exports) in a page that has `window`.
    const window: Record<string, unknown> = {};
    const electron = { contextBridge: { exposeInMainWorld: (k: string, api: unknown) => { window[k] = api; } }, ipcRenderer: { invoke: (ch: string, ...a: unknown[]) => ipc.invoke(ch, a) } };
    const module = { exports: {} };
    new Function('require', 'module', 'exports', 'window', preload)((id: string) => {
      if (id !== 'electron') throw new Error(`preload required ${id}`);
      return electron;
    }, module, module.exports, window);
    const bridge = window.keylock as KeylockBridge;
    for (let i = 0; i < 5; i++) assert.equal(bits(logitsOf(await bridge.run(demo.digits[i].inputs!))), bits(reference[i]), `bundle, digit ${i}`);
    assert.equal(main.model.stats.mode, 'worker', 'main.mjs runs the model on keylock-worker.mjs beside it');
    await main.stop();
  });

  test('the built main.mjs serves a locked .tflite (keylock-tflite.mjs and its wasm beside it) to the renderer, bit for bit as the sources', async () => {
    const fx = await addTfliteModel(await makeFixture(10));
    try {
      const ref = await referenceOutputs(fx);
      const bundle = (await import(pathToFileURL(join(built.dir, 'main.mjs')).href)) as typeof import('../targets/electron/main.ts');
      const ipc = new FakeIpcMain();
      const main = await bundle.startKeylock({ ipcMain: ipc, klm: fx.klmPath, keystore: fx.klsPath, unlock: { kind: 'file', path: fx.unlockPath } });
      const bridge = renderer(ipc);
      const info = await bridge.info();
      assert.deepEqual([info.state, info.modelId], ['ready', fx.modelId], JSON.stringify(info.error));
      assert.deepEqual(info.inputs.map((i) => [i.name, i.shape]), [['input', [1, 28, 28, 1]]]);
      const outs: TensorMap[] = [];
      for (const s of decodeRecorded(new Uint8Array(readFileSync(fx.recPath)))) outs.push(await bridge.run(s.inputs!));
      assert.ok(outputsHex(outs) === ref.outputs, 'the renderer got the source tree\'s tflite outputs');
      await main.stop();
    } finally {
      rmSync(fx.dir, { recursive: true, force: true });
    }
  });

  test('the renderer page in Chromium classifies through the emulated bridge', { skip: chromiumMissing }, async () => {
    const preload = readFileSync(join(built.dir, 'preload.cjs'), 'utf8');
    const ipc = new FakeIpcMain();
    let main = await startKeylock({ ipcMain: ipc, klm: demo.klm, keystore: memoryStorage(demo.keystores.device.bytes), unlock: demo.keystores.device.unlock() });
    const requested: string[] = [];
    const server = await serve({ roots: demoRoots({ demo: demo.dir, browser: join(work, 'none'), browserWebgpu: join(work, 'none') }), onRequest: (_m, p) => requested.push(p) });
    const b = await launchChromium(server.origin);
    try {
      // Typed arrays travel through exposeFunction as base64, standing in for IPC's structured clone.
      await b.context.exposeFunction('__keylockIpc', async (channel: string, payload: string) => JSON.stringify(await ipc.invoke(channel, JSON.parse(payload, revive)), replace));
      await b.context.addInitScript({ content: initScript(preload) });
      const page = await b.context.newPage();
      await page.goto(`${server.origin}/`);
      const status = await page.evaluate(() => (window as unknown as { keylockDemo: { ready: Promise<{ state: string }> } }).keylockDemo.ready);
      assert.equal(status.state, 'ready');
      assert.equal(await page.evaluate(() => (window as unknown as { keylockDemo: { mode: string } }).keylockDemo.mode), 'bridge');
      assert.equal(await page.locator('#keystore').count(), 0, 'no keystore choice in the renderer');
      const r = await page.evaluate(() => (window as unknown as { keylockDemo: { classifyMany(i: number[]): Promise<{ logits: number[][]; error?: unknown }> } }).keylockDemo.classifyMany([...Array(20).keys()]));
      assert.equal(r.error, undefined);
      for (let i = 0; i < 20; i++) assert.equal(bits(r.logits[i]), bits(reference[i]), `page via bridge, digit ${i}`);
      assert.ok(!requested.some((p) => p.startsWith('/keylock')), 'the renderer never loads the runtime bundle');

      await main.stop();
      main = await startKeylock({ ipcMain: ipc, klm: demo.klm, keystore: memoryStorage(demo.keystores.wrong.bytes), unlock: demo.keystores.wrong.unlock() });
      await page.reload();
      const halted = await page.evaluate(() => (window as unknown as { keylockDemo: { ready: Promise<{ state: string; error?: { name: string } }> } }).keylockDemo.ready);
      assert.deepEqual([halted.state, halted.error?.name], ['halted', 'KeyMismatchError']);
      assert.equal((await page.textContent('#error-name'))!.trim(), 'KeyMismatchError');
      await page.click('#recorded button >> nth=0');
      await page.waitForFunction(() => document.getElementById('pred-text')!.textContent!.startsWith('run() rejected'));
      assert.equal(await page.textContent('#pred-text'), 'run() rejected: KeyMismatchError');
      assert.deepEqual(b.external, []);
    } finally {
      await main.stop();
      await b.close();
      await server.close();
    }
  });
});

/** JSON replacer/reviver for typed arrays (base64 of their bytes). */
function replace(_k: string, v: unknown): unknown {
  if (ArrayBuffer.isView(v)) return { __typed: v.constructor.name, b64: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') };
  return v;
}
function revive(_k: string, v: unknown): unknown {
  const t = v as { __typed?: string; b64?: string } | null;
  if (t && typeof t === 'object' && typeof t.__typed === 'string' && typeof t.b64 === 'string') {
    const ctor = (globalThis as unknown as Record<string, new (b: ArrayBuffer) => ArrayBufferView>)[t.__typed];
    const bytes = Buffer.from(t.b64, 'base64');
    return new ctor(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  }
  return v;
}

/**
 * Runs in the page before its scripts: a fake `electron` module whose
 * ipcRenderer forwards to the Node side, then the built preload as Electron
 * runs it (a function of require, module, exports).
 */
function initScript(preload: string): string {
  return `(() => {
  const toB64 = (v) => { const b = new Uint8Array(v.buffer, v.byteOffset, v.byteLength); let s = ''; for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000)); return btoa(s); };
  const replace = (k, v) => ArrayBuffer.isView(v) ? { __typed: v.constructor.name, b64: toB64(v) } : v;
  const revive = (k, v) => { if (v && typeof v === 'object' && typeof v.__typed === 'string') { const s = atob(v.b64); const b = new Uint8Array(s.length); for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i); return new globalThis[v.__typed](b.buffer); } return v; };
  const ipcRenderer = { invoke: async (channel, ...args) => JSON.parse(await window.__keylockIpc(channel, JSON.stringify(args, replace)), revive) };
  const contextBridge = { exposeInMainWorld: (key, api) => Object.defineProperty(window, key, { value: Object.freeze(api) }) };
  const require = (id) => { if (id === 'electron') return { contextBridge, ipcRenderer }; throw new Error('preload required ' + id); };
  const module = { exports: {} };
  (function (require, module, exports) {\n${preload}\n})(require, module, module.exports);
})();`;
}
