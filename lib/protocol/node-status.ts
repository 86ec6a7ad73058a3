/**
 * What a node says about itself (JSON, so that any MQTT client can read it):
 * its status (retained on node/<id>/status, Last Will `offline`) and its
 * heartbeat (node/<id>/alive, not retained). See docs/protocol.md.
 */
import { EnvelopeError } from '../core/errors.js';
import { decodeJsonObject, encodeJson, int, num, obj, str } from './fields.js';

/** A node's measure of itself, made at start (lib/planning/calibrate.ts) and carried in its status. */
export interface Capabilities {
  backend: string;
  /** median wall ms of one run of the calibration workload (slow-down included) */
  calibrationMs: number;
  /** median CPU ms of this process per run */
  calibrationCpuMs: number;
  /** the configured artificial slow-down factor (1: none) */
  slowdown: number;
  cores: number;
  freeMemoryBytes: number;
  totalMemoryBytes: number;
  host: string;
  /** the most engines (worker threads) the node runs for a stage (`defer node --workers`; default its cores); absent: 1 */
  workers?: number;
  /**
   * true where the node's wasm engine computes every convolution itself, keeping twice each filter (`defer node
   * --plain-convolutions`, or its engine failed the check that products give the same bits): the planner then
   * counts twice the weights of each stage it gives the node (docs/memory.md); absent: convolutions as products
   */
  plainConvolutions?: boolean;
  /**
   * the node's link to the broker as it measured it at start (edge-node/link-probe.ts): Mbit/s each way, and the
   * round trip of a small message, ms; absent: not measured
   */
  linkMbps?: number;
  linkRttMs?: number;
}

export type NodeState = 'online' | 'loading' | 'ready' | 'failed' | 'offline';
export const NODE_STATES: readonly NodeState[] = ['online', 'loading', 'ready', 'failed', 'offline'];

export interface NodeStatus {
  v: 1;
  node: string;
  state: NodeState;
  at: number;
  deployment?: string;
  stage?: number;
  reason?: string;
  backend?: string;
  pid?: number;
  /** weight transfer progress while loading */
  received?: number;
  total?: number;
  /** counters since start */
  frames?: number;
  dropped?: number;
  rejected?: number;
  /** tensors held by the node's engine: shows that a replaced stage was freed */
  tensors?: number;
  /** the node's calibration and host figures, measured at start */
  capabilities?: Capabilities;
  /** where the running stage's weights came from: the broker, or the node's weight cache */
  weightsFrom?: 'broker' | 'cache';
  /** the node publishes a heartbeat on node/<id>/alive this often (ms); absent: none */
  heartbeatMs?: number;
  /** engines running the stage (worker threads; 1: the node's own thread) */
  workers?: number;
  /** frames each engine computes in one call at most (absent: 1): the assignment's batch, or 1 where the stage does not batch exactly */
  batch?: number;
  /** a standby's prefetch: stages of the running deployment in its weight cache, of how many */
  prefetched?: number;
  prefetchTotal?: number;
  /**
   * while loading a stage that replaces another: 'first' where the old stage was freed before the new one was
   * built, because the node's memory limit could not hold both (the node serves nothing meanwhile); absent: the
   * old stage serves until the new one is ready
   */
  released?: 'first';
}

const CAPABILITY_NUMBERS = ['calibrationMs', 'calibrationCpuMs', 'slowdown', 'cores', 'freeMemoryBytes', 'totalMemoryBytes'] as const;

export function encodeStatus(s: Omit<NodeStatus, 'v'>): Buffer {
  return encodeJson(s);
}

export function decodeStatus(buf: Uint8Array): NodeStatus {
  const W = 'node status';
  const m = decodeJsonObject(buf, 64 * 1024, W);
  if (!NODE_STATES.includes(m.state as NodeState)) throw new EnvelopeError(`${W}: unknown state '${String(m.state)}'`);
  str(m, 'node', W, 64);
  if (m.heartbeatMs !== undefined) int(m, 'heartbeatMs', W, 1, 3_600_000);
  if (m.capabilities !== undefined) {
    const c = obj(m.capabilities, `${W} capabilities`);
    for (const k of CAPABILITY_NUMBERS) {
      if (typeof c[k] !== 'number' || !Number.isFinite(c[k]) || (c[k] as number) < 0) throw new EnvelopeError(`${W}: capabilities.${k} must be a number >= 0`);
    }
    if (!((c.calibrationMs as number) > 0)) throw new EnvelopeError(`${W}: capabilities.calibrationMs must be positive`);
    str(c, 'backend', `${W} capabilities`, 64);
    str(c, 'host', `${W} capabilities`, 256);
    if (c.workers !== undefined) int(c, 'workers', `${W} capabilities`, 1, 256);
    if (c.plainConvolutions !== undefined && typeof c.plainConvolutions !== 'boolean') throw new EnvelopeError(`${W}: capabilities.plainConvolutions must be a boolean`);
    for (const k of ['linkMbps', 'linkRttMs'] as const) {
      if (c[k] !== undefined && (typeof c[k] !== 'number' || !Number.isFinite(c[k]) || (c[k] as number) <= 0)) throw new EnvelopeError(`${W}: capabilities.${k} must be a positive number`);
    }
  }
  if (m.workers !== undefined) int(m, 'workers', W, 1, 256);
  if (m.batch !== undefined) int(m, 'batch', W, 1, 64);
  if (m.released !== undefined && m.released !== 'first') throw new EnvelopeError(`${W}: released must be 'first', got '${String(m.released)}'`);
  return m as unknown as NodeStatus;
}

// ---- heartbeat -------------------------------------------------------------------

export interface Heartbeat {
  v: 1;
  node: string;
  at: number;
  /** frames the node has computed since it started */
  frames: number;
  /** activations waiting in its input queue */
  queue?: number;
  /** resident set size of its process, bytes */
  rssBytes?: number;
  /** the largest resident set size its process has had, bytes (the kernel's maxrss) */
  peakRssBytes?: number;
  /** the engine's own heap, bytes (the wasm backend's linear memory; it never shrinks) */
  engineHeapBytes?: number;
  /** its memory cgroup's limit, bytes (a container, `defer up --node-memory`); absent: none */
  memoryLimitBytes?: number;
  /** the most that cgroup has been charged, bytes: what the kernel holds against the limit */
  memoryPeakBytes?: number;
  /** CPU seconds (user + system) its process has used since it started */
  cpuSeconds?: number;
  /**
   * ms since the node's compute thread last wrote these figures: how long it has been busy without a break (the
   * heartbeat comes from a thread of its own); absent: sent by the compute thread itself
   */
  busyMs?: number;
}

export function encodeHeartbeat(h: Omit<Heartbeat, 'v'>): Buffer {
  return encodeJson(h);
}

export function decodeHeartbeat(buf: Uint8Array): Heartbeat {
  const W = 'heartbeat';
  const m = decodeJsonObject(buf, 1024, W);
  const h: Heartbeat = { v: 1, node: str(m, 'node', W, 64), at: num(m, 'at', W), frames: int(m, 'frames', W) };
  if (m.queue !== undefined) h.queue = int(m, 'queue', W);
  if (m.rssBytes !== undefined) h.rssBytes = int(m, 'rssBytes', W);
  if (m.peakRssBytes !== undefined) h.peakRssBytes = int(m, 'peakRssBytes', W);
  if (m.engineHeapBytes !== undefined) h.engineHeapBytes = int(m, 'engineHeapBytes', W);
  if (m.memoryLimitBytes !== undefined) h.memoryLimitBytes = int(m, 'memoryLimitBytes', W);
  if (m.memoryPeakBytes !== undefined) h.memoryPeakBytes = int(m, 'memoryPeakBytes', W);
  if (m.busyMs !== undefined) h.busyMs = int(m, 'busyMs', W);
  if (m.cpuSeconds !== undefined) {
    h.cpuSeconds = num(m, 'cpuSeconds', W);
    if (h.cpuSeconds < 0) throw new EnvelopeError(`${W}: field 'cpuSeconds' must be >= 0`);
  }
  return h;
}
