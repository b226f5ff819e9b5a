// Typed errors keep their names in minified device bundles without esbuild's keepNames: every class
// in keystore/errors.ts is named from a table of string keys (which minification leaves alone).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import * as errors from '../keystore/errors.ts';

const classes = Object.entries(errors).filter(([, v]) => typeof v === 'function' && (v === errors.KeylockError || v.prototype instanceof errors.KeylockError));

test('every error class is named after its export, and instances say so', () => {
  assert.ok(classes.length >= 20, `found ${classes.length} error classes`);
  for (const [name, cls] of classes) assert.equal((cls as { prototype: Error }).prototype.name, name, `${name}.prototype.name`);
  const e = new errors.KeyMismatchError('the key does not open model "m"');
  assert.equal(e.name, 'KeyMismatchError');
  assert.equal(String(e), 'KeyMismatchError: the key does not open model "m"');
  assert.equal(new errors.DisabledError('m', 1, 'why').name, 'DisabledError');
});

test('minified without keepNames, as device bundles are, the names survive', async () => {
  const entry = fileURLToPath(new URL('../keystore/errors.ts', import.meta.url));
  const r = await esbuild.build({ entryPoints: [entry], bundle: true, minify: true, format: 'esm', write: false, logLevel: 'silent' });
  const code = r.outputFiles[0].text;
  assert.doesNotMatch(code, /class KeyMismatchError/, 'the class names are minified away');
  const mod = await import(`data:text/javascript;base64,${Buffer.from(code).toString('base64')}`);
  const K = Object.values(mod).find((c) => typeof c === 'function' && (c as { prototype: Error }).prototype.name === 'KeyMismatchError') as new (m: string) => Error;
  assert.ok(K, 'KeyMismatchError is exported from the minified module');
  const e = new K('x');
  assert.equal(e.name, 'KeyMismatchError');
  assert.ok(e instanceof Error);
});
