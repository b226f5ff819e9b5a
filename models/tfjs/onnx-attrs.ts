/**
 * Typed access to an ONNX node's attributes, with ONNX's defaults supplied by
 * the caller and wrong attribute types reported against the node.
 */
import { FormatError } from '../../keystore/errors.ts';
import { AttributeType, type AttributeProto, type GraphProto, type Int64, type NodeProto, type TensorProto } from '../onnx/types.ts';

const TYPE_NAMES: Record<number, string> = Object.fromEntries(Object.entries(AttributeType).map(([k, v]) => [v, k]));

function num(v: Int64): number {
  return typeof v === 'bigint' ? Number(v) : v;
}

/** `node 'name' (OpType)`, for messages. */
export function nodeLabel(node: NodeProto): string {
  return `node '${node.name ?? ''}' (${node.domain ? `${node.domain}.` : ''}${node.op_type ?? '?'})`;
}

/** The attributes of one node. */
export class Attrs {
  private readonly byName = new Map<string, AttributeProto>();

  constructor(private readonly node: NodeProto) {
    for (const a of node.attribute ?? []) if (a.name) this.byName.set(a.name, a);
  }

  /** True when the node sets attribute `name`. */
  has(name: string): boolean {
    return this.byName.has(name);
  }

  private get(name: string, type: number): AttributeProto | undefined {
    const a = this.byName.get(name);
    if (a === undefined) return undefined;
    // Old exporters leave `type` unset; accept the field being present then.
    if (a.type !== undefined && a.type !== type) {
      throw new FormatError(`${nodeLabel(this.node)}: attribute ${name}: expected type ${TYPE_NAMES[type]}, got ${TYPE_NAMES[a.type] ?? a.type}`);
    }
    return a;
  }

  /** An INT attribute as a number, or `def` when absent. */
  int(name: string, def: number): number {
    const a = this.get(name, AttributeType.INT);
    return a?.i === undefined ? def : num(a.i);
  }

  /** An INTS attribute as numbers, or undefined when absent. */
  ints(name: string): number[] | undefined {
    const a = this.get(name, AttributeType.INTS);
    return a ? a.ints.map(num) : undefined;
  }

  /** A FLOAT attribute, or `def` when absent. */
  float(name: string, def: number): number {
    const a = this.get(name, AttributeType.FLOAT);
    return a?.f === undefined ? def : a.f;
  }

  /** A FLOATS attribute, or undefined when absent. */
  floats(name: string): number[] | undefined {
    return this.get(name, AttributeType.FLOATS)?.floats;
  }

  /** A STRING attribute decoded as UTF-8, or `def` when absent. */
  str(name: string, def: string): string {
    const a = this.get(name, AttributeType.STRING);
    return a?.s === undefined ? def : new TextDecoder().decode(a.s);
  }

  /** A TENSOR attribute, or undefined when absent. */
  tensor(name: string): TensorProto | undefined {
    return this.get(name, AttributeType.TENSOR)?.t;
  }

  /** A GRAPH attribute (If branches), or undefined when absent. */
  graph(name: string): GraphProto | undefined {
    return this.get(name, AttributeType.GRAPH)?.g;
  }
}
