/**
 * The planner's entry points for the CLI, the dispatcher and Node-RED: which
 * cuts and which node order a deployment gets (`--auto`: the model's profile,
 * cached, and the nodes' figures through the exact optimiser; `--cut`; or
 * balanced cuts for equal nodes), and a second plan from measured figures
 * (`--replan`).
 */
import { hostname } from 'node:os';
import type { DeferConfig } from '../../config/schema.js';
import { DeferError } from '../core/errors.js';
import { log } from '../core/log.js';
import { count } from '../core/words.js';
import type { FlatModel } from '../model/flat-model.js';
import type { Capabilities } from '../protocol/index.js';
import { chooseCuts } from './balanced-cuts.js';
import { describeBatches, withBatches } from './batching.js';
import { type ChainPlan, type CostModel, type PlanNode, type PlanOptions, planPipeline } from './optimiser.js';
import type { PredictionCheck } from './plan-check.js';
import { costModelOf, planNodes, remeasuredNodes } from './plan-inputs.js';
import { type CachedProfile, getProfile } from './profile-cache.js';
import { planShape, type ShapeMember, type ShapeNode, type ShapePlan, shapeLine } from './shape.js';

export interface AutoPlan {
  plan: ChainPlan;
  nodes: PlanNode[];
  cost: CostModel;
  profile: CachedProfile;
  profilePath: string;
  profileCached: boolean;
  /** planned with the broker in the dispatcher's process (defer up) */
  brokerInProcess: boolean;
}

export async function modelProfile(flat: FlatModel, config: DeferConfig, backend: string, progress?: (l: string) => void) {
  return getProfile(flat, { modelSpec: config.dispatcher.model, backend, cacheDir: config.planner.cacheDir, refresh: config.planner.refresh, progress });
}

/**
 * Planner options from the configuration. `relayHost`: the host where the
 * broker and the dispatcher run, when the planner knows it (defer up: this
 * one), so their CPU counts against the cores its nodes share. `brokerInProcess`:
 * the broker runs in the dispatcher's process (defer up), whose CPU then also
 * bounds the time per frame on its own (RelayCost.sharedProcess).
 */
export function planOptions(config: DeferConfig, relayHost?: string, brokerInProcess = false): PlanOptions {
  const bw = config.planner.dispatcherBandwidthMbps;
  return {
    order: config.planner.order,
    dispatcher: { bandwidthMbps: bw > 0 ? bw : undefined },
    relay: relayHost ? { host: relayHost, msPerMB: config.planner.relayMsPerMB, msPerMessage: config.planner.relayMsPerMessage, sharedProcess: brokerInProcess } : undefined,
  };
}

/** This host, when the broker URL points at it (so the broker's CPU is spent here). */
export function localRelayHost(brokerUrl: string): string | undefined {
  const h = new URL(brokerUrl).hostname;
  return ['127.0.0.1', 'localhost', '0.0.0.0', '::1', '[::1]', hostname()].includes(h) ? hostname() : undefined;
}

/** The model's profile (cached) and the cost model from it; a warning for each node on another backend than the profile's. */
async function profiledCost(flat: FlatModel, config: DeferConfig, backend: string, caps: Map<string, Capabilities> | undefined, progress: (l: string) => void) {
  const got = await modelProfile(flat, config, backend, progress);
  for (const [id, c] of caps ?? []) {
    if (c.backend !== got.profile.backend)
      progress(`warning: node ${id} runs ${c.backend}, the profile was made on ${got.profile.backend}; its speed is scaled from the calibration, but layers may not scale alike`);
  }
  return { ...got, cost: costModelOf(flat, got.profile, config.dispatcher.codec) };
}

/** Plan `ids` (one stage each) from the profile and each node's calibration (or the configured speeds). */
export async function autoPlan(
  flat: FlatModel,
  config: DeferConfig,
  backend: string,
  ids: string[],
  caps?: Map<string, Capabilities>,
  progress: (l: string) => void = (l) => log.info(l),
  brokerInProcess = false,
): Promise<AutoPlan> {
  const { profile, path, cached, cost } = await profiledCost(flat, config, backend, caps, progress);
  const nodes = planNodes(ids, config.planner, profile, caps);
  const plan = planPipeline(cost, nodes, planOptions(config, localRelayHost(config.broker.url), brokerInProcess));
  return { plan, nodes, cost, profile, profilePath: path, profileCached: cached, brokerInProcess };
}

/** Cuts for `stages` equal nodes without --auto: dispatcher.balanceBy over the cached profile (time), FLOPs or parameters. */
export function defaultCuts(flat: FlatModel, config: DeferConfig, backend: string, stages: number, progress?: (l: string) => void): Promise<string[]> {
  return chooseCuts(flat, stages, config.dispatcher.balanceBy, { modelSpec: config.dispatcher.model, backend, cacheDir: config.planner.cacheDir, refresh: config.planner.refresh, progress });
}

export interface SplitRequest {
  config: DeferConfig;
  backend: string;
  flat: FlatModel;
  /** node ids; with planner.auto the planner may reorder them */
  ids: string[];
  /** with planner.auto and no planner.speeds: each node's calibration */
  caps?: Map<string, Capabilities>;
  /** cuts chosen beforehand (manual or balanced); ignored with planner.auto */
  cuts?: string[];
  progress: (line: string) => void;
  /** the broker runs in this process (defer up): the planner bounds the time per frame by this process's CPU, and its measured CPU is the broker's too */
  brokerInProcess?: boolean;
}

export interface Split {
  /** node ids in chain order (with a shape: each stage's first node) */
  order: string[];
  cuts: string[];
  /** the plan, when the planner chose a chain (planner.auto with planner.shape chain) */
  auto?: AutoPlan;
  /** the nodes of each stage with their engines, when the shape planner chose (planner.shape auto, no cuts given) */
  shape?: ShapeMember[][];
  /** that plan, with the nodes' figures it used */
  shaped?: ShapedPlan;
}

export interface ShapedPlan {
  plan: ShapePlan;
  nodes: ShapeNode[];
  profilePath: string;
  profileCached: boolean;
}

/** Does this configuration have the shape planner choose (planner.shape auto, no cuts given)? It then needs the nodes' figures. */
export function shapeAuto(config: DeferConfig): boolean {
  return config.planner.shape === 'auto' && config.dispatcher.cut.length === 0;
}

/** Does planning need the nodes' figures (their calibrations, or planner.speeds) before it can choose? */
export function needsNodeFigures(config: DeferConfig): boolean {
  return config.planner.auto || shapeAuto(config);
}

/** The shape planner over `ids` (docs/planner.md, Shapes): stages, cuts, replicas, engines, idle nodes. */
export async function planShapeFor(
  flat: FlatModel,
  config: DeferConfig,
  backend: string,
  ids: string[],
  caps?: Map<string, Capabilities>,
  progress: (l: string) => void = (l) => log.info(l),
  brokerInProcess = false,
): Promise<ShapedPlan> {
  const { profile, path, cached, cost } = await profiledCost(flat, config, backend, caps, progress);
  const given = config.node.workers > 0 ? config.node.workers : undefined;
  const nodes: ShapeNode[] = planNodes(ids, config.planner, profile, caps).map((n) => ({ ...n, maxWorkers: caps?.get(n.id)?.workers ?? given }));
  const opts = planOptions(config, localRelayHost(config.broker.url), brokerInProcess);
  const replicas = config.planner.replicas.length ? config.planner.replicas : undefined;
  const plan = withBatches(planShape(cost, nodes, { dispatcher: opts.dispatcher, relay: opts.relay, replicas }), nodes, config.dispatcher.batch);
  if (!plan.exhaustive) {
    progress(
      `the shape search stopped at its limit (${plan.shapesTried} shapes for ${nodes.length} nodes): the shape is the best found, not proven the best; --replicas (nodes per stage) narrows the search`,
    );
  }
  return { plan, nodes, profilePath: path, profileCached: cached };
}

/** One line for a shape plan: its shape, cuts, prediction and bottleneck. */
export function describeShape(p: ShapePlan): string {
  const engines = p.stages.reduce((n, s) => n + s.members.reduce((w, m) => w + m.workers, 0), 0);
  return `shape ${shapeLine(p.stages)} (${count(p.stages.length, 'stage')}, ${count(engines, 'engine')}${p.idle.length ? `; idle: ${p.idle.join(', ')}` : ''}; ${describeBatches(p.stages)}), cuts ${p.cuts.join(', ') || '(none)'}; predicted ${p.predictedThroughputFps.toFixed(2)} frames/s, ${(p.predictedThroughputFps / p.singleFps).toFixed(2)}x one engine (bottleneck: ${p.bottleneck})`;
}

/** The cuts given (--cut, dispatcher.cut) or, without them, balanced for `stages` equal nodes. */
export function givenOrBalancedCuts(flat: FlatModel, config: DeferConfig, backend: string, stages: number, progress?: (l: string) => void): Promise<string[]> {
  return config.dispatcher.cut.length ? Promise.resolve(config.dispatcher.cut) : defaultCuts(flat, config, backend, stages, progress);
}

/** The cuts and node order: planned (--auto), given (--cut), or balanced for equal nodes. */
export async function chooseSplit(r: SplitRequest): Promise<Split> {
  const { config, flat, progress } = r;
  if (config.planner.replicas.length && !shapeAuto(config)) throw new DeferError('E_CONFIG', '--replicas (planner.replicas) needs the shape planner: leave out --cut and --shape chain');
  if (shapeAuto(config) && !r.cuts) {
    if (config.planner.replan) throw new DeferError('E_CONFIG', '--replan re-plans a chain: add --shape chain (or drop --replan)');
    const shaped = await planShapeFor(flat, config, r.backend, r.ids, r.caps, progress, r.brokerInProcess);
    const { plan } = shaped;
    progress(`plan: ${describeShape(plan)}`);
    return { order: plan.stages.map((s) => s.members[0].node), cuts: plan.cuts, shape: plan.stages.map((s) => s.members), shaped };
  }
  if (config.planner.auto) {
    if (config.dispatcher.cut.length) throw new DeferError('E_CONFIG', '--auto chooses the cuts: leave --cut (dispatcher.cut) out, or drop --auto');
    const auto = await autoPlan(flat, config, r.backend, r.ids, r.caps, progress, r.brokerInProcess);
    const { cuts, order } = auto.plan;
    progress(`plan: cuts ${cuts.join(', ') || '(none)'} on ${order.join(' -> ')}; predicted ${auto.plan.predictedThroughputFps.toFixed(2)} frames/s (bottleneck: ${auto.plan.bottleneck})`);
    return { cuts, order, auto };
  }
  const cuts = r.cuts ?? (await givenOrBalancedCuts(flat, config, r.backend, r.ids.length, progress));
  if (cuts.length + 1 !== r.ids.length) {
    throw new DeferError('E_CONFIG', `${cuts.length} cuts make ${cuts.length + 1} stages, but there are ${r.ids.length} nodes: give ${r.ids.length - 1} cuts, or leave --cut out to have them chosen`);
  }
  return { cuts, order: r.ids };
}

/**
 * A second plan from a run's measured figures: each node's time factor
 * corrected by measured / predicted, and, when the broker and dispatcher ran
 * in the measuring process (`relayCpuMs` measured there), their CPU estimate too.
 */
export function replanFromMeasured(auto: AutoPlan, check: PredictionCheck, config: DeferConfig, measuredRelayCpuMs?: number): { plan: ChainPlan; nodes: PlanNode[] } {
  const nodesInOrder = auto.plan.order.map((id) => auto.nodes.find((n) => n.id === id)!);
  const nodes = remeasuredNodes(nodesInOrder, check.stages);
  const opts = planOptions(config, localRelayHost(config.broker.url), auto.brokerInProcess);
  if (opts.relay && measuredRelayCpuMs !== undefined && auto.plan.relayCpuMs > 0) {
    const k = measuredRelayCpuMs / auto.plan.relayCpuMs;
    opts.relay = { ...opts.relay, msPerMB: opts.relay.msPerMB * k, msPerMessage: opts.relay.msPerMessage * k };
  }
  return { plan: planPipeline(auto.cost, nodes, opts), nodes };
}
