/**
 * Writes test/vectors/device.json: device scenarios, one per vector, each with
 * the exact files a device receives and the outcome it must reach (`success`,
 * `key mismatch`, `tampered`, `expired`, `not yet valid`, `revoked`,
 * `rollback`, `wrong device`, `untrusted signer`, `replay`).
 *
 *   node --import tsx test/vectors/make-device-vectors.ts
 *
 * The files hold random nonces and ephemeral keys, so a run writes new bytes;
 * the vectors are committed data, and test/device-vectors.test.ts replays them
 * as any other implementation would.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Keystore } from '../../keystore/keystore.ts';
import { memoryStorage } from '../../keystore/storage.ts';
import { makeGrant } from '../../keystore/grant.ts';
import { makeRevocation } from '../../keystore/revocation.ts';
import { makeReinstate } from '../../keystore/reinstate.ts';
import { signKeyPair } from '../../keystore/nacl.ts';
import { lockOnnx } from '../../models/lock/index.ts';
import { encodeModel, makeModel, makeNode, makeTensor, makeValueInfo } from '../../models/onnx/index.ts';
import { createOrtSession } from '../../runtime/ort.ts';
import { hex } from '../../keystore/hex.ts';

const fill = (b: number): Uint8Array => new Uint8Array(32).fill(b);
const VENDOR_SEED = fill(0x01);
const OTHER_VENDOR_SEED = fill(0x02);
const MODEL_KEY = fill(0x11);
const WRONG_MODEL_KEY = fill(0x12);
const STORAGE_KEY = fill(0x33);
const OTHER_STORAGE_KEY = fill(0x34);
const VALID = { notBefore: 1577836800, notAfter: 4102444800 }; // 2020-01-01 .. 2100-01-01
const EXPIRED = { notBefore: 946684800, notAfter: 978307200 }; // 2000 .. 2001
const FUTURE = { notBefore: 3786912000, notAfter: 4102444800 }; // 2090 .. 2100

/** A tiny real model: y = Gemm(x[1,4], W[3,4]^T) + b. */
function tinyModel(): Uint8Array {
  const w = Float32Array.from({ length: 12 }, (_, i) => (i - 5.5) / 4);
  return encodeModel(makeModel({
    nodes: [makeNode('Gemm', ['x', 'W', 'b'], ['y'], { transB: 1 })],
    inputs: [makeValueInfo('x', 'float32', [1, 4])],
    outputs: [makeValueInfo('y', 'float32', [1, 3])],
    initializers: [makeTensor('W', 'float32', [3, 4], w), makeTensor('b', 'float32', [3], new Float32Array([0.5, -0.25, 1]))],
  }));
}

async function device(storageKey: Uint8Array, vendorPub: Uint8Array, deviceId: string): Promise<Keystore> {
  return Keystore.create(memoryStorage(), { deviceId, vendorKeys: [vendorPub], unlock: { kind: 'hook', getKey: async () => storageKey.slice() } });
}

export async function makeVectors(): Promise<unknown> {
  const vendorPub = signKeyPair(VENDOR_SEED).publicKey;
  const plain = tinyModel();
  const locked = await lockOnnx(plain, { schemes: ['sealed'], vendorSeed: VENDOR_SEED, modelKey: MODEL_KEY, modelId: 'vector-model' });
  const input = new Float32Array([0.25, -1, 2, 0.5]);
  const s = await createOrtSession(plain);
  const output = (await s.run({ x: { dtype: 'float32', dims: [1, 4], data: input } })).y.data as Float32Array;
  await s.release();

  const dev = await device(STORAGE_KEY, vendorPub, 'vector-device');
  const other = await device(OTHER_STORAGE_KEY, vendorPub, 'other-device');
  const kls = dev.toBytes();
  const grant = (o: { key?: Uint8Array; window?: typeof VALID; to?: Keystore; seed?: Uint8Array; grantId?: string } = {}): string => hex(makeGrant({
    modelId: locked.modelId, modelKey: o.key ?? MODEL_KEY, devicePub: (o.to ?? dev).devicePub, deviceId: (o.to ?? dev).deviceId,
    ...(o.window ?? VALID), vendorSeed: o.seed ?? VENDOR_SEED, issued: 1700000000, grantId: o.grantId,
  }));
  const klm = hex(locked.klm);
  const tampered = new Uint8Array(locked.klm);
  tampered[tampered.length - 20] ^= 0x01; // inside the model bytes: the digest no longer matches
  const revoke = (listVersion: number, grants: string[]): string => hex(makeRevocation({ listVersion, grants, vendorSeed: VENDOR_SEED, issued: 1700000000 + listVersion }));
  const token = hex(makeReinstate({ modelId: locked.modelId, deviceId: dev.deviceId, devicePub: dev.devicePub, vendorSeed: VENDOR_SEED, issued: 1700000100, tokenId: '00'.repeat(16) }));

  const sc = (name: string, outcome: string, description: string, install: string[], expect: Record<string, unknown>, model = klm) =>
    ({ name, outcome, description, install, klm: model, expect });
  return {
    description: 'keylock device scenarios (docs/SPEC.md, "Device test vectors"). Open `kls` with the `storageKey` (hook unlock), install the files in order (stop at `expect.installError` if set), then load `klm` with the keystore.',
    storageKey: hex(STORAGE_KEY),
    vendorPub: hex(vendorPub),
    kls: hex(kls),
    input: { name: 'x', dtype: 'float32', dims: [1, 4], data: hex(new Uint8Array(input.buffer)) },
    scenarios: [
      sc('valid grant', 'success', 'a grant valid 2020..2100 for this device; the output must equal `output` bit for bit', [grant({ grantId: 'aa'.repeat(16) })],
        { state: 'ready', output: { name: 'y', dims: [1, 3], data: hex(new Uint8Array(output.buffer, output.byteOffset, output.byteLength)) } }),
      sc('grant carrying another key', 'key mismatch', 'the vendor-signed grant seals a key that is not this model\'s', [grant({ key: WRONG_MODEL_KEY })],
        { state: 'halted', code: 'key-mismatch' }),
      sc('model bytes changed', 'tampered', 'one bit of the model bytes flipped after signing', [grant()], { state: 'halted', code: 'tampered' }, hex(tampered)),
      sc('expired grant', 'expired', 'a grant valid 2000..2001 is refused at install', [grant({ window: EXPIRED })], { installError: { step: 0, code: 'expired' } }),
      sc('grant not valid yet', 'not yet valid', 'a grant valid from 2090 installs but the model halts until then', [grant({ window: FUTURE })], { state: 'halted', code: 'expired' }),
      sc('revoked grant', 'revoked', 'grant installed, then a revocation list (version 1) naming it', [grant({ grantId: 'bb'.repeat(16) }), revoke(1, ['bb'.repeat(16)])],
        { state: 'halted', code: 'revoked' }),
      sc('revocation rollback', 'rollback', 'revocation list version 2, then version 1', [revoke(2, []), revoke(1, [])], { installError: { step: 1, code: 'rollback' } }),
      sc('grant for another device', 'wrong device', 'a valid grant sealed to another device', [grant({ to: other })], { installError: { step: 0, code: 'wrong-device' } }),
      sc('unpinned vendor', 'untrusted signer', 'a grant signed by a vendor key the keystore does not pin', [grant({ seed: OTHER_VENDOR_SEED })],
        { installError: { step: 0, code: 'untrusted-signer' } }),
      sc('reinstate token replayed', 'replay', 'a reinstate token used twice', [token, token], { installError: { step: 1, code: 'replay' } }),
    ],
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = fileURLToPath(new URL('./device.json', import.meta.url));
  writeFileSync(out, JSON.stringify(await makeVectors(), null, 1) + '\n');
  console.log(`wrote ${out}`);
}
