/**
 * What the planner reads, gathered: the model's cost (a profile and the
 * model's layer sizes), and each node's figures, from its calibration in its
 * status or from speeds given by the user, with the link and memory options.
 */
import { DeferError } from '../core/errors.js';
import type { FlatModel, StageSpan } from '../model/flat-model.js';
import type { Capabilities, Codec } from '../protocol/index.js';
import { batchFrameBytes, type CostModel, type PlanNode, stageMemoryBytes } from './cost-model.js';
import type { CachedProfile } from './profile-cache.js';

/** The planner's cost model: the profile's segment times and codec costs (for `codec`), the model's sizes. */
export function costModelOf(flat: FlatModel, profile: Pick<CachedProfile, 'layerMs' | 'segments' | 'input' | 'callMs'>, codec: Codec = 'lz4'): CostModel {
  const index = new Map(flat.layers.map((l, i) => [l.name, i]));
  const n = flat.layers.length;
  const encodeMs = new Array<number>(n).fill(0);
  const decodeMs = new Array<number>(n).fill(0);
  const wireBytes = flat.layers.map((l) => l.outputBytes);
  for (const s of profile.segments) {
    const i = index.get(s.last);
    if (i === undefined) continue;
    encodeMs[i] = s.output[codec].encodeMs;
    decodeMs[i] = s.output[codec].decodeMs;
    wireBytes[i] = s.output[codec].bytes;
  }
  return {
    ...memoryCostOf(flat),
    segmentMs: profile.layerMs,
    encodeMs,
    decodeMs,
    inputDecodeMs: profile.input[codec].decodeMs,
    wireBytes,
    inputWireBytes: profile.input[codec].bytes,
    stageCallMs: profile.callMs,
  };
}

/** The model's sizes as the cost model holds them (names, outputs, weights as sent and loaded, the input): all that memory needs. */
function sizeCost(flat: FlatModel): Pick<CostModel, 'layerNames' | 'outputBytes' | 'weightBytes' | 'loadedBytes' | 'heldBytes' | 'inputBytes'> {
  const layers = flat.layers;
  return {
    layerNames: layers.map((l) => l.name),
    outputBytes: layers.map((l) => l.outputBytes),
    weightBytes: layers.map((l) => l.weightBytes),
    ...(layers.some((l) => l.loadedBytes !== undefined) ? { loadedBytes: layers.map((l) => l.loadedBytes ?? l.weightBytes) } : {}),
    ...(layers.some((l) => l.heldBytes !== undefined) ? { heldBytes: layers.map((l) => l.heldBytes) } : {}),
    inputBytes: flat.inputShape.reduce((a, b) => a * b, 1) * 4,
  };
}

/** The cost model of the model's sizes alone (no times): what the memory estimates and memory-balanced cuts need. */
export function memoryCostOf(flat: FlatModel): CostModel {
  // flat.layers are the graph's layers in order: the cut analysis's indices are theirs
  return { ...sizeCost(flat), segmentMs: [], validCuts: [...flat.cuts.valid] };
}

/**
 * Each stage's estimated memory (what one engine of it adds to an idle node, on a node that computes large
 * convolutions as products and on one that computes them all itself, and what each frame of a batch beyond the
 * first adds), from the model's sizes alone: for assignments, and for run summaries beside the measured.
 */
export function stageMemoryOf(flat: FlatModel, spans: StageSpan[]): { stageBytes: number; plainStageBytes: number; batchFrameBytes: number }[] {
  const cost = memoryCostOf(flat);
  const index = new Map(cost.layerNames.map((name, i) => [name, i]));
  return spans.map((s) => {
    const first = index.get(s.layers[0]) ?? 0;
    const last = index.get(s.last) ?? cost.layerNames.length - 1;
    return { stageBytes: stageMemoryBytes(cost, first, last), plainStageBytes: stageMemoryBytes(cost, first, last, true), batchFrameBytes: batchFrameBytes(cost, first, last) };
  });
}

export interface NodeOptions {
  /** relative speeds, one per node (1 = the planning machine); empty: from capabilities */
  speeds: number[];
  /** MB per node, one value for all, or empty */
  memoryMb: number[];
  /** Mbit/s per node, one value for all, or empty; 0 = loopback */
  bandwidthMbps: number[];
  latencyMs: number[];
}

export function perNode(name: string, values: number[], ids: string[]): (number | undefined)[] {
  if (values.length === 0) return ids.map(() => undefined);
  if (values.length === 1) return ids.map(() => values[0]);
  if (values.length !== ids.length) throw new DeferError('E_CONFIG', `${name} has ${values.length} values for ${ids.length} nodes (${ids.join(', ')}): give one per node, or one for all`);
  return values;
}

/**
 * The share of the memory a node reports free that the planner gives its stage: the memory estimate errs by up
 * to about 11% either way (docs/memory.md), and a node that runs out of memory is killed, not slowed.
 */
export const MEMORY_PLANNED_SHARE = 0.85;

/**
 * Plan nodes for `ids`. Speeds given by the user win; otherwise each node's
 * calibration is compared with the profile's: a node whose workload took
 * twice as long gets time factor 2.
 */
export function planNodes(ids: string[], opts: NodeOptions, profile: Pick<CachedProfile, 'calibration' | 'backend'>, caps?: Map<string, Capabilities>): PlanNode[] {
  const speeds = perNode('planner.speeds', opts.speeds, ids);
  const memory = perNode('planner.memoryMb', opts.memoryMb, ids);
  const bandwidth = perNode('planner.bandwidthMbps', opts.bandwidthMbps, ids);
  const latency = perNode('planner.latencyMs', opts.latencyMs, ids);
  const nodes = ids.map((id, i) => {
    const cap = caps?.get(id);
    let timeFactor: number;
    let cpuFactor: number | undefined;
    const speed = speeds[i];
    if (speed !== undefined) {
      if (!(speed > 0)) throw new DeferError('E_CONFIG', `planner.speeds: node ${id} has speed ${speed}; speeds must be positive (1 = as fast as this machine)`);
      timeFactor = 1 / speed;
    } else if (cap) {
      timeFactor = cap.calibrationMs / profile.calibration.calibrationMs;
      cpuFactor = cap.calibrationCpuMs / profile.calibration.calibrationCpuMs;
    } else {
      throw new DeferError('E_CONFIG', `no speed for node ${id}: it has not reported a calibration; start it, or give planner.speeds (--speeds)`);
    }
    const mb = memory[i];
    const bw = bandwidth[i];
    return {
      id,
      timeFactor,
      cpuFactor,
      memoryBytes: mb !== undefined && mb > 0 ? mb * 1e6 : cap ? cap.freeMemoryBytes * MEMORY_PLANNED_SHARE : undefined,
      // given (0: loopback), else what the node measured of its link (edge-node/link-probe.ts), a loopback's excepted
      bandwidthMbps: bw !== undefined ? (bw > 0 ? bw : undefined) : cap?.linkMbps !== undefined && cap.linkMbps < LOOPBACK_MBPS ? cap.linkMbps : undefined,
      latencyMs: latency[i],
      host: speed === undefined ? cap?.host : undefined,
      cores: speed === undefined ? cap?.cores : undefined,
      ...(cap?.plainConvolutions ? { plainConvolutions: true } : {}),
    };
  });
  return mergeSimilar(
    nodes,
    ids.filter((_, i) => speeds[i] === undefined),
  );
}

/**
 * A node's measured link at or above this many Mbit/s is taken as no link at all (a node on the broker's host
 * measures its loopback at several Gbit/s): only a slower one is charged its transfer time.
 */
export const LOOPBACK_MBPS = 1000;

/** Relative noise of one calibration on a busy machine: nodes closer than this are taken as equal. */
export const CALIBRATION_TOLERANCE = 0.05;

/**
 * Calibrated nodes whose time factors are within CALIBRATION_TOLERANCE of the
 * fastest in their group get the group's mean: the planner then treats them as
 * equal (it keeps their given order) instead of reordering on noise.
 */
function mergeSimilar(nodes: PlanNode[], calibrated: string[]): PlanNode[] {
  const pool = nodes.filter((n) => calibrated.includes(n.id)).sort((a, b) => a.timeFactor - b.timeFactor);
  const out = new Map(nodes.map((n) => [n.id, n]));
  for (let i = 0; i < pool.length; ) {
    let j = i;
    while (j + 1 < pool.length && pool[j + 1].timeFactor <= pool[i].timeFactor * (1 + CALIBRATION_TOLERANCE)) j++;
    const group = pool.slice(i, j + 1);
    const mean = (f: (n: PlanNode) => number) => group.reduce((s, n) => s + f(n), 0) / group.length;
    const time = mean((n) => n.timeFactor);
    const cpu = mean((n) => n.cpuFactor ?? n.timeFactor);
    for (const n of group) out.set(n.id, { ...n, timeFactor: time, cpuFactor: cpu });
    i = j + 1;
  }
  return nodes.map((n) => out.get(n.id)!);
}

/**
 * Measured figures into new time factors: a node whose stage took longer
 * than predicted is slower than its calibration said, by that ratio.
 */
export function remeasuredNodes(nodes: PlanNode[], measured: { node: string; predictedMs: number; measuredMs: number }[]): PlanNode[] {
  const byNode = new Map(measured.map((m) => [m.node, m]));
  return nodes.map((n) => {
    const m = byNode.get(n.id);
    if (!m || !(m.predictedMs > 0) || !(m.measuredMs > 0)) return n;
    // the CPU a stage costs its host does not change with contention: keep the calibrated figure
    return { ...n, timeFactor: n.timeFactor * (m.measuredMs / m.predictedMs), cpuFactor: n.cpuFactor ?? n.timeFactor };
  });
}
