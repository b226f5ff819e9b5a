/**
 * `npm run tamper`: flips every single bit of a tiny instance of every signed
 * or sealed file (a `sealed` one-layer `.klm`, `.klg`, `.kls`, `.klr`, `.klt`,
 * `.klv`, the image manifest) and checks each flip is refused with a typed
 * error. The bits of each file are split over worker threads (one per core,
 * or KEYLOCK_TAMPER_WORKERS); all of them test the same files, made once here.
 * Exit code 0 only when every flip was detected.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { makeTargets } from './fuzz/targets.ts';
import { flipBits, formatFlips, mergeFlips, TAMPER_TARGETS, type FlipStats } from './fuzz/tamper.ts';
import { makeTiny, tinyFiles, type TinyFiles } from './fixtures/tiny.ts';

interface Job { files: TinyFiles; slice: number; slices: number }

async function worker(job: Job): Promise<void> {
  const targets = await makeTargets(job.files);
  const out: FlipStats[] = [];
  for (const name of TAMPER_TARGETS) {
    const t = targets.find((x) => x.name === name)!;
    const bits = t.sample.byteLength * 8;
    const per = Math.ceil(bits / job.slices);
    out.push(await flipBits(t, { every: 'bit', from: job.slice * per, to: (job.slice + 1) * per }));
  }
  parentPort!.postMessage(out);
}

async function main(): Promise<number> {
  const slices = Number(process.env.KEYLOCK_TAMPER_WORKERS ?? availableParallelism());
  const files = tinyFiles(await makeTiny());
  const started = performance.now();
  process.stdout.write(`keylock tamper: every bit of ${TAMPER_TARGETS.join(', ')}, ${slices} worker(s)\n`);
  const boot = `import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(import.meta.url)}); })`;
  const results = await Promise.all(Array.from({ length: slices }, (_, slice) => new Promise<FlipStats[]>((resolve, reject) => {
    const w = new Worker(boot, { eval: true, workerData: { files, slice, slices } satisfies Job });
    w.once('message', (m: FlipStats[]) => { resolve(m); void w.terminate(); });
    w.once('error', reject);
  })));
  let bad = 0;
  let flipped = 0;
  for (const [i, name] of TAMPER_TARGETS.entries()) {
    const s = mergeFlips(results.map((r) => r[i]));
    flipped += s.flipped;
    bad += s.undetected.length + s.untyped.length;
    process.stdout.write(formatFlips(s) + '\n');
    if (s.undetected.length) process.stdout.write(`  ${name}: undetected bits ${s.undetected.slice(0, 50).join(', ')}\n`);
    for (const [bit, msg] of s.untyped.slice(0, 10)) process.stdout.write(`  ${name}: bit ${bit}: ${msg}\n`);
  }
  process.stdout.write(`total: ${flipped} bits flipped, ${flipped - bad} detected, ${bad} not, in ${((performance.now() - started) / 1000).toFixed(0)} s\n`);
  return bad ? 1 : 0;
}

if (isMainThread) process.exitCode = await main();
else await worker(workerData as Job);
