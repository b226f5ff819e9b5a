/**
 * Deno target. Entry point of `dist/deno/keylock.mjs`, which is built for the
 * *node* platform: Deno defines `process`, so onnxruntime-web takes its Node
 * code path there and loads `ort-wasm-simd-threaded.{mjs,wasm}` from beside
 * the bundle (docs/TARGETS.md, Deno).
 *
 * Permissions: `deno run --allow-read --allow-env app.mjs`. Nothing touches the
 * network. `--allow-write` is needed only to store keystore changes (failure
 * counters, installed grants): a keystore opened with `{ readOnly: true }`
 * never writes, and a successful load writes nothing, so a device that runs
 * known-good models needs no write permission at all.
 *
 * Threads: one. ORT's worker threads come from a `blob:` URL that Deno's
 * `worker_threads` refuses (`ERR_INVALID_ARG_VALUE … blob:null/…`), so more
 * than one thread is refused up front (`env.checkLoad`, BackendUnavailableError)
 * instead of failing inside ORT.
 */
import { Keystore } from '../../keystore/keystore.ts';
import { decodeCounter } from '../../keystore/counter.ts';
import type { KeystoreStorage } from '../../keystore/storage.ts';
import { parseUnlock, type UnlockProvider } from '../../keystore/unlock.ts';
import { BackendUnavailableError, KeylockError } from '../../keystore/errors.ts';
import { env } from '../../runtime/env.ts';
import type { LoadOptions } from '../../runtime/load.ts';
import { loadModel } from '../../runtime/index.ts';
import { hasWebWorkers, webWorkerSpawner } from '../browser/spawn.ts';
import type { LockedModel } from '../../runtime/model.ts';

export * from '../../runtime/index.ts';
// What checks a device from its folder, as in the Node device bundle (targets/node/bundle.ts).
export { createOrtSession, decodeRecorded } from '../../runtime/testing.ts';

/** The part of the Deno namespace this entry uses (the bundle is type-checked without Deno's types). */
interface DenoLike {
  readFile(path: string | URL): Promise<Uint8Array>;
  errors: { NotFound: new (...a: never[]) => Error };
}

function deno(): DenoLike {
  const d = (globalThis as { Deno?: DenoLike }).Deno;
  if (!d) throw new TypeError('the deno bundle expects to run in Deno (globalThis.Deno is missing); use the node bundle under Node');
  return d;
}

// Deno's worker_threads cannot start ORT's blob: worker: more than one thread is
// refused up front by every load (see the module comment).
env.checkLoad = ({ threads }) => {
  if (threads !== 1) {
    throw new BackendUnavailableError(`onnxruntime-web under Deno: expected threads 1, got ${threads} (Deno's worker_threads cannot start ORT's blob: worker)`);
  }
};

// Worker mode: each model in a Deno module worker (keylock-worker.mjs beside the bundle; it inherits
// this process's permissions). Only under Deno: imported from Node (the sources' tests) nothing changes.
if ((globalThis as { Deno?: unknown }).Deno && hasWebWorkers()) env.spawnWorker ??= webWorkerSpawner(new URL('./keylock-worker.mjs', import.meta.url));

/** Reads a `.klm` with `Deno.readFile` (needs `--allow-read`) and loads it, handing the bytes over (`consume`, see the node target). */
export async function loadModelFile(path: string | URL, opts: LoadOptions): Promise<LockedModel> {
  return loadModel(await deno().readFile(path), { ...opts, consume: true });
}

/** Options of `openKeystore`. */
export interface OpenKeystoreOptions {
  /**
   * Open without write access: nothing is ever written, and a change the
   * runtime must store (a failure counter after a failed unlock, clearing one
   * after a success) fails with KeylockError `read-only`. Wrong unlock secrets
   * are not counted (that is a write). Default false.
   */
  readOnly?: boolean;
}

/**
 * A keystore file read with `Deno.readFile` that refuses every write, so a run
 * needs `--allow-read` only. A model whose failure counter is not zero must be
 * loaded once from a writable keystore to clear it.
 */
export function readOnlyFileStorage(path: string): KeystoreStorage {
  const where = `${path} (read-only)`;
  const refuse = async (): Promise<never> => {
    throw new KeylockError('read-only', `${where}: expected a writable keystore to store a change (failure counter or grant), got one opened read-only; open it with readOnly: false and run with --allow-write`);
  };
  return {
    where,
    async read() {
      const b = await readIfExists(path);
      if (!b) throw new KeylockError('not-found', `${path}: expected a keystore file, got no such file`);
      return b;
    },
    write: refuse,
    create: refuse,
    // The generation counter the file store keeps beside the keystore is still
    // checked, so a restored older copy is refused here too; it is never advanced.
    counter: {
      where: `${path}.counter`,
      async read() {
        const b = await readIfExists(`${path}.counter`);
        return b ? decodeCounter(b) : 0;
      },
      increment: refuse,
    },
  };
}

async function readIfExists(path: string): Promise<Uint8Array | undefined> {
  const d = deno();
  try {
    return await d.readFile(path);
  } catch (e) {
    if (e instanceof d.errors.NotFound) return undefined;
    throw e;
  }
}

/**
 * Opens a keystore file. `unlock` is a provider or its CLI spelling
 * (`file:PATH` needs `--allow-read` on the key file, `env:VAR` needs
 * `--allow-env`). Writable by default (needs `--allow-write`), so failure
 * counters and the model's disable policy are kept; see `readOnly`.
 */
export function openKeystore(path: string, unlock: UnlockProvider | string, opts: OpenKeystoreOptions = {}): Promise<Keystore> {
  const provider = typeof unlock === 'string' ? parseUnlock(unlock) : unlock;
  return Keystore.open(opts.readOnly ? readOnlyFileStorage(path) : path, { unlock: provider });
}
