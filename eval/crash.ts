/**
 * Crash consistency of the keystore on disk (`npm run crash`; test/crash.test.ts
 * runs a short version).
 *
 * Kills: a child process (eval/crash-child.ts) changes one keystore in a loop
 * (grants, failure counts, resets, disables), printing an ack after each
 * completed write; the parent SIGKILLs it at a random moment, then checks that
 * the keystore opens, at the last acknowledged generation or the one after
 * (a write that finished before its ack was printed), that every acknowledged
 * grant and disable is there, and that the counter file agrees. Each next child
 * continues on the same keystore, so nothing acked by any earlier child may go.
 *
 * Concurrent writers: two children install N distinct grants each into the
 * same keystore at once; the lock file serialises them and all 2N must be there.
 *
 *   KEYLOCK_CRASH_KILLS (default 200), KEYLOCK_CRASH_GRANTS (default 50 per writer),
 *   KEYLOCK_CRASH_SEED, KEYLOCK_CRASH_MAX_DELAY_MS (default 250)
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { Keystore } from '../keystore/keystore.ts';
import { decodeCounter } from '../keystore/counter.ts';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));

/** A fresh keystore on disk with its storage key file and vendor seed file. */
export interface CrashRig {
  dir: string;
  path: string;
  keyFile: string;
  seedFile: string;
  child: string;
}

/**
 * Makes the rig, and bundles the child into one ESM file so that each of the
 * hundreds of child processes starts in tens of milliseconds, not through tsx.
 */
export async function makeRig(): Promise<CrashRig> {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-crash-'));
  const path = join(dir, 'd.kls');
  const keyFile = join(dir, 'storage.key');
  const seedFile = join(dir, 'vendor.seed');
  const seed = randomBytes(32);
  writeFileSync(seedFile, seed);
  const ks = await Keystore.create(path, { vendorKeys: [signKeyPair(seed).publicKey], unlock: { kind: 'file', path: keyFile } });
  ks.close();
  const child = join(dir, 'crash-child.mjs');
  await build({
    entryPoints: [here('./crash-child.ts')], outfile: child, bundle: true, platform: 'node', format: 'esm', target: 'node20',
    external: ['cbor-extract'], logLevel: 'error',
    banner: { js: "import { createRequire as __r } from 'node:module'; const require = __r(import.meta.url);" },
  });
  return { dir, path, keyFile, seedFile, child };
}

/** Removes the rig's folder. */
export function removeRig(rig: CrashRig): void {
  rmSync(rig.dir, { recursive: true, force: true });
}

function spawnChild(rig: CrashRig, args: string[]) {
  const p = spawn(process.execPath, [rig.child, rig.path, rig.keyFile, rig.seedFile, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let buf = '';
  let err = '';
  const waiters: { test: (l: string) => boolean; resolve: () => void }[] = [];
  p.stdout.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 1);
      lines.push(l);
      for (const w of [...waiters]) if (w.test(l)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(); }
    }
  });
  p.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const exited = new Promise<number | null>((r) => p.on('close', (code) => r(code)));
  const waitFor = (test: (l: string) => boolean): Promise<void> => new Promise((resolve, reject) => {
    if (lines.some(test)) return resolve();
    waiters.push({ test, resolve });
    void exited.then((c) => reject(new Error(`child exited (${c}) before the expected line; stderr: ${err.slice(0, 2000)}`)));
  });
  return { proc: p, lines, waitFor, exited, stderr: () => err };
}

/** What the kill campaign saw. */
export interface CrashStats {
  kills: number;
  /** Writes acknowledged across all children. */
  acked: number;
  grants: number;
  disables: number;
  /** Kills after which the keystore held one more change than was acknowledged (the write beat its ack). */
  unackedLanded: number;
  /** Kills after which the keystore file was one generation ahead of its counter (killed between the two). */
  counterBehind: number;
  /** Temporary files left by killed writers (never read; harmless). */
  leftoverTmp: number;
  finalGeneration: number;
  seconds: number;
  problems: string[];
}

/** xorshift32, so a campaign is reproducible from its seed. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s / 2 ** 32; };
}

/** Runs `kills` write-and-kill rounds on `rig` and checks every invariant after each. */
export async function crashCampaign(rig: CrashRig, opts: { kills: number; seed?: number; maxDelayMs?: number; log?: (kill: number, line: string) => void }): Promise<CrashStats> {
  const rand = rng(opts.seed ?? 1);
  const maxDelay = opts.maxDelayMs ?? 250;
  const unlock = { kind: 'file' as const, path: rig.keyFile };
  const grants = new Map<string, string>();
  const disabled = new Set<string>();
  let failAcked: { count: number } | undefined; // the last acked failure count of model "f"
  let lastGen = 1;
  const stats: CrashStats = { kills: 0, acked: 0, grants: 0, disables: 0, unackedLanded: 0, counterBehind: 0, leftoverTmp: 0, finalGeneration: 0, seconds: 0, problems: [] };
  const t0 = performance.now();
  for (let k = 0; k < opts.kills; k++) {
    const c = spawnChild(rig, ['mixed', String(Math.floor(rand() * 2 ** 31))]);
    await c.waitFor((l) => l.startsWith('ready'));
    await new Promise((r) => setTimeout(r, rand() * maxDelay));
    c.proc.kill('SIGKILL');
    await c.exited;
    stats.kills++;
    for (const l of c.lines) {
      const [kind, what, ...rest] = l.split(' ');
      if (kind !== 'ack') continue;
      stats.acked++;
      lastGen = Number(rest[rest.length - 1]);
      if (what === 'grant') { grants.set(rest[0], rest[1]); stats.grants++; }
      else if (what === 'disable') { disabled.add(rest[0]); stats.disables++; }
      else if (what === 'fail') failAcked = { count: Number(rest[1]) };
      else if (what === 'reset') failAcked = { count: 0 };
    }
    // The checks: the keystore opens, nothing acknowledged is lost, the counter agrees.
    let ks: Keystore;
    try {
      ks = await Keystore.open(rig.path, { unlock });
    } catch (e) {
      stats.problems.push(`kill ${k}: the keystore does not open: ${(e as Error).name}: ${(e as Error).message}`);
      break;
    }
    const gen = ks.generation;
    if (gen === lastGen + 1) stats.unackedLanded++;
    else if (gen !== lastGen) stats.problems.push(`kill ${k}: expected generation ${lastGen} or ${lastGen + 1}, got ${gen}`);
    const counter = decodeCounter(readFileSync(`${rig.path}.counter`));
    if (counter === gen - 1) stats.counterBehind++;
    else if (counter !== gen) stats.problems.push(`kill ${k}: expected counter ${gen} or ${gen - 1}, got ${counter}`);
    for (const [modelId, grantId] of grants) {
      if (ks.grantFor(modelId)?.grantId !== grantId) stats.problems.push(`kill ${k}: acked grant ${grantId} for ${modelId} is missing`);
    }
    for (const modelId of disabled) if (!ks.isDisabled(modelId)) stats.problems.push(`kill ${k}: acked disable of ${modelId} is missing`);
    if (failAcked) {
      const n = ks.failureCount('f');
      // One unacknowledged change may have landed after the last ack: +1 failure, or a reset to 0.
      if (n !== failAcked.count && n !== failAcked.count + 1 && n !== 0) stats.problems.push(`kill ${k}: failure count of f is ${n}, acked ${failAcked.count}`);
    }
    // What is stored is the truth the next child's acks build on (an unacked change may have landed).
    lastGen = gen;
    failAcked = { count: ks.failureCount('f') };
    ks.close();
    opts.log?.(k + 1, `kill ${k + 1}/${opts.kills}: ${c.lines.length - 1} acked, generation ${gen}${stats.problems.length ? `, ${stats.problems.length} problem(s)` : ''}`);
    if (stats.problems.length) break;
  }
  stats.leftoverTmp = readdirSync(rig.dir).filter((f) => f.endsWith('.tmp')).length;
  stats.finalGeneration = lastGen;
  stats.seconds = (performance.now() - t0) / 1000;
  return stats;
}

/** What the concurrent-writers run saw. */
export interface WritersStats {
  writers: number;
  perWriter: number;
  present: number;
  generationBefore: number;
  generationAfter: number;
  counter: number;
  seconds: number;
  problems: string[];
}

/** Two (or more) processes install `perWriter` distinct grants each into the same keystore at the same time. */
export async function concurrentWriters(rig: CrashRig, opts: { writers?: number; perWriter: number }): Promise<WritersStats> {
  const writers = opts.writers ?? 2;
  const unlock = { kind: 'file' as const, path: rig.keyFile };
  const before = await Keystore.open(rig.path, { unlock });
  const generationBefore = before.generation;
  before.close();
  const t0 = performance.now();
  const children = Array.from({ length: writers }, (_, i) => spawnChild(rig, ['grants', `w${i}-${generationBefore}`, String(opts.perWriter)]));
  const codes = await Promise.all(children.map((c) => c.exited));
  const problems: string[] = [];
  codes.forEach((code, i) => { if (code !== 0) problems.push(`writer ${i} exited with ${code}: ${children[i].stderr().slice(0, 500)}`); });
  const ks = await Keystore.open(rig.path, { unlock });
  let present = 0;
  for (const [i, c] of children.entries()) {
    for (const l of c.lines) {
      const [kind, what, modelId, grantId] = l.split(' ');
      if (kind === 'ack' && what === 'grant') {
        if (ks.grantFor(modelId)?.grantId === grantId) present++;
        else problems.push(`writer ${i}: acked grant for ${modelId} is missing`);
      }
    }
  }
  const stats: WritersStats = {
    writers, perWriter: opts.perWriter, present, generationBefore, generationAfter: ks.generation,
    counter: decodeCounter(readFileSync(`${rig.path}.counter`)), seconds: (performance.now() - t0) / 1000, problems,
  };
  if (present !== writers * opts.perWriter) problems.push(`expected ${writers * opts.perWriter} grants, got ${present}`);
  if (stats.generationAfter !== generationBefore + writers * opts.perWriter) problems.push(`expected generation ${generationBefore + writers * opts.perWriter}, got ${stats.generationAfter}`);
  if (stats.counter !== stats.generationAfter) problems.push(`expected counter ${stats.generationAfter}, got ${stats.counter}`);
  ks.close();
  return stats;
}

async function main(): Promise<number> {
  const kills = Number(process.env.KEYLOCK_CRASH_KILLS ?? 200);
  const perWriter = Number(process.env.KEYLOCK_CRASH_GRANTS ?? 50);
  const seed = Number(process.env.KEYLOCK_CRASH_SEED ?? ((Math.random() * 2 ** 31) | 0));
  const maxDelayMs = Number(process.env.KEYLOCK_CRASH_MAX_DELAY_MS ?? 250);
  const rig = await makeRig();
  process.stdout.write(`keylock crash: ${kills} kills (seed ${seed}, kill within ${maxDelayMs} ms of start), then 2 writers x ${perWriter} grants; keystore ${rig.path}\n`);
  try {
    const s = await crashCampaign(rig, { kills, seed, maxDelayMs, log: (k, l) => { if (k % 20 === 0 || l.includes('problem')) process.stdout.write(l + '\n'); } });
    process.stdout.write(`kills: ${s.kills} survived of ${kills}; ${s.acked} writes acked (${s.grants} grants, ${s.disables} disables), none lost; `
      + `${s.unackedLanded} kills landed a write before its ack, ${s.counterBehind} kills fell between the keystore write and the counter increment; `
      + `${s.leftoverTmp} temp files left; final generation ${s.finalGeneration}; ${s.seconds.toFixed(0)} s\n`);
    const w = await concurrentWriters(rig, { perWriter });
    process.stdout.write(`writers: ${w.writers} x ${w.perWriter} grants at once -> ${w.present} present, generation ${w.generationBefore} -> ${w.generationAfter}, counter ${w.counter}; ${w.seconds.toFixed(1)} s\n`);
    const problems = [...s.problems, ...w.problems];
    for (const p of problems) process.stdout.write(`problem: ${p}\n`);
    return problems.length ? 1 : 0;
  } finally {
    removeRig(rig);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) process.exitCode = await main();
