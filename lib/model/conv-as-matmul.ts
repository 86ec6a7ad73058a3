/**
 * A Keras convolution computed as one matrix product, where that saves the engine memory. On the wasm engine, a
 * convolution's operator keeps twice its filter for good (tfjs-backend-wasm transposes the filter to XNNPACK's
 * layout, XNNPACK packs that), while a matrix product's operator keeps its operand once: XNNPACK packs the
 * operand as it is (docs/memory.md, "What the engine keeps"). So a convolution whose filter holds 512 KB or more
 * and outweighs its input's patches is computed here as patches x filter: the input's kh x kw shifted windows side by side
 * (`[frames x outH x outW, kh x kw x inC]`; a 1x1 convolution with stride 1 needs none, only a reshape) times the
 * filter seen as `[kh x kw x inC, outC]` (a reshape of the same tensor: no copy). XNNPACK computes a convolution
 * as the same product, over the same terms in the same order, so the outputs are the same bits (checked on whole
 * models, MobileNet v1, the Teachable Machine MobileNetV2, the MNIST CNN and the tiny CNN, in
 * test/unit/conv-as-matmul.test.ts; ResNet50 by every chained run's `maxAbsDiffVsLocal`, whose reference runs
 * the engine's convolutions).
 *
 * Only on the wasm engine, for 2-D convolutions, channels last, without dilation, whose activation the
 * convolution fuses as a clamp (linear, relu) or applies after it; anything else runs as Keras runs it. Before
 * the first, each engine checks that small convolutions of every kind it rewrites (padding, strides, 1x1, two
 * frames) give the same bits both ways; where one differs (another engine version), none is rewritten and a
 * warning says so. `defer node --plain-convolutions` keeps the engine's convolutions.
 */
import { log } from '../core/log.js';
import { tf } from './engine.js';

interface ConvLayer {
  rank: number;
  kernel: { read(): tf.Tensor } | null;
  bias: { read(): tf.Tensor } | null;
  strides: number[];
  padding: string;
  dataFormat: string;
  dilationRate: number[];
  activation: { getClassName(): string; apply(x: tf.Tensor): tf.Tensor } | null;
}

/** How a convolution's input is laid out as patches, for one frame. */
export interface Patches {
  kh: number;
  kw: number;
  stride: [number, number];
  /** rows and columns of zeros added before and after, as 'same' padding adds them */
  pad: [[number, number], [number, number]];
  outH: number;
  outW: number;
  /** bytes of one frame's patches (0 where the input itself is the patches) */
  bytes: number;
}

/** The patches of a convolution over an input `inH x inW x inC` (TensorFlow's 'same' and 'valid' padding). */
export function patchesOf(kernel: number[], stride: [number, number], padding: 'same' | 'valid', inH: number, inW: number, inC: number): Patches {
  const [kh, kw] = kernel;
  const along = (size: number, k: number, s: number): [number, [number, number]] => {
    if (padding === 'valid') return [Math.floor((size - k) / s) + 1, [0, 0]];
    const out = Math.ceil(size / s);
    const total = Math.max((out - 1) * s + k - size, 0);
    return [out, [Math.floor(total / 2), total - Math.floor(total / 2)]];
  };
  const [outH, padH] = along(inH, kh, stride[0]);
  const [outW, padW] = along(inW, kw, stride[1]);
  const plain = kh === 1 && kw === 1 && stride[0] === 1 && stride[1] === 1;
  return { kh, kw, stride, pad: [padH, padW], outH, outW, bytes: plain ? 0 : outH * outW * kh * kw * inC * 4 };
}

/** The layer as a convolution that can be a matrix product, or undefined. */
function convOf(layer: tf.layers.Layer): ConvLayer | undefined {
  if (layer.getClassName() !== 'Conv2D') return undefined;
  const c = layer as unknown as ConvLayer;
  if (c.rank !== 2 || c.dataFormat !== 'channelsLast' || !c.kernel || c.dilationRate.some((d) => d !== 1)) return undefined;
  if (c.padding !== 'same' && c.padding !== 'valid') return undefined;
  const act = c.activation?.getClassName() ?? 'linear';
  // Keras fuses elu into the convolution; XNNPACK's matrix product has no elu of its own
  if (act === 'elu') return undefined;
  return c;
}

/**
 * The smallest filter computed as a matrix product: below it, the memory saved is small and the product's few
 * more calls (reshapes) cost a light model's many small convolutions time.
 */
const MIN_MATMUL_FILTER_BYTES = 512 * 1024;

/**
 * Whether a convolution layer, given one frame of `inputShape` (without the batch), pays as a matrix product: its
 * filter holds at least MIN_MATMUL_FILTER_BYTES and more bytes than one frame's patches (the patches are made anew
 * every frame, the filter's second copy would be kept for good).
 */
function pays(layer: tf.layers.Layer, inputShape: number[]): boolean {
  const c = convOf(layer);
  if (!c?.kernel || inputShape.length !== 3) return false;
  const [kh, kw, inC, outC] = c.kernel.read().shape;
  const filterBytes = kh * kw * inC * outC * 4;
  const p = patchesOf([kh, kw], c.strides as [number, number], c.padding as 'same' | 'valid', inputShape[0], inputShape[1], inC);
  return filterBytes >= MIN_MATMUL_FILTER_BYTES && filterBytes > p.bytes;
}

/** Whether this layer, given one frame of `inputShape`, is computed as a matrix product: where it pays, on the wasm engine, once its self-check passed. */
export function asMatMul(layer: tf.layers.Layer, inputShape: number[]): boolean {
  return tf.getBackend() === 'wasm' && pays(layer, inputShape) && exact();
}

/**
 * How many copies of a layer's weights the wasm engine keeps once its stage has run its first frame and given the
 * packed originals back (docs/memory.md): two for a convolution the engine computes itself (its filter transposed,
 * then packed), one for a convolution computed as a matrix product, a dense layer's operand and any other weight.
 */
export function engineWeightCopies(layer: tf.layers.Layer, inputShape: number[]): number {
  const kind = layer.getClassName();
  if (kind === 'Conv2D') return pays(layer, inputShape) ? 1 : 2;
  return kind === 'DepthwiseConv2D' || kind === 'SeparableConv2D' || kind === 'Conv1D' || kind === 'Conv2DTranspose' ? 2 : 1;
}

let checked: boolean | undefined;

/** Whether this thread's engine computes large convolutions as matrix products (the wasm engine, its check passed). */
export function convolutionsAsProducts(): boolean {
  return tf.getBackend() === 'wasm' && exact();
}

/** Whether this engine computes small convolutions of every kind rewritten the same bits both ways (checked once per thread). */
function exact(): boolean {
  if (checked === undefined) {
    const differs = selfCheck();
    if (differs) log.warn(`engine: a convolution as a matrix product differs from the engine's (${differs}); the engine's convolutions run`);
    checked = !differs;
  }
  return checked;
}

/** Small convolutions both ways on seeded random values: '' when every bit agrees, else which one differs. */
export function selfCheck(): string {
  const cases: [kernel: number, stride: number, padding: 'same' | 'valid', activation: 'relu' | 'linear' | 'sigmoid', size: number][] = [
    [3, 1, 'same', 'relu', 9],
    [3, 2, 'same', 'linear', 9],
    [3, 2, 'valid', 'sigmoid', 10],
    [1, 1, 'valid', 'linear', 6],
    [1, 2, 'valid', 'relu', 7],
  ];
  for (const [k, stride, padding, activation, size] of cases) {
    const layer = tf.layers.conv2d({
      filters: 12,
      kernelSize: k,
      strides: stride,
      padding,
      activation,
      kernelInitializer: tf.initializers.randomUniform({ minval: -1, maxval: 1, seed: 5 }),
      biasInitializer: tf.initializers.randomUniform({ minval: -1, maxval: 1, seed: 6 }),
    });
    const x = tf.randomUniform([2, size, size, 8], -2, 2, 'float32', 7);
    try {
      const want = tf.tidy(() => (layer.apply(x) as tf.Tensor).dataSync());
      const got = tf.tidy(() => convAsMatMul(layer, x).dataSync());
      const a = new Uint32Array(want.buffer, want.byteOffset, want.length);
      const b = new Uint32Array(got.buffer, got.byteOffset, got.length);
      if (a.length !== b.length || a.some((v, i) => v !== b[i])) return `${k}x${k}, stride ${stride}, ${padding}, ${activation}`;
    } finally {
      x.dispose();
      layer.dispose();
    }
  }
  return '';
}

const PATCHES_KERNEL = 'DeferConvPatches';
type TensorInfo = { dataId: object; shape: number[]; dtype: string };
interface WasmBackend {
  dataIdMap: { get(id: object): { memoryOffset: number } | undefined };
  makeOutput(shape: number[], dtype: string): TensorInfo;
  wasm: { HEAPF32: Float32Array };
}

/**
 * The patches kernel: copies of the input's rows of channels (and zeros where a window reaches into the padding),
 * written straight into the engine's heap. The engine's own slices and concatenation took 4-13 ms for one
 * 14x14x256 frame's patches (a strided slice with stride 2 alone 13 ms), as long as the product itself.
 */
function patchesKernel({ inputs, backend, attrs }: { inputs: { x: TensorInfo }; backend: WasmBackend; attrs: Patches }): TensorInfo {
  const { x } = inputs;
  const [n, h, w, c] = x.shape;
  const { kh, kw, stride, pad, outH, outW } = attrs;
  const out = backend.makeOutput([n, outH, outW, kh * kw * c], 'float32');
  const heap = backend.wasm.HEAPF32;
  const src = backend.dataIdMap.get(x.dataId)!.memoryOffset >> 2;
  let dst = backend.dataIdMap.get(out.dataId)!.memoryOffset >> 2;
  for (let b = 0; b < n; b++) {
    for (let oy = 0; oy < outH; oy++) {
      for (let ox = 0; ox < outW; ox++) {
        for (let i = 0; i < kh; i++) {
          const y = oy * stride[0] + i - pad[0][0];
          for (let j = 0; j < kw; j++) {
            const xx = ox * stride[1] + j - pad[1][0];
            if (y < 0 || y >= h || xx < 0 || xx >= w) heap.fill(0, dst, dst + c);
            else {
              const from = src + ((b * h + y) * w + xx) * c;
              heap.copyWithin(dst, from, from + c);
            }
            dst += c;
          }
        }
      }
    }
  }
  return out;
}

let registered = false;

/** The input's patches: `[frames, outH, outW, kh x kw x inC]`, the windows in the filter's order (row, column, channel). */
function patches(x: tf.Tensor4D, p: Patches): tf.Tensor4D {
  if (p.bytes === 0) return x;
  if (!registered) {
    tf.registerKernel({ kernelName: PATCHES_KERNEL, backendName: 'wasm', kernelFunc: patchesKernel as unknown as tf.KernelFunc });
    registered = true;
  }
  return tf.engine().runKernel(PATCHES_KERNEL, { x }, p as unknown as tf.NamedAttrMap) as tf.Tensor4D;
}

/** The convolution layer on `x` as patches x filter: the same bits as the layer's own call. */
export function convAsMatMul(layer: tf.layers.Layer, x: tf.Tensor): tf.Tensor {
  const c = convOf(layer);
  if (!c || x.rank !== 4) throw new Error(`internal: layer ${layer.name} is not a convolution that a matrix product computes`);
  return tf.tidy(() => {
    const kernel = c.kernel!.read();
    const [kh, kw, inC, outC] = kernel.shape;
    const [n, h, w] = x.shape;
    const p = patchesOf([kh, kw], c.strides as [number, number], c.padding as 'same' | 'valid', h, w, inC);
    const a = patches(x as tf.Tensor4D, p).reshape([n * p.outH * p.outW, kh * kw * inC]) as tf.Tensor2D;
    const act = c.activation?.getClassName() ?? 'linear';
    const fused = act === 'relu' || act === 'linear';
    const y = tf.fused.matMul({ a, b: kernel.reshape([kh * kw * inC, outC]) as tf.Tensor2D, bias: c.bias?.read(), activation: fused ? act : 'linear' });
    const out = y.reshape([n, p.outH, p.outW, outC]);
    return fused || !c.activation ? out : c.activation.apply(out);
  });
}
