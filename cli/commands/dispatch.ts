import type { StageMember } from '../../dispatcher/deploy/deployment-package.js';
import { autoPrecision } from '../../dispatcher/deploy/precision-auto.js';
import { Dispatcher } from '../../dispatcher/dispatcher.js';
import { startObserver } from '../../dispatcher/observe/observer.js';
import { deployAndRun } from '../../dispatcher/run/deploy-and-run.js';
import { prepareServing, servingBanner, startServing } from '../../dispatcher/serving/start-serving.js';
import { DeferError } from '../../lib/core/errors.js';
import { log } from '../../lib/core/log.js';
import { initEngine } from '../../lib/model/engine.js';
import { loadFlatModel } from '../../lib/model/model-source.js';
import { brokerAuth } from '../../lib/mqtt/connect.js';
import { chooseSplit, defaultCuts, needsNodeFigures } from '../../lib/planning/auto-plan.js';
import { parseCommand } from '../args.js';
import type { Command } from '../command.js';
import { printEvents, waitingFor } from '../event-output.js';
import { BALANCE, BATCH, CUT, FLOAT_FRAMES, FRAMES, HTTP, JSON_FLAG, MODEL, NO_BASELINE, ON_FAILURE, PLANNER, PRECISION, REPLAN, SEED, SERVE } from '../flags.js';
import { waitForSignal } from '../process-input.js';
import { formatServeMetrics, printSummary } from '../up.js';

/** `defer dispatch`. */
export const dispatchCommand: Command = {
  usage: 'defer dispatch --model M --nodes n1,n2,n3 [--cut a,b | --auto [--replan]] [--batch B] [--frames F | --serve] [--json]',
  about: 'Deploy a model onto running edge nodes, wait until they are ready, then stream F synthetic frames (0: none) and print a summary, or serve devices until SIGINT or SIGTERM (--serve).',
  flags: {
    model: MODEL,
    nodes: { key: 'dispatcher.nodes', type: 'string', list: true, help: 'node ids: the nodes the planner may use (with --cut or --shape chain: one per stage, in chain order)' },
    standby: { key: 'dispatcher.standby', type: 'string', list: true, help: 'standby node ids: one takes over the stage of a node that fails' },
    'on-node-failure': ON_FAILURE,
    batch: BATCH,
    cut: CUT,
    'balance-by': BALANCE,
    ...PLANNER,
    replan: REPLAN,
    ...SERVE,
    redeploy: { type: 'boolean', help: 'send the weights again even when the nodes already run this split (default: carry on with it)' },
    frames: FRAMES,
    json: JSON_FLAG,
    'no-baseline': NO_BASELINE,
    'float-frames': FLOAT_FRAMES,
    seed: SEED,
    precision: PRECISION,
    ...HTTP,
  },
  async run(argv) {
    const { config, flags } = parseCommand(argv, this.flags);
    const nodes = config.dispatcher.nodes;
    if (!nodes.length) throw new DeferError('E_CONFIG', 'defer dispatch needs the node ids: --nodes n1,n2,n3 (one per stage, in chain order)');
    const backend = await initEngine(config.backend);
    const flat = await loadFlatModel(config.dispatcher.model, config.dispatcher.seed);
    const progress = (l: string) => log.info(l);
    const d = new Dispatcher({
      ...config.dispatcher,
      ...brokerAuth(config.broker),
      brokerUrl: config.broker.url,
      pipeline: config.pipeline,
      chooseCuts: (f, n) => defaultCuts(f, config, backend, n, progress),
      choosePrecision: autoPrecision(config, backend, nodes, progress),
    });
    printEvents(d, config.up.json);
    await d.connect();
    const observer = config.http.port >= 0 ? await startObserver(d, { host: config.http.host, port: config.http.port, standby: config.dispatcher.standby }) : undefined;
    if (observer) log.info(`live page: ${observer.url}/  (Prometheus metrics: ${observer.url}/metrics)`);
    try {
      const caps =
        needsNodeFigures(config) && !config.planner.speeds.length
          ? await d.nodes.waitCapabilities(nodes, config.planner.onlineTimeoutMs, waitingFor(nodes, config.planner.onlineTimeoutMs, progress))
          : undefined;
      const adopt = flags.redeploy !== true;
      const req = { config, backend, flat, ids: nodes, caps, progress, adopt };
      const deploy = (order: string[], cuts: string[], shape?: StageMember[][]) => d.adoptOrDeploy(flat, order, cuts, adopt, shape);
      if (config.up.serve) {
        const { order, cuts, shape } = await chooseSplit(req);
        await prepareServing(d, flat, config);
        const serving = await startServing(d, await deploy(order, cuts, shape), flat, config);
        observer?.serving(serving.server);
        process.stdout.write(servingBanner(config.broker.url, d, serving) + '\n');
        await waitForSignal();
        log.info('stopping (signal): finishing the frames in flight');
        const m = await serving.server.close();
        process.stdout.write((config.up.json ? JSON.stringify(m) : formatServeMetrics(m)) + '\n');
      } else if (config.up.frames > 0) {
        const s = await deployAndRun(d, req);
        printSummary(s, config.up.json);
        if (s.framesReturned !== s.frames) process.exitCode = 1;
      } else {
        const { order, cuts, shape } = await chooseSplit(req);
        await deploy(order, cuts, shape);
      }
    } finally {
      await observer?.close();
      await d.close();
    }
  },
};
