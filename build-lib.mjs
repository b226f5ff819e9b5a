#!/usr/bin/env node
// Builds the package's entry points for apps that import keylock from
// node_modules (`import { loadModel } from 'keylock'`, `from 'keylock/vendor'`,
// `from 'keylock/testing'`): ESM bundles of runtime/index.ts (under Node:
// targets/node/index.ts, the same plus loadModelFile, openKeystore and
// recordToFile), models/index.ts and runtime/testing.ts with every dependency
// left as an import, and their type declarations (tsc, tsconfig.lib.json, which
// strips `@internal` members). The sources are TypeScript, which Node 20 does
// not run; `prepare` runs this on `npm ci` and before `npm pack`. Device bundles
// are build.mjs's job.
import * as esbuild from 'esbuild';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const out = join(root, 'dist/lib');
rmSync(out, { recursive: true, force: true });
await esbuild.build({
  entryPoints: {
    keylock: join(root, 'runtime/index.ts'), 'keylock-node': join(root, 'targets/node/index.ts'),
    vendor: join(root, 'models/index.ts'), testing: join(root, 'runtime/testing.ts'),
    // Worker mode's thread script, beside keylock-node.mjs (targets/node/spawn.ts finds it there).
    'keylock-worker': join(root, 'targets/node/worker.ts'),
  },
  outdir: out,
  outExtension: { '.js': '.mjs' },
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  chunkNames: 'chunks/[name]-[hash]',
  logLevel: 'warning',
});
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.lib.json')], { stdio: 'inherit' });
console.log(`built ${out}: keylock.mjs, keylock-node.mjs, keylock-worker.mjs, vendor.mjs, testing.mjs and types/`);
