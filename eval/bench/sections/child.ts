/** Runs one extra bench section in a process of its own: `child.ts <id> [--quick]`, result on a BENCH-RESULT line. */
import { EXTRA_SECTIONS } from './index.ts';

const [id, ...rest] = process.argv.slice(2);
const s = EXTRA_SECTIONS.find((x) => x.id === id);
if (!s) throw new Error(`unknown bench section ${id}; known: ${EXTRA_SECTIONS.map((x) => x.id).join(', ')}`);
const r = await s.measure(rest.includes('--quick'));
process.stdout.write(`BENCH-RESULT ${JSON.stringify(r)}\n`);
