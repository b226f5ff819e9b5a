/**
 * Schema-driven traversal of ONNX message trees: tensors and attributes live at
 * many depths (initializers, Constant nodes, If/Loop bodies, training graphs,
 * functions), and walking by the schema's reflection finds all of them.
 */
import protobuf from 'protobufjs';

type Obj = Record<string, unknown>;

/** Rewrites one message; returns the same object when nothing changes. */
export type MessageMapper = (obj: Obj, path: string) => Obj;

function allTypes(ns: protobuf.NamespaceBase, out: protobuf.Type[] = []): protobuf.Type[] {
  for (const n of ns.nestedArray) {
    if (n instanceof protobuf.Type) out.push(n);
    if (n instanceof protobuf.Namespace) allTypes(n, out);
  }
  return out;
}

/** Message-typed fields of `t`, with their types. */
function messageFields(t: protobuf.Type): { field: protobuf.Field; type: protobuf.Type }[] {
  const r: { field: protobuf.Field; type: protobuf.Type }[] = [];
  for (const f of t.fieldsArray) if (f.resolvedType instanceof protobuf.Type) r.push({ field: f, type: f.resolvedType });
  return r;
}

const reachCache = new WeakMap<protobuf.Type, Map<string, Set<protobuf.Type>>>();

/** Types from which a message of one of `targets` can be reached (the schema is recursive, so a fixed point). */
function reaching(root: protobuf.Type, targets: readonly string[]): Set<protobuf.Type> {
  const key = targets.join('|');
  let perRoot = reachCache.get(root);
  if (!perRoot) reachCache.set(root, (perRoot = new Map()));
  const hit = perRoot.get(key);
  if (hit) return hit;
  const types = allTypes(root.root);
  const reach = new Set(types.filter((t) => targets.includes(t.fullName)));
  for (let changed = true; changed;) {
    changed = false;
    for (const t of types) {
      if (reach.has(t)) continue;
      if (messageFields(t).some((m) => reach.has(m.type))) { reach.add(t); changed = true; }
    }
  }
  perRoot.set(key, reach);
  return reach;
}

function label(path: string, v: unknown): string {
  const name = (v as Obj).name;
  return typeof name === 'string' && name !== '' ? `${path}('${name}')` : path;
}

/**
 * Maps every message of a type named in `mappers` (full names like `.onnx.TensorProto`),
 * children before parents, copying only the objects on changed paths: the input
 * tree is never modified.
 */
export function mapMessages(type: protobuf.Type, obj: Obj, mappers: Readonly<Record<string, MessageMapper>>, path = ''): Obj {
  const reach = reaching(type, Object.keys(mappers));
  const visit = (t: protobuf.Type, o: Obj, p: string): Obj => {
    let out = o;
    for (const { field, type: ft } of messageFields(t)) {
      if (!reach.has(ft)) continue;
      const v = o[field.name];
      if (v === undefined || v === null) continue;
      if (field.repeated) {
        if (!Array.isArray(v)) continue; // fromObject reports the shape error
        let arr: unknown[] = v;
        for (let i = 0; i < v.length; i++) {
          const c: unknown = v[i];
          if (c === null || typeof c !== 'object') continue;
          const nc = visit(ft, c as Obj, label(`${p}.${field.name}[${i}]`, c));
          if (nc !== c) {
            if (arr === v) arr = v.slice();
            arr[i] = nc;
          }
        }
        if (arr !== v) {
          if (out === o) out = { ...o };
          out[field.name] = arr;
        }
      } else if (typeof v === 'object') {
        const nc = visit(ft, v as Obj, label(`${p}.${field.name}`, v));
        if (nc !== v) {
          if (out === o) out = { ...o };
          out[field.name] = nc;
        }
      }
    }
    const m = mappers[t.fullName];
    return m ? m(out, p) : out;
  };
  return visit(type, obj, path || type.name);
}

/** Calls `fn` on every message of the named types (a read-only `mapMessages`). */
export function forEachMessage(type: protobuf.Type, obj: object, typeName: string, fn: (obj: Obj, path: string) => void): void {
  mapMessages(type, obj as Obj, { [typeName]: (o, p) => { fn(o, p); return o; } });
}

function fieldNumberOf(raw: Uint8Array): number {
  let tag = 0;
  for (let i = 0, shift = 0; i < raw.length && i < 5; i++, shift += 7) {
    tag += (raw[i]! & 0x7f) * 2 ** shift;
    if (raw[i]! < 0x80) break;
  }
  return Math.floor(tag / 8);
}

/**
 * The first place in a decoded protobufjs message tree that holds fields (or enum
 * values) the schema does not know, or undefined. Needs a reader with
 * `discardUnknown = false`; protobufjs keeps such fields in `$unknowns`.
 */
export function findUnknownFields(type: protobuf.Type, msg: protobuf.Message): { path: string; fields: number[] } | undefined {
  const visit = (t: protobuf.Type, m: Obj, p: string): { path: string; fields: number[] } | undefined => {
    const unknowns = m.$unknowns as Uint8Array[] | undefined;
    if (unknowns && unknowns.length > 0) return { path: p, fields: unknowns.map(fieldNumberOf) };
    for (const { field, type: ft } of messageFields(t)) {
      const v = m[field.name];
      if (v === undefined || v === null) continue;
      if (field.repeated) {
        const arr = v as Obj[];
        for (let i = 0; i < arr.length; i++) {
          const r = visit(ft, arr[i]!, label(`${p}.${field.name}[${i}]`, arr[i]));
          if (r) return r;
        }
      } else {
        const r = visit(ft, v as Obj, label(`${p}.${field.name}`, v));
        if (r) return r;
      }
    }
    return undefined;
  };
  return visit(type, msg as unknown as Obj, type.name);
}
