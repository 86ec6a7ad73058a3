/**
 * Where `defer up`'s node processes run: plain processes of this host; emulated small devices, each in a cgroup
 * of its own with the same limits (`--node-memory`, `--node-cpus`); or a fleet (`--fleet file.json`), each device
 * with its class's cores, memory and link (a network namespace of its own, its veth shaped with tc), changed at
 * the fleet's given times once frames flow. Checked before anything starts: root, cgroups, namespaces, limits.
 */
import type { DeferConfig } from '../config/schema.js';
import type { Dispatcher } from '../dispatcher/dispatcher.js';
import { DeferError } from '../lib/core/errors.js';
import { count } from '../lib/core/words.js';
import { describeFleet, type Fleet, loadFleet } from './fleet.js';
import { NodeCgroups, type NodeLimits, parseBytes } from './node-cgroups.js';
import { createLinks, type Links, netemCheck } from './node-network.js';

export interface NodeEnvironment {
  /** the configuration with what the fleet decides: its number of nodes, the broker on every address (each node measures its own link) */
  config: DeferConfig;
  cgroups?: NodeCgroups;
  limitsOf(id: string): NodeLimits;
  /** the network namespaces and shaped links, where the fleet has links */
  network?: Links;
  fleet?: Fleet;
  /** apply the fleet's changes at their times once frames flow (the first 'stream-start' or 'serving' event) */
  scheduleChanges(dispatcher: Dispatcher, progress: (line: string) => void): void;
  close(): Promise<void>;
}

/** The node environment `config` asks for. */
export async function nodeEnvironment(config: DeferConfig, progress: (line: string) => void): Promise<NodeEnvironment> {
  if (config.up.fleet) return fleetEnvironment(config, loadFleet(config.up.fleet), progress);
  if (config.up.nodeCpus < 0) throw new DeferError('E_CONFIG', `up.nodeCpus (--node-cpus) must be a positive number of cores, got ${config.up.nodeCpus}`);
  const limits: NodeLimits = {
    ...(config.up.nodeMemory ? { memoryBytes: parseBytes(config.up.nodeMemory, 'up.nodeMemory (--node-memory)') } : {}),
    ...(config.up.nodeCpus > 0 ? { cpus: config.up.nodeCpus } : {}),
  };
  const cgroups = limits.memoryBytes !== undefined || limits.cpus !== undefined ? new NodeCgroups(limits) : undefined;
  if (cgroups) progress(`each node in a cgroup of its own:${limits.memoryBytes !== undefined ? ` memory ${config.up.nodeMemory}` : ''}${limits.cpus !== undefined ? ` cpus ${limits.cpus}` : ''}`);
  return { config, cgroups, limitsOf: () => limits, scheduleChanges: () => undefined, close: async () => cgroups?.remove() };
}

async function fleetEnvironment(config: DeferConfig, fleet: Fleet, progress: (line: string) => void): Promise<NodeEnvironment> {
  if (config.up.nodeMemory || config.up.nodeCpus > 0) throw new DeferError('E_CONFIG', `--fleet gives each device its own memory and cores: leave out --node-memory and --node-cpus`);
  const byId = new Map(fleet.devices.map((d) => [d.id, d]));
  const limitsOf = (id: string) => byId.get(id)?.limits ?? {};
  const limited = fleet.devices.some((d) => d.limits.cpus !== undefined || d.limits.memoryBytes !== undefined);
  const cgroups = limited ? new NodeCgroups(limitsOf) : undefined;
  let network: Links | undefined;
  const linked = fleet.devices.filter((d) => d.link);
  if (linked.length) {
    const check = await netemCheck();
    if (!check.available) throw new DeferError('E_CONFIG', `fleet file ${fleet.file}: its links need network namespaces and tc, which failed here: ${check.reason}`);
    const delayed = linked.filter((d) => (d.link?.latencyMs ?? 0) > 0);
    if (delayed.length && !check.netem)
      throw new DeferError(
        'E_CONFIG',
        `fleet file ${fleet.file}: ${delayed
          .map((d) => d.class)
          .filter((c, i, a) => a.indexOf(c) === i)
          .join(', ')} ask for link latency, but this kernel has no netem qdisc: tbf shapes bandwidth only, so latency cannot be emulated here; leave latencyMs out`,
      );
    network = await createLinks(
      fleet.devices.map((d) => d.id),
      (id) => {
        const l = byId.get(id)?.link;
        return l ? { label: `${l.mbit} Mbit/s`, mbit: l.mbit, delayMs: l.latencyMs ?? 0 } : undefined;
      },
      check.netem,
    );
  }
  progress(describeFleet(fleet));
  if (network) progress(`links: ${network.applied}`);
  const devices = fleet.devices.length;
  const adjusted: DeferConfig = {
    ...config,
    up: { ...config.up, nodes: devices },
    // nodes in namespaces of their own reach the broker over their veth
    broker: network ? { ...config.broker, host: '0.0.0.0' } : config.broker,
  };
  const timers: NodeJS.Timeout[] = [];
  return {
    config: adjusted,
    cgroups,
    limitsOf,
    network,
    fleet,
    scheduleChanges(dispatcher, say) {
      if (!fleet.changes.length) return;
      let started = false;
      const start = () => {
        if (started) return;
        started = true;
        say(`fleet: ${count(fleet.changes.length, 'change')} to its devices, the first ${(fleet.changes[0].atMs / 1000).toFixed(1)} s from now`);
        for (const c of fleet.changes) {
          timers.push(
            setTimeout(() => {
              const dev = byId.get(c.device)!;
              const was = { cpus: dev.limits.cpus, mbit: dev.link?.mbit };
              void (async () => {
                if (c.cpus !== undefined) {
                  cgroups?.setCpus(c.device, c.cpus);
                  dev.limits.cpus = c.cpus;
                }
                if (c.link !== undefined && network) {
                  await network.change(c.device, { label: `${c.link.mbit} Mbit/s`, mbit: c.link.mbit, delayMs: c.link.latencyMs ?? 0 });
                  dev.link = c.link;
                }
                dispatcher.events.emit({ type: 'device-changed', node: c.device, atMs: c.atMs, ...(c.cpus !== undefined ? { cpus: c.cpus } : {}), ...(c.link ? { mbit: c.link.mbit } : {}), was });
              })().catch((err: Error) => say(`fleet: cannot change ${c.device}: ${err.message}`));
            }, c.atMs).unref(),
          );
        }
      };
      dispatcher.events.on('stream-start', start);
      dispatcher.events.on('serving', start);
    },
    async close() {
      for (const t of timers) clearTimeout(t);
      cgroups?.remove();
      await network?.close();
    },
  };
}
