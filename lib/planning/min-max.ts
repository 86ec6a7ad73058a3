/**
 * The one exact min-max search of the planner: split a sequence of cut points
 * into consecutive stages so that the largest stage cost is as small as
 * possible (dynamic programming, O(stages x points^2)). The cost model
 * (optimiser.ts) and the plain balanced cuts (balanced-cuts.ts) both use it.
 */
import { DeferError } from '../core/errors.js';

/**
 * Boundaries 0 .. points-1; stage k (0-based) runs from boundary a to b (a < b)
 * and costs `cost(k, a, b)` (Infinity: not allowed). Returns the boundaries of
 * the best split (first 0, last points-1, `stages + 1` of them) and its largest
 * stage cost, or null when no split is allowed. Ties go to the earliest cuts.
 */
export function minMaxPartition(points: number, stages: number, cost: (stage: number, a: number, b: number) => number): { value: number; bounds: number[] } | null {
  const m = points;
  const K = stages;
  const best: number[][] = Array.from({ length: K + 1 }, () => new Array<number>(m).fill(Infinity));
  const from: number[][] = Array.from({ length: K + 1 }, () => new Array<number>(m).fill(-1));
  best[0][0] = 0;
  for (let k = 1; k <= K; k++) {
    // stage k-1 ends at boundary j; it needs k-1 boundaries before it and K-k after it
    for (let j = k; j <= m - 1 - (K - k); j++) {
      if (k === K && j !== m - 1) continue;
      for (let i = k - 1; i < j; i++) {
        if (best[k - 1][i] === Infinity) continue;
        const v = Math.max(best[k - 1][i], cost(k - 1, i, j));
        if (v < best[k][j]) {
          best[k][j] = v;
          from[k][j] = i;
        }
      }
    }
  }
  if (best[K][m - 1] === Infinity) return null;
  const bounds = [m - 1];
  for (let k = K, j = m - 1; k > 1; k--) {
    j = from[k][j];
    bounds.unshift(j);
  }
  return { value: best[K][m - 1], bounds: [0, ...bounds] };
}

/**
 * Choose `stages - 1` cuts among `validCuts` (layer indices) so that the
 * largest stage cost is as small as possible. `cost[i]` is layer i's cost; a
 * stage after cut a up to cut b costs sum(cost[a+1..b]). Returns the chosen
 * layer indices.
 */
export function minMaxCuts(cost: number[], validCuts: number[], stages: number): number[] {
  assertStageCount(validCuts, stages);
  const prefix = [0];
  for (const c of cost) prefix.push(prefix[prefix.length - 1] + c);
  // boundaries: -1, the valid cuts, the last layer; layers (a, b] cost prefix[b+1] - prefix[a+1]
  const pts = [-1, ...validCuts, cost.length - 1];
  const split = minMaxPartition(pts.length, stages, (_, a, b) => prefix[pts[b] + 1] - prefix[pts[a] + 1])!;
  return split.bounds.slice(1, -1).map((j) => pts[j]);
}

/** A clear error where a model with these valid cuts cannot be split into `stages` stages. */
export function assertStageCount(validCuts: readonly number[], stages: number): void {
  if (stages < 1) throw new DeferError('E_CONFIG', 'the number of stages must be at least 1');
  if (stages - 1 > validCuts.length) {
    throw new DeferError('E_CONFIG', `cannot make ${stages} stages: the model has only ${validCuts.length} valid cut points (${validCuts.length + 1} stages at most)`);
  }
}
