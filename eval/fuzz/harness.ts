/**
 * The fuzz property: for every mutated input, the target either accepts it or
 * throws a keylock typed error (a KeylockError subclass; the parsers document
 * no TypeError or RangeError for bytes handed to them), within a time limit.
 * Anything else (a TypeError from deep inside, a stack overflow, a hang) fails
 * the run, and fast-check prints the seed and the shrunk mutation.
 *
 * The time limit is on the CPU time of the verdict, not the wall clock: on a
 * machine shared with other work a 0.3 s verdict can take 2 s of wall time, and
 * a parser that runs away burns CPU either way. It is the CPU time of the thread
 * that parses (`threadCpuMs`), since the campaign runs a fuzzing thread per core.
 */
import fc from 'fast-check';
import { openSync, readSync, closeSync } from 'node:fs';
import { KeylockError } from '../../keystore/errors.ts';
import { applyMutation, describeMutation, mutationArb, type Mutation } from './mutate.ts';
import type { Target } from './targets.ts';

/** What one target's run saw. */
export interface FuzzStats {
  target: string;
  /** Inputs parsed. */
  tried: number;
  /** Inputs the target accepted (valid files made by re-signing a harmless change, mostly). */
  accepted: number;
  /** Typed errors by class name. */
  errors: Record<string, number>;
  /** Slowest input, in ms, and what made it. */
  slowestMs: number;
  slowest: string;
  /** Largest input, in bytes. */
  largest: number;
  /** Peak resident memory seen, in MiB. */
  peakRssMiB: number;
  seconds: number;
  /** CPU seconds the fuzzing thread used meanwhile: inputs / cpuSeconds is the rate a free core gives. */
  cpuSeconds: number;
}

/** Options of one target's run. */
export interface FuzzOptions {
  /** Inputs to try (default: unbounded, stopped by `seconds`). */
  runs?: number;
  /** Time budget in seconds. */
  seconds?: number;
  seed?: number;
  /** An input whose verdict takes more CPU time fails the run (default 2000 ms). */
  maxMs?: number;
  /** Called with every input before it is parsed (the campaign's watchdog keeps the last one). */
  onInput?: (bytes: Uint8Array, label: string) => void;
}

let statFd: number | undefined | null;
const statBuf = Buffer.alloc(1024);

/**
 * CPU time (user + system, ms) of the calling thread: Linux's /proc/thread-self/stat
 * (in clock ticks of 10 ms), since Node 20 has no per-thread CPU clock and
 * `process.cpuUsage` counts every thread of the process. Elsewhere, the process's.
 */
export function threadCpuMs(): number {
  if (statFd === undefined) {
    try { statFd = openSync('/proc/thread-self/stat', 'r'); } catch { statFd = null; }
  }
  if (statFd !== null) {
    const n = readSync(statFd, statBuf, 0, statBuf.length, 0);
    const text = statBuf.toString('latin1', 0, n);
    // Fields after the command name, which is in parentheses and may hold spaces: state is field 3, utime 14, stime 15.
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10;
  }
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
}

/** Closes the thread's /proc file (a worker thread calls it before it ends). */
export function closeThreadCpu(): void {
  if (typeof statFd === 'number') closeSync(statFd);
  statFd = undefined;
}

/** Whether an error is one a parser may throw for bad bytes. */
export function typedError(e: unknown): e is KeylockError {
  return e instanceof KeylockError;
}

/** Runs `target` under the property; resolves with its stats or rejects with fast-check's report. */
export async function fuzzTarget(target: Target, opts: FuzzOptions): Promise<FuzzStats> {
  const maxMs = opts.maxMs ?? 2000;
  const stats: FuzzStats = { target: target.name, tried: 0, accepted: 0, errors: {}, slowestMs: 0, slowest: '', largest: 0, peakRssMiB: 0, seconds: 0, cpuSeconds: 0 };
  const start = performance.now();
  const cpu0 = threadCpuMs();
  const trace = Boolean(process.env.KEYLOCK_FUZZ_TRACE);
  const property = fc.asyncProperty(mutationArb, async (m: Mutation) => {
    if (trace) process.stderr.write(`mutation ${JSON.stringify(m, (_k, v) => (typeof v === "bigint" ? String(v) : v instanceof Uint8Array ? `bytes(${v.byteLength})` : v))}\n`);
    const bytes = applyMutation(target, m);
    const label = describeMutation(target, m);
    opts.onInput?.(bytes, label);
    const c0 = threadCpuMs();
    let outcome = 'accepted';
    try {
      await target.parse(bytes);
    } catch (e) {
      if (!typedError(e)) {
        throw new Error(`${target.name} (${label}, ${bytes.byteLength} bytes): expected a keylock typed error, got ${(e as Error)?.name}: ${(e as Error)?.message}`, { cause: e });
      }
      outcome = e.name;
    }
    const ms = threadCpuMs() - c0;
    if (ms > maxMs) throw new Error(`${target.name} (${label}, ${bytes.byteLength} bytes): expected a verdict within ${maxMs} ms of CPU time, got one after ${ms.toFixed(0)} ms`);
    stats.tried++;
    if (outcome === 'accepted') stats.accepted++;
    else stats.errors[outcome] = (stats.errors[outcome] ?? 0) + 1;
    if (ms > stats.slowestMs) { stats.slowestMs = ms; stats.slowest = label; }
    stats.largest = Math.max(stats.largest, bytes.byteLength);
    if (stats.tried % 50 === 1) stats.peakRssMiB = Math.max(stats.peakRssMiB, process.memoryUsage().rss / 2 ** 20);
  });
  await fc.assert(property, {
    numRuns: opts.runs ?? 1_000_000_000,
    ...(opts.seconds ? { interruptAfterTimeLimit: opts.seconds * 1000, markInterruptAsFailure: false } : {}),
    ...(opts.seed !== undefined ? { seed: opts.seed } : {}),
  });
  stats.seconds = (performance.now() - start) / 1000;
  stats.cpuSeconds = (threadCpuMs() - cpu0) / 1000;
  stats.peakRssMiB = Math.round(Math.max(stats.peakRssMiB, process.memoryUsage().rss / 2 ** 20));
  return stats;
}

/** One line per target, for logs and results. */
export function formatStats(s: FuzzStats): string {
  const errs = Object.entries(s.errors).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ');
  return `${s.target.padEnd(12)} ${String(s.tried).padStart(7)} inputs in ${s.seconds.toFixed(1)} s (${s.cpuSeconds.toFixed(1)} CPU s): ${s.accepted} accepted; ${errs}; slowest ${s.slowestMs.toFixed(0)} CPU ms (${s.slowest}); largest ${s.largest} B; peak RSS ${s.peakRssMiB} MiB`;
}
