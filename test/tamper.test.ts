// Tamper detection by bit flips. CI: every bit of the keystore (a MAC check is
// cheap) and one bit of every byte (a different bit position each byte) of the
// signed files, whose Ed25519 check costs ~10 ms in JavaScript. `npm run tamper`
// flips every bit of every file (docs/THREATS.md quotes its numbers).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeTargets } from '../eval/fuzz/targets.ts';
import { flipBits, formatFlips, TAMPER_TARGETS } from '../eval/fuzz/tamper.ts';

const targets = await makeTargets();

// The other signed files are in tamper-signed.test.ts (two files keep each under a minute).
for (const name of TAMPER_TARGETS.filter((n) => ['klm', 'kls', 'klg'].includes(n))) {
  const every = name === 'kls' ? 'bit' : 'byte';
  test(`tamper ${name}: ${every === 'bit' ? 'every bit' : 'one bit of every byte'} flipped is refused with a typed error`, async (t) => {
    const target = targets.find((x) => x.name === name)!;
    const s = await flipBits(target, { every });
    t.diagnostic(formatFlips(s));
    assert.deepEqual(s.untyped, [], 'only keylock typed errors');
    assert.deepEqual(s.undetected, [], 'no flip goes unnoticed');
    assert.equal(s.detected, every === 'bit' ? target.sample.byteLength * 8 : target.sample.byteLength);
  });
}
