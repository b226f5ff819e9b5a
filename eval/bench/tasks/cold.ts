/**
 * Bench task "cold": bytes in memory to the first output, plain against locked
 * with the model key (the digest hashed before the restore, and beside it on
 * another thread) and locked through a keystore, with the load phases.
 */
import { createDecipheriv, createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { PerformanceObserver } from 'node:perf_hooks';
import { Keystore } from '../../../keystore/keystore.ts';
import { memoryStorage } from '../../../keystore/storage.ts';
import { resolveBackend } from '../../../runtime/backends.ts';
import { env } from '../../../runtime/env.ts';
import { loadModel, type LoadPhase } from '../../../runtime/load.ts';
import { fromHex, type Plan } from '../plan.ts';
import { summarize, type Summary } from '../stats.ts';
import { inputFor, log, plainSession, trustOf, type Args } from './shared.ts';

/**
 * Cold start from bytes in memory to the first output, interleaved: plain
 * (session create + first run), locked with the model key, and locked through
 * a keystore (open and unseal it, grant, then the same), with load phases.
 */
export async function cold(plan: Plan, a: Args): Promise<unknown> {
  const backend = a.backend ?? 'wasm';
  const threads = a.threads ?? 1;
  const ksBytes = new Uint8Array(readFileSync(plan.keystore.path));
  const storageKey = fromHex(plan.keystore.storageKey);
  // ORT's one-time runtime start (wasm compile, threads) is the same for everyone: pay it before timing.
  const warm = await plainSession(plan, plan.cases[0].model, backend, threads);
  await warm.release();
  const rows = [];
  // Garbage collections (start, duration), so that each cold start can say how much of it was collection.
  const gcs: [number, number][] = [];
  const obs = new PerformanceObserver((l) => { for (const e of l.getEntries()) gcs.push([e.startTime, e.duration]); });
  obs.observe({ entryTypes: ['gc'] });
  const gcPending: [string, number, number][] = [];
  for (const c of plan.cases.filter((x) => !a.cases || a.cases.includes(x.id))) {
    log(`cold ${backend} ${threads}T ${c.id}`);
    const m = plan.models.find((x) => x.id === c.model)!;
    const plainBytes = new Uint8Array(readFileSync(m.path));
    const klm = new Uint8Array(readFileSync(c.klm));
    const x = inputFor(plan, c.model);
    const phases: Record<string, number[]> = {};
    const add = (k: string, ms: number): void => { (phases[k] ??= []).push(ms); };
    const plainCold = async (): Promise<number> => {
      // Bytes of its own, as a device reads its file, made before the clock starts like the locked side's.
      const own = plainBytes.slice();
      const t = performance.now();
      const s = await (await resolveBackend(backend)).create(own, { threads });
      const t1 = performance.now();
      await s.run(x);
      const t2 = performance.now();
      add('plain create', t1 - t);
      add('plain first run', t2 - t1);
      gcPending.push(['plain gc', t, t2]);
      await s.release();
      return t2 - t;
    };
    // beside: env.parallelDigest true (SHA-256 on another thread while the restore runs), else false
    // (hashed first); the keystore side loads as env leaves it (unset: hashed first, the default).
    const platformDigest = env.parallelDigest;
    const lockedCold = async (withKeystore: boolean, beside = false): Promise<number> => {
      const pre = withKeystore ? 'keystore: ' : beside ? 'beside: ' : '';
      env.parallelDigest = withKeystore ? platformDigest : beside;
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
      gcPending.push([`${pre}gc`, t, t2]);
      await model.release();
      ks?.close();
      env.parallelDigest = platformDigest;
      return t2 - t;
    };
    const rounds = a.rounds ?? 9;
    const plainT: number[] = [];
    const keyT: number[] = [];
    const ksT: number[] = [];
    const besideT: number[] = [];
    // The floor of a load that hashes every byte and then decrypts every byte on one thread: Node's
    // SHA-256 of the model bytes, then ChaCha20 (node:crypto, one call, no tags) over as many bytes.
    const floorT: number[] = [];
    const scratch = new Uint8Array(m.bytes);
    const zeros = new Uint8Array(32);
    const floorOnce = (): void => {
      const t = performance.now();
      createHash('sha256').update(plainBytes).digest();
      createDecipheriv('chacha20', zeros, new Uint8Array(16)).update(scratch);
      floorT.push(performance.now() - t);
    };
    await plainCold(); await lockedCold(false); await lockedCold(true); await lockedCold(false, true);
    for (const k of Object.keys(phases)) phases[k] = [];
    gcPending.length = 0; // the warm-up loads are not counted
    for (let i = 0; i < rounds; i++) {
      // Rotate the order each round so that load drift does not favour one side.
      const order = [0, 1, 2, 3].map((j) => (j + i) % 4);
      for (const o of order) {
        if (o === 0) plainT.push(await plainCold());
        else if (o === 1) keyT.push(await lockedCold(false));
        else if (o === 2) ksT.push(await lockedCold(true));
        else besideT.push(await lockedCold(false, true));
      }
      floorOnce();
    }
    await new Promise((r) => setTimeout(r, 20)); // the last collections' entries arrive
    for (const [k, a, b] of gcPending.splice(0)) add(k, gcs.filter(([st]) => st >= a && st < b).reduce((n, [, d]) => n + d, 0));
    const ratio = (xs: number[], over = plainT): Summary => summarize(xs.map((v, i) => v / over[i]));
    const ph: Record<string, number> = {};
    for (const [k, v] of Object.entries(phases)) ph[k] = summarize(v).median;
    rows.push({
      case: c.id, model: c.model, label: c.label, modelBytes: m.bytes, rounds,
      plainMs: summarize(plainT), keyMs: summarize(keyT), keystoreMs: summarize(ksT),
      keyRatio: ratio(keyT), keystoreRatio: ratio(ksT), phases: ph,
      besideMs: summarize(besideT), besideRatio: ratio(besideT), besideOverKey: ratio(besideT, keyT), platformDigest: platformDigest ?? null,
      floorMs: summarize(floorT), floorRatio: summarize(floorT.map((f, i) => (plainT[i] + f) / plainT[i])),
    });
  }
  obs.disconnect();
  return { backend, threads, rows };
}
