/**
 * The smallest real files of every kind keylock reads: a one-layer ONNX model
 * locked with `sealed`, and a grant, keystore, revocation list, reinstate token
 * and key rotation for one device. Fuzzing and bit-flip tests start from these,
 * so every input is a near miss of a file the parsers really accept.
 */
import { encodeModel, makeModel, makeNode, makeTensor, makeValueInfo } from '../../models/onnx/index.ts';
import { lockOnnx } from '../../models/lock/index.ts';
import { Keystore } from '../../keystore/keystore.ts';
import { memoryStorage } from '../../keystore/storage.ts';
import { makeGrant } from '../../keystore/grant.ts';
import { makeRevocation } from '../../keystore/revocation.ts';
import { makeReinstate } from '../../keystore/reinstate.ts';
import { makeRotation } from '../../keystore/rotation.ts';
import { signKeyPair } from '../../keystore/nacl.ts';
import type { HookUnlock } from '../../keystore/unlock.ts';

/** A fixed time, so file sizes and contents do not depend on the clock. */
export const T0 = 1_750_000_000;

/** Deterministic 32-byte seeds (fuzzing must be reproducible from its seed alone). */
export function seed(n: number): Uint8Array {
  return Uint8Array.from({ length: 32 }, (_, i) => (n * 31 + i * 7 + 1) & 0xff);
}

/** A one-layer model: y = x·W + b, x [1,4], W [4,3]. */
export function tinyOnnx(): Uint8Array {
  const w = Float32Array.from({ length: 12 }, (_, i) => (i - 6) / 8);
  const b = Float32Array.from([0.25, -0.5, 0.125]);
  return encodeModel(makeModel({
    nodes: [makeNode('Gemm', ['x', 'w', 'b'], ['y'])],
    inputs: [makeValueInfo('x', 'float32', [1, 4])],
    outputs: [makeValueInfo('y', 'float32', [1, 3])],
    initializers: [makeTensor('w', 'float32', [4, 3], w), makeTensor('b', 'float32', [3], b)],
  }));
}

/** The files themselves (what a worker thread needs to rebuild the same `Tiny`). */
export interface TinyFiles {
  klm: Uint8Array;
  modelKey: Uint8Array;
  klg: Uint8Array;
  kls: Uint8Array;
  klr: Uint8Array;
  klt: Uint8Array;
  klv: Uint8Array;
}

/** Everything a fuzz or tamper run needs: valid files and the keys that make and open them. */
export interface Tiny extends TinyFiles {
  vendorSeed: Uint8Array;
  vendorPub: Uint8Array;
  backupSeed: Uint8Array;
  backupPub: Uint8Array;
  unlock: HookUnlock;
  storageKey: Uint8Array;
  /** The device keystore (in memory) the grant, token and rotation are for, with the grant installed. */
  keystore: Keystore;
}

/**
 * Builds the tiny files (about a second: one lock, one keystore), or, given
 * files made earlier (in another thread), the same `Tiny` around them. The
 * seeds are fixed; the model key, device key and nonces are random.
 */
export async function makeTiny(files?: TinyFiles): Promise<Tiny> {
  const vendorSeed = seed(1);
  const vendorPub = signKeyPair(vendorSeed).publicKey;
  const backupSeed = seed(2);
  const backupPub = signKeyPair(backupSeed).publicKey;
  const storageKey = seed(3);
  const unlock: HookUnlock = { kind: 'hook', getKey: async () => storageKey.slice() };
  const keys = { vendorSeed, vendorPub, backupSeed, backupPub, unlock, storageKey };
  if (files) return { ...keys, ...files, keystore: await Keystore.fromBytes(files.kls, unlock) };
  const locked = await lockOnnx(tinyOnnx(), { schemes: ['sealed'], vendorSeed, modelId: 'm' });
  const keystore = await Keystore.create(memoryStorage(), { vendorKeys: [vendorPub], backupKeys: [backupPub], unlock, deviceId: 'd' });
  const dev = { deviceId: keystore.deviceId, devicePub: keystore.devicePub };
  const klg = makeGrant({ modelId: 'm', modelKey: locked.modelKey, ...dev, notBefore: T0 - 1, notAfter: T0 + 86_400, issued: T0, vendorSeed, grantId: 'g' });
  await keystore.installGrant(klg, T0);
  const klr = makeRevocation({ listVersion: 1, grants: ['x'], issued: T0, vendorSeed });
  const klt = makeReinstate({ modelId: 'm', ...dev, vendorSeed, issued: T0, tokenId: 't' });
  const klv = makeRotation({ signerSeed: vendorSeed, newSeed: seed(4), issued: T0 });
  return { ...keys, keystore, klm: locked.klm, modelKey: locked.modelKey, klg, kls: keystore.toBytes(), klr, klt, klv };
}

/** The files of a `Tiny`, for `makeTiny(files)` elsewhere. */
export function tinyFiles(t: Tiny): TinyFiles {
  return { klm: t.klm, modelKey: t.modelKey, klg: t.klg, kls: t.kls, klr: t.klr, klt: t.klt, klv: t.klv };
}
