/**
 * tfjs set up for training in Node: the wasm backend (measured here about 5×
 * faster than the pure-JS cpu backend for dense layers and ~80× for convs),
 * its .wasm files read from node_modules so nothing touches the network, and
 * the conv filter-gradient kernel that wasm lacks registered.
 */
import * as tf from '@tensorflow/tfjs';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { createRequire } from 'node:module';
import { dirname, sep } from 'node:path';
import { registerConv2DBackpropFilterWasm } from './conv2d-backprop-filter.ts';

let ready: Promise<typeof tf> | undefined;

function wasmDir(): string {
  const require = createRequire(import.meta.url);
  // The package's main is dist/tf-backend-wasm.node.js; the .wasm files sit beside it.
  return dirname(require.resolve('@tensorflow/tfjs-backend-wasm')) + sep;
}

async function init(): Promise<typeof tf> {
  setWasmPaths(wasmDir());
  registerConv2DBackpropFilterWasm();
  // The Emscripten glue adds process handlers that rethrow from inside its
  // minified one-line file, so Node prints ~30 KB of source for every uncaught
  // error; take them out again to keep Node's own reporting.
  const uncaught = process.listeners('uncaughtException');
  const unhandled = process.listeners('unhandledRejection');
  try {
    if (!(await tf.setBackend('wasm'))) throw new Error('tfjs: expected the wasm backend to initialize, got failure');
    await tf.ready();
  } finally {
    for (const l of process.listeners('uncaughtException')) if (!uncaught.includes(l)) process.removeListener('uncaughtException', l);
    for (const l of process.listeners('unhandledRejection')) if (!unhandled.includes(l)) process.removeListener('unhandledRejection', l);
  }
  return tf;
}

/**
 * Selects the tfjs wasm backend with local wasm files and the
 * Conv2DBackpropFilter kernel. Safe to call many times: later calls return the
 * first call's promise, and a failed attempt can be retried.
 */
export function initTfjsWasm(): Promise<typeof tf> {
  ready ??= init().catch((e: unknown) => {
    ready = undefined;
    throw e;
  });
  return ready;
}
