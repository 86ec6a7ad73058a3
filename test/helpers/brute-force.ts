/** What the planners' brute-force tests share: random cost models, and every combination of cut points. */
import type { CostModel } from '../../lib/planning/cost-model.js';

/** A model of `layers` layers: about 70% of the points valid cuts, segments of up to 10 ms (plus `minMs`), random sizes and codec costs. */
export function randomCost(rnd: () => number, layers: number, minMs = 0): CostModel {
  const validCuts = Array.from({ length: layers - 1 }, (_, i) => i).filter(() => rnd() < 0.7);
  const segmentMs = Array.from({ length: layers }, () => 0);
  // segments end at the valid cuts and the last layer, as in a profile
  for (const i of [...validCuts, layers - 1]) segmentMs[i] = Math.round(rnd() * 100) / 10 + minMs;
  return {
    layerNames: Array.from({ length: layers }, (_, i) => `l${i}`),
    segmentMs,
    validCuts,
    outputBytes: Array.from({ length: layers }, () => Math.round(rnd() * 2e6)),
    weightBytes: Array.from({ length: layers }, () => Math.round(rnd() * 5e6)),
    inputBytes: Math.round(rnd() * 1e6),
    encodeMs: Array.from({ length: layers }, () => rnd()),
    decodeMs: Array.from({ length: layers }, () => rnd()),
    inputDecodeMs: rnd(),
  };
}

/** Every k-element combination of `items`, in order. */
export function* combinations(items: number[], k: number, start = 0, acc: number[] = []): Generator<number[]> {
  if (acc.length === k) {
    yield [...acc];
    return;
  }
  for (let i = start; i < items.length; i++) {
    acc.push(items[i]);
    yield* combinations(items, k, i + 1, acc);
    acc.pop();
  }
}
