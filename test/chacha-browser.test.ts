/**
 * The WebAssembly SIMD XChaCha20 of `sealed` inline (keystore/wasm/chacha.ts) on a page's main
 * thread in headless Chromium: compiled asynchronously (what the scheme's `prepare` step does),
 * then arenas made synchronously (what the run hooks do), their output equal to @noble/ciphers'
 * on the same page.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { chromiumMissing, launchChromium, type Browser } from '../targets/browser/chromium.ts';
import { serve, type Served } from '../targets/browser/serve.ts';

const root = fileURLToPath(new URL('..', import.meta.url));

const PAGE = `
import { chachaWasmReady, createXChachaArena, prepareChachaWasm } from ${JSON.stringify(join(root, 'keystore/wasm/chacha.ts'))};
import { xchacha20 } from '@noble/ciphers/chacha.js';

window.keylockChacha = async function run(sizes) {
  const prepared = await prepareChachaWasm();
  const key = crypto.getRandomValues(new Uint8Array(32));
  const slots = sizes.map((n) => ({ ciphertext: new Uint8Array(n).map((_, j) => (j * 131 + n) & 255), nonce: crypto.getRandomValues(new Uint8Array(24)) }));
  const arena = createXChachaArena(key, slots);
  if (!arena) return { prepared, ready: chachaWasmReady(), arena: false };
  arena.decrypt();
  const equal = slots.map((s, i) => {
    const want = xchacha20(key, s.nonce, s.ciphertext, undefined, 1);
    return want.every((b, j) => arena.buffers[i][j] === b);
  });
  const inMemory = arena.buffers.every((b) => b.buffer === arena.memoryBuffer);
  arena.wipe();
  return { prepared, ready: chachaWasmReady(), arena: true, equal, inMemory, zero: new Uint8Array(arena.memoryBuffer).every((b) => b === 0) };
};
`;

describe('the WebAssembly ChaCha20 in headless Chromium', { skip: chromiumMissing }, () => {
  let work: string;
  let server: Served;
  let browser: Browser;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'keylock-chacha-browser-'));
    writeFileSync(join(work, 'page.src.js'), PAGE);
    await esbuild.build({ entryPoints: [{ in: join(work, 'page.src.js'), out: 'page' }], outdir: work, bundle: true, format: 'esm', platform: 'browser', target: 'es2022', logLevel: 'error', nodePaths: [join(root, 'node_modules')] });
    writeFileSync(join(work, 'index.html'), '<!doctype html><meta charset="utf-8"><title>keylock chacha</title><script type="module" src="/page.js"></script>\n');
    server = await serve({ roots: { '/': work } });
    browser = await launchChromium(server.origin);
  });
  after(async () => {
    await browser?.close();
    await server?.close();
    rmSync(work, { recursive: true, force: true });
  });

  test('the main thread compiles it asynchronously, makes arenas synchronously, and decrypts what @noble decrypts', async () => {
    const page = await browser.context.newPage();
    await page.goto(`${server.origin}/index.html`);
    await page.waitForFunction(() => typeof (window as unknown as { keylockChacha?: unknown }).keylockChacha === 'function');
    const sizes = [0, 1, 63, 255, 256, 257, 1000, 65536 + 17];
    const r = await page.evaluate((s) => (window as unknown as { keylockChacha: (x: number[]) => Promise<unknown> }).keylockChacha(s), sizes) as
      { prepared: boolean; ready: boolean; arena: boolean; equal?: boolean[]; inMemory?: boolean; zero?: boolean };
    assert.equal(r.prepared, true, 'Chromium runs WebAssembly SIMD: prepareChachaWasm resolves true');
    assert.equal(r.arena, true, 'an arena is made on the main thread once the module is compiled');
    assert.deepEqual(r.equal, sizes.map(() => true));
    assert.equal(r.inMemory, true);
    assert.equal(r.zero, true, 'wipe zeroes the whole memory');
    assert.deepEqual(browser.external, []);
  });
});
