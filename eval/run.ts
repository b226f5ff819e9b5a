/**
 * keylock's evaluation: runs every section, draws a progress bar on stderr,
 * writes each section into docs/RESULTS.md (between its markers) and its plots
 * into docs/img/, and fails when an invariant does not hold.
 *
 *   npm run eval                          # everything (about 30 min the first time on 2 cores; shuffle models are cached)
 *   npm run eval -- --quick               # the small CI version (< 2 min): checks only, docs untouched
 *   npm run eval -- --only published,finetune [--no-write] [--write] [--seed N] [--cache DIR] [--out FILE]
 *   npm run eval -- --lm                  # = --only lm,lm-advparams: the transformer language model (eval/lm.ts)
 *
 * Writing: the full run writes docs/ unless --no-write; the quick run writes
 * nothing unless --write (its small numbers must never replace the full ones).
 * `--out FILE` saves every section's markdown and check results as JSON.
 * Exit code 1 when a check fails or a section throws, 2 on bad arguments.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { replaceSection } from './locks.ts';
import { createStepBar } from '../models/train/progress.ts';
import type { Section, SectionResult } from './section.ts';
import { publishedSection } from './published.ts';
import { finetuneSection } from './finetune.ts';
import { partialInlineLmSection, partialInlineSection } from './partial-inline.ts';
import { fidelitySection } from './fidelity.ts';
import { locksSection } from './locks.ts';
import { lmAdvparamsSection, lmSection } from './lm.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const RESULTS = join(root, 'docs', 'RESULTS.md');
const IMG = join(root, 'docs', 'img');

/** A section with its marker id and whether quick mode runs it. */
export interface Entry { id: string; run: Section; quick: boolean }

/**
 * The attack sections (key recovery, adversarial robustness) are loaded by
 * file name and join the run when present; a missing one is reported as a gap
 * (`gap:` in the summary) instead of breaking the run.
 */
async function optionalSection(file: string, exportName: string, id: string): Promise<Entry | string> {
  const url = new URL(`./${file}`, import.meta.url);
  if (!existsSync(url)) return `${id}: eval/${file} not present, section skipped`;
  const mod = (await import(url.href)) as Record<string, unknown>;
  const fn = mod[exportName];
  if (typeof fn !== 'function') return `${id}: eval/${file} has no export ${exportName}, section skipped`;
  return { id, run: fn as Section, quick: true };
}

/** Every section in run order; strings are sections that are missing. */
export async function sections(): Promise<(Entry | string)[]> {
  return [
    { id: 'locks', run: locksSection, quick: false },
    { id: 'published', run: publishedSection, quick: true },
    { id: 'finetune', run: finetuneSection, quick: true },
    { id: 'partial-inline', run: partialInlineSection, quick: true },
    await optionalSection('recovery.ts', 'recoverySection', 'recovery'),
    await optionalSection('adversarial.ts', 'adversarialSection', 'adversarial'),
    { id: 'fidelity', run: fidelitySection, quick: true },
    { id: 'lm', run: lmSection, quick: true },
    { id: 'lm-advparams', run: lmAdvparamsSection, quick: true },
    { id: 'partial-inline-lm', run: partialInlineLmSection, quick: true },
  ];
}

/** Writes a section between its markers, appending the markers at the end of the file the first time. */
export function writeSection(path: string, r: SectionResult, stamp: string): void {
  const text = readFileSync(path, 'utf8');
  if (!text.includes(`<!-- ${r.id}:begin -->`)) writeFileSync(path, `${text.trimEnd()}\n\n<!-- ${r.id}:begin -->\n<!-- ${r.id}:end -->\n`);
  replaceSection(path, r.id, `${r.markdown}\n\n${stamp}`);
}

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        quick: { type: 'boolean', default: false }, write: { type: 'boolean', default: false }, 'no-write': { type: 'boolean', default: false },
        only: { type: 'string' }, seed: { type: 'string', default: '1' }, cache: { type: 'string', default: join(root, 'eval', '.cache') },
        out: { type: 'string' }, lm: { type: 'boolean', default: false },
      },
    }));
  } catch (e) {
    console.error(`${(e as Error).message}\nusage: npm run eval -- [--quick] [--only id,id | --lm] [--write|--no-write] [--seed N] [--cache DIR] [--out FILE]`);
    return 2;
  }
  const quick = values.quick === true;
  const write = quick ? values.write === true : values['no-write'] !== true;
  const seed = Number(values.seed);
  if (!Number.isSafeInteger(seed) || seed < 0) { console.error(`--seed must be a non-negative integer, got "${values.seed}"`); return 2; }
  const all = await sections();
  const known = all.map((e) => (typeof e === 'string' ? e.split(':')[0] : e.id));
  if (values.lm && values.only !== undefined) { console.error('--lm is --only lm; give one of them'); return 2; }
  const only = (values.lm ? 'lm,lm-advparams' : values.only)?.split(',').map((s) => s.trim()).filter(Boolean);
  for (const o of only ?? []) if (!known.includes(o)) { console.error(`--only: unknown section "${o}"; known: ${known.join(', ')}`); return 2; }
  const chosen = all.filter((e) => {
    const id = typeof e === 'string' ? e.split(':')[0] : e.id;
    if (only) return only.includes(id);
    return typeof e === 'string' || !quick || e.quick;
  });

  mkdirSync(values.cache, { recursive: true });
  const bar = createStepBar();
  const t0 = performance.now();
  const results: (SectionResult & { seconds: number })[] = [];
  const failures: string[] = [];
  const gaps: string[] = [];
  for (const [i, e] of chosen.entries()) {
    if (typeof e === 'string') { gaps.push(e); bar.note(`skipped ${e}`); continue; }
    const s0 = performance.now();
    // Sections announce their steps when they start, so the bar's total grows; the prefix says how many sections are left.
    const tag = `[section ${i + 1}/${chosen.length}]`;
    const progress = { plan: (n: number) => bar.plan(n), tick: (l: string) => bar.tick(`${tag} ${l}`), note: (l: string) => bar.note(l) };
    try {
      const r = await e.run({ quick, seed, progress, cache: values.cache });
      const seconds = (performance.now() - s0) / 1000;
      results.push({ ...r, seconds });
      const bad = (r.checks ?? []).filter((c) => !c.ok);
      for (const c of bad) failures.push(`${r.id}: ${c.name}: ${c.detail}`);
      bar.note(`${r.id}: done in ${seconds.toFixed(0)} s, ${(r.checks ?? []).length - bad.length}/${(r.checks ?? []).length} checks ok`);
    } catch (err) {
      failures.push(`${e.id}: threw ${(err as Error)?.stack ?? String(err)}`);
      bar.note(`${e.id}: FAILED: ${(err as Error)?.message ?? String(err)}`);
    }
  }
  bar.done();
  const total = (performance.now() - t0) / 1000;
  const date = new Date().toISOString().slice(0, 10);
  if (write) {
    mkdirSync(IMG, { recursive: true });
    for (const r of results) {
      const cmd = quick ? 'npm run eval -- --quick --write' : only ? `npm run eval -- --only ${only.join(',')}` : 'npm run eval';
      writeSection(RESULTS, r, `_Measured by \`${cmd}\` on ${date} (section ${r.seconds.toFixed(0)} s; Node ${process.versions.node}, onnxruntime-web 1.30.0 wasm 1 thread, tfjs 4.22.0 wasm; 2 cores)._`);
      for (const [name, svg] of Object.entries(r.svgs ?? {})) writeFileSync(join(IMG, name), svg);
    }
    console.error(`wrote ${results.length} section(s) to docs/RESULTS.md and ${results.reduce((n, r) => n + Object.keys(r.svgs ?? {}).length, 0)} plot(s) to docs/img/`);
  }
  if (values.out) writeFileSync(values.out, JSON.stringify({ quick, seed, seconds: total, gaps, failures, sections: results }, null, 1));
  const checks = results.flatMap((r) => r.checks ?? []);
  for (const r of results) {
    console.log(`## ${r.id} (${r.seconds.toFixed(0)} s)`);
    for (const c of r.checks ?? []) console.log(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`);
  }
  for (const g of gaps) console.log(`gap: ${g}`);
  console.log(failures.length
    ? `FAILED: ${failures.length} problem(s) in ${total.toFixed(0)} s\n${failures.map((f) => `  ${f}`).join('\n')}`
    : `all ${checks.length} checks passed in ${total.toFixed(0)} s (${quick ? 'quick' : 'full'} mode${write ? ', docs written' : ', docs not written'})`);
  return failures.length ? 1 : 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main();
}
