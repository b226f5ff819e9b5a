/** `deeplock`, device side: inverts w' = S(w xor k_i) byte by byte at load. */
import { Fields } from '../../keystore/cbor.ts';
import { FormatError } from '../../keystore/errors.ts';
import { DeeplockKeystream, type DeeplockWidth } from './deeplock-key.ts';
import type { ApplyContext } from './hooks.ts';
import { readRange, type DeviceScheme, type TensorRange } from './scheme.ts';

/** A deeplock range: `width` bytes per parameter; absent means 4 (float32), as in every file before the field. */
export type DeeplockRange = TensorRange & { width?: DeeplockWidth };

/** The manifest's `deeplock` entry. */
export interface DeeplockLock {
  scheme: 'deeplock';
  /** Tensors in key-schedule order: parameter i (counted across them, whatever their width) uses round-key word i. */
  tensors: DeeplockRange[];
}

/**
 * Unlocks every listed float32 tensor in place. Parameters are counted across
 * the tensors in manifest order; the key schedule is streamed, so a large model
 * never holds its whole schedule in memory.
 */
export function restoreDeeplock(model: Uint8Array, lock: DeeplockLock, ctx: ApplyContext): void {
  const ks = new DeeplockKeystream(ctx.modelKey);
  for (const t of lock.tensors) ks.unlock(model.subarray(t.offset, t.offset + t.length), t.width ?? 4);
}

/** The `deeplock` scheme for the registry (keys/index.ts). */
export const deeplockScheme: DeviceScheme<DeeplockLock> = {
  name: 'deeplock',
  decodeEntry(f: Fields, modelBytes: number) {
    const tensors = f.array('tensors').map((v, i): DeeplockRange => {
      const g = Fields.of(`${f.what}.tensors[${i}]`, v);
      const r: DeeplockRange = readRange(g, modelBytes);
      if (g.has('width')) {
        const w = g.uint('width');
        if (w !== 2 && w !== 4) throw new FormatError(`${g.what}.width: expected 2 (float16, bfloat16) or 4 (float32), got ${w}`);
        if (w === 2) r.width = 2;
      }
      if (r.length % (r.width ?? 4) !== 0) throw new FormatError(`${g.what}: ${r.length} bytes is not a whole number of ${r.width ?? 4}-byte parameters`);
      return r;
    });
    return { scheme: 'deeplock', tensors };
  },
  restore: restoreDeeplock,
};

/** One line for `keylock inspect`: public parameters only. */
export function describeDeeplock(l: DeeplockLock): string {
  const half = l.tensors.filter((t) => t.width === 2);
  const params = l.tensors.reduce((n, t) => n + t.length / (t.width ?? 4), 0);
  return `deeplock ${l.tensors.length} tensor(s), ${params} ${half.length ? `parameters (${half.reduce((n, t) => n + t.length / 2, 0)} of them 2-byte float16/bfloat16)` : 'float32 parameters'}`;
}
