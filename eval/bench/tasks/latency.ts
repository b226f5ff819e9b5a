/**
 * Bench task "latency": per-inference time of plain, the locked graph bare and
 * the locked model through keylock, interleaved call by call in one process
 * (and, with the native backend, native against wasm on the plain models).
 */
import { readFileSync } from 'node:fs';
import type { BackendSession } from '../../../runtime/backend.ts';
import { openKlm } from '../../../runtime/klm.ts';
import { resolveBackend } from '../../../runtime/backends.ts';
import { restoreModel, runHooks } from '../../../runtime/keys/index.ts';
import type { TensorMap } from '../../../runtime/tensor.ts';
import { fromHex, type Plan, type PreparedCase } from '../plan.ts';
import { interleaveCalls, ratios, summarize, timeBatch } from '../stats.ts';
import { inputFor, lockedModel, log, plainSession, type Args } from './shared.ts';

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
  const session = await (await resolveBackend(backend)).create(bytes, { threads });
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
export async function latency(plan: Plan, a: Args): Promise<unknown> {
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
