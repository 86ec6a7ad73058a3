/**
 * A node's measure of itself: a short, fixed workload (a small convolutional
 * network with seeded weights, the same everywhere) timed on this process's
 * backend, plus what the host offers (cores, memory). The planner divides the
 * time of its own run of the same workload by a node's to get the node's speed.
 */
import { availableParallelism, freemem, hostname, totalmem } from 'node:os';
import { type CpuQuota, cpuQuota } from '../core/cpu-quota.js';
import { collectGarbage } from '../core/gc.js';
import { cgroupLimitBytes, cgroupUsageBytes } from '../core/process-memory.js';
import { tf } from '../model/engine.js';
import { seedWeights } from '../model/zoo.js';
import type { Capabilities } from '../protocol/index.js';

/**
 * What this process can give a stage, and the most it may ever hold. A process in a memory cgroup (a container,
 * `defer up --node-memory`) may hold its limit, of which its idle self (what it holds now, after the engine
 * started and the calibration ran) is already taken; elsewhere the host's free and total memory.
 */
export function memoryOffer(limitBytes?: number): { freeMemoryBytes: number; totalMemoryBytes: number } {
  const limit = limitBytes ?? cgroupLimitBytes();
  if (limit === undefined) return { freeMemoryBytes: freemem(), totalMemoryBytes: totalmem() };
  // what the kernel counts against the limit, else this process's resident set
  const used = cgroupUsageBytes() ?? process.memoryUsage.rss();
  return { freeMemoryBytes: Math.max(0, Math.min(freemem(), limit - used)), totalMemoryBytes: limit };
}

/**
 * The name a node gives the planner for the machine it runs on: the host's, or, under a CPU quota of its own (a
 * container, an emulated device), the host's and its cgroup's: such a node is a device of its own, with the
 * quota's cores, not one of several nodes sharing the host's cores.
 */
export function deviceName(quota: CpuQuota | undefined = cpuQuota()): string {
  return quota ? `${hostname()}${quota.cgroup}` : hostname();
}

/** Version of the workload: a planner compares only calibrations of the same version. */
export const CALIBRATION_VERSION = 1;

function workload(): tf.LayersModel {
  const L = tf.layers;
  const input = tf.input({ shape: [112, 112, 32], name: 'cal_in' });
  let x = L.conv2d({ name: 'cal_conv1', filters: 64, kernelSize: 3, padding: 'same', activation: 'relu' }).apply(input) as tf.SymbolicTensor;
  x = L.depthwiseConv2d({ name: 'cal_dw', kernelSize: 3, padding: 'same' }).apply(x) as tf.SymbolicTensor;
  x = L.conv2d({ name: 'cal_conv2', filters: 64, kernelSize: 1, activation: 'relu' }).apply(x) as tf.SymbolicTensor;
  x = L.globalAveragePooling2d({ name: 'cal_gap' }).apply(x) as tf.SymbolicTensor;
  x = L.dense({ name: 'cal_dense', units: 10 }).apply(x) as tf.SymbolicTensor;
  const m = tf.model({ inputs: input, outputs: x, name: 'calibration' });
  seedWeights(m, 7);
  return m;
}

/**
 * Under a CPU quota, the timed runs span at least this many of its periods (and `runs` runs): a run shorter than what a period's
 * quota allows runs at full speed, so a node of 0.2 cores timing 30 ms runs one at a time could look 5x faster
 * than it computes a stage.
 */
const QUOTA_PERIODS = 10;

/** the longest warm-up: runs are timed once three in a row agree within WARMUP_SPREAD, or after this long */
const WARMUP_MS = 600;
/** three warm-up runs this close (slowest over fastest) mean V8's optimised tier is in */
const WARMUP_SPREAD = 1.15;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export interface CalibrateOptions {
  slowdown?: number;
  runs?: number;
  memoryLimitBytes?: number;
  /**
   * the cores this process may use, where it cannot read its cgroup's quota itself (a node in a network namespace
   * of its own: `ip netns exec` mounts a sysfs without the cgroup hierarchy); `device` then names it
   */
  cpus?: number;
  device?: string;
}

/** The kernel's default CFS period, taken for a quota given as cores alone. */
const DEFAULT_PERIOD_MS = 100;

/**
 * Time the workload `runs` times (default 9: their median) after a warm-up (until three runs agree, at most
 * WARMUP_MS). With `slowdown` > 1
 * each run is followed by an idle wait of (slowdown - 1) times its time, as
 * an edge node configured with that slow-down does after each frame.
 */
export async function calibrate(opts: CalibrateOptions = {}): Promise<Capabilities> {
  const slowdown = opts.slowdown ?? 1;
  const runs = opts.runs ?? 9;
  const model = workload();
  const input = tf.randomUniform([1, 112, 112, 32], 0, 1, 'float32', 11);
  const wall: number[] = [];
  const cpu: number[] = [];
  const quota: CpuQuota | undefined = opts.cpus ? { cores: opts.cpus, periodMs: DEFAULT_PERIOD_MS, cgroup: `/${opts.device ?? 'node'}` } : cpuQuota();
  try {
    // Warm up until three runs in a row agree, for WARMUP_MS at most: right after start, V8 is still compiling
    // the wasm kernels' optimised tier in the background, and runs then are up to 2x slower than later ones.
    const warmUntil = performance.now() + WARMUP_MS;
    const recent: number[] = [];
    while (performance.now() < warmUntil) {
      const t0 = performance.now();
      const out = model.predict(input) as tf.Tensor;
      await out.data();
      out.dispose();
      recent.push(performance.now() - t0);
      const last = recent.slice(-3);
      if (last.length === 3 && Math.max(...last) <= WARMUP_SPREAD * Math.min(...last)) break;
    }
    const once = async () => {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const out = model.predict(input) as tf.Tensor;
      await out.data();
      out.dispose();
      const busy = performance.now() - t0;
      if (slowdown > 1) await sleep((slowdown - 1) * busy);
      const c = process.cpuUsage(c0);
      return { wall: performance.now() - t0, cpu: (c.user + c.system) / 1000 };
    };
    if (quota) {
      // back to back over several periods: what the quota lets through, as a stage's frames will see it; and no less
      // than the quota itself allows: the CPU a run takes over the cores it gives (a run that starts a period with
      // its quota unspent runs at full speed, and the window's count of runs is whole)
      const t0 = performance.now();
      let n = 0;
      let cpuMs = 0;
      while (n < runs || performance.now() - t0 < QUOTA_PERIODS * quota.periodMs) {
        cpuMs += (await once()).cpu;
        n++;
      }
      wall.push(Math.max((performance.now() - t0) / n, cpuMs / n / quota.cores));
      cpu.push(cpuMs / n);
    } else {
      for (let r = 0; r < runs; r++) {
        const x = await once();
        wall.push(x.wall);
        cpu.push(x.cpu);
      }
    }
  } finally {
    model.dispose();
    input.dispose();
  }
  // what the node offers is measured on its idle self: the workload's garbage collected, and the pages the
  // collection freed returned (its sweeper threads release them within about 100 ms). Measured right after the
  // workload, the same node offered up to 30 MB less from one start to the next (2-core VM, 2026-11-27).
  collectGarbage();
  await sleep(100);
  return {
    backend: tf.getBackend(),
    calibrationMs: median(wall),
    calibrationCpuMs: median(cpu),
    slowdown,
    cores: quota ? Math.min(quota.cores, availableParallelism()) : availableParallelism(),
    ...memoryOffer(opts.memoryLimitBytes),
    host: deviceName(quota),
  };
}
