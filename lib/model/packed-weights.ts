/**
 * Weights the engine has packed: on the wasm backend, XNNPACK copies a convolution's filter (and a fused bias)
 * into its own packed layout the first time the layer runs, and a matrix product's right operand likewise, and
 * from then on reads only that copy (tfjs-backend-wasm caches the packed operator by the tensor's id). The
 * tensor's own memory is then dead weight: as big as the packed copy, and on wasm never given back to the
 * system. This module records, while a stage runs its first frame, which kernels read each tensor and in which
 * role, and frees the memory of weights that were read only in a packed role, keeping the tensors registered
 * (their ids key the packed operators, and disposing them still frees those). Afterwards it refuses, with an
 * error, any kernel that would read a released tensor's values, so a released weight can never be read
 * silently. Where the engine is not wasm, nothing is recorded and nothing released.
 */
import { DeferError } from '../core/errors.js';
import { tf } from './engine.js';

type DataId = object;
type TensorInfo = { dataId: DataId; shape: number[]; dtype: string };
type KernelArgs = { inputs: Record<string, TensorInfo | undefined>; attrs?: Record<string, unknown>; backend: unknown };

interface WasmBackend {
  dataIdMap: { get(id: DataId): { memoryOffset: number } | undefined };
  wasm: { _free(ptr: number): void; _malloc(n: number): number };
}

/** Kernels whose inputs (by name) XNNPACK packs and caches, and when (the matrix products only on their fast path). */
const PACKED_ROLES: Record<string, { inputs: string[]; when?: (a: KernelArgs) => boolean }> = {
  Conv2D: { inputs: ['filter'] },
  FusedConv2D: { inputs: ['filter', 'bias'] },
  DepthwiseConv2dNative: { inputs: ['filter'] },
  FusedDepthwiseConv2D: { inputs: ['filter', 'bias'] },
  BatchMatMul: { inputs: ['b'], when: matMulFastPath },
  _FusedMatMul: { inputs: ['b', 'bias'], when: matMulFastPath },
};

/** Kernels that read no values of their inputs (a reshape shares the data under a new shape). */
const NO_READ = new Set(['Reshape']);

/** The wasm backend takes XNNPACK's (cached) fully connected path only without transposes and with one batch on both sides. */
function matMulFastPath(a: KernelArgs): boolean {
  const x = a.inputs.a;
  const w = a.inputs.b;
  const batch = (t: TensorInfo | undefined) => (t ? t.shape.slice(0, -2).reduce((p, d) => p * d, 1) : 0);
  return !a.attrs?.transposeA && !a.attrs?.transposeB && batch(x) === 1 && batch(w) === 1;
}

/** per tensor: true while every read so far was a packed one */
let uses: Map<DataId, boolean> | undefined;
/** released tensors (by data id) and their names; weak, so that a disposed stage's tensors leave it */
const released = new WeakMap<DataId, string>();
let anyReleased = false;
let installed = false;

/** Wrap every kernel of the active backend once, so that reads can be recorded and reads of released tensors refused. */
function install(): void {
  if (installed) return;
  installed = true;
  for (const config of tf.getKernelsForBackend('wasm')) {
    const role = PACKED_ROLES[config.kernelName];
    const inner = config.kernelFunc;
    const reads = !NO_READ.has(config.kernelName);
    const kernelFunc = ((args: KernelArgs) => {
      if (reads && (uses || anyReleased)) {
        const packed = role && (!role.when || role.when(args)) ? role.inputs : [];
        for (const [name, t] of Object.entries(args.inputs)) {
          if (!t) continue;
          const isPacked = packed.includes(name);
          if (!isPacked && released.has(t.dataId)) {
            throw new DeferError(
              'E_BACKEND',
              `internal: kernel ${config.kernelName} would read weight ${released.get(t.dataId)}, whose memory was given back after the engine packed it; start the node with --keep-packed-weights`,
            );
          }
          if (uses) uses.set(t.dataId, (uses.get(t.dataId) ?? true) && isPacked);
        }
      }
      return inner(args as never);
    }) as typeof config.kernelFunc;
    tf.unregisterKernel(config.kernelName, 'wasm');
    tf.registerKernel({ ...config, kernelFunc });
  }
}

/** Whether this process's engine packs weights that can be released (the wasm backend). */
export function canReleasePacked(): boolean {
  return tf.getBackend() === 'wasm';
}

/** Start recording which kernels read which tensors (call before the stage's first frame). */
export function recordReads(): void {
  if (!canReleasePacked()) return;
  install();
  uses = new Map();
}

/** Stop recording. */
export function stopRecording(): void {
  uses = undefined;
}

/**
 * Free the memory of those of `weights` that every kernel so far read only in a packed role (recorded since
 * `recordReads`), keeping the tensors registered. Returns the bytes given back to the engine's heap.
 */
export function releasePacked(weights: { name: string; tensor: tf.Tensor }[]): number {
  if (!uses) return 0;
  const backend = tf.backend() as unknown as WasmBackend;
  let bytes = 0;
  for (const { name, tensor } of weights) {
    const id = tensor.dataId as DataId;
    if (uses.get(id) !== true || released.has(id) || tensor.dtype !== 'float32') continue;
    const data = backend.dataIdMap.get(id);
    if (!data) continue;
    backend.wasm._free(data.memoryOffset);
    // disposing the tensor frees its memory: give it a byte of its own to free then
    data.memoryOffset = backend.wasm._malloc(1);
    released.set(id, name);
    anyReleased = true;
    bytes += tensor.size * 4;
  }
  return bytes;
}
