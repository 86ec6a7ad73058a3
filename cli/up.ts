/**
 * `defer up`: a whole local deployment on one machine. An embedded broker,
 * N edge nodes as child processes, a dispatcher, and a stream of synthetic
 * frames; then a summary, with the same model run in this process as the
 * baseline and the reference for maxAbsDiffVsLocal.
 */
import { startBroker } from '../broker/broker.js';
import type { DeferConfig } from '../config/schema.js';
import { Dispatcher } from '../dispatcher/dispatcher.js';
import { defaultCuts, modelProfile } from '../dispatcher/auto-plan.js';
import { deployAndRun } from '../dispatcher/run-deployment.js';
import { type RunSummary, formatSummary } from '../dispatcher/run-frames.js';
import type { Capabilities } from '../lib/calibrate.js';
import { initEngine } from '../lib/engine.js';
import { DeferError } from '../lib/errors.js';
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
  config = { ...config, broker: { ...config.broker, url: broker.url } };
  const ids = Array.from({ length: config.up.nodes }, (_, i) => `n${i + 1}`);
  const slow = config.up.slowdown;
  if (slow.length > ids.length) throw new DeferError('E_CONFIG', `up.slowdown has ${slow.length} values for ${ids.length} nodes`);
  if (slow.some((f) => !(f >= 1))) throw new DeferError('E_CONFIG', `up.slowdown: every factor must be >= 1, got ${slow.join(',')}`);
  const nodes = new NodeProcesses({
    ids,
    brokerUrl: broker.url,
    pipeline: config.pipeline,
    backend,
    logLevel: config.logLevel === 'debug' ? 'debug' : 'warn',
    argsFor: (id) => {
      const f = slow[ids.indexOf(id)];
      return f && f !== 1 ? ['--slowdown', String(f)] : [];
    },
  });
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
    // Model, profile and cuts first: profiling times the model here, so the node processes must not be starting meanwhile.
    progress(`loading model ${config.dispatcher.model} (backend ${backend})`);
    const flat = await loadFlatModel(config.dispatcher.model, config.dispatcher.seed);
    let cuts: string[] | undefined;
    if (config.planner.auto) await modelProfile(flat, config, backend, progress);
    else {
      cuts = config.dispatcher.cut.length ? config.dispatcher.cut : await defaultCuts(flat, config, backend, ids.length, progress);
      if (cuts.length + 1 !== ids.length) {
        throw new DeferError('E_CONFIG', `${cuts.length} cuts make ${cuts.length + 1} stages, but --nodes is ${ids.length}: give ${ids.length - 1} cuts, or leave --cut out to have them chosen`);
      }
      progress(`cuts: ${cuts.join(', ') || '(none: one stage)'}`);
    }
    await dispatcher.connect();
    let caps: Map<string, Capabilities> | undefined;
    if (config.planner.auto && !config.planner.speeds.length) {
      // one at a time, so that each node's calibration runs alone
      for (const id of ids) {
        nodes.start([id]);
        const exited = nodes.exitOf(id).then((code) => {
          throw new DeferError('E_DEPLOY', `edge node ${id} exited during its start (code ${code}); see its log lines above`);
        });
        await Promise.race([dispatcher.nodes.waitCapabilities([id], config.planner.onlineTimeoutMs), exited]);
      }
      caps = await dispatcher.nodes.waitCapabilities(ids, config.planner.onlineTimeoutMs);
      progress(`started ${ids.length} edge-node processes, one at a time: ${ids.map((id) => `${id} (calibration ${caps!.get(id)!.calibrationMs.toFixed(1)} ms)`).join(', ')}`);
    } else {
      nodes.start();
      progress(`started ${ids.length} edge-node processes: ${ids.join(', ')}`);
    }
    const crashed = nodes.firstExit().then(({ id, code }) => {
      if (!stopping) throw new DeferError('E_DEPLOY', `edge node ${id} exited early (code ${code}); see its log lines above`);
    });
    const work = deployAndRun(dispatcher, { config, backend, flat, ids, caps, cuts, progress, brokerInProcess: true }).finally(() => flat.model.dispose());
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
