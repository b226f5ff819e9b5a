/**
 * The WebAssembly SIMD ChaCha20 / XChaCha20 of keystore/wasm/chacha.c, and the
 * arena that `sealed` inline runs decrypt in (runtime/keys/sealed.ts).
 *
 * An arena is one instance of the module over a memory of its own, sized once
 * for one model: the derived key, one nonce per tensor, each tensor's
 * ciphertext and each tensor's run buffer, 64-byte aligned. The run buffers
 * are views of that memory handed to the backend as the inline inputs; before
 * a run the module XORs each ciphertext with its keystream straight into its
 * buffer, after the run the buffers are zeroed. The memory never grows (the
 * views stay valid), nothing is allocated per run, and no plaintext passes
 * through another buffer that could be freed uncleared. The module's stack,
 * at [0, 16 KiB) (build-chacha.sh puts it first), is zeroed after each
 * decryption: the tail's keystream is written there.
 *
 * The module is adopted only after it reproduced @noble/ciphers' XChaCha20 and
 * ChaCha20 on a known input; where it cannot run (no WebAssembly SIMD, or it
 * failed that check) `createXChachaArena` returns null and the caller keeps its
 * JavaScript path.
 */
import { chacha20, xchacha20 } from '@noble/ciphers/chacha.js';
import { CHACHA_WASM_BASE64 } from './chacha-wasm.ts';

interface Exports {
  hchacha(out: number, key: number, nonce: number): void;
  chacha20_xor(dst: number, src: number, len: number, key: number, nonce: number, ctr: number): void;
  xchacha20_xor(dst: number, src: number, len: number, key: number, nonce: number, ctr: number): void;
  __heap_base: WebAssembly.Global;
}

/** The module's stack, first in its memory (build-chacha.sh `--stack-first`, `stack-size`). */
const STACK = 16384;
const PAGE = 65536;
const ALIGN = 64;
/** Most bytes one arena may hold: a 32-bit WebAssembly memory, less room for its stack and table. */
const MAX_ARENA = 0xffff_0000 - 2 * PAGE;

let compiled: WebAssembly.Module | null | undefined;
let pending: Promise<boolean> | undefined;
let forceJs = false;

function moduleBytes(): Uint8Array<ArrayBuffer> {
  const s = atob(CHACHA_WASM_BASE64);
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i);
  return b;
}

/** One instance over a fresh memory of `bytes` (plus the stack), or null if the engine refuses. */
function instantiate(m: WebAssembly.Module, bytes: number): { w: Exports; memory: WebAssembly.Memory; base: number } | null {
  const pages = Math.ceil((STACK + PAGE + bytes) / PAGE);
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
  const w = new WebAssembly.Instance(m, { env: { memory } }).exports as unknown as Exports;
  const base = Math.ceil(Number(w.__heap_base.value) / ALIGN) * ALIGN;
  if (base < STACK || base + bytes > pages * PAGE) return null;
  return { w, memory, base };
}

/** Known answers: both exports against @noble on odd lengths that cross the 4-block step and a tail. */
function selfTest(m: WebAssembly.Module): boolean {
  const inst = instantiate(m, 4096);
  if (!inst) return false;
  const { w, memory, base } = inst;
  const mem = new Uint8Array(memory.buffer);
  const key = new Uint8Array(32).map((_, i) => i * 7 + 1);
  const nonce = new Uint8Array(24).map((_, i) => 0xa0 + i);
  const plain = new Uint8Array(1000).map((_, i) => (i * 31) & 255);
  const k = base, n = base + 32, src = base + 64, dst = base + 64 + 1024;
  mem.set(key, k); mem.set(nonce, n); mem.set(plain, src);
  w.xchacha20_xor(dst, src, plain.length, k, n, 1);
  const want = xchacha20(key, nonce, plain, undefined, 1);
  let ok = want.every((b, i) => mem[dst + i] === b);
  w.chacha20_xor(dst, src, 333, k, n, 7);
  const want2 = chacha20(key, nonce.subarray(0, 12), plain.subarray(0, 333), undefined, 7);
  ok &&= want2.every((b, i) => mem[dst + i] === b);
  return ok;
}

/** The compiled module, synchronously on first use; null where it cannot run or failed its check. */
function syncModule(): WebAssembly.Module | null {
  if (compiled !== undefined) return compiled;
  try {
    const m = new WebAssembly.Module(moduleBytes());
    compiled = selfTest(m) ? m : null;
  } catch {
    return null; // not cached: prepareChachaWasm() may still compile it asynchronously
  }
  return compiled;
}

/**
 * Compiles the module asynchronously (a browser's main thread refuses
 * synchronous compiles of modules over 4 KiB); resolves true when arenas can
 * be made.
 */
export function prepareChachaWasm(): Promise<boolean> {
  if (compiled) return Promise.resolve(true);
  pending ??= (async () => {
    try {
      if (typeof WebAssembly === 'undefined') return false;
      const m = await WebAssembly.compile(moduleBytes());
      compiled = selfTest(m) ? m : null;
      return compiled !== null;
    } catch {
      return false;
    }
  })();
  return pending;
}

/** Whether arenas run in WebAssembly here (for reports, tests and benchmarks). */
export function chachaWasmReady(): boolean {
  return !forceJs && syncModule() !== null;
}

/**
 * Makes `createXChachaArena` return null (`true`), so callers take their
 * JavaScript path, or restores the default (`false`). For tests and benchmarks
 * that compare the two; a setting in code, as `forceSecretboxJs`.
 */
export function forceChachaJs(on: boolean): void {
  forceJs = on;
}

/** One slot of an arena: the ciphertext of a tensor and its 24-byte XChaCha20 nonce. */
export interface ArenaSlot {
  ciphertext: Uint8Array;
  nonce: Uint8Array;
}

/**
 * The WebAssembly memory of one model's inline tensors: `buffers[i]` is where
 * slot i's plaintext appears during a run (a view of the arena's memory, 64-byte
 * aligned, fixed for the arena's life).
 */
export class XChachaArena {
  readonly buffers: readonly Uint8Array[];
  private readonly mem: Uint8Array;
  private wiped = false;

  private constructor(
    private readonly w: Exports,
    private readonly memory: WebAssembly.Memory,
    private readonly keyAt: number,
    private readonly slots: readonly { nonce: number; src: number; dst: number; len: number }[],
  ) {
    this.mem = new Uint8Array(memory.buffer);
    this.buffers = slots.map((s) => this.mem.subarray(s.dst, s.dst + s.len));
  }

  /** @internal */
  static make(m: WebAssembly.Module, key: Uint8Array, slots: readonly ArenaSlot[]): XChachaArena | null {
    if (key.byteLength !== 32) throw new RangeError(`XChaCha20 key must be 32 bytes, got ${key.byteLength}`);
    const up = (n: number): number => Math.ceil(n / ALIGN) * ALIGN;
    let size = ALIGN + up(24 * slots.length);
    for (const s of slots) {
      if (s.nonce.byteLength !== 24) throw new RangeError(`XChaCha20 nonce must be 24 bytes, got ${s.nonce.byteLength}`);
      size += 2 * up(s.ciphertext.byteLength);
    }
    if (size > MAX_ARENA) return null;
    const inst = instantiate(m, size);
    if (!inst) return null;
    const { w, memory, base } = inst;
    const mem = new Uint8Array(memory.buffer);
    mem.set(key, base);
    let at = base + ALIGN + up(24 * slots.length);
    const placed = slots.map((s, i) => {
      const nonce = base + ALIGN + 24 * i;
      mem.set(s.nonce, nonce);
      const src = at;
      mem.set(s.ciphertext, src);
      const dst = src + up(s.ciphertext.byteLength);
      at = dst + up(s.ciphertext.byteLength);
      return { nonce, src, dst, len: s.ciphertext.byteLength };
    });
    return new XChachaArena(w, memory, base, placed);
  }

  /** Every buffer = its ciphertext XOR its XChaCha20 keystream (from block 1, as the AEAD's payload). */
  decrypt(): void {
    if (this.wiped) throw new Error('XChaCha20 arena: used after wipe');
    try {
      for (const s of this.slots) this.w.xchacha20_xor(s.dst, s.src, s.len, this.keyAt, s.nonce, 1);
    } finally {
      this.mem.fill(0, 0, STACK);
    }
  }

  /** Zeroes every run buffer. */
  clear(): void {
    for (const b of this.buffers) b.fill(0);
  }

  /** Zeroes the whole memory (key, buffers, stack); the arena cannot be used again. */
  wipe(): void {
    this.wiped = true;
    this.mem.fill(0);
  }

  /** The arena's memory (tests check where the buffers live). */
  get memoryBuffer(): ArrayBuffer {
    return this.memory.buffer;
  }
}

/**
 * An arena holding `key` and `slots` (copied in), or null where the module
 * cannot run here, or the slots do not fit one 32-bit memory. The caller keeps
 * its own copies of nothing: `key` may be wiped after this returns.
 */
export function createXChachaArena(key: Uint8Array, slots: readonly ArenaSlot[]): XChachaArena | null {
  if (forceJs) return null;
  const m = syncModule();
  if (!m) return null;
  try {
    return XChachaArena.make(m, key, slots);
  } catch (e) {
    if (e instanceof RangeError && /must be/.test(e.message)) throw e;
    return null; // the engine refused the memory or the instance: the JavaScript path
  }
}

/**
 * One keystream XOR through a fresh instance (for known-answer tests and
 * benchmarks; the run path keeps one arena per model): `dst` = `src` XOR the
 * stream of ChaCha20 (RFC 8439, a 12-byte nonce) or XChaCha20 (a 24-byte
 * nonce) from block `counter`. Returns false where the module cannot run.
 */
export function chachaXorWasm(dst: Uint8Array, src: Uint8Array, nonce: Uint8Array, key: Uint8Array, counter: number): boolean {
  if (dst.byteLength !== src.byteLength) throw new RangeError(`ChaCha20: the output must be ${src.byteLength} bytes, got ${dst.byteLength}`);
  if (key.byteLength !== 32) throw new RangeError(`ChaCha20 key must be 32 bytes, got ${key.byteLength}`);
  if (nonce.byteLength !== 12 && nonce.byteLength !== 24) throw new RangeError(`ChaCha20 nonce must be 12 or 24 bytes, got ${nonce.byteLength}`);
  if (!Number.isInteger(counter) || counter < 0 || counter + Math.ceil(src.byteLength / 64) > 0x1_0000_0000) {
    throw new RangeError(`ChaCha20: the 32-bit block counter would pass 2^32 (from ${counter}, ${src.byteLength} bytes)`);
  }
  const m = forceJs ? null : syncModule();
  if (!m) return false;
  const n = src.byteLength;
  const inst = instantiate(m, 128 + 2 * n);
  if (!inst) return false;
  const { w, memory, base } = inst;
  const mem = new Uint8Array(memory.buffer);
  try {
    mem.set(key, base);
    mem.set(nonce, base + 32);
    mem.set(src, base + 128);
    (nonce.byteLength === 24 ? w.xchacha20_xor : w.chacha20_xor)(base + 128 + n, base + 128, n, base, base + 32, counter);
    dst.set(mem.subarray(base + 128 + n, base + 128 + 2 * n));
  } finally {
    mem.fill(0);
  }
  return true;
}

/** HChaCha20 of (key, nonce16) in WebAssembly (known-answer tests); null where the module cannot run. */
export function hchachaWasm(key: Uint8Array, nonce16: Uint8Array): Uint8Array | null {
  const m = forceJs ? null : syncModule();
  const inst = m && instantiate(m, 128);
  if (!inst) return null;
  const { w, memory, base } = inst;
  const mem = new Uint8Array(memory.buffer);
  mem.set(key, base);
  mem.set(nonce16, base + 32);
  w.hchacha(base + 64, base, base + 32);
  const out = mem.slice(base + 64, base + 96);
  mem.fill(0);
  return out;
}
