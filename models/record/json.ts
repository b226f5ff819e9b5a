/**
 * JSON samples: an array whose entries are either a nested number array (for
 * a one-input model, or the input named by `--input`) or an object
 * `{ "<input name>": nested array, ..., "label"?: n }`. Each nested array is one
 * sample; its shape is checked against the input (see fitShape).
 */
import { FormatError, InputMismatchError } from '../../keystore/errors.ts';
import { type TensorMap } from '../../runtime/tensor.ts';
import type { Sample } from '../../runtime/recorded.ts';
import { convert, fitShape, sampleDims, showDims, showInput, valuesPerSample, type InputSpec } from './spec.ts';

/** The shape and row-major leaves of a nested array; FormatError (with the path) when ragged or not numeric. */
export function nestedShape(v: unknown, what: string): { shape: number[]; values: (number | boolean)[] } {
  const shape: number[] = [];
  for (let x = v; Array.isArray(x); x = x[0]) shape.push(x.length);
  const values: (number | boolean)[] = [];
  const walk = (x: unknown, depth: number, path: string): void => {
    if (depth === shape.length) {
      if (typeof x !== 'number' && typeof x !== 'boolean') throw new FormatError(`${what}${path}: expected a number, got ${JSON.stringify(x)?.slice(0, 40)}`);
      values.push(x);
      return;
    }
    if (!Array.isArray(x) || x.length !== shape[depth]) {
      throw new FormatError(`${what}${path}: expected an array of ${shape[depth]} entries (the nesting is ${showDims(shape)}), got ${Array.isArray(x) ? `${x.length} entries` : JSON.stringify(x)?.slice(0, 40)}`);
    }
    x.forEach((y, i) => walk(y, depth + 1, `${path}[${i}]`));
  };
  walk(v, 0, '');
  return { shape, values };
}

function tensorFor(v: unknown, spec: InputSpec, what: string): TensorMap[string] {
  const { shape, values } = nestedShape(v, what);
  const dims = fitShape(shape, sampleDims(spec));
  if (!dims) {
    throw new InputMismatchError(`${what}: a nested array of shape ${showDims(shape)} (${values.length} values) cannot fill ${showInput(spec)}: expected ${showDims(sampleDims(spec))}`
      + `${valuesPerSample(spec) !== undefined ? ` (${valuesPerSample(spec)} values)` : ''}`);
  }
  return { dtype: spec.dtype, dims, data: convert(values, 'float64', spec.dtype, what) };
}

/**
 * Samples from a parsed JSON document. `single` is the input plain arrays
 * fill (undefined when the model has several inputs and none was named).
 */
export function jsonSamples(doc: unknown, inputs: InputSpec[], single: InputSpec | undefined, what: string): Sample[] {
  if (!Array.isArray(doc)) throw new FormatError(`${what}: expected an array of samples, got ${doc === null ? 'null' : typeof doc}`);
  const names = inputs.map((i) => i.name);
  return doc.map((entry, i): Sample => {
    const at = `${what} sample ${i}`;
    if (Array.isArray(entry)) {
      if (!single) throw new InputMismatchError(`${at}: a plain array, but the model has ${inputs.length} inputs (${names.join(', ')}); expected an object naming each input`);
      return { inputs: { [single.name]: tensorFor(entry, single, at) } };
    }
    if (entry === null || typeof entry !== 'object') throw new FormatError(`${at}: expected a nested array or an object of inputs, got ${JSON.stringify(entry)?.slice(0, 40)}`);
    const o = entry as Record<string, unknown>;
    const extra = Object.keys(o).filter((k) => k !== 'label' && !names.includes(k));
    if (extra.length) throw new InputMismatchError(`${at}: "${extra[0]}" is not an input of the model; expected ${names.map((n) => `"${n}"`).join(', ')} and optionally "label"`);
    const missing = names.filter((n) => !(n in o));
    if (missing.length) throw new InputMismatchError(`${at}: no value for input "${missing[0]}"; every sample needs ${names.map((n) => `"${n}"`).join(', ')}`);
    const s: Sample = { inputs: Object.fromEntries(inputs.map((spec) => [spec.name, tensorFor(o[spec.name], spec, `${at} "${spec.name}"`)])) };
    if ('label' in o) {
      const l = o.label;
      if (typeof l !== 'number' || !Number.isSafeInteger(l) || l < 0) throw new FormatError(`${at}: "label" must be a non-negative integer, got ${JSON.stringify(l)}`);
      s.label = l;
    }
    return s;
  });
}
