/**
 * Prepares the browser demo folder (default dist/browser-demo/): plays the
 * vendor and the device's installer once, then builds the page.
 *
 * - locks the reference MNIST CNN with signflip+sealed (policy: disable after
 *   3 failed unlocks) and a canary of two recorded digits, which the page
 *   reproduces bit for bit on wasm and within the runtime's tolerance on
 *   webgpu, whose kernels round differently (`--no-canary` leaves it out);
 * - creates two device keystores unlocked by a `hook` key: `device`, with a
 *   grant carrying the right model key, and `wrong`, with a grant carrying a
 *   random key (what a device sees when it was given the wrong grant);
 * - writes the recorded test digits the page offers, and setup.json;
 * - bundles demo/app.ts to app.mjs (it imports the keylock bundle at run time).
 *
 * DEMO ONLY: setup.json holds the keystores' unlock keys in the clear, so the
 * page can open them without a secure element. That is exactly what a product
 * must never do; it makes the demo self-contained. The vendor key is thrown
 * away and the model key is never written.
 *
 *   node --import tsx targets/browser/prepare-demo.ts [--out DIR] [--digits N] [--no-canary]
 */
import * as esbuild from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { makeGrant } from '../../keystore/grant.ts';
import { Keystore } from '../../keystore/keystore.ts';
import { randomBytes, signKeyPair } from '../../keystore/nacl.ts';
import { memoryStorage } from '../../keystore/storage.ts';
import type { UnlockProvider } from '../../keystore/unlock.ts';
import { lockOnnx } from '../../models/lock/index.ts';
import { decodeRecorded, type Sample } from '../../runtime/recorded.ts';
import type { DemoDigits, DemoSetup } from './demo/app.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const here = fileURLToPath(new URL('./', import.meta.url));

/** Model id of the demo's locked CNN. */
export const DEMO_MODEL_ID = 'mnist-cnn-browser-demo';

/** One prepared device keystore (bytes as served, and its demo-only unlock key). */
export interface DemoKeystore {
  id: string;
  bytes: Uint8Array;
  unlockKey: Uint8Array;
  /** A fresh hook provider for this keystore (returns a copy each time, as the keystore wipes what it gets). */
  unlock(): UnlockProvider;
}

/** What `prepareDemo` made, for tests that compare the page with the Node runtime. */
export interface PreparedDemo {
  dir: string;
  klm: Uint8Array;
  modelId: string;
  keystores: { device: DemoKeystore; wrong: DemoKeystore };
  digits: Sample[];
  /** The esbuild metafile inputs of app.mjs (the page module must not carry runtime code). */
  appInputs: string[];
}

function hookFor(key: Uint8Array): () => UnlockProvider {
  return () => ({ kind: 'hook', getKey: async () => key.slice() });
}

async function deviceWith(vendorPub: Uint8Array, vendorSeed: Uint8Array, modelId: string, grantKey: Uint8Array, id: string): Promise<DemoKeystore> {
  const unlockKey = randomBytes(32);
  const storage = memoryStorage();
  const ks = await Keystore.create(storage, { vendorKeys: [vendorPub], unlock: hookFor(unlockKey)() });
  const now = Math.floor(Date.now() / 1000);
  await ks.installGrant(makeGrant({
    modelId, modelKey: grantKey, devicePub: ks.devicePub, deviceId: ks.deviceId,
    notBefore: now - 3600, notAfter: now + 365 * 86400, vendorSeed,
  }));
  const bytes = ks.toBytes();
  ks.close();
  return { id, bytes, unlockKey, unlock: hookFor(unlockKey) };
}

/** Builds the page module into `dir/app.mjs`; returns the source files bundled. */
export async function buildDemoApp(dir: string): Promise<string[]> {
  const r = await esbuild.build({
    entryPoints: [join(here, 'demo/app.ts')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['es2022', 'chrome110', 'firefox115', 'safari16'],
    outfile: join(dir, 'app.mjs'),
    metafile: true,
    absWorkingDir: root,
    logLevel: 'warning',
  });
  copyFileSync(join(here, 'demo/index.html'), join(dir, 'index.html'));
  return Object.keys(r.metafile.inputs);
}

/** Writes the demo folder (emptied first) and returns what it made. */
export async function prepareDemo(dir = join(root, 'dist/browser-demo'), opts: { digits?: number; canary?: boolean } = {}): Promise<PreparedDemo> {
  const count = opts.digits ?? 100;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'data'), { recursive: true });
  const all = decodeRecorded(new Uint8Array(readFileSync(join(root, 'test/fixtures/mnist-test.cbor'))));
  const digits = all.slice(0, count);
  const cnn = new Uint8Array(readFileSync(join(root, 'models/reference/mnist-cnn.onnx')));

  const vendorSeed = randomBytes(32);
  const vendor = signKeyPair(vendorSeed);
  const locked = await lockOnnx(cnn, {
    schemes: ['signflip', 'sealed'], vendorSeed, modelId: DEMO_MODEL_ID,
    canary: opts.canary !== false ? all.slice(-2) : undefined, policy: { onInvalidKey: 'disable', maxFailures: 3 },
  });
  const device = await deviceWith(vendor.publicKey, vendorSeed, locked.modelId, locked.modelKey, 'device');
  const wrong = await deviceWith(vendor.publicKey, vendorSeed, locked.modelId, randomBytes(32), 'wrong');
  vendorSeed.fill(0);
  locked.modelKey.fill(0);

  writeFileSync(join(dir, 'data/cnn.klm'), locked.klm);
  writeFileSync(join(dir, 'data/device.kls'), device.bytes);
  writeFileSync(join(dir, 'data/wrong.kls'), wrong.bytes);
  const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
  const setup: DemoSetup = {
    demoOnly: 'DEMO ONLY: this page fetches the keystores\' unlock keys in the clear from data/setup.json so that it runs anywhere. '
      + 'A product unlocks its keystore with a hook wired to where the key is kept safe (WebAuthn PRF, the OS keychain through the app shell, a passphrase), never from a file the server hands out.',
    model: 'data/cnn.klm',
    modelId: locked.modelId,
    digits: 'data/digits.json',
    keystores: [
      { id: 'device', label: 'this device (grant with the right key)', kls: 'data/device.kls', unlockKeyHex: hex(device.unlockKey) },
      { id: 'wrong', label: 'a device given a wrong-key grant', kls: 'data/wrong.kls', unlockKeyHex: hex(wrong.unlockKey) },
    ],
  };
  writeFileSync(join(dir, 'data/setup.json'), JSON.stringify(setup, null, 2) + '\n');
  const input = digits[0].inputs!;
  const name = Object.keys(input)[0];
  const dd: DemoDigits = {
    input: name,
    dims: input[name].dims,
    samples: digits.map((s) => {
      const d = s.inputs![name].data as Float32Array;
      return { label: s.label!, data: Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString('base64') };
    }),
  };
  writeFileSync(join(dir, 'data/digits.json'), JSON.stringify(dd) + '\n');
  const appInputs = await buildDemoApp(dir);
  return { dir, klm: locked.klm, modelId: locked.modelId, keystores: { device, wrong }, digits, appInputs };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { out: { type: 'string' }, digits: { type: 'string' }, 'no-canary': { type: 'boolean' } } });
  const d = await prepareDemo(values.out ? resolve(values.out) : undefined, { digits: values.digits ? Number(values.digits) : undefined, canary: !values['no-canary'] });
  process.stdout.write(`demo prepared in ${d.dir}: model ${d.modelId} (${d.klm.byteLength} bytes), keystores device + wrong, ${d.digits.length} digits\n`);
}
