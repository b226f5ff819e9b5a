/** `keylock lock`: lock a model file into a signed `.klm` and write its model key. */
import { basename, extname } from 'node:path';
import { decodeVendorSecret, encodeModelKey } from '../../keystore/keyfiles.ts';
import { hex, keyId } from '../../runtime/klm.ts';
import { decodeRecorded } from '../../runtime/recorded.ts';
import { randomBytes, signKeyPair } from '../../keystore/nacl.ts';
import { lockModel, parseSchemes } from '../../models/lock/index.ts';
import { CliError, UsageError, type Command } from './main.ts';
import { intFlag, readInput, req, writeOutput } from './io.ts';

export const lock: Command = {
  summary: 'lock a model (.onnx or .tflite) with one or more schemes into a signed .klm',
  usage: 'lock MODEL.onnx|MODEL.tflite --scheme S[+S2] --vendor NAME.key --out M.klm --key-out M.key [--block N] [--negpos] [--trained-with-key] '
    + '[--units U] [--mode input|fold] [--data REC.cbor] [--canary REC.cbor] [--canary-count N] [--model-id ID] '
    + '[--on-invalid-key halt|disable] [--max-failures N] [--seed N]',
  options: {
    scheme: { type: 'string' }, vendor: { type: 'string' }, out: { type: 'string' }, 'key-out': { type: 'string' },
    block: { type: 'string' }, negpos: { type: 'boolean' }, 'trained-with-key': { type: 'boolean' },
    units: { type: 'string' }, mode: { type: 'string' }, data: { type: 'string' }, canary: { type: 'string' },
    'canary-count': { type: 'string' }, 'model-id': { type: 'string' }, 'on-invalid-key': { type: 'string' },
    'max-failures': { type: 'string' }, seed: { type: 'string' },
  },
  positionals: [1, 1],
  async run({ values, positionals }) {
    const src = positionals[0];
    const out = req(values, 'out', this.usage);
    const keyOut = req(values, 'key-out', this.usage);
    let schemes;
    try {
      schemes = parseSchemes(req(values, 'scheme', this.usage));
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const ext = extname(src).toLowerCase();
    if (ext !== '.onnx' && ext !== '.tflite') throw new CliError(`cannot lock "${src}": expected an .onnx or .tflite model, got "${ext || 'no extension'}"`);
    const mode = values.mode as string | undefined;
    if (mode !== undefined && mode !== 'input' && mode !== 'fold') throw new UsageError(`--mode must be input or fold, got "${mode}"`);
    const onInvalid = (values['on-invalid-key'] as string | undefined) ?? 'halt';
    if (onInvalid !== 'halt' && onInvalid !== 'disable') throw new UsageError(`--on-invalid-key must be halt or disable, got "${onInvalid}"`);
    const vendorSeed = decodeVendorSecret(readInput(req(values, 'vendor', this.usage), 'vendor key'));
    const data = typeof values.data === 'string' ? decodeRecorded(readInput(values.data, 'encryption set')) : undefined;
    let canary = typeof values.canary === 'string' ? decodeRecorded(readInput(values.canary, 'canary inputs')) : undefined;
    const count = intFlag(values, 'canary-count');
    if (canary) canary = canary.slice(0, count ?? 4);
    const res = await lockModel(readInput(src, 'model'), {
      schemes, vendorSeed, format: ext === '.tflite' ? 'tflite' : 'onnx',
      modelId: values['model-id'] as string | undefined ?? `${basename(src, ext)}-${hex(randomBytes(4))}`,
      block: intFlag(values, 'block'), negpos: values.negpos === true, trainedWithKey: values['trained-with-key'] === true,
      units: intFlag(values, 'units', 0), signflipMode: mode as 'input' | 'fold' | undefined,
      data, canary, seed: intFlag(values, 'seed', 0),
      policy: { onInvalidKey: onInvalid, maxFailures: intFlag(values, 'max-failures', 0) ?? (onInvalid === 'disable' ? 3 : 0) },
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
