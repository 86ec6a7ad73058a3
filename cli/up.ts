/**
 * `defer up`: a whole local deployment on one machine. An embedded broker,
 * N edge nodes as child processes, a dispatcher, and a stream of synthetic
 * frames; then a summary, with the same model run in this process as the
 * baseline and the reference for maxAbsDiffVsLocal.
 */
import { startBroker } from '../broker/broker.js';
import type { DeferConfig } from '../config/schema.js';
import { Dispatcher } from '../dispatcher/dispatcher.js';
import { type RunSummary, formatSummary, runChain, runLocal, summarise } from '../dispatcher/run-frames.js';
import { initEngine } from '../lib/engine.js';
import { chooseCuts } from '../lib/choose-cuts.js';
import { DeferError } from '../lib/errors.js';
import { syntheticFrames } from '../lib/frames.js';
import { log } from '../lib/log.js';
import { loadFlatModel } from '../lib/model-source.js';
import { NodeProcesses } from './node-processes.js';

export interface UpOptions {
  /** called with each progress line; default: stderr */
  progress?: (line: string) => void;
}

export async function runUp(config: DeferConfig, opts: UpOptions = {}): Promise<RunSummary> {
  const progress = opts.progress ?? ((l: string) => log.info(l));
  const t0 = performance.now();
  const backend = await initEngine(config.backend);
  const broker = await startBroker({ host: config.broker.host, port: config.broker.port, maxPacketBytes: config.broker.maxPacketBytes });
  progress(`broker listening at ${broker.url}`);
  const ids = Array.from({ length: config.up.nodes }, (_, i) => `n${i + 1}`);
  const nodes = new NodeProcesses({ ids, brokerUrl: broker.url, pipeline: config.pipeline, backend, logLevel: config.logLevel === 'debug' ? 'debug' : 'warn' });
  const dispatcher = new Dispatcher({ ...config.dispatcher, brokerUrl: broker.url, pipeline: config.pipeline, progress });
  let stopping = false;
  const onSignal = () => {
    if (stopping) return;
    stopping = true;
    progress('stopping (signal)');
    void cleanup().then(() => process.exit(130));
  };
  const cleanup = async () => {
    await dispatcher.close().catch(() => undefined);
    await nodes.stop();
    await broker.close();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    // Model and cuts first: profiling times the model here, so the node processes must not be starting meanwhile.
    progress(`loading model ${config.dispatcher.model} (backend ${backend})`);
    const flat = await loadFlatModel(config.dispatcher.model, config.dispatcher.seed);
    const cuts = config.dispatcher.cut.length ? config.dispatcher.cut : await chooseCuts(flat, ids.length, config.dispatcher.balanceBy);
    if (cuts.length + 1 !== ids.length) {
      throw new DeferError('E_CONFIG', `${cuts.length} cuts make ${cuts.length + 1} stages, but --nodes is ${ids.length}: give ${ids.length - 1} cuts, or leave --cut out to have them chosen`);
    }
    progress(`cuts: ${cuts.join(', ') || '(none: one stage)'}`);
    nodes.start();
    progress(`started ${ids.length} edge-node processes: ${ids.join(', ')}`);
    const crashed = nodes.firstExit().then(({ id, code }) => {
      if (!stopping) throw new DeferError('E_DEPLOY', `edge node ${id} exited early (code ${code}); see its log lines above`);
    });
    const work = (async () => {
      await dispatcher.connect();
      const deployment = await dispatcher.deploy(flat, ids, cuts);
      const frames = syntheticFrames(flat.inputShape, config.up.frames, config.dispatcher.seed);
      let local = null;
      if (config.up.baseline) {
        progress(`single-process baseline: ${frames.length} frames through the whole model here`);
        local = await runLocal(flat.model, frames);
      }
      progress(`streaming ${frames.length} frames through ${ids.length} nodes`);
      let lastPct = -1;
      const chain = await runChain(deployment, frames, (done) => {
        const pct = Math.floor((done / frames.length) * 10) * 10;
        if (pct !== lastPct) {
          lastPct = pct;
          progress(`  results: ${done}/${frames.length}`);
        }
      });
      const summary = summarise(config.dispatcher.model, backend, deployment, frames, chain, local);
      flat.model.dispose();
      return summary;
    })();
    const summary = await Promise.race([work, crashed.then(() => work)]);
    stopping = true;
    progress(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    return summary;
  } finally {
    stopping = true;
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
  }
}

export function printSummary(summary: RunSummary, json: boolean): void {
  if (json) process.stdout.write(JSON.stringify(summary) + '\n');
  else process.stdout.write(formatSummary(summary) + '\n');
}
