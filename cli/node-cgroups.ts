/**
 * Emulated small devices: each node process of `defer up` in a cgroup of its
 * own with a memory limit (`--node-memory`) and a CPU quota (`--node-cpus`),
 * so one machine can model a fleet of small devices. cgroup v2 (the unified
 * hierarchy) or v1 (the memory and cpu controllers); root is needed. A node
 * the kernel kills for memory is told as such (the cgroup's oom_kill count).
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DeferError } from '../lib/core/errors.js';

const ROOT = '/sys/fs/cgroup';

/** An idle node (engine loaded, calibrated, no stage) needs about this much: `defer node` on wasm under `defer up` measured 130 MB RSS, 140 MB at its peak, of which its cgroup was charged 91 MB (2-core VM, 2026-11-27); below it a node cannot start. */
export const IDLE_NODE_BYTES = 128 * 1024 * 1024;

export interface NodeLimits {
  memoryBytes?: number;
  /** CPU cores (0.5: half of one) */
  cpus?: number;
}

/** `256M`, `1.5G`, `300000000`: bytes. */
export function parseBytes(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?$/i.exec(text.trim());
  if (!m) throw new DeferError('E_CONFIG', `${what} must be a size such as 256M, 1.5G or 300000000 (bytes), got '${text}'`);
  const unit = (m[2] ?? 'b').toLowerCase()[0];
  const mult = unit === 'k' ? 1024 : unit === 'm' ? 1024 ** 2 : unit === 'g' ? 1024 ** 3 : 1;
  return Math.round(Number(m[1]) * mult);
}

type Version = 'v1' | 'v2';

function version(): Version | null {
  if (existsSync(join(ROOT, 'cgroup.controllers'))) return 'v2';
  if (existsSync(join(ROOT, 'memory', 'memory.limit_in_bytes')) && existsSync(join(ROOT, 'cpu', 'cpu.cfs_quota_us'))) return 'v1';
  return null;
}

/** Refuse limits no node can run under: below an idle node's memory, or not a positive number of cores. */
export function checkLimits(limits: NodeLimits, names = { memory: '--node-memory', cpus: '--node-cpus' }): void {
  if (limits.memoryBytes !== undefined && limits.memoryBytes < IDLE_NODE_BYTES) {
    throw new DeferError(
      'E_CONFIG',
      `${names.memory} ${(limits.memoryBytes / 2 ** 20).toFixed(0)} MiB is below what an idle node needs (about ${IDLE_NODE_BYTES / 2 ** 20} MiB: the engine and the MQTT client before any stage): give at least ${IDLE_NODE_BYTES / 2 ** 20}M`,
    );
  }
  if (limits.cpus !== undefined && !(limits.cpus > 0 && limits.cpus <= 1024))
    throw new DeferError('E_CONFIG', `${names.cpus} must be a positive number of cores (0.5: half a core), got ${limits.cpus}`);
}

/** The cgroups of one `defer up`: one per node, made before it starts, removed after it stops. */
export class NodeCgroups {
  private readonly v: Version;
  private readonly made: string[] = [];

  /** `limits`: every node's, or each node's own (a fleet of unlike devices) */
  constructor(
    limits: NodeLimits | ((id: string) => NodeLimits),
    private readonly tag = `defer-${process.pid}`,
  ) {
    this.limitsOf = typeof limits === 'function' ? limits : () => limits;
    if (typeof limits !== 'function') checkLimits(limits);
    if (typeof process.getuid === 'function' && process.getuid() !== 0) {
      throw new DeferError(
        'E_CONFIG',
        '--node-memory and --node-cpus put each node in a cgroup of its own, which needs root: run defer up as root (or in a container that may manage cgroups), or leave them out',
      );
    }
    const v = version();
    if (!v)
      throw new DeferError(
        'E_CONFIG',
        `--node-memory and --node-cpus need cgroups: neither cgroup v2 (${ROOT}/cgroup.controllers) nor the v1 memory and cpu controllers (${ROOT}/memory, ${ROOT}/cpu) are available here`,
      );
    this.v = v;
  }

  /** node `id`'s limits */
  readonly limitsOf: (id: string) => NodeLimits;

  private dirs(id: string): { memory: string; cpu: string } {
    const name = `${this.tag}-${id}`;
    return this.v === 'v2' ? { memory: join(ROOT, name), cpu: join(ROOT, name) } : { memory: join(ROOT, 'memory', name), cpu: join(ROOT, 'cpu', name) };
  }

  private write(file: string, value: string): void {
    try {
      writeFileSync(file, value);
    } catch (err) {
      throw new DeferError('E_CONFIG', `cannot set ${file} to ${value}: ${(err as Error).message}`);
    }
  }

  /** Make node `id`'s cgroup with the limits; returns the command prefix that starts a process in it. */
  prepare(id: string): string[] {
    const d = this.dirs(id);
    for (const dir of new Set([d.memory, d.cpu])) {
      if (!existsSync(dir)) mkdirSync(dir);
      this.made.push(dir);
    }
    const { memoryBytes, cpus } = this.limitsOf(id);
    if (this.v === 'v2') {
      if (memoryBytes !== undefined) {
        this.write(join(d.memory, 'memory.max'), String(memoryBytes));
        if (existsSync(join(d.memory, 'memory.swap.max'))) this.write(join(d.memory, 'memory.swap.max'), '0');
      }
      if (cpus !== undefined) this.setCpus(id, cpus);
    } else {
      if (memoryBytes !== undefined) {
        this.write(join(d.memory, 'memory.limit_in_bytes'), String(memoryBytes));
        // no swapping around the limit: the memory a device has is what it has
        if (existsSync(join(d.memory, 'memory.memsw.limit_in_bytes'))) this.write(join(d.memory, 'memory.memsw.limit_in_bytes'), String(memoryBytes));
      }
      if (cpus !== undefined) this.setCpus(id, cpus);
    }
    const procs = [...new Set([d.memory, d.cpu])].map((dir) => `echo $$ > ${join(dir, 'cgroup.procs')}`).join(' && ');
    return ['sh', '-c', `${procs} && exec "$@"`, 'sh'];
  }

  /** Set node `id`'s CPU quota, in cores (at start, or while it runs: a device slowed by another program, or heat). */
  setCpus(id: string, cpus: number): void {
    checkLimits({ cpus });
    const d = this.dirs(id);
    if (this.v === 'v2') this.write(join(d.cpu, 'cpu.max'), `${Math.round(cpus * 100_000)} 100000`);
    else {
      this.write(join(d.cpu, 'cpu.cfs_period_us'), '100000');
      this.write(join(d.cpu, 'cpu.cfs_quota_us'), String(Math.round(cpus * 100_000)));
    }
  }

  /** How many times the kernel killed a process of node `id`'s cgroup for memory (0 where it cannot tell). */
  oomKills(id: string): number {
    const d = this.dirs(id);
    try {
      const text = readFileSync(join(d.memory, this.v === 'v2' ? 'memory.events' : 'memory.oom_control'), 'utf8');
      const m = /^oom_kill (\d+)$/m.exec(text);
      return m ? Number(m[1]) : 0;
    } catch {
      return 0;
    }
  }

  /** Peak memory of node `id`'s cgroup, bytes (v1: max_usage_in_bytes; v2: memory.peak where the kernel has it). */
  peakBytes(id: string): number | undefined {
    const d = this.dirs(id);
    try {
      return Number(readFileSync(join(d.memory, this.v === 'v2' ? 'memory.peak' : 'memory.max_usage_in_bytes'), 'utf8').trim());
    } catch {
      return undefined;
    }
  }

  /** Why node `id` exited, when the cgroup knows: the kernel's out-of-memory kill. */
  exitReason(id: string): string | undefined {
    if (this.oomKills(id) === 0) return undefined;
    const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
    return `killed by the kernel: out of memory (its cgroup's limit is ${mib(this.limitsOf(id).memoryBytes ?? 0)}; peak ${mib(this.peakBytes(id) ?? 0)})`;
  }

  /** Remove the cgroups (their processes have exited). */
  remove(): void {
    for (const dir of this.made.reverse()) {
      try {
        rmdirSync(dir);
      } catch {
        // still busy or gone: the kernel removes an empty cgroup with rmdir only
      }
    }
    this.made.length = 0;
  }
}
