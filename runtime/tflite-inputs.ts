/**
 * A TFLite model's inputs, read from the flatbuffer without loading it, and
 * the check that the tflite backend can run them. Shared by the backend
 * (runtime/tflite.ts) and the vendor's lock pipeline, without pulling in
 * tfjs-tflite.
 */
import { UnsupportedModelError } from '../keystore/errors.ts';
import { FlatBuffer } from './flatbuffers.ts';
import { MODEL, SUBGRAPH, TENSOR, tensorTypeName, TFLITE_IDENTIFIER } from './tflite-schema.ts';

/** A TFLite input as the file declares it. */
export interface TfliteInputSpec {
  name: string;
  dtype: string;
  shape: number[];
  /** -1 marks a dynamic axis; absent when the file has no signature. */
  signature?: number[];
}

/**
 * The main subgraph's inputs, read from the flatbuffer without loading it.
 * FormatError when the bytes are not a TFLite model.
 */
export function tfliteInputs(model: Uint8Array): TfliteInputSpec[] {
  const fb = new FlatBuffer(model, 'TFLite model');
  if (fb.identifier() !== TFLITE_IDENTIFIER) {
    throw new UnsupportedModelError(`the tflite backend runs TFLite models; these bytes have no "${TFLITE_IDENTIFIER}" identifier`);
  }
  const g = fb.root('Model').tables(MODEL.subgraphs, 'SubGraph', 'subgraphs')[0];
  if (!g) throw new UnsupportedModelError('TFLite model: no subgraph');
  const tensors = g.tables(SUBGRAPH.tensors, 'Tensor', 'tensors');
  return (g.ints(SUBGRAPH.inputs, 'inputs') ?? []).map((i) => {
    const t = tensors[i];
    if (!t) throw new UnsupportedModelError(`TFLite model: input tensor ${i} does not exist`);
    const spec: TfliteInputSpec = {
      name: t.string(TENSOR.name, 'name') ?? '', dtype: tensorTypeName(t.i8(TENSOR.type, 'type')), shape: t.ints(TENSOR.shape, 'shape') ?? [],
    };
    const sig = t.ints(TENSOR.shapeSignature, 'shape_signature');
    if (sig) spec.signature = sig;
    return spec;
  });
}

/**
 * Throws UnsupportedModelError when an input has a dynamic axis other than a
 * leading batch axis: tfjs-tflite has no resize API and fails on those.
 */
export function checkStaticInputs(inputs: readonly TfliteInputSpec[]): void {
  for (const i of inputs) {
    const dynamic = (i.signature ?? []).map((d, k) => (d < 0 && k > 0 ? k : -1)).filter((k) => k >= 0);
    if (dynamic.length) {
      throw new UnsupportedModelError(`TFLite input "${i.name}" has dynamic axis ${dynamic.join(', ')} (shape_signature [${i.signature!.join(',')}], stored shape [${i.shape.join(',')}]); `
        + '@tensorflow/tfjs-tflite cannot resize inputs and fails to prepare such models; expected fixed dims (a dynamic batch axis 0 is fine). Re-export the model with fixed input shapes');
    }
  }
}
