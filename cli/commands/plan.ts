import { fetchCapabilities } from '../../dispatcher/deploy/node-watch.js';
import { DeferError } from '../../lib/core/errors.js';
import { initEngine } from '../../lib/model/engine.js';
import { loadFlatModel } from '../../lib/model/model-source.js';
import { brokerAuth } from '../../lib/mqtt/connect.js';
import { autoPlan, givenOrBalancedCuts, planShapeFor, shapeAuto } from '../../lib/planning/auto-plan.js';
import { parseCommand } from '../args.js';
import type { Command } from '../command.js';
import { BALANCE, BATCH, CUT, MODEL, PLANNER, SEED, WORKERS } from '../flags.js';
import { autoPlanReport, formatAutoPlan, formatCutList, formatPlan, formatShapePlan, planReport, shapePlanReport } from '../plan-table.js';

/** `defer plan`. */
export const planCommand: Command = {
  usage:
    'defer plan --model M [--cut a,b,c | --stages K [--balance-by memory] | --auto --nodes n1,n2 [--speeds 1,0.5] [--workers W] [--batch B] [--replicas 2,1] [--shape chain]] [--list-cuts] [--json]',
  about:
    'Show how a model splits into stages: layers, parameters, weight bytes, FLOPs, output shape and bytes, and estimated memory per stage; with --auto, the shape the planner chooses (stages, cuts, replicas, workers; with --shape chain, cuts and node order), with predicted times.',
  flags: {
    model: MODEL,
    cut: CUT,
    nodes: { key: 'dispatcher.nodes', type: 'string', list: true, help: 'node ids (with --auto): online nodes, or as many as --speeds' },
    ...PLANNER,
    batch: BATCH,
    workers: { ...WORKERS, help: 'with --speeds: the most engines each node may run (default 1); calibrated nodes report theirs' },
    stages: { type: 'string', help: 'number of balanced stages, when no --cut is given (default 2)' },
    'balance-by': BALANCE,
    'list-cuts': { type: 'boolean', help: 'list every valid cut point' },
    json: { type: 'boolean', help: 'print JSON' },
    seed: SEED,
  },
  async run(argv) {
    const { config, flags } = parseCommand(argv, this.flags);
    const backend = await initEngine(config.backend);
    const flat = await loadFlatModel(config.dispatcher.model, config.dispatcher.seed);
    const stages = flags.stages === undefined ? 2 : Number(flags.stages);
    if (!Number.isInteger(stages) || stages < 1) throw new DeferError('E_CONFIG', `--stages must be a positive integer, got '${String(flags.stages)}'`);
    if (config.planner.auto) {
      const { speeds } = config.planner;
      let ids = config.dispatcher.nodes;
      if (!ids.length && speeds.length) ids = speeds.map((_, i) => `n${i + 1}`);
      if (!ids.length && flags.stages !== undefined) {
        ids = Array.from({ length: stages }, (_, i) => `n${i + 1}`);
        config.planner.speeds = ids.map(() => 1);
      }
      if (!ids.length)
        throw new DeferError(
          'E_CONFIG',
          'defer plan --auto needs the nodes: --nodes n1,n2 (their calibration is read from the broker), or --speeds 1,0.5 (one per node), or --stages K (K equal nodes)',
        );
      const caps = config.planner.speeds.length ? undefined : await fetchCapabilities(config.broker.url, config.pipeline, ids, config.planner.onlineTimeoutMs, brokerAuth(config.broker));
      if (shapeAuto(config)) {
        const shaped = shapePlanReport(config.dispatcher.model, flat, await planShapeFor(flat, config, backend, ids, caps));
        process.stdout.write(flags.json ? JSON.stringify(shaped) + '\n' : formatShapePlan(shaped));
        flat.dispose();
        return;
      }
      const report = autoPlanReport(config.dispatcher.model, flat, await autoPlan(flat, config, backend, ids, caps));
      process.stdout.write(flags.json ? JSON.stringify(report) + '\n' : formatAutoPlan(report));
      flat.dispose();
      return;
    }
    const cuts = await givenOrBalancedCuts(flat, config, backend, stages);
    const report = planReport(config.dispatcher.model, flat, flat.spans(cuts));
    if (flags.json) process.stdout.write(JSON.stringify(report) + '\n');
    else {
      process.stdout.write(formatPlan(report));
      if (flags['list-cuts']) process.stdout.write(formatCutList(report));
    }
    flat.dispose();
  },
};
