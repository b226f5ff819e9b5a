/**
 * Bench task "alloc": heap, array buffers and RSS after GC at intervals over
 * many runs, to show that a run allocates nothing that stays.
 */
import type { Plan } from '../plan.ts';
import { summarize, timeBatch } from '../stats.ts';
import { inputFor, lockedModel, log, plainSession } from './shared.ts';

/** Heap after GC every `every` runs over `runs` runs, per case (and the plain model). Needs --expose-gc. */
export async function alloc(plan: Plan, a: { runs: number; every: number; cases: string[] }): Promise<unknown> {
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
