/**
 * One fuzz target per parser keylock exposes to files from outside: what a
 * device does with the bytes (`parse`), the valid file it starts from, and the
 * file's layers as trees of plain values with a way back to bytes that passes
 * the outer checks (re-signed with the vendor key, re-sealed with the storage
 * key), so that structured mutations reach the field checks behind a signature.
 */
import { decodeCbor, encodeCbor } from '../../keystore/cbor.ts';
import { Keystore } from '../../keystore/keystore.ts';
import { inspectGrant } from '../../keystore/grant.ts';
import { openRevocation } from '../../keystore/revocation.ts';
import { openReinstate } from '../../keystore/reinstate.ts';
import { openRotation } from '../../keystore/rotation.ts';
import { klsKeys } from '../../keystore/kls.ts';
import { randomBytes, seal, sha256, signer, signKeyPair, open as openBox } from '../../keystore/nacl.ts';
import {
  decodeDevicePub, decodeModelKey, decodeVendorPub, decodeVendorSecret, encodeDevicePub, encodeModelKey, encodeVendorPub, encodeVendorSecret,
} from '../../keystore/keyfiles.ts';
import { decodeCounter, encodeCounter } from '../../keystore/counter.ts';
import { decodeAttempts, encodeAttempts } from '../../keystore/attempts.ts';
import { openKlm } from '../../runtime/klm.ts';
import { loadModel } from '../../runtime/load.ts';
import { decodeRecorded, encodeRecorded } from '../../runtime/recorded.ts';
import { FormatError, KeylockError } from '../../keystore/errors.ts';
import { lockOnnx } from '../../models/lock/index.ts';
import { openImageManifest, sealImageManifest } from '../../targets/cli/image-manifest.ts';
import { listTensors } from '../../models/onnx/layout.ts';
import { readTflite } from '../../models/tflite/codec.ts';
import { listWeights } from '../../models/tflite/weights.ts';
import { tfliteToFloat16 } from '../../models/tflite/float16.ts';
import { writeTflite } from '../../models/tflite/writer.ts';
import { placesOnnx } from '../fixtures/weight-places.ts';
import { encodeRaw } from './raw.ts';
import { makeTiny, seed, T0, tinyOnnx, type Tiny, type TinyFiles } from '../fixtures/tiny.ts';

/** A tree form of one layer of a file, and how to make a file from a changed tree. */
export interface Layer {
  name: string;
  tree: unknown;
  rebuild(tree: unknown): Uint8Array;
}

/** A parser under test. */
export interface Target {
  name: string;
  /** A valid file. */
  sample: Uint8Array;
  /** Does with the bytes what keylock does with a file it is handed; throws or returns. */
  parse(bytes: Uint8Array): Promise<void>;
  layers: Layer[];
}

const dec = (b: Uint8Array, what = 'sample'): Record<string, unknown> => decodeCbor(b, what, 1 << 30) as Record<string, unknown>;

/** Layers of a signed envelope: the outer map as is, and the body re-signed by `seeds` into the named signature fields. */
function envelopeLayers(sample: Uint8Array, sigs: { field: string; seed: Uint8Array }[], fixBody?: (body: unknown) => unknown): Layer[] {
  const outer = dec(sample);
  const body = dec(outer.signed as Uint8Array);
  // Each key derived and imported once, not per input.
  const signers = sigs.map((s) => ({ field: s.field, sign: signer(signKeyPair(s.seed).secretKey) }));
  return [
    { name: 'outer', tree: outer, rebuild: (t) => encodeRaw(t) },
    {
      name: 'body',
      tree: body,
      rebuild: (t) => {
        const signed = encodeRaw(fixBody ? fixBody(t) : t);
        const extra: Record<string, unknown> = {};
        for (const s of signers) extra[s.field] = s.sign(signed);
        return encodeCbor({ ...outer, signed, ...extra });
      },
    },
  ];
}

/** Fresh copies of the tiny device keystore per input, so one accepted file never changes the next one's start. */
function freshKeystore(t: Tiny): Promise<Keystore> {
  return Keystore.fromBytes(t.kls, t.unlock);
}

/** Runs `f` and closes the keystore whatever happens. */
async function withKeystore(t: Tiny, f: (ks: Keystore) => Promise<unknown>): Promise<void> {
  const ks = await freshKeystore(t);
  try {
    await f(ks);
  } finally {
    ks.close();
  }
}

/** A small recorded-inputs file: two samples, three dtypes, labels. */
export function sampleRecorded(): Uint8Array {
  return encodeRecorded([
    { inputs: { x: { dtype: 'float32', dims: [1, 4], data: Float32Array.from([0.5, -1, 2, 0]) }, ids: { dtype: 'int64', dims: [2], data: BigInt64Array.from([1n, -2n]) } }, label: 3 },
    { inputs: { x: { dtype: 'float32', dims: [1, 4], data: new Float32Array(4) }, mask: { dtype: 'bool', dims: [3], data: Uint8Array.from([1, 0, 1]) } } },
  ]);
}

/** Builds every target (a few seconds: two tiny locks, one keystore), around `files` when given. */
export async function makeTargets(files?: TinyFiles): Promise<Target[]> {
  const t = await makeTiny(files);
  const vendor = [{ field: 'sig', seed: t.vendorSeed }];
  const device = { deviceId: t.keystore.deviceId, devicePub: t.keystore.devicePub, vendorKeys: [t.vendorPub] };

  // A model with a canary, so the recorded files inside a manifest are reached on load.
  const x = { x: { dtype: 'float32' as const, dims: [1, 4], data: Float32Array.from([1, 2, 3, 4]) } };
  const canaried = await lockOnnx(tinyOnnx(), { schemes: ['sealed'], vendorSeed: t.vendorSeed, modelId: 'c', canary: [{ inputs: x }] });
  const cOuter = dec(canaried.klm);
  const cBody = dec(cOuter.signed as Uint8Array);
  const vendorSign = signer(signKeyPair(t.vendorSeed).secretKey);
  const resignKlm = (body: unknown, model: Uint8Array): Uint8Array => {
    const signed = encodeRaw(body);
    return encodeCbor({ ...cOuter, signed, sig: vendorSign(signed), model });
  };

  const keys = klsKeys(t.storageKey);
  const klsOuter = dec(t.kls);
  const klsBody = dec(openBox(klsOuter.body as Uint8Array, klsOuter.nonce as Uint8Array, keys.sealKey, () => new Error('tiny keystore does not open')));

  const klim = sealImageManifest({
    target: 'node', created: T0, keylock: '0.1.0', entries: ['keylock.mjs'],
    files: [
      { path: 'keylock.mjs', size: 10, sha256: sha256(new Uint8Array(10)), role: 'bundle' },
      { path: 'models/m.klm', size: t.klm.byteLength, sha256: sha256(t.klm), role: 'model' },
    ],
    models: [{ path: 'models/m.klm', modelId: 'm' }],
  }, t.vendorSeed);

  // Vendor-side model codecs: the weight places of ONNX files (If/Loop/Scan bodies, Constant values,
  // float16) and float16 TFLite files behind DEQUANTIZE, wrapped in a CBOR map so the byte mutations of
  // the harness reach the model and the outer checks stay the same as every other target's.
  const wrapped = (name: string, model: Uint8Array, parse: (model: Uint8Array) => unknown): Target => {
    // `model` third: the boundary test replaces the third field with hostile CBOR.
    const wrap = (m: unknown): Uint8Array => encodeCbor({ format: name, version: 1, model: m instanceof Uint8Array ? m : new Uint8Array(0) });
    return {
      name,
      sample: wrap(model),
      parse: async (b) => {
        const outer = decodeCbor(b, name, 1 << 26);
        const m = (outer as Record<string, unknown> | null)?.model;
        if (!(m instanceof Uint8Array)) throw new FormatError(`${name}: expected a map with the model bytes in "model"`);
        parse(m);
      },
      layers: [{ name: 'outer', tree: dec(wrap(model)), rebuild: (x) => encodeRaw(x) }, { name: 'model', tree: model, rebuild: wrap }],
    };
  };
  // A manifest with a deeplock entry of width-2 (float16) ranges, for the entry decoder.
  const deeplock16 = await lockOnnx(placesOnnx(), { schemes: ['deeplock'], vendorSeed: t.vendorSeed, modelId: 'd16' });
  const halfTflite = tfliteToFloat16(writeTflite({
    tensors: [
      { name: 'x', dtype: 'float32', shape: [1, 4] },
      { name: 'w', dtype: 'float32', shape: [3, 4], data: new Uint8Array(Float32Array.from({ length: 12 }, (_, i) => i / 8 - 0.5).buffer) },
      { name: 'b', dtype: 'float32', shape: [3], data: new Uint8Array(Float32Array.from([0.5, -1, 0.25]).buffer) },
      { name: 'y', dtype: 'float32', shape: [1, 3] },
    ],
    inputs: [0], outputs: [3],
    operators: [{ op: 'FULLY_CONNECTED', inputs: [0, 1, 2], outputs: [3], options: { kind: 'fully-connected', activation: 'NONE', weightsFormat: 0, keepNumDims: false } }],
  }));

  const keyfile = (name: string, sample: Uint8Array, parse: (b: Uint8Array) => unknown): Target => ({
    name, sample, parse: async (b) => { parse(b); }, layers: [{ name: 'file', tree: dec(sample), rebuild: (x) => encodeRaw(x) }],
  });

  return [
    {
      name: 'klm',
      sample: t.klm,
      parse: async (b) => { openKlm(b, [t.vendorPub]); },
      layers: envelopeLayers(t.klm, vendor),
    },
    {
      name: 'klm-load',
      sample: canaried.klm,
      // The whole device path with the right key: signature, digest, key check, sealed restore, ORT, canary.
      // loadModel never throws on a bad file: it must come back halted with a typed reason.
      parse: async (b) => {
        const m = await loadModel(b, { modelKey: canaried.modelKey, trust: [t.vendorPub] });
        try {
          if (m.state !== 'ready' && !(m.error instanceof KeylockError)) throw new Error(`loadModel came back ${m.state} without a typed error: ${String(m.error)}`);
          if (m.state !== 'ready') throw m.error;
        } finally {
          await m.release();
        }
      },
      layers: [
        { name: 'outer', tree: cOuter, rebuild: (x) => encodeRaw(x) },
        { name: 'manifest', tree: cBody, rebuild: (x) => resignKlm(x, cOuter.model as Uint8Array) },
        {
          // Changed model bytes with a matching digest: what a (buggy or hostile) vendor could sign.
          name: 'model',
          tree: cOuter.model,
          rebuild: (x) => {
            const model = x instanceof Uint8Array ? x : new Uint8Array(0);
            return resignKlm({ ...cBody, digest: sha256(model), modelBytes: model.byteLength }, model);
          },
        },
      ],
    },
    {
      name: 'klg',
      sample: t.klg,
      parse: async (b) => {
        inspectGrant(b, [t.vendorPub]);
        await withKeystore(t, (ks) => ks.installGrant(b, T0 + 1));
      },
      layers: envelopeLayers(t.klg, vendor),
    },
    {
      name: 'kls',
      sample: t.kls,
      parse: async (b) => {
        const ks = await Keystore.fromBytes(b, t.unlock);
        try {
          for (const g of ks.grants()) {
            try { ks.modelKeyFor(g.modelId, T0); } catch (e) { if (!(e instanceof KeylockError)) throw e; }
          }
          await ks.recordFailure('m', { onInvalidKey: 'disable', maxFailures: 2 }, T0);
        } finally {
          ks.close();
        }
      },
      layers: [
        { name: 'outer', tree: klsOuter, rebuild: (x) => encodeRaw(x) },
        {
          // The sealed state, re-sealed under the right storage key: what reaches the state decoder.
          name: 'state',
          tree: klsBody,
          rebuild: (x) => {
            const nonce = randomBytes(24);
            return encodeCbor({ ...klsOuter, nonce, body: seal(encodeRaw(x), nonce, keys.sealKey) });
          },
        },
      ],
    },
    {
      name: 'klr',
      sample: t.klr,
      parse: async (b) => {
        openRevocation(b, [t.vendorPub]);
        await withKeystore(t, (ks) => ks.installRevocation(b));
      },
      layers: envelopeLayers(t.klr, vendor),
    },
    {
      name: 'klt',
      sample: t.klt,
      parse: async (b) => {
        openReinstate(b, device);
        await withKeystore(t, (ks) => ks.installReinstate(b));
      },
      layers: envelopeLayers(t.klt, vendor),
    },
    {
      name: 'klv',
      sample: t.klv,
      parse: async (b) => {
        openRotation(b, [t.vendorPub, t.backupPub]);
        await withKeystore(t, (ks) => ks.installRotation(b));
      },
      layers: envelopeLayers(t.klv, [...vendor, { field: 'newSig', seed: seed(4) }]),
    },
    {
      name: 'recorded',
      sample: sampleRecorded(),
      parse: async (b) => {
        try { decodeRecorded(b, 'inputs'); } catch (e) { if (!(e instanceof KeylockError)) throw e; }
        decodeRecorded(b, 'outputs');
      },
      layers: [{ name: 'file', tree: dec(sampleRecorded()), rebuild: (x) => encodeRaw(x) }],
    },
    {
      name: 'klim',
      sample: klim,
      parse: async (b) => { openImageManifest(b, [t.vendorPub]); },
      layers: envelopeLayers(klim, vendor),
    },
    wrapped('onnx-places', placesOnnx(), (m) => listTensors(m)),
    {
      name: 'klm-deeplock16',
      sample: deeplock16.klm,
      parse: async (b) => { openKlm(b, [t.vendorPub]); },
      layers: envelopeLayers(deeplock16.klm, vendor),
    },
    wrapped('tflite-float16', halfTflite, (m) => listWeights(readTflite(m))),
    keyfile('vendor-pub', encodeVendorPub(t.vendorPub), decodeVendorPub),
    keyfile('vendor-key', encodeVendorSecret(seed(9)), decodeVendorSecret),
    keyfile('device-pub', encodeDevicePub('d', t.keystore.devicePub), decodeDevicePub),
    keyfile('model-key', encodeModelKey('m', seed(8)), decodeModelKey),
    keyfile('kls-counter', encodeCounter(7), decodeCounter),
    keyfile('kls-attempts', encodeAttempts({ failures: 3, last: T0 }), decodeAttempts),
  ];
}
