/**
 * Bench task "throughput": restore speed on a large buffer (sealed in its three
 * code paths and with the vendor key pinned, deeplock), beside SHA-256 and
 * AES-GCM for scale.
 */
import nacl from 'tweetnacl';
import { secretboxDetached, sha256, sha256Async } from '../../../keystore/nacl.ts';
import type { SealedLock } from '../../../runtime/klm.ts';
import { restoreDeeplock } from '../../../runtime/keys/deeplock.ts';
import { deeplockLock, deeplockSchedule } from '../../../runtime/keys/deeplock-key.ts';
import { sealedNonce, sealedSecretboxKey } from '../../../runtime/keys/derive.ts';
import { restoreSealed } from '../../../runtime/keys/sealed.ts';
import { forceSecretboxJs } from '../../../keystore/wasm/secretbox.ts';
import { fromHex, type Plan } from '../plan.ts';
import { seededFloats, summarize, type Summary } from '../stats.ts';
import { log } from './shared.ts';

/**
 * Restore throughput on a large buffer: `sealed` (noble, in place) beside the
 * tweetnacl code path it replaced, `deeplock`, and SHA-256 in JS vs WebCrypto.
 */
export async function throughput(_plan: Plan, a: { mb: number; rounds: number }): Promise<unknown> {
  const tensorBytes = 4 << 20;
  const total = a.mb << 20;
  const count = Math.max(1, Math.round(total / tensorBytes));
  const size = count * Math.min(tensorBytes, total);
  const per = size / count;
  const modelKey = fromHex('00'.repeat(31) + '01');
  const modelId = 'bench-throughput';
  // Tensors sit at odd offsets, as raw_data inside a protobuf usually does.
  const plain = new Uint8Array(seededFloats(Math.ceil((size + 3 * count) / 4), 3).buffer, 0, size + 3 * count);
  const key = sealedSecretboxKey(modelKey);
  const lock: SealedLock = { scheme: 'sealed', tensors: [] };
  const sealedModel = plain.slice();
  for (let i = 0; i < count; i++) {
    const offset = i * (per + 3) + 1;
    const name = `t${i}`;
    const r = sealedModel.subarray(offset, offset + per);
    const { cipher, mac } = secretboxDetached(r, sealedNonce(modelId, name), key);
    r.set(cipher);
    lock.tensors.push({ name, offset, length: per, dtype: 'float32', mac: mac.slice() });
  }
  const ctx = { modelId, modelKey };
  // The code path before this change: tweetnacl's secretbox.open on MAC || ciphertext, then a copy back.
  const legacy = (m: Uint8Array): void => {
    for (const t of lock.tensors) {
      const range = m.subarray(t.offset, t.offset + t.length);
      const boxed = new Uint8Array(16 + t.length);
      boxed.set(t.mac, 0);
      boxed.set(range, 16);
      const p = nacl.secretbox.open(boxed, sealedNonce(modelId, t.name), key);
      if (!p) throw new Error('legacy open failed');
      range.set(p);
      p.fill(0);
    }
  };
  const work = sealedModel.slice();
  const fresh = (): Uint8Array => { work.set(sealedModel); return work; };
  const timeOne = async (f: (m: Uint8Array) => void): Promise<number> => {
    const m = fresh();
    const t = performance.now();
    f(m);
    return performance.now() - t;
  };
  log(`throughput sealed ${a.mb} MB, ${count} tensor(s)`);
  // restoreSealed as the device runs it (WebAssembly SIMD), its JavaScript fallback
  // (forceSecretboxJs, what an engine without WebAssembly SIMD runs), and the
  // tweetnacl path of the first version, in a rotating order.
  const jsOnly = (m: Uint8Array): void => {
    forceSecretboxJs(true);
    try { restoreSealed(m, lock, ctx); } finally { forceSecretboxJs(false); }
  };
  const pinned = (m: Uint8Array): void => { restoreSealed(m, lock, { ...ctx, authenticated: true }); };
  const sides: [number[], (m: Uint8Array) => void][] = [[[], (m) => restoreSealed(m, lock, ctx)], [[], jsOnly], [[], legacy], [[], pinned]];
  for (let i = 0; i < a.rounds; i++) {
    for (let j = 0; j < sides.length; j++) {
      const [times, f] = sides[(i + j) % sides.length];
      times.push(await timeOne(f));
    }
  }
  const [now, js0, old, pin] = sides.map(([t]) => t);
  for (const f of [(m: Uint8Array) => restoreSealed(m, lock, ctx), jsOnly, pinned]) {
    const check = fresh();
    f(check);
    if (!check.every((v, i) => v === plain[i])) throw new Error('sealed restore did not give the plaintext back');
  }
  // deeplock: lock the same bytes as one float32 tensor.
  log(`throughput deeplock ${a.mb} MB`);
  const dl = plain.slice(0, size);
  const params = size / 4;
  const sched = deeplockSchedule(modelKey, params);
  deeplockLock(dl, 0, sched);
  sched.fill(0);
  const dlLock = { scheme: 'deeplock' as const, tensors: [{ name: 'w', offset: 0, length: size, dtype: 'float32' }] };
  const dlWork = dl.slice();
  const dlT: number[] = [];
  for (let i = 0; i < a.rounds; i++) {
    dlWork.set(dl);
    const t = performance.now();
    restoreDeeplock(dlWork, dlLock, ctx);
    dlT.push(performance.now() - t);
  }
  log(`throughput sha256 ${a.mb} MB`);
  const js: number[] = [];
  const wc: number[] = [];
  for (let i = 0; i < a.rounds; i++) {
    let t = performance.now();
    sha256(plain);
    js.push(performance.now() - t);
    t = performance.now();
    await sha256Async(plain);
    wc.push(performance.now() - t);
  }
  // For comparison only (not a keylock format): authenticated decryption in native code.
  log(`throughput AES-256-GCM (WebCrypto) ${a.mb} MB`);
  const aesKey = await crypto.subtle.importKey('raw', key as Uint8Array<ArrayBuffer>, { name: 'AES-GCM' }, false, ['encrypt', 'decrypt']);
  const iv = new Uint8Array(12);
  const aesCt = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, aesKey, plain.subarray(0, size) as Uint8Array<ArrayBuffer>));
  const aes: number[] = [];
  for (let i = 0; i < a.rounds; i++) {
    const t = performance.now();
    await crypto.subtle.decrypt({ name: 'AES-GCM', iv }, aesKey, aesCt);
    aes.push(performance.now() - t);
  }
  const mbps = (ms: number[]): Summary => summarize(ms.map((v) => size / 1e6 / (v / 1000)));
  return {
    bytes: size, tensors: count,
    sealed: mbps(now), sealedJs: mbps(js0), sealedLegacy: mbps(old), sealedPinned: mbps(pin), sealedSpeedup: summarize(js0.map((v, i) => v / now[i])),
    deeplock: mbps(dlT), sha256js: mbps(js), sha256webcrypto: mbps(wc), aesGcmWebcrypto: mbps(aes),
  };
}
