/**
 * Bit flips: flip one bit of a valid file, hand it to the device path
 * (targets.ts `parse`), and count whether the change was caught with a typed
 * error. A flip the device accepts is "undetected"; the tamper test demands none.
 */
import { KeylockError } from '../../keystore/errors.ts';
import type { Target } from './targets.ts';

/** The formats whose every bit is covered by a signature, a MAC or a check against a sealed copy. */
export const TAMPER_TARGETS = ['klm', 'klg', 'kls', 'klr', 'klt', 'klv', 'klim'] as const;

/** What flipping bits of one file gave. */
export interface FlipStats {
  target: string;
  bytes: number;
  /** Bits flipped (one file each). */
  flipped: number;
  /** Flips refused with a typed error. */
  detected: number;
  /** Bit indices whose flip was accepted. */
  undetected: number[];
  /** Flips that threw something other than a keylock error: index and message. */
  untyped: [number, string][];
  byError: Record<string, number>;
  seconds: number;
}

/**
 * Flips bits of `target.sample`: every bit in [from, to) with `every: 'bit'`,
 * or one bit per byte (bit i mod 8 of byte i) with `every: 'byte'`.
 */
export async function flipBits(target: Target, opts: { every: 'bit' | 'byte'; from?: number; to?: number }): Promise<FlipStats> {
  const s = target.sample;
  const total = s.byteLength * 8;
  const from = opts.from ?? 0;
  const to = Math.min(opts.to ?? total, total);
  const stats: FlipStats = { target: target.name, bytes: s.byteLength, flipped: 0, detected: 0, undetected: [], untyped: [], byError: {}, seconds: 0 };
  const t0 = performance.now();
  for (let bit = from; bit < to; bit++) {
    if (opts.every === 'byte' && bit % 8 !== (bit >> 3) % 8) continue;
    const b = s.slice();
    b[bit >> 3] ^= 1 << (bit & 7);
    stats.flipped++;
    try {
      await target.parse(b);
      stats.undetected.push(bit);
    } catch (e) {
      if (e instanceof KeylockError) {
        stats.detected++;
        stats.byError[e.name] = (stats.byError[e.name] ?? 0) + 1;
      } else {
        stats.untyped.push([bit, `${(e as Error)?.name}: ${(e as Error)?.message}`]);
      }
    }
  }
  stats.seconds = (performance.now() - t0) / 1000;
  return stats;
}

/** Sums the stats of several slices of one target. */
export function mergeFlips(parts: FlipStats[]): FlipStats {
  const out: FlipStats = { ...parts[0], flipped: 0, detected: 0, undetected: [], untyped: [], byError: {}, seconds: 0 };
  for (const p of parts) {
    out.flipped += p.flipped;
    out.detected += p.detected;
    out.undetected.push(...p.undetected);
    out.untyped.push(...p.untyped);
    for (const [k, v] of Object.entries(p.byError)) out.byError[k] = (out.byError[k] ?? 0) + v;
    out.seconds = Math.max(out.seconds, p.seconds);
  }
  return out;
}

/** One line per file. */
export function formatFlips(s: FlipStats): string {
  const errs = Object.entries(s.byError).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ');
  return `${s.target.padEnd(5)} ${String(s.bytes).padStart(4)} B: ${s.flipped} bits flipped, ${s.detected} detected, ${s.undetected.length} undetected, ${s.untyped.length} untyped (${errs}) in ${s.seconds.toFixed(1)} s`;
}
