/** The default cuts when none are given: balanced by measured time, FLOPs or parameters. */
import { log } from './log.js';
import type { FlatModel } from './partition.js';
import { profileSegments } from './profile.js';

export type BalanceBy = 'time' | 'flops' | 'params';

export async function chooseCuts(flat: FlatModel, stages: number, by: BalanceBy): Promise<string[]> {
  if (stages <= 1) return [];
  if (by !== 'time') return flat.balancedCuts(stages, by);
  const t0 = performance.now();
  const profile = await profileSegments(flat);
  log.info(`profiled ${flat.cuts.valid.length + 1} segments on this backend in ${((performance.now() - t0) / 1000).toFixed(1)} s (whole model ${profile.totalMs.toFixed(0)} ms)`);
  return flat.balancedCuts(stages, profile.layerMs);
}
