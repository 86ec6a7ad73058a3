/** Synthetic input frames: seeded, reproducible tensors of a model's input shape. */

import { prng } from '../core/prng.js';
import type { ImageInput, RawTensor } from '../protocol/index.js';

/** `count` frames of shape [1, ...shape], values uniform in [lo, hi), from `seed`. */
export function syntheticFrames(shape: number[], count: number, seed = 1, lo = 0, hi = 1): RawTensor[] {
  const n = shape.reduce((a, b) => a * b, 1);
  const rnd = prng(seed * 7919 + 17);
  return Array.from({ length: count }, () => {
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = lo + (hi - lo) * rnd();
    return { dtype: 'float32' as const, shape: [1, ...shape], data };
  });
}

/**
 * `count` frames of an image model as a camera gives them: uint8 pixels of shape [1, height, width, channels],
 * uniform in 0..255, from `seed`. Stage 0 (or the local reference run) turns them into the model's floats with
 * `normalise` (lib/model/preprocess.ts).
 */
export function syntheticPixels(spec: Pick<ImageInput, 'height' | 'width' | 'channels'>, count: number, seed = 1): RawTensor[] {
  const n = spec.height * spec.width * spec.channels;
  const rnd = prng(seed * 7919 + 17);
  return Array.from({ length: count }, () => {
    const data = new Uint8Array(n);
    for (let i = 0; i < n; i++) data[i] = Math.floor(256 * rnd());
    return { dtype: 'uint8' as const, shape: [1, spec.height, spec.width, spec.channels], data };
  });
}
