/**
 * Why no plan fits the nodes' memory, in figures: the split of the model into one stage per node that needs the
 * least memory on its heaviest node (memory-balanced, not time-balanced), matched with the nodes, the largest
 * stage with the node that offers most. What a planner says when it has to refuse.
 */
import { type CostModel, stageMemoryBytes } from './cost-model.js';
import { minMaxPartition } from './min-max.js';

export interface MemoryOffer {
  id: string;
  /** what the node can give a stage, bytes; undefined: unlimited */
  memoryBytes?: number;
  /** its engine computes every convolution itself (PlanNode.plainConvolutions): its stages need more */
  plainConvolutions?: boolean;
}

const mb = (b: number) => `${(b / 1e6).toFixed(0)} MB`;

/**
 * The split into `k` stages (fewer where the model has fewer cut points) whose largest memory need is least (on
 * nodes that compute convolutions themselves where `plain`): each stage's last layer (index), and its need.
 */
export function memoryBalancedStages(cost: CostModel, k: number, plain = false): { last: number; need: number }[] {
  const n = cost.layerNames.length;
  // boundary points: the start (-1), the valid cuts, the end
  const pts = [-1, ...cost.validCuts.filter((c) => c < n - 1), n - 1];
  const need = (a: number, b: number) => stageMemoryBytes(cost, pts[a] + 1, pts[b], plain);
  const split = minMaxPartition(pts.length, Math.max(1, Math.min(k, pts.length - 1)), (_, a, b) => need(a, b))!;
  return split.bounds.slice(1).map((b, i) => ({ last: pts[b], need: need(split.bounds[i], b) }));
}

/** Each stage's memory need, in order, for the split into `k` stages whose largest need is least. */
export function memoryBalancedSplit(cost: CostModel, k: number, plain = false): number[] {
  return memoryBalancedStages(cost, k, plain).map((s) => s.need);
}

/**
 * A sentence for a refusal: what the whole model needs, and which nodes lack how much for the best split over all
 * of them. Needs are counted as for the node that offers most (the whole model), and as for nodes that compute
 * convolutions themselves only where every node does (the split).
 */
export function memoryShortfall(cost: CostModel, nodes: MemoryOffer[]): string {
  const offers = nodes.map((n) => ({ id: n.id, bytes: n.memoryBytes ?? Infinity, plain: n.plainConvolutions === true })).sort((a, b) => b.bytes - a.bytes);
  const whole = stageMemoryBytes(cost, 0, cost.layerNames.length - 1, offers[0]?.plain);
  const parts = [
    `the whole model needs about ${mb(whole)} on one node (the most a node offers: ${offers[0] && Number.isFinite(offers[0].bytes) ? `${mb(offers[0].bytes)} on ${offers[0].id}${offers[0].plain ? ', which computes convolutions itself' : ''}` : 'unlimited'})`,
  ];
  if (nodes.length > 1) {
    const needs = memoryBalancedSplit(
      cost,
      nodes.length,
      offers.every((o) => o.plain),
    );
    const sorted = [...needs].sort((a, b) => b - a);
    const lacking = sorted
      .map((need, i) => ({ need, node: offers[i] }))
      .filter((x) => x.node && x.node.bytes < x.need)
      .map((x) => `${x.node.id} offers ${mb(x.node.bytes)} for a stage of ${mb(x.need)} (lacks ${mb(x.need - x.node.bytes)})`);
    parts.push(`split in ${needs.length} stages by memory, the stages need ${needs.map(mb).join(', ')}${lacking.length ? `: ${lacking.join('; ')}` : ''}`);
  }
  return `${parts.join('; ')}. Each node offers what its memory limit (or the host's free memory) leaves beyond its idle self; give the nodes more memory, or add nodes`;
}
