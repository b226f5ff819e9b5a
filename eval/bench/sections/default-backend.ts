/**
 * The default Node load against plain onnxruntime-node: per-inference time of a
 * model locked with a load-time lock (sealed, deeplock, signflip fold) and
 * loaded the way a Node app loads it by default (the Node target's `auto`,
 * which picks `native` here, canary checked), against a plain onnxruntime-node
 * `InferenceSession` of the same model with the same session options (cpu, 1
 * intra-op thread, 1 inter-op thread, graph optimization `all`), an app making
 * a `Tensor` for its input on every call as keylock does. Interleaved call by
 * call in one process, in a seeded random order per call (eval/bench/stats.ts
 * `interleaveCallsShuffled`: with a fixed rotation the side after the worker-mode
 * side always paid for the worker thread winding down), medians of per-round
 * ratios. The default (`worker: 'auto'`) picks the thread by the run time it
 * measured at load; the same locked model loaded in-thread (`worker: false`) and
 * in worker mode (`worker: true`) are sides of the same interleaving. Goal (issue
 * "Native speed at the crypto boundary", item 4): keylock / plain ≤ 1.02×.
 *
 *   node --import tsx eval/bench/sections/default-backend.ts [--quick]
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { env, loadModel } from '../../../targets/node/index.ts';
import { lockOnnx } from '../../../models/lock/index.ts';
import type { LockRequest } from '../../../models/lock/index.ts';
import { signKeyPair } from '../../../keystore/nacl.ts';
import { decodeRecorded, type Sample } from '../../../runtime/recorded.ts';
import type { TensorMap } from '../../../runtime/tensor.ts';
import { MODELS, ROOT, seeded } from '../plan.ts';
import { interleaveCallsShuffled, ratios, seededFloats, summarize, timeBatch, type Summary } from '../stats.ts';

export const DEFAULT_BACKEND_GOAL = 1.02;

interface OrtNodeTensor { readonly data: unknown }
interface OrtNode {
  Tensor: new (type: string, data: unknown, dims: readonly number[]) => OrtNodeTensor;
  InferenceSession: { create(m: Uint8Array, o: Record<string, unknown>): Promise<{ run(f: Record<string, OrtNodeTensor>): Promise<Record<string, OrtNodeTensor>>; release(): Promise<void> }> };
}

export interface DefaultBackendRow {
  model: string;
  lock: string;
  /** The backend the default load picked (`model.backend`), and what it passed over. */
  backend: string;
  skipped: string[];
  calls: number;
  rounds: number;
  plainMs: Summary;
  keylockMs: Summary;
  ratio: Summary;
  /** The same locked model loaded in-thread (`worker: false`), a third side of the same interleaving. */
  inThreadMs?: Summary;
  inThreadRatio?: Summary;
  /** Where the default ran the model (`stats.mode`) and the run time at load that chose it (`stats.autoRunMs`). */
  mode?: string;
  autoRunMs?: number;
  /** The same locked model in worker mode (`worker: true`), a fourth side. */
  workerMs?: Summary;
  workerRatio?: Summary;
}

export interface DefaultBackendResults {
  envBackend: string | undefined;
  envWorker?: string;
  ortNode: string;
  threads: number;
  goal: number;
  rows: DefaultBackendRow[];
}

const LOCKS: { label: string; req: Pick<LockRequest, 'schemes' | 'signflipMode'> }[] = [
  { label: 'sealed', req: { schemes: ['sealed'] } },
  { label: 'deeplock', req: { schemes: ['deeplock'] } },
  { label: 'signflip (fold)', req: { schemes: ['signflip'], signflipMode: 'fold' } },
];

function inputOf(modelId: string, digit: Sample): TensorMap {
  const m = MODELS.find((x) => x.id === modelId)!;
  if (m.mnist) return digit.inputs!;
  const size = m.input.dims.reduce((a, b) => a * b, 1);
  return { [m.input.name]: { dtype: 'float32', dims: m.input.dims, data: seededFloats(size, 7) } };
}

export async function measure(quick: boolean): Promise<DefaultBackendResults> {
  const require = createRequire(import.meta.url);
  const ort = (await import('onnxruntime-node')) as unknown as OrtNode & { default?: OrtNode };
  const o: OrtNode = ort.InferenceSession ? ort : ort.default!;
  const ortVersion = (JSON.parse(readFileSync(require.resolve('onnxruntime-node/package.json'), 'utf8')) as { version: string }).version;
  const threads = 1;
  const models = quick ? ['mnist-cnn'] : ['mnist-cnn', 'mnist-mlp', 'embedding_model'];
  const locks = quick ? LOCKS.slice(0, 1) : LOCKS;
  const digits = decodeRecorded(new Uint8Array(readFileSync(`${ROOT}test/fixtures/mnist-test.cbor`)));
  const vendorSeed = seeded('vendor');
  const trust = [signKeyPair(vendorSeed).publicKey];
  const rows: DefaultBackendRow[] = [];
  for (const id of models) {
    const def = MODELS.find((m) => m.id === id)!;
    const bytes = new Uint8Array(readFileSync(`${ROOT}${def.file}`));
    const x = inputOf(id, digits[0]);
    const [name] = Object.keys(x);
    const plain = await o.InferenceSession.create(bytes, { executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: threads, interOpNumThreads: 1 });
    const runPlain = (): Promise<unknown> => plain.run({ [name]: new o.Tensor(x[name].dtype, x[name].data, x[name].dims) });
    for (const l of locks) {
      process.stderr.write(`    default-backend ${id} ${l.label}\n`);
      const canary = def.mnist ? digits.slice(0, 2) : [{ inputs: x }];
      const r = await lockOnnx(bytes, { ...l.req, vendorSeed, modelKey: seeded(`key/default-backend/${id}/${l.label}`), modelId: `bench-default-${id}`, canary });
      const m = await loadModel(r.klm, { modelKey: r.modelKey, trust }); // no backend: the Node default
      if (m.state !== 'ready') throw m.error!;
      const inThread = await loadModel(r.klm, { modelKey: r.modelKey, trust, worker: false });
      if (inThread.state !== 'ready') throw inThread.error!;
      const inWorker = await loadModel(r.klm, { modelKey: r.modelKey, trust, worker: true });
      if (inWorker.state !== 'ready') throw inWorker.error!;
      const runKeylock = (): Promise<unknown> => m.run(x);
      const runInThread = (): Promise<unknown> => inThread.run(x);
      const runWorker = (): Promise<unknown> => inWorker.run(x);
      const sides = [runPlain, runKeylock, runInThread, runWorker];
      for (let i = 0; i < 200; i++) for (const f of sides) await f();
      const per = await timeBatch(runPlain, 5);
      const rounds = quick ? 7 : per > 0.2 ? 11 : 21;
      const calls = quick ? 200 : Math.max(3, Math.min(1000, Math.round(100 / per)));
      const t = await interleaveCallsShuffled(sides, rounds, calls);
      rows.push({
        model: id, lock: l.label, backend: m.backend ?? '?', skipped: m.skippedBackends.map((s) => `${s.backend}: ${s.error.message}`),
        calls, rounds, plainMs: summarize(t.sides[0]), keylockMs: summarize(t.sides[1]), ratio: summarize(ratios(t.sides[1], t.sides[0])),
        inThreadMs: summarize(t.sides[2]), inThreadRatio: summarize(ratios(t.sides[2], t.sides[0])),
        mode: m.stats.mode, autoRunMs: m.stats.autoRunMs,
        workerMs: summarize(t.sides[3]), workerRatio: summarize(ratios(t.sides[3], t.sides[0])),
      });
      await m.release();
      await inThread.release();
      await inWorker.release();
    }
    await plain.release();
  }
  return { envBackend: env.backend, envWorker: env.worker === undefined ? undefined : String(env.worker), ortNode: ortVersion, threads, goal: DEFAULT_BACKEND_GOAL, rows };
}

const ms = (s: Summary): string => (s.median < 0.1 ? s.median.toFixed(4) : s.median.toFixed(3));

export function render(r: DefaultBackendResults): string[] {
  const pass = r.rows.filter((x) => x.ratio.median <= r.goal).length;
  const worst = r.rows.reduce<DefaultBackendRow | undefined>((w, x) => (!w || x.ratio.median > w.ratio.median ? x : w), undefined);
  const out = [
    `Default Node load (\`env.backend = '${r.envBackend}'\`, \`env.worker = '${r.envWorker ?? 'worker'}'\`, set by the Node target) of a locked model, canary checked, against a plain onnxruntime-node ${r.ortNode} \`InferenceSession\` of the same model (cpu, ${r.threads} intra-op thread, graph optimization \`all\`, a new \`Tensor\` per call), interleaved call by call in one process in a seeded random order per call; medians of per-round ratios. The default loads the model in a worker, which times its run: at most 0.1 ms and the model runs on the caller's thread (as the plain session does), else it stays on its worker thread ("mode" and "run at load" say which and why). The same locked model loaded in-thread (\`worker: false\`) and in worker mode (\`worker: true\`) are sides of the same interleaving. Goal ≤ ${r.goal}× for the default: ${pass} of ${r.rows.length} rows${worst ? `, worst ${worst.ratio.median.toFixed(3)}× (${worst.model}, ${worst.lock})` : ''}.`,
    '',
    '| model | lock | backend picked | default: mode (run at load, ms) | plain ORT-node ms/inference | keylock default ms/inference | default / plain (median) | p25–p75 (min, max) | ≤ goal | in-thread ms | in-thread / plain | worker ms | worker / plain |',
    '| --- | --- | --- | --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |',
  ];
  for (const x of r.rows) {
    out.push(`| ${x.model} | ${x.lock} | ${x.backend}${x.skipped.length ? ` (passed over ${x.skipped.join('; ')})` : ''} | ${x.mode ?? '–'}${x.autoRunMs !== undefined ? ` (${x.autoRunMs.toFixed(3)})` : ''} | ${ms(x.plainMs)} | ${ms(x.keylockMs)} | ${x.ratio.median.toFixed(3)}× | ${x.ratio.p25.toFixed(3)}–${x.ratio.p75.toFixed(3)} (${x.ratio.min.toFixed(3)}, ${x.ratio.max.toFixed(3)}) | ${x.ratio.median <= r.goal ? 'yes' : '**no**'} | ${x.inThreadMs ? ms(x.inThreadMs) : '–'} | ${x.inThreadRatio ? `${x.inThreadRatio.median.toFixed(3)}×` : '–'} | ${x.workerMs ? ms(x.workerMs) : '–'} | ${x.workerRatio ? `${x.workerRatio.median.toFixed(3)}×` : '–'} |`);
  }
  return out;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await measure(process.argv.includes('--quick'));
  process.stdout.write(render(r).join('\n') + '\n');
  process.exit(0);
}
