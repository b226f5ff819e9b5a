/** `keylock keygen | inspect | extract | run`: vendor key files and looking at / running a `.klm`. */
import { signKeyPair, randomBytes } from '../../keystore/nacl.ts';
import { decodeModelKey, encodeVendorPub, encodeVendorSecret, decodeVendorPub } from '../../keystore/keyfiles.ts';
import { openKlm } from '../../runtime/klm.ts';
import { isKlp, openKlp } from '../../runtime/pipeline-file.ts';
import { loadPipeline, type LockedPipeline } from '../../runtime/pipeline.ts';
import { AUTO, autoBackends, backendNames, resolveBackend } from '../../runtime/backends.ts';
import { describeLock } from '../../runtime/keys/index.ts';
import { hex, keyId } from '../../keystore/hex.ts';
import type { LoadOptions } from '../../runtime/load.ts';
import { AUTO_IN_THREAD_MS, type LockedModel } from '../../runtime/model.ts';
import type { ModelFormat } from '../../runtime/klm.ts';
// The CLI is a Node app: it loads through the Node target, whose import sets `env.backend = 'auto'`
// (the fastest backend that reproduces the canary here; `--backend NAME` asks for one).
import { loadModel } from '../node/index.ts';
import { env } from '../../runtime/env.ts';
import { recordToFile } from '../node/record.ts';
import { FormatError } from '../../keystore/errors.ts';
import { accuracy, compareOutputs, compareReportJson, formatCompareReport } from '../../models/record/compare.ts';
import { decodeRecorded, encodeRecorded, type Sample } from '../../runtime/recorded.ts';
import { Keystore } from '../../keystore/keystore.ts';
import type { UnlockProvider } from '../../keystore/unlock.ts';
import { CliError, UsageError, type Command } from './command.ts';
import { intFlag, numFlag, readInput, req, unlockFlag, writeOutput } from './io.ts';

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

export const inspect: Command = {
  summary: 'print a .klm (or .klp pipeline) manifest (never a secret)',
  usage: 'inspect FILE.klm|FILE.klp [--json]',
  options: { json: { type: 'boolean' } },
  positionals: [1, 1],
  async run({ values, positionals }) {
    const bytes = readInput(positionals[0], 'model file');
    if (isKlp(bytes)) return inspectPipeline(bytes, values.json === true);
    const { manifest: m } = openKlm(bytes);
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
      `backend   ${await backendHere(m.modelFormat)}`,
      `thread    ${threadHere(m.modelFormat)}`,
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

/** Which thread a load of a `format` model runs it on here (`env.spawnWorker`, `env.worker`, `env.workerFormats`). */
function threadHere(format: ModelFormat): string {
  if (!env.spawnWorker) return "the caller's (this platform has no workers)";
  if (env.worker === false) return "the caller's (env.worker = false)";
  if (env.workerFormats && !env.workerFormats.includes(format)) return `the caller's (this platform's worker cannot run ${format})`;
  if (env.worker === 'auto') return `its own worker, which times it at load; one whose run takes at most ${AUTO_IN_THREAD_MS} ms is loaded again on the caller's thread (worker: 'auto'; run --json reports mode and autoRunMs)`;
  return 'its own worker thread (worker mode)';
}

/**
 * What a load of a `format` model picks on this machine, as far as it can be
 * known without the key: the backend named by `env.backend`, or under `auto`
 * the first candidate whose init succeeds. The canary (checked at load, with
 * the key) may still pass it over; `keylock run` prints the backend that ran.
 */
async function backendHere(format: ModelFormat): Promise<string> {
  if (env.backend !== undefined && env.backend !== AUTO) return `${env.backend} (named)`;
  if (env.backend === undefined) return `${format === 'tflite' ? 'tflite' : 'wasm'} (the runtime's default)`;
  const candidates = autoBackends(format);
  const passed: string[] = [];
  for (const name of candidates) {
    try {
      await resolveBackend(name);
      const order = candidates.length > 1 ? `auto: ${candidates.join(', then ')}` : 'auto';
      return `${name} here (${order}${passed.length ? `; ${passed.join('; ')}` : ''}; a canary that does not reproduce on it at load moves on to the next; --backend NAME on run asks for one)`;
    } catch (e) {
      passed.push(`${name} unavailable: ${(e as Error).message}`);
    }
  }
  return `none here (auto: ${passed.join('; ')})`;
}

/** Runs every sample through a ready model; returns output samples. */
export async function runSamples(model: LockedModel, samples: Sample[]): Promise<Sample[]> {
  const out: Sample[] = [];
  for (const s of samples) {
    if (!s.inputs) throw new CliError('the inputs file holds no inputs');
    out.push({ outputs: await model.run(s.inputs), label: s.label });
  }
  return out;
}

/** Moved next to the output comparison; still exported here for callers of the CLI module. */
export { accuracy };

/** `run --expect` found outputs that differ from the golden ones (0 ok, 1 error, 2 usage, 3 halted). */
export const EXIT_MISMATCH = 4;

/** The backends `--backend` takes: the registered ones, and `auto` (the default: the Node target's). */
const BACKEND_NAMES = [...backendNames(), AUTO];

/** How the model is opened: a device keystore, or the vendor's model key. */
export type KeySource = { keystore: string; unlock: UnlockProvider } | { modelKey: string; trust?: string };

/**
 * Where a command's model key comes from: `--keystore F.kls --unlock SPEC` on a device, or
 * `--model-key M.key [--trust V.pub]` for the vendor's own check; one and only one of them.
 */
export function keySourceFlags(values: Record<string, string | boolean | (string | boolean)[] | undefined>, cmdUsage: string): KeySource {
  const usage = `usage: keylock ${cmdUsage}`;
  if (typeof values.keystore === 'string') {
    if (values['model-key'] !== undefined) throw new UsageError('give either --keystore or --model-key, not both', '--keystore for a device, --model-key for the vendor\'s own check');
    if (values.trust !== undefined) throw new UsageError('--trust goes with --model-key; a keystore checks signatures against the vendor keys pinned in it', usage);
    return { keystore: values.keystore, unlock: unlockFlag(values, cmdUsage) };
  }
  if (typeof values['model-key'] === 'string') {
    if (values.unlock !== undefined) throw new UsageError('--unlock goes with --keystore', usage);
    return { modelKey: values['model-key'], trust: values.trust as string | undefined };
  }
  throw new UsageError('give --keystore F.kls --unlock SPEC (on a device) or --model-key M.key (the vendor\'s check)', usage);
}

export const runCmd: Command = {
  summary: 'run a .klm (or a .klp pipeline, its inputs pushed as one stream) on recorded inputs, with a device keystore or (vendor check) the model key; --expect compares with golden outputs',
  usage: 'run M.klm|P.klp (--keystore F.kls --unlock SPEC | --model-key M.key [--trust VENDOR.pub]) --inputs REC.cbor (--out OUT.cbor | --expect GOLDEN.cbor | both) '
    + `[--atol A] [--rtol R] [--json] [--threads N] [--backend ${BACKEND_NAMES.join('|')}] [--record SESSION.cbor [--record-max BYTES]]`,
  options: {
    'model-key': { type: 'string' }, keystore: { type: 'string' }, unlock: { type: 'string' },
    inputs: { type: 'string' }, out: { type: 'string' },
    threads: { type: 'string' }, trust: { type: 'string' }, backend: { type: 'string' },
    expect: { type: 'string' }, atol: { type: 'string' }, rtol: { type: 'string' }, json: { type: 'boolean' },
    record: { type: 'string' }, 'record-max': { type: 'string' },
  },
  positionals: [1, 1],
  async run({ values, positionals }) {
    const usage = `usage: keylock ${this.usage}`;
    // Flags first, files after: a usage mistake is reported as one even when a path is wrong too.
    const inputsPath = req(values, 'inputs', this.usage);
    // req() also refuses an empty value (`--out=`).
    const out = values.out === undefined ? undefined : req(values, 'out', this.usage);
    const expect = values.expect === undefined ? undefined : req(values, 'expect', this.usage);
    // Without either, the outputs would be computed and thrown away.
    if (out === undefined && expect === undefined) throw new UsageError('--out OUT.cbor or --expect GOLDEN.cbor is required (or both)', usage);
    for (const f of ['atol', 'rtol', 'json']) {
      if (values[f] !== undefined && expect === undefined) throw new UsageError(`--${f} goes with --expect GOLDEN.cbor`, usage);
    }
    const atol = numFlag(values, 'atol', 0, this.usage) ?? 0;
    const rtol = numFlag(values, 'rtol', 0, this.usage) ?? 0;
    const threads = intFlag(values, 'threads', 1, this.usage);
    // The device-side recorder, as an app would use it (LoadOptions.record): inputs and outputs of every run.
    const recordPath = values.record === undefined ? undefined : req(values, 'record', this.usage);
    if (values['record-max'] !== undefined && recordPath === undefined) throw new UsageError('--record-max goes with --record SESSION.cbor', usage);
    const recordMax = intFlag(values, 'record-max', 9, this.usage) ?? DEFAULT_RECORD_MAX;
    const backend = values.backend as string | undefined;
    if (backend !== undefined && !BACKEND_NAMES.includes(backend)) throw new UsageError(`--backend: expected one of ${BACKEND_NAMES.join(', ')}, got "${backend}"`, usage);
    const source = keySourceFlags(values, this.usage);

    const klm = readInput(positionals[0], 'model file');
    if (isKlp(klm)) {
      if (recordPath !== undefined) throw new UsageError('--record applies to a .klm; a .klp pipeline is not recorded', usage);
      return runPipelineCmd(klm, source, { threads, backend }, inputsPath, out, expect, { atol, rtol, json: values.json === true });
    }
    const samples = decodeRecorded(readInput(inputsPath, 'inputs file'));
    // Read the golden file before running, so a wrong path fails in a moment, not after the run.
    const want = expect === undefined ? undefined : expectedOutputs(expect);
    const record = recordPath === undefined ? undefined : recordToFile(recordPath, { maxBytes: recordMax });
    const model = await openModel(klm, source, { threads, backend, record });
    if (model.state !== 'ready') {
      const hint = model.state === 'disabled' ? 'only a vendor reinstate token (keylock install T.klt) lifts it' : model.error?.hint;
      throw new CliError(`model is ${model.state}: ${model.error?.message} (${model.error?.code})`, hint, 3);
    }
    let outputs: Sample[];
    try {
      outputs = await runSamples(model, samples);
    } finally {
      await model.release();
    }
    if (out !== undefined) writeOutput(out, encodeRecorded(outputs, 'outputs'));
    const acc = accuracy(outputs);
    const st = model.stats;
    const rec = st.recorded;
    const recorded = rec === undefined ? '' : rec.error ? `; recording stopped: ${rec.error}` : `; recorded ${rec.samples} run(s) into ${recordPath} (${rec.bytes} bytes${rec.dropped ? `, ${rec.dropped} dropped at the --record-max cap` : ''})`;
    const skipped = model.skippedBackends.map((x) => `${x.backend} passed over: ${x.error.message}`);
    const on = `on backend ${model.backend}${skipped.length ? ` (${skipped.join('; ')})` : ''}`;
    const ran = `ran ${outputs.length} sample(s) ${on}: p50 ${st.p50.toFixed(3)} ms, p99 ${st.p99.toFixed(3)} ms${acc === undefined ? '' : `, accuracy ${(acc * 100).toFixed(2)}%`}${out === undefined ? '' : `; wrote ${out}`}${recorded}`;
    if (!want) {
      process.stdout.write(ran + '\n');
      return 0;
    }
    const report = compareOutputs(outputs, want, { atol, rtol });
    if (values.json) {
      const run = { samples: outputs.length, backend: model.backend, mode: st.mode, autoRunMs: st.autoRunMs ?? null, skipped: model.skippedBackends.map((x) => ({ backend: x.backend, error: x.error.code, message: x.error.message })), p50: st.p50, p99: st.p99, accuracy: acc ?? null, out: out ?? null, expect };
      process.stdout.write(JSON.stringify({ run, ...(compareReportJson(report) as object) }) + '\n');
    } else {
      process.stdout.write(`${ran}\ncompared with ${expect}:\n${formatCompareReport(report)}\n`);
    }
    return report.pass ? 0 : EXIT_MISMATCH;
  },
};

/** The golden outputs; a file that is not an outputs file gets a hint at what is. */
function expectedOutputs(path: string): Sample[] {
  const bytes = readInput(path, 'expected outputs file');
  try {
    return decodeRecorded(bytes, 'outputs');
  } catch (e) {
    if (e instanceof FormatError) {
      throw new CliError(`--expect ${path}: ${e.message}`, '--expect takes an outputs file, such as one `keylock run ... --out OUT.cbor` wrote');
    }
    throw e;
  }
}

/** `--record` without `--record-max`: 64 MiB. */
const DEFAULT_RECORD_MAX = 64 << 20;

export async function openModel(klm: Uint8Array, source: KeySource, opts: Pick<LoadOptions, 'threads' | 'backend' | 'record'>): Promise<LockedModel> {
  if ('keystore' in source) {
    const keystore = await Keystore.open(source.keystore, { unlock: source.unlock });
    try {
      return await loadModel(klm, { keystore, ...opts });
    } finally {
      keystore.close();
    }
  }
  const keyFile = decodeModelKey(readInput(source.modelKey, 'model key file'));
  const trust = source.trust !== undefined ? [decodeVendorPub(readInput(source.trust, 'vendor public key'))] : undefined;
  try {
    return await loadModel(klm, { modelKey: keyFile.key, trust, ...opts });
  } finally {
    keyFile.key.fill(0);
  }
}

/** `keylock inspect P.klp`: the pipeline manifest, each stage's wiring and part. */
async function inspectPipeline(bytes: Uint8Array, json: boolean): Promise<void> {
  const { manifest: m, parts } = await openKlp(bytes);
  if (json) {
    process.stdout.write(JSON.stringify(m, (_k, v) => (v instanceof Uint8Array ? hex(v) : typeof v === 'bigint' ? String(v) : ArrayBuffer.isView(v) ? Array.from(v as unknown as ArrayLike<number>) : v), 2) + '\n');
    return;
  }
  const lines = [
    `pipeline  ${m.pipelineId} (${m.stages.length} stage(s); grant and revoke it as one model)`,
    `vendor    ${keyId(m.vendorKey)} (signature verifies against the key it names)`,
    `created   ${new Date(m.created * 1000).toISOString()}`,
    `policy    on invalid key: ${m.policy.onInvalidKey}; max failures: ${m.policy.maxFailures || 'unlimited'}`,
    'stages',
  ];
  m.stages.forEach((s, i) => {
    const part = parts[i] ? openKlm(parts[i]).manifest : undefined;
    const steps = s.steps.map((g) => (g.op === 'affine' ? `affine(*${g.mul} /${g.div} +${g.add})` : g.op === 'window' ? `window(${g.size}x${g.row}, hop ${g.hop}${g.prefill ? `, prefill ${g.prefill}` : ''})` : `reshape[${g.shape.join(',')}]`));
    lines.push(`  ${i + 1}. ${s.name}: ${part ? `${part.modelId} (${part.modelFormat}, ${part.locks.map((l) => l.scheme).join('+') || 'no lock'}, ${s.bytes} bytes)` : 'part missing'}`);
    lines.push(`     ${i ? `"${s.from}" of ${m.stages[i - 1].name}` : 'pipeline input'}${steps.length ? ` -> ${steps.join(' -> ')}` : ''} -> "${s.input}"`);
    const st = Object.entries(s.state ?? {});
    if (st.length) lines.push(`     state ${st.map(([a, b]) => `${a} <- ${b}`).join(', ')}`);
    if (s.constants) lines.push(`     constants ${Object.keys(s.constants).join(', ')}`);
  });
  process.stdout.write(lines.join('\n') + '\n');
}

/**
 * `keylock run P.klp`: the recorded inputs pushed in order through one pipeline stream (a recorded
 * stream of frames); every output the last stage gives is one output sample.
 */
async function runPipelineCmd(
  klp: Uint8Array, source: KeySource, opts: { threads?: number; backend?: string }, inputsPath: string,
  out: string | undefined, expect: string | undefined, cmp: { atol: number; rtol: number; json: boolean },
): Promise<number> {
  const samples = decodeRecorded(readInput(inputsPath, 'inputs file'));
  const want = expect === undefined ? undefined : expectedOutputs(expect);
  let p: LockedPipeline;
  if ('keystore' in source) {
    const keystore = await Keystore.open(source.keystore, { unlock: source.unlock });
    try {
      p = await loadPipeline(klp, { keystore, ...opts });
    } finally {
      keystore.close();
    }
  } else {
    const keyFile = decodeModelKey(readInput(source.modelKey, 'model key file'));
    const trust = source.trust !== undefined ? [decodeVendorPub(readInput(source.trust, 'vendor public key'))] : undefined;
    try {
      p = await loadPipeline(klp, { modelKey: keyFile.key, trust, ...opts });
    } finally {
      keyFile.key.fill(0);
    }
  }
  if (p.state !== 'ready') {
    const hint = p.state === 'disabled' ? 'only a vendor reinstate token (keylock install T.klt) lifts it' : p.error?.hint;
    throw new CliError(`pipeline is ${p.state}${p.failedStage ? ` (stage "${p.failedStage}")` : ''}: ${p.error?.message} (${p.error?.code})`, hint, 3);
  }
  const outputs: Sample[] = [];
  try {
    const s = p.stream();
    for (const x of samples) {
      if (!x.inputs) throw new CliError('the inputs file holds no inputs');
      for (const o of await s.push(x.inputs)) outputs.push({ outputs: o });
    }
  } finally {
    await p.release();
  }
  if (out !== undefined) writeOutput(out, encodeRecorded(outputs, 'outputs'));
  const st = p.stats;
  const backends = [...new Set(Object.values(st.stages).map((x) => x.backend))].join(', ');
  const ran = `pushed ${samples.length} input(s) through pipeline "${p.manifest!.pipelineId}" (${p.manifest!.stages.map((x) => x.name).join(' -> ')}) on backend ${backends}: ${outputs.length} output(s); p50 ${st.p50.toFixed(3)} ms, p99 ${st.p99.toFixed(3)} ms per push${out === undefined ? '' : `; wrote ${out}`}`;
  if (!want) {
    process.stdout.write(ran + '\n');
    return 0;
  }
  const report = compareOutputs(outputs, want, { atol: cmp.atol, rtol: cmp.rtol });
  if (cmp.json) {
    process.stdout.write(JSON.stringify({ run: { pushes: samples.length, outputs: outputs.length, p50: st.p50, p99: st.p99, out: out ?? null, expect }, ...(compareReportJson(report) as object) }) + '\n');
  } else {
    process.stdout.write(`${ran}\ncompared with ${expect}:\n${formatCompareReport(report)}\n`);
  }
  return report.pass ? 0 : EXIT_MISMATCH;
}
