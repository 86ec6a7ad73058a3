/**
 * Cuts for a chain of equal nodes: the model split into stages of near-equal
 * cost, by measured time (the cached profile), estimated FLOPs, parameters, or
 * the planner's memory estimate (docs/memory.md). What `--cut` is when it is
 * left out and `--auto` is not given.
 */
import type { FlatModel } from '../model/flat-model.js';
import { memoryBalancedStages } from './memory-fit.js';
import { assertStageCount, minMaxCuts } from './min-max.js';
import { memoryCostOf } from './plan-inputs.js';
import { getProfile, type ProfileOptions } from './profile-cache.js';

export type BalanceBy = 'time' | 'flops' | 'params' | 'memory';

const ACTIVATIONS = new Set(['Activation', 'ReLU', 'LeakyReLU', 'ELU', 'Softmax']);

/**
 * Cuts that split the model into `stages` parts of near-equal cost: estimated FLOPs, parameters, given per-layer
 * costs, or (memory) the split whose heaviest stage by the planner's memory estimate is lightest.
 */
export function balancedCuts(flat: FlatModel, stages: number, by: 'flops' | 'params' | 'memory' | number[] = 'flops'): string[] {
  const valid = new Set(flat.cuts.valid);
  const chosen = by === 'memory' ? memoryCuts(flat, stages) : minMaxCuts(Array.isArray(by) ? by : flat.layers.map((l) => (by === 'flops' ? l.flops : l.params)), flat.cuts.valid, stages);
  return chosen.map((at, k) => {
    // Move a cut past a following activation (ResNet's `_add` -> `_out`): the cost is the same to within a
    // rounding, and rectified outputs compress better; never onto the next cut (that stage would be empty).
    let i = at;
    while (valid.has(i + 1) && ACTIVATIONS.has(flat.layers[i + 1].className) && i + 1 !== chosen[k + 1]) i++;
    return flat.graph.layers[i].name;
  });
}

/** Balanced cuts by `by`; by time, from the model's profile (measured once, then cached). */
export async function chooseCuts(flat: FlatModel, stages: number, by: BalanceBy, profile: ProfileOptions): Promise<string[]> {
  if (stages <= 1) return [];
  if (by !== 'time') return balancedCuts(flat, stages, by);
  const { profile: p } = await getProfile(flat, profile);
  return balancedCuts(flat, stages, p.layerMs);
}

/** The memory-balanced split's cuts (layer indices), `stages` of them but one. */
function memoryCuts(flat: FlatModel, stages: number): number[] {
  assertStageCount(flat.cuts.valid, stages);
  return memoryBalancedStages(memoryCostOf(flat), stages)
    .slice(0, -1)
    .map((s) => s.last);
}
