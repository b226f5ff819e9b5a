// The licence watch's per-run guard (runtime/licence.ts): a run never starts past the grant's end, whether
// the wall clock moved forward past it or the monotonic time since the load did (a wall clock set back),
// even when the watch's timer has not fired (a busy or suspended thread).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ExpiredGrantError, type KeylockError } from '../keystore/errors.ts';
import type { LicenceState } from '../keystore/keystore.ts';
import { watchLicence, type Watched } from '../runtime/licence.ts';

/** A model stand-in that records what the watch does to it. */
function watched(): Watched & { guard?: () => void; stop?: () => void; halted?: KeylockError } {
  const m: Watched & { guard?: () => void; stop?: () => void; halted?: KeylockError; state: string } = {
    state: 'ready',
    halt(e) { m.state = 'halted'; m.halted = e; m.stop?.(); },
    emit() {},
    watch(stop, guard) { m.stop = stop; m.guard = guard; },
  };
  return m;
}

function source(lic: LicenceState) {
  return { licenceFor: () => lic, onChange: () => () => {} };
}

test('the guard halts a run past notAfter when the wall clock jumps forward, before the timer fires', (t) => {
  const now = Date.now();
  const m = watched();
  watchLicence(m, source({ grantId: 'g', notBefore: Math.floor(now / 1000) - 60, notAfter: Math.floor(now / 1000) + 3600, grace: 0, floor: 0 }), 'model-a');
  m.guard!();
  assert.equal(m.state, 'ready', 'within the window: the guard lets the run start');
  t.mock.method(Date, 'now', () => now + 2 * 3600_000);
  m.guard!();
  assert.equal(m.state, 'halted');
  assert.ok(m.halted instanceof ExpiredGrantError, m.halted?.name);
});

test('the guard halts a run past notAfter by the monotonic clock when the wall clock was set back', (t) => {
  const now = Date.now();
  const mono = performance.now();
  const m = watched();
  watchLicence(m, source({ grantId: 'g', notBefore: Math.floor(now / 1000) - 60, notAfter: Math.floor(now / 1000) + 3600, grace: 0, floor: 0 }), 'model-b');
  t.mock.method(Date, 'now', () => now - 86_400_000); // a day back
  m.guard!();
  assert.equal(m.state, 'ready', 'the wall clock set back does not halt by itself');
  t.mock.method(performance, 'now', () => mono + 2 * 3600_000); // two hours since the load, by the monotonic clock
  m.guard!();
  assert.equal(m.state, 'halted');
  assert.ok(m.halted instanceof ExpiredGrantError, m.halted?.name);
});
