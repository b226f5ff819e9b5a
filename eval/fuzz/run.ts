/**
 * `npm run fuzz`: the long fuzzing campaign over every parser (targets.ts).
 *
 *   KEYLOCK_FUZZ_SECONDS  total time budget (default 600), shared by the targets
 *   KEYLOCK_FUZZ_RUNS     inputs per target instead of a time budget
 *   KEYLOCK_FUZZ_SEED     fast-check seed (default: random, printed)
 *   KEYLOCK_FUZZ_ONLY     comma-separated target names
 *   KEYLOCK_FUZZ_TRACE    print every mutation before it runs (to find a crashing one)
 *
 * The targets run in a worker thread. Before each input the worker copies it
 * into shared memory and bumps a counter; the main thread watches the counter,
 * and if it stands still for 30 s (a hang a property cannot time out, since a
 * parser runs synchronously), it writes the input to `fuzz-hang-<target>.bin`
 * and fails. Exit code 0 only when every target finished without a finding.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { writeFileSync } from 'node:fs';
import { formatStats, fuzzTarget, type FuzzStats } from './harness.ts';
import { makeTargets } from './targets.ts';

const SLOT_BYTES = 8 << 20;
const HANG_SECONDS = 30;
/** Keyfiles and counters are small and quick: they get a quarter share of the time. */
const SMALL = new Set(['vendor-pub', 'vendor-key', 'device-pub', 'model-key', 'kls-counter', 'kls-attempts']);

interface Job { seconds?: number; runs?: number; seed: number; only?: string[]; sab: SharedArrayBuffer }
type Msg = { type: 'start'; target: string } | { type: 'done'; stats: FuzzStats } | { type: 'fail'; target: string; message: string } | { type: 'end' };

async function worker(job: Job): Promise<void> {
  const head = new Int32Array(job.sab, 0, 2);
  const slot = new Uint8Array(job.sab, 8);
  const post = (m: Msg): void => parentPort!.postMessage(m);
  const targets = (await makeTargets()).filter((t) => !job.only || job.only.includes(t.name));
  const units = targets.reduce((n, t) => n + (SMALL.has(t.name) ? 0.25 : 1), 0);
  for (const t of targets) {
    post({ type: 'start', target: t.name });
    const seconds = job.seconds === undefined ? undefined : (job.seconds * (SMALL.has(t.name) ? 0.25 : 1)) / units;
    try {
      const stats = await fuzzTarget(t, {
        seconds, runs: job.runs, seed: job.seed,
        onInput: (bytes) => {
          const n = Math.min(bytes.byteLength, SLOT_BYTES);
          slot.set(bytes.subarray(0, n));
          Atomics.store(head, 1, n);
          Atomics.add(head, 0, 1);
        },
      });
      post({ type: 'done', stats });
    } catch (e) {
      post({ type: 'fail', target: t.name, message: (e as Error).message });
    }
  }
  post({ type: 'end' });
}

async function main(): Promise<number> {
  const env = process.env;
  const runs = env.KEYLOCK_FUZZ_RUNS ? Number(env.KEYLOCK_FUZZ_RUNS) : undefined;
  const seconds = runs ? undefined : Number(env.KEYLOCK_FUZZ_SECONDS ?? 600);
  const seed = env.KEYLOCK_FUZZ_SEED ? Number(env.KEYLOCK_FUZZ_SEED) : (Math.random() * 2 ** 31) | 0;
  const only = env.KEYLOCK_FUZZ_ONLY?.split(',').map((s) => s.trim()).filter(Boolean);
  const sab = new SharedArrayBuffer(8 + SLOT_BYTES);
  const head = new Int32Array(sab, 0, 2);
  process.stdout.write(`keylock fuzz: seed ${seed}, ${runs ? `${runs} inputs per target` : `${seconds} s in all`}${only ? `, targets ${only.join(',')}` : ''}\n`);
  // The worker loads this same file through tsx, registered inside the worker (workers do not inherit --import).
  const boot = `import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(import.meta.url)}); })`;
  const w = new Worker(boot, { eval: true, workerData: { seconds, runs, seed, only, sab } satisfies Job });
  const all: FuzzStats[] = [];
  const failures: string[] = [];
  let current = '';
  let last = -1;
  let still = 0;
  let ended = false;
  const started = performance.now();
  const code = await new Promise<number>((resolve) => {
    const timer = setInterval(() => {
      const n = Atomics.load(head, 0);
      still = n === last ? still + 1 : 0;
      last = n;
      if (still >= HANG_SECONDS) {
        const len = Atomics.load(head, 1);
        const file = `fuzz-hang-${current}.bin`;
        writeFileSync(file, new Uint8Array(sab, 8, len));
        failures.push(`${current}: no verdict for ${HANG_SECONDS} s on an input of ${len} bytes (written to ${file})`);
        clearInterval(timer);
        void w.terminate().then(() => resolve(1));
      }
    }, 1000);
    w.on('message', (m: Msg) => {
      if (m.type === 'start') current = m.target;
      else if (m.type === 'done') { all.push(m.stats); process.stdout.write(formatStats(m.stats) + '\n'); }
      else if (m.type === 'fail') { failures.push(`${m.target}: ${m.message}`); process.stdout.write(`FAIL ${m.target}\n${m.message}\n`); }
      else { ended = true; clearInterval(timer); resolve(failures.length ? 1 : 0); }
    });
    w.on('error', (e) => { failures.push(`worker: ${e.message}`); clearInterval(timer); resolve(1); });
    w.on('exit', (c) => { if (c !== 0 && !ended) { failures.push(`worker exited with ${c}`); clearInterval(timer); resolve(1); } });
  });
  await w.terminate();
  const inputs = all.reduce((n, s) => n + s.tried, 0);
  const cpu = all.reduce((n, s) => n + s.cpuSeconds, 0);
  process.stdout.write(`total: ${inputs} inputs over ${all.length} targets in ${((performance.now() - started) / 1000).toFixed(0)} s (${cpu.toFixed(0)} CPU s, ${Math.round(inputs / Math.max(cpu, 1e-9))} inputs per CPU second), ${failures.length} finding(s); seed ${seed}\n`);
  for (const f of failures) process.stdout.write(`finding: ${f}\n`);
  return code;
}

if (isMainThread) process.exitCode = await main();
else await worker(workerData as Job);
