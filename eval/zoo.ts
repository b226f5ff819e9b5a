/**
 * The conformance zoo: every real ONNX and TFLite model the dev dependencies
 * ship (found under node_modules), locked with every scheme and mode, run as a
 * user runs it.
 *
 *   npm run zoo                   all models; writes docs/RESULTS.md (between the
 *                                 zoo markers) and docs/zoo.json
 *   npm run zoo -- --quick        3 ONNX + 2 TFLite models and the custom-op check;
 *                                 writes nothing unless --json is given
 *   npm run zoo -- --json PATH    also writes the rows as JSON to PATH
 *   npm run zoo -- --only a.onnx,b.tflite
 *
 * For each model × lock (eval/zoo/measure.ts): it locks or refuses (the typed
 * error and its message); with the right key, outputs against the plain model
 * under the same backend; a wrong key must halt the load before any backend
 * session exists; without the key, how far the copied file's outputs move.
 * A model its backend cannot run (a custom op, a dynamic TFLite input) is
 * reported as such; its locks are still tried, and a load with the right key
 * must halt with a typed error. Exit code 1 when an invariant fails.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sha256 } from '../keystore/nacl.ts';
import { encodeModel, decodeModel, normalizeModel } from '../models/onnx/codec.ts';
import { tfliteInputs } from '../runtime/tflite-inputs.ts';
import type { TensorMap } from '../runtime/tensor.ts';
import { replaceSection } from './locks.ts';
import { measureCase, operatorsOf, plainSession, runSequence, zooCases, ROUNDING_TOLERANCE, type ZooRow } from './zoo/measure.ts';
import { findModels, zooModels, type IOOf, type ZooModel } from './zoo/models.ts';
import { checkZoo, knownFailureNotes, renderZoo, type ZooModelInfo, type ZooResult } from './zoo/report.ts';

const root = fileURLToPath(new URL('..', import.meta.url));

/**
 * The quick subset: a wake-word head with class scores (advparams applies), one
 * with a sigmoid score (the custom-op check edits it), the stateful VAD; the
 * class head and the convolutional embedding model as TFLite.
 */
export const QUICK_MODELS = ['timer_v0.1.onnx', 'hey_rhasspy_v0.1.onnx', 'silero_vad.onnx', 'timer_v0.1.tflite', 'embedding_model.tflite'];

const inputsOf: IOOf = async (m) => {
  if (m.format === 'tflite') return tfliteInputs(m.bytes).map((i) => ({ name: i.name, dtype: i.dtype, shape: [...i.shape] }));
  const s = await plainSession('onnx', m.bytes);
  try {
    return s.inputs;
  } finally {
    await s.release();
  }
};

/**
 * The custom-op check's model: hey_rhasspy's ONNX file with its first node
 * moved to an operator domain no backend implements, as a model exported with a
 * framework's own op arrives. A real file of the zoo, edited in one node.
 */
function withCustomOp(m: ZooModel): ZooModel {
  const model = decodeModel(normalizeModel(m.bytes));
  const n = model.graph.node[0];
  n.domain = 'com.example.vendor';
  n.op_type = `Vendor${n.op_type}`;
  model.opset_import.push({ domain: 'com.example.vendor', version: 1 });
  const derived = `${m.name} with its first node made com.example.vendor:${n.op_type}`;
  return { ...m, name: `${m.name.replace(/\.onnx$/, '')}+custom-op.onnx`, bytes: encodeModel(model), inputNote: `${m.inputNote}; ${derived}`, derived };
}

/** Runs the zoo. */
export async function runZoo(opts: { quick: boolean; only?: string[]; progress?: (s: string) => void }): Promise<ZooResult> {
  const t0 = performance.now();
  const progress = opts.progress ?? (() => {});
  const only = opts.only ?? (opts.quick ? QUICK_MODELS : undefined);
  const models = await zooModels(root, { count: opts.quick ? 2 : 4, only, inputsOf });
  const rhasspy = models.find((m) => m.name === 'hey_rhasspy_v0.1.onnx');
  if (rhasspy) models.push(withCustomOp(rhasspy));
  const vendorSeed = sha256(new TextEncoder().encode('keylock/eval/zoo/vendor'));
  const infos: ZooModelInfo[] = [];
  const rows: ZooRow[] = [];
  for (const m of models) {
    const ops = operatorsOf(m);
    const info: ZooModelInfo = { name: m.name, path: m.path, format: m.format, bytes: m.bytes.byteLength, operators: ops.ops.length, customOps: ops.custom, inputs: m.inputNote, steps: m.inputs.length, stateful: !!m.state, ...(m.derived ? { derived: m.derived } : {}) };
    infos.push(info);
    progress(`${m.name}: plain`);
    let plain: TensorMap[] | undefined;
    try {
      const s = await plainSession(m.format, m.bytes);
      try {
        plain = await runSequence((x) => s.run(x), m);
      } finally {
        await s.release();
      }
    } catch (e) {
      info.backendFailure = `${(e as Error).name}: ${(e as Error).message.split('\n')[0].slice(0, 240)}`;
    }
    for (const c of zooCases(m.format)) {
      progress(`${m.name}: ${c.label}`);
      rows.push(await measureCase(m, c, plain, vendorSeed));
    }
  }
  const result: ZooResult = { quick: opts.quick, only: !!opts.only, date: new Date().toISOString(), seconds: (performance.now() - t0) / 1000, roundingTolerance: ROUNDING_TOLERANCE, models: infos, rows, checks: [] };
  result.checks = checkZoo(result);
  result.knownFailures = knownFailureNotes(result);
  return result;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const at = (flag: string): string | undefined => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const only = at('--only')?.split(',');
  const known = new Set(['--quick', '--json', '--only']);
  const bad = args.filter((a, i) => a.startsWith('--') ? !known.has(a) : !['--json', '--only'].includes(args[i - 1]));
  if (bad.length || (args.includes('--json') && !at('--json')) || (args.includes('--only') && !only?.[0])) {
    console.error(`error: expected --quick, --json PATH, --only a.onnx,b.tflite; got ${bad.length ? bad.join(' ') : args.join(' ')}`);
    console.error('hint: npm run zoo -- --quick --json /tmp/zoo.json');
    process.exit(2);
  }
  if (only) {
    const names = findModels(root).map((p) => p.split('/').pop()!);
    const missing = only.filter((n) => !names.includes(n));
    if (missing.length) {
      console.error(`error: --only names model(s) not found under node_modules: ${missing.join(', ')}; expected some of ${names.join(', ')}`);
      console.error('hint: give file names, e.g. --only silero_vad.onnx,timer_v0.1.tflite');
      process.exit(2);
    }
  }
  const result = await runZoo({ quick, only, progress: (s) => process.stderr.write(`  zoo: ${s}\n`) });
  const md = renderZoo(result);
  console.log(md);
  const json = at('--json');
  if (json) {
    mkdirSync(dirname(json), { recursive: true });
    writeFileSync(json, JSON.stringify(result, null, 1) + '\n');
  }
  if (!quick && !only) {
    replaceSection(join(root, 'docs/RESULTS.md'), 'zoo', md);
    writeFileSync(join(root, 'docs/zoo.json'), JSON.stringify(result, null, 1) + '\n');
    console.error('updated docs/RESULTS.md (zoo section) and docs/zoo.json');
  }
  const failed = result.checks.filter((c) => !c.ok);
  for (const c of failed) console.error(`FAILED ${c.name}: ${c.detail}`);
  console.error(`zoo: ${result.rows.length} model × lock case(s) over ${result.models.length} model(s) in ${result.seconds.toFixed(0)} s; ${failed.length} invariant(s) failed`);
  process.exitCode = failed.length ? 1 : 0;
}
