/**
 * The `.klp` pipeline file (docs/SPEC.md, "Pipeline"): several locked models
 * sold, granted, revoked and halted as one product.
 *
 *   envelope: { format: "keylock/pipeline", version: 1, signed: bstr, sig: bstr, parts: [bstr, ...] }
 *   signed:   CBOR of the pipeline manifest (below), Ed25519-signed by the vendor
 *   parts:    one complete `.klm` per stage, in stage order; each bound to the signature
 *             by its stage's `digest` (SHA-256 of the whole `.klm`)
 *
 * Every part is an ordinary `.klm` (its own signed manifest, digest, locks and
 * canary) whose model id is `<pipelineId>/<stage name>` and whose model key is
 * the pipeline's: a device holds one grant, for `pipelineId`. The manifest
 * also says how the stages are wired: which input of a stage takes which
 * output of the one before, through declarative glue steps (affine rescale,
 * window, reshape), and each stage's stream state and constants.
 */
import { decodeCbor, Fields } from '../keystore/cbor.ts';
import { openEnvelopeAsync, parseEnvelope } from '../keystore/envelope.ts';
import { FormatError, TamperedError, UntrustedSignerError } from '../keystore/errors.ts';
import { hex, keyId } from '../keystore/hex.ts';
import { equalBytes, sha256Async } from '../keystore/nacl.ts';
import { MAX_KLM_BYTES, type Policy } from './klm.ts';
import { isDType, typedFromBytes, type TensorMap } from './tensor.ts';

export const KLP_FORMAT = 'keylock/pipeline';
export const KLP_VERSION = 1;
/** Most stages in a pipeline. */
export const MAX_STAGES = 16;
/** Largest signed pipeline manifest (wiring only; the parts carry their own manifests). */
const MAX_KLP_MANIFEST = 1 << 20;

/**
 * A glue step on the way into a stage's input, applied in order:
 * `affine` y = x * mul / div + add per element (in float64, stored in the
 * tensor's type; openWakeWord's mel rescale is `div: 10, add: 2`);
 * `window` rows of `row` elements buffered (starting with `prefill` rows of
 * zeros), a window of `size` rows emitted each time that many are buffered,
 * then `hop` rows dropped (a step that emits zero or several tensors per
 * input); `reshape` sets the dims (one may be -1).
 */
export type GlueStep =
  | { op: 'affine'; mul: number; div: number; add: number }
  | { op: 'window'; size: number; hop: number; row: number; prefill: number }
  | { op: 'reshape'; shape: number[] };

/** One stage: a part `.klm` and how it is fed. */
export interface PipelineStage {
  /** Unique within the pipeline; the part's model id is `<pipelineId>/<name>`. */
  name: string;
  /** SHA-256 of the part's whole `.klm` file. */
  digest: Uint8Array;
  /** Length of the part's `.klm` file. */
  bytes: number;
  /** The part's input the pipeline feeds. */
  input: string;
  /** The previous stage's output that feeds `input`; absent on the first stage, which takes the pipeline's input. */
  from?: string;
  steps: GlueStep[];
  /** Stream state of the part (state input -> output), as `StreamOptions.state`; absent: inferred from the names. */
  state?: Record<string, string>;
  /** Inputs held fixed (e.g. a sample rate). */
  constants?: TensorMap;
}

/** The signed manifest of a `.klp`. */
export interface PipelineManifest {
  /** The id the device's grant names; revoking it revokes every stage. */
  pipelineId: string;
  created: number;
  vendorKey: Uint8Array;
  /** Key check value of the pipeline's model key (the parts' key): deriveBytes(modelKey, 'check', 'kcv', 16). */
  kcv: Uint8Array;
  policy: Policy;
  stages: PipelineStage[];
}

/** A parsed, verified `.klp`. */
export interface KlpFile {
  manifest: PipelineManifest;
  /** Each stage's `.klm`, checked against its signed digest. */
  parts: Uint8Array[];
  /** True when the signature was checked against a pinned vendor key. */
  trusted: boolean;
}

/** The model id of a stage's part. */
export function partModelId(pipelineId: string, stage: string): string {
  return `${pipelineId}/${stage}`;
}

const STAGE_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** Checks and converts one glue step (defaults filled in); FormatError otherwise. */
export function parseGlueStep(v: unknown, what: string): GlueStep {
  const f = Fields.of(what, v);
  const op = f.oneOf('op', ['affine', 'window', 'reshape'] as const);
  if (op === 'affine') {
    const num = (k: string, d: number): number => (f.has(k) ? f.num(k) : d);
    const s = { op, mul: num('mul', 1), div: num('div', 1), add: num('add', 0) };
    if (s.div === 0) throw new FormatError(`${what}.div: expected a non-zero number, got 0`);
    return s;
  }
  if (op === 'window') {
    const s = { op, size: f.uint('size'), hop: f.uint('hop'), row: f.has('row') ? f.uint('row') : 1, prefill: f.has('prefill') ? f.uint('prefill') : 0 };
    if (s.size < 1 || s.hop < 1 || s.hop > s.size || s.row < 1 || s.prefill >= s.size) {
      throw new FormatError(`${what}: expected size >= 1, 1 <= hop <= size, row >= 1, prefill < size; got size ${s.size}, hop ${s.hop}, row ${s.row}, prefill ${s.prefill}`);
    }
    return s;
  }
  const shape = f.array('shape', 16).map((d, i) => {
    if (typeof d === 'number' && Number.isSafeInteger(d) && d >= -1) return d;
    throw new FormatError(`${what}.shape[${i}]: expected an integer >= -1, got ${String(d)}`);
  });
  if (shape.filter((d) => d === -1).length > 1) throw new FormatError(`${what}.shape: expected at most one -1, got [${shape.join(',')}]`);
  return { op, shape };
}

function stage(v: unknown, i: number): PipelineStage {
  const what = `pipeline.stages[${i}]`;
  const f = Fields.of(what, v);
  const name = f.text('name', 64);
  if (!STAGE_NAME.test(name)) throw new FormatError(`${what}.name: expected letters, digits, "_", "." or "-", got "${name}"`);
  const s: PipelineStage = {
    name, digest: f.bytes('digest', { len: 32 }), bytes: f.uint('bytes'), input: f.text('input', 256),
    steps: f.array('steps', 16).map((x, j) => parseGlueStep(x, `${what}.steps[${j}]`)),
  };
  if (f.has('from')) s.from = f.text('from', 256);
  if ((i === 0) !== (s.from === undefined)) throw new FormatError(`${what}.from: ${i === 0 ? 'the first stage takes the pipeline input and names no output' : 'expected the previous stage\'s output that feeds this one'}`);
  if (f.has('state')) {
    const m = f.map('state');
    s.state = {};
    for (const k of Object.keys(m.obj)) s.state[k] = m.text(k, 256);
  }
  if (f.has('constants')) {
    const m = f.map('constants');
    s.constants = {};
    for (const k of Object.keys(m.obj)) {
      const t = m.map(k);
      const dtype = t.text('dtype', 32);
      if (!isDType(dtype)) throw new FormatError(`${t.what}.dtype: expected a dtype name, got "${dtype}"`);
      const dims = t.array('dims', 16).map((d, j) => {
        if (typeof d === 'number' && Number.isSafeInteger(d) && d >= 0) return d;
        throw new FormatError(`${t.what}.dims[${j}]: expected a non-negative integer, got ${String(d)}`);
      });
      let data;
      try {
        data = typedFromBytes(dtype, t.bytes('data', { max: 1 << 20 }));
      } catch (e) {
        throw new FormatError(`${t.what}.data: ${(e as Error).message}`);
      }
      if (data.length !== dims.reduce((p, d) => p * d, 1)) throw new FormatError(`${t.what}: dims [${dims.join(',')}] need ${dims.reduce((p, d) => p * d, 1)} elements, got ${data.length}`);
      s.constants[k] = { dtype, dims, data };
    }
  }
  return s;
}

/** Checks and converts a decoded pipeline manifest body. */
export function parsePipelineManifest(f: Fields): PipelineManifest {
  const p = f.map('policy');
  const m: PipelineManifest = {
    pipelineId: f.text('pipelineId', 200),
    created: f.uint('created'),
    vendorKey: f.bytes('vendorKey', { len: 32 }),
    kcv: f.bytes('kcv', { len: 16 }),
    policy: { onInvalidKey: p.oneOf('onInvalidKey', ['halt', 'disable'] as const), maxFailures: p.uint('maxFailures') },
    stages: f.array('stages', MAX_STAGES).map(stage),
  };
  if (!m.stages.length) throw new FormatError('pipeline.stages: expected at least one stage, got none');
  const names = new Set(m.stages.map((s) => s.name));
  if (names.size !== m.stages.length) throw new FormatError(`pipeline.stages: expected unique names, got ${m.stages.map((s) => s.name).join(', ')}`);
  return m;
}

/**
 * Parses and verifies a `.klp`: envelope, signature (by one of `trusted` when
 * given, else by the key the manifest names, which proves integrity only),
 * manifest. Throws FormatError, UntrustedSignerError, SizeLimitError. The parts
 * are not yet proven: `checkKlpParts` checks them against their signed digests
 * (and each part's own signature and digest are checked when it is loaded).
 */
export async function openKlp(bytes: Uint8Array, trusted?: readonly Uint8Array[]): Promise<KlpFile> {
  const env = parseEnvelope(bytes, KLP_FORMAT, KLP_VERSION, MAX_KLM_BYTES);
  let named: Uint8Array | undefined;
  try {
    // Read before verification only to pick among the trusted keys; the signature check makes it count.
    named = Fields.of('pipeline', decodeCbor(env.signed, 'pipeline', MAX_KLP_MANIFEST)).bytes('vendorKey', { len: 32 });
  } catch {
    named = undefined;
  }
  let key = named;
  if (trusted) {
    key = trusted.find((k) => named && equalBytes(k, named));
    if (!key) throw new UntrustedSignerError(`${KLP_FORMAT}: expected a signature by one of ${trusted.length} trusted vendor key(s), got one by ${named ? keyId(named) : 'an unnamed key'}`);
  }
  if (!key) throw new FormatError(`${KLP_FORMAT}: the manifest names no vendor key`);
  const manifest = parsePipelineManifest(await openEnvelopeAsync(env, key, MAX_KLP_MANIFEST));
  const parts = env.outer.array('parts', MAX_STAGES).map((p, i) => {
    if (!(p instanceof Uint8Array)) throw new FormatError(`${KLP_FORMAT}.parts[${i}]: expected a byte string, got ${typeof p}`);
    return p;
  });
  return { manifest, parts, trusted: trusted !== undefined };
}

/**
 * Throws TamperedError (with the stage's name as `stage`) unless there is one part per stage and
 * each has its stage's signed length and SHA-256.
 */
export async function checkKlpParts(file: KlpFile): Promise<void> {
  const { manifest, parts } = file;
  if (parts.length !== manifest.stages.length) throw new TamperedError(`${KLP_FORMAT}: expected ${manifest.stages.length} part(s), one per signed stage, got ${parts.length}`);
  const digests = await Promise.all(parts.map((p) => sha256Async(p)));
  manifest.stages.forEach((s, i) => {
    if (parts[i].byteLength !== s.bytes || !equalBytes(digests[i], s.digest)) {
      const e = new TamperedError(`${KLP_FORMAT}: part "${s.name}" does not match the signed digest (expected ${s.bytes} bytes with SHA-256 ${hex(s.digest).slice(0, 16)}…, got ${parts[i].byteLength} bytes with ${hex(digests[i]).slice(0, 16)}…)`);
      throw Object.assign(e, { stage: s.name });
    }
  });
}

/** True when `bytes` is a `.klp` (its outer map names the pipeline format); nothing is verified. */
export function isKlp(bytes: Uint8Array): boolean {
  try {
    parseEnvelope(bytes, KLP_FORMAT, KLP_VERSION, MAX_KLM_BYTES);
    return true;
  } catch {
    return false;
  }
}
