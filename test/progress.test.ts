/**
 * The progress bars of training and the evaluation (models/train/progress.ts):
 * plain lines when stderr is a file or a pipe, a line redrawn in place by
 * cli-progress on a terminal, and never a timer left behind to keep the process alive.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createProgress, createStepBar, type ProgressState } from '../models/train/progress.ts';

function fakeStream(isTTY: boolean): { out: string[]; stream: NodeJS.WriteStream } {
  const out: string[] = [];
  const stream = { isTTY, columns: 100, write(chunk: string) { out.push(chunk); return true; } };
  return { out, stream: stream as unknown as NodeJS.WriteStream };
}

const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
const state = (over: Partial<ProgressState>): ProgressState => ({ model: 'mlp', epoch: 1, epochs: 2, batch: 1, batches: 10, loss: 0.5, acc: 0.9, seconds: 1.23, ...over });
/** What a terminal shows after `text`: a small screen that knows the few controls a one-line bar uses. */
function screen(text: string): string[] {
  const rows: string[] = [''];
  let row = 0;
  let col = 0;
  for (const m of text.matchAll(/\x1b\[([0-9;]*)([A-Za-z])|\r|\n|[^\x1b\r\n]+/g)) {
    const [tok, arg, cmd] = m;
    if (tok === '\r') col = 0;
    else if (tok === '\n') { row++; col = 0; rows[row] ??= ''; }
    else if (cmd === 'G') col = Math.max(0, Number(arg || 1) - 1);
    else if (cmd === 'K') rows[row] = arg === '2' ? '' : rows[row].slice(0, col);
    else if (cmd) throw new Error(`unexpected control ${JSON.stringify(tok)}`);
    else {
      rows[row] = rows[row].padEnd(col).slice(0, col) + tok + rows[row].slice(col + tok.length);
      col += tok.length;
    }
  }
  return rows;
}

test('the step bar writes one line per tick and the notes as they come when not on a terminal', () => {
  const { out, stream } = fakeStream(false);
  const bar = createStepBar(stream);
  bar.note('before');
  bar.plan(3);
  bar.tick('one');
  bar.note('a note');
  bar.tick('two');
  bar.plan(2);
  bar.tick('three');
  bar.done();
  assert.deepEqual(out.join('').split('\n'), [
    'before',
    '[#########...................] 1/3 0:00 one',
    'a note',
    '[###################.........] 2/3 0:00 two',
    '[#################...........] 3/5 0:00 three',
    '',
  ]);
});

test('training writes only whole-epoch lines when not on a terminal', () => {
  const { out, stream } = fakeStream(false);
  const p = createProgress(stream);
  p.update(state({ batch: 5 }));
  p.epochEnd(state({ batch: 10 }), 'test 97.00%');
  p.epochEnd(state({ epoch: 2, batch: 10 }));
  assert.deepEqual(out.join('').split('\n'), [
    'mlp epoch 1/2 [########################] batch 10/10 loss 0.5000 acc 90.00% 1.2s test 97.00%',
    'mlp epoch 2/2 [########################] batch 10/10 loss 0.5000 acc 90.00% 1.2s',
    '',
  ]);
});

test('on a terminal the step bar is redrawn in place under the notes and ends its line', () => {
  const before = timers();
  const { out, stream } = fakeStream(true);
  const bar = createStepBar(stream);
  bar.note('before');
  bar.plan(2);
  bar.tick('one');
  bar.note('a note');
  bar.tick('two');
  bar.done();
  assert.deepEqual(screen(out.join('')), [
    'before',
    'a note',
    '[############################] 2/2 0:00 two',
    '',
  ], 'the note above the bar, the bar redrawn in place, its line ended by done()');
  assert.ok(out.length > 4, 'the bar line was drawn more than once');
  assert.equal(timers(), before, 'no redraw timer left running');
});

test('on a terminal training redraws one line per epoch and keeps each finished epoch', () => {
  const before = timers();
  const { out, stream } = fakeStream(true);
  const p = createProgress(stream);
  p.update(state({ batch: 1 }));
  p.update(state({ batch: 5 }));
  p.epochEnd(state({ batch: 10 }), 'test 97.00%');
  p.update(state({ epoch: 2, batch: 1 }));
  p.epochEnd(state({ epoch: 2, batch: 10 }));
  assert.deepEqual(screen(out.join('')), [
    'mlp epoch 1/2 [########################] batch 10/10 loss 0.5000 acc 90.00% 1.2s test 97.00%',
    'mlp epoch 2/2 [########################] batch 10/10 loss 0.5000 acc 90.00% 1.2s',
    '',
  ]);
  assert.equal(timers(), before, 'no redraw timer left running');
});
