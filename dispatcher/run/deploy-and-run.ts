/**
 * Deploy and measure, as `defer up` and `defer dispatch` do: cuts given or
 * planned, deployment, synthetic frames through the chain and through the
 * whole model here, a summary; with a plan, measured against predicted, and
 * with --replan a second plan from the measured figures, redeployed and run.
 */
import { chooseSplit, replanFromMeasured, type SplitRequest } from '../../lib/planning/auto-plan.js';
import { checkPlan } from '../../lib/planning/plan-check.js';
import { deploymentNodes } from '../deploy/deployment-package.js';
import type { Dispatcher } from '../dispatcher.js';
import { checkShape, type LocalRun, type RunSummary, runChain, runLocal, summarise, warmChain } from './measure-run.js';
import { runFramesFor } from './run-frames.js';

export interface RunRequest extends SplitRequest {
  /** carry on with the deployment already running on the nodes when it is this split (a restarted dispatcher) */
  adopt?: boolean;
}

export async function deployAndRun(d: Dispatcher, r: RunRequest): Promise<RunSummary> {
  const { config, flat, progress } = r;
  const { auto, order, cuts, shape, shaped } = await chooseSplit(r);
  const { frames, image } = await runFramesFor(flat, config);
  // pixel frames: stage 0 normalises them (its assignment carries the image input)
  if (image) d.useImageInput(image);
  let local: LocalRun | null = null;
  let adoptable = r.adopt === true;
  const run = async (nodes: string[], at: string[], label: string): Promise<RunSummary> => {
    const deployment = await d.adoptOrDeploy(flat, nodes, at, adoptable, label === '' ? shape : undefined);
    adoptable = false;
    // one window of frames first, untimed (see warmChain)
    await warmChain(deployment, frames);
    d.events.emit({ type: 'stream-start', deployment: deployment.id, frames: frames.length, nodes: deploymentNodes(deployment.package), replanned: label !== '' });
    let lastPct = -1;
    const chain = await runChain(deployment, frames, (done) => {
      const pct = Math.floor((done / frames.length) * 10) * 10;
      if (pct !== lastPct) {
        lastPct = pct;
        progress(`  results: ${done}/${frames.length}`);
      }
    });
    // each node's next heartbeat covers the whole run (its peak memory)
    await d.nodes.freshHeartbeats(deploymentNodes(deployment.package), Date.now());
    // the baseline after the chain's run: the chain's figures are of a dispatcher that has not run the model itself
    // (an A/B on 2026-11-27 found no lasting effect of that run within this machine's noise, so either order is fair)
    if (config.up.baseline && !local) {
      progress(`single-process baseline: ${frames.length} frames through the whole model here`);
      local = await runLocal(flat, frames, image);
    }
    return summarise(config.dispatcher.model, r.backend, deployment, frames, chain, local, d.nodes.heartbeats, d.nodes.plainConvolutionNodes());
  };
  const summary = await run(order, cuts, '');
  if (shaped) {
    summary.plannedShape = checkShape(shaped.plan, summary);
  }
  if (!auto) return summary;
  summary.predicted = checkPlan(auto.plan, auto.nodes, summary);
  if (!config.planner.replan) return summary;
  const { plan: second, nodes: measured } = replanFromMeasured(auto, summary.predicted, config, r.brokerInProcess ? summary.dispatcherCpuMsPerFrame : undefined);
  const changed = second.cuts.join() !== cuts.join() || second.order.join() !== order.join();
  progress(
    `replan from measured stage times: cuts ${second.cuts.join(', ')} on ${second.order.join(' -> ')}, predicted ${second.predictedThroughputFps.toFixed(2)} frames/s${changed ? '' : ' (unchanged plan: running it again to check the prediction)'}`,
  );
  const again = await run(second.order, second.cuts, ' (replanned)');
  again.predicted = checkPlan(second, measured, again);
  summary.replanned = { changed, summary: again };
  return summary;
}
