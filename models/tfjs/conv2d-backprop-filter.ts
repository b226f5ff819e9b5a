/**
 * The `Conv2DBackpropFilter` kernel for the tfjs wasm backend, which ships
 * without it, so a conv layer cannot train there. It is composed from wasm's
 * own Transpose, Conv2D and Slice kernels, so it runs at XNNPACK speed.
 *
 * The filter gradient of a stride-s NHWC convolution,
 *   dW[kh,kw,ci,co] = Σ_{n,i,j} xpad[n, kh + s·i, kw + s·j, ci] · dy[n,i,j,co],
 * is itself a stride-1 convolution with dilation s once the batch axis plays the
 * channel role: input xᵀ = x as [Ci,H,W,N], filter dyᵀ = dy as [Ho,Wo,N,Co],
 * giving [Ci,kh,kw,Co], transposed back to [kh,kw,Ci,Co].
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

type KernelFn = (args: { inputs: tf.NamedTensorInfoMap; attrs?: tf.NamedAttrMap; backend: tf.KernelBackend }) => tf.TensorInfo | tf.TensorInfo[];

function kernel(name: string): KernelFn {
  const k = tf.getKernel(name, 'wasm');
  if (!k) throw new Error(`tfjs wasm backend: expected kernel ${name} to be registered, got none`);
  return k.kernelFunc as KernelFn;
}

function one(r: tf.TensorInfo | tf.TensorInfo[]): tf.TensorInfo {
  return Array.isArray(r) ? r[0] : r;
}

function conv2DBackpropFilter(args: { inputs: tf.NamedTensorInfoMap; attrs?: tf.NamedAttrMap; backend: tf.KernelBackend }): tf.TensorInfo {
  const backend = args.backend as BackendWasm;
  const { x, dy } = args.inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
  const { strides, pad, dataFormat, dimRoundingMode, filterShape } = args.attrs as unknown as tf.Conv2DBackpropFilterAttrs;
  const format = tf.backend_util.convertConv2DDataFormat(dataFormat);
  if (format !== 'channelsLast') throw new Error(`Conv2DBackpropFilter on wasm: expected dataFormat NHWC, got ${dataFormat}`);
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number], filterShape, strides, 1, pad, dimRoundingMode, false, format);
  const { filterHeight: fh, filterWidth: fw, strideHeight: sh, strideWidth: sw, outHeight: ho, outWidth: wo, inHeight: h, inWidth: w } = info;
  const { top, left } = info.padInfo;
  // Rows the dilated dy window spans; pad x up to that (the forward pass may have
  // dropped trailing rows, which then stay unpadded and simply unused).
  const needH = fh + (ho - 1) * sh;
  const needW = fw + (wo - 1) * sw;
  const bottom = Math.max(0, needH - top - h);
  const right = Math.max(0, needW - left - w);

  const temps: tf.TensorInfo[] = [];
  const run = (name: string, inputs: tf.NamedTensorInfoMap, attrs: object): tf.TensorInfo => {
    const out = one(kernel(name)({ inputs, attrs: attrs as tf.NamedAttrMap, backend }));
    temps.push(out);
    return out;
  };
  try {
    const xt = run('Transpose', { x }, { perm: [3, 1, 2, 0] });
    const dyt = run('Transpose', { x: dy }, { perm: [1, 2, 0, 3] });
    let g = run('Conv2D', { x: xt, filter: dyt }, {
      strides: [1, 1], dilations: [sh, sw], dataFormat: 'NHWC', dimRoundingMode: undefined,
      pad: [[0, 0], [top, bottom], [left, right], [0, 0]],
    });
    if (g.shape[1] !== fh || g.shape[2] !== fw) {
      g = run('Slice', { x: g }, { begin: [0, 0, 0, 0], size: [g.shape[0], fh, fw, g.shape[3]] });
    }
    const out = one(kernel('Transpose')({ inputs: { x: g }, attrs: { perm: [1, 2, 0, 3] }, backend }));
    return out;
  } finally {
    for (const t of temps) backend.disposeData(t.dataId);
  }
}

/** Kernel config for `tf.registerKernel`. */
const conv2DBackpropFilterWasmConfig: tf.KernelConfig = {
  kernelName: 'Conv2DBackpropFilter',
  backendName: 'wasm',
  kernelFunc: conv2DBackpropFilter as unknown as tf.KernelFunc,
};

/** Registers the kernel unless some kernel of that name is already registered for wasm. */
export function registerConv2DBackpropFilterWasm(): void {
  if (!tf.getKernel('Conv2DBackpropFilter', 'wasm')) tf.registerKernel(conv2DBackpropFilterWasmConfig);
}
