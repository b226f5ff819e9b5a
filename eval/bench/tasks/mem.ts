/**
 * Bench task "mem": peak RSS of one load and a number of runs, plain or locked,
 * each in a process of its own (the parent runs one per variant).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { resolveBackend } from '../../../runtime/backends.ts';
import { loadModel } from '../../../runtime/load.ts';
import { fromHex, ROOT, type Plan } from '../plan.ts';
import { inputFor, lockedModel, trustOf } from './shared.ts';

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
export async function mem(plan: Plan, a: { variant: 'plain' | 'locked'; case: string; runs: number }): Promise<unknown> {
  const c = plan.cases.find((x) => x.id === a.case)!;
  const m = plan.models.find((x) => x.id === c.model)!;
  const x = inputFor(plan, c.model);
  const gc = (globalThis as { gc?: () => void }).gc;
  // Warm-up, the same in both variants: ORT's runtime, and keylock's load path on a tiny locked
  // model (code, JIT, CBOR and crypto tables), so that what follows is the cost of this model.
  const tiny = await (await resolveBackend('wasm')).create(new Uint8Array(readFileSync(`${ROOT}models/reference/mnist-cnn.onnx`)), { threads: 1 });
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
    const s = await (await resolveBackend('wasm')).create(bytes, { threads: 1 });
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
