/**
 * Bench section "aead": `sealed` open speed against the do-it-yourself native
 * peers, in one process, on the same ~32 MB of bytes in 8 tensors at odd
 * offsets (as raw_data inside a protobuf). Rounds are interleaved (each round
 * runs every variant once, on a fresh copy of its ciphertext; the copy is not
 * timed; the order rotates every round) and medians reported.
 *
 * Variants: keylock sealed open with XChaCha20-Poly1305 and with AES-256-GCM
 * (tag checked; and the pinned-key no-tag path of each), keylock sealed open
 * with XSalsa20-Poly1305 in WebAssembly (files before the change), and
 * node:crypto AES-256-GCM and ChaCha20-Poly1305 decrypting the same tensors in
 * 64 KiB update() calls, copied back in place, tag checked at final().
 *
 * Then the same in headless Chromium (./aead-browser.ts), on the path a page
 * takes for each cipher, beside WebCrypto AES-256-GCM on the same bytes; skipped
 * with a printed reason when Chromium is absent.
 *
 * Runnable alone: node --import tsx eval/bench/sections/aead.ts [--quick] [--no-browser | --browser]
 */
import { createDecipheriv, createCipheriv, randomBytes as nodeRandom } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { prepareAead, aeadNative, prepareAesGcm } from '../../../keystore/aead.ts';
import { measureBrowser, renderBrowser, type BrowserAeadResult } from './aead-browser.ts';
import { sha256Async } from '../../../keystore/nacl.ts';
import { prepareSecretboxWasm, secretboxWasmReady } from '../../../keystore/wasm/secretbox.ts';
import { restoreSealed } from '../../../runtime/keys/sealed.ts';
import { sealedFixtures, TENSORS } from './aead-fixtures.ts';
import { quantile } from '../stats.ts';

const PEER_CHUNK = 64 << 10;

interface Row { name: string; what: string; ms: number; mbps: number; ratio?: number }
export interface AeadResult {
  bytes: number; tensors: number; rounds: number; native: boolean; wasm: boolean; aesPath?: string; rows: Row[]; fasterPeer: string;
  /** The Chromium sub-table, or why it was skipped. */
  browser?: BrowserAeadResult | { skipped: string };
}

interface Variant { name: string; what: string; template: Uint8Array; run(m: Uint8Array): void | Promise<void> }

/** A peer: node:crypto AEAD over each tensor in 64 KiB updates, copied back, tag checked. */
function peer(alg: 'aes-256-gcm' | 'chacha20-poly1305', model: Uint8Array, ranges: { offset: number; length: number }[], wipe = false): Variant {
  const key = nodeRandom(32);
  const ivs = ranges.map(() => nodeRandom(12));
  const template = model.slice();
  const tags = ranges.map((r, i) => {
    const c = createCipheriv(alg, key, ivs[i], { authTagLength: 16 } as never) as ReturnType<typeof createCipheriv> & { getAuthTag(): Buffer };
    const d = template.subarray(r.offset, r.offset + r.length);
    for (let o = 0; o < d.length; o += PEER_CHUNK) d.set(c.update(d.subarray(o, Math.min(o + PEER_CHUNK, d.length))), o);
    c.final();
    return c.getAuthTag();
  });
  return {
    name: `node:crypto ${alg === 'aes-256-gcm' ? 'AES-256-GCM' : 'ChaCha20-Poly1305'}${wipe ? ', outputs wiped' : ''}`,
    what: wipe
      ? 'diagnostic, not a peer: as the AES-256-GCM peer, and each update() output zeroed after the copy, as keylock must (it holds plaintext)'
      : 'do-it-yourself peer: 64 KiB update() calls, copied back, tag at final()',
    template,
    run(m) {
      ranges.forEach((r, i) => {
        const d = createDecipheriv(alg, key, ivs[i], { authTagLength: 16 } as never) as ReturnType<typeof createDecipheriv> & { setAuthTag(t: Uint8Array): void };
        d.setAuthTag(tags[i]);
        const data = m.subarray(r.offset, r.offset + r.length);
        for (let o = 0; o < data.length; o += PEER_CHUNK) {
          const out = d.update(data.subarray(o, Math.min(o + PEER_CHUNK, data.length)));
          data.set(out, o);
          if (wipe) out.fill(0);
        }
        d.final();
      });
    },
  };
}

/** `browser`: measure in Chromium too (default: on full runs; a quick run, as `npm test`'s bench test makes, skips it and says so). */
export async function measure(quick: boolean, browser = !quick): Promise<AeadResult> {
  const total = 32 << 20;
  const rounds = quick ? 5 : 25;
  await sha256Async(new Uint8Array(2 << 20)); // finds the native SHAKE256, as a model load does
  const native = await prepareAead();
  const aesPath = await prepareAesGcm();
  const wasm = await prepareSecretboxWasm() && secretboxWasmReady();
  const modelKey = new Uint8Array(32).fill(7);
  const modelId = 'bench-aead';
  const { plain, xc: { model: xcModel, lock: xc }, aes: { model: aesModel, lock: aes }, xs: { model: xsModel, lock: xs } } = sealedFixtures(total, 11, modelId, modelKey);
  const ranges = xc.tensors;
  const size = plain.byteLength;
  const variants: Variant[] = [
    { name: 'keylock sealed, XChaCha20-Poly1305', what: `tag checked (${native ? 'node:crypto' : 'JavaScript'})`, template: xcModel, run: (m) => restoreSealed(m, xc, { modelId, modelKey }) },
    { name: 'keylock sealed, XChaCha20, pinned key', what: 'no tag: the signed digest authenticates', template: xcModel, run: (m) => restoreSealed(m, xc, { modelId, modelKey, authenticated: true }) },
    { name: 'keylock sealed, AES-256-GCM', what: `tag checked (${aesPath === 'node' ? 'node:crypto' : aesPath})`, template: aesModel, run: (m) => restoreSealed(m, aes, { modelId, modelKey }) },
    { name: 'keylock sealed, AES-256-GCM, pinned key', what: `no tag: AES-256-CTR (${aesPath === 'node' ? 'node:crypto' : aesPath})`, template: aesModel, run: (m) => restoreSealed(m, aes, { modelId, modelKey, authenticated: true }) },
    { name: 'keylock sealed, XSalsa20-Poly1305', what: `tag checked (${wasm ? 'WebAssembly SIMD' : 'JavaScript'}, files before the change)`, template: xsModel, run: (m) => restoreSealed(m, xs, { modelId, modelKey }) },
    { name: 'keylock sealed, XSalsa20, pinned key', what: 'no tag', template: xsModel, run: (m) => restoreSealed(m, xs, { modelId, modelKey, authenticated: true }) },
    peer('aes-256-gcm', plain, ranges),
    peer('chacha20-poly1305', plain, ranges),
    peer('aes-256-gcm', plain, ranges, true),
  ];
  // Correctness first: every keylock variant gives the plaintext.
  const KEYLOCK_ROWS = 6;
  for (const v of variants.slice(0, KEYLOCK_ROWS)) {
    const m = v.template.slice();
    await v.run(m);
    if (!Buffer.from(m).equals(plain)) throw new Error(`${v.name}: wrong plaintext`);
  }
  const times: number[][] = variants.map(() => []);
  const work = new Uint8Array(size);
  for (let r = -1; r < rounds; r++) {
    // The order rotates every round, so the garbage collection that the variants' allocations
    // cause does not fall on the same variant every time.
    for (let j = 0; j < variants.length; j++) {
      const i = (j + Math.max(r, 0)) % variants.length;
      const v = variants[i];
      work.set(v.template);
      const t0 = performance.now();
      await v.run(work);
      const t = performance.now() - t0;
      if (r >= 0) times[i].push(t); // round -1 warms up
    }
  }
  const rows: Row[] = variants.map((v, i) => {
    const ms = quantile(times[i], 0.5);
    return { name: v.name, what: v.what, ms, mbps: total / 1e6 / (ms / 1000) };
  });
  const peers = rows.slice(KEYLOCK_ROWS, KEYLOCK_ROWS + 2); // the diagnostic row is no peer
  const fastest = peers.reduce((a, b) => (b.mbps > a.mbps ? b : a));
  // The ratio is the median over rounds of (peer's time / variant's time) in the same round:
  // on a loaded machine it follows the load less than a ratio of medians does.
  const f = rows.indexOf(fastest);
  rows.forEach((r, i) => { r.ratio = quantile(times[i].map((t, k) => times[f][k] / t), 0.5); });
  const res: AeadResult = { bytes: total, tensors: TENSORS, rounds, native: native && aeadNative(), wasm, aesPath, rows, fasterPeer: fastest.name };
  res.browser = browser ? await measureBrowser(quick) : { skipped: quick ? 'a --quick run does not launch Chromium' : 'not asked for (--no-browser)' };
  return res;
}

export function render(r: AeadResult): string[] {
  return [
    `### sealed open vs native AEAD (${(r.bytes / 1e6).toFixed(1)} MB in ${r.tensors} tensors, median of ${r.rounds} interleaved rounds, order rotating)`,
    '',
    '| variant | path | median ms | MB/s | × faster peer (median of per-round ratios) |',
    '| --- | --- | ---: | ---: | ---: |',
    ...r.rows.map((x) => `| ${x.name} | ${x.what} | ${x.ms.toFixed(1)} | ${x.mbps.toFixed(0)} | ${x.ratio!.toFixed(2)}× |`),
    '',
    `Faster native peer: ${r.fasterPeer}. Goal for keylock's sealed open (tag checked): ≥ 1.0×. `
      + `Native AEAD ${r.native ? 'on' : 'OFF (JavaScript)'}; AES-256-GCM path ${r.aesPath ?? 'not measured'}; XSalsa20 WebAssembly ${r.wasm ? 'on' : 'off'}.`,
    ...(r.browser === undefined ? [] : ['', ...('skipped' in r.browser ? [`Chromium: skipped (${r.browser.skipped}).`] : renderBrowser(r.browser))]),
  ];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const quick = process.argv.includes('--quick');
  const r = await measure(quick, process.argv.includes('--browser') || (!quick && !process.argv.includes('--no-browser')));
  process.stdout.write(render(r).join('\n') + '\n');
}
