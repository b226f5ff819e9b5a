/**
 * Vendor side of the `.klp` pipeline file (layout in runtime/pipeline-file.ts
 * and docs/SPEC.md, "Pipeline"): every stage's model is locked as an ordinary
 * `.klm` with model id `<pipelineId>/<stage>` under one model key, and a signed
 * manifest lists the parts' digests and how the stages are wired. A device
 * needs one grant, for the pipeline id.
 */
import { decodeCbor, encodeCbor, Fields } from '../keystore/cbor.ts';
import { sealEnvelope } from '../keystore/envelope.ts';
import { randomBytes, sha256, signKeyPair } from '../keystore/nacl.ts';
import { keyCheckValue } from '../runtime/keys/derive.ts';
import { openKlm, type Policy, type Scheme } from '../runtime/klm.ts';
import { KLP_FORMAT, KLP_VERSION, MAX_STAGES, parseGlueStep, parsePipelineManifest, partModelId } from '../runtime/pipeline-file.ts';
import { glue, loadPipeline } from '../runtime/pipeline.ts';
import { defaultBackend } from '../runtime/backends.ts';
import { loadModel } from '../runtime/load.ts';
import type { Sample } from '../runtime/recorded.ts';
import { createStream, inferState } from '../runtime/stream.ts';
import { bytesOf, type TensorData, type TensorMap } from '../runtime/tensor.ts';
import { lockModel } from './lock/index.ts';
import { LockOptionError, type LockOptions } from './lock/types.ts';

/**
 * A glue step as a vendor writes it (defaults: affine mul 1, div 1, add 0;
 * window row 1, prefill 0); see `GlueStep` in runtime/pipeline-file.ts.
 */
export type GlueStepSpec =
  | { op: 'affine'; mul?: number; div?: number; add?: number }
  | { op: 'window'; size: number; hop: number; row?: number; prefill?: number }
  | { op: 'reshape'; shape: number[] };

/** One stage to lock: the plain model and how the pipeline feeds it. */
export interface PipelineStageRequest {
  /** Unique in the pipeline (letters, digits, `_`, `.`, `-`). */
  name: string;
  /** The plain ONNX or TFLite model. */
  model: Uint8Array;
  /** The input the pipeline feeds; default the model's only input that is not state or constant. */
  input?: string;
  /** The previous stage's output feeding `input`; default its only output that is not state. Not on the first stage. */
  from?: string;
  steps?: GlueStepSpec[];
  /** State input -> output; default inferred from the names (runtime/stream.ts `inferState`). */
  state?: Record<string, string>;
  /** Inputs held fixed. */
  constants?: TensorMap;
  /** Recorded inputs of this stage whose outputs become its part's canary. */
  canary?: Sample[];
}

/** Everything `lockPipeline` needs. */
export interface PipelineRequest extends LockOptions {
  /** The id the device's grant names; default `pipeline-<random>`. */
  pipelineId?: string;
  schemes: Scheme[];
  vendorSeed: Uint8Array;
  stages: PipelineStageRequest[];
  policy?: Policy;
  /** A given model key; fresh random bytes otherwise. */
  modelKey?: Uint8Array;
  /**
   * Pipeline inputs (each a map of the first stage's fed input), pushed in order: the inputs each
   * stage receives from them (after its glue, with its state at that point) become its part's canary,
   * the first `canaryCount` of them, unless the stage has a `canary` of its own. A stage that receives
   * none (a window that never fills) gets no canary, and the report says so.
   */
  canary?: TensorMap[];
  /** Canary samples per stage; default 2. */
  canaryCount?: number;
}

/** The outcome of `lockPipeline`. */
export interface PipelineResult {
  klp: Uint8Array;
  modelKey: Uint8Array;
  pipelineId: string;
  /** What each part's lock did, prefixed by its stage. */
  report: string[];
}

const DEFAULT_POLICY: Policy = { onInvalidKey: 'halt', maxFailures: 0 };

function only(names: string[], what: string, stage: string, flag: string): string {
  if (names.length !== 1) throw new LockOptionError(flag, `stages[].${flag}`, `the ${what} to wire`, undefined, `pipeline stage "${stage}": give "${flag}", the ${what} to wire (candidates: ${names.map((n) => `"${n}"`).join(', ') || 'none'})`);
  return names[0];
}

/**
 * Locks every stage under one model key and packs them with the signed
 * pipeline manifest; then loads the result once with the key, so that wiring
 * that does not fit the parts fails here, not on a device. Throws
 * LockOptionError for a request that does not fit, and what `lockModel` throws.
 */
export async function lockPipeline(req: PipelineRequest): Promise<PipelineResult> {
  const { stages, vendorSeed, schemes } = req;
  if (!stages.length || stages.length > MAX_STAGES) throw new LockOptionError('stages', '--pipeline', `1..${MAX_STAGES} stages`, String(stages.length), `a pipeline has 1..${MAX_STAGES} stages, got ${stages.length}`);
  const pipelineId = req.pipelineId ?? `pipeline-${Array.from(randomBytes(6), (b) => b.toString(16).padStart(2, '0')).join('')}`;
  const modelKey = req.modelKey ? new Uint8Array(req.modelKey) : randomBytes(32);
  const parts: Uint8Array[] = [];
  const report: string[] = [];
  const signed: Record<string, unknown>[] = [];
  let prevOutputs: { name: string }[] = [];
  let prevState: Record<string, string> = {};
  const count = req.canaryCount ?? 2;
  if (!Number.isSafeInteger(count) || count < 1) throw new LockOptionError('canaryCount', '--canary-count', 'an integer >= 1', String(count), `canary samples per stage must be an integer >= 1, got ${count}`);
  // What reaches each stage's input from the pipeline canary: the first stage's fed input, then the previous stage's outputs.
  let fed: TensorData[] | undefined = req.canary?.map((m, k) => {
    const v = Object.values(m);
    if (v.length !== 1) throw new LockOptionError('canary', '--canary', 'one input per sample (the first stage\'s fed input)', Object.keys(m).join(','), `pipeline canary sample ${k}: expected one input, got ${Object.keys(m).length}`);
    return v[0];
  });
  let prevRuns: TensorMap[] | undefined;
  for (const [i, s] of stages.entries()) {
    let from: string | undefined;
    if (i > 0) {
      const fedBy = new Set(Object.values(prevState));
      from = s.from ?? only(prevOutputs.map((x) => x.name).filter((n) => !fedBy.has(n)), 'output of the previous stage', s.name, 'from');
      fed = prevRuns?.map((o) => o[from!]);
    } else if (s.from !== undefined) {
      throw new LockOptionError('from', 'stages[0].from', 'no "from" on the first stage', s.from, `pipeline stage "${s.name}" is the first: it takes the pipeline's input, not another stage's output ("from")`);
    }
    const lockReq = { ...req, schemes, vendorSeed, modelId: partModelId(pipelineId, s.name), modelKey };
    let r = await lockModel(s.model, { ...lockReq, canary: s.canary });
    const { inputs, outputs, modelFormat } = openKlm(r.klm).manifest;
    const constants = s.constants ?? {};
    const state = s.state ?? inferState(inputs.filter((x) => !Object.hasOwn(constants, x.name)), outputs);
    const input = s.input ?? only(inputs.map((x) => x.name).filter((n) => !Object.hasOwn(state, n) && !Object.hasOwn(constants, n)), 'input', s.name, 'input');
    // Checked as the device checks them, defaults filled in: these are what get signed.
    const steps = (s.steps ?? []).map((g, j) => parseGlueStep(g, `stages[${i}].steps[${j}]`));
    prevRuns = undefined;
    if (fed) {
      // The part run as a device runs it (its glue, its state), on the recording backend.
      const m = await loadModel(r.klm, { modelKey, backend: defaultBackend(modelFormat) });
      if (m.state !== 'ready') throw m.error!;
      const samples: Sample[] = [];
      prevRuns = [];
      try {
        const st = createStream(m, { state, constants });
        const g = glue(steps);
        for (const t of fed) {
          for (const x of g.apply(t)) {
            if (samples.length < count) samples.push({ inputs: { [input]: x, ...constants, ...st.state } });
            prevRuns.push(await st.push({ [input]: x }));
          }
        }
      } finally {
        await m.release();
      }
      if (!s.canary && samples.length) {
        r.modelKey.fill(0);
        r = await lockModel(s.model, { ...lockReq, canary: samples });
      }
      if (!s.canary) report.push(`${s.name}: canary: ${samples.length ? `${samples.length} sample(s) of what the pipeline canary feeds it` : 'none (the pipeline canary feeds this stage nothing)'}`);
    }
    report.push(...r.report.map((l) => `${s.name}: ${l}`));
    const stage: Record<string, unknown> = {
      name: s.name, digest: sha256(r.klm), bytes: r.klm.byteLength, input,
      steps, state,
    };
    if (from !== undefined) stage.from = from;
    if (Object.keys(constants).length) {
      stage.constants = Object.fromEntries(Object.entries(constants).map(([k, t]) => [k, { dtype: t.dtype, dims: t.dims, data: new Uint8Array(bytesOf(t.data)) }]));
    }
    signed.push(stage);
    parts.push(r.klm);
    prevOutputs = outputs;
    prevState = state;
    r.modelKey.fill(0);
  }
  const { publicKey, secretKey } = signKeyPair(vendorSeed);
  let klp: Uint8Array;
  try {
    const body = {
      pipelineId, created: Math.floor(Date.now() / 1000), vendorKey: publicKey, kcv: keyCheckValue(modelKey),
      policy: req.policy ?? DEFAULT_POLICY, stages: signed,
    };
    // The device's parser checks every field: what it would refuse is refused here.
    parsePipelineManifest(Fields.of('pipeline', decodeCbor(encodeCbor(body), 'pipeline', 1 << 20)));
    klp = sealEnvelope(KLP_FORMAT, KLP_VERSION, body, secretKey, { parts });
  } finally {
    secretKey.fill(0);
  }
  const check = await loadPipeline(klp, { modelKey, trust: [publicKey] });
  const failed = check.state === 'ready' ? undefined : check.error;
  await check.release();
  if (failed) throw failed;
  return { klp, modelKey, pipelineId, report };
}

/** A pipeline spec file as `keylock lock --pipeline` reads it (docs/SPEC.md, "Pipeline spec"). */
export interface PipelineSpecFile {
  pipelineId?: string;
  stages: (Omit<PipelineStageRequest, 'model' | 'constants' | 'canary'> & {
    /** Path of the plain model, relative to the spec file. */
    model: string;
    constants?: Record<string, { dtype: string; dims: number[]; data: (number | string)[] }>;
  })[];
}

const CONST_ARRAYS: Record<string, (xs: (number | string)[]) => TensorMap[string]['data']> = {
  float32: (x) => Float32Array.from(x.map(Number)), float64: (x) => Float64Array.from(x.map(Number)),
  int32: (x) => Int32Array.from(x.map(Number)), int64: (x) => BigInt64Array.from(x.map((v) => BigInt(v))),
  uint8: (x) => Uint8Array.from(x.map(Number)), int8: (x) => Int8Array.from(x.map(Number)),
};

/**
 * The stages of a pipeline spec (JSON, as parsed), each model read by `read`
 * (a path relative to the spec). Throws LockOptionError naming the field at fault.
 */
export function pipelineFromSpec(spec: unknown, read: (path: string) => Uint8Array): Pick<PipelineRequest, 'pipelineId' | 'stages'> {
  const bad = (field: string, expected: string, got: unknown): never => {
    throw new LockOptionError(field, '--pipeline', expected, got === undefined ? undefined : JSON.stringify(got), `pipeline spec: ${field}: expected ${expected}, got ${got === undefined ? 'nothing' : JSON.stringify(got)}`);
  };
  if (!spec || typeof spec !== 'object' || Array.isArray(spec)) bad('(top level)', 'an object with "stages"', spec);
  const s = spec as PipelineSpecFile;
  if (s.pipelineId !== undefined && (typeof s.pipelineId !== 'string' || !s.pipelineId)) bad('pipelineId', 'a non-empty string', s.pipelineId);
  if (!Array.isArray(s.stages) || !s.stages.length) bad('stages', 'a non-empty array of stages', s.stages);
  const stages = s.stages.map((st, i): PipelineStageRequest => {
    const at = `stages[${i}]`;
    if (!st || typeof st !== 'object') bad(at, 'an object', st);
    if (typeof st.name !== 'string') bad(`${at}.name`, 'a string', st.name);
    if (typeof st.model !== 'string') bad(`${at}.model`, 'the path of the plain model', st.model);
    if (st.steps !== undefined && !Array.isArray(st.steps)) bad(`${at}.steps`, 'an array of glue steps', st.steps);
    let constants: TensorMap | undefined;
    if (st.constants !== undefined) {
      constants = {};
      for (const [k, c] of Object.entries(st.constants)) {
        const make = CONST_ARRAYS[c?.dtype];
        if (!make || !Array.isArray(c.dims) || !Array.isArray(c.data)) bad(`${at}.constants.${k}`, `{ dtype: ${Object.keys(CONST_ARRAYS).join('|')}, dims: [...], data: [...] }`, c);
        constants[k] = { dtype: c.dtype as TensorMap[string]['dtype'], dims: c.dims, data: make(c.data) };
      }
    }
    let model: Uint8Array;
    try {
      model = read(st.model);
    } catch (e) {
      return bad(`${at}.model`, 'a readable model file', `${st.model} (${(e as Error).message})`);
    }
    return { name: st.name, model, input: st.input, from: st.from, steps: st.steps, state: st.state, constants };
  });
  return { pipelineId: s.pipelineId, stages };
}
