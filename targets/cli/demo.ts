/**
 * `keylock demo` (`npm start`): one vendor and one device, end to end, on the
 * reference MNIST CNN and the 2,000 recorded test digits, in a temporary folder.
 * Every step is the library call behind the CLI command printed beside it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Keystore } from '../../keystore/keystore.ts';
import { makeGrant } from '../../keystore/grant.ts';
import { makeReinstate } from '../../keystore/reinstate.ts';
import { randomBytes, signKeyPair } from '../../keystore/nacl.ts';
import { lockOnnx } from '../../models/lock/index.ts';
import { keyId } from '../../keystore/hex.ts';
import { loadModel } from '../../runtime/load.ts';
import type { LockedModel } from '../../runtime/model.ts';
import { createOrtSession } from '../../runtime/ort.ts';
import { decodeRecorded, type Sample } from '../../runtime/recorded.ts';
import type { TensorMap } from '../../runtime/tensor.ts';
import { readInput } from './io.ts';
import type { Command } from './command.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));

function argmax(t: TensorMap): number {
  const d = Object.values(t)[0].data as Float32Array;
  let b = 0;
  for (let i = 1; i < d.length; i++) if (d[i] > d[b]) b = i;
  return b;
}

async function accuracyOf(run: (x: TensorMap) => Promise<TensorMap>, samples: Sample[]): Promise<number> {
  let ok = 0;
  for (const s of samples) if (argmax(await run(s.inputs!)) === s.label) ok++;
  return ok / samples.length;
}

const pct = (x: number): string => `${(x * 100).toFixed(2)}%`;

export const demo: Command = {
  summary: 'walk one vendor and one device through lock, grant, install, run and the failure paths',
  usage: 'demo [--keep]',
  options: { keep: { type: 'boolean' } },
  positionals: [0, 0],
  async run({ values }) {
    const t0 = performance.now();
    const dir = mkdtempSync(join(tmpdir(), 'keylock-demo-'));
    const say = (s: string): void => { process.stdout.write(s + '\n'); };
    const step = (cmd: string, what: string): void => say(`\n$ keylock ${cmd}\n  ${what}`);
    try {
      const digits = decodeRecorded(readInput(join(root, 'test/fixtures/mnist-test.cbor'), 'recorded digits'));
      const cnn = readInput(join(root, 'models/reference/mnist-cnn.onnx'), 'reference CNN');
      say(`keylock demo: reference MNIST CNN, ${digits.length} recorded test digits, working in ${dir}`);

      const vendorSeed = randomBytes(32);
      const vendor = signKeyPair(vendorSeed);
      step('keygen --out vendor', `vendor signing key ${keyId(vendor.publicKey)}`);

      const unlock = { kind: 'file' as const, path: join(dir, 'device.secret') };
      const ks = await Keystore.create(join(dir, 'device.kls'), { vendorKeys: [vendor.publicKey], unlock });
      step('device init --keystore device.kls --unlock file:device.secret --trust vendor.pub --pub-out device.pub',
        `device ${ks.deviceId}: sealed keystore created, vendor key pinned`);

      const locked = await lockOnnx(cnn, {
        schemes: ['signflip', 'sealed'], vendorSeed, modelId: 'mnist-cnn-demo',
        canary: digits.slice(0, 2), policy: { onInvalidKey: 'disable', maxFailures: 3 },
      });
      step('lock mnist-cnn.onnx --scheme signflip+sealed --canary digits.cbor --on-invalid-key disable --max-failures 3 --out cnn.klm --key-out cnn.key',
        `${locked.klm.byteLength} bytes; ${locked.report.join('; ')}`);

      const now = Math.floor(Date.now() / 1000);
      const grantFor = (k: Keystore, modelKey: Uint8Array, notAfter = now + 86400): Uint8Array => makeGrant({
        modelId: locked.modelId, modelKey, devicePub: k.devicePub, deviceId: k.deviceId, notBefore: now - 60, notAfter, vendorSeed,
      });
      await ks.installGrant(grantFor(ks, locked.modelKey));
      step('grant cnn.klm --model-key cnn.key --vendor vendor.key --device device.pub --out device.klg && keylock install device.klg ...',
        `model key sealed to ${ks.deviceId}, installed (keystore generation ${ks.generation})`);

      const model = await loadModel(locked.klm, { keystore: ks });
      if (model.state !== 'ready') throw model.error!;
      const acc = await accuracyOf((x) => model.run(x), digits);
      step('run cnn.klm --keystore device.kls --unlock file:device.secret --inputs digits.cbor --out out.cbor',
        `state ${model.state} on backend ${model.backend}; accuracy ${pct(acc)} on ${digits.length} digits; latency p50 ${model.stats.p50.toFixed(3)} ms, p99 ${model.stats.p99.toFixed(3)} ms`);
      await model.release();

      const plain = await createOrtSession(cnn);
      const plainAcc = await accuracyOf((x) => plain.run(x), digits);
      await plain.release();
      const stolen = await createOrtSession(locked.locked);
      const ones: TensorMap = {};
      for (const i of stolen.inputs) {
        if (i.name === 'input') continue;
        const dims = (i.shape ?? []).map((d) => (typeof d === 'number' && d > 0 ? d : 1));
        ones[i.name] = { dtype: 'float32', dims, data: new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(1) };
      }
      const stolenAcc = await accuracyOf((x) => stolen.run({ ...x, ...ones }), digits);
      await stolen.release();
      step('extract cnn.klm --out stolen.onnx   (the attacker, with plain onnxruntime-web)',
        `plain model ${pct(plainAcc)}; the copied locked model ${pct(stolenAcc)} (chance is 10%)`);

      const other = await Keystore.create(join(dir, 'other.kls'), { vendorKeys: [vendor.publicKey], unlock: { kind: 'file', path: join(dir, 'other.secret') } });
      let why = '';
      try { await other.installGrant(grantFor(ks, locked.modelKey)); } catch (e) { why = (e as Error).name; }
      const onOther = await loadModel(locked.klm, { keystore: other });
      step('install device.klg --keystore other.kls ...   then run on the other device',
        `install refused (${why}); the model is ${onOther.state}: ${onOther.error?.name}`);

      const shortKs = await Keystore.create(join(dir, 'short.kls'), { vendorKeys: [vendor.publicKey], unlock: { kind: 'file', path: join(dir, 'short.secret') } });
      await shortKs.installGrant(grantFor(shortKs, locked.modelKey, Math.floor(Date.now() / 1000) + 2));
      await new Promise((r) => setTimeout(r, 2200));
      const expired = await loadModel(locked.klm, { keystore: shortKs });
      const rejected = await expired.run(digits[0].inputs!).then(() => 'numbers (wrong!)', (e: Error) => e.name);
      step('grant ... --not-after <in 2 s>; install; wait; run',
        `the model is ${expired.state}: ${expired.error?.name}; run() rejects with ${rejected}`);

      const wrongKs = await Keystore.create(join(dir, 'wrong.kls'), { vendorKeys: [vendor.publicKey], unlock: { kind: 'file', path: join(dir, 'wrong.secret') } });
      await wrongKs.installGrant(grantFor(wrongKs, randomBytes(32)));
      const states: string[] = [];
      let last: LockedModel | undefined;
      for (let i = 0; i < 4; i++) {
        last = await loadModel(locked.klm, { keystore: wrongKs });
        states.push(`${last.state} (${last.error?.name})`);
      }
      step('run cnn.klm --keystore wrong.kls ...   x4, with a grant carrying a wrong key',
        `${states.join(' -> ')}; failures persisted, key material zeroized at the limit`);

      await wrongKs.installReinstate(makeReinstate({ modelId: locked.modelId, deviceId: wrongKs.deviceId, devicePub: wrongKs.devicePub, vendorSeed }));
      await wrongKs.installGrant(grantFor(wrongKs, locked.modelKey));
      const back = await loadModel(locked.klm, { keystore: wrongKs });
      step('reinstate --vendor vendor.key --device wrong.pub --model mnist-cnn-demo --out t.klt; install t.klt; install a fresh grant; run',
        `the model is ${back.state} again`);
      await back.release();
      for (const k of [ks, other, shortKs, wrongKs]) k.close();
      vendorSeed.fill(0);
      say(`\ndemo finished in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    } finally {
      if (values.keep) say(`kept ${dir}`);
      else rmSync(dir, { recursive: true, force: true });
    }
  },
};
