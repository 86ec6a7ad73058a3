/**
 * A plan against what happened: each stage's predicted time next to the time
 * its node measured, and the throughput, after a run of a planned deployment.
 */
import { round } from '../core/stats.js';
import type { ChainPlan, PlanNode } from './optimiser.js';

/** What a run measured, as far as a check needs it (dispatcher/run's RunSummary is one). */
export interface MeasuredRun {
  /** per stage: the node's mean time per frame (decode + compute + encode) and its CPU ms (null: not reported) */
  stages: { meanBusyMs: number; meanCpuMs: number | null }[];
  throughputFps: number;
  dispatcherCpuMsPerFrame: number;
}

export interface PredictionCheck {
  /** the planner's view of each node: speed relative to the planning machine (1/time factor) */
  nodes: { id: string; speed: number }[];
  /** per stage: predicted and measured ms per frame on the node (decode + compute + encode), and its CPU ms */
  stages: { node: string; predictedMs: number; measuredMs: number; diffPct: number; cpuMs: number | null }[];
  /** largest distance of a stage's measured time from the stages' mean, in % of the mean */
  measuredSpreadPct: number;
  predictedThroughputFps: number;
  measuredThroughputFps: number;
  /** (measured - predicted) / predicted, in % */
  throughputDiffPct: number;
  predictedBottleneck: string;
  /** broker + dispatcher CPU per frame: predicted (0: not modelled) and measured */
  relayCpuMs: { predicted: number; measured: number };
}

/** Measured against predicted, stage by stage (compute ms per frame) and for the throughput. */
export function checkPlan(plan: ChainPlan, nodes: PlanNode[], summary: MeasuredRun): PredictionCheck {
  const stages = plan.stages.map((p, i) => {
    const measuredMs = summary.stages[i]?.meanBusyMs ?? NaN;
    return { node: p.node, predictedMs: round(p.computeMs, 1), measuredMs, diffPct: round(((measuredMs - p.computeMs) / p.computeMs) * 100, 1), cpuMs: summary.stages[i]?.meanCpuMs ?? null };
  });
  const mean = stages.reduce((s, x) => s + x.measuredMs, 0) / stages.length;
  return {
    nodes: nodes.map((n) => ({ id: n.id, speed: round(1 / n.timeFactor, 3) })),
    stages,
    measuredSpreadPct: round((Math.max(...stages.map((s) => Math.abs(s.measuredMs - mean))) / mean) * 100, 1),
    predictedThroughputFps: round(plan.predictedThroughputFps, 3),
    measuredThroughputFps: summary.throughputFps,
    throughputDiffPct: round(((summary.throughputFps - plan.predictedThroughputFps) / plan.predictedThroughputFps) * 100, 1),
    predictedBottleneck: plan.bottleneck,
    relayCpuMs: { predicted: round(plan.relayCpuMs, 1), measured: summary.dispatcherCpuMsPerFrame },
  };
}

export function formatPlanCheck(c: PredictionCheck): string {
  return [
    '  measured vs predicted (ms per frame on each node: decode + compute + encode):',
    ...c.stages.map((s) => `    ${s.node}: predicted ${s.predictedMs}, measured ${s.measuredMs} (${s.diffPct >= 0 ? '+' : ''}${s.diffPct}%)${s.cpuMs !== null ? `, CPU ${s.cpuMs}` : ''}`),
    ...(c.relayCpuMs.predicted > 0 ? [`    broker + dispatcher CPU: predicted ${c.relayCpuMs.predicted}, measured ${c.relayCpuMs.measured}`] : []),
    `    stage spread: ${c.measuredSpreadPct}% of the mean; throughput predicted ${c.predictedThroughputFps} frames/s (bottleneck: ${c.predictedBottleneck}), measured ${c.measuredThroughputFps} (${c.throughputDiffPct >= 0 ? '+' : ''}${c.throughputDiffPct}%)`,
  ].join('\n');
}
