import { EdgeNode } from '../../edge-node/edge-node.js';
import { DeferError } from '../../lib/core/errors.js';
import { setLogPrefix } from '../../lib/core/log.js';
import { brokerAuth } from '../../lib/mqtt/connect.js';
import { parseCommand } from '../args.js';
import type { Command } from '../command.js';
import { WORKERS } from '../flags.js';
import { parseBytes } from '../node-cgroups.js';
import { waitForSignal } from '../process-input.js';

/** `defer node`. */
export const nodeCommand: Command = {
  usage: 'defer node --id ID [--broker URL]',
  about: 'Run an edge node: take a stage from the dispatcher and compute it, until SIGINT or SIGTERM.',
  flags: {
    id: { key: 'node.id', type: 'string', help: 'node id (unique in the pipeline)' },
    slowdown: { key: 'node.slowdown', type: 'string', number: true, help: 'artificial slow-down factor (>= 1), to test plans on unequal devices' },
    workers: WORKERS,
    cpus: { key: 'node.cpus', type: 'string', number: true, help: "the cores this node may use, e.g. 0.2: its CPU quota (default: its cgroup's, where it can read one)" },
    'memory-limit': { key: 'node.memoryLimit', type: 'string', help: "the memory this node may use, e.g. 256M (default: its cgroup's limit, else the host's)" },
    'keep-packed-weights': {
      key: 'node.keepPackedWeights',
      type: 'boolean',
      help: 'keep weights the engine packed (wasm) as well as the packed copies (default: give their memory back after the first frame)',
    },
    'plain-convolutions': {
      key: 'node.plainConvolutions',
      type: 'boolean',
      help: "compute every convolution with the engine's own kernel (default, wasm: one whose filter outweighs its patches as a matrix product, the same bits, its filter held once)",
    },
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
      heartbeatThread: config.node.heartbeatThread,
      keepPackedWeights: config.node.keepPackedWeights,
      plainConvolutions: config.node.plainConvolutions,
      ...(config.node.memoryLimit ? { memoryLimitBytes: parseBytes(config.node.memoryLimit, 'node.memoryLimit (--memory-limit)') } : {}),
      ...(config.node.workers > 0 ? { workers: config.node.workers } : {}),
      ...(config.node.cpus > 0 ? { cpus: config.node.cpus } : {}),
      ...brokerAuth(config.broker),
    });
    await node.start();
    await waitForSignal(process.env.DEFER_EXIT_WITH_PARENT === '1');
    await node.close();
  },
};
