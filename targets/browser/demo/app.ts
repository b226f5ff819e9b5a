/**
 * The demo page's module. Two ways to reach the model:
 * - `page`: the page imports the keylock browser bundle, keeps the device
 *   keystore in IndexedDB and runs the locked model itself (wasm or webgpu);
 * - `bridge`: an Electron renderer, where the preload exposed `window.keylock`
 *   and the model runs in the main process; this page then holds no key.
 * Everything the page shows goes through the same small `Engine`.
 *
 * The bundle is imported at run time from the served folder (not bundled into
 * this module), as an app embedding keylock would; this file is built by
 * prepare-demo.ts and carries no runtime code.
 *
 * `window.keylockDemo` exposes the page's actions to tests.
 */
import type * as Keylock from '../index.ts';
import type { KeylockBridge } from '../../electron/preload.ts';
import { errorName } from '../../electron/wire.ts';
import { argmax, SIDE, softmax, toMnist } from './digit.ts';

/** `data/setup.json`, written by prepare-demo.ts. */
export interface DemoSetup {
  demoOnly: string;
  model: string;
  modelId: string;
  digits: string;
  keystores: { id: string; label: string; kls: string; unlockKeyHex: string }[];
}

/** `data/digits.json`: recorded test digits, float32 little-endian in base64. */
export interface DemoDigits {
  input: string;
  dims: number[];
  samples: { label: number; data: string }[];
}

interface Status {
  state: 'loading' | 'ready' | 'halted' | 'disabled';
  error?: { name: string; message: string };
  stats?: { runs: number; p50: number; p99: number };
  failures?: number;
  maxFailures?: number;
  detail?: string;
}

interface Engine {
  kind: 'page' | 'bridge';
  run(x: Float32Array): Promise<Float32Array>;
  status(): Promise<Status>;
}

/** What a classification returns (to the page and to tests). */
export interface Classified {
  pred?: number;
  probs?: number[];
  logits?: number[];
  error?: { name: string; message: string };
  stats?: Status['stats'];
}

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);
const bridge = (window as unknown as { keylock?: KeylockBridge }).keylock;

async function fetchOk(url: string): Promise<Response> {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: expected 200, got ${r.status}`);
  return r;
}
const getJson = async <T>(url: string): Promise<T> => (await (await fetchOk(url)).json()) as T;
const getBytes = async (url: string): Promise<Uint8Array> => new Uint8Array(await (await fetchOk(url)).arrayBuffer());

function hexBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function b64Floats(s: string): Float32Array {
  const bin = atob(s);
  const b = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) b[i] = bin.charCodeAt(i);
  return new Float32Array(b.buffer);
}

function asError(e: unknown): { name: string; message: string } {
  return { name: errorName(e), message: (e as Error)?.message ?? String(e) };
}

const INPUT_DIMS = [1, 1, SIDE, SIDE];

/** Runs the model in this page, with the keystore kept in IndexedDB. */
async function pageEngine(setup: DemoSetup, opts: { keystore: string; backend: string; threads: number; bundle?: string }): Promise<Engine & { k: typeof Keylock }> {
  // webgpu needs the JSEP build (dist/browser-webgpu); `?bundle=webgpu` also runs wasm on it, for comparison.
  const bundle = opts.backend === 'webgpu' || opts.bundle === 'webgpu' ? './keylock-webgpu/keylock.mjs' : './keylock/keylock.mjs';
  const k = (await import(new URL(bundle, import.meta.url).href)) as typeof Keylock;
  const entry = setup.keystores.find((s) => s.id === opts.keystore);
  if (!entry) throw new RangeError(`keystore "${opts.keystore}": expected one of ${setup.keystores.map((s) => s.id).join(', ')}`);
  const storage = k.indexedDbStorage(`demo-${entry.id}`);
  try {
    await storage.create(await getBytes(entry.kls)); // first visit: "install" the device keystore
  } catch (e) {
    if ((e as { code?: string }).code !== 'exists') throw e;
  }
  // DEMO ONLY: the storage key comes from setup.json in the clear. A product's
  // hook gets it from where it is kept safe (WebAuthn PRF, an OS keychain via
  // the app shell, a passphrase), never from a static file.
  const key = hexBytes(entry.unlockKeyHex);
  const keystore = await k.Keystore.open(storage, { unlock: { kind: 'hook', getKey: async () => key.slice() } });
  const klm = await getBytes(setup.model);
  const model = await k.loadModel(klm, { keystore, backend: opts.backend, threads: opts.threads });
  const policy = model.manifest?.policy;
  const input = model.inputs[0]?.name ?? 'input';
  return {
    kind: 'page',
    k,
    async run(x) {
      const out = await model.run({ [input]: { dtype: 'float32', dims: INPUT_DIMS, data: x } });
      return Object.values(out)[0].data as Float32Array;
    },
    async status() {
      const s: Status = { state: model.state, stats: model.stats, failures: keystore.failureCount(setup.modelId) };
      if (policy?.onInvalidKey === 'disable') s.maxFailures = policy.maxFailures;
      if (model.error) s.error = asError(model.error);
      // ORT's thread count is only known once a session exists, i.e. when the model is ready.
      // In worker mode ORT runs in the model's worker: this page's ORT says nothing about it.
      const threads = model.state !== 'ready' ? '' : model.stats.mode === 'worker' ? ', in a worker' : `, ${k.backendInfo().wasmThreads} wasm thread(s)`;
      s.detail = `${opts.backend}${threads}, device ${keystore.deviceId}`;
      return s;
    },
  };
}

/** Runs the model in Electron's main process through the preload's bridge. */
function bridgeEngine(b: KeylockBridge): Engine {
  return {
    kind: 'bridge',
    async run(x) {
      const out = await b.run({ input: { dtype: 'float32', dims: INPUT_DIMS, data: x } });
      return Object.values(out)[0].data as Float32Array;
    },
    async status() {
      const i = await b.info();
      return { state: i.state, stats: i.stats, error: i.error, detail: 'model and keystore in the Electron main process' };
    },
  };
}

// ---- page state and rendering

let engine: Engine | undefined;
let digits: DemoDigits | undefined;
let current: Status = { state: 'loading' };

function renderStatus(s: Status): void {
  current = s;
  const box = $('status');
  box.className = `status ${s.state}`;
  document.body.classList.remove('ready-mode', 'halted-mode', 'disabled-mode');
  document.body.classList.add(`${s.state}-mode`);
  box.querySelector('b')!.textContent = s.state.toUpperCase();
  $('error-name').textContent = s.error ? ` ${s.error.name}` : '';
  let msg = s.error ? s.error.message : s.detail ?? '';
  if (s.state === 'ready' && s.detail) msg = `model unlocked: ${s.detail}`;
  if (s.failures !== undefined && s.maxFailures) msg += ` · failed unlocks on this device: ${s.failures} of ${s.maxFailures} (then the model disables itself)`;
  $('status-msg').textContent = msg;
  renderLatency(s.stats);
}

function renderLatency(st?: Status['stats']): void {
  $('latency').textContent = st && st.runs
    ? `latency p50 ${st.p50.toFixed(3)} ms · p99 ${st.p99.toFixed(3)} ms over ${st.runs} runs`
    : '';
}

function renderResult(r: Classified, label?: number): void {
  const probs = $('probs');
  probs.replaceChildren();
  if (r.error) {
    $('prediction').textContent = '✕';
    $('pred-text').textContent = `run() rejected: ${r.error.name}`;
    const li = document.createElement('li');
    li.className = 'why';
    li.textContent = 'A model that is not ready returns no numbers; the app falls back (a human, a rule, another model).';
    probs.append(li);
    return;
  }
  $('prediction').textContent = String(r.pred);
  $('pred-text').textContent = `prediction ${r.pred} (${(r.probs![r.pred!] * 100).toFixed(1)} %)${label !== undefined ? ` · recorded label ${label}` : ''}`;
  r.probs!.forEach((p, i) => {
    const li = document.createElement('li');
    if (i === r.pred) li.className = 'top';
    li.innerHTML = `<span>${i}</span><span class="bar"><span style="width:${(p * 100).toFixed(2)}%"></span></span><span class="p">${(p * 100).toFixed(2)} %</span>`;
    probs.append(li);
  });
  renderLatency(r.stats);
}

function showPreview(x: Float32Array): void {
  const c = $<HTMLCanvasElement>('preview').getContext('2d')!;
  const img = c.createImageData(SIDE, SIDE);
  for (let i = 0; i < x.length; i++) {
    const v = Math.round(Math.min(1, Math.max(0, x[i])) * 255);
    img.data.set([v, v, v, 255], i * 4);
  }
  c.putImageData(img, 0, 0);
}

async function classify(x: Float32Array): Promise<Classified> {
  showPreview(x);
  if (!engine) return { error: { name: 'Error', message: 'the model is not loaded' } };
  try {
    const logits = await engine.run(x);
    const s = await engine.status();
    return { pred: argmax(logits), probs: softmax(logits), logits: Array.from(logits), stats: s.stats };
  } catch (e) {
    return { error: asError(e) };
  }
}

function sample(i: number): { x: Float32Array; label: number } {
  const s = digits?.samples[i];
  if (!s) throw new RangeError(`recorded digit ${i}: expected 0..${(digits?.samples.length ?? 0) - 1}`);
  return { x: b64Floats(s.data), label: s.label };
}

/** Paints a 28×28 digit onto the drawing pad, scaled up, so the page shows what was classified. */
function paintPad(x: Float32Array): void {
  const pad = $<HTMLCanvasElement>('pad');
  const c = pad.getContext('2d')!;
  const tmp = document.createElement('canvas');
  tmp.width = tmp.height = SIDE;
  const t = tmp.getContext('2d')!;
  const img = t.createImageData(SIDE, SIDE);
  for (let i = 0; i < x.length; i++) {
    const v = Math.round(x[i] * 255);
    img.data.set([v, v, v, 255], i * 4);
  }
  t.putImageData(img, 0, 0);
  c.imageSmoothingEnabled = false;
  c.drawImage(tmp, 0, 0, pad.width, pad.height);
}

async function classifyRecorded(i: number): Promise<Classified & { label: number }> {
  const { x, label } = sample(i);
  paintPad(x);
  const r = await classify(x);
  renderResult(r, label);
  const btn = $('recorded').children[i] as HTMLElement | undefined;
  if (btn && r.pred !== undefined) btn.className = r.pred === label ? 'right' : 'wrong';
  return { ...r, label };
}

async function classifyDrawing(): Promise<Classified & { input: number[] }> {
  const pad = $<HTMLCanvasElement>('pad');
  const data = pad.getContext('2d')!.getImageData(0, 0, pad.width, pad.height).data;
  const gray = new Float32Array(pad.width * pad.height);
  for (let i = 0; i < gray.length; i++) gray[i] = data[i * 4] / 255;
  const x = toMnist(gray, pad.width, pad.height);
  const r = await classify(x);
  renderResult(r);
  return { ...r, input: Array.from(x) };
}

/** Classifies many recorded digits without repainting per digit (tests, the score line). */
async function classifyMany(indices: number[]): Promise<{ labels: number[]; preds: number[]; logits: number[][]; error?: Classified['error']; stats?: Status['stats'] }> {
  const labels: number[] = [], preds: number[] = [], logits: number[][] = [];
  for (const i of indices) {
    const { x, label } = sample(i);
    if (!engine) return { labels, preds, logits, error: { name: 'Error', message: 'the model is not loaded' } };
    try {
      const l = await engine.run(x);
      labels.push(label);
      preds.push(argmax(l));
      logits.push(Array.from(l));
    } catch (e) {
      return { labels, preds, logits, error: asError(e) };
    }
  }
  const s = await engine!.status();
  renderLatency(s.stats);
  const ok = preds.filter((p, i) => p === labels[i]).length;
  $('recorded-score').textContent = `${ok} of ${preds.length} recorded digits right`;
  return { labels, preds, logits, stats: s.stats };
}

function setupPad(): void {
  const pad = $<HTMLCanvasElement>('pad');
  const c = pad.getContext('2d')!;
  const clear = (): void => { c.fillStyle = '#000'; c.fillRect(0, 0, pad.width, pad.height); };
  clear();
  let last: { x: number; y: number } | undefined;
  const at = (e: PointerEvent): { x: number; y: number } => {
    const r = pad.getBoundingClientRect();
    return { x: ((e.clientX - r.left) * pad.width) / r.width, y: ((e.clientY - r.top) * pad.height) / r.height };
  };
  const line = (a: { x: number; y: number }, b: { x: number; y: number }): void => {
    c.strokeStyle = '#fff';
    c.lineWidth = 20;
    c.lineCap = c.lineJoin = 'round';
    c.beginPath();
    c.moveTo(a.x, a.y);
    c.lineTo(b.x, b.y);
    c.stroke();
  };
  pad.addEventListener('pointerdown', (e) => {
    pad.setPointerCapture(e.pointerId);
    last = at(e);
    line(last, last);
  });
  pad.addEventListener('pointermove', (e) => {
    if (!last) return;
    const p = at(e);
    line(last, p);
    last = p;
  });
  const end = (): void => {
    if (!last) return;
    last = undefined;
    void classifyDrawing();
  };
  pad.addEventListener('pointerup', end);
  pad.addEventListener('pointercancel', end);
  $('clear').addEventListener('click', () => { clear(); showPreview(new Float32Array(SIDE * SIDE)); });
  $('classify').addEventListener('click', () => void classifyDrawing());
}

function setupRecorded(d: DemoDigits): void {
  const box = $('recorded');
  d.samples.slice(0, 30).forEach((s, i) => {
    const b = document.createElement('button');
    const cv = document.createElement('canvas');
    cv.width = cv.height = SIDE;
    const x = b64Floats(s.data);
    const c = cv.getContext('2d')!;
    const img = c.createImageData(SIDE, SIDE);
    for (let j = 0; j < x.length; j++) {
      const v = Math.round(x[j] * 255);
      img.data.set([v, v, v, 255], j * 4);
    }
    c.putImageData(img, 0, 0);
    const cap = document.createElement('span');
    cap.textContent = `label ${s.label}`;
    b.append(cv, cap);
    b.addEventListener('click', () => void classifyRecorded(i));
    box.append(b);
  });
}

async function start(): Promise<Status> {
  const setup = await getJson<DemoSetup>('data/setup.json');
  $('demo-only').textContent = setup.demoOnly;
  digits = await getJson<DemoDigits>(setup.digits);
  setupRecorded(digits);
  setupPad();
  const ksSel = $<HTMLSelectElement>('keystore');
  for (const s of setup.keystores) ksSel.add(new Option(s.label, s.id));
  const opts = {
    keystore: params.get('keystore') ?? setup.keystores[0].id,
    backend: params.get('backend') ?? 'wasm',
    threads: Number(params.get('threads') ?? (globalThis.crossOriginIsolated ? 2 : 1)),
    bundle: params.get('bundle') ?? undefined,
  };
  ksSel.value = opts.keystore;
  $<HTMLSelectElement>('backend').value = opts.backend;
  $<HTMLSelectElement>('threads').value = String(opts.threads);
  // ORT fixes its backend and thread count once per page, so a new choice is a new page.
  $('load').addEventListener('click', () => {
    const q = new URLSearchParams({ keystore: ksSel.value, backend: $<HTMLSelectElement>('backend').value, threads: $<HTMLSelectElement>('threads').value });
    location.search = q.toString();
  });
  const env = `page crossOriginIsolated: ${globalThis.crossOriginIsolated ? 'yes' : 'no'}`;
  if (bridge) {
    $('controls').querySelectorAll('select, #load, #reset').forEach((el) => el.remove());
    $('env').textContent = `Electron renderer: ${env}; the model runs in the main process, this page holds no key`;
    engine = bridgeEngine(bridge);
  } else {
    $('env').textContent = env;
    renderStatus({ state: 'loading', detail: `unlocking with keystore "${opts.keystore}" on ${opts.backend}…` });
    let page: Awaited<ReturnType<typeof pageEngine>>;
    try {
      page = await pageEngine(setup, opts);
    } catch (e) {
      // Not a halted model: the page itself cannot run it here (no isolation, no WebGPU).
      const s: Status = { state: 'halted', error: asError(e), detail: 'the model could not be loaded on this page' };
      renderStatus(s);
      return s;
    }
    engine = page;
    $('reset').addEventListener('click', async () => {
      for (const s of setup.keystores) await page.k.indexedDbStorage(`demo-${s.id}`).remove();
      location.reload();
    });
  }
  const s = await engine.status();
  if (engine.kind === 'page') {
    // ORT settles its thread count when a session starts, which a halted model never reaches.
    const threads = s.state === 'ready' ? `ORT wasm threads: ${(engine as Awaited<ReturnType<typeof pageEngine>>).k.backendInfo().wasmThreads}` : `threads asked: ${opts.threads}`;
    $('env').textContent = `${env} · ${threads} · backend: ${opts.backend}`;
  }
  renderStatus(s);
  return s;
}

const ready = start().catch((e: unknown) => {
  const s: Status = { state: 'halted', error: asError(e), detail: 'the demo failed to start' };
  renderStatus(s);
  return s;
});

/** The page's actions, for tests and the console. */
const api = {
  ready,
  mode: bridge ? 'bridge' : 'page',
  status: async (): Promise<Status> => (engine ? engine.status() : current),
  classifyRecorded,
  classifyDrawing,
  classifyMany,
  count: async (): Promise<number> => { await ready; return digits?.samples.length ?? 0; },
  env: async () => {
    await ready;
    const e = engine as (Engine & { k?: typeof Keylock }) | undefined;
    return {
      mode: bridge ? 'bridge' : 'page',
      crossOriginIsolated: globalThis.crossOriginIsolated === true,
      backend: e?.k?.backendInfo(),
      webgpu: e?.k ? await e.k.webGpuInfo() : undefined,
    };
  },
};
(window as unknown as { keylockDemo: typeof api }).keylockDemo = api;
