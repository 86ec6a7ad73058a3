/**
 * The synthetic frames that `defer up`, `defer dispatch` and the bench stream: for an image model (input
 * [h, w, 1 or 3]) and up.pixelFrames, uint8 pixels as a camera gives them, which stage 0's node normalises as
 * the model's input spec says (a quarter of float32's bytes on the first hop), where that hop is lossless; else
 * float32 values in [0, 1).
 */
import type { DeferConfig } from '../../config/schema.js';
import type { FlatModel } from '../../lib/model/flat-model.js';
import { loadModelMeta } from '../../lib/model/labels.js';
import { pixelsToTensor } from '../../lib/model/preprocess.js';
import { syntheticFrames, syntheticPixels } from '../../lib/model/synthetic-frames.js';
import type { ImageInput, RawTensor } from '../../lib/protocol/index.js';
import { modelInputFor } from '../serving/start-serving.js';

export interface RunFrames {
  frames: RawTensor[];
  /** the frames are pixels, normalised this way (stage 0's assignment carries it as inputImage) */
  image?: ImageInput;
}

export async function runFramesFor(flat: FlatModel, config: DeferConfig): Promise<RunFrames> {
  const { frames: count, pixelFrames } = config.up;
  const seed = config.dispatcher.seed;
  // a lossy (or automatic) precision of the frame's hop is for float32 frames: the pixels would only lose
  const losslessFirstHop = config.dispatcher.precision[0] === 'lossless';
  const image =
    pixelFrames && losslessFirstHop && flat.inputDtype === 'float32' ? modelInputFor(flat, config.serve, await loadModelMeta(config.dispatcher.model, config.serve.labels)).preprocess : null;
  if (!image) return { frames: syntheticFrames(flat.inputShape, count, seed) };
  return { frames: syntheticPixels(image, count, seed), image };
}

/** A frame as the model takes it: pixels normalised as `image` says, a tensor as it is. */
export function modelInputOf(frame: RawTensor, image: ImageInput | undefined): RawTensor {
  return frame.dtype === 'uint8' && image ? pixelsToTensor(frame, image) : frame;
}
