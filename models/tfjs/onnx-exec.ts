/**
 * An ONNX model executed as differentiable tfjs code, so vendor tools and the
 * evaluation can take gradients of an ONNX model: w.r.t. its weights (AdvParams
 * locking, fine-tuning attacks) or w.r.t. its input (FGSM/PGD). Training it
 * (batched accuracy, Adam fine-tuning) is models/train/fine-tune.ts's job, kept
 * apart so the lockers carry no training loop.
 *
 * Every float32 initializer of the main graph becomes a trainable tf.Variable;
 * other initializers, Constant nodes and subgraph (If branch) initializers are
 * constants. The graph runs in ONNX (NCHW) semantics; see onnx-ops.ts for the
 * operators and onnx-value.ts for how 4-D values avoid needless transposes.
 *
 * Call `initTfjsWasm()` (models/tfjs/setup.ts) or pick another tfjs backend
 * before creating a model.
 */
import * as tf from '@tensorflow/tfjs';
import { FormatError, InputMismatchError, UnsupportedModelError } from '../../keystore/errors.ts';
import { decodeModel } from '../onnx/codec.ts';
import { setInitializer } from '../onnx/initializers.ts';
import type { GraphProto, NodeProto, OnnxModel, ValueInfoProto } from '../onnx/types.ts';
import { Attrs, nodeLabel } from './onnx-attrs.ts';
import { OPS, type OpEnv } from './onnx-ops.ts';
import { tensorFromProto, tfDType, Val } from './onnx-value.ts';

/** Tensors by ONNX value name. */
export type TensorFeeds = Record<string, tf.Tensor>;

/** Integer class labels, one per batch row. */
export type Labels = Uint8Array | Int32Array | readonly number[] | tf.Tensor1D;

/** Which gradient `lossAndGrads` takes. */
export interface LossGradOptions {
  /** `params`: w.r.t. the trainable variables; `input`: w.r.t. the fed input tensor. */
  wrt: 'params' | 'input';
  /** Logits output (default: the first graph output). */
  outputName?: string;
  /** Input to differentiate for `wrt: 'input'` (default: {@link OnnxTfModel.defaultInput}). */
  inputName?: string;
  /** For `wrt: 'params'`: which initializers to differentiate (default: all float32 ones). */
  trainable?: (name: string) => boolean;
}

/** Loss value and gradients; the caller disposes the gradient tensors. */
export interface LossGrads {
  /** Mean softmax cross-entropy over the batch. */
  loss: number;
  /** By initializer name (`wrt: 'params'`; variables not on the output's path are absent) or by input name. */
  grads: Record<string, tf.Tensor>;
}

/**
 * Mean softmax cross-entropy of `logits` [N, K] against integer labels [N].
 * Differentiable; the caller disposes the result.
 */
export function softmaxCrossEntropy(logits: tf.Tensor, labels: tf.Tensor1D): tf.Scalar {
  return tf.tidy(() => {
    if (logits.rank !== 2) throw new RangeError(`logits must be [batch, classes], got shape [${logits.shape}]`);
    if (labels.shape[0] !== logits.shape[0]) throw new RangeError(`labels: expected ${logits.shape[0]} (the batch size), got ${labels.shape[0]}`);
    const onehot = tf.oneHot(tf.cast(labels, 'int32'), logits.shape[1]!);
    return tf.neg(tf.mean(tf.sum(tf.mul(onehot, tf.logSoftmax(logits)), 1))) as tf.Scalar;
  });
}

function labelTensor(labels: Labels): tf.Tensor1D {
  if (labels instanceof tf.Tensor) return tf.cast(labels, 'int32');
  return tf.tensor1d(Int32Array.from(labels as ArrayLike<number>), 'int32');
}

// ---------------------------------------------------------------- graph preparation

/** A graph made ready to run: nodes in dependency order with what each reads. */
interface Prepared {
  graph: GraphProto;
  nodes: NodeProto[];
  /** Per node (same order): every value it reads, including If branches' outer-scope reads. */
  reads: string[][];
  /** Value name → index of the node that produces it. */
  producer: Map<string, number>;
  /** Names this graph reads from enclosing scopes. */
  free: Set<string>;
  /** Branch graphs of If nodes. */
  subgraphs: Map<GraphProto, Prepared>;
  /** Subgraph initializers (main-graph ones are held by the model); filled by loadSubgraphConsts. */
  consts: Map<string, { tensor: tf.Tensor; known?: number[] }>;
}

function isDefaultDomain(d: string | undefined): boolean {
  return d === undefined || d === '' || d === 'ai.onnx';
}

/**
 * Node indices in an order where every node follows the producers of what it
 * reads: the file order when it already is one (ONNX requires it), else
 * Kahn's algorithm. Shorter than the node count when there is a cycle.
 */
function topoOrder(reads: readonly string[][], producer: ReadonlyMap<string, number>): number[] {
  if (reads.every((r, i) => r.every((x) => (producer.get(x) ?? -1) < i))) return reads.map((_, i) => i);
  const deps = reads.map((r) => new Set(r.flatMap((x) => (producer.has(x) ? [producer.get(x)!] : []))));
  const users: number[][] = reads.map(() => []);
  deps.forEach((d, i) => { for (const p of d) users[p].push(i); });
  const pending = deps.map((d) => d.size);
  const queue = pending.flatMap((c, i) => (c === 0 ? [i] : []));
  for (let k = 0; k < queue.length; k++) {
    for (const u of users[queue[k]]) if (--pending[u] === 0) queue.push(u);
  }
  return queue;
}

function prepare(graph: GraphProto, outer: ReadonlySet<string>): Prepared {
  const local = new Set<string>();
  for (const v of graph.input) if (v.name) local.add(v.name);
  for (const t of graph.initializer) if (t.name) local.add(t.name);
  const subgraphs = new Map<GraphProto, Prepared>();
  const producer = new Map<string, number>();
  graph.node.forEach((n, i) => n.output.forEach((o) => { if (o) producer.set(o, i); }));
  const visible = new Set([...outer, ...local, ...producer.keys()]);
  const reads: string[][] = [];
  for (const n of graph.node) {
    const op = n.op_type ?? '';
    if (!isDefaultDomain(n.domain) || !Object.hasOwn(OPS, op)) {
      throw new UnsupportedModelError(
        `${nodeLabel(n)}: expected an operator the tfjs executor supports (default domain: ${Object.keys(OPS).join(', ')}), got ${n.domain ? `${n.domain}.` : ''}${op}`);
    }
    const r = n.input.filter((x) => x !== '');
    for (const a of n.attribute) {
      for (const g of [a.g, ...(a.graphs ?? [])]) {
        if (!g) continue;
        const p = prepare(g, visible);
        subgraphs.set(g, p);
        r.push(...p.free);
      }
    }
    reads.push(r);
  }
  const free = new Set<string>();
  for (const r of reads) {
    for (const x of r) {
      if (producer.has(x) || local.has(x)) continue;
      if (!outer.has(x)) throw new FormatError(`graph '${graph.name ?? ''}': a node reads '${x}', which no node, input or initializer provides`);
      free.add(x);
    }
  }
  const order = topoOrder(reads, producer);
  if (order.length !== graph.node.length) throw new FormatError(`graph '${graph.name ?? ''}': expected an acyclic graph, got a cycle among its nodes`);
  const nodes = order.map((i) => graph.node[i]);
  const sortedReads = order.map((i) => reads[i]);
  const sortedProducer = new Map<string, number>();
  nodes.forEach((n, i) => n.output.forEach((o) => { if (o) sortedProducer.set(o, i); }));
  return { graph, nodes, reads: sortedReads, producer: sortedProducer, free, subgraphs, consts: new Map() };
}

/** Creates the tensors of subgraph initializers (after the whole model validated, so a rejected model allocates nothing). */
function loadSubgraphConsts(p: Prepared): void {
  for (const s of p.subgraphs.values()) {
    for (const t of s.graph.initializer) if (t.name) s.consts.set(t.name, tensorFromProto(t, `initializer '${t.name}'`));
    loadSubgraphConsts(s);
  }
}

function disposeSubgraphConsts(p: Prepared): void {
  for (const s of p.subgraphs.values()) {
    for (const c of s.consts.values()) c.tensor.dispose();
    s.consts.clear();
    disposeSubgraphConsts(s);
  }
}

/** Values visible to a running graph: its own, then the enclosing graphs'. */
class Scope {
  private readonly vals = new Map<string, Val>();
  constructor(private readonly parent?: Scope) {}
  get(name: string): Val | undefined {
    return this.vals.get(name) ?? this.parent?.get(name);
  }
  set(name: string, v: Val): void {
    this.vals.set(name, v);
  }
}

function declaredDims(vi: ValueInfoProto | undefined): (number | null)[] | undefined {
  const dims = vi?.type?.tensor_type?.shape?.dim;
  return dims?.map((d) => (d.dim_value !== undefined && Number(d.dim_value) > 0 ? Number(d.dim_value) : null));
}

// ---------------------------------------------------------------- the model

/** An ONNX model as differentiable tfjs code. Dispose it when done. */
export class OnnxTfModel {
  /** The decoded model it was built from (writeBack's default target). */
  readonly model: OnnxModel;
  /** Default-domain opset version. */
  readonly opset: number;
  /** Trainable variables by initializer name (every float32 initializer of the main graph). */
  readonly params: ReadonlyMap<string, tf.Variable>;
  /** Graph inputs a caller feeds (those without an initializer). */
  readonly inputNames: readonly string[];
  /** Graph outputs, in graph order. */
  readonly outputNames: readonly string[];

  private readonly consts = new Map<string, { tensor: tf.Tensor; known?: number[] }>();
  private readonly main: Prepared;
  private readonly inputInfo = new Map<string, ValueInfoProto>();
  private readonly pruned = new Map<string, number[]>();
  private readonly varToName = new Map<string, string>();
  private disposed = false;

  /**
   * Builds the executor. UnsupportedModelError naming the node when an
   * operator (or a domain other than the default one) is not supported;
   * FormatError for graphs that read undefined values or have cycles.
   */
  constructor(model: OnnxModel) {
    this.model = model;
    const opsetEntry = model.opset_import.find((o) => isDefaultDomain(o.domain));
    this.opset = opsetEntry?.version !== undefined ? Number(opsetEntry.version) : 1;
    const g = model.graph;
    this.main = prepare(g, new Set());
    const inits = new Set(g.initializer.map((t) => t.name ?? ''));
    this.inputNames = g.input.map((v) => v.name ?? '').filter((n) => !inits.has(n));
    this.outputNames = g.output.map((v) => v.name ?? '');
    for (const v of g.input) if (v.name) this.inputInfo.set(v.name, v);
    const params = new Map<string, tf.Variable>();
    try {
      for (const t of g.initializer) {
        const name = t.name ?? '';
        const where = `initializer '${name}'`;
        if (t.data_type === 1) {
          const { tensor } = tensorFromProto(t, where);
          // tfjs names variables globally; let it pick unique ones so several models can coexist.
          const v = tf.variable(tensor, true);
          tensor.dispose();
          params.set(name, v);
          this.varToName.set(v.name, name);
        } else {
          this.consts.set(name, tensorFromProto(t, where));
        }
      }
      loadSubgraphConsts(this.main);
    } catch (e) {
      for (const v of params.values()) v.dispose();
      for (const c of this.consts.values()) c.tensor.dispose();
      disposeSubgraphConsts(this.main);
      throw e;
    }
    this.params = params;
  }

  /** Decodes ONNX bytes (models/onnx codec) and builds the executor (of the class it is called on). */
  static fromBytes<T extends OnnxTfModel>(this: new (model: OnnxModel) => T, bytes: Uint8Array): T {
    return new this(decodeModel(bytes));
  }

  /** The input gradients and batch helpers use by default: the first one not in `exclude` (e.g. key inputs). */
  defaultInput(exclude: Iterable<string> = []): string {
    const ex = new Set(exclude);
    const name = this.inputNames.find((n) => !ex.has(n));
    if (name === undefined) throw new InputMismatchError(`expected a graph input besides [${[...ex].join(', ')}], got none`);
    return name;
  }

  /** Declared dims of a graph input (null for symbolic or unknown ones); undefined when it declares no shape. */
  inputDims(name: string): (number | null)[] | undefined {
    return declaredDims(this.inputInfo.get(name));
  }

  /**
   * Runs the graph on `feeds` (every graph input the requested outputs depend
   * on) and returns the requested outputs (default: all graph outputs) in
   * ONNX layout. Intermediates are freed; the caller disposes the results.
   * Under tf.grad / tf.variableGrads the results are differentiable.
   * InputMismatchError for unknown, missing or mis-shaped feeds.
   */
  predict(feeds: TensorFeeds, outputs: readonly string[] = this.outputNames): Record<string, tf.Tensor> {
    if (this.disposed) throw new RangeError('this OnnxTfModel has been disposed');
    const order = this.prune(outputs);
    this.checkFeeds(feeds, order, outputs);
    const owned = new Set<number>([...Object.values(feeds), ...this.params.values(), ...[...this.consts.values()].map((c) => c.tensor)].map((t) => t.id));
    return tf.tidy(() => {
      const scope = new Scope();
      for (const [n, v] of this.params) scope.set(n, Val.of(v));
      for (const [n, c] of this.consts) scope.set(n, Val.of(c.tensor, c.known));
      for (const [n, t] of Object.entries(feeds)) scope.set(n, Val.of(t));
      this.execute(this.main, order, scope);
      const out: Record<string, tf.Tensor> = {};
      for (const name of outputs) {
        const v = scope.get(name);
        if (!v) throw new InputMismatchError(`output '${name}': expected a value the graph computes, got none`);
        // Never hand out a feed, variable or constant itself: the caller disposes results.
        out[name] = owned.has(v.t.id) ? tf.clone(v.t) : v.t;
      }
      return out;
    });
  }

  private prune(outputs: readonly string[]): number[] {
    const key = outputs.join('\u0000');
    const hit = this.pruned.get(key);
    if (hit) return hit;
    const { producer, reads, nodes } = this.main;
    const need = new Set<number>();
    const stack: string[] = [];
    for (const o of outputs) {
      if (!producer.has(o) && !this.inputInfo.has(o) && !this.params.has(o) && !this.consts.has(o)) {
        throw new RangeError(`output '${o}': expected a value of the graph (outputs: ${this.outputNames.join(', ')}), got an unknown name`);
      }
      stack.push(o);
    }
    while (stack.length) {
      const p = producer.get(stack.pop()!);
      if (p === undefined || need.has(p)) continue;
      need.add(p);
      stack.push(...reads[p]);
    }
    const order = nodes.map((_, i) => i).filter((i) => need.has(i));
    this.pruned.set(key, order);
    return order;
  }

  private checkFeeds(feeds: TensorFeeds, order: readonly number[], outputs: readonly string[]): void {
    for (const name of Object.keys(feeds)) {
      if (!this.inputInfo.has(name)) throw new InputMismatchError(`feed '${name}': expected one of the graph inputs [${this.inputNames.join(', ')}], got an unknown name`);
    }
    const used = new Set<string>(outputs);
    for (const i of order) for (const r of this.main.reads[i]) used.add(r);
    for (const name of this.inputNames) {
      const t = feeds[name];
      if (t === undefined) {
        if (used.has(name)) throw new InputMismatchError(`input '${name}': expected a feed, got none`);
        continue;
      }
      const vi = this.inputInfo.get(name)!;
      const et = vi.type?.tensor_type?.elem_type;
      if (et !== undefined && et !== 0) {
        const want = tfDType(et, `input '${name}'`);
        if (t.dtype !== want) throw new InputMismatchError(`input '${name}': expected a ${want} tensor, got ${t.dtype}`);
      }
      const dims = declaredDims(vi);
      if (dims && (dims.length !== t.rank || dims.some((d, i) => d !== null && d !== t.shape[i]))) {
        throw new InputMismatchError(`input '${name}': expected shape [${dims.map((d) => d ?? '?').join(', ')}], got [${t.shape.join(', ')}]`);
      }
    }
  }

  private execute(p: Prepared, order: readonly number[], scope: Scope): void {
    for (const i of order) {
      const node = p.nodes[i];
      const where = nodeLabel(node);
      const env: OpEnv = {
        node, where, opset: this.opset, attrs: new Attrs(node),
        input: (k) => {
          const name = node.input[k];
          if (name === undefined || name === '') return undefined;
          const v = scope.get(name);
          if (!v) throw new InputMismatchError(`${where}: expected value '${name}' to be fed or computed, got none`);
          return v;
        },
        need: (k) => {
          const v = env.input(k);
          if (!v) throw new FormatError(`${where}: expected input ${k}, got none`);
          return v;
        },
        subgraph: (g) => this.runSubgraph(p.subgraphs.get(g)!, scope),
      };
      const outs = OPS[node.op_type!](env);
      node.output.forEach((name, k) => {
        if (!name) return;
        const v = outs[k];
        if (!v) throw new UnsupportedModelError(`${where}: output ${k} ('${name}') is not produced by the tfjs executor`);
        scope.set(name, v);
      });
    }
  }

  private runSubgraph(p: Prepared, outer: Scope): Val[] {
    const scope = new Scope(outer);
    for (const [n, c] of p.consts) scope.set(n, Val.of(c.tensor, c.known));
    this.execute(p, p.nodes.map((_, i) => i), scope);
    return p.graph.output.map((o) => {
      const v = scope.get(o.name ?? '');
      if (!v) throw new FormatError(`subgraph '${p.graph.name ?? ''}': output '${o.name ?? ''}' is never computed`);
      return v;
    });
  }

  /** The logits output `outputName` for `feeds`; the caller disposes it. */
  protected logits(feeds: TensorFeeds, outputName: string): tf.Tensor {
    return this.predict(feeds, [outputName])[outputName];
  }

  /** The trainable variables `trainable` selects (default: all). RangeError when it selects none. */
  protected selectVars(trainable?: (name: string) => boolean): tf.Variable[] {
    const vars = [...this.params].filter(([n]) => !trainable || trainable(n)).map(([, v]) => v);
    if (vars.length === 0) throw new RangeError('expected at least one trainable initializer, got none');
    return vars;
  }

  /**
   * Mean softmax cross-entropy of the logits output against `labels`, and its
   * gradient w.r.t. the parameters or the input. The caller disposes `grads`.
   */
  lossAndGrads(feeds: TensorFeeds, labels: Labels, opts: LossGradOptions): LossGrads {
    const outputName = opts.outputName ?? this.outputNames[0];
    const y = labelTensor(labels);
    try {
      if (opts.wrt === 'params') {
        const { value, grads } = tf.variableGrads(() => softmaxCrossEntropy(this.logits(feeds, outputName), y), this.selectVars(opts.trainable));
        const loss = value.dataSync()[0];
        value.dispose();
        const named: Record<string, tf.Tensor> = {};
        for (const [vn, g] of Object.entries(grads)) named[this.varToName.get(vn) ?? vn] = g;
        return { loss, grads: named };
      }
      if (opts.wrt !== 'input') throw new RangeError(`wrt must be 'params' or 'input', got ${String(opts.wrt)}`);
      const inputName = opts.inputName ?? this.defaultInput();
      const x = feeds[inputName];
      if (!x) throw new InputMismatchError(`input '${inputName}': expected a feed to differentiate, got none`);
      const { value, grad } = tf.valueAndGrad((xi: tf.Tensor) => softmaxCrossEntropy(this.logits({ ...feeds, [inputName]: xi }, outputName), y))(x);
      const loss = value.dataSync()[0];
      value.dispose();
      return { loss, grads: { [inputName]: grad } };
    } finally {
      y.dispose();
    }
  }

  /**
   * Writes every variable's current value into the float32 initializer of the
   * same name in `target` (default: the model this executor was built from)
   * and returns `target`, ready for encodeModel.
   */
  writeBack(target: OnnxModel = this.model): OnnxModel {
    for (const [name, v] of this.params) setInitializer(target, name, v.dataSync() as Float32Array);
    return target;
  }

  /** Frees the variables and constants. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const v of this.params.values()) v.dispose();
    for (const c of this.consts.values()) c.tensor.dispose();
    disposeSubgraphConsts(this.main);
  }
}
