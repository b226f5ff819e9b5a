/**
 * The device's scheme registry: every lock scheme keylock knows, by name. The
 * manifest reader (klm.ts), the load (restore, run-time hooks) and
 * `keylock inspect` reach a scheme only through here.
 */
import { Fields } from '../../keystore/cbor.ts';
import { describeAdvparams, advparamsScheme, type AdvparamsLock } from './advparams.ts';
import { describeDeeplock, deeplockScheme, type DeeplockLock } from './deeplock.ts';
import type { ApplyContext, RunHooks } from './hooks.ts';
import type { DeviceScheme } from './scheme.ts';
import { describeSealed, sealedScheme, type SealedLock } from './sealed.ts';
import { describeShuffle, shuffleScheme, type ShuffleLock } from './shuffle.ts';
import { describeSignflip, signflipScheme, type SignflipLock } from './signflip.ts';

/** One applied lock with its public parameters. Locks are applied in order and undone in reverse. */
export type LockEntry = ShuffleLock | SignflipLock | DeeplockLock | AdvparamsLock | SealedLock;
/** A scheme's name, as in a lock entry and on the CLI (`--scheme signflip+sealed`). */
export type Scheme = LockEntry['scheme'];

/** Every scheme's device side, by name. */
const REGISTRY: { readonly [S in Scheme]: DeviceScheme<Extract<LockEntry, { scheme: S }>> } = {
  shuffle: shuffleScheme,
  signflip: signflipScheme,
  deeplock: deeplockScheme,
  advparams: advparamsScheme,
  sealed: sealedScheme,
};

/** Every scheme name, in the registry's order. */
export const SCHEMES: readonly Scheme[] = Object.keys(REGISTRY) as Scheme[];

/**
 * The registry typed for the whole union: TypeScript cannot tie
 * `REGISTRY[entry.scheme]` to `entry`'s own member; the registry's type above is
 * what guarantees each name maps to its own scheme.
 */
const SCHEME = REGISTRY as { readonly [S in Scheme]: DeviceScheme<LockEntry> };

/** Reads lock entry `i` of a manifest; FormatError for an unknown scheme or a bad field. */
export function decodeLockEntry(v: unknown, i: number, modelBytes: number): LockEntry {
  const f = Fields.of(`manifest.locks[${i}]`, v);
  return SCHEME[f.oneOf('scheme', SCHEMES)].decodeEntry(f, modelBytes);
}

/** Waits for what the locks need before any restore (each scheme appears once in a manifest). */
export async function prepareLocks(locks: readonly LockEntry[]): Promise<void> {
  for (const l of locks) await SCHEME[l.scheme].prepare?.(l);
}

/**
 * Undoes every load-time lock on `model` (a private copy), last applied first.
 * Synchronous unless a scheme's restore is (WebCrypto's AES-256-GCM): then the
 * rest follow in order and the returned Promise settles after the last.
 */
export function restoreModel(model: Uint8Array, locks: readonly LockEntry[], ctx: ApplyContext): void | Promise<void> {
  for (let i = locks.length - 1; i >= 0; i--) {
    const r = SCHEME[locks[i].scheme].restore?.(model, locks[i], ctx);
    if (r) return r.then(() => restoreModel(model, locks.slice(0, i), ctx));
  }
}

/** Whether undoing the load-time locks rewrites any model byte (what a digest beside the restore can overlap). */
export function rewritesAtLoad(locks: readonly LockEntry[]): boolean {
  return locks.some((l) => {
    const s = SCHEME[l.scheme];
    return s.restore !== undefined && (s.rewrites?.(l) ?? true);
  });
}

/** Run-time hooks of every lock, in lock order. */
export function runHooks(locks: readonly LockEntry[], ctx: ApplyContext): RunHooks[] {
  const hooks: RunHooks[] = [];
  for (const l of locks) {
    const h = SCHEME[l.scheme].hooks?.(l, ctx);
    if (h) hooks.push(h);
  }
  return hooks;
}

/**
 * Each scheme's one-line description, for `keylock inspect`. Apart from
 * REGISTRY so that device bundles, which never describe a lock, leave it out.
 */
const DESCRIBE: { readonly [S in Scheme]: (l: Extract<LockEntry, { scheme: S }>) => string } = {
  shuffle: describeShuffle,
  signflip: describeSignflip,
  deeplock: describeDeeplock,
  advparams: describeAdvparams,
  sealed: describeSealed,
};

/** One line per lock, public parameters only. */
export function describeLock(l: LockEntry): string {
  return (DESCRIBE[l.scheme] as (l: LockEntry) => string)(l);
}
