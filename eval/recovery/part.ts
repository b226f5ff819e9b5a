/**
 * What every recovery report (eval/recovery/<lock>.ts) gets and returns, and
 * the number formats their tables share.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { MnistSet } from '../../models/train/mnist.ts';
import { labelKey } from '../harness.ts';
import type { Check, Progress } from '../section.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

/** A file of the repository (path relative to its root) as bytes. */
export const read = (p: string): Uint8Array => new Uint8Array(readFileSync(root + p));
/** The vendor signing seed of every lock made for the recovery reports. */
export const vendorSeed = labelKey('recovery/vendor');
/** Seconds since `t0` (a `performance.now()` reading). */
export const sec = (t0: number): number => (performance.now() - t0) / 1000;
/** One decimal. */
export const f1 = (x: number): string => x.toFixed(1);
/** Three decimals. */
export const f3 = (x: number): string => x.toFixed(3);
/** An integer with thousands separators. */
export const int = (x: number): string => x.toLocaleString('en-US');

/** What every part gets: the data, the attacker's stolen subsets and the scratch baseline (cached per arch and size). */
export interface Env {
  quick: boolean;
  seed: number;
  progress: Progress;
  cache: string;
  train: MnistSet;
  test: MnistSet;
  /** The attacker's `n` stolen training digits (the same subset for every attack of that size). */
  stolen(n: number): MnistSet;
  /** Test accuracy of `arch` trained from scratch on the `n` stolen digits with the attacker's budget. */
  scratch(arch: 'mlp' | 'cnn', n: number): number;
}

/** What every part returns: its markdown lines and its checks. */
export interface Part { md: string[]; checks: Check[] }
