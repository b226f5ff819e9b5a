/** `keylock lock`: lock a model file into a signed `.klm` (or, with `--pipeline`, several into one `.klp`) and write its model key. */
import { basename, dirname, extname, resolve } from 'node:path';
import { decodeVendorSecret, encodeModelKey } from '../../keystore/keyfiles.ts';
import type { Scheme } from '../../runtime/klm.ts';
import { SEALED_CIPHERS, type SealedCipher } from '../../runtime/keys/sealed.ts';
import { hex, keyId } from '../../keystore/hex.ts';
import { decodeRecorded } from '../../runtime/recorded.ts';
import { randomBytes, signKeyPair } from '../../keystore/nacl.ts';
import { lockModel, parseSchemes } from '../../models/lock/index.ts';
import { lockPipeline, pipelineFromSpec } from '../../models/pipeline.ts';
import { UsageError, type Command } from './command.ts';
import { checkIdFlag, intFlag, readInput, req, writeOutput } from './io.ts';

export const lock: Command = {
  summary: 'lock a model (.onnx or .tflite) with one or more schemes into a signed .klm',
  usage: 'lock MODEL.onnx|MODEL.tflite --scheme S[+S2] --vendor NAME.key --out M.klm --key-out M.key [--block N] [--negpos] [--trained-with-key] '
    + '[--units U] [--mode input|fold] [--data REC.cbor] [--canary REC.cbor] [--canary-count N] [--model-id ID] '
    + '[--on-invalid-key halt|disable] [--max-failures N] [--seed N] [--cipher xchacha20-poly1305|aes-256-gcm|xsalsa20-poly1305] [--inline]\n'
    + '       keylock lock --pipeline SPEC.json --scheme S[+S2] --vendor NAME.key --out P.klp --key-out P.key [--canary FRAMES.cbor [--canary-count N]] [--model-id ID] [lock flags as above]',
  options: {
    scheme: { type: 'string' }, vendor: { type: 'string' }, out: { type: 'string' }, 'key-out': { type: 'string' },
    block: { type: 'string' }, negpos: { type: 'boolean' }, 'trained-with-key': { type: 'boolean' },
    units: { type: 'string' }, mode: { type: 'string' }, data: { type: 'string' }, canary: { type: 'string' },
    'canary-count': { type: 'string' }, 'model-id': { type: 'string' }, 'on-invalid-key': { type: 'string' },
    'max-failures': { type: 'string' }, seed: { type: 'string' }, cipher: { type: 'string' }, pipeline: { type: 'string' },
    inline: { type: 'boolean' },
  },
  positionals: [0, 1],
  async run({ values, positionals }) {
    if (typeof values.pipeline === 'string') {
      if (positionals.length) throw new UsageError(`--pipeline takes its models from the spec; got a model argument too ("${positionals[0]}")`, `usage: keylock ${this.usage}`);
      return lockPipelineCommand(values, this.usage);
    }
    if (!positionals.length) throw new UsageError('lock needs a model file (or --pipeline SPEC.json)', `usage: keylock ${this.usage}`);
    const src = positionals[0];
    const usage = `usage: keylock ${this.usage}`;
    // Every flag is checked before any file is read, so a usage mistake is
    // reported as one even when a path is wrong too.
    const out = req(values, 'out', this.usage);
    const keyOut = req(values, 'key-out', this.usage);
    const schemes = parseSchemes(req(values, 'scheme', this.usage)); // LockOptionError: main() reports it as usage
    const vendorPath = req(values, 'vendor', this.usage);
    const ext = extname(src).toLowerCase();
    if (ext !== '.onnx' && ext !== '.tflite') {
      throw new UsageError(`cannot lock "${src}": expected an .onnx or .tflite model, got "${ext || 'no extension'}"`, 'the file extension names the format; rename the file if it is one of these');
    }
    const tflite = ext === '.tflite';
    const mode = values.mode as string | undefined;
    if (mode !== undefined && mode !== 'input' && mode !== 'fold') throw new UsageError(`--mode must be input or fold, got "${mode}"`, usage);
    if (tflite && mode === 'input') throw new UsageError('--mode input is not available for .tflite models (it adds a key input to the graph)', 'use --mode fold, the default for .tflite');
    const modelId = typeof values['model-id'] === 'string' ? checkIdFlag('model-id', values['model-id']) : undefined;
    const onInvalid = (values['on-invalid-key'] as string | undefined) ?? 'halt';
    if (onInvalid !== 'halt' && onInvalid !== 'disable') throw new UsageError(`--on-invalid-key must be halt or disable, got "${onInvalid}"`, usage);
    const block = intFlag(values, 'block', 1, this.usage);
    const units = intFlag(values, 'units', 0, this.usage);
    const count = intFlag(values, 'canary-count', 1, this.usage);
    const seed = intFlag(values, 'seed', 0, this.usage);
    const maxFailures = intFlag(values, 'max-failures', 0, this.usage);
    // A flag for a scheme that is not asked for would be ignored without a word; say so instead.
    const needs = (flag: string, scheme: Scheme, given: boolean): void => {
      if (given && !schemes.includes(scheme)) throw new UsageError(`--${flag} applies to --scheme ${scheme}, which "${values.scheme as string}" does not include`, usage);
    };
    needs('block', 'shuffle', block !== undefined);
    needs('negpos', 'shuffle', values.negpos === true);
    needs('trained-with-key', 'shuffle', values['trained-with-key'] === true);
    needs('units', 'signflip', units !== undefined);
    needs('mode', 'signflip', mode !== undefined);
    needs('data', 'advparams', values.data !== undefined);
    needs('cipher', 'sealed', values.cipher !== undefined);
    needs('inline', 'sealed', values.inline === true);
    const cipher = values.cipher as string | undefined;
    if (cipher !== undefined && !(SEALED_CIPHERS as readonly string[]).includes(cipher)) {
      throw new UsageError(`--cipher must be one of ${SEALED_CIPHERS.join(', ')}, got "${cipher}"`, usage);
    }
    if (cipher === 'aes-256-gcm' && values.inline === true) {
      throw new UsageError('--inline seals with xchacha20-poly1305 or xsalsa20-poly1305, not aes-256-gcm', 'drop --cipher aes-256-gcm, or drop --inline');
    }
    if (schemes.includes('shuffle') && block === undefined) {
      throw new UsageError('--scheme shuffle needs a block size: --block N', `N must divide the input's height and width (e.g. --block 4 for 28x28); ${usage}`);
    }
    if (schemes.includes('advparams') && values.data === undefined) {
      throw new UsageError('--scheme advparams needs its encryption set: --data REC.cbor', `recorded inputs with labels, e.g. test/fixtures/mnist-test.cbor; ${usage}`);
    }
    if (count !== undefined && values.canary === undefined) throw new UsageError('--canary-count goes with --canary REC.cbor', usage);

    const vendorSeed = decodeVendorSecret(readInput(vendorPath, 'vendor key'));
    const data = typeof values.data === 'string' ? decodeRecorded(readInput(values.data, 'encryption set')) : undefined;
    let canary = typeof values.canary === 'string' ? decodeRecorded(readInput(values.canary, 'canary inputs')) : undefined;
    if (canary) canary = canary.slice(0, count ?? 4);
    const res = await lockModel(readInput(src, 'model'), {
      schemes, vendorSeed, format: tflite ? 'tflite' : 'onnx',
      modelId: modelId ?? `${basename(src, ext)}-${hex(randomBytes(4))}`,
      block, negpos: values.negpos === true, trainedWithKey: values['trained-with-key'] === true,
      units, signflipMode: mode as 'input' | 'fold' | undefined,
      data, canary, seed, sealedCipher: cipher as SealedCipher | undefined,
      sealedInline: values.inline === true ? true : undefined,
      policy: { onInvalidKey: onInvalid, maxFailures: maxFailures ?? (onInvalid === 'disable' ? 3 : 0) },
    });
    // Write the key first: a .klm without its key would be useless, a key without a .klm is harmless.
    writeOutput(keyOut, encodeModelKey(res.modelId, res.modelKey), true);
    writeOutput(out, res.klm);
    const vendor = signKeyPair(vendorSeed);
    process.stdout.write([
      `locked ${src} as model "${res.modelId}" with ${schemes.join('+')}, signed by vendor ${keyId(vendor.publicKey)}`,
      ...res.report.map((l) => `  ${l}`),
      `wrote ${out} (${res.klm.byteLength} bytes) and ${keyOut} (model key, mode 0600)`,
    ].join('\n') + '\n');
    vendor.secretKey.fill(0);
    vendorSeed.fill(0);
    res.modelKey.fill(0);
  },
};

/** `keylock lock --pipeline SPEC.json`: every stage locked under one key into one `.klp` (docs/SPEC.md, "Pipeline"). */
async function lockPipelineCommand(values: Record<string, string | boolean | string[] | undefined>, usageLine: string): Promise<void> {
  const usage = `usage: keylock ${usageLine}`;
  const specPath = values.pipeline as string;
  const out = req(values, 'out', usageLine);
  const keyOut = req(values, 'key-out', usageLine);
  const schemes = parseSchemes(req(values, 'scheme', usageLine));
  const vendorPath = req(values, 'vendor', usageLine);
  for (const flag of ['data', 'trained-with-key']) {
    if (values[flag] !== undefined) throw new UsageError(`--${flag} does not apply to --pipeline`, usage);
  }
  const count = intFlag(values, 'canary-count', 1, usageLine);
  if (count !== undefined && values.canary === undefined) throw new UsageError('--canary-count goes with --canary REC.cbor', usage);
  const onInvalid = (values['on-invalid-key'] as string | undefined) ?? 'halt';
  if (onInvalid !== 'halt' && onInvalid !== 'disable') throw new UsageError(`--on-invalid-key must be halt or disable, got "${onInvalid}"`, usage);
  const maxFailures = intFlag(values, 'max-failures', 0, usageLine);
  const modelId = typeof values['model-id'] === 'string' ? checkIdFlag('model-id', values['model-id']) : undefined;
  const mode = values.mode as string | undefined;
  if (mode !== undefined && mode !== 'input' && mode !== 'fold') throw new UsageError(`--mode must be input or fold, got "${mode}"`, usage);
  let spec: unknown;
  try {
    spec = JSON.parse(new TextDecoder().decode(readInput(specPath, 'pipeline spec')));
  } catch (e) {
    if (e instanceof SyntaxError) throw new UsageError(`pipeline spec ${specPath}: expected JSON, got ${e.message}`, 'see docs/SPEC.md, "Pipeline spec"');
    throw e;
  }
  const base = dirname(specPath);
  const { pipelineId, stages } = pipelineFromSpec(spec, (p) => readInput(resolve(base, p), 'pipeline stage model'));
  const vendorSeed = decodeVendorSecret(readInput(vendorPath, 'vendor key'));
  // Recorded pipeline inputs (e.g. 80 ms frames): what they feed each stage becomes its part's canary.
  const canary = typeof values.canary === 'string' ? decodeRecorded(readInput(values.canary, 'canary inputs')).map((x, i) => {
    if (!x.inputs) throw new UsageError(`--canary ${values.canary as string}: sample ${i} holds no inputs`, 'give a recorded-inputs file of the pipeline\'s input');
    return x.inputs;
  }) : undefined;
  const res = await lockPipeline({
    canary, canaryCount: count,
    stages, schemes, vendorSeed, pipelineId: modelId ?? pipelineId ?? `${basename(specPath, extname(specPath))}-${hex(randomBytes(4))}`,
    block: intFlag(values, 'block', 1, usageLine), negpos: values.negpos === true, units: intFlag(values, 'units', 0, usageLine),
    signflipMode: mode as 'input' | 'fold' | undefined, seed: intFlag(values, 'seed', 0, usageLine),
    sealedCipher: values.cipher as SealedCipher | undefined,
    policy: { onInvalidKey: onInvalid, maxFailures: maxFailures ?? (onInvalid === 'disable' ? 3 : 0) },
  });
  writeOutput(keyOut, encodeModelKey(res.pipelineId, res.modelKey), true);
  writeOutput(out, res.klp);
  const vendor = signKeyPair(vendorSeed);
  process.stdout.write([
    `locked pipeline "${res.pipelineId}" (${stages.map((s) => s.name).join(' -> ')}) with ${schemes.join('+')}, signed by vendor ${keyId(vendor.publicKey)}`,
    ...res.report.map((l) => `  ${l}`),
    `wrote ${out} (${res.klp.byteLength} bytes) and ${keyOut} (model key of "${res.pipelineId}", mode 0600): grant it as one model`,
  ].join('\n') + '\n');
  vendor.secretKey.fill(0);
  vendorSeed.fill(0);
  res.modelKey.fill(0);
}
