#!/usr/bin/env node
// Builds the device bundles with esbuild and prints a size table.
// A device bundle holds runtime/ + keystore/ and their dependencies only.
import * as esbuild from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const ortDist = join(root, 'node_modules/onnxruntime-web/dist');

// tweetnacl and cbor-x use `require` for Node built-ins; an ESM bundle needs a real one.
const requireBanner = "import { createRequire as __keylockRequire } from 'node:module'; const require = __keylockRequire(import.meta.url);";

/** Targets: entry, esbuild options, and the ORT files that must sit beside the bundle. */
export const TARGETS = {
  node: {
    entry: 'targets/node/index.ts',
    options: { platform: 'node', target: 'node20', banner: { js: requireBanner }, external: ['cbor-extract'] },
    ortFiles: ['ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.wasm'],
  },
};

/** Builds one target into dist/<name>/; returns its output files and the source files bundled. */
export async function buildTarget(name, { minify = true } = {}) {
  const t = TARGETS[name];
  if (!t) throw new Error(`unknown target ${name}; known: ${Object.keys(TARGETS).join(', ')}`);
  const out = join(root, 'dist', name);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const result = await esbuild.build({
    entryPoints: [join(root, t.entry)],
    bundle: true,
    format: 'esm',
    minify,
    legalComments: 'none',
    metafile: true,
    outfile: join(out, 'keylock.mjs'),
    logLevel: 'warning',
    ...t.options,
  });
  for (const f of t.ortFiles) copyFileSync(join(ortDist, f), join(out, f));
  return { files: readdirSync(out).map((f) => join(out, f)), inputs: Object.keys(result.metafile.inputs) };
}

function table(rows) {
  const head = ['target', 'file', 'bytes', 'gzip'];
  const all = [head, ...rows];
  const w = head.map((_, i) => Math.max(...all.map((r) => String(r[i]).length)));
  return all.map((r) => r.map((c, i) => (i >= 2 ? String(c).padStart(w[i]) : String(c).padEnd(w[i]))).join('  ')).join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const names = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(TARGETS);
  const rows = [];
  for (const n of names) {
    for (const f of (await buildTarget(n)).files) {
      const bytes = readFileSync(f);
      rows.push([n, f.slice(root.length + 1), statSync(f).size, gzipSync(bytes, { level: 9 }).length]);
    }
  }
  console.log(table(rows));
}
