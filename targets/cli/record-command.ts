/** `keylock record`: a recorded-inputs file from numpy arrays, images, WAV audio or JSON, shaped by a model's inputs. */
import { encodeRecorded, MAX_RECORDED_BYTES, type Sample } from '../../runtime/recorded.ts';
import { modelInputs, parseShape, recordFrom, RecordOptionError, shapeInputs, showDims, SOURCE_KINDS, type InputSpec, type Recording, type SourceKind } from '../../models/record/index.ts';
import { CliError, UsageError, type Command } from './command.ts';
import { intFlag, readInput, req, writeOutput } from './io.ts';

const USAGE = 'record SRC... --out REC.cbor (--model M.klm|M.onnx|M.tflite [--input NAME] | --shape D,D,... --input NAME [--dtype T]) '
  + '[--kind npy|npz|image|wav|json] [--map KEY=INPUT]... [--layout nchw|nhwc] [--scale S] [--mean M[,M,M]] [--std S[,S,S]] [--invert] '
  + '[--labels LABELS.csv] [--frame N] [--hop H] [--rate HZ] [--pcm16]';

/** `0.5`, `1/255`. */
function number(values: Record<string, unknown>, name: string): number | undefined {
  const v = values[name];
  if (typeof v !== 'string') return undefined;
  const m = /^\s*(-?[\d.]+(?:e-?\d+)?)\s*(?:\/\s*([\d.]+(?:e-?\d+)?))?\s*$/i.exec(v);
  const n = m ? Number(m[1]) / (m[2] === undefined ? 1 : Number(m[2])) : NaN;
  if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number (or a fraction like 1/255), got "${v}"`, `usage: keylock ${USAGE}`);
  return n;
}

function list(values: Record<string, unknown>, name: string): number[] | undefined {
  const v = values[name];
  if (typeof v !== 'string') return undefined;
  const xs = v.split(',').map((s) => Number(s.trim()));
  if (!xs.length || xs.some((x) => !Number.isFinite(x))) throw new UsageError(`--${name} must be comma-separated numbers (e.g. 0.485,0.456,0.406), got "${v}"`);
  return xs;
}

function mapping(v: unknown): Record<string, string> | undefined {
  if (!Array.isArray(v)) return undefined;
  const out: Record<string, string> = {};
  for (const part of (v as string[]).flatMap((s) => s.split(','))) {
    const m = /^([^=]+)=(.+)$/.exec(part.trim());
    if (!m) throw new UsageError(`--map takes KEY=INPUT (an .npz array key and a model input name), got "${part}"`);
    out[m[1]] = m[2];
  }
  return out;
}

/** The inputs to record for: the model's (with `--shape` overriding one), or `--shape`/`--input`/`--dtype` alone. */
function inputsFrom(values: Record<string, unknown>): InputSpec[] {
  const model = values.model as string | undefined;
  const shape = values.shape as string | undefined;
  const input = values.input as string | undefined;
  if (model === undefined) {
    if (shape === undefined || input === undefined) {
      throw new UsageError('without --model, give the input yourself with --shape and --input', 'e.g. --model model.onnx, or --shape 1,1,28,28 --input input [--dtype float32]');
    }
    return shapeInputs(input, shape, (values.dtype as string | undefined) ?? 'float32');
  }
  if (values.dtype !== undefined) throw new UsageError('--dtype goes with --shape when there is no --model; the model declares its own dtypes');
  const specs = modelInputs(readInput(model, 'model file'), model);
  if (shape !== undefined) {
    const target = input !== undefined ? specs.find((s) => s.name === input) : specs.length === 1 ? specs[0] : undefined;
    if (!target) throw new UsageError(`--shape overrides one model input; say which with --input (inputs: ${specs.map((s) => s.name).join(', ')})`);
    target.shape = parseShape(shape);
  }
  return specs;
}

function describeInputs(rec: Recording): string {
  const parts = rec.inputs.map((spec) => {
    const dims = rec.samples.map((s) => s.inputs?.[spec.name]?.dims).filter((d) => d !== undefined);
    const vary = dims.some((d) => showDims(d) !== showDims(dims[0]));
    return `"${spec.name}" ${spec.dtype}${showDims(dims[0])}${vary ? ' (dims vary by sample)' : ''}`;
  });
  return `${parts.length > 1 ? 'inputs' : 'input'} ${parts.join(', ')}`;
}

function describeLabels(samples: Sample[], sources: string[]): string {
  const labels = samples.map((s) => s.label).filter((l): l is number => l !== undefined);
  if (!labels.length) return 'no labels';
  let lo = labels[0];
  let hi = labels[0];
  for (const l of labels) { if (l < lo) lo = l; if (l > hi) hi = l; }
  const range = lo === hi ? `label ${lo}` : `labels ${lo}-${hi}`;
  const from = sources.length ? ` from ${sources.join(' and ')}` : '';
  return labels.length === samples.length ? `${range}${from}` : `${range}${from} on ${labels.length} of ${samples.length} sample(s)`;
}

/** `keylock record`: the model's declared inputs (or `--shape`) drive every importer in models/record/. */
export const record: Command = {
  summary: 'make a recorded-inputs file from .npy/.npz, PNG/JPEG, WAV or JSON, shaped for a model\'s inputs',
  usage: USAGE,
  options: {
    out: { type: 'string' }, model: { type: 'string' }, input: { type: 'string' }, shape: { type: 'string' }, dtype: { type: 'string' },
    kind: { type: 'string' }, map: { type: 'string', multiple: true },
    layout: { type: 'string' }, scale: { type: 'string' }, mean: { type: 'string' }, std: { type: 'string' }, invert: { type: 'boolean' },
    labels: { type: 'string' }, frame: { type: 'string' }, hop: { type: 'string' }, rate: { type: 'string' }, pcm16: { type: 'boolean' },
  },
  positionals: [0, Infinity],
  async run({ values, positionals }) {
    if (!positionals.length) throw new UsageError('record needs at least one source file or folder', `usage: keylock ${USAGE}`);
    const out = req(values, 'out', USAGE);
    // png / jpg / jpeg name the image importer, which tells the two apart by their bytes.
    const kind = /^(png|jpe?g)$/i.test(String(values.kind)) ? 'image' : values.kind as string | undefined;
    if (kind !== undefined && !SOURCE_KINDS.includes(kind as SourceKind)) throw new UsageError(`--kind must be one of ${SOURCE_KINDS.join(', ')}, got "${kind}"`);
    const layout = values.layout as string | undefined;
    if (layout !== undefined && layout !== 'nchw' && layout !== 'nhwc') throw new UsageError(`--layout must be nchw or nhwc, got "${layout}"`);
    let rec: Recording;
    try {
      rec = recordFrom(positionals, {
        inputs: inputsFrom(values),
        input: values.input as string | undefined,
        kind: kind as SourceKind | undefined,
        map: mapping(values.map),
        layout: layout as 'nchw' | 'nhwc' | undefined,
        scale: number(values, 'scale'), mean: list(values, 'mean'), std: list(values, 'std'), invert: values.invert === true,
        labels: values.labels as string | undefined,
        frame: intFlag(values, 'frame'), hop: intFlag(values, 'hop'), rate: intFlag(values, 'rate'), pcm16: values.pcm16 === true,
      });
    } catch (e) {
      if (e instanceof RecordOptionError) throw new UsageError(e.message, e.usageHint ?? `usage: keylock ${USAGE}`);
      throw e;
    }
    const bytes = encodeRecorded(rec.samples);
    if (bytes.byteLength > MAX_RECORDED_BYTES) {
      throw new CliError(`${rec.samples.length} sample(s) make ${bytes.byteLength} bytes; a recorded file holds at most ${MAX_RECORDED_BYTES}`, 'record fewer sources per file');
    }
    writeOutput(out, bytes);
    process.stdout.write([
      `recorded ${rec.samples.length} sample(s) into ${out}: ${describeInputs(rec)}, ${describeLabels(rec.samples, rec.labelSources)}`,
      ...rec.notes.map((n) => `  note: ${n}`),
    ].join('\n') + '\n');
  },
};
