/**
 * `defer up`: a whole local deployment on one machine. An embedded broker,
 * N edge nodes as child processes, a dispatcher, and a stream of synthetic
 * frames; then a summary, with the same model run in this process as the
 * baseline and the reference for maxAbsDiffVsLocal.
 */
import { startBroker } from '../broker/broker.js';
import type { DeferConfig } from '../config/schema.js';
import { autoPrecision } from '../dispatcher/deploy/precision-auto.js';
import { Dispatcher } from '../dispatcher/dispatcher.js';
import { type Observer, startObserver } from '../dispatcher/observe/observer.js';
import { deployAndRun } from '../dispatcher/run/deploy-and-run.js';
import { formatSummary, type RunSummary } from '../dispatcher/run/measure-run.js';
import { prepareServing, servingBanner, startServing } from '../dispatcher/serving/start-serving.js';
import { DeferError } from '../lib/core/errors.js';
import { log } from '../lib/core/log.js';
import { initEngine } from '../lib/model/engine.js';
import type { FlatModel } from '../lib/model/flat-model.js';
import { loadFlatModel } from '../lib/model/model-source.js';
import { chooseSplit, defaultCuts, modelProfile, needsNodeFigures } from '../lib/planning/auto-plan.js';
import type { Capabilities, ServeMetrics } from '../lib/protocol/index.js';
import { printEvents } from './event-output.js';
import { nodeEnvironment } from './node-environment.js';
import { LEAN_V8_FLAGS, NodeProcesses } from './node-processes.js';

export interface UpOptions {
  /** where node processes run and which broker URL they use (network emulation); default: here, the broker's URL */
  nodeNetwork?: { brokerUrlFor(id: string, brokerPort: number): string; commandPrefix(id: string): string[] };
  /** called with each progress line; default: stderr */
  progress?: (line: string) => void;
}

export interface Local {
  config: DeferConfig;
  backend: string;
  brokerUrl: string;
  dispatcher: Dispatcher;
  flat: FlatModel;
  ids: string[];
  caps?: Map<string, Capabilities>;
  cuts?: string[];
  progress: (line: string) => void;
  /** the live page and metrics, with --http-port */
  observer?: Observer;
}

/**
 * Start the embedded broker, the model (profiled or cut before any node starts, so that node
 * start-up does not disturb the timing), the node processes and the dispatcher; run `body`; then
 * close everything, also when `body` fails or a node process dies. A signal runs `onSignal`
 * (serve: a clean stop) or, by default, closes everything and exits 130.
 */
export async function withLocalDeployment<T>(config: DeferConfig, opts: UpOptions, body: (l: Local) => Promise<T>, onSignal?: () => void): Promise<T> {
  const progress = opts.progress ?? ((l: string) => log.info(l));
  const slow = config.up.slowdown;
  if (slow.some((f) => !(f >= 1))) throw new DeferError('E_CONFIG', `up.slowdown: every factor must be >= 1, got ${slow.join(',')}`);
  // emulated small devices, or a fleet (which decides the number of nodes): checked before anything starts (root,
  // cgroups, namespaces, limits)
  const env = await nodeEnvironment(config, progress);
  config = env.config;
  if (slow.length > config.up.nodes) {
    await env.close();
    throw new DeferError('E_CONFIG', `up.slowdown has ${slow.length} values for ${config.up.nodes} nodes`);
  }
  const { cgroups } = env;
  const network = opts.nodeNetwork ?? env.network;
  const backend = await initEngine(config.backend).catch(async (err) => {
    await env.close();
    throw err;
  });
  const broker = await startBroker({ host: config.broker.host, port: config.broker.port, maxPacketBytes: config.broker.maxPacketBytes });
  progress(`broker listening at ${broker.url}`);
  config = { ...config, broker: { ...config.broker, url: broker.url } };
  const ids = Array.from({ length: config.up.nodes }, (_, i) => `n${i + 1}`);
  const standby = Array.from({ length: config.up.standby }, (_, i) => `s${i + 1}`);
  const nodes = new NodeProcesses({
    ids: [...ids, ...standby],
    brokerUrl: broker.url,
    pipeline: config.pipeline,
    backend,
    logLevel: config.logLevel === 'debug' ? 'debug' : 'warn',
    argsFor: (id) => {
      const f = slow[ids.indexOf(id)];
      return [
        ...(f && f !== 1 ? ['--slowdown', String(f)] : []),
        ...(config.node.workers > 0 ? ['--workers', String(config.node.workers)] : []),
        // said outright: a node in a network namespace of its own (the bench, a fleet) cannot read its cgroup's files
        ...(env.limitsOf(id).memoryBytes !== undefined ? ['--memory-limit', String(env.limitsOf(id).memoryBytes)] : []),
        ...(env.limitsOf(id).cpus !== undefined ? ['--cpus', String(env.limitsOf(id).cpus)] : []),
      ];
    },
    ...(network ? { brokerUrlFor: (id: string) => network.brokerUrlFor(id, broker.port) } : {}),
    ...(ids.some((id) => env.limitsOf(id).memoryBytes !== undefined) ? { v8Flags: LEAN_V8_FLAGS } : {}),
    ...(cgroups || network ? { commandPrefix: (id: string) => [...(cgroups?.prepare(id) ?? []), ...(network?.commandPrefix(id) ?? [])] } : {}),
  });
  /** how node `id` ended, in words: its exit code, and an out-of-memory kill where its cgroup saw one */
  const exitText = (id: string, code: number | null) => {
    const why = cgroups?.exitReason(id);
    return `exited (code ${code})${why ? `: ${why}` : ''}`;
  };
  const dispatcher = new Dispatcher({
    ...config.dispatcher,
    standby: [...config.dispatcher.standby, ...standby],
    chooseCuts: (f, n) => defaultCuts(f, config, backend, n, progress),
    choosePrecision: autoPrecision(config, backend, ids, progress),
    brokerUrl: broker.url,
    pipeline: config.pipeline,
  });
  printEvents(dispatcher, config.up.json);
  env.scheduleChanges(dispatcher, progress);
  let stopping = false;
  let observer: Observer | undefined;
  const cleanup = async () => {
    await observer?.close().catch(() => undefined);
    await dispatcher.close().catch(() => undefined);
    await nodes.stop();
    await env.close();
    await broker.close();
  };
  const signalled = () => {
    if (onSignal) return onSignal();
    if (stopping) return;
    stopping = true;
    progress('stopping (signal)');
    void cleanup().then(() => process.exit(130));
  };
  process.on('SIGINT', signalled);
  process.on('SIGTERM', signalled);
  let flat: FlatModel | undefined;
  try {
    progress(`loading model ${config.dispatcher.model} (backend ${backend})`);
    flat = await loadFlatModel(config.dispatcher.model, config.dispatcher.seed);
    let cuts: string[] | undefined;
    if (needsNodeFigures(config)) await modelProfile(flat, config, backend, progress);
    else {
      ({ cuts } = await chooseSplit({ config, backend, flat, ids, progress }));
      progress(`cuts: ${cuts.join(', ') || '(none: one stage)'}`);
    }
    await dispatcher.connect();
    if (config.http.port >= 0) {
      observer = await startObserver(dispatcher, { host: config.http.host, port: config.http.port, standby });
      progress(`live page: ${observer.url}/  (Prometheus metrics: ${observer.url}/metrics)`);
    }
    let caps: Map<string, Capabilities> | undefined;
    if (needsNodeFigures(config) && !config.planner.speeds.length) {
      // one at a time, so that each node's calibration runs alone
      for (const id of ids) {
        nodes.start([id]);
        const exited = nodes.exitOf(id).then((code) => {
          throw new DeferError('E_DEPLOY', `edge node ${id} ${exitText(id, code)} during its start; see its log lines above`);
        });
        await Promise.race([dispatcher.nodes.waitCapabilities([id], config.planner.onlineTimeoutMs), exited]);
      }
      caps = await dispatcher.nodes.waitCapabilities(ids, config.planner.onlineTimeoutMs);
      progress(
        `started ${ids.length} edge-node processes, one at a time: ${ids.map((id) => `${id} (calibration ${caps!.get(id)!.calibrationMs.toFixed(1)} ms, CPU ${caps!.get(id)!.calibrationCpuMs.toFixed(1)} ms${caps!.get(id)!.cores < 1 ? `, ${caps!.get(id)!.cores} cores` : ''})`).join(', ')}`,
      );
      nodes.start(standby);
    } else {
      nodes.start();
      progress(`started ${ids.length} edge-node processes: ${ids.join(', ')}`);
    }
    if (standby.length) progress(`started ${standby.length} standby node processes: ${standby.join(', ')}`);
    // a node that dies is the supervisor's to mend (standby, merge); without either, the run stops
    const crashed = nodes.firstExit().then(({ id, code }) => {
      if (stopping) return new Promise<never>(() => undefined);
      // a stage that does not fit its device's memory would not fit a standby's or a neighbour's either
      if (cgroups?.exitReason(id))
        throw new DeferError(
          'E_DEPLOY',
          `edge node ${id} ${exitText(id, code)}: its stage does not fit ${config.up.fleet ? `its device's memory (fleet class ${env.fleet?.devices.find((d) => d.id === id)?.class})` : '--node-memory'}; give more, or more nodes`,
        );
      if (config.dispatcher.onNodeFailure !== 'off' || standby.length) {
        progress(`edge node ${id} ${exitText(id, code)}; the dispatcher mends the chain`);
        return new Promise<never>(() => undefined);
      }
      throw new DeferError('E_DEPLOY', `edge node ${id} exited early (code ${code}); see its log lines above`);
    });
    const work = body({ config, backend, brokerUrl: broker.url, dispatcher, flat, ids, caps, cuts, progress, observer });
    const result = await Promise.race([work, crashed.then(() => work)]);
    stopping = true;
    return result;
  } finally {
    stopping = true;
    process.off('SIGINT', signalled);
    process.off('SIGTERM', signalled);
    flat?.dispose();
    await cleanup();
  }
}

/** `defer up`: deploy, stream synthetic frames, summarise. */
export async function runUp(config: DeferConfig, opts: UpOptions = {}): Promise<RunSummary> {
  const t0 = performance.now();
  const summary = await withLocalDeployment(config, opts, (l) =>
    deployAndRun(l.dispatcher, { config: l.config, backend: l.backend, flat: l.flat, ids: l.ids, caps: l.caps, cuts: l.cuts, progress: l.progress, brokerInProcess: true }),
  );
  (opts.progress ?? ((l: string) => log.info(l)))(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return summary;
}

/**
 * `defer up --serve`: deploy, then serve devices until SIGINT or SIGTERM (or `opts.stop`);
 * the banner (broker URL, topics) goes to `onReady`. Resolves with the final counters after
 * everything it started has closed.
 */
export async function serveUp(config: DeferConfig, opts: UpOptions & { onReady?: (banner: string) => void; stop?: Promise<void> } = {}): Promise<ServeMetrics> {
  let stop!: () => void;
  const stopped = new Promise<void>((r) => (stop = r));
  void opts.stop?.then(() => stop());
  const progress = opts.progress ?? ((l: string) => log.info(l));
  let signals = 0;
  return withLocalDeployment(
    config,
    opts,
    async (l) => {
      const req = { config: l.config, backend: l.backend, flat: l.flat, ids: l.ids, caps: l.caps, cuts: l.cuts, progress: l.progress, brokerInProcess: true };
      const { order, cuts, shape } = await chooseSplit(req);
      await prepareServing(l.dispatcher, l.flat, l.config);
      const deployment = await l.dispatcher.deploy(l.flat, order, cuts, shape);
      const serving = await startServing(l.dispatcher, deployment, l.flat, l.config);
      l.observer?.serving(serving.server);
      (opts.onReady ?? ((b: string) => process.stdout.write(b + '\n')))(servingBanner(l.brokerUrl, l.dispatcher, serving));
      await stopped;
      const m = await serving.server.close();
      progress(`served ${m.served} of ${m.received} frames (dropped ${m.dropped}, rejected ${m.rejected}, bad ${m.bad}, failed ${m.failed}); closing`);
      return m;
    },
    () => {
      if (signals++ > 0) {
        progress('second signal: exiting now');
        process.exit(130);
      }
      progress('stopping (signal): finishing the frames in flight');
      stop();
    },
  );
}

export function formatServeMetrics(m: ServeMetrics): string {
  const bad = Object.entries(m.badByKind)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  return [
    `served ${m.served} of ${m.received} frames from ${m.devices} device(s), policy ${m.policy}: dropped ${m.dropped}, rejected ${m.rejected}, bad ${m.bad}${bad ? ` (${bad})` : ''}, failed ${m.failed}`,
    ...Object.entries(m.perDevice).map(([d, c]) => `  ${d}: received ${c.received}, served ${c.served}, dropped ${c.dropped}, rejected ${c.rejected}, bad ${c.bad}, failed ${c.failed}`),
  ].join('\n');
}

export function printSummary(summary: RunSummary, json: boolean): void {
  if (json) process.stdout.write(JSON.stringify(summary) + '\n');
  else process.stdout.write(formatSummary(summary) + '\n');
}
