/**
 * The pipeline planner: given a model's measured cost per segment and the
 * nodes it may run on (speed, memory, link, host), choose the cuts, and the
 * order of the nodes along the chain, that make the slowest resource as fast
 * as possible. A pipeline's throughput is 1 / (its bottleneck's time per frame).
 *
 * Resources, each a bound on the time per frame:
 *  - a node's compute: the segment's profiled ms times the node's time factor;
 *  - a node's link (full duplex): max(bytes in, bytes out) / bandwidth;
 *  - the dispatcher's link: max(frame bytes, result bytes) / bandwidth;
 *  - a host's cores, where several nodes share one host: the CPU ms of its
 *    stages / its cores.
 * The first two are chosen exactly, by dynamic programming over the valid cuts
 * for each order of the nodes; the last two are evaluated for every candidate
 * and decide between orders. Memory is a constraint: a stage whose estimated
 * memory does not fit its node is never chosen.
 */
import { DeferError } from '../core/errors.js';
import { type ChainPlan, type CostModel, CostTable, type Evaluation, evaluate, type PlanNode, type PlanOptions } from './cost-model.js';
import { memoryShortfall } from './memory-fit.js';
import { minMaxPartition } from './min-max.js';

export type { ChainPlan, CostModel, LinkSpec, PlanNode, PlannedStage, PlanOptions, RelayCost } from './cost-model.js';
export { stageMemoryBytes } from './cost-model.js';

/** Exact min-max cuts for nodes in a fixed order; boundaries as indices into pts. Null if nothing fits. */
function bestCutsForOrder(t: CostTable, nodes: PlanNode[]): { value: number; bounds: number[] } | null {
  return minMaxPartition(t.pts.length, nodes.length, (k, a, b) => t.stageCost(nodes[k], a, b));
}

/** Distinct orders of the nodes: nodes with identical figures are interchangeable, so each order of their kinds is tried once. */
const kindOf = (n: PlanNode) => JSON.stringify([n.timeFactor, n.cpuFactor, n.memoryBytes, n.bandwidthMbps, n.latencyMs, n.host, n.cores, n.plainConvolutions === true]);

/** The given order first (it wins ties), then every other distinct order. */
function* distinctOrders(nodes: PlanNode[]): Generator<PlanNode[]> {
  yield nodes;
  const given = nodes.map(kindOf).join('|');
  for (const order of allDistinctOrders(nodes)) if (order.map(kindOf).join('|') !== given) yield order;
}

function* allDistinctOrders(nodes: PlanNode[]): Generator<PlanNode[]> {
  const sig = kindOf;
  const kinds = new Map<string, PlanNode[]>();
  for (const n of nodes) kinds.set(sig(n), [...(kinds.get(sig(n)) ?? []), n]);
  const groups = [...kinds.values()];
  const left = groups.map((g) => g.length);
  const seq: number[] = [];
  function* rec(): Generator<PlanNode[]> {
    if (seq.length === nodes.length) {
      const used = groups.map(() => 0);
      yield seq.map((g) => groups[g][used[g]++]);
      return;
    }
    for (let g = 0; g < groups.length; g++) {
      if (!left[g]) continue;
      left[g]--;
      seq.push(g);
      yield* rec();
      seq.pop();
      left[g]++;
    }
  }
  yield* rec();
}

function countDistinctOrders(nodes: PlanNode[]): number {
  const sizes = new Map<string, number>();
  for (const n of nodes) sizes.set(kindOf(n), (sizes.get(kindOf(n)) ?? 0) + 1);
  const fact = (x: number): number => (x <= 1 ? 1 : x * fact(x - 1));
  let total = fact(nodes.length);
  for (const s of sizes.values()) total /= fact(s);
  return total;
}

export function validateNodes(nodes: PlanNode[]): void {
  if (!nodes.length) throw new DeferError('E_CONFIG', 'the planner needs at least one node');
  const seen = new Set<string>();
  for (const n of nodes) {
    if (seen.has(n.id)) throw new DeferError('E_CONFIG', `node '${n.id}' is given twice`);
    seen.add(n.id);
    if (!(n.timeFactor > 0) || !Number.isFinite(n.timeFactor)) throw new DeferError('E_CONFIG', `node '${n.id}': speed must be a positive number, got time factor ${n.timeFactor}`);
    if (n.bandwidthMbps !== undefined && !(n.bandwidthMbps > 0)) throw new DeferError('E_CONFIG', `node '${n.id}': bandwidth must be positive Mbit/s, got ${n.bandwidthMbps}`);
    if (n.latencyMs !== undefined && !(n.latencyMs >= 0)) throw new DeferError('E_CONFIG', `node '${n.id}': latency must be >= 0 ms, got ${n.latencyMs}`);
  }
}

/** Choose cuts and node order for `nodes` (one stage each). */
export function planPipeline(cost: CostModel, nodes: PlanNode[], opts: PlanOptions = {}): ChainPlan {
  validateNodes(nodes);
  const K = nodes.length;
  if (K - 1 > cost.validCuts.length) {
    throw new DeferError('E_CONFIG', `cannot make ${K} stages: the model has only ${cost.validCuts.length} valid cut points (${cost.validCuts.length + 1} nodes at most)`);
  }
  const t = new CostTable(cost);
  const dispatcher = opts.dispatcher ?? {};
  const maxOrders = opts.maxOrders ?? 50_000;
  let candidates: Iterable<PlanNode[]>;
  if (opts.order === 'given' || K === 1) candidates = [nodes];
  else if (countDistinctOrders(nodes) <= maxOrders) candidates = distinctOrders(nodes);
  else candidates = [nodes, [...nodes].sort((a, b) => a.timeFactor - b.timeFactor)];
  let best: { order: PlanNode[]; bounds: number[]; ev: Evaluation; stageMax: number } | null = null;
  let tried = 0;
  for (const order of candidates) {
    tried++;
    const r = bestCutsForOrder(t, order);
    if (!r) continue;
    const ev = evaluate(t, order, r.bounds, dispatcher, opts.relay);
    // strictly better only (relative tolerance): the bottleneck first, then the slowest stage
    // (a shared host's load can tie across orders); ties keep the earlier order, the given one first
    const better = (x: number, y: number) => x < y * (1 - 1e-9);
    const tie = (x: number, y: number) => !better(x, y) && !better(y, x);
    if (!best || better(ev.bottleneckMs, best.ev.bottleneckMs) || (tie(ev.bottleneckMs, best.ev.bottleneckMs) && better(r.value, best.stageMax))) {
      best = { order, bounds: r.bounds, ev, stageMax: r.value };
    }
  }
  if (!best) {
    throw new DeferError('E_CONFIG', `no split of the model fits the nodes' memory: ${memoryShortfall(cost, nodes)}`);
  }
  const { order, bounds, ev } = best;
  return planOf(
    bounds.slice(1, -1).map((b) => cost.layerNames[t.pts[b]]),
    order,
    ev,
    tried,
  );
}

function planOf(cuts: string[], order: PlanNode[], ev: Evaluation, ordersTried: number): ChainPlan {
  return {
    cuts,
    order: order.map((n) => n.id),
    stages: ev.stages,
    bottleneckMs: ev.bottleneckMs,
    bottleneck: ev.bottleneck,
    predictedThroughputFps: ev.bottleneckMs > 0 ? 1000 / ev.bottleneckMs : Infinity,
    predictedLatencyMs: ev.latencyMs,
    hostLoadMs: ev.hostLoadMs,
    relayCpuMs: ev.relayCpuMs,
    ordersTried,
  };
}

/** Evaluate a given split (cuts as layer names, nodes in chain order) with the same cost model: for comparisons and reports. */
export function evaluateSplit(cost: CostModel, nodes: PlanNode[], cuts: string[], opts: PlanOptions = {}): ChainPlan {
  validateNodes(nodes);
  if (cuts.length !== nodes.length - 1) throw new DeferError('E_CONFIG', `${cuts.length} cuts make ${cuts.length + 1} stages, but there are ${nodes.length} nodes`);
  const t = new CostTable(cost);
  const bounds = t.boundsOf(cuts);
  return planOf(cuts, nodes, evaluate(t, nodes, bounds, opts.dispatcher ?? {}, opts.relay), 1);
}
