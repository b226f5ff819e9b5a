/**
 * What the bench child's tasks share: the input each model is timed on, plain
 * sessions, locked models loaded as a device loads them, and the progress line.
 */
import { readFileSync } from 'node:fs';
import type { BackendSession } from '../../../runtime/backend.ts';
import { resolveBackend } from '../../../runtime/backends.ts';
import { loadModel } from '../../../runtime/load.ts';
import type { LockedModel } from '../../../runtime/model.ts';
import { decodeRecorded } from '../../../runtime/recorded.ts';
import type { TensorMap } from '../../../runtime/tensor.ts';
import { fromHex, ROOT, type Plan, type PreparedCase } from '../plan.ts';
import { seededFloats } from '../stats.ts';

/** A progress line on stderr (the parent passes it through; stdout carries only the result). */
export const log = (s: string): void => { process.stderr.write(`    ${s}\n`); };

/** The input a model is timed on: the first recorded MNIST test digit, or seeded floats of the declared shape. */
export function inputFor(plan: Plan, modelId: string): TensorMap {
  const m = plan.models.find((x) => x.id === modelId)!;
  if (m.mnist) {
    const s = decodeRecorded(new Uint8Array(readFileSync(`${ROOT}test/fixtures/mnist-test.cbor`)))[0];
    return s.inputs!;
  }
  const size = m.input.dims.reduce((a, b) => a * b, 1);
  return { [m.input.name]: { dtype: 'float32', dims: m.input.dims, data: seededFloats(size, 7) } };
}

/** The plain model in a bare backend session. */
export async function plainSession(plan: Plan, modelId: string, backend: string, threads: number): Promise<BackendSession> {
  const m = plan.models.find((x) => x.id === modelId)!;
  return (await resolveBackend(backend)).create(new Uint8Array(readFileSync(m.path)), { threads });
}

/** The vendor key a device pins: loads below verify the signature against it, as a keystore's loads do. */
export const trustOf = (plan: Plan): Uint8Array[] => [fromHex(plan.vendorPub)];

/** A case's locked model, loaded with its model key; throws when it does not come up ready. */
export async function lockedModel(plan: Plan, c: PreparedCase, backend: string, threads: number): Promise<LockedModel> {
  const m = await loadModel(new Uint8Array(readFileSync(c.klm)), { modelKey: fromHex(c.modelKey), trust: trustOf(plan), backend, threads });
  if (m.state !== 'ready') throw m.error!;
  return m;
}

/** Arguments of the latency and cold-start tasks (written by eval/bench/run.ts). */
export interface Args { plan: string; backend?: string; threads?: number; rounds?: number; targetMs?: number; cases?: string[] }
