/**
 * `signflip` (HPNN, Chakraborty, Mondal & Srivastava 2020), vendor side.
 *
 * Every Conv, Gemm and MatMul whose weight is a float32 initializer gets one key
 * bit per output channel (or per MAC unit, `units`). The keyed channels of the
 * weight and bias are negated, and so are those of the per-channel constants of
 * the sign-odd ops that follow the layer (a bias Add/Sub with a constant, an
 * inference BatchNormalization), so the whole chain computes exactly the
 * negation of the plain value: IEEE rounding is symmetric, so every add,
 * multiply and divide of negated operands gives the negated result bit for bit.
 *
 * The one exception is an exact zero: a sum of all-zero products is +0 whether
 * the weights are negated or not, so in input mode a bias-free layer returns -0
 * for it in keyed channels (equal as a number, not as bits; the report says so).
 *
 * Fold mode leaves the graph alone; the runtime flips the ranges back at load.
 * Input mode also multiplies the end of the chain by a ±1 key tensor fed on
 * every run (runtime/keys/signflip.ts), so the weights stay locked in memory.
 * The Mul goes after the chain, not after the layer, so onnxruntime still fuses
 * Conv+BatchNormalization, Conv+Add and MatMul+Add into one kernel.
 */
import { UnsupportedModelError } from '../../../keystore/errors.ts';
import { signflipUnitBits } from '../../../runtime/keys/derive.ts';
import { layerBits, negateChannels } from '../../../runtime/keys/signflip.ts';
import type { ChannelRange, SignflipLayer, SignflipLock } from '../../../runtime/klm.ts';
import {
  addInput, intAttribute, makeNode, nodeUses, subgraphScope, tensorDims, tensorRawBytes, uniqueName,
} from '../../onnx/index.ts';
import type { GraphProto, NodeProto, OnnxModel, TensorProto } from '../../onnx/types.ts';
import { LockOptionError, rangeOf, type EntryOf, type FinishEntry, type OnnxLocker } from '../types.ts';

/** TensorProto.DataType FLOAT. */
const FLOAT = 1;
/** Element types a signflip range may have, by TensorProto.DataType (runtime/keys/signflip.ts negates each exactly). */
const NEGATABLE_TYPES: Readonly<Record<number, string>> = { 1: 'float32', 10: 'float16', 16: 'bfloat16', 3: 'int8', 6: 'int32' };
/** Longest chain of sign-odd ops followed after a layer; real graphs have one or two. */
const MAX_CHAIN = 16;

type Layout = ChannelRange['layout'];

/**
 * A graph of the model and the graphs around it. Layers inside If/Loop/Scan
 * bodies are locked too (e.g. openWakeWord's verifier models): their weights are
 * main-graph initializers read by name, and the key input, a main-graph input,
 * is visible in every body.
 */
interface Scope {
  graph: GraphProto;
  /** Enclosing graphs, the main graph first. */
  outer: GraphProto[];
  /** Their prefixes, as `prefix` below. */
  outerPrefixes: string[];
  /** ' (in then_branch of If "x")' for a body, '' for the main graph. */
  where: string;
  /** The `listTensors` scope of this graph: '' for the main graph, `If_25.then_branch/` for a body. */
  prefix: string;
}

/** A tensor slot whose keyed channels get negated. */
interface Slot {
  node: NodeProto;
  index: number;
  layout: Layout;
}

/** A layer that can be locked, found before anything is changed. */
interface Candidate {
  scope: Scope;
  node: NodeProto;
  /** The weight's range name (its own name for a main-graph initializer, scope + name in a body): it labels the key bits. */
  weight: string;
  /** The Cast / DequantizeLinear the weight is computed by, when its range is that node's constant input. */
  via?: NodeProto;
  /** Recurrent weights (LSTM, GRU, RNN) and integer layers: fold mode only, no sign-odd chain after them. */
  recurrent?: boolean;
  channels: number;
  /** Weight, then bias. */
  slots: Slot[];
  /** Rank of the layer's output, when known. */
  rank: number | undefined;
  /** Where the channel axis is, counted from the last axis (0: last). */
  chFromEnd: number;
}

/** A locked layer, waiting for its final byte ranges. */
interface Planned {
  weight: string;
  channels: number;
  ranges: { name: string; layout: Layout }[];
  keyInput?: string;
  keyDims?: number[];
}

function label(node: NodeProto, scope?: Scope): string {
  return `${node.op_type ?? '?'} "${node.name || node.output[0] || ''}"${scope?.where ?? ''}`;
}

function bodiesOf(node: NodeProto): { name: string; attr: string; i?: number; graph: GraphProto }[] {
  const out: { name: string; attr: string; i?: number; graph: GraphProto }[] = [];
  for (const a of node.attribute) {
    if (a.g) out.push({ name: a.name ?? '', attr: a.name ?? '', graph: a.g });
    a.graphs.forEach((graph, i) => out.push({ name: `${a.name ?? ''}[${i}]`, attr: a.name ?? '', i, graph }));
  }
  return out;
}

/** The main graph and every body nested in it, outer graphs before the bodies they hold. */
function allScopes(model: OnnxModel): Scope[] {
  const out: Scope[] = [];
  const visit = (s: Scope): void => {
    out.push(s);
    s.graph.node.forEach((n, index) => {
      for (const b of bodiesOf(n)) {
        visit({
          graph: b.graph, outer: [...s.outer, s.graph], outerPrefixes: [...s.outerPrefixes, s.prefix],
          where: ` (in ${b.name} of ${label(n)}${s.where})`, prefix: subgraphScope(s.prefix, n.name, index, b.attr, b.i),
        });
      }
    });
  };
  visit({ graph: model.graph, outer: [], outerPrefixes: [], where: '', prefix: '' });
  return out;
}

/** True when graph `g` itself defines `name` (as an input, initializer or node output). */
function definesLocally(g: GraphProto, name: string): boolean {
  return g.input.some((v) => v.name === name) || g.initializer.some((t) => t.name === name) || g.node.some((n) => n.output.includes(name));
}

/** A float32 initializer as seen from a scope: the tensor, the graph that holds it, and its range name. */
interface Found {
  t: TensorProto;
  graph: GraphProto;
  /** Its `listTensors` name: its own for a main-graph initializer, the body's prefix + its own in a body. */
  key: string;
}

/**
 * The float32 initializer that `name` means inside `scope` (the innermost graph
 * that defines it: a body's own initializer, or an enclosing graph's), or why
 * there is none. A value a body computes (a node output, a body input) cannot
 * be locked: it has no bytes in the file.
 */
function lookup(model: OnnxModel, scope: Scope, name: string | undefined, types: readonly number[] = [FLOAT]): Found | { why: string } {
  if (!name) return { why: 'is missing' };
  const graphs = [...scope.outer, scope.graph];
  const prefixes = [...scope.outerPrefixes, scope.prefix];
  for (let k = graphs.length - 1; k >= 0; k--) {
    const g = graphs[k]!;
    if (!definesLocally(g, name)) continue;
    const t = g.initializer.find((x) => x.name === name);
    if (!t) return { why: g === model.graph ? `"${name}" is not an initializer` : `"${name}" is computed inside a subgraph` };
    if (!types.includes(t.data_type ?? 0)) return { why: `"${name}" is not ${types.map((x) => NEGATABLE_TYPES[x]).join(' or ')}` };
    return { t, graph: g, key: `${prefixes[k]}${name}` };
  }
  return { why: `"${name}" is not an initializer` };
}

function countOf(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

/**
 * How many places anywhere in the model read `name`: node input slots and graph
 * outputs, in every body. Names shadowed inside a body count too, so the count
 * errs on the side of "shared".
 */
function useCount(model: OnnxModel, name: string): number {
  let n = 0;
  for (const s of allScopes(model)) {
    n += s.graph.output.filter((v) => v.name === name).length;
    for (const node of s.graph.node) n += node.input.filter((x) => x === name).length;
  }
  return n;
}

/** Declared rank of a value seen from `scope` (initializer, input, output, value_info), when the file states it. */
function declaredRank(scope: Scope, name: string): number | undefined {
  for (const g of [scope.graph, ...[...scope.outer].reverse()]) {
    const init = g.initializer.find((t) => t.name === name);
    if (init) return init.dims.length;
    const vi = [...g.input, ...g.value_info, ...g.output].find((v) => v.name === name);
    if (vi) return vi.type?.tensor_type?.shape?.dim.length;
  }
  return undefined;
}

/**
 * True when a constant of `dims`, broadcast against a value whose channel axis is
 * `chFromEnd` from the end, holds one value per channel (and is constant along
 * every other axis), so that negating its keyed channels is all it takes.
 */
function perChannel(dims: readonly number[], channels: number, chFromEnd: number): boolean {
  const at = dims.length - 1 - chFromEnd;
  if (at < 0 && channels !== 1) return false;
  return dims.every((d, i) => (i === at ? d === channels : d === 1));
}

/** The layer `node` locks, a reason it cannot be locked, or undefined when it is not a Conv/Gemm/MatMul. */
/** Gates per hidden unit of the recurrent ops: W is [D, G·H, I], R [D, G·H, H], B [D, 2·G·H]. */
const RECURRENT_GATES: Readonly<Record<string, number>> = { LSTM: 4, GRU: 3, RNN: 1 };

/**
 * The layers a recurrent op (LSTM, GRU, RNN) locks in fold mode: W and R share
 * one key bit per gate row (D·G·H rows), the bias B has its own (D·2·G·H
 * values, one per row of Wb and Rb). Input mode cannot reach them: the gates
 * pass W·x + R·h + b through sigmoid, which is not odd, so no ±1 after the op
 * undoes a negated row.
 */
function recurrentCandidates(model: OnnxModel, scope: Scope, node: NodeProto, mode: 'input' | 'fold'): (Candidate | { skip: string })[] {
  const op = node.op_type ?? '';
  if (mode === 'input') {
    return [{ skip: `${op} passes its gate sums through sigmoid${op === 'RNN' ? '/tanh' : ''}, which is not odd, so a ±1 key after it cannot undo negated rows; --mode fold locks its W, R and B rows` }];
  }
  const out: (Candidate | { skip: string })[] = [];
  const gates = RECURRENT_GATES[op]!;
  const found: Found[] = [];
  for (const [i, what] of [[1, 'W'], [2, 'R']] as const) {
    const f = lookup(model, scope, node.input[i]);
    if ('why' in f) return [{ skip: `its ${what} ${f.why}` }];
    const uses = useCount(model, node.input[i]!);
    if (uses !== 1) return [{ skip: `its ${what} "${node.input[i]}" has ${uses} readers (shared weights stay plain)` }];
    const d = tensorDims(f.t);
    if (d.length !== 3 || d[1]! % gates !== 0) return [{ skip: `its ${what} has dims [${d.join(',')}], expected [directions, ${gates}·hidden, n]` }];
    found.push(f);
  }
  const [w, r] = found as [Found, Found];
  const rows = tensorDims(w.t)[0]! * tensorDims(w.t)[1]!;
  if (tensorDims(r.t)[0]! * tensorDims(r.t)[1]! !== rows) return [{ skip: `its W and R have different row counts` }];
  out.push({ scope, node, weight: w.key, recurrent: true, channels: rows, slots: [{ node, index: 1, layout: 'outer' }, { node, index: 2, layout: 'outer' }], rank: undefined, chFromEnd: 0 });
  if (node.input[3]) {
    const b = lookup(model, scope, node.input[3]);
    const uses = useCount(model, node.input[3]);
    if ('why' in b) out.push({ skip: `its bias B ${b.why}` });
    else if (uses !== 1) out.push({ skip: `its bias B "${node.input[3]}" has ${uses} readers (shared weights stay plain)` });
    else out.push({ scope, node, weight: b.key, recurrent: true, channels: countOf(tensorDims(b.t)), slots: [{ node, index: 3, layout: 'outer' }], rank: undefined, chFromEnd: 0 });
  }
  return out;
}

/**
 * The constant behind a weight computed by one node from a constant, when that
 * node is linear and odd, so negating rows of its input negates the same rows
 * of its output exactly: `Cast` to float of a float16/bfloat16 initializer
 * (weights exported in half precision), or `DequantizeLinear` of an int8
 * initializer with zero points 0 or absent (QDQ models; the scale multiplies,
 * per tensor or per axis). int8 only in fold mode: −128 has no positive
 * counterpart, so input mode would not be bit-exact. `why: ''` when the weight
 * is not computed by such a node at all.
 */
function dequantized(model: OnnxModel, scope: Scope, name: string, mode: 'input' | 'fold', quantTypes: readonly number[] = [3]): { node: NodeProto; found: Found } | { why: string } {
  const node = scope.graph.node.find((n) => n.output.includes(name));
  if (!node || (node.domain ?? '') !== '' || (node.op_type !== 'Cast' && node.op_type !== 'DequantizeLinear')) return { why: '' };
  const l = label(node, scope);
  if (useCount(model, name) !== 1) return { why: `the output of ${l} has other readers` };
  if (node.op_type === 'Cast') {
    if (intAttribute(node, 'to', 0) !== FLOAT) return { why: `${l} does not cast to float32` };
    const f = lookup(model, scope, node.input[0], [10, 16]);
    return 'why' in f ? { why: `the input of ${l} ${f.why}` } : { node, found: f };
  }
  if (mode === 'input') return { why: `${l} dequantizes integers, which only fold mode negates exactly (-128 has no positive counterpart)` };
  const f = lookup(model, scope, node.input[0], quantTypes);
  if ('why' in f) return { why: `the input of ${l} ${f.why}` };
  if (node.input[2]) {
    const zp = lookup(model, scope, node.input[2], [3, 2, 6]);
    if ('why' in zp) return { why: `the zero point of ${l} ${zp.why}` };
    if (tensorRawBytes(zp.t).some((b) => b !== 0)) return { why: `${l} has a non-zero zero point: -q would not be the negated value` };
  }
  return { node, found: f };
}

/**
 * Integer layers: where their weight, its zero point and their int32 bias are
 * (input slots), and the weight's channel layout. Their output is requantized
 * (QLinearConv, QLinearMatMul: y_scale, y_zero_point, saturation) or an int32
 * sum that the next op requantizes, so no ±1 after them undoes a negated row:
 * fold mode only, where restore negates the rows back exactly.
 */
const INTEGER_LAYERS: Readonly<Record<string, { w: number; zp: number; bias?: number; layout: Layout }>> = {
  QLinearConv: { w: 3, zp: 5, bias: 8, layout: 'outer' },
  ConvInteger: { w: 1, zp: 3, layout: 'outer' },
  QLinearMatMul: { w: 3, zp: 5, layout: 'inner' },
  MatMulInteger: { w: 1, zp: 3, layout: 'inner' },
};

function integerCandidate(model: OnnxModel, scope: Scope, node: NodeProto, mode: 'input' | 'fold'): Candidate | { skip: string } {
  const op = node.op_type ?? '';
  const spec = INTEGER_LAYERS[op]!;
  if (mode === 'input') return { skip: `${op} ${op.startsWith('QLinear') ? 'requantizes its output (zero point, saturation)' : 'gives an int32 sum that the next op requantizes'}, which is not odd, so a ±1 key after it cannot undo negated rows; --mode fold keys its int8 weight rows` };
  const name = node.input[spec.w];
  const w = lookup(model, scope, name, [3]);
  if ('why' in w) return { skip: `its weight ${w.why} (fold mode negates int8 weights; uint8 ones stay plain)` };
  const uses = useCount(model, name!);
  if (uses !== 1) return { skip: `its weight "${name}" has ${uses} readers (shared weights stay plain)` };
  const wd = tensorDims(w.t);
  if (wd.length < 2) return { skip: `its weight has rank ${wd.length}, expected at least 2` };
  const channels = spec.layout === 'outer' ? wd[0]! : wd[wd.length - 1]!;
  const c: Candidate = { scope, node, weight: w.key, recurrent: true, channels, slots: [{ node, index: spec.w, layout: spec.layout }], rank: undefined, chFromEnd: 0 };
  const b = spec.bias !== undefined ? node.input[spec.bias] : undefined;
  if (b) {
    const f = lookup(model, scope, b, [6]);
    if (!('why' in f) && useCount(model, b) === 1 && countOf(tensorDims(f.t)) === channels) c.slots.push({ node, index: spec.bias!, layout: 'outer' });
  }
  return c;
}

function candidate(model: OnnxModel, scope: Scope, node: NodeProto, mode: 'input' | 'fold'): Candidate | { skip: string } | undefined {
  const op = node.op_type;
  if ((node.domain ?? '') !== '' || (op !== 'Conv' && op !== 'Gemm' && op !== 'MatMul')) return undefined;
  let weightName = node.input[1] ?? '';
  let w = lookup(model, scope, weightName);
  /** The Cast / DequantizeLinear the weight comes through, when it does: its input 0 is the locked range. */
  let via: NodeProto | undefined;
  if ('why' in w) {
    const d = dequantized(model, scope, weightName, mode);
    if ('why' in d) return { skip: `its weight ${w.why}${d.why ? `; ${d.why}` : ''}` };
    via = d.node;
    weightName = d.node.input[0]!;
    w = d.found;
  }
  const weight = w.key;
  const uses = useCount(model, weightName);
  if (uses !== 1) return { skip: `its weight "${weightName}" has ${uses} readers (shared weights stay plain)` };
  const wd = tensorDims(w.t);
  const bias = node.input[2] ?? '';
  let b = bias ? lookup(model, scope, bias) : undefined;
  /** The DequantizeLinear an int32 (or int8) bias comes through (QDQ models), fold mode only. */
  let biasVia: NodeProto | undefined;
  if (b && 'why' in b && via) {
    const d = dequantized(model, scope, bias, mode, [6, 3]);
    if (!('why' in d)) { biasVia = d.node; b = d.found; }
  }

  let c: Candidate;
  if (op === 'Conv') {
    if (wd.length < 3) return { skip: `its weight has rank ${wd.length}, expected at least 3` };
    c = { scope, node, weight, channels: wd[0]!, slots: [{ node: via ?? node, index: via ? 0 : 1, layout: 'outer' }], rank: wd.length, chFromEnd: wd.length - 2 };
    if (b && ('why' in b || countOf(tensorDims(b.t)) !== c.channels)) return { skip: `its bias is not a float32 initializer of ${c.channels} values` };
  } else if (op === 'Gemm') {
    if (wd.length !== 2) return { skip: `its weight has rank ${wd.length}, expected 2` };
    const transB = intAttribute(node, 'transB', 0) !== 0;
    c = { scope, node, weight, channels: transB ? wd[0]! : wd[1]!, slots: [{ node: via ?? node, index: via ? 0 : 1, layout: transB ? 'outer' : 'inner' }], rank: 2, chFromEnd: 0 };
    if (b) {
      // C broadcasts to [M, N]; it is per output channel when its last axis is N.
      const bd = 't' in b ? tensorDims(b.t) : [];
      const ok = 't' in b && bd.length <= 2 && (c.channels === 1 || bd[bd.length - 1] === c.channels);
      if (!ok) return { skip: `its bias is not a float32 initializer with one value per output channel (a scalar shared by all channels cannot be negated per channel)` };
    }
  } else {
    if (wd.length < 2) return { skip: `its weight has rank ${wd.length}, expected at least 2` };
    const rankA = declaredRank(scope, node.input[0] ?? '');
    const rank = rankA === undefined ? undefined : rankA === 1 ? wd.length - 1 : Math.max(rankA, wd.length);
    c = { scope, node, weight, channels: wd[wd.length - 1]!, slots: [{ node: via ?? node, index: via ? 0 : 1, layout: 'inner' }], rank, chFromEnd: 0 };
  }
  if (c.channels < 1) return { skip: 'it has no output channels' };
  if (via) c.via = via;
  if (bias) c.slots.push(biasVia ? { node: biasVia, index: 0, layout: 'outer' } : { node, index: 2, layout: op === 'Gemm' ? 'inner' : 'outer' });
  return c;
}

/**
 * The name of the tensor in `slot`, first given a private copy when something
 * else reads it too (tf2onnx and others share equal constants between layers,
 * e.g. batch-norm statistics): negating a shared tensor would change the other
 * readers. Per-channel vectors are small, so the copy costs little.
 */
function privateTensor(model: OnnxModel, slot: Slot, scope: Scope, report: (l: string) => void): Found {
  const name = slot.node.input[slot.index]!;
  const f = lookup(model, scope, name, [1, 10, 16, 3, 6]);
  if ('why' in f) throw new UnsupportedModelError(`signflip: tensor "${name}" ${f.why} (checked before locking)`);
  if (useCount(model, name) === 1) return f;
  const raw = tensorRawBytes(f.t, `initializer "${f.key}"`).slice();
  const copyName = uniqueName(model, `${name}/keylock_signflip`);
  const copy: TensorProto = { ...f.t, name: copyName, dims: [...f.t.dims], raw_data: raw, float_data: [] };
  f.graph.initializer.push(copy);
  slot.node.input[slot.index] = copyName;
  report(`signflip: gave ${label(slot.node, scope)} a private copy of shared constant "${name}" (${raw.byteLength} bytes)`);
  return { t: copy, graph: f.graph, key: f.key.slice(0, f.key.length - name.length) + copyName };
}

/** Negates the keyed channels of a float32 initializer with the runtime's own routine, so lock and unlock cannot drift apart. */
function negate(f: Found, layout: Layout, channels: number, bits: Uint8Array): void {
  const bytes = tensorRawBytes(f.t, `initializer "${f.key}"`).slice();
  negateChannels(bytes, { name: f.key, offset: 0, length: bytes.byteLength, dtype: NEGATABLE_TYPES[f.t.data_type ?? 0]!, layout }, channels, bits);
  f.t.raw_data = bytes;
  f.t.float_data = [];
}

type Step = { node: NodeProto; slots: Slot[]; rank: number | undefined } | { stop: string };

/** One step along the sign-odd chain after a layer: the slots to negate and the next value, or why the chain stops. */
function chainStep(model: OnnxModel, cur: string, c: Candidate, rank: number | undefined): Step {
  const g = c.scope.graph;
  if (g.output.some((v) => v.name === cur)) return { stop: 'a graph output' };
  const readers = g.node.filter((n) => nodeUses(n, cur));
  if (readers.length !== 1) return { stop: readers.length ? `${readers.length} readers` : 'no reader' };
  const n = readers[0]!;
  const op = n.op_type ?? '?';
  const simple = (n.domain ?? '') === '' && n.input.filter((x) => x === cur).length === 1 && bodiesOf(n).length === 0;
  if (!simple) return { stop: label(n) };
  if ((op === 'Add' || op === 'Sub') && n.input.length === 2) {
    // (-x) + (-k) = -(x + k); for Sub either operand order is odd as well.
    const index = n.input[0] === cur ? 1 : 0;
    const k = lookup(model, c.scope, n.input[index]);
    if ('why' in k) return { stop: `${label(n)} (its other operand ${k.why})` };
    const kd = tensorDims(k.t);
    if (!perChannel(kd, c.channels, c.chFromEnd)) return { stop: `${label(n)} (its constant of shape [${kd.join(',')}] is not one value per channel)` };
    return { node: n, slots: [{ node: n, index, layout: 'outer' }], rank: rank === undefined ? undefined : Math.max(rank, kd.length) };
  }
  if (op === 'BatchNormalization' && n.input[0] === cur && n.input.length >= 5) {
    // y = (x - mean) * scale / sqrt(var + eps) + B is odd in (x, mean, B); scale and var stay.
    if (n.output.filter((o) => o !== '').length !== 1 || intAttribute(n, 'training_mode', 0) !== 0) return { stop: `${label(n)} (training mode)` };
    if (rank === undefined || rank - 1 - c.chFromEnd !== 1) return { stop: `${label(n)} (it normalizes axis 1, not known to be the channel axis)` };
    for (const i of [2, 3]) {
      const t = lookup(model, c.scope, n.input[i]);
      if ('why' in t || countOf(tensorDims(t.t)) !== c.channels) return { stop: `${label(n)} (its ${i === 2 ? 'bias' : 'mean'} is not a float32 initializer of ${c.channels} values)` };
    }
    return { node: n, slots: [{ node: n, index: 2, layout: 'outer' }, { node: n, index: 3, layout: 'outer' }], rank };
  }
  return { stop: label(n) };
}

/** ±1 key tensor dims that broadcast along the channel axis: [C] for a last-axis channel, [1,C,1,1] for NCHW. */
function keyDimsOf(channels: number, rank: number | undefined, chFromEnd: number): number[] {
  if (chFromEnd === 0) return [channels];
  const dims = [channels, ...new Array<number>(chFromEnd).fill(1)];
  while (rank !== undefined && dims.length < rank) dims.unshift(1);
  return dims;
}

/**
 * Puts `Mul(value, key)` between `value` and everything that reads it: the
 * producer writes a new name and the Mul writes `value`, so every reader (other
 * nodes, bodies that read it by name, a graph output) gets the restored value
 * and user-facing output names never change.
 */
function insertKeyMul(model: OnnxModel, scope: Scope, value: string, key: string): void {
  const nodes = scope.graph.node;
  const producer = nodes.find((n) => n.output.includes(value));
  if (!producer) throw new UnsupportedModelError(`signflip: value "${value}" has no producing node`);
  const signed = uniqueName(model, `${value}/keylock_signed`);
  producer.output[producer.output.indexOf(value)] = signed;
  nodes.splice(nodes.indexOf(producer) + 1, 0, makeNode('Mul', [signed, key], [value], {}, uniqueName(model, `${key}/mul`)));
}

function parseOptions(opts: { signflipMode?: string; units?: number }): { mode: 'input' | 'fold'; units: number } {
  const mode = opts.signflipMode ?? 'input';
  if (mode !== 'input' && mode !== 'fold') throw new LockOptionError('signflipMode', '--mode', '"input" or "fold"', String(mode), `signflip mode must be "input" or "fold", got "${String(mode)}"`);
  const units = opts.units ?? 0;
  if (!Number.isSafeInteger(units) || units < 0) throw new LockOptionError('units', '--units', 'a non-negative integer', String(units), `signflip units must be a non-negative integer (0: one bit per channel), got ${units}`);
  return { mode, units };
}

/**
 * Why a signflip entry locks nothing under `modelKey`, for both formats: over U
 * key bits the key negates no channel with probability 2^-U, and the "locked"
 * model would equal the plain one.
 */
export function signflipTrivial(modelKey: Uint8Array, entry: EntryOf<'signflip'>): string | undefined {
  const units = entry.units ? signflipUnitBits(modelKey, entry.units) : undefined;
  try {
    for (const layer of entry.layers) {
      const bits = layerBits(entry, layer, modelKey, units);
      const keyed = bits.includes(1);
      bits.fill(0);
      if (keyed) return undefined;
    }
  } finally {
    units?.fill(0);
  }
  const over = entry.units ? `${entry.units} MAC unit bit(s)` : `${entry.layers.reduce((a, l) => a + l.channels, 0)} channel bit(s)`;
  return `signflip: the key negates no channel of the ${entry.layers.length} locked layer(s) (all ${over} are 0)`;
}

/**
 * The `signflip` graph-stage locker. Options: `signflipMode` (`input`, the
 * default, or `fold`) and `units` (0: one bit per channel; U: channel j uses
 * MAC-unit bit j mod U). Throws UnsupportedModelError when no layer can be
 * locked; reports one line per locked layer and one per skipped one.
 */
export const onnxSignflip: OnnxLocker<'signflip'> = {
  scheme: 'signflip',
  // After the other graph-stage locks: advparams measures the model's accuracy and
  // must see the weights before they are negated (after the flips, a model they
  // already wreck leaves advparams nothing to do), and its encryption set carries
  // no key inputs for input mode.
  phase: 1,
  trivial: signflipTrivial,
  graph(model, ctx): FinishEntry {
    const { mode, units } = parseOptions(ctx.opts);
    const found: Candidate[] = [];
    const skipped: string[] = [];
    for (const scope of allScopes(model)) {
      for (const node of scope.graph.node) {
        const std = (node.domain ?? '') === '';
        const cs = std && RECURRENT_GATES[node.op_type ?? ''] !== undefined ? recurrentCandidates(model, scope, node, mode)
          : std && INTEGER_LAYERS[node.op_type ?? ''] ? [integerCandidate(model, scope, node, mode)]
            : [candidate(model, scope, node, mode)];
        for (const c of cs) {
          if (!c) continue;
          if ('skip' in c) skipped.push(`${label(node, scope)}: ${c.skip}`);
          else found.push(c);
        }
      }
    }
    if (!found.length) {
      const why = skipped.length ? `; skipped ${skipped.slice(0, 3).join('; ')}${skipped.length > 3 ? `; and ${skipped.length - 3} more` : ''}` : '';
      throw new UnsupportedModelError(`signflip: the model has no Conv, Gemm or MatMul${mode === 'fold' ? ', LSTM, GRU, RNN, QLinearConv, ConvInteger, QLinearMatMul or MatMulInteger' : ''} with an unshared float32 weight initializer to lock${why}`);
    }
    for (const s of skipped) ctx.report(`signflip: skipped ${s}`);

    const stub: SignflipLock = { scheme: 'signflip', mode, units, layers: [] };
    const unitBits = units ? signflipUnitBits(ctx.modelKey, units) : undefined;
    const planned: Planned[] = [];
    try {
      for (const c of found) {
        const layer: SignflipLayer = { weight: c.weight, channels: c.channels, ranges: [] };
        const bits = layerBits(stub, layer, ctx.modelKey, unitBits);
        const keyed = bits.reduce((a, b) => a + b, 0);
        const p: Planned = { weight: c.weight, channels: c.channels, ranges: [] };
        const flip = (s: Slot): void => {
          const f = privateTensor(model, s, c.scope, ctx.report);
          negate(f, s.layout, c.channels, bits);
          p.ranges.push({ name: f.key, layout: s.layout });
        };
        c.slots.forEach(flip);
        const chain = [c.node.op_type ?? '?'];
        let cur = c.node.output[0]!;
        let rank = c.rank;
        let stop = `more than ${MAX_CHAIN} sign-odd ops`;
        if (c.recurrent) {
          bits.fill(0);
          const what = INTEGER_LAYERS[c.node.op_type ?? ''] ? `int8 weight${c.slots.length === 2 ? ' and int32 bias' : ''}` : c.slots.length === 2 ? 'W and R' : 'bias B';
          ctx.report(`signflip: ${label(c.node, c.scope)} ${what} "${c.weight}": ${c.channels} ${INTEGER_LAYERS[c.node.op_type ?? ''] ? 'channels' : 'gate rows'}, ${keyed} keyed; fold mode, restored at load`);
          planned.push(p);
          continue;
        }
        for (let i = 0; i < MAX_CHAIN; i++) {
          const step = chainStep(model, cur, c, rank);
          if ('stop' in step) { stop = step.stop; break; }
          step.slots.forEach(flip);
          chain.push(step.node.op_type ?? '?');
          cur = step.node.output[0]!;
          rank = step.rank;
        }
        bits.fill(0);
        let where = `negated through ${chain.join(' -> ')}, which ends at ${stop}`;
        if (mode === 'input') {
          p.keyInput = uniqueName(model, `keylock_signflip_${planned.length}`);
          p.keyDims = keyDimsOf(c.channels, rank, c.chFromEnd);
          addInput(model, p.keyInput, 'float32', p.keyDims);
          insertKeyMul(model, c.scope, cur, p.keyInput);
          where += `; key input "${p.keyInput}" [${p.keyDims.join(',')}] multiplies "${cur}"`;
          // A sum of all-zero inputs is +0 both plainly and locked, so the key turns it into -0.
          // A bias (or any constant along the chain) keeps such sums away from zero.
          if (p.ranges.length === 1 && keyed > 0) where += '; no bias: an output whose inputs are all zero comes back as -0 instead of +0 in keyed channels (equal as numbers, not as bits)';
        }
        ctx.report(`signflip: ${label(c.node, c.scope)} weight "${c.weight}"${c.via ? ` (through ${label(c.via)})` : ''}: ${c.channels} channels, ${keyed} keyed; ${where}`);
        planned.push(p);
      }
    } finally {
      unitBits?.fill(0);
    }

    return (inits) => ({
      scheme: 'signflip',
      mode,
      units,
      layers: planned.map((p): SignflipLayer => {
        const ranges = p.ranges.map((r): ChannelRange => {
          const info = inits.get(r.name);
          if (!info || !info.inRawData || !Object.values(NEGATABLE_TYPES).includes(info.dtype)) {
            throw new UnsupportedModelError(`signflip: tensor "${r.name}" has no float32/float16/bfloat16/int8 raw_data range in the encoded model (expected one after locking)`);
          }
          return { ...rangeOf(info), layout: r.layout };
        });
        const layer: SignflipLayer = { weight: p.weight, channels: p.channels, ranges };
        if (p.keyInput) { layer.keyInput = p.keyInput; layer.keyDims = p.keyDims; }
        return layer;
      }),
    });
  },
};
