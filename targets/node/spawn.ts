/**
 * Worker mode under Node: `worker_threads` for `env.spawnWorker`. The worker
 * script is `keylock-worker.mjs` beside the bundle in a device bundle, and
 * targets/node/worker.ts in the sources (then started through tsx's loader, as
 * the sources run under it).
 */
import { Worker } from 'node:worker_threads';
import type { WorkerLike } from '../../runtime/env.ts';

/** Where the worker script is, relative to this module once bundled (targets/build.mjs writes it there). */
const BUNDLED = './keylock-worker.mjs';

function workerUrl(): URL {
  const here = import.meta.url;
  if (!here.endsWith('.ts')) return new URL(BUNDLED, here);
  // Running from the sources under tsx: the worker registers tsx's loader first, then imports the script.
  const entry = new URL('./worker.ts', here).href;
  const tsx = import.meta.resolve('tsx/esm/api');
  const code = `const t = await import(${JSON.stringify(tsx)}); t.register(); await import(${JSON.stringify(entry)});`;
  return new URL(`data:text/javascript,${encodeURIComponent(code)}`);
}

/**
 * The process's Node options for the worker, less those that only concern the
 * main script: `--input-type` (an app started with `node --input-type=module -e …`)
 * makes Node refuse to start a worker from a file.
 */
export function workerExecArgv(argv: readonly string[] = process.execArgv): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--input-type') i++;
    else if (!argv[i].startsWith('--input-type=')) out.push(argv[i]);
  }
  return out;
}

/** Starts one model's worker thread. */
export function spawnNodeWorker(): WorkerLike {
  const w = new Worker(workerUrl(), { stdout: false, stderr: false, execArgv: workerExecArgv() });
  let ended = false;
  const end = (why: string): void => {
    if (ended) return;
    ended = true;
    me.ondeath?.(why);
  };
  const me: WorkerLike = {
    onmessage: null,
    ondeath: null,
    reportsExit: true,
    postMessage: (msg, transfer) => w.postMessage(msg, transfer ?? []),
    terminate: () => { void w.terminate(); },
    ref: () => w.ref(),
    unref: () => w.unref(),
  };
  w.on('message', (m) => me.onmessage?.(m));
  w.on('error', (e) => end(`error: ${e?.message ?? String(e)}`));
  w.on('exit', (code) => end(`exit code ${code}`));
  return me;
}
