/**
 * Planning for a chain that lost a node and has no standby: the orphaned stage
 * merged into a neighbour (the supervisor's default), or the model re-planned
 * over the nodes left (the caller's chooseCuts).
 */
import { DeferError } from '../core/errors.js';
import type { StageSpan } from '../model/flat-model.js';

/** The cuts without the one between stage `k` and its lighter neighbour (by FLOPs): stage k merged into it. */
export function mergeCuts(stages: Pick<StageSpan, 'last' | 'flops'>[], k: number): { cuts: string[]; into: number } {
  if (stages.length < 2) throw new DeferError('E_DEPLOY', 'a one-stage chain has no neighbour to merge into');
  const cuts = stages.slice(0, -1).map((s) => s.last);
  const prev = k > 0 ? stages[k - 1].flops : Infinity;
  const next = k < stages.length - 1 ? stages[k + 1].flops : Infinity;
  const into = prev <= next ? k - 1 : k + 1;
  // merging into the previous stage removes the cut before k; into the next, the cut after k
  cuts.splice(into < k ? k - 1 : k, 1);
  return { cuts, into };
}
