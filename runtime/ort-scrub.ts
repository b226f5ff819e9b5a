/**
 * Clears onnxruntime-web's copies of the inputs after each run.
 *
 * onnxruntime-web copies every input into its WebAssembly heap for the run
 * (`_malloc`, `HEAPU8.set` in its `prepareInputOutputTensor`) and frees the
 * copy afterwards without clearing it, so the last run's inputs stay readable
 * in the heap between runs. For `sealed` inline those inputs are the model's
 * weights. ORT's API does not expose the heap; its memory is caught once, as
 * ORT instantiates its module (the `WebAssembly.Memory` it passes in the
 * imports), and after each run every copy of an input still holding that
 * input's bytes is found (at the address it had last time, or by a search of
 * the heap) and zeroed, except its first 24 and last 8 bytes, where the
 * allocator keeps its fields. Where each copy goes is seen as ORT makes it:
 * during a watched run, `Uint8Array.prototype.set` gets an own wrapper that
 * notes the heap address of each copy of a watched input (ORT writes them with
 * `HEAPU8.set(view, address)`) and otherwise does exactly what the inherited
 * `set` does; it is removed when no run is watched. ORT's allocator moves
 * some copies from run to run (the `sealed` inline embedding model: about 12
 * of its 40 weight inputs each run, `eval/residency-heap.ts oww-embedding
 * scrub`), and each one moved meant a search of the whole heap after the run:
 * the backend's share of that model's inline cost on wasm fell from 5.3× to
 * 1.4× a plain run (docs/BENCH.md, section 15). The search stays as the
 * fallback for a copy the wrapper did not see. A copy whose bytes differ (the block
 * was reused) is left alone. Only with one ORT thread: with worker threads
 * another thread could take the block between the check and the write.
 */

/** ORT's heap, once caught. */
let heap: WebAssembly.Memory | undefined;

type Instantiate = (...a: unknown[]) => Promise<unknown>;

/** Runs `init` (the first ORT session creation) with WebAssembly's instantiate functions watched for ORT's memory. */
export async function catchOrtMemory<T>(init: () => Promise<T>): Promise<T> {
  if (heap) return init();
  const W = WebAssembly as unknown as Record<'instantiate' | 'instantiateStreaming', Instantiate | undefined>;
  const saved = { instantiate: W.instantiate, instantiateStreaming: W.instantiateStreaming };
  const look = (imports: unknown): void => {
    if (!imports || typeof imports !== 'object') return;
    for (const mod of Object.values(imports)) {
      if (!mod || typeof mod !== 'object') continue;
      for (const v of Object.values(mod)) if (v instanceof WebAssembly.Memory) heap ??= v;
    }
  };
  for (const k of ['instantiate', 'instantiateStreaming'] as const) {
    const orig = saved[k];
    if (orig) W[k] = function (this: unknown, ...a: unknown[]) { look(a[1]); return orig.apply(this, a); };
  }
  try {
    return await init();
  } finally {
    W.instantiate = saved.instantiate;
    if (saved.instantiateStreaming) W.instantiateStreaming = saved.instantiateStreaming;
  }
}

/** True once ORT's heap is known. */
export function ortHeapCaught(): boolean {
  return heap !== undefined;
}

/** ORT's heap once caught (for the evaluation's probes of what ORT keeps there). */
export function ortHeap(): WebAssembly.Memory | undefined {
  return heap;
}

/** Inputs smaller than this are not searched for: a shorter pattern could match bytes that are not its copy. */
const MIN_BYTES = 64;
/**
 * Bytes left at the start and at the end of a freed block: where the allocator
 * keeps its fields (dlmalloc: free-list links and tree fields at the start, the
 * boundary tag at the end). Fewer than 32 in all, so no 32-byte run of the
 * input survives; and only bytes that still equal the input are ever zeroed, so
 * an allocator that keeps more there only leaves its copy uncleared, never
 * loses a field.
 */
const HEAD = 24;
const TAIL = 8;

/** A watched input of a run in progress: its bytes, and where ORT copied them (once seen). */
interface Watched { name: string; data: Uint8Array; addr?: number }
/** The inputs of every watched run in progress (runs of several sessions may overlap at their awaits). */
const watched = new Set<Watched[]>();

/** Notes the heap address of a copy of a watched input; called by the `set` wrapper for writes into the heap. */
function note(src: Uint8Array, offset: number): void {
  for (const run of watched) {
    for (const w of run) {
      if (w.addr === undefined && w.data.buffer === src.buffer && w.data.byteOffset === src.byteOffset && w.data.byteLength === src.byteLength) {
        w.addr = offset;
        return;
      }
    }
  }
}

function heapSet(this: Uint8Array, src: ArrayLike<number>, offset?: number): void {
  if (heap !== undefined && this.buffer === heap.buffer && src instanceof Uint8Array) note(src, offset ?? 0);
  INHERITED_SET.call(this, src, offset);
}
const INHERITED_SET = Uint8Array.prototype.set;

function watch(run: Watched[]): void {
  watched.add(run);
  if (!Object.hasOwn(Uint8Array.prototype, 'set')) {
    try {
      Object.defineProperty(Uint8Array.prototype, 'set', { value: heapSet, writable: true, configurable: true, enumerable: false });
    } catch {
      // Frozen intrinsics (e.g. a hardened realm): no watching; the copies are searched for after the run.
    }
  }
}

function unwatch(run: Watched[]): void {
  watched.delete(run);
  if (watched.size === 0 && Uint8Array.prototype.set === heapSet) delete (Uint8Array.prototype as { set?: unknown }).set;
}

/** Per session: where each input's copy was last found. */
export class InputScrubber {
  private readonly at = new Map<string, number>();
  /**
   * Copies cleared where they were expected, copies that had to be searched for in the heap, and
   * copies ORT wrote at another address than the run before (for tests and benchmarks).
   */
  readonly counts = { atKnown: 0, searched: 0, moved: 0 };

  /**
   * Runs `run` (the session's run on these inputs) watching where ORT copies
   * them, then clears the copies (`scrub`), whether the run succeeded or not.
   */
  async around<T>(inputs: readonly (readonly [string, Uint8Array])[], run: () => Promise<T>): Promise<T> {
    const w: Watched[] = inputs.map(([name, data]) => ({ name, data }));
    watch(w);
    try {
      return await run();
    } finally {
      unwatch(w);
      for (const x of w) {
        if (x.addr === undefined) continue;
        const before = this.at.get(x.name);
        if (before !== undefined && before !== x.addr) this.counts.moved++;
        this.at.set(x.name, x.addr);
      }
      this.scrub(inputs);
    }
  }

  /**
   * After a run: zeroes the heap's copy of each input (name, its bytes). Copies
   * are looked for where they were last time; the ones not there are searched
   * for together, in one pass over the heap. Returns the bytes zeroed.
   */
  scrub(inputs: readonly (readonly [string, Uint8Array])[]): number {
    if (!heap) return 0;
    const h = new Uint8Array(heap.buffer);
    let zeroed = 0;
    const missing: [string, Uint8Array][] = [];
    for (const [name, data] of inputs) {
      if (data.byteLength < MIN_BYTES) continue;
      const inner = data.subarray(HEAD, data.byteLength - TAIL);
      // A constant start (zeros, a flat image) could match live memory that is not the copy: left alone.
      if (constantStart(inner)) continue;
      const addr = this.at.get(name);
      if (addr !== undefined && sameAt(h, addr + HEAD, inner)) {
        h.fill(0, addr + HEAD, addr + data.byteLength - TAIL);
        zeroed += inner.byteLength;
        this.counts.atKnown++;
      } else {
        missing.push([name, inner]);
      }
    }
    if (!missing.length) return zeroed;
    this.counts.searched += missing.length;
    const found = findAll(h, missing.map(([, inner]) => inner));
    missing.forEach(([name, inner], i) => {
      const at = found[i];
      if (at === undefined) { this.at.delete(name); return; }
      this.at.set(name, at - HEAD);
      h.fill(0, at, at + inner.byteLength);
      zeroed += inner.byteLength;
    });
    return zeroed;
  }
}

/** True when the first 32 bytes of `b` are one 4-byte word repeated. */
function constantStart(b: Uint8Array): boolean {
  for (let i = 4; i < 32; i++) if (b[i] !== b[i & 3]) return false;
  return true;
}

/** True when `h` holds `b` at `at`; by 32-bit words where both are aligned (about ten times faster on weights). */
function sameAt(h: Uint8Array, at: number, b: Uint8Array): boolean {
  if (at < 0 || at + b.byteLength > h.byteLength) return false;
  const n = b.byteLength;
  let i = 0;
  if ((h.byteOffset + at) % 4 === 0 && b.byteOffset % 4 === 0) {
    const H = new Int32Array(h.buffer, h.byteOffset + at, n >>> 2);
    const B = new Int32Array(b.buffer, b.byteOffset, n >>> 2);
    for (let k = 0; k < H.length; k++) if (H[k] !== B[k]) return false;
    i = n & ~3;
  }
  for (; i < n; i++) if (h[at + i] !== b[i]) return false;
  return true;
}

/** For each of `bs`, the first 4-aligned address of the heap holding it (malloc aligns to 8 at least): one pass. */
function findAll(h: Uint8Array, bs: readonly Uint8Array[]): (number | undefined)[] {
  const w = new Uint32Array(h.buffer, 0, h.byteLength >>> 2);
  const byFirst = new Map<number, number[]>();
  const filter = new Uint8Array(1 << 16); // by the low 16 bits of the first word: most heap words skip the map
  bs.forEach((b, i) => {
    const first = (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
    filter[first & 0xffff] = 1;
    const l = byFirst.get(first);
    if (l) l.push(i);
    else byFirst.set(first, [i]);
  });
  const out: (number | undefined)[] = bs.map(() => undefined);
  let left = bs.length;
  for (let i = 0; i < w.length && left > 0; i++) {
    if (filter[w[i] & 0xffff] === 0) continue;
    const cands = byFirst.get(w[i]);
    if (!cands) continue;
    for (const k of cands) {
      if (out[k] === undefined && sameAt(h, 4 * i, bs[k])) { out[k] = 4 * i; left--; }
    }
  }
  return out;
}
