/**
 * The lock pipeline: model bytes + schemes + vendor key -> a signed `.klm` and a
 * fresh model key. The lockers come from one registry (models/lock/registry.ts)
 * and run in the order of their phases, ties in the order asked. On ONNX,
 * graph-stage locks run on the decoded model, the model is encoded once, then
 * byte-stage locks run on the final bytes; on TFLite every lock edits the file
 * in place (models/lock/types.ts explains the stages).
 */
import { randomBytes } from '../../keystore/nacl.ts';
import { UnsupportedModelError, WeakKeyError } from '../../keystore/errors.ts';
import { keyCheckValue } from '../../runtime/keys/derive.ts';
import { SCHEMES, type Canary, type IOSpec, type LockEntry, type ModelFormat, type Policy, type Scheme } from '../../runtime/klm.ts';
import { hex } from '../../keystore/hex.ts';
import { loadModel } from '../../runtime/load.ts';
import { defaultBackend } from '../../runtime/backends.ts';
import { encodeRecorded, type Sample } from '../../runtime/recorded.ts';
import { packKlm, type ManifestDraft } from '../klm.ts';
import { decodeModel, encodeModel, normalizeModel } from '../onnx/codec.ts';
import { dataTypeName } from '../onnx/dtypes.ts';
import { listTensors, subgraphScope, type InitializerInfo } from '../onnx/layout.ts';
import { makeAttribute } from '../onnx/attributes.ts';
import { makeTensor } from '../onnx/builder.ts';
import { uniqueName } from '../onnx/graph.ts';
import type { GraphProto, OnnxModel, ValueInfoProto } from '../onnx/types.ts';
import { isTflite, readTflite, type TfliteTensor } from '../tflite/codec.ts';
import { listWeights } from '../tflite/weights.ts';
import { checkStaticInputs } from '../../runtime/tflite-inputs.ts';
import { LOCKERS, ORDER_REASON } from './registry.ts';
import { LockOptionError, type FinishEntry, type LockContext, type LockerBase, type LockOptions, type TfliteLockContext } from './types.ts';

export type { LockOptions } from './types.ts';
export { LockOptionError } from './types.ts';

/** Everything `lockModel` needs besides the model bytes. */
export interface LockRequest extends LockOptions {
  schemes: Scheme[];
  /** Ed25519 seed of the vendor key that signs the `.klm`. */
  vendorSeed: Uint8Array;
  /** Defaults to `model-<random>`; must be unique per locked model. */
  modelId?: string;
  /** Recorded inputs whose plain outputs become the canary. */
  canary?: Sample[];
  policy?: Policy;
  /** A given model key (re-locking under a chosen key); fresh random bytes otherwise. */
  modelKey?: Uint8Array;
}

/** The outcome of a lock. */
export interface LockResult {
  klm: Uint8Array;
  modelKey: Uint8Array;
  modelId: string;
  /** Human-readable lines: what each lock did and any exactness caveat. */
  report: string[];
  /** The locked model bytes (also inside `klm`). */
  locked: Uint8Array;
}

/** Parses `signflip+sealed` into schemes, checking names and duplicates (LockOptionError otherwise). */
export function parseSchemes(spec: string): Scheme[] {
  const parts = spec.split('+').map((s) => s.trim()).filter(Boolean);
  const expected = `schemes from ${SCHEMES.join(', ')} joined by "+", e.g. "signflip+sealed"`;
  if (!parts.length) throw new LockOptionError('schemes', '--scheme', expected, spec, 'no scheme given; expected e.g. "signflip+sealed"');
  for (const p of parts) {
    if (!SCHEMES.includes(p as Scheme)) throw new LockOptionError('schemes', '--scheme', expected, p, `unknown scheme "${p}"; known: ${SCHEMES.join(', ')}`);
  }
  if (new Set(parts).size !== parts.length) throw new LockOptionError('schemes', '--scheme', 'each scheme at most once', spec, `a scheme appears twice in "${spec}"`);
  return parts as Scheme[];
}

function ioSpec(v: ValueInfoProto): IOSpec {
  const t = v.type?.tensor_type;
  const dtype = t ? dataTypeName(t.elem_type) : 'unknown';
  const shape = (t?.shape?.dim ?? []).map((d, i) => {
    if (d.dim_value !== undefined && d.dim_value !== null && Number(d.dim_value) > 0) return Number(d.dim_value);
    return d.dim_param || `d${i}`;
  });
  return { name: v.name ?? '', dtype, shape };
}

/** User-facing graph inputs (initializers and key inputs excluded) and outputs. */
function modelIO(model: OnnxModel, keyInputs: ReadonlySet<string>): { inputs: IOSpec[]; outputs: IOSpec[] } {
  const inits = new Set(model.graph.initializer.map((t) => t.name));
  return {
    inputs: model.graph.input.filter((v) => !inits.has(v.name ?? '') && !keyInputs.has(v.name ?? '')).map(ioSpec),
    outputs: model.graph.output.map(ioSpec),
  };
}

/**
 * Moves tensors held in `Constant` nodes into initializers of the same graph
 * (the main graph or an If/Loop/Scan body, at any depth; same name, same
 * scope), so that every weight is an initializer: a lock that follows the
 * graph (signflip) finds it, and every lock reaches its byte range.
 */
function constantsToInitializers(graph: GraphProto): number {
  let moved = 0;
  const keep = [];
  for (const n of graph.node) {
    for (const a of n.attribute) {
      if (a.g) moved += constantsToInitializers(a.g);
      for (const b of a.graphs) moved += constantsToInitializers(b);
    }
    const value = n.op_type === 'Constant' && (n.domain ?? '') === '' && n.attribute.length === 1 && n.attribute[0].name === 'value' ? n.attribute[0].t : undefined;
    // A Constant that is itself a graph output stays: an output must be computed by a node. Its tensor still
    // has a byte range (listTensors lists attribute tensors), so byte locks reach it all the same.
    if (value && n.output.length === 1 && !graph.output.some((o) => o.name === n.output[0])) {
      graph.initializer.push({ ...value, name: n.output[0] });
      moved++;
    } else {
      keep.push(n);
    }
  }
  graph.node = keep;
  return moved;
}

/**
 * Rewrites `Constant` nodes that hold floats as `value_float` / `value_floats`
 * (proto2 repeated floats, one tag per element: no contiguous byte range) into
 * the same values as a float32 `value` tensor, in every graph at any depth, so
 * each is one byte range a lock can reach. Integer constants (`value_int(s)`)
 * are shapes and axes, not weights, and stay as they are.
 */
function floatConstantsToTensors(g: GraphProto): number {
  let n = 0;
  for (const node of g.node) {
    for (const a of node.attribute) {
      if (a.g) n += floatConstantsToTensors(a.g);
      for (const b of a.graphs) n += floatConstantsToTensors(b);
    }
    if (node.op_type !== 'Constant' || (node.domain ?? '') !== '' || node.attribute.length !== 1) continue;
    const a = node.attribute[0]!;
    if (a.name !== 'value_float' && a.name !== 'value_floats') continue;
    const values = a.name === 'value_float' ? [a.f ?? 0] : a.floats;
    node.attribute[0] = makeAttribute('value', makeTensor('', 'float32', a.name === 'value_float' ? [] : [values.length], Float32Array.from(values)));
    n++;
  }
  return n;
}

/**
 * Names every unnamed node that holds a body (If, Loop, Scan): a body's tensors
 * are named after the node that holds it, `#<index>` when it has no name, and
 * a lock that adds nodes to a graph (signflip's key multiplies) would shift
 * that index between the plan and the final file.
 */
function nameBodyHolders(model: OnnxModel): number {
  let named = 0;
  const visit = (g: GraphProto): void => {
    for (const n of g.node) {
      const bodies = n.attribute.flatMap((a) => [...(a.g ? [a.g] : []), ...a.graphs]);
      if (!bodies.length) continue;
      if (!n.name) { n.name = uniqueName(model, `keylock_${n.op_type ?? 'node'}`); named++; }
      bodies.forEach(visit);
    }
  };
  visit(model.graph);
  return named;
}

/**
 * `listTensors` names of the int32 initializers the graph reads as learned
 * biases: input 0 of a DequantizeLinear (QDQ biases) and input 8 of a
 * QLinearConv, in any graph; each name resolves to the innermost graph that
 * defines it. Other integer tensors (shapes, axes, indices) stay plain.
 */
function int32Biases(model: OnnxModel): Set<string> {
  const out = new Set<string>();
  const visit = (g: GraphProto, prefix: string, outer: { g: GraphProto; prefix: string }[]): void => {
    const scopes = [...outer, { g, prefix }];
    const resolve = (name: string | undefined): void => {
      if (!name) return;
      for (let k = scopes.length - 1; k >= 0; k--) {
        const s = scopes[k]!;
        const t = s.g.initializer.find((x) => x.name === name);
        if (t) { if (t.data_type === 6) out.add(`${s.prefix}${name}`); return; }
        if (s.g.node.some((n) => n.output.includes(name)) || s.g.input.some((v) => v.name === name)) return;
      }
    };
    g.node.forEach((n, i) => {
      if ((n.domain ?? '') === '' && n.op_type === 'DequantizeLinear') resolve(n.input[0]);
      if ((n.domain ?? '') === '' && n.op_type === 'QLinearConv') resolve(n.input[8]);
      for (const a of n.attribute) {
        if (a.g) visit(a.g, subgraphScope(prefix, n.name, i, a.name ?? ''), scopes);
        a.graphs.forEach((b, j) => visit(b, subgraphScope(prefix, n.name, i, a.name ?? '', j), scopes));
      }
    });
  };
  visit(model.graph, '', []);
  return out;
}

/**
 * The canary's expected outputs are what the locked model gives with the right
 * key, through the same runtime a device uses: a device that reproduces them
 * has the right key, the right bytes and a working backend.
 */
async function canaryOf(klm: Uint8Array, modelKey: Uint8Array, canary: Sample[], format: ModelFormat): Promise<Canary> {
  // Always the recording backend (the one a device checks bit for bit), whatever `env.backend`
  // says in this process (`auto` under the Node target and the CLI would pick native).
  const m = await loadModel(klm, { modelKey, backend: defaultBackend(format) });
  if (m.state !== 'ready') throw m.error!;
  try {
    const outs: Sample[] = [];
    for (const c of canary) outs.push({ outputs: await m.run(c.inputs ?? {}) });
    return { inputs: encodeRecorded(canary, 'inputs'), outputs: encodeRecorded(outs, 'outputs') };
  } finally {
    await m.release();
  }
}

/** Lockers in the order they run: by phase, ties in the order asked (the sort is stable). */
function inPhaseOrder<L extends LockerBase>(lockers: readonly L[]): L[] {
  return [...lockers].sort((a, b) => a.phase - b.phase);
}

/** A locked model before its key is checked and its `.klm` is packed. */
interface Locked {
  format: ModelFormat;
  /** The locked model bytes. */
  locked: Uint8Array;
  inputs: IOSpec[];
  outputs: IOSpec[];
  /** In the order they were applied. */
  locks: LockEntry[];
  report: string[];
}

/** Fresh keys drawn at most, when a drawn key locks nothing (`LockerBase.trivial`); each retry has odds of at most 1/2. */
const MAX_KEY_DRAWS = 32;

/**
 * The part every format shares: the model key (given, or drawn and redrawn while
 * it would lock nothing), the manifest, the signature and the canary.
 * @throws WeakKeyError when a given key leaves the model unchanged.
 */
async function lockWith(req: LockRequest, lockUnder: (modelKey: Uint8Array, modelId: string) => Promise<Locked>): Promise<LockResult> {
  if (req.modelKey && req.modelKey.byteLength !== 32) throw new RangeError(`model key must be 32 bytes, got ${req.modelKey.byteLength}`);
  const modelId = req.modelId ?? `model-${hex(randomBytes(8))}`;
  const redrawn: string[] = [];
  for (;;) {
    const modelKey = req.modelKey ? new Uint8Array(req.modelKey) : randomBytes(32);
    const l = await lockUnder(modelKey, modelId);
    const lockers: Readonly<Record<Scheme, LockerBase>> = LOCKERS[l.format];
    const weak = l.locks.map((e) => lockers[e.scheme].trivial?.(modelKey, e)).find((w) => w !== undefined);
    if (weak !== undefined) {
      modelKey.fill(0);
      if (req.modelKey) throw new WeakKeyError(`${weak}: locked with this model key, the model would equal the plain one; use another key`);
      redrawn.push(weak);
      if (redrawn.length === MAX_KEY_DRAWS) throw new WeakKeyError(`${weak}, and so did ${MAX_KEY_DRAWS - 1} other fresh model keys before it`);
      continue;
    }
    const report = [...(redrawn.length ? [`model key: drew ${redrawn.length + 1} keys; ${redrawn.length} would have locked nothing (${redrawn[0]})`] : []), ...l.report];
    const draft: ManifestDraft = {
      modelId,
      modelFormat: l.format,
      created: Math.floor(Date.now() / 1000),
      inputs: l.inputs,
      outputs: l.outputs,
      locks: l.locks,
      kcv: keyCheckValue(modelKey),
      policy: req.policy ?? { onInvalidKey: 'halt', maxFailures: 0 },
    };
    let klm = packKlm(draft, l.locked, req.vendorSeed);
    if (req.canary?.length) {
      draft.canary = await canaryOf(klm, modelKey, req.canary, l.format);
      klm = packKlm(draft, l.locked, req.vendorSeed);
      report.push(`canary: ${req.canary.length} recorded sample(s) must reproduce bit for bit on the device`);
    }
    return { klm, modelKey, modelId, report, locked: l.locked };
  }
}

/**
 * Locks an ONNX model. Throws UnsupportedModelError when a scheme cannot apply,
 * WeakKeyError when a given model key would lock nothing.
 */
export function lockOnnx(modelBytes: Uint8Array, req: LockRequest): Promise<LockResult> {
  return lockWith(req, (modelKey, modelId) => lockOnnxUnder(modelBytes, req, modelKey, modelId));
}

async function lockOnnxUnder(modelBytes: Uint8Array, req: LockRequest, modelKey: Uint8Array, modelId: string): Promise<Locked> {
  const report: string[] = [];
  const ctx: LockContext = { modelId, modelKey, opts: req, schemes: req.schemes, report: (l) => report.push(l) };
  const model = decodeModel(normalizeModel(modelBytes));
  const floats = floatConstantsToTensors(model.graph);
  if (floats) report.push(`stored ${floats} Constant value_float(s) attribute(s) as float32 tensors so locks can reach them`);
  const named = nameBodyHolders(model);
  if (named) report.push(`named ${named} unnamed If/Loop/Scan node(s), whose bodies' tensors are named after them`);
  const moved = constantsToInitializers(model.graph);
  if (moved) report.push(`moved ${moved} Constant node tensor(s) into initializers of their graph so locks can reach them`);
  const plainInputs = new Set(modelIO(model, new Set()).inputs.map((i) => i.name));

  const lockers = req.schemes.map((scheme) => LOCKERS.onnx[scheme]);
  const graphStage = inPhaseOrder(lockers.filter((l) => l.graph));
  const byteStage = inPhaseOrder(lockers.filter((l) => l.bytes));
  const finishes: FinishEntry[] = [];
  for (const l of graphStage) finishes.push(await l.graph!(model, ctx));
  for (const l of byteStage) l.prepareGraph?.(model, ctx);
  const locked = encodeModel(model);
  // Every tensor: main-graph initializers, those of If/Loop/Scan bodies, Constant values (listTensors names them).
  const inits = listTensors(locked);
  const biases = int32Biases(model);
  for (const t of inits) if (biases.has(t.name)) t.learnedInteger = true;
  const byName = new Map<string, InitializerInfo>(inits.map((i) => [i.name, i]));
  // Graph-stage entries are finished before any byte-stage lock changes the bytes they check.
  const locks: LockEntry[] = finishes.map((finish) => finish(byName, locked));
  for (const l of byteStage) locks.push(l.bytes!(locked, inits, ctx));
  // The manifest lists locks in the order they were applied (graph stage, then
  // byte stage), because the runtime undoes them in reverse: listed as asked,
  // "sealed+advparams" would restore advparams' plaintext originals into
  // ciphertext before decrypting it.
  if (locks.some((e, i) => e.scheme !== req.schemes[i])) report.push(`order: applied ${locks.map((e) => e.scheme).join('+')} (${ORDER_REASON.onnx})`);

  const io = modelIO(model, new Set());
  const keyInputs = new Set(io.inputs.map((i) => i.name).filter((n) => !plainInputs.has(n)));
  const { inputs, outputs } = modelIO(model, keyInputs);
  if (!inputs.length) throw new UnsupportedModelError('the model has no inputs');
  return { format: 'onnx', locked, inputs, outputs, locks, report };
}

/**
 * A custom op runs only where the interpreter has a kernel registered for it:
 * before anything is locked, the plain model gets a session on keylock's tflite
 * backend, so a model it cannot run is refused now, naming the op, rather than
 * after the vendor shipped a `.klm` no device loads.
 * @throws UnsupportedModelError naming the custom op(s) and what the backend said.
 */
async function checkCustomOps(bytes: Uint8Array, model: ReturnType<typeof readTflite>, report: (l: string) => void): Promise<void> {
  const custom = model.subgraphs.flatMap((g, sg) => g.operators.filter((o) => o.op.startsWith('CUSTOM')).map((o) => `${o.op.slice('CUSTOM:'.length) || '(unnamed)'} (operator #${o.index}${sg ? `, subgraph ${sg}` : ''})`));
  if (!custom.length) return;
  const { createTfliteSession } = await import('../../runtime/tflite.ts');
  try {
    const s = await createTfliteSession(bytes.slice());
    await s.release();
  } catch (e) {
    throw new UnsupportedModelError(`the TFLite model uses custom op(s) ${custom.join(', ')}, which keylock's tflite backend cannot run (${(e as Error).message}); a locked copy would never load: `
      + 'replace the op with builtin ones when converting (e.g. without allow_custom_ops), or register a backend that has the kernel (registerBackend)');
  }
  report(`custom op(s) ${custom.join(', ')}: keylock's tflite backend runs the plain model, checked before locking`);
}

function tfliteIO(t: TfliteTensor): IOSpec {
  return { name: t.name, dtype: t.dtype, shape: [...t.shape] };
}

/**
 * Locks a TFLite model. Every lock edits the file in place (models/lock/tflite/),
 * so the locked file has the original's length and structure. Locks run in
 * phase order (shuffle and advparams first, on the plain weights); the manifest
 * lists them in the order they were applied, which the runtime undoes in reverse.
 * UnsupportedModelError when a scheme cannot apply or the model has dynamic
 * input axes the tflite backend cannot run.
 */
export function lockTflite(modelBytes: Uint8Array, req: LockRequest): Promise<LockResult> {
  return lockWith(req, (modelKey, modelId) => lockTfliteUnder(modelBytes, req, modelKey, modelId));
}

async function lockTfliteUnder(modelBytes: Uint8Array, req: LockRequest, modelKey: Uint8Array, modelId: string): Promise<Locked> {
  const report: string[] = [];
  const locked = modelBytes.slice();
  const model = readTflite(locked);
  const g = model.subgraphs[0];
  const inputs = g.inputs.map((i) => g.tensors[i]);
  checkStaticInputs(inputs.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, signature: t.shapeSignature })));
  if (!inputs.length) throw new UnsupportedModelError('the TFLite model has no inputs');
  await checkCustomOps(modelBytes, model, (l) => report.push(l));
  const ctx: TfliteLockContext = { modelId, modelKey, opts: req, report: (l) => report.push(l), model, weights: listWeights(model), applied: [] };

  const order = inPhaseOrder(req.schemes.map((scheme) => LOCKERS.tflite[scheme]));
  if (order.some((l, i) => l.scheme !== req.schemes[i])) report.push(`order: applied ${order.map((l) => l.scheme).join('+')} (${ORDER_REASON.tflite})`);
  for (const l of order) ctx.applied.push(await l.lock(locked, ctx));
  return { format: 'tflite', locked, inputs: inputs.map(tfliteIO), outputs: g.outputs.map((i) => tfliteIO(g.tensors[i])), locks: ctx.applied, report };
}

/** Model format of `bytes`: `tflite` when they carry the TFLite file identifier, else `onnx`. */
export function modelFormatOf(bytes: Uint8Array): ModelFormat {
  return isTflite(bytes) ? 'tflite' : 'onnx';
}

/**
 * Locks an ONNX or TFLite model: `format` (e.g. from the file extension) or,
 * without it, the bytes' file identifier decides.
 */
export async function lockModel(modelBytes: Uint8Array, req: LockRequest & { format?: ModelFormat }): Promise<LockResult> {
  const format = req.format ?? modelFormatOf(modelBytes);
  return format === 'tflite' ? lockTflite(modelBytes, req) : lockOnnx(modelBytes, req);
}
