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
 * the heap) and zeroed, except its first and last 32 bytes, where the
 * allocator keeps its free-list fields. A copy whose bytes differ (the block
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

/** Inputs smaller than this are not searched for (their copies are not worth a heap scan). */
const MIN_BYTES = 256;
/** Bytes left at each end of a freed block: the allocator's fields. */
const EDGE = 32;

/** Per session: where each input's copy was last found. */
export class InputScrubber {
  private readonly at = new Map<string, number>();

  /** After a run: zeroes the heap's copy of input `name` whose bytes are `data`. Returns the bytes zeroed. */
  scrub(name: string, data: Uint8Array): number {
    if (!heap || data.byteLength < MIN_BYTES) return 0;
    const h = new Uint8Array(heap.buffer);
    const inner = data.subarray(EDGE, data.byteLength - EDGE);
    let addr = this.at.get(name);
    if (addr === undefined || !sameAt(h, addr + EDGE, inner)) {
      addr = find(h, inner);
      if (addr === undefined) { this.at.delete(name); return 0; }
      addr -= EDGE;
      this.at.set(name, addr);
    }
    h.fill(0, addr + EDGE, addr + data.byteLength - EDGE);
    return inner.byteLength;
  }
}

function sameAt(h: Uint8Array, at: number, b: Uint8Array): boolean {
  if (at < 0 || at + b.byteLength > h.byteLength) return false;
  for (let i = 0; i < b.byteLength; i++) if (h[at + i] !== b[i]) return false;
  return true;
}

/** The first 4-aligned address of the heap holding `b` (malloc aligns to 8 at least). */
function find(h: Uint8Array, b: Uint8Array): number | undefined {
  const w = new Uint32Array(h.buffer, 0, h.byteLength >>> 2);
  const first = (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
  for (let i = 0; i < w.length; i++) {
    if (w[i] !== first) continue;
    if (sameAt(h, 4 * i, b)) return 4 * i;
  }
  return undefined;
}
