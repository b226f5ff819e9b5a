#!/usr/bin/env node
// Runs the TypeScript CLI straight from the sources, so `node bin/keylock.mjs`
// works right after `npm ci` with no build step. Device bundles are built
// separately by targets/build.mjs and never go through this launcher.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../targets/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
