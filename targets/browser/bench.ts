/**
 * Latency of the locked reference CNN in headless Chromium (the demo page,
 * built bundles, served with COOP/COEP), next to the Node runtime on the same
 * digits. Per configuration: a fresh page, the time until the model is ready
 * (fetch + compile ORT's wasm, unlock the keystore, create the session), then
 * `--runs` classifications of the recorded digits; p50/p99 are `model.stats`
 * over the last 1,024 runs (the first, warm-up runs fall out of the window
 * when runs > 1,024).
 *
 *   node --import tsx targets/browser/bench.ts [--runs 1100] [--webgpu-runs 300]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildTarget } from '../build.mjs';
import { Keystore } from '../../keystore/keystore.ts';
import { loadModel } from '../../runtime/load.ts';
import { CHROMIUM, chromiumMissing, launchChromium } from './chromium.ts';
import { prepareDemo } from './prepare-demo.ts';
import { demoRoots, serve } from './serve.ts';

interface Row { where: string; ready: number; runs: number; p50: number; p99: number; acc: string }

type Demo = { ready: Promise<{ state: string; error?: { name: string } }>; classifyMany(i: number[]): Promise<{ preds: number[]; labels: number[]; stats?: { runs: number; p50: number; p99: number }; error?: { name: string } }> };

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '1100' }, 'webgpu-runs': { type: 'string', default: '300' } } });
  if (chromiumMissing) throw new Error(chromiumMissing);
  const runs = Number(values.runs), gpuRuns = Number(values['webgpu-runs']);
  const load0 = loadavg()[0];
  const work = mkdtempSync(join(tmpdir(), 'keylock-bench-'));
  const rows: Row[] = [];
  try {
    const wasm = await buildTarget('browser', { outDir: join(work, 'browser') });
    const webgpu = await buildTarget('browser-webgpu', { outDir: join(work, 'browser-webgpu') });
    const demo = await prepareDemo(join(work, 'demo'), { digits: 100 });
    const idx = (n: number): number[] => Array.from({ length: n }, (_, i) => i % demo.digits.length);

    const ks = await Keystore.fromBytes(demo.keystores.device.bytes, demo.keystores.device.unlock());
    let t0 = performance.now();
    const m = await loadModel(demo.klm, { keystore: ks });
    const nodeReady = performance.now() - t0;
    let ok = 0;
    for (const i of idx(runs)) {
      const l = (await m.run(demo.digits[i].inputs!)).logits.data as Float32Array;
      if (l.indexOf(Math.max(...l)) === demo.digits[i].label) ok++;
    }
    rows.push({ where: 'Node 20, runtime sources, wasm 1 thread', ready: nodeReady, ...m.stats, acc: `${ok}/${runs}` });
    await m.release();
    ks.close();

    const server = await serve({ roots: demoRoots({ demo: demo.dir, browser: wasm.dir, browserWebgpu: webgpu.dir }) });
    const b = await launchChromium(server.origin, ['--enable-unsafe-webgpu']);
    try {
      for (const [label, q, n] of [
        ['Chromium, dist/browser, wasm 1 thread', 'backend=wasm&threads=1', runs],
        ['Chromium, dist/browser, wasm 2 threads', 'backend=wasm&threads=2', runs],
        ['Chromium, dist/browser-webgpu, wasm 2 threads (JSEP build)', 'backend=wasm&threads=2&bundle=webgpu', runs],
        ['Chromium, dist/browser-webgpu, webgpu (SwiftShader)', 'backend=webgpu&threads=1', gpuRuns],
      ] as const) {
        const page = await b.context.newPage();
        t0 = performance.now();
        await page.goto(`${server.origin}/?keystore=device&${q}`);
        const st = await page.evaluate(() => (window as unknown as { keylockDemo: Demo }).keylockDemo.ready);
        const ready = performance.now() - t0;
        if (st.state !== 'ready') throw new Error(`${label}: ${st.state} ${st.error?.name}`);
        const r = await page.evaluate((ix) => (window as unknown as { keylockDemo: Demo }).keylockDemo.classifyMany(ix), idx(n));
        if (r.error) throw new Error(`${label}: ${r.error.name}`);
        const right = r.preds.filter((p, i) => p === r.labels[i]).length;
        rows.push({ where: label, ready, ...r.stats!, acc: `${right}/${n}` });
        await page.close();
      }
      if (b.external.length) throw new Error(`requests left the page: ${b.external.join(', ')}`);
    } finally {
      await b.close();
      await server.close();
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const out = ['| where | ready (ms) | runs | p50 (ms) | p99 (ms) | right |', '|---|---|---|---|---|---|'];
  for (const r of rows) out.push(`| ${r.where} | ${r.ready.toFixed(0)} | ${r.runs} | ${r.p50.toFixed(3)} | ${r.p99.toFixed(3)} | ${r.acc} |`);
  process.stdout.write(`${out.join('\n')}\n(${CHROMIUM}; ready = page load to model ready, incl. wasm fetch+compile and unlock; 1-min load average ${load0.toFixed(2)} at start, ${loadavg()[0].toFixed(2)} at end)\n`);
}

await main();
