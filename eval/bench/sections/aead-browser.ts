/**
 * Bench section "aead", its Chromium sub-table: keylock's `sealed` open in real
 * headless Chromium (/usr/bin/chromium via playwright-core), per cipher, on the
 * path a page takes, beside WebCrypto AES-256-GCM decrypting the same bytes.
 *
 * The ciphertexts are made here in Node (the vendor's `sealRanges`) and served
 * with the page; the page bundles the device code only (runtime/keys/sealed.ts,
 * keystore/aead.ts) and runs `restoreSealed` as a load does. Rounds are
 * interleaved (each round runs every variant once on a fresh copy; the copy is
 * not timed); medians are reported.
 *
 * The page is served from http://127.0.0.1 (a secure context: WebCrypto is
 * there). A second page on http://keylock.test (the same server, a host name
 * that is not potentially trustworthy, so no secure context and no
 * `crypto.subtle`) reports which AES-256-GCM path keylock chose by itself there
 * and checks that it opens the same tensors.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import type { SealedLock } from '../../../runtime/keys/sealed.ts';
import { sealedFixtures, TENSORS } from './aead-fixtures.ts';
import { chromiumMissing, launchChromium } from '../../../targets/browser/chromium.ts';
import { serve } from '../../../targets/browser/serve.ts';

const root = fileURLToPath(new URL('../../..', import.meta.url));
const INSECURE_HOST = 'keylock.test';

interface BrowserRow { name: string; what: string; ms: number; mbps: number; ratio: number }
export interface BrowserAeadResult {
  chromium: string; bytes: number; tensors: number; rounds: number; secure: boolean; crossOriginIsolated: boolean;
  chosenAesPath: string; rows: BrowserRow[];
  /** The page without a secure context. */
  insecure: { secure: boolean; subtle: boolean; chosenAesPath: string; opened: boolean };
}

/** The page module: every variant, interleaved, with a correctness check first. */
const PAGE = `
import { restoreSealed, sealedScheme } from ${JSON.stringify(join(root, 'runtime/keys/sealed.ts'))};
import { aesGcmPath, setAesGcmPath } from ${JSON.stringify(join(root, 'keystore/aead.ts'))};
import { sealedAesGcmKey, sealedAesGcmNonce } from ${JSON.stringify(join(root, 'runtime/keys/derive.ts'))};

const get = async (p) => new Uint8Array(await (await fetch(p)).arrayBuffer());
const unhex = (s) => new Uint8Array(s.match(/../g).map((b) => parseInt(b, 16)));
const entry = (e) => ({ ...e, ...(e.salt ? { salt: unhex(e.salt) } : {}), tensors: e.tensors.map((t) => ({ ...t, mac: unhex(t.mac) })) });
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

async function setup() {
  const [plain, xcB, aesB, xsB] = await Promise.all(['plain', 'xc', 'aes', 'xs'].map((n) => get('/' + n + '.bin')));
  const E = await (await fetch('/entries.json')).json();
  const xc = entry(E.xc), aes = entry(E.aes), xs = entry(E.xs);
  for (const e of [xc, aes, xs]) await sealedScheme.prepare(e);
  return { plain, xcB, aesB, xsB, xc, aes, xs, modelId: E.modelId, modelKey: unhex(E.modelKey) };
}

window.keylockAeadInsecure = async () => {
  const d = await setup();
  const chosen = aesGcmPath();
  const m = d.aesB.slice();
  await restoreSealed(m, d.aes, { modelId: d.modelId, modelKey: d.modelKey });
  return { secure: globalThis.isSecureContext, subtle: !!globalThis.crypto?.subtle, chosenAesPath: chosen, opened: same(m, d.plain) };
};

window.keylockAeadBench = async ({ rounds }) => {
  const d = await setup();
  const chosen = aesGcmPath();
  const ctx = { modelId: d.modelId, modelKey: d.modelKey };
  const pinned = { ...ctx, authenticated: true };
  // The peer: WebCrypto AES-256-GCM on the same ciphertext and tags, laid out as WebCrypto takes
  // them (C || tag per tensor) and under a key imported once, neither timed; plaintext left in the
  // new buffer decrypt() returns (no copy back, no wipe).
  const aesKey = await crypto.subtle.importKey('raw', sealedAesGcmKey(d.modelKey), 'AES-GCM', false, ['decrypt']);
  const peerIn = d.aes.tensors.map((t) => { const b = new Uint8Array(t.length + 16); b.set(d.aesB.subarray(t.offset, t.offset + t.length)); b.set(t.mac, t.length); return b; });
  const nonces = d.aes.tensors.map((t) => sealedAesGcmNonce(d.modelId, t.name, d.aes.salt));
  const peerOut = [];
  const peer = async () => { peerOut.length = 0; for (let i = 0; i < peerIn.length; i++) peerOut.push(await crypto.subtle.decrypt({ name: 'AES-GCM', iv: nonces[i] }, aesKey, peerIn[i])); };
  const V = [
    { name: 'keylock sealed, XChaCha20-Poly1305', what: 'tag checked (@noble/ciphers, JavaScript)', t: d.xcB, run: (m) => restoreSealed(m, d.xc, ctx) },
    { name: 'keylock sealed, XChaCha20, pinned key', what: 'no tag (@noble ChaCha20)', t: d.xcB, run: (m) => restoreSealed(m, d.xc, pinned) },
    { name: 'keylock sealed, XSalsa20-Poly1305', what: 'tag checked (WebAssembly SIMD)', t: d.xsB, run: (m) => restoreSealed(m, d.xs, ctx) },
    { name: 'keylock sealed, XSalsa20, pinned key', what: 'no tag (WebAssembly SIMD)', t: d.xsB, run: (m) => restoreSealed(m, d.xs, pinned) },
    { name: 'keylock sealed, AES-256-GCM', what: 'tag checked (WebCrypto AES-GCM: a secure-context page)', path: 'webcrypto', t: d.aesB, run: (m) => restoreSealed(m, d.aes, ctx) },
    { name: 'keylock sealed, AES-256-GCM, pinned key', what: 'no tag (WebCrypto AES-CTR)', path: 'webcrypto', t: d.aesB, run: (m) => restoreSealed(m, d.aes, pinned) },
    { name: 'keylock sealed, AES-256-GCM, fallback', what: 'tag checked (@noble gcm: a page without a secure context)', path: 'js', t: d.aesB, run: (m) => restoreSealed(m, d.aes, ctx) },
    { name: 'keylock sealed, AES-256-GCM, fallback, pinned key', what: 'no tag (@noble ctr)', path: 'js', t: d.aesB, run: (m) => restoreSealed(m, d.aes, pinned) },
    { name: 'WebCrypto AES-256-GCM', what: 'peer: decrypt(C || tag) per tensor, key imported once, plaintext left in the new buffer', peer: true, run: peer },
  ];
  const work = new Uint8Array(d.plain.length);
  const once = async (v) => {
    await setAesGcmPath(v.path);
    try {
      if (!v.peer) work.set(v.t);
      const t0 = performance.now();
      await v.run(work);
      return performance.now() - t0;
    } finally { await setAesGcmPath(undefined); }
  };
  for (const v of V) {
    await once(v);
    const ok = v.peer
      ? d.aes.tensors.every((t, i) => same(new Uint8Array(peerOut[i]), d.plain.subarray(t.offset, t.offset + t.length)))
      : same(work, d.plain);
    if (!ok) throw new Error(v.name + ': wrong plaintext');
  }
  const times = V.map(() => []);
  // The order rotates every round (garbage collection does not fall on one variant every time).
  for (let r = 0; r < rounds; r++) for (let j = 0; j < V.length; j++) { const i = (j + r) % V.length; times[i].push(await once(V[i])); }
  const bytes = d.aes.tensors.reduce((n, t) => n + t.length, 0);
  const rows = V.map((v, i) => { const ms = median(times[i]); return { name: v.name, what: v.what, ms, mbps: bytes / 1e6 / (ms / 1000) }; });
  // Median over rounds of (peer's time / variant's time) in the same round.
  const P = times[times.length - 1];
  rows.forEach((r, i) => { r.ratio = median(times[i].map((t, k) => P[k] / t)); });
  return { rows, bytes, secure: globalThis.isSecureContext, crossOriginIsolated: globalThis.crossOriginIsolated, chosenAesPath: chosen, chromium: navigator.userAgent.match(/Chrom(?:e|ium)\\/([\\d.]+)/)?.[1] ?? navigator.userAgent };
};
`;

/** Measures in Chromium, or says why not. */
export async function measureBrowser(quick: boolean): Promise<BrowserAeadResult | { skipped: string }> {
  if (chromiumMissing) return { skipped: chromiumMissing };
  const total = (quick ? 4 : 8) << 20;
  const rounds = quick ? 3 : 11;
  const modelKey = new Uint8Array(32).fill(9);
  const modelId = 'bench-aead-browser';
  const { plain, xc: { model: xcModel, lock: xc }, aes: { model: aesModel, lock: aes }, xs: { model: xsModel, lock: xs } } = sealedFixtures(total, 13, modelId, modelKey);
  const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
  const json = (e: SealedLock): unknown => ({ ...e, ...(e.salt ? { salt: hex(e.salt) } : {}), tensors: e.tensors.map((t) => ({ ...t, mac: hex(t.mac) })) });

  const work = mkdtempSync(join(tmpdir(), 'keylock-aead-browser-'));
  try {
    writeFileSync(join(work, 'plain.bin'), plain);
    writeFileSync(join(work, 'xc.bin'), xcModel);
    writeFileSync(join(work, 'aes.bin'), aesModel);
    writeFileSync(join(work, 'xs.bin'), xsModel);
    writeFileSync(join(work, 'entries.json'), JSON.stringify({ modelId, modelKey: hex(modelKey), xc: json(xc), aes: json(aes), xs: json(xs) }));
    writeFileSync(join(work, 'page.src.js'), PAGE);
    writeFileSync(join(work, 'index.html'), '<!doctype html><meta charset="utf-8"><title>keylock aead</title><script type="module" src="/page.js"></script>\n');
    await esbuild.build({
      entryPoints: [{ in: join(work, 'page.src.js'), out: 'page' }], outdir: work, bundle: true, format: 'esm',
      platform: 'browser', target: 'es2022', external: ['node:*'], logLevel: 'error',
    });
    const server = await serve({ roots: { '/': work } });
    const port = new URL(server.origin).port;
    const insecureOrigin = `http://${INSECURE_HOST}:${port}`;
    const browser = await launchChromium(server.origin, [`--host-resolver-rules=MAP ${INSECURE_HOST} 127.0.0.1`]);
    try {
      // The second origin is this same server under a name that is not potentially trustworthy.
      await browser.context.route(`${insecureOrigin}/**`, (r) => r.continue());
      const errors: string[] = [];
      const page = await browser.context.newPage();
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.goto(`${server.origin}/index.html`);
      await page.waitForFunction(() => typeof (window as unknown as { keylockAeadBench?: unknown }).keylockAeadBench === 'function');
      const r = await page.evaluate((a) => (window as unknown as { keylockAeadBench(x: unknown): Promise<unknown> }).keylockAeadBench(a), { rounds }) as Omit<BrowserAeadResult, 'tensors' | 'rounds' | 'insecure'>;
      const p2 = await browser.context.newPage();
      p2.on('pageerror', (e) => errors.push(String(e)));
      await p2.goto(`${insecureOrigin}/index.html`);
      await p2.waitForFunction(() => typeof (window as unknown as { keylockAeadInsecure?: unknown }).keylockAeadInsecure === 'function');
      const insecure = await p2.evaluate(() => (window as unknown as { keylockAeadInsecure(): Promise<unknown> }).keylockAeadInsecure()) as BrowserAeadResult['insecure'];
      if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
      if (browser.external.length) throw new Error(`the page asked for ${browser.external.join(', ')}`);
      return { ...r, tensors: TENSORS, rounds, insecure };
    } finally {
      await browser.close();
      await server.close();
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

export function renderBrowser(r: BrowserAeadResult): string[] {
  return [
    `#### In Chromium ${r.chromium} (headless, ${(r.bytes / 1e6).toFixed(1)} MB in ${r.tensors} tensors, median of ${r.rounds} interleaved rounds, order rotating)`,
    '',
    `The page is http://127.0.0.1 (secure context: ${r.secure ? 'yes' : 'no'}; cross-origin isolated: ${r.crossOriginIsolated ? 'yes' : 'no'}); keylock chose the AES-256-GCM path \`${r.chosenAesPath}\` there by itself. Each AES row forces its path.`,
    '',
    '| variant | path in the page | median ms | MB/s | × WebCrypto AES-256-GCM (median of per-round ratios) |',
    '| --- | --- | ---: | ---: | ---: |',
    ...r.rows.map((x) => `| ${x.name} | ${x.what} | ${x.ms.toFixed(1)} | ${x.mbps.toFixed(0)} | ${x.ratio.toFixed(2)}× |`),
    '',
    `A page on http://${INSECURE_HOST} (the same server under a name that is not potentially trustworthy): secure context ${r.insecure.secure ? 'yes' : 'no'}, `
      + `crypto.subtle ${r.insecure.subtle ? 'present' : 'undefined'}; keylock chose \`${r.insecure.chosenAesPath}\` and ${r.insecure.opened ? 'opened' : 'FAILED to open'} the AES-256-GCM tensors (the "fallback" rows are that path's speed).`,
  ];
}
