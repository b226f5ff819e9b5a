// Fuzzing every parser (short CI run; `npm run fuzz` runs the long campaign):
// structured mutations of valid files and random bytes get a typed error or a
// valid result, never another exception, a hang, or an allocation past the limits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeTargets, type Target } from '../eval/fuzz/targets.ts';
import { formatStats, fuzzTarget } from '../eval/fuzz/harness.ts';
import { RAW_ITEMS } from '../eval/fuzz/raw.ts';
import { checkCbor, decodeCbor, encodeCbor, MAX_CBOR_DEPTH, MAX_CBOR_ITEMS } from '../keystore/cbor.ts';
import { MAX_KLG_BYTES } from '../keystore/grant.ts';
import { MAX_KLR_BYTES } from '../keystore/revocation.ts';
import { MAX_KLT_BYTES } from '../keystore/reinstate.ts';
import { MAX_KLS_BYTES } from '../keystore/kls.ts';
import { MAX_KLV_BYTES } from '../keystore/rotation.ts';
import { MAX_COUNTER_BYTES } from '../keystore/counter.ts';
import { MAX_ATTEMPTS_BYTES } from '../keystore/attempts.ts';
import { MAX_KLIM_BYTES } from '../targets/cli/image-manifest.ts';
import { FormatError, KeylockError, SizeLimitError } from '../keystore/errors.ts';

const RUNS = Number(process.env.KEYLOCK_FUZZ_RUNS ?? 40);
const SEED = Number(process.env.KEYLOCK_FUZZ_SEED ?? 0x6b6c);
const targets = await makeTargets();
const byName = new Map(targets.map((t) => [t.name, t]));

for (const target of targets) {
  test(`fuzz ${target.name}: ${RUNS} mutated inputs, typed errors only, each within 2 s`, async (t) => {
    const s = await fuzzTarget(target, { runs: RUNS, seed: SEED });
    t.diagnostic(formatStats(s));
    assert.equal(s.tried, RUNS);
  });
}

test('every sample is valid and in the strict CBOR subset (no tags, null, indefinite or non-minimal lengths)', async () => {
  for (const t of targets) {
    assert.doesNotThrow(() => checkCbor(t.sample, t.name));
    await t.parse(t.sample).catch((e) => {
      // The grant is already in the tiny keystore, the token is for its device: a re-install is fine; a refusal must be typed.
      assert.ok(e instanceof KeylockError, `${t.name}: ${e}`);
    });
  }
});

test('hostile CBOR is refused at the boundary in linear time: tags, deep nesting, huge declared lengths', async (t) => {
  const lines: string[] = [];
  for (const [name, make] of Object.entries(RAW_ITEMS)) {
    const bytes = make();
    const t0 = performance.now();
    let verdict = 'decoded';
    try {
      decodeCbor(bytes, name, 1 << 24);
    } catch (e) {
      assert.ok(e instanceof FormatError, `${name}: ${(e as Error).name}: ${(e as Error).message}`);
      verdict = e.message.replace(/^.*?: /, '');
    }
    const ms = performance.now() - t0;
    assert.ok(ms < 200, `${name}: ${ms.toFixed(0)} ms`);
    lines.push(`${name}: ${verdict}`);
    // The same items inside every format's outer map.
    for (const target of targets) {
      const outer = decodeCbor(target.sample, 'sample', 1 << 30) as Record<string, unknown>;
      const key = Object.keys(outer)[2] ?? 'x';
      const enc = encodeCbor({ ...outer, [key]: new Uint8Array(0) });
      const hostile = spliceFirstEmptyBytes(enc, bytes);
      const t1 = performance.now();
      await assert.rejects(target.parse(hostile), (e: unknown) => e instanceof KeylockError, `${target.name} / ${name}`);
      assert.ok(performance.now() - t1 < 500, `${target.name} / ${name}`);
    }
  }
  t.diagnostic(lines.join('\n'));
  assert.equal(decodeCbor(Uint8Array.from([...Array(MAX_CBOR_DEPTH - 1).fill(0x81), 0x00]), 'depth', 1 << 10) !== undefined, true, 'depth 63 still decodes');
});

function spliceFirstEmptyBytes(enc: Uint8Array, raw: Uint8Array): Uint8Array {
  const i = enc.indexOf(0x40);
  return Uint8Array.from([...enc.subarray(0, i), ...raw, ...enc.subarray(i + 1)]);
}

test('size limits: one byte over each file limit is SizeLimitError before anything is decoded', async () => {
  const over: [string, number][] = [
    ['klg', MAX_KLG_BYTES], ['klt', MAX_KLT_BYTES], ['klv', MAX_KLV_BYTES], ['klr', MAX_KLR_BYTES], ['kls', MAX_KLS_BYTES],
    ['klim', MAX_KLIM_BYTES], ['kls-counter', MAX_COUNTER_BYTES], ['kls-attempts', MAX_ATTEMPTS_BYTES],
  ];
  for (const [name, limit] of over) {
    const target = byName.get(name) as Target;
    const big = new Uint8Array(limit + 1);
    big.set(target.sample); // a valid file followed by padding: the size check comes first
    const t0 = performance.now();
    await assert.rejects(target.parse(big), SizeLimitError, name);
    assert.ok(performance.now() - t0 < 1000, name);
  }
  // 1 MiB of CBOR that would become an array of a million numbers: refused by the item count first.
  const many = new Uint8Array(5 + MAX_CBOR_ITEMS + 1);
  many.set([0x9a, 0x00, 0x10, 0x00, 0x01]);
  for (const name of ['klr', 'kls', 'klm', 'recorded']) {
    const t0 = performance.now();
    await assert.rejects(byName.get(name)!.parse(many), (e: unknown) => e instanceof SizeLimitError || e instanceof FormatError, name);
    assert.ok(performance.now() - t0 < 1000, name);
  }
  assert.throws(() => decodeCbor(many, 'many', 1 << 24), /CBOR items/);
});

// Found by `npm run fuzz`: the message formatted the value with JSON.stringify, which throws TypeError on a bigint.
test('regression (fuzz finding): a bigint where the image manifest expects an entry name is a FormatError', async () => {
  const target = byName.get('klim') as Target;
  const body = target.layers[1];
  const tree = structuredClone(body.tree) as Record<string, unknown>;
  tree.entries = [-(2n ** 63n)];
  await assert.rejects(target.parse(body.rebuild(tree)), FormatError);
});
