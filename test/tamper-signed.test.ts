// Tamper detection by bit flips, continued from tamper.test.ts: revocation lists,
// reinstate tokens, key rotations and image manifests, one bit of every byte
// (a different bit position each byte). `npm run tamper` flips every bit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeTargets } from '../eval/fuzz/targets.ts';
import { flipBits, formatFlips, TAMPER_TARGETS } from '../eval/fuzz/tamper.ts';

const targets = await makeTargets();

for (const name of TAMPER_TARGETS.filter((n) => ['klr', 'klt', 'klv', 'klim'].includes(n))) {
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
