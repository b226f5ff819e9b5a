/**
 * Recorded-input files from what ML engineers already have: numpy arrays,
 * images, WAV audio and JSON. The model's declared inputs drive every shape
 * and dtype; each importer lives in its own module, this one finds the files,
 * picks the importer and puts the samples together (vendor / dev side: the
 * runtime never imports it).
 *
 * ```ts
 * const inputs = modelInputs(readFileSync('model.onnx'), 'model.onnx');
 * const rec = recordFrom(['digits/'], { inputs });
 * writeFileSync('digits.cbor', encodeRecorded(rec.samples));
 * ```
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, extname, join, relative } from 'node:path';
import { FormatError, InputMismatchError } from '../../keystore/errors.ts';
import type { Sample } from '../../runtime/recorded.ts';
import { decodeImage, imageGeometry, imageTensor, type ImageGeometry } from './image.ts';
import { jsonSamples } from './json.ts';
import { folderLabel, LabelTable, type SourceFile } from './labels.ts';
import { npyNote, readNpy, readNpz, type NpyArray } from './npy.ts';
import { RecordOptionError, SOURCE_KINDS, type RecordOptions, type SourceKind } from './options.ts';
import { showInput, splitSamples, type InputSpec } from './spec.ts';
import { decodeWav, framing, wavFrames, type Framing } from './wav.ts';

export { RecordOptionError, SOURCE_KINDS, type RecordOptions, type SourceKind } from './options.ts';
export { fitShape, splitSamples, sampleDims, isDynamic, showDims, showInput, convert, type Dim, type InputSpec, type SourceArray } from './spec.ts';
export { modelInputs, shapeInputs, parseShape } from './model-inputs.ts';
export { readNpy, readNpz, type NpyArray } from './npy.ts';
export { decodeImage, imageGeometry, imageTensor, resizeBilinear, type Raster, type ImageGeometry, type PixelOptions } from './image.ts';
export { decodeWav, framing, wavFrames, type Audio, type Framing } from './wav.ts';
export { jsonSamples, nestedShape } from './json.ts';
export { LabelTable, folderLabel, type SourceFile } from './labels.ts';

/** What {@link recordFrom} made. */
export interface Recording {
  samples: Sample[];
  /** The model inputs the samples fill. */
  inputs: InputSpec[];
  /** What was done on the way that a user should know (resized, downmixed, cast, ...). */
  notes: string[];
  /** Where labels came from: `folder names`, a CSV path, `JSON`, `npz array "labels"`. */
  labelSources: string[];
}

const EXTENSIONS: Record<string, SourceKind> = {
  '.npy': 'npy', '.npz': 'npz', '.png': 'image', '.jpg': 'image', '.jpeg': 'image', '.wav': 'wav', '.json': 'json',
};

/** The kind a file's extension names, or undefined. */
export function kindOf(path: string): SourceKind | undefined {
  return EXTENSIONS[extname(path).toLowerCase()];
}

/** A source file and the importer that reads it. */
export interface Source extends SourceFile {
  kind: SourceKind;
}

function walk(dir: string, root: string, out: Source[], kind?: SourceKind): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.')) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) walk(p, root, out, kind);
    else if (kindOf(p)) out.push({ path: p, rel: relative(root, p).split('\\').join('/'), kind: kind ?? kindOf(p)! });
  }
}

/**
 * The files behind `paths`: a file as given, a folder's files of a known
 * extension (recursively, hidden ones skipped) sorted by relative path, so a
 * recording never depends on the order the file system lists them in.
 */
export function collectSources(paths: readonly string[], kind?: SourceKind): Source[] {
  const out: Source[] = [];
  for (const p of paths) {
    let isDir: boolean;
    try {
      isDir = statSync(p).isDirectory();
    } catch {
      throw new RecordOptionError(`no such file or folder: ${p}`);
    }
    if (isDir) {
      const found: Source[] = [];
      walk(p, p, found, kind);
      if (!found.length) throw new RecordOptionError(`${p} holds no ${Object.keys(EXTENSIONS).join(', ')} files`);
      found.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
      out.push(...found);
    } else {
      const k = kind ?? kindOf(p);
      if (!k) throw new RecordOptionError(`cannot tell what ${p} holds from its extension "${extname(p)}"`, `expected ${Object.keys(EXTENSIONS).join(', ')}, or give --kind ${SOURCE_KINDS.join('|')}`);
      out.push({ path: p, rel: p.split('\\').join('/'), kind: k });
    }
  }
  return out;
}

function checkOptions(o: RecordOptions): void {
  if (!o.inputs.length) throw new RecordOptionError('no model inputs to record for');
  if (o.input !== undefined && !o.inputs.some((i) => i.name === o.input)) {
    throw new RecordOptionError(`the model has no input "${o.input}"; its inputs: ${o.inputs.map(showInput).join('; ')}`);
  }
  const num = (name: string, v: number | undefined, ok: (x: number) => boolean, want: string): void => {
    if (v !== undefined && !ok(v)) throw new RecordOptionError(`--${name} ${v}: expected ${want}`);
  };
  num('scale', o.scale, Number.isFinite, 'a finite number');
  num('frame', o.frame, (x) => Number.isSafeInteger(x) && x > 0, 'a positive integer');
  num('hop', o.hop, (x) => Number.isSafeInteger(x) && x > 0, 'a positive integer');
  num('rate', o.rate, (x) => Number.isSafeInteger(x) && x > 0, 'a positive integer (Hz)');
  if (o.mean?.some((x) => !Number.isFinite(x))) throw new RecordOptionError(`--mean ${o.mean.join(',')}: expected finite numbers`);
  if (o.std?.some((x) => !Number.isFinite(x) || x === 0)) throw new RecordOptionError(`--std ${o.std.join(',')}: expected finite non-zero numbers`);
}

/** Collects notes, merging repeats of one kind into a count with the first example. */
class Notes {
  private readonly byKey = new Map<string, { first: string; count: number; summary: (n: number, first: string) => string }>();
  add(key: string, first: string, summary: (n: number, first: string) => string = (_n, f) => f): void {
    const e = this.byKey.get(key);
    if (e) e.count++;
    else this.byKey.set(key, { first, count: 1, summary });
  }
  list(): string[] {
    return [...this.byKey.values()].map((e) => e.summary(e.count, e.first));
  }
}

/** Records samples from files and folders for the model inputs in `opts` (see RecordOptions). */
export function recordFrom(paths: readonly string[], opts: RecordOptions): Recording {
  checkOptions(opts);
  const sources = collectSources(paths, opts.kind);
  const { inputs } = opts;
  const single = opts.input !== undefined ? inputs.find((i) => i.name === opts.input) : inputs.length === 1 ? inputs[0] : undefined;
  const notes = new Notes();
  const labelSources = new Set<string>();
  const samples: Sample[] = [];

  // A one-tensor source fills one input; a sample missing another input would fail at run time.
  const oneInput = (what: string): InputSpec => {
    if (!single) throw new RecordOptionError(`the model has ${inputs.length} inputs (${inputs.map((i) => i.name).join(', ')}); say which one ${what} fills`, 'give --input NAME');
    if (inputs.length > 1) {
      const other = inputs.find((i) => i !== single)!;
      throw new InputMismatchError(`${what} fills input "${single.name}", but the model also needs "${other.name}" and a recorded sample must carry every input; expected an .npz or JSON with one array per input`);
    }
    return single;
  };

  const fileSources = sources.filter((s) => s.kind === 'image' || s.kind === 'wav');
  if (opts.labels !== undefined && !fileSources.length) throw new RecordOptionError('--labels gives labels to image and WAV files; there are none among the sources', '.npz files carry labels in an array named "labels", JSON samples in "label"');
  const table = opts.labels !== undefined ? LabelTable.read(opts.labels) : undefined;
  const baseCount = new Map<string, number>();
  for (const s of fileSources) baseCount.set(basename(s.path), (baseCount.get(basename(s.path)) ?? 0) + 1);
  const labelOf = (s: Source): number | undefined => {
    if (table) { labelSources.add(table.path); return table.label(s, baseCount); }
    const l = folderLabel(s.path);
    if (l !== undefined) labelSources.add('folder names');
    return l;
  };

  let geometry: ImageGeometry | undefined;
  let frames: Framing | undefined;
  for (const src of sources) {
    const what = src.path;
    const bytes = readFileSync(src.path);
    switch (src.kind) {
      case 'npy': {
        const spec = oneInput(what);
        const arr = readNpy(bytes, what);
        noteArray(notes, arr, spec, what);
        for (const t of splitSamples(arr, spec, what)) samples.push({ inputs: { [spec.name]: t } });
        break;
      }
      case 'npz': {
        const r = npzSamples(readNpz(bytes, what), opts, single, notes, what);
        if (r.labelKey) labelSources.add(`npz array "${r.labelKey}"`);
        samples.push(...r.samples);
        break;
      }
      case 'json': {
        let doc: unknown;
        try {
          doc = JSON.parse(bytes.toString('utf8'));
        } catch (e) {
          throw new FormatError(`${what}: not valid JSON (${(e as Error).message})`, { cause: e });
        }
        const got = jsonSamples(doc, inputs, single, what);
        if (got.some((s) => s.label !== undefined)) labelSources.add('JSON');
        samples.push(...got);
        break;
      }
      case 'image': {
        const spec = oneInput(what);
        if (!geometry) {
          geometry = imageGeometry(spec, opts.layout);
          for (const n of geometry.notes) notes.add(n, n);
        }
        const img = decodeImage(bytes, what);
        const integer = spec.dtype !== 'float32' && spec.dtype !== 'float64';
        const r = imageTensor(img, spec, geometry, { scale: opts.scale ?? (integer ? 1 : 1 / 255), mean: opts.mean, std: opts.std, invert: opts.invert }, what);
        const d = r.tensor.dims;
        if (r.resized) {
          notes.add('resized', `${what} is ${img.width}×${img.height} ${r.colour ? 'RGB' : 'gray'}; ${showInput(spec)} takes ${d[geometry.h]}×${d[geometry.w]} ${geometry.channels === 1 ? 'gray' : 'RGB'}`,
            (n, f) => `${f}: resized (bilinear)${n > 1 ? `, as were ${n - 1} other image(s)` : ''}`);
        }
        if (r.toGray) notes.add('gray', what, (n, f) => `${n} colour image(s) (e.g. ${f}) turned gray (BT.601 luma) for the model's 1 channel`);
        const label = labelOf(src);
        samples.push(label === undefined ? { inputs: { [spec.name]: r.tensor } } : { inputs: { [spec.name]: r.tensor }, label });
        break;
      }
      case 'wav': {
        const spec = oneInput(what);
        const integer = spec.dtype !== 'float32' && spec.dtype !== 'float64';
        if (!frames) {
          frames = framing(spec, opts.frame, opts.hop);
          if (integer && !opts.pcm16) notes.add('pcm16', `${showInput(spec)} is ${spec.dtype}: audio written as int16 magnitudes (as with --pcm16)`);
        }
        const audio = decodeWav(bytes, what, opts.pcm16 || integer);
        if (opts.rate !== undefined && audio.rate !== opts.rate) {
          throw new InputMismatchError(`${what} is ${audio.rate} Hz; expected ${opts.rate} Hz (--rate)`);
        }
        if (audio.channels > 1) notes.add('mono', `${what} has ${audio.channels} channels`, (n, f) => `${f}: downmixed to mono (channel mean)${n > 1 ? `, as were ${n - 1} other file(s)` : ''}`);
        notes.add(`rate ${audio.rate}`, `audio at ${audio.rate} Hz${opts.rate ? '' : ' (not checked: give --rate to enforce one)'}`);
        const label = labelOf(src);
        for (const t of wavFrames(audio, spec, frames, what)) samples.push(label === undefined ? { inputs: { [spec.name]: t } } : { inputs: { [spec.name]: t }, label });
        notes.add('framing', `frames of ${frames.frame} samples every ${frames.hop}, ${opts.pcm16 || integer ? 'int16 magnitudes' : 'values in [-1, 1]'}; a tail shorter than a frame is dropped`);
        break;
      }
    }
  }
  const unused = table?.unused() ?? [];
  if (unused.length) notes.add('unused', `${unused.length} row(s) of ${opts.labels} match no source file (e.g. "${unused[0]}")`);
  if (!samples.length) throw new InputMismatchError(`no samples in ${paths.join(', ')}: expected at least one`);
  const used = inputs.filter((i) => samples.some((s) => s.inputs?.[i.name]));
  return { samples, inputs: used, notes: notes.list(), labelSources: [...labelSources] };
}

function noteArray(notes: Notes, arr: NpyArray, spec: InputSpec, what: string): void {
  const n = npyNote(arr, what);
  if (n) notes.add(n, n);
  else if (arr.dtype !== spec.dtype) notes.add(`cast ${what}`, `${what}: ${arr.dtype} values cast to ${spec.dtype}`);
}

/** Samples of an .npz: each array fills the input its key (or `--map`) names; `label`/`labels` holds labels. */
function npzSamples(arrays: Map<string, NpyArray>, opts: RecordOptions, single: InputSpec | undefined, notes: Notes, what: string): { samples: Sample[]; labelKey?: string } {
  const { inputs } = opts;
  const map = opts.map ?? {};
  const keys = [...arrays.keys()];
  for (const [k, v] of Object.entries(map)) {
    if (!arrays.has(k)) throw new RecordOptionError(`--map ${k}=${v}: ${what} has no array "${k}"; it has ${keys.map((x) => `"${x}"`).join(', ')}`);
    if (!inputs.some((i) => i.name === v)) throw new RecordOptionError(`--map ${k}=${v}: the model has no input "${v}"; its inputs: ${inputs.map((i) => i.name).join(', ')}`);
  }
  const byInput = new Map<string, string>();
  const loose: string[] = [];
  let labelKey: string | undefined;
  for (const k of keys) {
    const target = map[k] ?? (inputs.some((i) => i.name === k) ? k : undefined);
    if (target !== undefined) {
      if (byInput.has(target)) throw new RecordOptionError(`${what}: arrays "${byInput.get(target)}" and "${k}" both fill input "${target}"; expected one`, 'choose with --map KEY=INPUT');
      byInput.set(target, k);
    } else if ((k === 'label' || k === 'labels') && labelKey === undefined) {
      labelKey = k;
    } else {
      loose.push(k);
    }
  }
  // One unnamed array and one unfilled input (the common `np.savez('x.npz', x)` -> "arr_0") need no mapping.
  if (loose.length === 1 && single && !byInput.has(single.name)) byInput.set(single.name, loose.shift()!);
  if (loose.length) {
    throw new RecordOptionError(`${what}: array "${loose[0]}" is not an input of the model; its inputs: ${inputs.map((i) => i.name).join(', ')}`, `map it with --map ${loose[0]}=INPUT`);
  }
  const missing = inputs.find((i) => !byInput.has(i.name));
  if (missing) throw new InputMismatchError(`${what} has no array for ${showInput(missing)}; it has ${keys.map((x) => `"${x}"`).join(', ')} (a recorded sample must carry every input)`);
  let count: number | undefined;
  let first = '';
  const per: Record<string, ReturnType<typeof splitSamples>> = {};
  for (const spec of inputs) {
    const k = byInput.get(spec.name)!;
    const arr = arrays.get(k)!;
    const at = `${what}["${k}"]`;
    noteArray(notes, arr, spec, at);
    per[spec.name] = splitSamples(arr, spec, at);
    const n = per[spec.name].length;
    if (count !== undefined && n !== count) throw new InputMismatchError(`${what}: "${first}" gives ${count} sample(s) but "${k}" gives ${n}; expected the same count`);
    count = n;
    first = k;
  }
  const samples: Sample[] = Array.from({ length: count! }, (_, i) => ({ inputs: Object.fromEntries(inputs.map((s) => [s.name, per[s.name][i]])) }));
  if (labelKey) {
    const l = arrays.get(labelKey)!;
    const at = `${what}["${labelKey}"]`;
    if (l.data.length !== samples.length || l.shape.filter((d) => d !== 1).length > 1) {
      throw new InputMismatchError(`${at}: labels of shape [${l.shape.join(',')}] for ${samples.length} sample(s); expected [${samples.length}]`);
    }
    for (let i = 0; i < samples.length; i++) {
      const x = Number(l.data[i]);
      if (!Number.isSafeInteger(x) || x < 0) throw new FormatError(`${at}[${i}]: label ${String(l.data[i])} is not a non-negative integer`);
      samples[i].label = x;
    }
  }
  return { samples, labelKey };
}
