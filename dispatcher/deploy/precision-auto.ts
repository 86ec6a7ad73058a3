/**
 * `dispatcher.precision auto` wired to the configuration: the model's profile
 * (stage times), the nodes' link bandwidths (planner.bandwidthMbps), the
 * accuracy budget (planner.maxTop1Loss) and calibration frames
 * (planner.calibrationImages, else synthetic) feed the choice in
 * lib/planning/precision-choice.ts, for every chain the dispatcher deploys.
 */
import type { DeferConfig } from '../../config/schema.js';
import { loadModelMeta } from '../../lib/model/labels.js';
import { syntheticFrames } from '../../lib/model/synthetic-frames.js';
import { modelProfile } from '../../lib/planning/auto-plan.js';
import { perNode } from '../../lib/planning/plan-inputs.js';
import { type ChoosePrecision, calibrationFrames, choosePrecisions, LOSSY, measureHopPrecisions } from '../../lib/planning/precision-choice.js';
import { modelInputFor } from '../serving/start-serving.js';

export function isAutoPrecision(config: Pick<DeferConfig, 'dispatcher'>): boolean {
  return config.dispatcher.precision.includes('auto');
}

/** The chooser for `precision auto`, or undefined when the precision is given. `ids`: the nodes planner.bandwidthMbps is given for, in its order. */
export function autoPrecision(config: DeferConfig, backend: string, ids: string[], progress: (l: string) => void): ChoosePrecision | undefined {
  if (!isAutoPrecision(config)) return undefined;
  const bandwidth = new Map(perNode('planner.bandwidthMbps', config.planner.bandwidthMbps, ids).map((b, i) => [ids[i], b]));
  const budget = config.planner.maxTop1Loss / 100;
  return async (flat, nodes, cuts) => {
    const { profile } = await modelProfile(flat, config, backend, progress);
    const index = new Map(flat.graph.layers.map((l, i) => [l.name, i]));
    const spans = flat.spans(cuts);
    const stageMs = spans.map((s) => s.layers.reduce((t, l) => t + profile.layerMs[index.get(l)!], 0));
    const input = modelInputFor(flat, config.serve, await loadModelMeta(config.dispatcher.model, config.serve.labels));
    const n = config.planner.calibrationFrames;
    const { frames, source } = await calibrationFrames(config.planner.calibrationImages, n, input.preprocess, () => syntheticFrames(flat.inputShape, n, config.dispatcher.seed + 1000));
    progress(`precision auto: measuring top-1 agreement of ${LOSSY.join(', ')} on the frame and at ${cuts.length} cut(s), on ${source}`);
    const measures = await measureHopPrecisions(flat, cuts, frames);
    const dispatcherMbps = config.planner.dispatcherBandwidthMbps;
    const link = (hop: number) => {
      const bws = [hop === 0 ? dispatcherMbps : bandwidth.get(nodes[hop - 1]), bandwidth.get(nodes[hop])].filter((b): b is number => b !== undefined && b > 0);
      return bws.length ? Math.min(...bws) : undefined;
    };
    const choice = choosePrecisions({ stages: spans.length, measures, linkMbps: link, bottleneckMs: Math.max(...stageMs), maxTop1Loss: budget });
    return { ...choice, measures, calibration: source };
  };
}
