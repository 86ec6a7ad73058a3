/** Synthetic input frames: seeded, reproducible tensors of a model's input shape. */
import type { RawTensor } from '../protocol/index.js';
import { prng } from './zoo.js';

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
