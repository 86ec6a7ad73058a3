/**
 * A node's heartbeat, from plain figures: the compute side's few numbers (`WorkFigures`) and the process's
 * (`processFigures`, the same from any thread of the process). The compute side's figures travel to the heartbeat
 * thread in shared memory: the main thread writes them with the time it wrote; the heartbeat thread reads them.
 * Light imports only: the heartbeat thread loads this module, and every module it loads costs that thread memory.
 */
import { cgroupLimitBytes, cgroupPeakBytes, peakRssBytes } from '../lib/core/process-memory.js';
import type { Heartbeat } from '../lib/protocol/node-status.js';

/** What the compute side knows for the heartbeat: plain numbers. */
export interface WorkFigures {
  /** frames computed */
  frames: number;
  /** activations waiting */
  queue: number;
  /** the engines' heap: this thread's engine, or its worker threads' together (none where the backend tells none) */
  engineHeapBytes?: number;
}

/** The process's memory and CPU as the kernel counts them: the same from any thread of the process. */
export interface ProcessFigures {
  rssBytes: number;
  peakRssBytes: number;
  memoryLimitBytes?: number;
  memoryPeakBytes?: number;
  cpuSeconds: number;
}

/** This process's figures now; `memoryLimitBytes`: the node's own limit (default: its cgroup's, where it has one). */
export function processFigures(memoryLimitBytes?: number): ProcessFigures {
  const cpu = process.cpuUsage();
  const limit = memoryLimitBytes ?? cgroupLimitBytes();
  return {
    rssBytes: process.memoryUsage.rss(),
    peakRssBytes: peakRssBytes(),
    memoryLimitBytes: limit,
    memoryPeakBytes: limit === undefined ? undefined : cgroupPeakBytes(),
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
  };
}

/** What the heartbeat says at time `at` (ms since the epoch): frames computed, the input queue, and the process's memory and CPU. */
export function heartbeatOf(node: string, at: number, work: WorkFigures, proc: ProcessFigures): Omit<Heartbeat, 'v'> {
  return {
    node,
    at,
    frames: work.frames,
    queue: work.queue,
    rssBytes: proc.rssBytes,
    peakRssBytes: proc.peakRssBytes,
    ...(work.engineHeapBytes === undefined ? {} : { engineHeapBytes: work.engineHeapBytes }),
    ...(proc.memoryLimitBytes === undefined ? {} : { memoryLimitBytes: proc.memoryLimitBytes }),
    ...(proc.memoryPeakBytes === undefined ? {} : { memoryPeakBytes: proc.memoryPeakBytes }),
    cpuSeconds: proc.cpuSeconds,
  };
}

const FRAMES = 0;
const QUEUE = 1;
/** -1: the backend tells none */
const HEAP = 2;
const WRITTEN_AT = 3;
const SLOTS = 4;

export function figuresBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(SLOTS * Float64Array.BYTES_PER_ELEMENT);
}

export function writeFigures(shared: SharedArrayBuffer, work: WorkFigures, at = Date.now()): void {
  const f = new Float64Array(shared);
  f[FRAMES] = work.frames;
  f[QUEUE] = work.queue;
  f[HEAP] = work.engineHeapBytes ?? -1;
  f[WRITTEN_AT] = at;
}

export function readFigures(shared: SharedArrayBuffer): { work: WorkFigures; writtenAt: number } {
  const f = new Float64Array(shared);
  const heap = f[HEAP];
  return { work: { frames: f[FRAMES], queue: f[QUEUE], ...(heap >= 0 ? { engineHeapBytes: heap } : {}) }, writtenAt: f[WRITTEN_AT] };
}
