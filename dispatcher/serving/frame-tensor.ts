/**
 * A device's frame as the model's input: images decoded and preprocessed,
 * tensors checked against the input's shape and dtype. The second step of
 * reading a frame (the first, `parseFrame`, is in the protocol).
 */
import { FrameError } from '../../lib/core/errors.js';
import { checkImageHeader, type PreprocessSpec, preprocessImage } from '../../lib/model/preprocess.js';
import type { DeviceFrame, DType, RawTensor } from '../../lib/protocol/index.js';
import type { ImageFrame } from '../chain/frame-stream.js';

export interface ModelInput {
  /** without the batch dimension */
  shape: number[];
  dtype: DType;
  /** null when the input is not an image (H x W x 1 or 3) */
  preprocess: PreprocessSpec | null;
}

/**
 * What goes into the chain for this frame: an image as it came (its header checked) when stage 0
 * decodes images itself (`imagesToStage0`, a compact first hop), else the model's input tensor.
 */
export async function frameInput(f: DeviceFrame, input: ModelInput, imagesToStage0: boolean): Promise<RawTensor | ImageFrame> {
  if (f.image && imagesToStage0 && input.preprocess) {
    await checkImageHeader(f.image, input.preprocess);
    return { image: f.image };
  }
  return frameTensor(f, input);
}

/** The frame as the model's input tensor, batch 1. */
export async function frameTensor(f: DeviceFrame, input: ModelInput): Promise<RawTensor> {
  if (f.image) {
    if (!input.preprocess) throw new FrameError('bad-image', `this model's input [${input.shape.join(',')}] is not an image: send a tensor (JSON or CBOR)`);
    return preprocessImage(f.image, input.preprocess);
  }
  const t = f.tensor!;
  const want = input.shape;
  const shape = t.shape.length === want.length + 1 && t.shape[0] === 1 ? t.shape.slice(1) : t.shape;
  if (shape.length !== want.length || shape.some((d, i) => d !== want[i])) {
    throw new FrameError('bad-tensor', `tensor shape [${t.shape.join(',')}] does not fit the model's input [${want.join(',')}] (or [1,${want.join(',')}])`);
  }
  if (t.dtype !== input.dtype) throw new FrameError('bad-tensor', `tensor dtype ${t.dtype} does not fit the model's input ${input.dtype}`);
  if (t.dtype === 'float32') {
    const d = t.data as Float32Array;
    for (let i = 0; i < d.length; i++) if (!Number.isFinite(d[i])) throw new FrameError('bad-tensor', `value ${i} is not a finite number`);
  }
  return { dtype: t.dtype, shape: [1, ...want], data: t.data };
}
