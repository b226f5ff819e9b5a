/**
 * One measurement in its own process (ORT-web fixes its thread count per
 * process, and peak RSS is a per-process figure):
 *
 *   node --import tsx [--expose-gc] eval/bench/child.ts <task> <args.json>
 *
 * Progress goes to stderr; the result is one stdout line `BENCH-RESULT <json>`.
 * Each task is a file in eval/bench/tasks/. They are all imported here, whichever
 * one runs, so every child loads the same modules and plain and locked runs
 * start equal.
 */
import { readFileSync } from 'node:fs';
import type { Plan } from './plan.ts';
import { alloc } from './tasks/alloc.ts';
import { cold } from './tasks/cold.ts';
import { latency } from './tasks/latency.ts';
import { mem } from './tasks/mem.ts';
import { throughput } from './tasks/throughput.ts';

const [task, argFile] = process.argv.slice(2);
const args = JSON.parse(readFileSync(argFile, 'utf8'));
const plan = JSON.parse(readFileSync(args.plan, 'utf8')) as Plan;
const tasks: Record<string, (p: Plan, a: never) => Promise<unknown>> = { latency, cold, throughput, mem, alloc };
if (!tasks[task]) throw new Error(`unknown task ${task}; known: ${Object.keys(tasks).join(', ')}`);
const result = await tasks[task](plan, args as never);
process.stdout.write(`BENCH-RESULT ${JSON.stringify(result)}\n`);
// ORT's worker threads would keep the process alive.
process.exit(0);
