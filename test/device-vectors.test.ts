// Replays test/vectors/device.json: one scenario per vector, each with its expected outcome.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Keystore } from '../keystore/keystore.ts';
import { memoryStorage } from '../keystore/storage.ts';
import { decodeCbor, Fields } from '../keystore/cbor.ts';
import { KeylockError } from '../keystore/errors.ts';
import { loadModel } from '../runtime/load.ts';

interface Scenario {
  name: string; outcome: string; description: string; install: string[]; klm: string;
  expect: { state?: string; code?: string; installError?: { step: number; code: string }; output?: { name: string; dims: number[]; data: string } };
}
const V = JSON.parse(readFileSync(new URL('./vectors/device.json', import.meta.url), 'utf8')) as {
  storageKey: string; kls: string; input: { name: string; dims: number[]; data: string }; scenarios: Scenario[];
};
const bytes = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, 'hex'));

test('the vectors cover every outcome the spec names', () => {
  const outcomes = new Set(V.scenarios.map((s) => s.outcome));
  for (const o of ['success', 'key mismatch', 'tampered', 'expired', 'not yet valid', 'revoked', 'rollback', 'wrong device', 'untrusted signer', 'replay']) {
    assert.ok(outcomes.has(o), `no vector for "${o}"`);
  }
});

for (const s of V.scenarios) {
  test(`vector "${s.name}": ${s.outcome}`, async () => {
    const storage = memoryStorage();
    await storage.create(bytes(V.kls));
    const ks = await Keystore.open(storage, { unlock: { kind: 'hook', getKey: async () => bytes(V.storageKey) } });
    for (const [i, f] of s.install.entries()) {
      const b = bytes(f);
      const format = Fields.of('file', decodeCbor(b, 'file', 1 << 20)).text('format');
      const op = format === 'keylock/klr' ? ks.installRevocation(b) : format === 'keylock/klt' ? ks.installReinstate(b) : ks.installGrant(b);
      if (s.expect.installError?.step === i) {
        await assert.rejects(op, (e) => e instanceof KeylockError && e.code === s.expect.installError!.code);
        return;
      }
      await op;
    }
    const m = await loadModel(bytes(s.klm), { keystore: ks });
    assert.equal(m.state, s.expect.state, m.error?.message);
    if (s.expect.code) assert.equal(m.error?.code, s.expect.code);
    if (s.expect.output) {
      const out = await m.run({ [V.input.name]: { dtype: 'float32', dims: V.input.dims, data: new Float32Array(bytes(V.input.data).buffer) } });
      const y = out[s.expect.output.name];
      assert.deepEqual(y.dims, s.expect.output.dims);
      assert.equal(Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength).toString('hex'), s.expect.output.data);
      await m.release();
    }
  });
}
