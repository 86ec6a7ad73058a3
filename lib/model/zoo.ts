/**
 * Built-in models with seeded, deterministic weights: architectures as Keras
 * builds them (Keras layer names), for benchmarks and tests. Pretrained
 * weights are not shipped; the same name and seed always give the same bytes.
 */

import { DeferError } from '../core/errors.js';
import { prng } from '../core/prng.js';
import { tf } from './engine.js';

export const ZOO_NAMES = ['tiny', 'resnet50', 'resnet152', 'mobilenet'] as const;
export type ZooName = (typeof ZOO_NAMES)[number];

export function isZooName(x: string): x is ZooName {
  return (ZOO_NAMES as readonly string[]).includes(x);
}

/**
 * Real models the package ships as files (models/ at its root; lib/model/model-source.ts resolves them there, not
 * in the working directory): a name and its folder. mnist: a Keras MNIST CNN (28x28x1 digits, 10 classes);
 * aircraft: a Teachable Machine MobileNetV2 image classifier with its labels (metadata.json).
 */
export const SHIPPED_MODELS = { mnist: 'mnist-keras', aircraft: 'tm-aircraft' } as const;
export type ShippedModelName = keyof typeof SHIPPED_MODELS;

export function isShippedModelName(x: string): x is ShippedModelName {
  return Object.hasOwn(SHIPPED_MODELS, x);
}

type SymbolicTensor = tf.SymbolicTensor;
const L = tf.layers;

function apply(layer: tf.layers.Layer, x: SymbolicTensor | SymbolicTensor[]): SymbolicTensor {
  return layer.apply(x) as SymbolicTensor;
}

/** A 32x32x3 CNN with one residual block: small enough for fast tests, with a cut that is invalid. */
export function tinyCnn(): tf.LayersModel {
  const input = tf.input({ shape: [32, 32, 3], name: 'input' });
  const c1 = apply(L.conv2d({ name: 'conv1', filters: 8, kernelSize: 3, padding: 'same', activation: 'relu' }), input);
  let x = apply(L.conv2d({ name: 'block_conv_a', filters: 8, kernelSize: 3, padding: 'same', activation: 'relu' }), c1);
  x = apply(L.conv2d({ name: 'block_conv_b', filters: 8, kernelSize: 3, padding: 'same' }), x);
  x = apply(L.add({ name: 'block_add' }), [c1, x]);
  x = apply(L.activation({ name: 'block_out', activation: 'relu' }), x);
  x = apply(L.maxPooling2d({ name: 'pool', poolSize: 2 }), x);
  x = apply(L.conv2d({ name: 'conv2', filters: 16, kernelSize: 3, padding: 'same', activation: 'relu' }), x);
  x = apply(L.globalAveragePooling2d({ name: 'gap' }), x);
  x = apply(L.dense({ name: 'predictions', units: 10, activation: 'softmax' }), x);
  return tf.model({ inputs: input, outputs: x, name: 'tiny' });
}

function resnetBlock(x: SymbolicTensor, filters: number, stride: number, convShortcut: boolean, name: string): SymbolicTensor {
  const bn = (n: string) => L.batchNormalization({ name: n, axis: 3, epsilon: 1.001e-5 });
  let shortcut = x;
  if (convShortcut) {
    shortcut = apply(L.conv2d({ name: `${name}_0_conv`, filters: 4 * filters, kernelSize: 1, strides: stride }), x);
    shortcut = apply(bn(`${name}_0_bn`), shortcut);
  }
  x = apply(L.conv2d({ name: `${name}_1_conv`, filters, kernelSize: 1, strides: stride }), x);
  x = apply(bn(`${name}_1_bn`), x);
  x = apply(L.activation({ name: `${name}_1_relu`, activation: 'relu' }), x);
  x = apply(L.conv2d({ name: `${name}_2_conv`, filters, kernelSize: 3, padding: 'same' }), x);
  x = apply(bn(`${name}_2_bn`), x);
  x = apply(L.activation({ name: `${name}_2_relu`, activation: 'relu' }), x);
  x = apply(L.conv2d({ name: `${name}_3_conv`, filters: 4 * filters, kernelSize: 1 }), x);
  x = apply(bn(`${name}_3_bn`), x);
  x = apply(L.add({ name: `${name}_add` }), [shortcut, x]);
  return apply(L.activation({ name: `${name}_out`, activation: 'relu' }), x);
}

/** ResNet50 as keras.applications builds it (224x224x3 in, 1000 classes, 25,636,712 parameters). */
export function resnet50(): tf.LayersModel {
  return resnet('resnet50', [3, 4, 6, 3]);
}

/**
 * ResNet152 as keras.applications builds it (60,419,944 parameters, about 242 MB of float32 weights): a model
 * too big for one small device of 256 MB, which a fleet of them can run split.
 */
export function resnet152(): tf.LayersModel {
  return resnet('resnet152', [3, 8, 36, 3]);
}

/** A ResNet v1 with bottleneck blocks, `blocks` of them in each of its four stacks (Keras' layer names). */
function resnet(name: string, blocks: [number, number, number, number]): tf.LayersModel {
  const input = tf.input({ shape: [224, 224, 3], name: 'input_1' });
  let x = apply(
    L.zeroPadding2d({
      name: 'conv1_pad',
      padding: [
        [3, 3],
        [3, 3],
      ],
    }),
    input,
  );
  x = apply(L.conv2d({ name: 'conv1_conv', filters: 64, kernelSize: 7, strides: 2 }), x);
  x = apply(L.batchNormalization({ name: 'conv1_bn', axis: 3, epsilon: 1.001e-5 }), x);
  x = apply(L.activation({ name: 'conv1_relu', activation: 'relu' }), x);
  x = apply(
    L.zeroPadding2d({
      name: 'pool1_pad',
      padding: [
        [1, 1],
        [1, 1],
      ],
    }),
    x,
  );
  x = apply(L.maxPooling2d({ name: 'pool1_pool', poolSize: 3, strides: 2 }), x);
  const stacks: [string, number, number, number][] = [
    ['conv2', 64, blocks[0], 1],
    ['conv3', 128, blocks[1], 2],
    ['conv4', 256, blocks[2], 2],
    ['conv5', 512, blocks[3], 2],
  ];
  for (const [stack, filters, count, stride] of stacks) {
    x = resnetBlock(x, filters, stride, true, `${stack}_block1`);
    for (let b = 2; b <= count; b++) x = resnetBlock(x, filters, 1, false, `${stack}_block${b}`);
  }
  x = apply(L.globalAveragePooling2d({ name: 'avg_pool' }), x);
  x = apply(L.dense({ name: 'predictions', units: 1000, activation: 'softmax' }), x);
  return tf.model({ inputs: input, outputs: x, name });
}

/** MobileNet v1 (alpha 1.0) as keras.applications builds it (224x224x3, 4,253,864 parameters). */
export function mobilenetV1(): tf.LayersModel {
  const input = tf.input({ shape: [224, 224, 3], name: 'input_1' });
  const relu6 = (n: string) => L.reLU({ name: n, maxValue: 6 });
  let x = apply(
    L.zeroPadding2d({
      name: 'conv1_pad',
      padding: [
        [0, 1],
        [0, 1],
      ],
    }),
    input,
  );
  x = apply(L.conv2d({ name: 'conv1', filters: 32, kernelSize: 3, strides: 2, padding: 'valid', useBias: false }), x);
  x = apply(L.batchNormalization({ name: 'conv1_bn', axis: 3 }), x);
  x = apply(relu6('conv1_relu'), x);
  const blocks: [number, number][] = [
    [64, 1],
    [128, 2],
    [128, 1],
    [256, 2],
    [256, 1],
    [512, 2],
    [512, 1],
    [512, 1],
    [512, 1],
    [512, 1],
    [512, 1],
    [1024, 2],
    [1024, 1],
  ];
  blocks.forEach(([filters, stride], i) => {
    const id = i + 1;
    if (stride !== 1)
      x = apply(
        L.zeroPadding2d({
          name: `conv_pad_${id}`,
          padding: [
            [0, 1],
            [0, 1],
          ],
        }),
        x,
      );
    x = apply(L.depthwiseConv2d({ name: `conv_dw_${id}`, kernelSize: 3, strides: stride, padding: stride === 1 ? 'same' : 'valid', useBias: false }), x);
    x = apply(L.batchNormalization({ name: `conv_dw_${id}_bn`, axis: 3 }), x);
    x = apply(relu6(`conv_dw_${id}_relu`), x);
    x = apply(L.conv2d({ name: `conv_pw_${id}`, filters, kernelSize: 1, padding: 'same', useBias: false }), x);
    x = apply(L.batchNormalization({ name: `conv_pw_${id}_bn`, axis: 3 }), x);
    x = apply(relu6(`conv_pw_${id}_relu`), x);
  });
  x = apply(L.globalAveragePooling2d({ name: 'global_average_pooling2d' }), x);
  x = apply(L.reshape({ name: 'reshape_1', targetShape: [1, 1, 1024] }), x);
  x = apply(L.dropout({ name: 'dropout', rate: 1e-3 }), x);
  x = apply(L.conv2d({ name: 'conv_preds', filters: 1000, kernelSize: 1, padding: 'same' }), x);
  x = apply(L.reshape({ name: 'reshape_2', targetShape: [1000] }), x);
  x = apply(L.activation({ name: 'act_softmax', activation: 'softmax' }), x);
  return tf.model({ inputs: input, outputs: x, name: 'mobilenet' });
}

function hashString(s: string, seed: number): number {
  let h = (2166136261 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619) >>> 0;
  return h;
}

/**
 * Fill every weight with seeded values scaled so activations keep a sane range
 * through deep stacks: kernels uniform with variance 1/fan-in, batch-norm
 * statistics near identity, biases near zero.
 */
export function seedWeights(model: tf.LayersModel, seed = 1): void {
  for (const layer of model.layers) {
    const ws = layer.weights;
    if (!ws.length) continue;
    const values = ws.map((w, i) => {
      const kind = w.originalName.slice(w.originalName.lastIndexOf('/') + 1);
      const shape = w.shape as number[];
      const n = shape.reduce((a, b) => a * b, 1);
      const rnd = prng(hashString(`${layer.name}/${i}`, seed));
      const data = new Float32Array(n);
      let lo = -0.05;
      let hi = 0.05;
      if (kind.includes('kernel')) {
        const fanIn = layer.getClassName() === 'DepthwiseConv2D' ? shape[0] * shape[1] : shape.slice(0, -1).reduce((a, b) => a * b, 1);
        const limit = Math.sqrt(3 / fanIn);
        lo = -limit;
        hi = limit;
      } else if (kind === 'gamma' || kind === 'moving_variance') {
        lo = 0.8;
        hi = 1.2;
      }
      for (let j = 0; j < n; j++) data[j] = lo + (hi - lo) * rnd();
      return tf.tensor(data, shape, 'float32');
    });
    layer.setWeights(values);
    tf.dispose(values);
  }
}

/** Build a zoo model with seeded weights. */
export function createZooModel(name: string, seed = 1): tf.LayersModel {
  let model: tf.LayersModel;
  switch (name) {
    case 'tiny':
      model = tinyCnn();
      break;
    case 'resnet50':
      model = resnet50();
      break;
    case 'resnet152':
      model = resnet152();
      break;
    case 'mobilenet':
      model = mobilenetV1();
      break;
    default:
      throw new DeferError('E_MODEL', `unknown zoo model '${name}': choose one of ${ZOO_NAMES.join(', ')}, or give the path of a model.json`);
  }
  seedWeights(model, seed);
  return model;
}
