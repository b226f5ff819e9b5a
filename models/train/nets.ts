/**
 * The two reference networks as plain tfjs variables plus forward functions.
 * Plain variables (rather than tf.layers) keep every weight's layout explicit,
 * which the ONNX export has to permute anyway, and keep init fully seeded.
 *
 * Layouts are tfjs's: activations NHWC, conv kernels HWIO, dense kernels [in,out].
 */
import * as tf from '@tensorflow/tfjs';

/** Named trainable weights of one network, in a fixed order. */
export type Params = Record<string, tf.Variable>;

/** A network: its weights and its forward pass from [B,784] pixels to [B,10] logits. */
export interface Net {
  name: 'mlp' | 'cnn';
  params: Params;
  forward(x: tf.Tensor2D): tf.Tensor2D;
}

/** Width of the MLP's hidden layer. */
export const MLP_HIDDEN = 128;

/** Conv channel counts of the CNN (3×3 valid convs, 2×2 max pools). */
export const CNN_CHANNELS = [8, 16] as const;

/** Side of the CNN's last feature map: 28 →conv 26 →pool 13 →conv 11 →pool 5. */
export const CNN_FEATURE_SIDE = 5;

function glorot(shape: number[], seed: number, name: string): tf.Variable {
  // fanIn/fanOut for conv kernels count the receptive field, which tfjs's initializer handles for 4-D shapes.
  const init = tf.initializers.glorotUniform({ seed });
  return tf.variable(init.apply(shape, 'float32'), true, name);
}

function zeros(n: number, name: string): tf.Variable {
  return tf.variable(tf.zeros([n]), true, name);
}

/** MLP 784-128 relu-10, seeded glorot-uniform weights, zero biases. */
export function makeMlp(seed: number): Net {
  const params: Params = {
    'fc1.weight': glorot([784, MLP_HIDDEN], seed + 1, 'fc1.weight'),
    'fc1.bias': zeros(MLP_HIDDEN, 'fc1.bias'),
    'fc2.weight': glorot([MLP_HIDDEN, 10], seed + 2, 'fc2.weight'),
    'fc2.bias': zeros(10, 'fc2.bias'),
  };
  const p = params;
  return {
    name: 'mlp',
    params,
    forward: (x) => tf.tidy(() => {
      const h = tf.relu(tf.add(tf.matMul(x, p['fc1.weight']), p['fc1.bias']));
      return tf.add(tf.matMul(h, p['fc2.weight']), p['fc2.bias']) as tf.Tensor2D;
    }),
  };
}

/** CNN conv3×3(c1) relu pool2 conv3×3(c2) relu pool2 dense(10), seeded glorot-uniform weights. */
export function makeCnn(seed: number, channels: readonly [number, number] = CNN_CHANNELS): Net {
  const [c1, c2] = channels;
  const flat = CNN_FEATURE_SIDE * CNN_FEATURE_SIDE * c2;
  const params: Params = {
    'conv1.weight': glorot([3, 3, 1, c1], seed + 1, 'conv1.weight'),
    'conv1.bias': zeros(c1, 'conv1.bias'),
    'conv2.weight': glorot([3, 3, c1, c2], seed + 2, 'conv2.weight'),
    'conv2.bias': zeros(c2, 'conv2.bias'),
    'fc.weight': glorot([flat, 10], seed + 3, 'fc.weight'),
    'fc.bias': zeros(10, 'fc.bias'),
  };
  const p = params;
  return {
    name: 'cnn',
    params,
    forward: (x) => tf.tidy(() => {
      // One channel: the NCHW pixel order of the data equals NHWC.
      const img = tf.reshape(x, [-1, 28, 28, 1]) as tf.Tensor4D;
      const a1 = tf.relu(tf.add(tf.conv2d(img, p['conv1.weight'] as tf.Tensor4D, 1, 'valid'), p['conv1.bias'])) as tf.Tensor4D;
      const p1 = tf.maxPool(a1, 2, 2, 'valid');
      const a2 = tf.relu(tf.add(tf.conv2d(p1, p['conv2.weight'] as tf.Tensor4D, 1, 'valid'), p['conv2.bias'])) as tf.Tensor4D;
      const p2 = tf.maxPool(a2, 2, 2, 'valid');
      const f = tf.reshape(p2, [-1, flat]);
      return tf.add(tf.matMul(f, p['fc.weight']), p['fc.bias']) as tf.Tensor2D;
    }),
  };
}

/** Total number of weights. */
export function paramCount(net: Net): number {
  return Object.values(net.params).reduce((n, v) => n + v.size, 0);
}
