/** `keylock keygen | inspect | extract | run`: vendor key files and looking at / running a `.klm`. */
import { signKeyPair, randomBytes } from '../../keystore/nacl.ts';
import { decodeModelKey, encodeVendorPub, encodeVendorSecret, decodeVendorPub } from '../../keystore/keyfiles.ts';
import { hex, keyId, openKlm, type LockEntry } from '../../runtime/klm.ts';
import { loadModel } from '../../runtime/model.ts';
import { decodeRecorded, encodeRecorded, type Sample } from '../../runtime/recorded.ts';
import { Keystore } from '../../keystore/keystore.ts';
import { parseUnlock } from '../../keystore/unlock.ts';
import { CliError, UsageError, type Command } from './main.ts';
import { intFlag, readInput, req, writeOutput } from './io.ts';

export const keygen: Command = {
  summary: 'make a vendor signing key pair (NAME.key, NAME.pub)',
  usage: 'keygen --out DIR/NAME',
  options: { out: { type: 'string' } },
  positionals: [0, 0],
  async run({ values }) {
    const out = req(values, 'out', this.usage);
    const seed = randomBytes(32);
    const { publicKey, secretKey } = signKeyPair(seed);
    writeOutput(`${out}.key`, encodeVendorSecret(seed), true);
    writeOutput(`${out}.pub`, encodeVendorPub(publicKey));
    seed.fill(0);
    secretKey.fill(0);
    process.stdout.write(`vendor key ${keyId(publicKey)}: wrote ${out}.key (secret, mode 0600) and ${out}.pub\n`);
  },
};

/** One line per lock, public parameters only. */
export function describeLock(l: LockEntry): string {
  switch (l.scheme) {
    case 'shuffle': return `shuffle  block ${l.block}x${l.block}x${l.channels} on "${l.input}"${l.layout === 'nhwc' ? ' (NHWC)' : ''}${l.negpos ? ', negative/positive' : ''}${l.absorbed ? ', absorbed into the first layer' : ', trained with the key'}`;
    case 'signflip': return `signflip ${l.mode} mode, ${l.units ? `${l.units} MAC units` : 'one bit per channel'}, ${l.layers.length} layer(s): ${l.layers.map((x) => `${x.weight}[${x.channels}]`).join(', ')}`;
    case 'deeplock': return `deeplock ${l.tensors.length} tensor(s), ${l.tensors.reduce((n, t) => n + t.length / 4, 0)} float32 parameters`;
    case 'advparams': return `advparams sealed key list over ${l.tensors.length} tensor(s)`;
    case 'sealed': return `sealed   ${l.tensors.length} tensor(s), ${l.tensors.reduce((n, t) => n + t.length, 0)} bytes, XSalsa20-Poly1305`;
  }
}

export const inspect: Command = {
  summary: 'print a .klm manifest (never a secret)',
  usage: 'inspect FILE.klm [--json]',
  options: { json: { type: 'boolean' } },
  positionals: [1, 1],
  async run({ values, positionals }) {
    const { manifest: m } = openKlm(readInput(positionals[0], 'model file'));
    if (values.json) {
      process.stdout.write(JSON.stringify(m, (_k, v) => (v instanceof Uint8Array ? hex(v) : v), 2) + '\n');
      return;
    }
    const io = (x: { name: string; dtype: string; shape: (number | string)[] }): string => `${x.name} ${x.dtype}[${x.shape.join(',')}]`;
    const lines = [
      `model     ${m.modelId} (${m.modelFormat}, ${m.modelBytes} bytes, sha256 ${hex(m.digest).slice(0, 16)}…)`,
      `vendor    ${keyId(m.vendorKey)} (signature verifies against the key it names)`,
      `created   ${new Date(m.created * 1000).toISOString()}`,
      `inputs    ${m.inputs.map(io).join('; ')}`,
      `outputs   ${m.outputs.map(io).join('; ')}`,
      `policy    on invalid key: ${m.policy.onInvalidKey}; max failures: ${m.policy.maxFailures || 'unlimited'}`,
      `canary    ${m.canary ? `${decodeRecorded(m.canary.inputs).length} recorded sample(s)` : 'none'}`,
      'locks     (applied in this order, undone in reverse)',
      ...m.locks.map((l, i) => `  ${i + 1}. ${describeLock(l)}`),
    ];
    process.stdout.write(lines.join('\n') + '\n');
  },
};

export const extract: Command = {
  summary: 'write the locked model bytes as they are (what a copied file gives)',
  usage: 'extract M.klm --out LOCKED.onnx',
  options: { out: { type: 'string' } },
  positionals: [1, 1],
  async run({ values, positionals }) {
    const out = req(values, 'out', this.usage);
    const { model, manifest } = openKlm(readInput(positionals[0], 'model file'));
    writeOutput(out, model);
    process.stdout.write(`wrote ${out}: ${model.byteLength} bytes of locked ${manifest.modelFormat}\n`);
  },
};

/** Runs every sample through a ready model; returns output samples. */
export async function runSamples(model: Awaited<ReturnType<typeof loadModel>>, samples: Sample[]): Promise<Sample[]> {
  const out: Sample[] = [];
  for (const s of samples) {
    if (!s.inputs) throw new CliError('the inputs file holds no inputs');
    out.push({ outputs: await model.run(s.inputs), label: s.label });
  }
  return out;
}

/** Accuracy of argmax over the first output against labels, when every sample has one. */
export function accuracy(outputs: Sample[]): number | undefined {
  if (!outputs.length || outputs.some((s) => s.label === undefined)) return undefined;
  let ok = 0;
  for (const s of outputs) {
    const t = Object.values(s.outputs!)[0];
    const per = t.data.length / (t.dims[0] || 1);
    if (per < 2 || t.dims[0] !== 1) return undefined;
    let best = 0;
    for (let i = 1; i < per; i++) if ((t.data[i] as number) > (t.data[best] as number)) best = i;
    if (best === s.label) ok++;
  }
  return ok / outputs.length;
}

export const runCmd: Command = {
  summary: 'run a .klm on recorded inputs, with a device keystore or (vendor check) the model key',
  usage: 'run M.klm (--keystore F.kls --unlock SPEC | --model-key M.key [--trust VENDOR.pub]) --inputs REC.cbor --out OUT.cbor [--threads N] [--backend wasm|webgpu|native|tflite]',
  options: {
    'model-key': { type: 'string' }, keystore: { type: 'string' }, unlock: { type: 'string' },
    inputs: { type: 'string' }, out: { type: 'string' },
    threads: { type: 'string' }, trust: { type: 'string' }, backend: { type: 'string' },
  },
  positionals: [1, 1],
  async run({ values, positionals }) {
    const klm = readInput(positionals[0], 'model file');
    const samples = decodeRecorded(readInput(req(values, 'inputs', this.usage), 'inputs file'));
    const out = req(values, 'out', this.usage);
    const threads = intFlag(values, 'threads');
    const backend = values.backend as string | undefined;
    let model;
    if (typeof values.keystore === 'string') {
      if (values['model-key'] !== undefined) throw new UsageError('give either --keystore or --model-key, not both');
      const keystore = await Keystore.open(values.keystore, { unlock: parseUnlock(req(values, 'unlock', this.usage)) });
      try {
        model = await loadModel(klm, { keystore, threads, backend });
      } finally {
        keystore.close();
      }
    } else {
      const keyFile = decodeModelKey(readInput(req(values, 'model-key', this.usage), 'model key file'));
      const trust = typeof values.trust === 'string' ? [decodeVendorPub(readInput(values.trust, 'vendor public key'))] : undefined;
      model = await loadModel(klm, { modelKey: keyFile.key, trust, threads, backend });
      keyFile.key.fill(0);
    }
    if (model.state !== 'ready') {
      throw new CliError(`model is ${model.state}: ${model.error?.message} (${model.error?.code})`, model.state === 'disabled' ? 'only a vendor reinstate token (keylock install T.klt) lifts it' : undefined, 3);
    }
    let outputs: Sample[];
    try {
      outputs = await runSamples(model, samples);
    } finally {
      await model.release();
    }
    writeOutput(out, encodeRecorded(outputs, 'outputs'));
    const acc = accuracy(outputs);
    const st = model.stats;
    process.stdout.write(`ran ${outputs.length} sample(s): p50 ${st.p50.toFixed(3)} ms, p99 ${st.p99.toFixed(3)} ms${acc === undefined ? '' : `, accuracy ${(acc * 100).toFixed(2)}%`}; wrote ${out}\n`);
  },
};
