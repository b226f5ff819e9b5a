/**
 * `npm run fuzz`: the long fuzzing campaign over every parser (targets.ts).
 *
 *   KEYLOCK_FUZZ_SECONDS  wall-clock budget (default 600)
 *   KEYLOCK_FUZZ_JOBS     fuzzing threads (default: one per core, os.availableParallelism())
 *   KEYLOCK_FUZZ_FLOOR    inputs every target gets before any gets more (default 20000)
 *   KEYLOCK_FUZZ_RUNS     inputs per target instead of a time budget
 *   KEYLOCK_FUZZ_SEED     fast-check seed (default: random, printed)
 *   KEYLOCK_FUZZ_ONLY     comma-separated target names
 *   KEYLOCK_FUZZ_TRACE    print every mutation before it runs (to find a crashing one)
 *
 * The targets run in worker threads, one per core, each taking the next job from
 * the main thread. The budget (seconds × threads) is spent in two rounds: first
 * every target runs until it has FLOOR inputs (or twice an even share of the
 * budget, if it is that slow), so a slow parser is not starved by fast ones;
 * then what is left is split evenly among the targets, each continuing with a
 * seed of its own. A target's two rounds are reported as one.
 *
 * Before each input a worker copies it into its slot of shared memory and bumps
 * its counter; the main thread watches the counters, and if one stands still for
 * 30 s (a hang a property cannot time out, since a parser runs synchronously), it
 * writes that input to `fuzz-hang-<target>.bin` and fails. Exit code 0 only when
 * every target finished without a finding.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { closeThreadCpu, formatStats, fuzzTarget, type FuzzStats } from './harness.ts';
import { makeTargets } from './targets.ts';

const SLOT_BYTES = 8 << 20;
const SLOT = 8 + SLOT_BYTES;
const HANG_SECONDS = 30;

/** One run of one target. */
interface Job { target: string; runs?: number; seconds?: number; seed: number; round: 1 | 2 }
interface Boot { slot: number; sab: SharedArrayBuffer; only?: string[] }
type ToWorker = { type: 'job'; job: Job } | { type: 'end' };
type FromWorker = { type: 'ready'; targets: string[] } | { type: 'done'; stats: FuzzStats } | { type: 'fail'; target: string; message: string };

async function worker(boot: Boot): Promise<void> {
  const head = new Int32Array(boot.sab, boot.slot * SLOT, 2);
  const slot = new Uint8Array(boot.sab, boot.slot * SLOT + 8, SLOT_BYTES);
  const post = (m: FromWorker): void => parentPort!.postMessage(m);
  const targets = new Map((await makeTargets()).filter((t) => !boot.only || boot.only.includes(t.name)).map((t) => [t.name, t]));
  parentPort!.on('message', async (m: ToWorker) => {
    if (m.type === 'end') { closeThreadCpu(); parentPort!.close(); return; }
    const { job } = m;
    try {
      const stats = await fuzzTarget(targets.get(job.target)!, {
        seconds: job.seconds, runs: job.runs, seed: job.seed,
        onInput: (bytes) => {
          const n = Math.min(bytes.byteLength, SLOT_BYTES);
          slot.set(bytes.subarray(0, n));
          Atomics.store(head, 1, n);
          Atomics.add(head, 0, 1);
        },
      });
      post({ type: 'done', stats });
    } catch (e) {
      post({ type: 'fail', target: job.target, message: (e as Error).message });
    }
  });
  post({ type: 'ready', targets: [...targets.keys()] });
}

/** Adds a target's second round to its first. */
export function mergeStats(a: FuzzStats, b: FuzzStats): FuzzStats {
  const errors = { ...a.errors };
  for (const [k, v] of Object.entries(b.errors)) errors[k] = (errors[k] ?? 0) + v;
  const slow = b.slowestMs > a.slowestMs ? b : a;
  return {
    target: a.target, tried: a.tried + b.tried, accepted: a.accepted + b.accepted, errors,
    slowestMs: slow.slowestMs, slowest: slow.slowest, largest: Math.max(a.largest, b.largest),
    peakRssMiB: Math.max(a.peakRssMiB, b.peakRssMiB), seconds: a.seconds + b.seconds, cpuSeconds: a.cpuSeconds + b.cpuSeconds,
  };
}

async function main(): Promise<number> {
  const env = process.env;
  const runs = env.KEYLOCK_FUZZ_RUNS ? Number(env.KEYLOCK_FUZZ_RUNS) : undefined;
  const seconds = runs ? undefined : Number(env.KEYLOCK_FUZZ_SECONDS ?? 600);
  const jobs = Math.max(1, Number(env.KEYLOCK_FUZZ_JOBS ?? availableParallelism()));
  const floor = Number(env.KEYLOCK_FUZZ_FLOOR ?? 20_000);
  const seed = env.KEYLOCK_FUZZ_SEED ? Number(env.KEYLOCK_FUZZ_SEED) : (Math.random() * 2 ** 31) | 0;
  const only = env.KEYLOCK_FUZZ_ONLY?.split(',').map((s) => s.trim()).filter(Boolean);
  const sab = new SharedArrayBuffer(SLOT * jobs);
  process.stdout.write(`keylock fuzz: seed ${seed}, ${runs ? `${runs} inputs per target` : `${seconds} s on ${jobs} thread(s), each target first to ${floor} inputs`}${only ? `, targets ${only.join(',')}` : ''}\n`);
  // Workers load this same file through tsx, registered inside the worker (workers do not inherit --import).
  const script = `import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(import.meta.url)}); })`;
  const workers = Array.from({ length: jobs }, (_, i) => new Worker(script, { eval: true, workerData: { slot: i, sab, only } satisfies Boot }));

  const started = performance.now();
  const deadline = seconds === undefined ? Infinity : started + seconds * 1000;
  const stats = new Map<string, FuzzStats>();
  const failures: string[] = [];
  const queue: Job[] = [];
  let names: string[] = [];
  let round2Left = 0;
  /** What each worker runs now: since when, its input counter then, and until when it may run. */
  const running: ({ job: Job; start: number; count: number; until: number } | undefined)[] = new Array(jobs).fill(undefined);
  const counter = (i: number): number => Atomics.load(new Int32Array(sab, i * SLOT, 2), 0);
  /** When a running job should end: a first-round job at its floor, at the rate it has had so far. */
  const expectedEnd = (i: number, now: number): number => {
    const r = running[i]!;
    const done = counter(i) - r.count;
    if (r.job.round === 2 || !r.job.runs || done < 50) return r.until;
    return Math.min(r.until, now + ((r.job.runs - done) * (now - r.start)) / done);
  };

  const next = (): Job | undefined => {
    const job = queue.shift();
    if (job || seconds === undefined || round2Left === 0) return job;
    // Second round: the worker time left (every thread until the deadline, less what the others still have
    // planned: a first-round job until it reaches its floor at its rate so far), split evenly among the
    // targets not yet given theirs; shares handed out early may err, the last ones get what is left.
    const now = performance.now();
    const planned = running.reduce((n, r, i) => n + (r ? Math.max(0, expectedEnd(i, now) - now) : 0), 0);
    const left = (jobs * (deadline - now) - planned) / 1000;
    const target = names[names.length - round2Left];
    round2Left--;
    const secs = Math.min(left / (round2Left + 1), (deadline - now) / 1000);
    if (secs < 0.5) return next();
    return { target, seconds: secs, seed: (seed + 0x9e3779b9) >>> 0, round: 2 };
  };

  const code = await new Promise<number>((resolve) => {
    let ready = 0;
    let ended = 0;
    let finished = false;
    const finish = (c: number): void => {
      if (finished) return;
      finished = true;
      clearInterval(timer);
      resolve(c);
    };
    const dispatch = (i: number): void => {
      running[i] = undefined;
      const job = next();
      const now = performance.now();
      running[i] = job && { job, start: now, count: counter(i), until: now + (job.seconds ?? 0) * 1000 };
      if (job) workers[i].postMessage({ type: 'job', job } satisfies ToWorker);
      else if (running.every((r) => r === undefined)) {
        for (const w of workers) w.postMessage({ type: 'end' } satisfies ToWorker);
        finish(failures.length ? 1 : 0);
      }
    };
    const last = new Array(jobs).fill(-1);
    const still = new Array(jobs).fill(0);
    const timer = setInterval(() => {
      for (let i = 0; i < jobs; i++) {
        const head = new Int32Array(sab, i * SLOT, 2);
        const n = counter(i);
        still[i] = n === last[i] && running[i] ? still[i] + 1 : 0;
        last[i] = n;
        if (still[i] >= HANG_SECONDS) {
          const len = Atomics.load(head, 1);
          const target = running[i]!.job.target;
          const file = `fuzz-hang-${target}.bin`;
          writeFileSync(file, new Uint8Array(sab, i * SLOT + 8, len));
          failures.push(`${target}: no verdict for ${HANG_SECONDS} s on an input of ${len} bytes (written to ${file})`);
          void Promise.all(workers.map((w) => w.terminate())).then(() => finish(1));
        }
      }
    }, 1000);
    workers.forEach((w, i) => {
      w.on('message', (m: FromWorker) => {
        if (m.type === 'ready') {
          if (++ready < jobs) return;
          names = m.targets;
          const share = seconds === undefined ? undefined : (seconds * jobs) / names.length;
          for (const target of names) {
            queue.push(runs ? { target, runs, seed, round: 1 } : { target, runs: floor, seconds: 2 * share!, seed, round: 1 });
          }
          round2Left = runs ? 0 : names.length;
          for (let k = 0; k < jobs; k++) dispatch(k);
          return;
        }
        if (m.type === 'done') {
          const prev = stats.get(m.stats.target);
          stats.set(m.stats.target, prev ? mergeStats(prev, m.stats) : m.stats);
          process.stdout.write(`${running[i]?.job.round === 2 ? '  more ' : ''}${formatStats(m.stats)}\n`);
        } else {
          failures.push(`${m.target}: ${m.message}`);
          process.stdout.write(`FAIL ${m.target}\n${m.message}\n`);
        }
        dispatch(i);
      });
      w.on('error', (e) => { failures.push(`worker ${i}: ${e.message}`); finish(1); });
      w.on('exit', (c) => { ended++; if (c !== 0 && !finished) { failures.push(`worker ${i} exited with ${c}`); finish(1); } });
    });
  });
  await Promise.all(workers.map((w) => w.terminate()));
  const all = names.filter((n) => stats.has(n)).map((n) => stats.get(n)!);
  if (all.length) {
    process.stdout.write(`\nper target, both rounds:\n`);
    for (const s of all) process.stdout.write(formatStats(s) + '\n');
  }
  const inputs = all.reduce((n, s) => n + s.tried, 0);
  const cpu = all.reduce((n, s) => n + s.cpuSeconds, 0);
  const under = runs ? [] : all.filter((s) => s.tried < floor).map((s) => `${s.target} ${s.tried}`);
  process.stdout.write(`total: ${inputs} inputs over ${all.length} targets in ${((performance.now() - started) / 1000).toFixed(0)} s on ${jobs} thread(s) (${cpu.toFixed(0)} CPU s, ${Math.round(inputs / Math.max(cpu, 1e-9))} inputs per CPU second), fewest ${Math.min(...all.map((s) => s.tried))} (${under.length ? `under ${floor}: ${under.join(', ')}` : `every target ≥ ${floor}`}), ${failures.length} finding(s); seed ${seed}\n`);
  for (const f of failures) process.stdout.write(`finding: ${f}\n`);
  return code;
}

if (isMainThread) process.exitCode = await main();
else await worker(workerData as Boot);
