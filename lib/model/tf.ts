/**
 * TensorFlow.js, the parts this package runs: the core (tensors, ops, the engine), layers (Keras models), the
 * converter (graph models) and the plain JavaScript backend (`cpu`); the WebAssembly backend is loaded by
 * lib/model/engine.ts. Not the umbrella package `@tensorflow/tfjs`, which adds the WebGL backend and tfjs-data
 * (neither runs in Node) and bundles of its own: 167 MB of an install's node_modules (docs/install.md).
 *
 * The umbrella also registered the chained ops (`x.reshape(...)`, `x.add(y)`, the tensor methods that call an op
 * on the tensor): tfjs-core's CommonJS build, the one Node loads, leaves them out, and its per-op registration
 * files are ES modules Node cannot load from it. They are registered here the same way (each calls the op with the
 * tensor first, as tfjs-core/src/public/chained_ops does), and typed by tfjs-core's own declarations. The umbrella's
 * gradients are not registered: nothing here trains (tf.grad or model.fit would say a kernel's gradient is missing).
 */
import * as core from '@tensorflow/tfjs-core';
import type {} from '@tensorflow/tfjs-core/dist/public/chained_ops/register_all_chained_ops.js';
import '@tensorflow/tfjs-backend-cpu';

export * from '@tensorflow/tfjs-converter';
export * from '@tensorflow/tfjs-core';
export * from '@tensorflow/tfjs-layers';

type Op = (...args: unknown[]) => core.Tensor | core.Tensor[] | core.NamedTensorMap;
type Chained = (t: core.Tensor, ...args: unknown[]) => ReturnType<Op>;

/** the chained ops that call the op of their own name with the tensor first (tfjs-core 4.22) */
const SAME_NAME = [
  'abs acos acosh add all any argMax argMin asin asinh atan atan2 atanh avgPool batchToSpaceND batchNorm',
  'broadcastTo cast ceil clipByValue conv1d conv2d conv2dTranspose cos cosh cumprod cumsum depthToSpace',
  'depthwiseConv2d dilation2d div divNoNan dot elu equal erf euclideanNorm exp expandDims expm1 fft floor',
  'floorDiv gather greater greaterEqual ifft irfft isFinite isInf isNaN leakyRelu less lessEqual',
  'localResponseNormalization log log1p logSigmoid logSoftmax logSumExp logicalAnd logicalNot logicalOr',
  'logicalXor matMul max maxPool maximum mean min minimum mirrorPad mod mul neg norm notEqual oneHot onesLike pad',
  'pool pow prelu prod reciprocal relu relu6 reshape reverse rfft round rsqrt selu separableConv2d sigmoid sign',
  'sin sinh slice softmax softplus spaceToBatchND split sqrt square squaredDifference squeeze step stridedSlice',
  'sub sum tan tanh tile topk transpose unique unsortedSegmentSum unstack zerosLike',
]
  .join(' ')
  .split(' ');

function registerChainedOps(): void {
  const ops = core as unknown as Record<string, Op>;
  const chained: Record<string, Chained> = {
    resizeBilinear: (t, ...a) => (core.image.resizeBilinear as Op)(t, ...a),
    resizeNearestNeighbor: (t, ...a) => (core.image.resizeNearestNeighbor as Op)(t, ...a),
    as1D: (t) => core.reshape(t, [t.size]),
    as2D: (t, ...d) => core.reshape(t, d as number[]),
    as3D: (t, ...d) => core.reshape(t, d as number[]),
    as4D: (t, ...d) => core.reshape(t, d as number[]),
    as5D: (t, ...d) => core.reshape(t, d as number[]),
    asScalar: (t) => {
      core.util.assert(t.size === 1, () => 'The array must have only 1 element.');
      return core.reshape(t, []);
    },
    asType: (t, dtype) => core.cast(t, dtype as core.DataType),
    flatten: (t) => core.reshape(t, [t.size]),
    reshapeAs: (t, x) => core.reshape(t, (x as core.Tensor).shape),
    toBool: (t) => core.cast(t, 'bool'),
    toFloat: (t) => core.cast(t, 'float32'),
    toInt: (t) => core.cast(t, 'int32'),
    concat: (t, x, axis) => core.concat([t, ...(x instanceof core.Tensor ? [x] : (x as core.Tensor[]))], axis as number | undefined),
    stack: (t, x, axis) => core.stack([t, ...(x instanceof core.Tensor ? [x] : (x as core.Tensor[]))], axis as number | undefined),
    where: (t, condition, x) => core.where(condition as core.Tensor, t, x as core.Tensor),
  };
  for (const name of SAME_NAME) chained[name] = (t, ...a) => ops[name](t, ...a);
  const proto = core.Tensor.prototype as unknown as Record<string, unknown>;
  for (const [name, op] of Object.entries(chained)) {
    // already there where the umbrella package was loaded too (@tensorflow/tfjs-node brings it)
    if (typeof proto[name] === 'function') continue;
    proto[name] = function (this: core.Tensor, ...args: unknown[]) {
      this.throwIfDisposed();
      return op(this, ...args);
    };
  }
}
registerChainedOps();
