// The bit-flip test of one file type, shared by tamper.test.ts and
// tamper-signed.test.ts (two test files, so that each stays under a minute).
// The keystore gets every bit flipped (a MAC check is cheap); the signed files,
// whose Ed25519 check costs ~10 ms in JavaScript, one bit of every byte (a
// different bit position each byte). `npm run tamper` flips every bit of every file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeTargets } from '../eval/fuzz/targets.ts';
import { flipBits, formatFlips, TAMPER_TARGETS } from '../eval/fuzz/tamper.ts';

/** Registers the tamper test of each named file type (names from TAMPER_TARGETS). */
export async function tamperTests(names: readonly string[]): Promise<void> {
  const targets = await makeTargets();
  for (const name of TAMPER_TARGETS.filter((n) => names.includes(n))) {
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
}
