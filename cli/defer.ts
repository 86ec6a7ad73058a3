#!/usr/bin/env node
/**
 * The `defer` command: broker, node, dispatch, up, plan, model, config.
 */
import { writeFile } from 'node:fs/promises';
import { addUser, loadAuthHook, ROLES, type Role, readUsers } from '../broker/auth.js';
import { startBroker } from '../broker/broker.js';
import { mosquittoAcl } from '../broker/mosquitto-acl.js';
import { DEFAULT_TOPIC_LIMITS } from '../broker/topic-limits.js';
import { configurationDoc } from '../config/schema.js';
import { fetchCapabilities } from '../dispatcher/deploy/node-watch.js';
import { Dispatcher } from '../dispatcher/dispatcher.js';
import { deployAndRun } from '../dispatcher/run/deploy-and-run.js';
import { servingBanner, startServing } from '../dispatcher/serving/start-serving.js';
import { EdgeNode } from '../edge-node/edge-node.js';
import { DeferError, errorMessage } from '../lib/core/errors.js';
import { log, setLogPrefix } from '../lib/core/log.js';
import { initEngine } from '../lib/model/engine.js';
import { saveLayersModel } from '../lib/model/model-io.js';
import { loadFlatModel } from '../lib/model/model-source.js';
import { createZooModel, ZOO_NAMES } from '../lib/model/zoo.js';
import { brokerAuth } from '../lib/mqtt/connect.js';
import { autoPlan, chooseSplit, defaultCuts } from '../lib/planning/auto-plan.js';
import { type FlagSpec, helpText, parseCommand } from './args.js';
import { printEvents } from './event-output.js';
import { autoPlanReport, formatAutoPlan, formatPlan, planReport } from './plan-table.js';
import { formatSensorReport, runSensor, type SensorSource } from './sensor.js';
import { formatServeMetrics, printSummary, runUp, serveUp } from './up.js';

const MODEL: FlagSpec = { key: 'dispatcher.model', type: 'string', help: `zoo name (${ZOO_NAMES.join(', ')}) or model.json path` };
const CUT: FlagSpec = { key: 'dispatcher.cut', type: 'string', list: true, help: 'layers to cut after, comma separated (default: balanced)' };
const BALANCE: FlagSpec = { key: 'dispatcher.balanceBy', type: 'string', help: 'without --cut or --auto: time | flops | params, what the cuts balance' };
const FRAMES: FlagSpec = { key: 'up.frames', type: 'string', number: true, help: 'synthetic frames to stream' };
const JSON_FLAG: FlagSpec = { key: 'up.json', type: 'boolean', help: 'print the summary as one JSON object on stdout' };
const NO_BASELINE: FlagSpec = { key: 'up.baseline', type: 'boolean', negate: true, help: 'skip the single-process baseline' };
const SEED: FlagSpec = { key: 'dispatcher.seed', type: 'string', number: true, help: 'seed of zoo weights and frames' };

const PLANNER: Record<string, FlagSpec> = {
  auto: { key: 'planner.auto', type: 'boolean', help: "choose cuts and node order from the model profile and the nodes' measured speeds" },
  speeds: { key: 'planner.speeds', type: 'string', help: 'relative node speeds instead of their calibration, e.g. 1,0.5,1' },
  memory: { key: 'planner.memoryMb', type: 'string', help: 'memory per node in MB (one per node, or one for all)' },
  bandwidth: { key: 'planner.bandwidthMbps', type: 'string', help: 'link bandwidth per node in Mbit/s (one per node, or one for all)' },
  latency: { key: 'planner.latencyMs', type: 'string', help: 'link latency per node in ms (one per node, or one for all)' },
  order: { key: 'planner.order', type: 'string', help: 'best | given: may the planner reorder the nodes' },
  refresh: { key: 'planner.refresh', type: 'boolean', help: 'profile the model again, ignoring a cached profile' },
};
const SERVE: Record<string, FlagSpec> = {
  serve: { key: 'up.serve', type: 'boolean', help: "serve devices' frames (defer/<pipeline>/frames/<device>) until SIGINT or SIGTERM, instead of synthetic frames" },
  policy: { key: 'serve.policy', type: 'string', help: 'latest | queue | reject: what happens to frames while the chain is full' },
  'queue-size': { key: 'serve.queueSize', type: 'string', number: true, help: 'frames a device may have waiting with --policy queue' },
  labels: { key: 'serve.labels', type: 'string', help: 'labels file (default: metadata.json, labels.json or labels.txt beside the model)' },
  reply: { key: 'serve.reply', type: 'string', help: 'json | cbor (cbor adds the full output tensor)' },
  range: { key: 'serve.range', type: 'string', help: 'auto | 0,1 | -1,1 | 0,255: the value range the model expects for pixels' },
  resize: { key: 'serve.resize', type: 'string', help: 'auto | crop | letterbox | stretch' },
  'top-k': { key: 'serve.topK', type: 'string', number: true, help: 'labels with scores in each result' },
};
const ON_FAILURE: FlagSpec = { key: 'dispatcher.onNodeFailure', type: 'string', help: 'merge | replan | off: what a node failure with no standby up does' };
const REPLAN: FlagSpec = { key: 'planner.replan', type: 'boolean', help: 'after the frames, re-plan from the measured stage times, redeploy and run again' };

interface Command {
  usage: string;
  about: string;
  flags: Record<string, FlagSpec>;
  run(argv: string[]): Promise<void>;
}

const commands: Record<string, Command> = {
  up: {
    usage: 'defer up [--nodes N] [--model M] [--cut a,b | --auto [--replan]] [--frames F | --serve] [--json]',
    about: 'Run a whole local deployment: embedded broker, N edge-node processes, dispatcher; stream synthetic frames and print a summary, or serve devices until SIGINT or SIGTERM (--serve).',
    flags: {
      nodes: { key: 'up.nodes', type: 'string', number: true, help: 'edge-node processes (= stages)' },
      standby: { key: 'up.standby', type: 'string', number: true, help: 'extra edge-node processes kept as standbys (s1, s2, ...)' },
      'on-node-failure': ON_FAILURE,
      model: MODEL,
      cut: CUT,
      'balance-by': BALANCE,
      ...PLANNER,
      replan: REPLAN,
      ...SERVE,
      slowdown: { key: 'up.slowdown', type: 'string', help: 'slow-down factor per node, e.g. 1,2,1 (the second node twice as slow)' },
      frames: FRAMES,
      json: JSON_FLAG,
      'no-baseline': NO_BASELINE,
      port: { key: 'broker.port', type: 'string', number: true, help: 'embedded broker port (0: a free one)' },
      host: { key: 'broker.host', type: 'string', help: 'embedded broker address' },
      'max-in-flight': { key: 'dispatcher.maxInFlight', type: 'string', number: true, help: 'frames in the chain at once (0: 2 x stages)' },
      codec: { key: 'dispatcher.codec', type: 'string', help: 'lz4 | none' },
      seed: SEED,
    },
    async run(argv) {
      const { config } = parseCommand(argv, this.flags);
      if (!config.up.serve && config.up.frames < 1) throw new DeferError('E_CONFIG', 'defer up needs --frames 1 or more (or --serve)');
      if (config.up.serve) {
        const m = await serveUp(config);
        process.stdout.write((config.up.json ? JSON.stringify(m) : formatServeMetrics(m)) + '\n');
        return;
      }
      const summary = await runUp(config);
      printSummary(summary, config.up.json);
      if (summary.framesReturned !== summary.frames) process.exitCode = 1;
    },
  },
  sensor: {
    usage: 'defer sensor --device cam1 [--fps 10] [--count N] (--images DIR | --synthetic | --mnist) [--raw] [--reply json|cbor] [--json]',
    about: 'Simulate a device: publish frames on defer/<pipeline>/frames/<device> at a steady rate and print the results; with --mnist, real digits and the accuracy.',
    flags: {
      device: { type: 'string', help: 'device name (a topic level)' },
      fps: { type: 'string', help: 'frames per second (default 10)' },
      count: { type: 'string', help: 'frames to send; 0: until SIGINT/SIGTERM (with --images: one pass over the folder)' },
      images: { type: 'string', help: 'folder of .jpg/.png/.webp/.gif files to send' },
      synthetic: { type: 'boolean', help: 'send generated 320x240 JPEG photos' },
      mnist: { type: 'boolean', help: 'send MNIST digits (the mnist package) as 28x28 PNG, and report the accuracy' },
      raw: { type: 'boolean', help: 'send bare image bytes (as mosquitto_pub -f would) instead of a CBOR envelope with an id' },
      reply: { key: 'serve.reply', type: 'string', help: 'json | cbor: the result format to ask for (envelope only)' },
      wait: { type: 'string', help: 'seconds to wait for the last results (default 10)' },
      json: { type: 'boolean', help: 'print each result, then the report, as JSON lines' },
      seed: SEED,
    },
    async run(argv) {
      const { config, flags } = parseCommand(argv, this.flags);
      const device = typeof flags.device === 'string' ? flags.device : '';
      if (!device) throw new DeferError('E_CONFIG', 'defer sensor needs a device name: --device cam1');
      const kinds = [flags.images !== undefined, flags.synthetic === true, flags.mnist === true].filter(Boolean).length;
      if (kinds !== 1) throw new DeferError('E_CONFIG', 'defer sensor needs exactly one source: --images DIR, --synthetic or --mnist');
      const num = (name: string, dflt: number, min: number) => {
        const v = flags[name] === undefined ? dflt : Number(flags[name]);
        if (!Number.isFinite(v) || v < min) throw new DeferError('E_CONFIG', `--${name} must be a number >= ${min}, got '${String(flags[name])}'`);
        return v;
      };
      const source: SensorSource = typeof flags.images === 'string' ? { kind: 'images', dir: flags.images } : flags.synthetic ? { kind: 'synthetic', width: 320, height: 240 } : { kind: 'mnist' };
      const count = num('count', source.kind === 'images' ? 0 : 100, 0);
      let stop!: () => void;
      const stopped = new Promise<void>((r) => (stop = r));
      process.once('SIGINT', () => stop());
      process.once('SIGTERM', () => stop());
      const report = await runSensor({
        brokerUrl: config.broker.url,
        pipeline: config.pipeline,
        device,
        fps: num('fps', 10, 0.001),
        count,
        source,
        raw: flags.raw === true,
        reply: config.serve.reply,
        waitMs: num('wait', 10, 0) * 1000,
        json: flags.json === true,
        seed: config.dispatcher.seed,
        stop: stopped,
        auth: brokerAuth(config.broker),
      });
      process.stdout.write((flags.json ? JSON.stringify({ report }) : formatSensorReport(report)) + '\n');
      if (report.unanswered > 0) process.exitCode = 1;
    },
  },
  user: {
    usage:
      'defer user add --file users.json --user NAME --role dispatcher|node|sensor|admin [--id ID]   (password from DEFER_PASSWORD or stdin)\n       defer user acl --file users.json [--out acl]   (the same ACLs as a Mosquitto acl_file)',
    about: "Add or replace a broker user: a salted password hash (scrypt) and a role whose topics it may use; or write the users' ACLs for Mosquitto.",
    flags: {
      file: { type: 'string', help: 'users file (created if missing; mode 600)' },
      user: { type: 'string', help: 'username' },
      role: { type: 'string', help: ROLES.join(' | ') },
      id: { type: 'string', help: 'node or device id the user stands for (default: the username)' },
      out: { type: 'string', help: 'with acl: the file to write (default: stdout)' },
    },
    async run(argv) {
      const { flags, positionals } = parseCommand(argv, this.flags);
      if (positionals[0] === 'acl' && typeof flags.file === 'string') {
        const acl = mosquittoAcl(await readUsers(flags.file));
        if (typeof flags.out === 'string') {
          await writeFile(flags.out, acl);
          log.info(`Mosquitto acl_file for ${flags.file} written to ${flags.out}`);
        } else process.stdout.write(acl);
        return;
      }
      if (positionals[0] !== 'add' || typeof flags.file !== 'string' || typeof flags.user !== 'string' || typeof flags.role !== 'string') throw new DeferError('E_CONFIG', `usage: ${this.usage}`);
      const password = process.env.DEFER_PASSWORD ?? (await readStdinLine());
      await addUser(flags.file, flags.user, flags.role as Role, password, typeof flags.id === 'string' ? flags.id : undefined);
      log.info(`user ${flags.user} (${flags.role}) written to ${flags.file}`);
    },
  },
  broker: {
    usage: 'defer broker [--host H] [--port P]',
    about: 'Run the embedded Aedes MQTT broker until SIGINT or SIGTERM.',
    flags: {
      host: { key: 'broker.host', type: 'string', help: 'address to listen on' },
      port: { key: 'broker.port', type: 'string', number: true, help: 'port (0: a free one)' },
      'max-packet-bytes': { key: 'broker.maxPacketBytes', type: 'string', number: true, help: 'largest packet accepted' },
      users: { key: 'broker.users', type: 'string', help: 'users file (defer user add): clients must log in, per-role ACLs apply' },
      'tls-cert': { key: 'broker.tlsCert', type: 'string', help: 'TLS certificate (PEM): speak mqtts' },
      'tls-key': { key: 'broker.tlsKey', type: 'string', help: 'TLS private key (PEM)' },
      'auth-module': { key: 'broker.authModule', type: 'string', help: 'ES module that checks credentials the users file does not know' },
      persistence: { key: 'broker.persistence', type: 'string', help: 'folder that keeps retained messages and sessions across restarts' },
    },
    async run(argv) {
      const { config } = parseCommand(argv, this.flags);
      const users = config.broker.users ? await readUsers(config.broker.users) : undefined;
      const authHook = config.broker.authModule ? await loadAuthHook(config.broker.authModule) : undefined;
      const b = config.broker;
      const broker = await startBroker({
        host: b.host,
        port: b.port,
        maxPacketBytes: b.maxPacketBytes,
        users,
        authHook,
        topicLimits: { ...DEFAULT_TOPIC_LIMITS, ...b.topicLimits }, // a map given adds to the defaults or overrides them
        persistence: b.persistence || undefined,
        tlsCert: b.tlsCert || undefined,
        tlsKey: b.tlsKey || undefined,
      });
      const auth = [users && `${users.length} users`, authHook && `auth module ${b.authModule}`].filter(Boolean).join(' and ');
      log.info(
        `broker listening at ${broker.url} (max packet ${b.maxPacketBytes} bytes; ${auth ? `${auth}, per-role ACLs` : 'anonymous clients, no ACLs'}${broker.url.startsWith('mqtts') ? ', TLS' : ''}; ${b.persistence ? `persistent store ${b.persistence}` : 'retained messages in memory only'})`,
      );
      if (!auth && !['127.0.0.1', 'localhost', '::1'].includes(config.broker.host))
        log.warn(`broker: listening on ${config.broker.host} without users: anyone who reaches this port can deploy models and read every frame; set broker.users (defer user add)`);
      await waitForSignal();
      await broker.close();
      log.info('broker closed');
    },
  },
  node: {
    usage: 'defer node --id ID [--broker URL]',
    about: 'Run an edge node: take a stage from the dispatcher and compute it, until SIGINT or SIGTERM.',
    flags: {
      id: { key: 'node.id', type: 'string', help: 'node id (unique in the pipeline)' },
      slowdown: { key: 'node.slowdown', type: 'string', number: true, help: 'artificial slow-down factor (>= 1), to test plans on unequal devices' },
      'weight-cache': { key: 'node.weightCache', type: 'string', help: 'folder of the stage weights cache (default ~/.cache/defer/weights; empty string: none)' },
    },
    async run(argv) {
      const { config } = parseCommand(argv, this.flags);
      if (!config.node.id) throw new DeferError('E_CONFIG', 'defer node needs an id: --id n1 (or node.id in the config file, or DEFER_NODE_ID)');
      setLogPrefix(config.node.id);
      const node = new EdgeNode({
        id: config.node.id,
        brokerUrl: config.broker.url,
        pipeline: config.pipeline,
        backend: config.backend,
        maxMessageBytes: config.dispatcher.maxMessageBytes,
        maxQueue: config.node.maxQueue,
        slowdown: config.node.slowdown,
        weightCache: config.node.weightCache || undefined,
        heartbeatMs: config.node.heartbeatMs,
        ...brokerAuth(config.broker),
      });
      await node.start();
      await waitForSignal(process.env.DEFER_EXIT_WITH_PARENT === '1');
      await node.close();
    },
  },
  dispatch: {
    usage: 'defer dispatch --model M --nodes n1,n2,n3 [--cut a,b | --auto [--replan]] [--frames F | --serve] [--json]',
    about: 'Deploy a model onto running edge nodes, wait until they are ready, then stream F synthetic frames (0: none) and print a summary, or serve devices until SIGINT or SIGTERM (--serve).',
    flags: {
      model: MODEL,
      nodes: { key: 'dispatcher.nodes', type: 'string', list: true, help: 'node ids in chain order, one per stage' },
      standby: { key: 'dispatcher.standby', type: 'string', list: true, help: 'standby node ids: one takes over the stage of a node that fails' },
      'on-node-failure': ON_FAILURE,
      cut: CUT,
      'balance-by': BALANCE,
      ...PLANNER,
      replan: REPLAN,
      ...SERVE,
      redeploy: { type: 'boolean', help: 'send the weights again even when the nodes already run this split (default: carry on with it)' },
      frames: FRAMES,
      json: JSON_FLAG,
      'no-baseline': NO_BASELINE,
      seed: SEED,
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
      });
      printEvents(d, config.up.json);
      await d.connect();
      try {
        const caps = config.planner.auto && !config.planner.speeds.length ? await d.nodes.waitCapabilities(nodes, config.planner.onlineTimeoutMs) : undefined;
        const adopt = flags.redeploy !== true;
        const req = { config, backend, flat, ids: nodes, caps, progress, adopt };
        const deploy = (order: string[], cuts: string[]) => d.adoptOrDeploy(flat, order, cuts, adopt);
        if (config.up.serve) {
          const { order, cuts } = await chooseSplit(req);
          const serving = await startServing(d, await deploy(order, cuts), flat, config);
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
          const { order, cuts } = await chooseSplit(req);
          await deploy(order, cuts);
        }
      } finally {
        await d.close();
      }
    },
  },
  plan: {
    usage: 'defer plan --model M [--cut a,b,c | --stages K | --auto --nodes n1,n2 [--speeds 1,0.5]] [--list-cuts] [--json]',
    about:
      'Show how a model splits into stages: layers, parameters, weight bytes, FLOPs, output shape and bytes per stage; with --auto, the cuts and node order the planner chooses, with predicted times.',
    flags: {
      model: MODEL,
      cut: CUT,
      nodes: { key: 'dispatcher.nodes', type: 'string', list: true, help: 'node ids (with --auto): online nodes, or as many as --speeds' },
      ...PLANNER,
      stages: { type: 'string', help: 'number of balanced stages, when no --cut is given (default 2)' },
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
        const report = autoPlanReport(config.dispatcher.model, flat, await autoPlan(flat, config, backend, ids, caps));
        process.stdout.write(flags.json ? JSON.stringify(report) + '\n' : formatAutoPlan(report));
        flat.model.dispose();
        return;
      }
      const cuts = config.dispatcher.cut.length ? config.dispatcher.cut : await defaultCuts(flat, config, backend, stages);
      const report = planReport(config.dispatcher.model, flat, flat.spans(cuts));
      if (flags.json) process.stdout.write(JSON.stringify(report) + '\n');
      else {
        process.stdout.write(formatPlan(report));
        if (flags['list-cuts']) process.stdout.write(`valid cuts:\n  ${report.validCuts.join('\n  ')}\n`);
      }
      flat.model.dispose();
    },
  },
  model: {
    usage: 'defer model create <name> --out <dir>',
    about: `Write a zoo model (${ZOO_NAMES.join(', ')}) with its seeded weights as model.json + weights.bin.`,
    flags: { out: { type: 'string', help: 'output folder' }, seed: SEED },
    async run(argv) {
      const { config, flags, positionals } = parseCommand(argv, this.flags);
      const [verb, name] = positionals;
      if (verb !== 'create' || !name || typeof flags.out !== 'string') throw new DeferError('E_CONFIG', `usage: ${this.usage}`);
      await initEngine(config.backend);
      const model = createZooModel(name, config.dispatcher.seed);
      const path = await saveLayersModel(model, flags.out);
      log.info(`wrote ${path} (${model.countParams().toLocaleString('en')} parameters)`);
      model.dispose();
    },
  },
  config: {
    usage: 'defer config (show | docs [--out FILE])',
    about: 'Show the effective configuration, or write docs/configuration.md from the schema.',
    flags: { out: { type: 'string', help: 'file to write the docs to (default: stdout)' } },
    async run(argv) {
      const { config, flags, positionals } = parseCommand(argv, this.flags);
      if (positionals[0] === 'docs') {
        if (typeof flags.out === 'string') await writeFile(flags.out, configurationDoc());
        else process.stdout.write(configurationDoc());
      } else if (positionals[0] === 'show' || positionals.length === 0) {
        const shown = { ...config, broker: { ...config.broker, password: config.broker.password ? '(set)' : '' } };
        process.stdout.write(JSON.stringify(shown, null, 2) + '\n');
      } else throw new DeferError('E_CONFIG', `usage: ${this.usage}`);
    },
  },
};

/** The first line of standard input (a password piped in). */
async function readStdinLine(): Promise<string> {
  let data = '';
  for await (const chunk of process.stdin) {
    data += chunk;
    if (data.includes('\n')) break;
  }
  return data.split(/\r?\n/)[0];
}

/** Resolve on SIGINT or SIGTERM (or when stdin closes, for child processes). */
function waitForSignal(withStdin = false): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
    if (withStdin) {
      process.stdin.on('end', () => resolve());
      process.stdin.resume();
    }
  });
}

function usage(): string {
  return [
    'usage: defer <command> [options]',
    '',
    ...Object.entries(commands).map(([name, c]) => `  ${name.padEnd(9)} ${c.about}`),
    '',
    "'defer <command> --help' lists a command's options. Configuration: docs/configuration.md.",
    '',
  ].join('\n');
}

async function main(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return;
  }
  const cmd = commands[name];
  if (!cmd) throw new DeferError('E_CONFIG', `unknown command '${name}'\n\n${usage()}`);
  if (rest.includes('--help')) {
    process.stdout.write(helpText(cmd.usage, cmd.about, cmd.flags));
    return;
  }
  await cmd.run(rest);
}

main(process.argv.slice(2)).then(
  () => {
    // tfjs and mqtt can hold handles open; the work is done
    setImmediate(() => process.exit(process.exitCode ?? 0));
  },
  (err: unknown) => {
    log.error(err instanceof DeferError ? err.message : ((err as Error)?.stack ?? errorMessage(err)));
    process.exit(err instanceof DeferError && err.code === 'E_CONFIG' ? 2 : 1);
  },
);
