/**
 * Finding and rewiring nodes and values in a decoded model's main graph.
 *
 * Nodes inside If/Loop/Scan bodies may read main-graph values by name without
 * listing them as node inputs; "uses" below include those, so rewiring a value
 * also rewires the bodies that read it.
 */
import { dataTypeName, type OnnxDTypeName } from './dtypes.ts';
import { makeValueInfo, type DimInput } from './builder.ts';
import type { DType } from '../../runtime/tensor.ts';
import type { GraphProto, NodeProto, OnnxModel, ValueInfoProto } from './types.ts';

function subgraphs(node: NodeProto): GraphProto[] {
  const out: GraphProto[] = [];
  for (const a of node.attribute) {
    if (a.g) out.push(a.g);
    out.push(...a.graphs);
  }
  return out;
}

/** Names a graph defines itself (inputs, initializers, node outputs): they shadow outer names. */
function definesLocally(g: GraphProto, name: string): boolean {
  return g.input.some((v) => v.name === name) || g.initializer.some((t) => t.name === name)
    || g.sparse_initializer.some((s) => s.values?.name === name) || g.node.some((n) => n.output.includes(name));
}

/** True when a body graph reads outer value `name` (directly or in nested bodies). */
function bodyUses(g: GraphProto, name: string): boolean {
  if (definesLocally(g, name)) return false;
  return g.output.some((v) => v.name === name) || g.node.some((n) => nodeUses(n, name));
}

/** True when `node` reads value `name`, as an input or from inside one of its bodies. */
export function nodeUses(node: NodeProto, name: string): boolean {
  return node.input.includes(name) || subgraphs(node).some((g) => bodyUses(g, name));
}

/** The main-graph node named `name`, or undefined. */
export function findNode(model: OnnxModel, name: string): NodeProto | undefined {
  return model.graph.node.find((n) => n.name === name);
}

/** Nodes of the main graph with the given op type, in graph order. */
export function findNodesByOp(model: OnnxModel, opType: string, domain = ''): NodeProto[] {
  return model.graph.node.filter((n) => n.op_type === opType && (n.domain ?? '') === domain);
}

/** The node that produces value `name`, or undefined (a graph input, an initializer, or unknown). */
export function producerOf(model: OnnxModel, name: string): NodeProto | undefined {
  return model.graph.node.find((n) => n.output.includes(name));
}

/** Main-graph nodes that read value `name` (including through their bodies), in graph order. */
export function consumersOf(model: OnnxModel, name: string): NodeProto[] {
  return model.graph.node.filter((n) => nodeUses(n, name));
}

/** True when `name` is one of the graph's outputs. */
export function isGraphOutput(model: OnnxModel, name: string): boolean {
  return model.graph.output.some((v) => v.name === name);
}

/** Graph inputs the caller must feed: those without an initializer of the same name (older IRs list both). */
export function runtimeInputs(model: OnnxModel): ValueInfoProto[] {
  const inits = new Set(model.graph.initializer.map((t) => t.name));
  return model.graph.input.filter((v) => !inits.has(v.name));
}

/** Element type and dims of a tensor-typed value; dims are numbers, symbols, or null (unknown). */
export function describeValue(vi: ValueInfoProto): { dataType: number; dtype: string; dims: (number | string | null)[] | undefined } | undefined {
  const tt = vi.type?.tensor_type;
  if (!tt) return undefined;
  const dims = tt.shape?.dim.map((d) => (d.dim_value !== undefined ? Number(d.dim_value) : d.dim_param !== undefined && d.dim_param !== '' ? d.dim_param : null));
  return { dataType: tt.elem_type ?? 0, dtype: dataTypeName(tt.elem_type), dims };
}

function collectNames(g: GraphProto, into: Set<string>): void {
  for (const v of [...g.input, ...g.output, ...g.value_info]) if (v.name) into.add(v.name);
  for (const t of g.initializer) if (t.name) into.add(t.name);
  for (const n of g.node) {
    for (const o of n.output) into.add(o);
    for (const i of n.input) into.add(i);
    if (n.name) into.add(n.name);
    for (const s of subgraphs(n)) collectNames(s, into);
  }
}

/** `base`, or `base_1`, `base_2`, ...: the first that no value or node in any scope of the model uses. */
export function uniqueName(model: OnnxModel, base: string): string {
  const names = new Set<string>();
  collectNames(model.graph, names);
  if (!names.has(base)) return base;
  for (let i = 1; ; i++) if (!names.has(`${base}_${i}`)) return `${base}_${i}`;
}

function replaceInBody(g: GraphProto, from: string, to: string): number {
  if (definesLocally(g, from)) return 0;
  let n = 0;
  for (const v of g.output) if (v.name === from) { v.name = to; n++; }
  for (const node of g.node) n += replaceInNode(node, from, to);
  return n;
}

function replaceInNode(node: NodeProto, from: string, to: string): number {
  let n = 0;
  node.input.forEach((x, i) => { if (x === from) { node.input[i] = to; n++; } });
  for (const g of subgraphs(node)) n += replaceInBody(g, from, to);
  return n;
}

/**
 * Makes every reader of value `from` read `to` instead: node inputs (and bodies
 * of If/Loop/Scan nodes) and graph outputs, except the nodes in `except`. A
 * graph output named `from` is renamed to `to`, which changes the model's output
 * name. Returns the number of references changed.
 */
export function replaceUses(model: OnnxModel, from: string, to: string, except: readonly NodeProto[] = []): number {
  let n = 0;
  for (const node of model.graph.node) if (!except.includes(node)) n += replaceInNode(node, from, to);
  for (const v of model.graph.output) if (v.name === from) { v.name = to; n++; }
  return n;
}

/** Index in graph.node after which value `name` is available (-1: from the start), or undefined when nothing defines it. */
function availableAfter(model: OnnxModel, name: string): number | undefined {
  const g = model.graph;
  if (name === '' || g.input.some((v) => v.name === name) || g.initializer.some((t) => t.name === name)) return -1;
  const i = g.node.findIndex((n) => n.output.includes(name));
  return i >= 0 ? i : undefined;
}

/** Appends a node (or inserts it at `index`). The caller keeps the graph in topological order. */
export function addNode(model: OnnxModel, node: NodeProto, index = model.graph.node.length): void {
  if (!Number.isInteger(index) || index < 0 || index > model.graph.node.length) throw new RangeError(`node index must be in [0, ${model.graph.node.length}], got ${index}`);
  model.graph.node.splice(index, 0, node);
}

/**
 * Inserts `node` right after the producer of value `tensor` (at the start when
 * `tensor` is a graph input or initializer). RangeError when `tensor` is not
 * defined, when another input of `node` is only produced later, or when an
 * output of `node` already names a value.
 */
export function insertNodeAfter(model: OnnxModel, tensor: string, node: NodeProto): void {
  const at = availableAfter(model, tensor);
  if (at === undefined) throw new RangeError(`no graph input, initializer or node output is named '${tensor}'`);
  for (const i of node.input) {
    const ai = availableAfter(model, i);
    if (ai === undefined || ai > at) throw new RangeError(`input '${i}' of the new ${node.op_type ?? ''} node is not available right after '${tensor}'`);
  }
  for (const o of node.output) {
    if (o !== '' && availableAfter(model, o) !== undefined) throw new RangeError(`output '${o}' of the new ${node.op_type ?? ''} node already names a value`);
  }
  model.graph.node.splice(at + 1, 0, node);
}

/**
 * Puts `node` between value `tensor` and all its readers: `node` must read
 * `tensor`; every other reader (and a graph output named `tensor`) then reads
 * the node's first output instead. Returns that output's name.
 */
export function spliceAfter(model: OnnxModel, tensor: string, node: NodeProto): string {
  if (!node.input.includes(tensor)) throw new RangeError(`the spliced ${node.op_type ?? ''} node must read '${tensor}'`);
  const out = node.output[0];
  if (out === undefined || out === '') throw new RangeError(`the spliced ${node.op_type ?? ''} node needs an output`);
  insertNodeAfter(model, tensor, node);
  replaceUses(model, tensor, out, [node]);
  return out;
}

/**
 * Adds a graph input. `dims` entries are numbers, symbolic names (e.g. 'batch'),
 * or null for an unknown dimension; omit `dims` for an unknown rank.
 * RangeError when the name already names a value.
 */
export function addInput(model: OnnxModel, name: string, dtype: OnnxDTypeName | DType | number, dims?: readonly DimInput[]): ValueInfoProto {
  if (availableAfter(model, name) !== undefined || name === '') throw new RangeError(`the graph already has a value named '${name}'`);
  const vi = makeValueInfo(name, dtype, dims);
  model.graph.input.push(vi);
  return vi;
}
