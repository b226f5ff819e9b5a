/**
 * Licences enforced while a model runs. The load checks the grant once; after
 * that a model that stays loaded for days would outlive its licence. The watch
 * halts it when the grant's `notAfter` (plus the grant's vendor-signed grace
 * period, if any) passes, and when a change installed into the open keystore
 * (a revocation list naming the device, model or grant, a disable) refuses it.
 *
 * - A timer (unref'd: it never keeps a process alive) fires at the next
 *   boundary (`notAfter`, then `notAfter + grace`); every `run()` also compares
 *   the clock with that boundary first, so a run never starts past it even if
 *   the timer was delayed (a suspended device, a busy thread).
 * - The clock is `max(wall clock, wall clock at load + monotonic time since,
 *   the keystore's trusted-time floor)`: turning the wall clock back while the
 *   model runs does not extend its licence, and nor does it after a restart
 *   (the floor, keystore/kls.ts `lastTrustedTime`).
 * - With a grace period, `expiring` fires at `notAfter` (ExpiredGrantError) and
 *   the model keeps running until `notAfter + grace`, then halts. A renewal
 *   installed meanwhile (a newer grant) moves the boundary: the model goes on.
 */
import { DisabledError, ExpiredGrantError, KeylockError } from '../keystore/errors.ts';
import type { LicenceState } from '../keystore/keystore.ts';

/** What a licence watch needs of a key source: the `Keystore` has both. */
export interface LicenceSource {
  licenceFor(modelId: string): LicenceState;
  onChange(fn: () => void): () => void;
}

/** What the watch drives: the in-thread `Model` and the worker-mode model both are one. */
export interface Watched {
  readonly state: string;
  halt(e: KeylockError, state?: 'halted' | 'disabled'): void;
  emit(event: 'expiring', e: KeylockError): void;
  watch(stop: () => void, guard?: () => void): void;
}

/** True when `source` can be watched (a `Keystore`; a product's own key source may not be). */
export function isLicenceSource(source: unknown): source is LicenceSource {
  const s = source as Partial<LicenceSource> | undefined;
  return typeof s?.licenceFor === 'function' && typeof s?.onChange === 'function';
}

/** Longest single timer (setTimeout's limit, about 24.8 days); longer waits re-arm. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Starts enforcing `modelId`'s licence from `source` on `model` (which must be
 * ready). Checked at once, then at each boundary, on every keystore change and
 * before every run; stopped when the model halts or is released.
 */
export function watchLicence(model: Watched, source: LicenceSource, modelId: string): void {
  const wall0 = Date.now();
  const mono0 = performance.now();
  /** Milliseconds: never behind the wall clock at load plus the monotonic time since. */
  const nowMs = (): number => Math.max(Date.now(), wall0 + (performance.now() - mono0));
  let timer: ReturnType<typeof setTimeout> | undefined;
  let next = Infinity; // the next boundary, in nowMs() terms
  let nextMono = Infinity; // the same boundary on the monotonic clock: where wall0 + (performance.now() - mono0) reaches it
  let expiring = false;
  let stopped = false;
  let unsubscribe: (() => void) | undefined;
  /** The licence as last read: what a closed keystore (which can change no more) leaves in force. */
  let known: LicenceState | undefined;

  const stop = (): void => {
    stopped = true;
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    unsubscribe?.();
  };
  const halt = (e: KeylockError): void => {
    stop();
    if (model.state === 'ready') model.halt(e, e instanceof DisabledError ? 'disabled' : 'halted');
  };
  const evaluate = (): void => {
    if (stopped) return;
    let lic: LicenceState;
    try {
      lic = known = source.licenceFor(modelId);
    } catch (e) {
      if (e instanceof KeylockError) {
        halt(e);
        return;
      }
      // Not a refusal: the source cannot answer any more (a Keystore closed after the load, which wiped
      // its keys). Nothing can change the licence then: the window last read stays in force.
      if (!known) {
        halt(new KeylockError('licence', `the licence of model "${modelId}" could not be checked: ${(e as Error)?.message ?? String(e)}`, { cause: e }));
        return;
      }
      lic = known;
    }
    const ms = Math.max(nowMs(), lic.floor * 1000);
    const t = Math.floor(ms / 1000);
    const endMs = (lic.notAfter + lic.grace) * 1000;
    if (ms < lic.notBefore * 1000 || ms >= endMs) {
      halt(new ExpiredGrantError(modelId, lic.notBefore, lic.notAfter, t));
      return;
    }
    if (ms >= lic.notAfter * 1000) {
      if (!expiring) {
        expiring = true;
        model.emit('expiring', new ExpiredGrantError(modelId, lic.notBefore, lic.notAfter, t));
      }
      next = endMs;
    } else {
      expiring = false; // renewed
      next = lic.notAfter * 1000;
    }
    nextMono = mono0 + (next - wall0);
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(evaluate, Math.min(MAX_TIMER_MS, Math.max(0, next - ms) + 1));
    (timer as { unref?: () => void }).unref?.();
  };

  // Per run: `nowMs() >= next` as two clock reads and two comparisons, no call and no allocation.
  model.watch(stop, () => { if (Date.now() >= next || performance.now() >= nextMono) evaluate(); });
  if (stopped) return;
  unsubscribe = source.onChange(evaluate);
  evaluate();
}
