/**
 * Opening a detached NaCl secretbox in place with the WebAssembly (SIMD128)
 * XSalsa20 and Poly1305 of keystore/wasm/secretbox.c: the load-time hot loop of
 * `sealed`. keystore/nacl.ts uses it when it is ready and falls back to the
 * JavaScript ciphers otherwise (an engine without WebAssembly SIMD, or a
 * browser main thread before `prepareSecretboxWasm()` resolved).
 *
 * The data goes through the module's 64 KiB buffer slice by slice, so the
 * module's memory stays at 192 KiB whatever the model size and never holds a
 * whole plaintext; `wipe(used)` zeroes what an open wrote when it ends, MAC
 * failure included.
 */
import { SECRETBOX_WASM_BASE64 } from './secretbox-wasm.ts';

interface Exports {
  memory: WebAssembly.Memory;
  buffer(): number;
  io(): number;
  xsalsa_init(): void;
  xsalsa_xor(len: number, ctrLo: number, ctrHi: number): void;
  poly_init(): void;
  poly_update(len: number): void;
  poly_finish(): void;
  wipe(used: number): void;
}

/** The module's slice size: a multiple of the 64-byte Salsa20 block and the 16-byte Poly1305 block. */
const SLICE = 65536;
const TWO_32 = 0x1_0000_0000;

let engine: Exports | null | undefined;
let pending: Promise<boolean> | undefined;

function moduleBytes(): Uint8Array {
  const s = atob(SECRETBOX_WASM_BASE64);
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i);
  return b;
}

function adopt(instance: WebAssembly.Instance): Exports {
  return instance.exports as unknown as Exports;
}

/**
 * The module, compiled synchronously on first use; null where that fails (no
 * WebAssembly, no SIMD, or an engine that refuses synchronous compiles here).
 */
function syncEngine(): Exports | null {
  if (engine !== undefined) return engine;
  try {
    engine = adopt(new WebAssembly.Instance(new WebAssembly.Module(moduleBytes() as Uint8Array<ArrayBuffer>)));
  } catch {
    return null; // not cached: prepareSecretboxWasm() may still compile it asynchronously
  }
  return engine;
}

/**
 * Compiles the module asynchronously (what a browser's main thread needs);
 * resolves true when the fast path is ready, false when this engine cannot run it.
 */
export function prepareSecretboxWasm(): Promise<boolean> {
  if (engine) return Promise.resolve(true);
  pending ??= (async () => {
    try {
      if (typeof WebAssembly === 'undefined') return false;
      const { instance } = await WebAssembly.instantiate(moduleBytes() as Uint8Array<ArrayBuffer>);
      engine = adopt(instance);
      return true;
    } catch {
      return false;
    }
  })();
  return pending;
}

/** Whether opens run in WebAssembly now (for reports and benchmarks). */
export function secretboxWasmReady(): boolean {
  return syncEngine() !== null;
}

let forceJs = false;

/**
 * Makes every open use the JavaScript ciphers (`true`) or the WebAssembly ones
 * where they run (`false`, the default). For benchmarks and tests that compare
 * the two; a setting in code, not an environment variable, because the device
 * runtime reads no environment (Deno would ask for --allow-env).
 */
export function forceSecretboxJs(on: boolean): void {
  forceJs = on;
}

/** The engine, or null to use JavaScript. */
export function secretboxWasm(): Exports | null {
  return forceJs ? null : syncEngine();
}

/**
 * NaCl secretbox open, detached and in place, in WebAssembly. With `accept`,
 * the Poly1305 tag of `data` (the ciphertext) is computed first, and `data` is
 * decrypted in place (stream bytes from 32 on; bytes 0..32 key the MAC) only
 * if `accept(tag)` says it matches; returns what `accept` returned. Without,
 * it only decrypts (keystore/nacl.ts `secretboxDecryptInPlace` says when that
 * is allowed). Sizes are the caller's to check.
 */
export function openInPlaceWasm(w: Exports, data: Uint8Array, nonce: Uint8Array, key: Uint8Array, accept: ((tag: Uint8Array) => boolean) | undefined): boolean {
  const buf = w.buffer();
  const io = w.io();
  const block0 = new Uint8Array(64);
  try {
    let mem = new Uint8Array(w.memory.buffer);
    mem.set(key, io);
    mem.set(nonce, io + 32);
    w.xsalsa_init();
    mem.fill(0, buf, buf + 64);
    w.xsalsa_xor(64, 0, 0);
    block0.set(mem.subarray(buf, buf + 64));
    if (accept) {
      mem.set(block0.subarray(0, 32), io);
      w.poly_init();
      for (let off = 0; off < data.byteLength; off += SLICE) {
        const len = Math.min(SLICE, data.byteLength - off);
        mem.set(data.subarray(off, off + len), buf);
        w.poly_update(len);
      }
      w.poly_finish();
      mem = new Uint8Array(w.memory.buffer);
      if (!accept(mem.subarray(io, io + 16))) return false;
    }
    const head = Math.min(32, data.byteLength);
    for (let i = 0; i < head; i++) data[i] ^= block0[32 + i];
    for (let off = 32, block = 1; off < data.byteLength; off += SLICE, block += SLICE / 64) {
      const len = Math.min(SLICE, data.byteLength - off);
      mem.set(data.subarray(off, off + len), buf);
      w.xsalsa_xor(len, block % TWO_32, Math.floor(block / TWO_32));
      data.set(mem.subarray(buf, buf + len), off);
    }
    return true;
  } finally {
    w.wipe(Math.max(64, Math.min(SLICE, data.byteLength)));
    block0.fill(0);
  }
}
