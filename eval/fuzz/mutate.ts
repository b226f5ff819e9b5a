/**
 * Mutations of a valid file, as fast-check values: byte edits, truncations,
 * insertions, spliced copies, pure random bytes, and tree edits on a decoded
 * layer (wrong types, huge numbers, long strings, deep nesting, tags, missing
 * and unknown fields) re-signed or re-sealed by the layer. A mutation is plain
 * data, so fast-check prints and shrinks it.
 */
import fc from 'fast-check';
import { encodeRaw, Raw, RAW_ITEMS } from './raw.ts';
import type { Target } from './targets.ts';

/** One edit of a decoded tree: which node (`path`), what to do (`op`), with what (`value`, `n`). */
export interface TreeOp {
  path: number;
  op: number;
  value: number;
  n: number;
}

/** A way to derive a hostile input from a target's sample. */
export type Mutation =
  | { kind: 'edits'; edits: [number, number, number][] }
  | { kind: 'truncate'; at: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'splice'; from: number; len: number; to: number }
  | { kind: 'random'; bytes: Uint8Array }
  | { kind: 'tree'; layer: number; ops: TreeOp[] };

const RAW_NAMES = Object.keys(RAW_ITEMS);
const cap = (n: number, max: number): number => n % (max + 1);

/** Hostile replacement values; `n` sizes the long ones. */
const HOSTILE: ((n: number) => unknown)[] = [
  () => 'x', () => '', () => 0, () => -1, () => 1.5, () => Number.NaN, () => Number.POSITIVE_INFINITY,
  () => 2 ** 53, () => 2n ** 64n - 1n, () => -(2n ** 63n), (n) => n, (n) => -n - 1, (n) => n * 2 ** 32,
  () => true, () => false, () => [], () => ({}), () => new Uint8Array(0), (n) => new Uint8Array(cap(n, 70)),
  (n) => 'a'.repeat(cap(n, 1_100_000)), (n) => '\u{1F512}'.repeat(cap(n, 5000)), (n) => new Uint8Array(cap(n, 1_100_000)).fill(0xa5),
  (n) => new Array(cap(n, 100_000)).fill(0), (n) => new Array(cap(n, 1000)).fill('id'),
  (n) => Object.fromEntries(Array.from({ length: cap(n, 10_000) }, (_, i) => [`k${i}`, i])),
  (n) => ({ format: 'keylock/klg', version: 1, nested: [[[[n]]]] }),
];
/** Values only a hand-made encoder writes (raw.ts); they come after the plain ones. */
const PLAIN = HOSTILE.length;
HOSTILE.push(...RAW_NAMES.map((name) => () => new Raw(RAW_ITEMS[name](), name)));

/** Three plain hostile values for each raw one: most edits should get past the CBOR checks to the field checks. */
const valueArb = fc.oneof({ arbitrary: fc.nat(PLAIN - 1), weight: 3 }, { arbitrary: fc.integer({ min: PLAIN, max: HOSTILE.length - 1 }), weight: 1 });

const nodeKinds = fc.nat();
/** Sizes for long values: mostly small, sometimes past a field limit, rarely past a file limit. */
const sizeArb = fc.oneof({ arbitrary: fc.nat(300), weight: 6 }, { arbitrary: fc.nat(70_000), weight: 3 }, { arbitrary: fc.nat(2_000_000), weight: 1 });

/** The mutation arbitrary (every kind, weighted toward structure-aware ones). */
export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { arbitrary: fc.record({ kind: fc.constant('edits' as const), edits: fc.array(fc.tuple(fc.nat(), fc.nat(3), fc.nat(255)), { minLength: 1, maxLength: 8 }) }), weight: 3 },
  { arbitrary: fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('splice' as const), from: fc.nat(), len: fc.nat(512), to: fc.nat() }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('random' as const), bytes: fc.uint8Array({ maxLength: 2048 }) }), weight: 1 },
  {
    arbitrary: fc.record({
      kind: fc.constant('tree' as const),
      layer: fc.nat(),
      ops: fc.array(fc.record({ path: nodeKinds, op: fc.nat(6), value: valueArb, n: sizeArb }), { minLength: 1, maxLength: 3 }),
    }),
    weight: 6,
  },
);

type Path = (string | number)[];

/** Nodes enumerated per tree at most (a tree grown by earlier edits is not walked whole). */
const MAX_PATHS = 20_000;
/** Bytes a "many copies" edit may add. */
const MAX_GROWTH = 2 << 20;

/** Every node of a tree (the root too), depth first, up to MAX_PATHS. */
function paths(tree: unknown): Path[] {
  const out: Path[] = [];
  const walk = (v: unknown, p: Path): void => {
    if (out.length >= MAX_PATHS) return;
    out.push(p);
    if (v instanceof Uint8Array || v instanceof Raw || v === null || typeof v !== 'object') return;
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, [...p, i]));
    else for (const [k, x] of Object.entries(v)) walk(x, [...p, k]);
  };
  walk(tree, []);
  return out;
}

function get(tree: unknown, p: Path): unknown {
  let v = tree;
  for (const k of p) v = (v as Record<string | number, unknown>)[k];
  return v;
}

/** Replaces the node at `p`; returns the new root. */
function set(tree: unknown, p: Path, value: unknown): unknown {
  if (!p.length) return value;
  (get(tree, p.slice(0, -1)) as Record<string | number, unknown>)[p[p.length - 1]] = value;
  return tree;
}

/**
 * A copy of a node for "many copies": arrays and maps are cloned (a later
 * edit of one copy must not grow them all); values no edit changes in place
 * (numbers, text, byte strings, which edits replace by a changed copy, and
 * Raw items) are shared. A plain recursive copy: structuredClone's fixed cost
 * per call, paid for tens of thousands of copies and for every input's tree
 * (with the model's bytes in it), was most of the campaign's time.
 */
function copyOf(x: unknown): unknown {
  if (x === null || typeof x !== 'object' || x instanceof Uint8Array || x instanceof Raw) return x;
  if (Array.isArray(x)) return x.map(copyOf);
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(x)) out[k] = copyOf((x as Record<string, unknown>)[k]);
  return out;
}

function applyTreeOp(tree: unknown, o: TreeOp): unknown {
  const all = paths(tree);
  const p = all[o.path % all.length];
  const node = get(tree, p);
  const parent = p.length ? get(tree, p.slice(0, -1)) : undefined;
  const hostile = (): unknown => HOSTILE[o.value % HOSTILE.length](o.n);
  switch (o.op) {
    case 0: // another value, usually of the wrong type or size
      return set(tree, p, hostile());
    case 1: // gone
      if (Array.isArray(parent)) parent.splice(p[p.length - 1] as number, 1);
      else if (parent && typeof parent === 'object') delete (parent as Record<string, unknown>)[p[p.length - 1] as string];
      else return new Raw(new Uint8Array(0), 'empty');
      return tree;
    case 2: // an extra field or element
      if (Array.isArray(node)) node.push(hostile());
      else if (node && typeof node === 'object' && !(node instanceof Uint8Array) && !(node instanceof Raw)) (node as Record<string, unknown>)[`extra${o.n % 7}`] = hostile();
      else return set(tree, p, [node, hostile()]);
      return tree;
    case 3: { // many copies (long arrays of real entries), up to MAX_GROWTH bytes
      const size = (v: unknown): number => (v instanceof Raw ? v.bytes.byteLength : encodeRaw(v).byteLength) || 1;
      if (Array.isArray(node) && node.length) {
        // The growth is counted per copy: the entries copied differ in size (an earlier edit may have
        // grown one to MAX_GROWTH), so a budget from the first entry alone let one edit add gigabytes.
        const original = node.length;
        // Each original entry's size once, not once per copy (encoding every copy again was quadratic).
        const sizes = new Map<number, number>();
        let grown = 0;
        for (let i = 0; i < cap(o.n, 70_000); i++) {
          const j = i % original;
          const x = node[j];
          let sz = sizes.get(j);
          if (sz === undefined) sizes.set(j, (sz = size(x)));
          grown += sz;
          if (grown > MAX_GROWTH) break;
          node.push(copyOf(x));
        }
        return tree;
      }
      // Copies, not one shared reference: a later edit of one copy must not grow them all.
      const n = Math.min(cap(o.n, 70_000), Math.floor(MAX_GROWTH / size(node)));
      return set(tree, p, Array.from({ length: n }, () => copyOf(node)));
    }
    case 4: // bytes or text edited in place
      if (node instanceof Uint8Array && node.byteLength) {
        const b = node.slice();
        b[o.n % b.byteLength] ^= 1 << (o.value % 8);
        return set(tree, p, o.value % 3 === 0 ? b.subarray(0, o.n % b.byteLength) : b);
      }
      if (typeof node === 'string') return set(tree, p, node.length ? node.slice(0, o.n % node.length) + String.fromCharCode(o.value * 37 % 0x3000) + node.slice(o.n % node.length + 1) : 'y');
      return set(tree, p, hostile());
    case 5: { // another node's value moved here (right type, wrong place)
      const q = all[o.value % all.length];
      return set(tree, p, copyOf(get(tree, q) instanceof Raw ? 0 : get(tree, q)));
    }
    default: // numbers nudged to their edges
      if (typeof node === 'number' || typeof node === 'bigint') {
        const edges = [0, -1, Number(node) + 1, Number(node) - 1, 2 ** 32, 2 ** 53 - 1, 2 ** 53 + 1, o.n];
        return set(tree, p, edges[o.value % edges.length]);
      }
      return set(tree, p, hostile());
  }
}

/** The bytes a mutation makes from `target`'s sample. */
export function applyMutation(target: Target, m: Mutation): Uint8Array {
  const s = target.sample;
  const len = s.byteLength;
  switch (m.kind) {
    case 'edits': {
      let b = Array.from(s);
      for (const [at, op, v] of m.edits) {
        const i = b.length ? at % b.length : 0;
        if (op === 0 && b.length) b[i] = v;
        else if (op === 1 && b.length) b[i] ^= 1 << (v % 8);
        else if (op === 2) b.splice(i, 0, v);
        else b = b.filter((_, j) => j !== i);
      }
      return Uint8Array.from(b);
    }
    case 'truncate':
      return s.slice(0, m.at % (len + 1));
    case 'insert': {
      const i = m.at % (len + 1);
      return Uint8Array.from([...s.subarray(0, i), ...m.bytes, ...s.subarray(i)]);
    }
    case 'splice': {
      const from = m.from % len;
      const chunk = s.subarray(from, Math.min(len, from + m.len));
      const to = m.to % (len + 1);
      return Uint8Array.from([...s.subarray(0, to), ...chunk, ...s.subarray(to)]);
    }
    case 'random':
      return m.bytes;
    case 'tree': {
      const layer = target.layers[m.layer % target.layers.length];
      let tree = copyOf(layer.tree);
      for (const o of m.ops) tree = applyTreeOp(tree, o);
      return layer.rebuild(tree);
    }
  }
}

/** Short description of a mutation for logs. */
export function describeMutation(target: Target, m: Mutation): string {
  if (m.kind !== 'tree') return m.kind;
  const layer = target.layers[m.layer % target.layers.length];
  return `tree:${layer.name}:${m.ops.map((o) => `op${o.op}/v${o.value % HOSTILE.length}`).join(',')}`;
}
