/** Build one stage from what its assignment carries: the topology JSON (layers or graph), the weight specs and blob. */
import type { ModelFormat, WeightSpec } from '../protocol/index.js';
import type { StageModel } from './flat-model.js';
import { buildGraphStage } from './graph-partition.js';
import { buildLayersStage, type StageBuildOptions } from './partition.js';

type Json = Record<string, unknown>;

export function buildStageModel(format: ModelFormat, topology: Json, specs: WeightSpec[], blob: Uint8Array, options: StageBuildOptions = {}): Promise<StageModel> {
  return format === 'graph-model' ? buildGraphStage(topology, specs, blob) : buildLayersStage(topology, specs, blob, options);
}
