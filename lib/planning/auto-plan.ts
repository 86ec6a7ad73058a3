/**
 * `--auto`: profile the model (cached), gather the nodes' figures, plan; and
 * after a run, compare what was measured with what was predicted.
 */
import type { DeferConfig } from '../../config/schema.js';
import type { Capabilities } from './calibrate.js';
import { chooseCuts } from './balanced-cuts.js';
import { log } from '../core/log.js';
import { type BrokerAuth, closeMqtt, connectMqtt } from '../mqtt/connect.js';
import { topicsFor } from '../protocol/topics.js';
import { NodeWatch } from '../../dispatcher/deploy/node-watch.js';
import { costModelOf, planNodes } from './plan-inputs.js';
import type { FlatModel } from '../model/partition.js';
import { type CostModel, type PipelinePlan, type PlanNode, type PlanOptions, planPipeline } from './optimiser.js';
import { hostname } from 'node:os';
import { type CachedProfile, getProfile } from './profile-cache.js';
import { round } from '../core/stats.js';
import type { RunSummary } from '../../dispatcher/run/measure-run.js';

export interface AutoPlan {
  plan: PipelinePlan;
  nodes: PlanNode[];
  cost: CostModel;
  profile: CachedProfile;
  profilePath: string;
  profileCached: boolean;
}

export async function modelProfile(flat: FlatModel, config: DeferConfig, backend: string, progress?: (l: string) => void) {
  return getProfile(flat, { modelSpec: config.dispatcher.model, backend, cacheDir: config.planner.cacheDir, refresh: config.planner.refresh, progress });
}

/**
 * Planner options from the configuration. `relayHost`: the host where the
 * broker and the dispatcher run, when the planner knows it (defer up: this
 * one), so their CPU counts against the cores its nodes share.
 */
export function planOptions(config: DeferConfig, relayHost?: string): PlanOptions {
  const bw = config.planner.dispatcherBandwidthMbps;
  return {
    order: config.planner.order,
    dispatcher: { bandwidthMbps: bw > 0 ? bw : undefined },
    relay: relayHost ? { host: relayHost, msPerMB: config.planner.relayMsPerMB, msPerMessage: config.planner.relayMsPerMessage } : undefined,
  };
}

/** This host, when the broker URL points at it (so the broker's CPU is spent here). */
export function localRelayHost(brokerUrl: string): string | undefined {
  const h = new URL(brokerUrl).hostname;
  return ['127.0.0.1', 'localhost', '0.0.0.0', '::1', '[::1]', hostname()].includes(h) ? hostname() : undefined;
}

/** Plan `ids` (one stage each) from the profile and each node's calibration (or the configured speeds). */
export async function autoPlan(
  flat: FlatModel,
  config: DeferConfig,
  backend: string,
  ids: string[],
  caps?: Map<string, Capabilities>,
  progress: (l: string) => void = (l) => log.info(l),
): Promise<AutoPlan> {
  const { profile, path, cached } = await modelProfile(flat, config, backend, progress);
  for (const [id, c] of caps ?? []) {
    if (c.backend !== profile.backend) progress(`warning: node ${id} runs ${c.backend}, the profile was made on ${profile.backend}; its speed is scaled from the calibration, but layers may not scale alike`);
  }
  const cost = costModelOf(flat, profile, config.dispatcher.codec);
  const nodes = planNodes(ids, config.planner, profile, caps);
  const plan = planPipeline(cost, nodes, planOptions(config, localRelayHost(config.broker.url)));
  return { plan, nodes, cost, profile, profilePath: path, profileCached: cached };
}

export interface PlanCheck {
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
export function checkPlan(plan: PipelinePlan, nodes: PlanNode[], summary: RunSummary): PlanCheck {
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

export function formatPlanCheck(c: PlanCheck): string {
  return [
    '  measured vs predicted (ms per frame on each node: decode + compute + encode):',
    ...c.stages.map((s) => `    ${s.node}: predicted ${s.predictedMs}, measured ${s.measuredMs} (${s.diffPct >= 0 ? '+' : ''}${s.diffPct}%)${s.cpuMs !== null ? `, CPU ${s.cpuMs}` : ''}`),
    ...(c.relayCpuMs.predicted > 0 ? [`    broker + dispatcher CPU: predicted ${c.relayCpuMs.predicted}, measured ${c.relayCpuMs.measured}`] : []),
    `    stage spread: ${c.measuredSpreadPct}% of the mean; throughput predicted ${c.predictedThroughputFps} frames/s (bottleneck: ${c.predictedBottleneck}), measured ${c.measuredThroughputFps} (${c.throughputDiffPct >= 0 ? '+' : ''}${c.throughputDiffPct}%)`,
  ].join('\n');
}

/** Read the nodes' calibrations from their retained status on the broker. */
export async function fetchCapabilities(brokerUrl: string, pipeline: string, ids: string[], timeoutMs: number, auth: BrokerAuth = {}): Promise<Map<string, Capabilities>> {
  const client = await connectMqtt({ url: brokerUrl, clientIdPrefix: 'defer-plan', ...auth });
  try {
    const watch = new NodeWatch(client, topicsFor(pipeline));
    await watch.start();
    return await watch.waitCapabilities(ids, timeoutMs);
  } finally {
    await closeMqtt(client);
  }
}

/** Cuts for `stages` equal nodes without --auto: dispatcher.balanceBy over the cached profile (time), FLOPs or parameters. */
export function defaultCuts(flat: FlatModel, config: DeferConfig, backend: string, stages: number, progress?: (l: string) => void): Promise<string[]> {
  return chooseCuts(flat, stages, config.dispatcher.balanceBy, { modelSpec: config.dispatcher.model, backend, cacheDir: config.planner.cacheDir, refresh: config.planner.refresh, progress });
}
