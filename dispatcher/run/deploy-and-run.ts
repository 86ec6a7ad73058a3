/**
 * Deploy and measure, as `defer up` and `defer dispatch` do: cuts given or
 * planned, deployment, synthetic frames through the chain and through the
 * whole model here, a summary; with a plan, measured against predicted, and
 * with --replan a second plan from the measured figures, redeployed and run.
 */
import type { DeferConfig } from '../../config/schema.js';
import type { Capabilities } from '../../lib/planning/calibrate.js';
import { DeferError } from '../../lib/core/errors.js';
import { syntheticFrames } from '../../lib/model/synthetic-frames.js';
import type { FlatModel } from '../../lib/model/partition.js';
import { remeasuredNodes } from '../../lib/planning/plan-inputs.js';
import { planPipeline } from '../../lib/planning/optimiser.js';
import { type AutoPlan, autoPlan, defaultCuts, checkPlan, formatPlanCheck, localRelayHost, planOptions } from '../../lib/planning/auto-plan.js';
import type { Dispatcher } from '../dispatcher.js';
import { type LocalRun, type RunSummary, runChain, runLocal, summarise } from './measure-run.js';

export interface RunRequest {
  config: DeferConfig;
  backend: string;
  flat: FlatModel;
  /** node ids; with planner.auto the planner may reorder them */
  ids: string[];
  /** with planner.auto and no planner.speeds: each node's calibration */
  caps?: Map<string, Capabilities>;
  /** cuts chosen beforehand (manual or balanced); ignored with planner.auto */
  cuts?: string[];
  /** the broker runs in this process (defer up): its CPU is in the dispatcher's measured CPU */
  brokerInProcess?: boolean;
  /** carry on with the deployment already running on the nodes when it is this split (a restarted dispatcher) */
  adopt?: boolean;
  progress: (line: string) => void;
}

export interface Chosen {
  /** node ids in chain order */
  order: string[];
  cuts: string[];
  auto?: AutoPlan;
}

/** The cuts and node order: planned (--auto), given (--cut), or balanced for equal nodes. */
export async function chooseSplit(r: RunRequest): Promise<Chosen> {
  const { config, flat, progress } = r;
  if (config.planner.auto) {
    if (config.dispatcher.cut.length) throw new DeferError('E_CONFIG', '--auto chooses the cuts: leave --cut (dispatcher.cut) out, or drop --auto');
    const auto = await autoPlan(flat, config, r.backend, r.ids, r.caps, progress);
    const { cuts, order } = auto.plan;
    progress(`plan: cuts ${cuts.join(', ') || '(none)'} on ${order.join(' -> ')}; predicted ${auto.plan.predictedThroughputFps.toFixed(2)} frames/s (bottleneck: ${auto.plan.bottleneck})`);
    return { cuts, order, auto };
  }
  const cuts = r.cuts ?? (config.dispatcher.cut.length ? config.dispatcher.cut : await defaultCuts(flat, config, r.backend, r.ids.length, progress));
  if (cuts.length + 1 !== r.ids.length) {
    throw new DeferError('E_CONFIG', `${cuts.length} cuts make ${cuts.length + 1} stages, but there are ${r.ids.length} nodes: give ${r.ids.length - 1} cuts, or leave --cut out to have them chosen`);
  }
  return { cuts, order: r.ids };
}

export async function deployAndRun(d: Dispatcher, r: RunRequest): Promise<RunSummary> {
  const { config, flat, progress } = r;
  const { auto, order, cuts } = await chooseSplit(r);
  const frames = syntheticFrames(flat.inputShape, config.up.frames, config.dispatcher.seed);
  let local: LocalRun | null = null;
  let adoptable = r.adopt === true;
  const run = async (nodes: string[], at: string[], label: string): Promise<RunSummary> => {
    const deployment = await d.adoptOrDeploy(flat, nodes, at, adoptable);
    adoptable = false;
    if (config.up.baseline && !local) {
      progress(`single-process baseline: ${frames.length} frames through the whole model here`);
      local = await runLocal(flat.model, frames);
    }
    progress(`streaming ${frames.length} frames through ${nodes.length} nodes${label}`);
    let lastPct = -1;
    const chain = await runChain(deployment, frames, (done) => {
      const pct = Math.floor((done / frames.length) * 10) * 10;
      if (pct !== lastPct) {
        lastPct = pct;
        progress(`  results: ${done}/${frames.length}`);
      }
    });
    return summarise(config.dispatcher.model, r.backend, deployment, frames, chain, local);
  };
  const summary = await run(order, cuts, '');
  if (!auto) return summary;
  summary.predicted = checkPlan(auto.plan, auto.nodes, summary);
  progress(formatPlanCheck(summary.predicted));
  if (!config.planner.replan) return summary;
  // Re-plan: each node's time factor corrected by measured / predicted
  const nodesInOrder = auto.plan.order.map((id) => auto!.nodes.find((n) => n.id === id)!);
  const measured = remeasuredNodes(nodesInOrder, summary.predicted.stages);
  const opts = planOptions(config, localRelayHost(config.broker.url));
  if (opts.relay && r.brokerInProcess && auto.plan.relayCpuMs > 0) {
    // the broker and dispatcher CPU measured here corrects their estimate too
    const k = summary.dispatcherCpuMsPerFrame / auto.plan.relayCpuMs;
    opts.relay = { ...opts.relay, msPerMB: opts.relay.msPerMB * k, msPerMessage: opts.relay.msPerMessage * k };
  }
  const second = planPipeline(auto.cost, measured, opts);
  const changed = second.cuts.join() !== cuts.join() || second.order.join() !== order.join();
  progress(`replan from measured stage times: cuts ${second.cuts.join(', ')} on ${second.order.join(' -> ')}, predicted ${second.predictedThroughputFps.toFixed(2)} frames/s${changed ? '' : ' (unchanged plan: running it again to check the prediction)'}`);
  const again = await run(second.order, second.cuts, ' (replanned)');
  again.predicted = checkPlan(second, measured, again);
  progress(formatPlanCheck(again.predicted));
  summary.replanned = { changed, summary: again };
  return summary;
}
