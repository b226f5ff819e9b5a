/**
 * One measurement in its own process (ORT-web fixes its thread count per
 * process, and peak RSS is a per-process figure):
 *
 *   node --import tsx [--expose-gc] eval/bench/child.ts <task> <args.json>
 *
 * Progress goes to stderr; the result is one stdout line `BENCH-RESULT <json>`.
 * Every task imports the same modules, so plain and locked runs start equal.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import nacl from 'tweetnacl';
import { Keystore } from '../../keystore/keystore.ts';
import { secretboxDetached, sha256, sha256Async } from '../../keystore/nacl.ts';
import { memoryStorage } from '../../keystore/storage.ts';
import type { BackendSession } from '../../runtime/backend.ts';
import { openKlm, type SealedLock } from '../../runtime/klm.ts';
import { restoreDeeplock } from '../../runtime/keys/deeplock.ts';
import { deeplockLock, deeplockSchedule } from '../../runtime/keys/deeplock-key.ts';
import { sealedNonce, sealedSecretboxKey } from '../../runtime/keys/derive.ts';
import { restoreSealed } from '../../runtime/keys/sealed.ts';
import { BACKENDS, loadModel, restoreModel, runHooks, type LoadPhase, type LockedModel } from '../../runtime/model.ts';
import { decodeRecorded } from '../../runtime/recorded.ts';
import type { TensorMap } from '../../runtime/tensor.ts';
import { forceSecretboxJs } from '../../keystore/wasm/secretbox.ts';
import { fromHex, ROOT, type Plan, type PreparedCase } from './plan.ts';
import { interleaveCalls, ratios, seededFloats, summarize, timeBatch, type Summary } from './stats.ts';

const log = (s: string): void => { process.stderr.write(`    ${s}\n`); };

function inputFor(plan: Plan, modelId: string): TensorMap {
  const m = plan.models.find((x) => x.id === modelId)!;
  if (m.mnist) {
    const s = decodeRecorded(new Uint8Array(readFileSync(`${ROOT}test/fixtures/mnist-test.cbor`)))[0];
    return s.inputs!;
  }
  const size = m.input.dims.reduce((a, b) => a * b, 1);
  return { [m.input.name]: { dtype: 'float32', dims: m.input.dims, data: seededFloats(size, 7) } };
}

async function plainSession(plan: Plan, modelId: string, backend: string, threads: number): Promise<BackendSession> {
  const m = plan.models.find((x) => x.id === modelId)!;
  return BACKENDS[backend].create(new Uint8Array(readFileSync(m.path)), { threads });
}

/** The vendor key a device pins: loads below verify the signature against it, as a keystore's loads do. */
const trustOf = (plan: Plan): Uint8Array[] => [fromHex(plan.vendorPub)];

async function lockedModel(plan: Plan, c: PreparedCase, backend: string, threads: number): Promise<LockedModel> {
  const m = await loadModel(new Uint8Array(readFileSync(c.klm)), { modelKey: fromHex(c.modelKey), trust: trustOf(plan), backend, threads });
  if (m.state !== 'ready') throw m.error!;
  return m;
}

interface Args { plan: string; backend?: string; threads?: number; rounds?: number; targetMs?: number; cases?: string[] }

/**
 * The locked graph in a bare backend session: the restored model fed exactly
 * what LockedModel feeds (key tensors; for shuffle, the input shuffled once,
 * outside the timing). Locked / bare is keylock's per-run JS cost; bare / plain
 * is what the lock changed in the graph.
 */
async function bareSession(c: PreparedCase, backend: string, threads: number, x: TensorMap): Promise<{ session: BackendSession; feeds: TensorMap }> {
  const file = openKlm(new Uint8Array(readFileSync(c.klm)));
  const ctx = { modelId: file.manifest.modelId, modelKey: fromHex(c.modelKey) };
  const bytes = new Uint8Array(file.model);
  restoreModel(bytes, file.manifest.locks, ctx);
  const session = await BACKENDS[backend].create(bytes, { threads });
  const feeds: TensorMap = {};
  const hooks = runHooks(file.manifest.locks, ctx);
  for (const [name, t] of Object.entries(x)) {
    let v = t;
    for (const h of hooks) if (h.transformInput) v = h.transformInput(name, v);
    feeds[name] = { ...v, data: v.data.slice() };
  }
  for (const h of hooks) if (h.feeds) Object.assign(feeds, h.feeds);
  return { session, feeds };
}

/**
 * Per-inference latency, interleaved call by call in one process: plain, the
 * locked graph bare, and the locked model through keylock. With `native`, also
 * native / wasm on the plain models.
 */
async function latency(plan: Plan, a: Args): Promise<unknown> {
  const backend = a.backend ?? 'wasm';
  const threads = a.threads ?? 1;
  const rows = [];
  const cases = plan.cases.filter((c) => !a.cases || a.cases.includes(c.id));
  const sessions = new Map<string, BackendSession>();
  const roundMs = a.targetMs ?? 100;
  const plan1 = (perCall: number): { rounds: number; calls: number } => {
    // Long inferences: fewer, shorter rounds, or one model would take minutes.
    const rounds = perCall > 20 ? Math.min(a.rounds ?? 21, 11) : (a.rounds ?? 21);
    return { rounds, calls: Math.max(3, Math.min(400, Math.round(roundMs / perCall))) };
  };
  for (const c of cases) {
    log(`latency ${backend} ${threads}T ${c.id}`);
    const x = inputFor(plan, c.model);
    let plain = sessions.get(c.model);
    if (!plain) { plain = await plainSession(plan, c.model, backend, threads); sessions.set(c.model, plain); }
    const locked = await lockedModel(plan, c, backend, threads);
    const bare = await bareSession(c, backend, threads, x);
    const p = plain;
    const runPlain = (): Promise<unknown> => p.run(x);
    const runBare = (): Promise<unknown> => bare.session.run(bare.feeds);
    const runLocked = (): Promise<unknown> => locked.run(x);
    for (let i = 0; i < 5; i++) { await runPlain(); await runBare(); await runLocked(); }
    const per = await timeBatch(runPlain, 5);
    const { rounds, calls } = plan1(per);
    const r = await interleaveCalls([runPlain, runBare, runLocked], rounds, calls);
    await locked.release();
    await bare.session.release();
    const [pl, ba, lo] = r.sides;
    rows.push({
      case: c.id, model: c.model, label: c.label, goal: c.goal, calls, rounds,
      plainMs: summarize(pl), bareMs: summarize(ba), lockedMs: summarize(lo),
      ratio: summarize(ratios(lo, pl)), graphRatio: summarize(ratios(ba, pl)), jsRatio: summarize(ratios(lo, ba)),
    });
  }
  const vsWasm = [];
  if (backend === 'native') {
    for (const [model, nat] of sessions) {
      log(`native vs wasm ${threads}T ${model}`);
      const wasm = await plainSession(plan, model, 'wasm', threads);
      const x = inputFor(plan, model);
      const runW = (): Promise<unknown> => wasm.run(x);
      const runN = (): Promise<unknown> => nat.run(x);
      for (let i = 0; i < 5; i++) { await runW(); await runN(); }
      const { rounds, calls } = plan1(await timeBatch(runW, 5));
      const r = await interleaveCalls([runW, runN], rounds, calls);
      vsWasm.push({ model, calls, wasmMs: summarize(r.sides[0]), nativeMs: summarize(r.sides[1]), ratio: summarize(ratios(r.sides[1], r.sides[0])) });
      await wasm.release();
    }
  }
  for (const s of sessions.values()) await s.release();
  return { backend, threads, rows, vsWasm };
}

/**
 * Cold start from bytes in memory to the first output, interleaved: plain
 * (session create + first run), locked with the model key, and locked through
 * a keystore (open and unseal it, grant, then the same), with load phases.
 */
async function cold(plan: Plan, a: Args): Promise<unknown> {
  const backend = a.backend ?? 'wasm';
  const threads = a.threads ?? 1;
  const ksBytes = new Uint8Array(readFileSync(plan.keystore.path));
  const storageKey = fromHex(plan.keystore.storageKey);
  // ORT's one-time runtime start (wasm compile, threads) is the same for everyone: pay it before timing.
  const warm = await plainSession(plan, plan.cases[0].model, backend, threads);
  await warm.release();
  const rows = [];
  for (const c of plan.cases.filter((x) => !a.cases || a.cases.includes(x.id))) {
    log(`cold ${backend} ${threads}T ${c.id}`);
    const m = plan.models.find((x) => x.id === c.model)!;
    const plainBytes = new Uint8Array(readFileSync(m.path));
    const klm = new Uint8Array(readFileSync(c.klm));
    const x = inputFor(plan, c.model);
    const phases: Record<string, number[]> = {};
    const add = (k: string, ms: number): void => { (phases[k] ??= []).push(ms); };
    const plainCold = async (): Promise<number> => {
      const t = performance.now();
      const s = await BACKENDS[backend].create(plainBytes, { threads });
      const t1 = performance.now();
      await s.run(x);
      const t2 = performance.now();
      add('plain create', t1 - t);
      add('plain first run', t2 - t1);
      await s.release();
      return t2 - t;
    };
    const lockedCold = async (withKeystore: boolean): Promise<number> => {
      const pre = withKeystore ? 'keystore: ' : '';
      // A device reads the file into bytes of its own and hands them over (loadModelFile: consume);
      // the copy is made before the clock starts, as the plain side's bytes are there before it.
      const own = klm.slice();
      const t = performance.now();
      let ks: Keystore | undefined;
      if (withKeystore) {
        ks = await Keystore.open(memoryStorage(ksBytes), { unlock: { kind: 'hook', getKey: async () => storageKey.slice() } });
        add(`${pre}keystore open`, performance.now() - t);
      }
      const onPhase = (p: LoadPhase, ms: number): void => add(pre + p, ms);
      const model = await loadModel(own, ks ? { keystore: ks, backend, threads, onPhase, consume: true } : { modelKey: fromHex(c.modelKey), trust: trustOf(plan), backend, threads, onPhase, consume: true });
      if (model.state !== 'ready') throw model.error!;
      const t1 = performance.now();
      await model.run(x);
      const t2 = performance.now();
      add(`${pre}first run`, t2 - t1);
      await model.release();
      ks?.close();
      return t2 - t;
    };
    const rounds = a.rounds ?? 9;
    const plainT: number[] = [];
    const keyT: number[] = [];
    const ksT: number[] = [];
    await plainCold(); await lockedCold(false); await lockedCold(true);
    for (const k of Object.keys(phases)) phases[k] = [];
    for (let i = 0; i < rounds; i++) {
      // Rotate the order each round so that load drift does not favour one side.
      const order = [0, 1, 2].map((j) => (j + i) % 3);
      for (const o of order) {
        if (o === 0) plainT.push(await plainCold());
        else if (o === 1) keyT.push(await lockedCold(false));
        else ksT.push(await lockedCold(true));
      }
    }
    const ratio = (xs: number[]): Summary => summarize(xs.map((v, i) => v / plainT[i]));
    const ph: Record<string, number> = {};
    for (const [k, v] of Object.entries(phases)) ph[k] = summarize(v).median;
    rows.push({
      case: c.id, model: c.model, label: c.label, modelBytes: m.bytes, rounds,
      plainMs: summarize(plainT), keyMs: summarize(keyT), keystoreMs: summarize(ksT),
      keyRatio: ratio(keyT), keystoreRatio: ratio(ksT), phases: ph,
    });
  }
  return { backend, threads, rows };
}

/**
 * Restore throughput on a large buffer: `sealed` (noble, in place) beside the
 * tweetnacl code path it replaced, `deeplock`, and SHA-256 in JS vs WebCrypto.
 */
async function throughput(_plan: Plan, a: { mb: number; rounds: number }): Promise<unknown> {
  const tensorBytes = 4 << 20;
  const total = a.mb << 20;
  const count = Math.max(1, Math.round(total / tensorBytes));
  const size = count * Math.min(tensorBytes, total);
  const per = size / count;
  const modelKey = fromHex('00'.repeat(31) + '01');
  const modelId = 'bench-throughput';
  // Tensors sit at odd offsets, as raw_data inside a protobuf usually does.
  const plain = new Uint8Array(seededFloats(Math.ceil((size + 3 * count) / 4), 3).buffer, 0, size + 3 * count);
  const key = sealedSecretboxKey(modelKey);
  const lock: SealedLock = { scheme: 'sealed', tensors: [] };
  const sealedModel = plain.slice();
  for (let i = 0; i < count; i++) {
    const offset = i * (per + 3) + 1;
    const name = `t${i}`;
    const r = sealedModel.subarray(offset, offset + per);
    const { cipher, mac } = secretboxDetached(r, sealedNonce(modelId, name), key);
    r.set(cipher);
    lock.tensors.push({ name, offset, length: per, dtype: 'float32', mac: mac.slice() });
  }
  const ctx = { modelId, modelKey };
  // The code path before this change: tweetnacl's secretbox.open on MAC || ciphertext, then a copy back.
  const legacy = (m: Uint8Array): void => {
    for (const t of lock.tensors) {
      const range = m.subarray(t.offset, t.offset + t.length);
      const boxed = new Uint8Array(16 + t.length);
      boxed.set(t.mac, 0);
      boxed.set(range, 16);
      const p = nacl.secretbox.open(boxed, sealedNonce(modelId, t.name), key);
      if (!p) throw new Error('legacy open failed');
      range.set(p);
      p.fill(0);
    }
  };
  const work = sealedModel.slice();
  const fresh = (): Uint8Array => { work.set(sealedModel); return work; };
  const timeOne = async (f: (m: Uint8Array) => void): Promise<number> => {
    const m = fresh();
    const t = performance.now();
    f(m);
    return performance.now() - t;
  };
  log(`throughput sealed ${a.mb} MB, ${count} tensor(s)`);
  // restoreSealed as the device runs it (WebAssembly SIMD), its JavaScript fallback
  // (forceSecretboxJs, what an engine without WebAssembly SIMD runs), and the
  // tweetnacl path of the first version, in a rotating order.
  const jsOnly = (m: Uint8Array): void => {
    forceSecretboxJs(true);
    try { restoreSealed(m, lock, ctx); } finally { forceSecretboxJs(false); }
  };
  const pinned = (m: Uint8Array): void => restoreSealed(m, lock, { ...ctx, authenticated: true });
  const sides: [number[], (m: Uint8Array) => void][] = [[[], (m) => restoreSealed(m, lock, ctx)], [[], jsOnly], [[], legacy], [[], pinned]];
  for (let i = 0; i < a.rounds; i++) {
    for (let j = 0; j < sides.length; j++) {
      const [times, f] = sides[(i + j) % sides.length];
      times.push(await timeOne(f));
    }
  }
  const [now, js0, old, pin] = sides.map(([t]) => t);
  for (const f of [(m: Uint8Array) => restoreSealed(m, lock, ctx), jsOnly, pinned]) {
    const check = fresh();
    f(check);
    if (!check.every((v, i) => v === plain[i])) throw new Error('sealed restore did not give the plaintext back');
  }
  // deeplock: lock the same bytes as one float32 tensor.
  log(`throughput deeplock ${a.mb} MB`);
  const dl = plain.slice(0, size);
  const params = size / 4;
  const sched = deeplockSchedule(modelKey, params);
  deeplockLock(dl, 0, sched);
  sched.fill(0);
  const dlLock = { scheme: 'deeplock' as const, tensors: [{ name: 'w', offset: 0, length: size, dtype: 'float32' }] };
  const dlWork = dl.slice();
  const dlT: number[] = [];
  for (let i = 0; i < a.rounds; i++) {
    dlWork.set(dl);
    const t = performance.now();
    restoreDeeplock(dlWork, dlLock, ctx);
    dlT.push(performance.now() - t);
  }
  log(`throughput sha256 ${a.mb} MB`);
  const js: number[] = [];
  const wc: number[] = [];
  for (let i = 0; i < a.rounds; i++) {
    let t = performance.now();
    sha256(plain);
    js.push(performance.now() - t);
    t = performance.now();
    await sha256Async(plain);
    wc.push(performance.now() - t);
  }
  // For comparison only (not a keylock format): authenticated decryption in native code.
  log(`throughput AES-256-GCM (WebCrypto) ${a.mb} MB`);
  const aesKey = await crypto.subtle.importKey('raw', key as Uint8Array<ArrayBuffer>, { name: 'AES-GCM' }, false, ['encrypt', 'decrypt']);
  const iv = new Uint8Array(12);
  const aesCt = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, aesKey, plain.subarray(0, size) as Uint8Array<ArrayBuffer>));
  const aes: number[] = [];
  for (let i = 0; i < a.rounds; i++) {
    const t = performance.now();
    await crypto.subtle.decrypt({ name: 'AES-GCM', iv }, aesKey, aesCt);
    aes.push(performance.now() - t);
  }
  const mbps = (ms: number[]): Summary => summarize(ms.map((v) => size / 1e6 / (v / 1000)));
  return {
    bytes: size, tensors: count,
    sealed: mbps(now), sealedJs: mbps(js0), sealedLegacy: mbps(old), sealedPinned: mbps(pin), sealedSpeedup: summarize(js0.map((v, i) => v / now[i])),
    deeplock: mbps(dlT), sha256js: mbps(js), sha256webcrypto: mbps(wc), aesGcmWebcrypto: mbps(aes),
  };
}

function procStatus(field: 'VmHWM' | 'VmRSS'): number {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch { /* not Linux */ }
  return process.memoryUsage().rss;
}
const vmHWM = (): number => procStatus('VmHWM');

/** Resets VmHWM to the current RSS (Linux >= 4.0), so the next peak is this step's own. */
function resetPeak(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

/**
 * Peak RSS of one load and `runs` runs (plain or locked), from file bytes in
 * memory. Run with --expose-gc; the ORT runtime is started first on a tiny
 * model so both variants measure the same thing.
 */
async function mem(plan: Plan, a: { variant: 'plain' | 'locked'; case: string; runs: number }): Promise<unknown> {
  const c = plan.cases.find((x) => x.id === a.case)!;
  const m = plan.models.find((x) => x.id === c.model)!;
  const x = inputFor(plan, c.model);
  const gc = (globalThis as { gc?: () => void }).gc;
  // Warm-up, the same in both variants: ORT's runtime, and keylock's load path on a tiny locked
  // model (code, JIT, CBOR and crypto tables), so that what follows is the cost of this model.
  const tiny = await BACKENDS.wasm.create(new Uint8Array(readFileSync(`${ROOT}models/reference/mnist-cnn.onnx`)), { threads: 1 });
  await tiny.run(inputFor(plan, 'mnist-cnn'));
  await tiny.release();
  const tinyCase = plan.cases.find((k) => k.id === 'mnist-cnn.sealed')!;
  const tinyLocked = await lockedModel(plan, tinyCase, 'wasm', 1);
  await tinyLocked.run(inputFor(plan, 'mnist-cnn'));
  await tinyLocked.release();
  gc?.();
  const peakReset = resetPeak();
  const base = procStatus('VmRSS');
  const baseRss = base;
  const bytes = new Uint8Array(readFileSync(a.variant === 'plain' ? m.path : c.klm));
  let run: () => Promise<unknown>;
  let release: () => Promise<void>;
  if (a.variant === 'plain') {
    const s = await BACKENDS.wasm.create(bytes, { threads: 1 });
    run = () => s.run(x);
    release = () => s.release();
  } else {
    // As a device loads a file (targets/node loadModelFile): the bytes read are handed over.
    const model = await loadModel(bytes, { modelKey: fromHex(c.modelKey), trust: trustOf(plan), consume: true });
    if (model.state !== 'ready') throw model.error!;
    run = () => model.run(x);
    release = () => model.release();
  }
  await run();
  // A peak over a span is at least the RSS it started from and at least an earlier peak of the
  // same span; the kernel's RSS counters are approximate (per-CPU batches), so on some kernels a
  // raw VmHWM read lands a few pages under the RSS read just before it. Take the max explicitly.
  const afterLoad = Math.max(base, vmHWM());
  for (let i = 0; i < a.runs; i++) await run();
  const afterRuns = Math.max(afterLoad, vmHWM());
  gc?.();
  // What JS still holds after load: the caller's file bytes only, if the decrypted copy was released.
  const mu = process.memoryUsage();
  await release();
  return { variant: a.variant, case: c.id, modelBytes: m.bytes, fileBytes: bytes.byteLength, peakReset, base, baseRss, afterLoad, afterRuns, arrayBuffersAfterGc: mu.arrayBuffers, externalAfterGc: mu.external };
}

/** Heap after GC every `every` runs over `runs` runs, per case (and the plain model). Needs --expose-gc. */
async function alloc(plan: Plan, a: { runs: number; every: number; cases: string[] }): Promise<unknown> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('alloc needs node --expose-gc');
  const rows = [];
  for (const id of a.cases) {
    const plainOf = id.startsWith('plain:') ? id.slice(6) : undefined;
    const c = plainOf ? undefined : plan.cases.find((x) => x.id === id)!;
    const model = plainOf ?? c!.model;
    log(`alloc ${id}, ${a.runs} runs`);
    const x = inputFor(plan, model);
    let run: () => Promise<unknown>;
    let release: () => Promise<void>;
    if (plainOf) {
      const s = await plainSession(plan, model, 'wasm', 1);
      run = () => s.run(x);
      release = () => s.release();
    } else {
      const m = await lockedModel(plan, c!, 'wasm', 1);
      run = () => m.run(x);
      release = () => m.release();
    }
    for (let i = 0; i < 50; i++) await run();
    const at: number[] = [];
    const heap: number[] = [];
    const ab: number[] = [];
    const rss: number[] = [];
    const sample = (n: number): void => {
      gc();
      const u = process.memoryUsage();
      at.push(n); heap.push(u.heapUsed); ab.push(u.arrayBuffers); rss.push(u.rss);
    };
    sample(0);
    const perRun: number[] = [];
    for (let n = a.every; n <= a.runs; n += a.every) {
      perRun.push(await timeBatch(run, a.every));
      sample(n);
    }
    await release();
    rows.push({ case: id, model, at, heapUsed: heap, arrayBuffers: ab, rss, msPerRun: summarize(perRun) });
  }
  return { rows };
}

const [task, argFile] = process.argv.slice(2);
const args = JSON.parse(readFileSync(argFile, 'utf8'));
const plan = JSON.parse(readFileSync(args.plan, 'utf8')) as Plan;
const tasks: Record<string, (p: Plan, a: never) => Promise<unknown>> = { latency, cold, throughput, mem, alloc };
if (!tasks[task]) throw new Error(`unknown task ${task}; known: ${Object.keys(tasks).join(', ')}`);
const result = await tasks[task](plan, args as never);
process.stdout.write(`BENCH-RESULT ${JSON.stringify(result)}\n`);
// ORT's worker threads would keep the process alive.
process.exit(0);
