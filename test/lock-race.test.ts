// The keystore's writer lock with a lock left by a dead writer (a crash) found by several waiters at
// once: each waiter process takes the lock through the file store, appends "enter"/"exit" lines to a
// log while holding it, and releases it; the log must never show two holders at once. (The race this
// guards against, two waiters both removing the lock after reading the dead pid, needs a narrower
// interleaving than this test can force; the file store's breakers now serialise on LOCK.break.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const filestore = fileURLToPath(new URL('../keystore/filestore.ts', import.meta.url));

const waiter = (path: string, log: string, rounds: number): string => `
import { appendFileSync } from 'node:fs';
const { fileStorage } = await import(${JSON.stringify(filestore)});
const st = fileStorage(${JSON.stringify(path)}, { counter: false, attempts: false, lockTimeoutMs: 30000 });
for (let i = 0; i < ${rounds}; i++) {
  const release = await st.lock();
  appendFileSync(${JSON.stringify(log)}, 'enter ' + process.pid + '\\n');
  await new Promise((r) => setTimeout(r, 2));
  appendFileSync(${JSON.stringify(log)}, 'exit ' + process.pid + '\\n');
  release();
}
`;

function run(code: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { stdio: ['ignore', 'ignore', 'inherit'] });
    p.on('error', reject);
    p.on('close', (c) => resolve(c ?? -1));
  });
}

test('waiters that find a dead writer\'s lock at once never hold the lock together', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-lock-race-'));
  try {
    for (let attempt = 0; attempt < 4; attempt++) {
      const path = join(dir, `k${attempt}.kls`);
      const log = join(dir, `k${attempt}.log`);
      writeFileSync(log, '');
      writeFileSync(`${path}.lock`, '2147483646\n'); // left by a writer that died: no such pid
      const codes = await Promise.all(Array.from({ length: 4 }, () => run(waiter(path, log, 5))));
      assert.deepEqual(codes, [0, 0, 0, 0]);
      const lines = readFileSync(log, 'utf8').trim().split('\n');
      assert.equal(lines.length, 4 * 5 * 2);
      for (let i = 0; i < lines.length; i += 2) {
        const [e, pid] = lines[i].split(' ');
        assert.equal(e, 'enter', `line ${i}: ${lines[i]}`);
        assert.equal(lines[i + 1], `exit ${pid}`, `two holders at once at line ${i + 1}:\n${lines.slice(Math.max(0, i - 2), i + 4).join('\n')}`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
