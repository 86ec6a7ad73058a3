/**
 * A faster batch normalisation for the wasm engine, bit for bit the engine's own.
 *
 * tfjs-backend-wasm 4.22 normalises one element at a time, with a double-precision division and a wrap-around
 * test per operand (its FusedBatchNorm.cc): in the Teachable Machine MobileNetV2, whose Keras batch normalisation
 * layers are not folded into the convolutions, that kernel took 43% of a frame (its profile). This kernel
 * (native/batch-norm.wat) does the same operations in the same order and precision, four channels at a time with
 * SIMD: f32 (x - mean) * scale, then in double precision / sqrt(variance + eps) + offset, rounded to f32 once, as
 * the engine does. Measured (2-core VM, whole model, 40 frames, outputs bit-identical): the Teachable Machine
 * model 29.6 -> 16.7 ms per frame, ResNet50 292 -> 246, MobileNet v1 63 -> 52 (docs/benchmarks.md).
 *
 * It takes what it is exact for: float32, per-channel mean, variance, offset and scale of the last axis's size,
 * a multiple of 4 channels; anything else goes to the engine's kernel. Installed once per engine (each worker
 * thread has its own) after a self-check against the engine's kernel on random and special values (zeros,
 * denormals, infinities, extremes): if they differ in one bit (another engine version), it is not installed and
 * a warning says so. `DEFER_STOCK_BATCH_NORM=1` keeps the engine's kernel (for A/B measurements).
 */
import { log } from '../core/log.js';
import { prng } from '../core/prng.js';
import { BATCH_NORM_WASM } from './batch-norm-wasm.js';
import * as tf from './tf.js';

type DataId = object;
export type TensorInfo = { dataId: DataId; shape: number[]; dtype: string };
export interface WasmBackend {
  dataIdMap: { get(id: DataId): { memoryOffset: number } | undefined };
  makeOutput(shape: number[], dtype: string): TensorInfo;
  typedArrayFromHeap(t: TensorInfo): Float32Array;
  disposeData(id: DataId): boolean;
  wasm: { _malloc(n: number): number; _free(p: number): void; HEAPF32: Float32Array; HEAPF64: Float64Array; asm: { memory: WebAssembly.Memory } };
}
type BatchNormInputs = { x: TensorInfo; mean: TensorInfo; variance: TensorInfo; offset?: TensorInfo; scale?: TensorInfo };
export type KernelArgs = { inputs: BatchNormInputs; backend: WasmBackend; attrs: { varianceEpsilon: number } };
type BatchNormFn = (x: number, mean: number, scale: number, nf: number, offset: number, out: number, pixels: number, channels: number) => void;

let installed: boolean | undefined;
let kernels: { stock: (a: KernelArgs) => TensorInfo; fast: (a: KernelArgs) => TensorInfo } | undefined;

/** The engine's kernel and this one, once installed (for the tests and the bench); undefined where not installed. */
export function batchNormKernels(): typeof kernels {
  return kernels;
}

/** Install the kernel on the active wasm backend (once per thread); true when it runs from now on. */
export function installBatchNormKernel(): boolean {
  if (installed !== undefined) return installed;
  installed = false;
  if (tf.getBackend() !== 'wasm') return false;
  if (process.env.DEFER_STOCK_BATCH_NORM === '1') {
    log.debug("engine: the wasm engine's own batch normalisation kernel (DEFER_STOCK_BATCH_NORM=1)");
    return false;
  }
  const stock = tf.getKernel('FusedBatchNorm', 'wasm');
  if (!stock) return false;
  const backend = tf.backend() as unknown as WasmBackend;
  let run: BatchNormFn;
  try {
    const module = new WebAssembly.Module(Buffer.from(BATCH_NORM_WASM, 'base64'));
    run = new WebAssembly.Instance(module, { env: { memory: backend.wasm.asm.memory } }).exports.batchNorm as BatchNormFn;
  } catch (err) {
    log.warn(`engine: the SIMD batch normalisation kernel cannot start (${(err as Error).message}); the engine's own runs`);
    return false;
  }
  const engine = (a: KernelArgs) => stock.kernelFunc(a as never) as TensorInfo;
  const fast = (args: KernelArgs) => batchNorm(args, run) ?? engine(args);
  const mismatch = selfCheck(backend, engine, fast);
  if (mismatch) {
    log.warn(`engine: the SIMD batch normalisation kernel differs from the engine's (${mismatch}); the engine's own runs`);
    return false;
  }
  tf.unregisterKernel('FusedBatchNorm', 'wasm');
  tf.registerKernel({ ...stock, kernelFunc: fast as unknown as tf.KernelFunc });
  kernels = { stock: engine, fast };
  installed = true;
  return true;
}

/** The SIMD kernel's output, or undefined where it is not exact (the caller runs the engine's). */
function batchNorm({ inputs, backend, attrs }: KernelArgs, run: BatchNormFn): TensorInfo | undefined {
  const { x, mean, variance, offset, scale } = inputs;
  const C = x.shape[x.shape.length - 1];
  if (x.dtype !== 'float32' || !offset || !scale || !C || C % 4 !== 0) return undefined;
  for (const t of [mean, variance, offset, scale]) if (t.dtype !== 'float32' || t.shape.length !== 1 || t.shape[0] !== C) return undefined;
  const at = (t: TensorInfo) => backend.dataIdMap.get(t.dataId)!.memoryOffset;
  const out = backend.makeOutput(x.shape, 'float32');
  const size = x.shape.reduce((a, b) => a * b, 1);
  if (size === 0) return out;
  // the divisors and offsets as doubles, 16-byte aligned: nf = f64(f32 sqrt(f32(variance + eps))), as the engine makes them
  const w = backend.wasm;
  const block = w._malloc(C * 16 + 16);
  const nf = (block + 15) & ~15;
  const off64 = nf + C * 8;
  const eps = Math.fround(attrs.varianceEpsilon);
  const F32 = w.HEAPF32;
  const F64 = w.HEAPF64;
  const v = at(variance) >> 2;
  const o = at(offset) >> 2;
  for (let c = 0; c < C; c++) {
    F64[(nf >> 3) + c] = Math.fround(Math.sqrt(Math.fround(F32[v + c] + eps)));
    F64[(off64 >> 3) + c] = F32[o + c];
  }
  run(at(x), at(mean), at(scale), nf, off64, at(out), size / C, C);
  w._free(block);
  return out;
}

/** Both kernels on seeded random and special values: '' when every bit agrees (NaNs aside), else where not. */
export function selfCheck(backend: WasmBackend, stock: (a: KernelArgs) => TensorInfo, fast: (a: KernelArgs) => TensorInfo): string {
  const special = [0, -0, 1e-40, -1e-40, 3.4e38, -3.4e38, 1e-30, 1, -1, 0.1, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY];
  const rnd = prng(0x9e3779b9);
  const values = (n: number, positive = false) =>
    Float32Array.from({ length: n }, (_, i) => {
      const v = i % 5 === 0 ? special[(i / 5) % special.length] : (rnd() - 0.5) * Math.exp((rnd() - 0.5) * 40);
      return positive ? Math.abs(v) : v;
    });
  const C = 12;
  const shape = [2, 3, 5, C];
  const ts = {
    x: tf.tensor(values(2 * 3 * 5 * C), shape),
    mean: tf.tensor(values(C)),
    variance: tf.tensor(values(C, true)),
    offset: tf.tensor(values(C)),
    scale: tf.tensor(values(C)),
  };
  try {
    const inputs = Object.fromEntries(Object.entries(ts).map(([k, t]) => [k, { dataId: t.dataId as DataId, shape: t.shape, dtype: t.dtype }])) as unknown as BatchNormInputs;
    for (const varianceEpsilon of [0.001, 1e-5]) {
      const args = { inputs, backend, attrs: { varianceEpsilon } };
      const a = stock(args);
      const b = fast(args);
      const A = new Uint32Array(backend.typedArrayFromHeap(a).slice().buffer);
      const B = new Uint32Array(backend.typedArrayFromHeap(b).slice().buffer);
      backend.disposeData(a.dataId);
      backend.disposeData(b.dataId);
      const F = new Float32Array(A.buffer);
      for (let i = 0; i < A.length; i++) if (A[i] !== B[i] && !Number.isNaN(F[i])) return `element ${i}: 0x${A[i].toString(16)} against 0x${B[i].toString(16)}`;
    }
    return '';
  } finally {
    tf.dispose(Object.values(ts));
  }
}
