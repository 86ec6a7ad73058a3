/** The default cuts when none are given: balanced by measured time (the cached profile), FLOPs or parameters. */
import type { FlatModel } from '../model/partition.js';
import { type ProfileOptions, getProfile } from './profile-cache.js';

export type BalanceBy = 'time' | 'flops' | 'params';

export async function chooseCuts(flat: FlatModel, stages: number, by: BalanceBy, profile: ProfileOptions): Promise<string[]> {
  if (stages <= 1) return [];
  if (by !== 'time') return flat.balancedCuts(stages, by);
  const { profile: p } = await getProfile(flat, profile);
  return flat.balancedCuts(stages, p.layerMs);
}
