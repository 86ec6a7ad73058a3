import { DeferError } from '../../lib/core/errors.js';
import { parseCommand } from '../args.js';
import type { Command } from '../command.js';
import { BALANCE, BATCH, CUT, FLOAT_FRAMES, FRAMES, HTTP, JSON_FLAG, MODEL, NO_BASELINE, ON_FAILURE, PLANNER, PRECISION, REPLAN, SEED, SERVE, WORKERS } from '../flags.js';
import { formatServeMetrics, printSummary, runUp, serveUp } from '../up.js';

/** `defer up`. */
export const upCommand: Command = {
  usage: 'defer up [--nodes N | --fleet fleet.json] [--model M] [--cut a,b | --replicas 2,1 | --shape chain [--auto [--replan]]] [--workers W] [--batch B] [--frames F | --serve] [--json]',
  about: 'Run a whole local deployment: embedded broker, N edge-node processes, dispatcher; stream synthetic frames and print a summary, or serve devices until SIGINT or SIGTERM (--serve).',
  flags: {
    nodes: { key: 'up.nodes', type: 'string', number: true, help: 'edge-node processes (the planner chooses which serve which stage; with --cut or --shape chain: one per stage)' },
    batch: BATCH,
    workers: WORKERS,
    standby: { key: 'up.standby', type: 'string', number: true, help: 'extra edge-node processes kept as standbys (s1, s2, ...)' },
    'on-node-failure': ON_FAILURE,
    model: MODEL,
    cut: CUT,
    'balance-by': BALANCE,
    ...PLANNER,
    replan: REPLAN,
    ...SERVE,
    slowdown: { key: 'up.slowdown', type: 'string', help: 'slow-down factor per node, e.g. 1,2,1 (the second node twice as slow)' },
    'node-memory': { key: 'up.nodeMemory', type: 'string', help: 'memory limit per node process, e.g. 256M (a cgroup each; root)' },
    'node-cpus': { key: 'up.nodeCpus', type: 'string', number: true, help: 'CPU quota per node process in cores, e.g. 0.5 (a cgroup each; root)' },
    fleet: {
      key: 'up.fleet',
      type: 'string',
      help: 'emulate a fleet of devices from a fleet file (docs/fleets.md), or a shipped example by name (raspberry-pi, mixed-wifi): cores, memory and link per device; root',
    },
    frames: FRAMES,
    json: JSON_FLAG,
    'no-baseline': NO_BASELINE,
    'float-frames': FLOAT_FRAMES,
    port: { key: 'broker.port', type: 'string', number: true, help: 'embedded broker port (0: a free one)' },
    host: { key: 'broker.host', type: 'string', help: 'embedded broker address' },
    'max-in-flight': { key: 'dispatcher.maxInFlight', type: 'string', number: true, help: 'frames in the chain at once (0: 2 per engine, 4 with replicas)' },
    codec: { key: 'dispatcher.codec', type: 'string', help: 'lz4 | none' },
    seed: SEED,
    precision: PRECISION,
    ...HTTP,
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
};
