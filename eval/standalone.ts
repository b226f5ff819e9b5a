/**
 * Runs one evaluation section on its own (`node --import tsx eval/<section>.ts
 * [--quick] [--seed N] [--cache DIR]`): prints its markdown on stdout and its
 * checks on stderr, writes nothing into docs/, exits 1 when a check fails.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createStepBar } from '../models/train/progress.ts';
import type { Section } from './section.ts';

/** True when the module at `url` is the script node was started with. */
export function isMain(url: string): boolean {
  return process.argv[1] !== undefined && fileURLToPath(url) === process.argv[1];
}

/** Parses the command line, runs `section`, prints its result and sets the exit code. */
export async function runStandalone(section: Section): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false }, seed: { type: 'string', default: '1' },
      cache: { type: 'string', default: join(fileURLToPath(new URL('..', import.meta.url)), 'eval', '.cache') },
    },
  });
  const seed = Number(values.seed);
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`--seed must be a non-negative integer, got "${values.seed}"`);
  const bar = createStepBar();
  const t0 = performance.now();
  const r = await section({ quick: values.quick === true, seed, progress: bar, cache: values.cache! });
  bar.done();
  console.log(r.markdown);
  const bad = (r.checks ?? []).filter((c) => !c.ok);
  for (const c of r.checks ?? []) console.error(`${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`);
  console.error(`${r.id}: ${((performance.now() - t0) / 1000).toFixed(0)} s, ${(r.checks ?? []).length - bad.length}/${(r.checks ?? []).length} checks ok; plots not written (${Object.keys(r.svgs ?? {}).join(', ') || 'none'})`);
  if (bad.length) process.exitCode = 1;
}
