// Crash consistency (short CI run; `npm run crash` kills 200+ times): a writer
// SIGKILLed at random moments never loses an acknowledged write or leaves a
// keystore that does not open; two writers at once are serialised by the lock file.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { concurrentWriters, crashCampaign, makeRig, removeRig, type CrashRig } from '../eval/crash.ts';

const KILLS = Number(process.env.KEYLOCK_CRASH_KILLS ?? 40);
let rig: CrashRig;
before(async () => { rig = await makeRig(); });
after(() => removeRig(rig));

test(`${KILLS} SIGKILLs of a writer mid-loop: the keystore opens at the acked generation (or one more), nothing acked is lost`, async (t) => {
  const s = await crashCampaign(rig, { kills: KILLS, seed: 7, maxDelayMs: 300 });
  t.diagnostic(`${s.kills} kills, ${s.acked} acked writes (${s.grants} grants, ${s.disables} disables), ${s.unackedLanded} unacked writes landed, ${s.counterBehind} kills between file and counter, ${s.leftoverTmp} temp files left, ${s.seconds.toFixed(1)} s`);
  assert.deepEqual(s.problems, []);
  assert.equal(s.kills, KILLS);
  assert.ok(s.acked > 0, 'the writers got some writes done before being killed');
});

test('two processes install 20 distinct grants each into one keystore at once: all 40 are there', async (t) => {
  const w = await concurrentWriters(rig, { perWriter: 20 });
  t.diagnostic(`${w.writers} x ${w.perWriter} -> ${w.present} present, generation ${w.generationBefore} -> ${w.generationAfter}, counter ${w.counter}, ${w.seconds.toFixed(1)} s`);
  assert.deepEqual(w.problems, []);
  assert.equal(w.present, 40);
});
