/**
 * The shape planner: given the nodes (speed, cores, memory, link, host) and the model's measured cost, choose the
 * whole shape of a deployment: how many stages, where to cut, which nodes serve each stage (a stage served by
 * several nodes has replicas, fed by load), how many engines (worker threads) each node runs, and which nodes stay
 * idle because they would only add communication. Pure replication, a pure chain, and everything in between.
 *
 * Cost model (docs/planner.md, "Shapes"): node i with w_i engines at time factor tf_i serves stage [a, b) at
 * w_i / (busy(a,b) x tf_i) frames per ms; a stage's rate is the sum over its nodes, and each node takes the share
 * of its frames that its rate gives it (the dispatcher feeds by load). Bounds on the time per frame:
 *  - a stage: busy(a,b) / sum(w_i / tf_i);
 *  - a node's link: its share x max(bytes in, bytes out) / bandwidth;
 *  - a host's cores: the CPU ms per frame of every engine on it (and of the broker and dispatcher, where they
 *    run there) / its cores; a host never runs more engines than it has cores;
 *  - the broker and dispatcher's one process (defer up), where the planner knows their cost: their CPU ms per
 *    frame / the cores that process keeps busy (RELAY_PROCESS_CORES);
 *  - the dispatcher's link; memory: each engine holds its stage (w_i x the stage's memory, and for w_i > 1 a worker
 *    thread's own each, must fit the node).
 * Throughput is 1 / the largest bound.
 *
 * Search, exact for this model: every distinct assignment of nodes to stages and engine counts (nodes with
 * identical figures are interchangeable, so each multiset is tried once), and for each, the cuts by dynamic
 * programming over the valid cut points that keeps, per point, the Pareto front of (slowest stage or link so far,
 * CPU so far on each shared host): the bottleneck is a maximum of monotone functions of these, so nothing better
 * is ever dropped. Tested against brute force over every shape and every set of cuts.
 */
import { DeferError } from '../core/errors.js';
import { type CostModel, CostTable, enginesMemoryBytes, type LinkSpec, type PlanNode, RELAY_PROCESS, RELAY_PROCESS_CORES, type RelayCost, relayCpuMs, transferMs } from './cost-model.js';
import { memoryBalancedSplit, memoryShortfall } from './memory-fit.js';
import { validateNodes } from './optimiser.js';

export interface ShapeNode extends PlanNode {
  /** the most engines this node may run (its --workers); default: its cores, else 1 */
  maxWorkers?: number;
}

export interface ShapeMember {
  node: string;
  workers: number;
  /** frames each engine computes in one call at most when several wait (batching.ts); absent: 1 */
  batch?: number;
}

export interface ShapeStage {
  index: number;
  members: ShapeMember[];
  firstLayer: string;
  lastLayer: string;
  layerCount: number;
  weightBytes: number;
  /** estimated memory of one engine of this stage */
  memoryBytes: number;
  /** the same on a member whose engine computes every convolution itself (PlanNode.plainConvolutions), where one is */
  plainMemoryBytes?: number;
  /** what each frame of a batch beyond the first adds to one engine, bytes */
  batchFrameBytes: number;
  /** predicted ms per frame of this stage as a whole (all its engines together) */
  stageMs: number;
  /** predicted ms one engine of each member spends on a frame */
  engineMs: Record<string, number>;
  /** the share of the stage's frames each member gets */
  share: Record<string, number>;
  outputBytes: number;
}

export interface ShapePlan {
  cuts: string[];
  stages: ShapeStage[];
  /** nodes left out: they would add communication, or do not fit */
  idle: string[];
  bottleneckMs: number;
  bottleneck: string;
  predictedThroughputFps: number;
  /** predicted frames/s of the whole model on one engine of a time-factor-1 node (the single-process baseline) */
  singleFps: number;
  hostLoadMs: { host: string; nodes: string[]; cores: number; ms: number }[];
  relayCpuMs: number;
  /** distinct assignments of nodes to stages and engines searched */
  shapesTried: number;
  /** false: the search stopped at its limit (maxShapes) for some stage count: the best found, not proven the best */
  exhaustive: boolean;
}

export interface ShapeOptions {
  dispatcher?: LinkSpec;
  relay?: RelayCost;
  /** force the number of nodes serving each stage (its length: the number of stages), e.g. [2, 1] */
  replicas?: number[];
  /** the most stages to consider (default: nodes, and valid cuts + 1) */
  maxStages?: number;
  /** search at most this many distinct assignments, shared evenly among the stage counts (default 400,000: 5-10 s on the 2-core VM where the bounds do not bite) */
  maxShapes?: number;
  /** false: search without cutting off partial shapes by their bounds (the tests compare the two) */
  prune?: boolean;
}

/** the engines a node may run: its --workers, else its cores, else 1 */
export function engineCap(n: ShapeNode): number {
  return Math.max(1, Math.floor(n.maxWorkers ?? n.cores ?? 1));
}

/**
 * Nodes that are interchangeable for the cost model: the same figures, and the same shared host (a node alone on
 * its host is not coupled to any other: which host it is does not matter).
 */
const kindOf = (n: ShapeNode, sharedHost: string | undefined) =>
  JSON.stringify([n.timeFactor, n.cpuFactor, n.memoryBytes, n.bandwidthMbps, n.latencyMs, sharedHost ?? (n.host ? '' : null), n.cores, engineCap(n), n.plainConvolutions === true]);

interface Kind {
  nodes: ShapeNode[];
  /** the most engines one of these nodes may run */
  cap: number;
  /** the host these nodes share with other nodes (or with the broker and dispatcher), whose cores bound their engines together */
  sharedHost?: string;
  /** how many of these nodes serve a stage changes nothing but the nodes used: no memory or link limit, no CPU term of their own above the stage's */
  free: boolean;
}

/** One stage's nodes, before cuts: the members, their engines, and what follows from them alone. */
interface Group {
  members: { node: ShapeNode; workers: number }[];
  /** sum of w_i / tf_i: frames per ms per ms of busy time */
  capacity: number;
}

/**
 * The bound terms of a stage on points a..b for group g: stage time (max with its link and one-node hosts), and CPU
 * per shared host. Where the broker and dispatcher (given `relay`) run in one process, their CPU per frame, in a slot
 * of its own after the hosts', over RELAY_PROCESS_CORES bounds the time per frame on its own as well as adding to
 * their host's load.
 */
class Terms {
  readonly shared: string[];
  readonly cores: Map<string, number>;
  private readonly relayHost?: string;
  /** the relay process's slot in a CPU vector (after the shared hosts'), where there is a relay */
  private readonly relaySlot?: number;
  constructor(
    readonly t: CostTable,
    readonly nodes: ShapeNode[],
    readonly relay?: RelayCost,
  ) {
    const byHost = new Map<string, ShapeNode[]>();
    for (const n of nodes) if (n.host) byHost.set(n.host, [...(byHost.get(n.host) ?? []), n]);
    this.cores = new Map([...byHost].map(([h, ns]) => [h, Math.min(...ns.map((n) => n.cores ?? 1))]));
    this.relayHost = relay && byHost.has(relay.host) ? relay.host : undefined;
    // hosts whose CPU couples stages: several nodes, or the broker and dispatcher besides a node
    this.shared = [...byHost].filter(([h, ns]) => ns.length > 1 || h === this.relayHost).map(([h]) => h);
    if (relay && relay.sharedProcess !== false) this.relaySlot = this.shared.length;
  }

  /** a CPU vector of zeros: one per shared host, and the relay process's */
  private zeros(): number[] {
    return new Array(this.shared.length + (this.relaySlot === undefined ? 0 : 1)).fill(0);
  }

  /** add relay CPU `ms` to its host's slot (where it shares one with nodes) and to its process's */
  private addRelay(out: number[], ms: number): void {
    if (this.relayHost) out[this.shared.indexOf(this.relayHost)] += ms;
    if (this.relaySlot !== undefined) out[this.relaySlot] += ms;
  }

  /** the stage-local bound (Infinity: does not fit memory) */
  local(g: Group, a: number, b: number): number {
    const t = this.t;
    const busy = t.busyMs(a, b);
    let v = busy / g.capacity;
    const bytes = Math.max(t.wireIn(a), t.wireOut(b));
    for (const { node, workers } of g.members) {
      if (node.memoryBytes !== undefined && enginesMemoryBytes(t.memory(a, b, node.plainConvolutions), workers, 1, 0, t.weightBytes(a, b)) > node.memoryBytes) return Infinity;
      const share = workers / node.timeFactor / g.capacity;
      v = Math.max(v, share * transferMs(bytes, node.bandwidthMbps));
      if (node.host && !this.shared.includes(node.host)) v = Math.max(v, (share * busy * (node.cpuFactor ?? node.timeFactor)) / this.cores.get(node.host)!);
    }
    return v;
  }

  /** CPU ms per frame this stage adds to each shared host and to the relay process (the relay's bytes for this stage's output) */
  cpu(g: Group, a: number, b: number): number[] {
    const busy = this.t.busyMs(a, b);
    const out = this.zeros();
    for (const { node, workers } of g.members) {
      const i = node.host ? this.shared.indexOf(node.host) : -1;
      if (i >= 0) out[i] += (workers / node.timeFactor / g.capacity) * busy * (node.cpuFactor ?? node.timeFactor);
    }
    if (this.relay) this.addRelay(out, (this.t.wireOut(b) / 1e6) * this.relay.msPerMB);
    return out;
  }

  /** CPU on each shared host and the relay process that does not depend on the cuts: the relay's input bytes and its messages */
  fixedCpu(stages: number): number[] {
    const out = this.zeros();
    if (this.relay) this.addRelay(out, (this.t.wireIn(0) / 1e6) * this.relay.msPerMB + (stages + 1) * this.relay.msPerMessage);
    return out;
  }

  /** the broker's and dispatcher's CPU per frame for a split at `bounds` (0 without a relay): fixedCpu's and cpu's relay parts together */
  relayMs(bounds: number[]): number {
    return this.relay ? relayCpuMs(this.t, bounds, this.relay) : 0;
  }

  /** the bottleneck from a stage maximum, the shared hosts' CPU and the relay process's */
  value(mx: number, cpu: number[]): number {
    let v = mx;
    this.shared.forEach((h, i) => {
      v = Math.max(v, cpu[i] / this.cores.get(h)!);
    });
    return Math.max(v, this.relayBoundMs(cpu));
  }

  /** the relay process's bound in a CPU vector: its CPU per frame over the cores it keeps busy (0 without one) */
  relayBoundMs(cpu: number[]): number {
    return this.relaySlot === undefined ? 0 : cpu[this.relaySlot] / RELAY_PROCESS_CORES;
  }
}

interface Entry {
  mx: number;
  cpu: number[];
  prev?: Entry;
  point: number;
}

/** Best cuts for groups in order: the Pareto DP. Returns the boundaries and the bottleneck before constants, or null. */
function bestCuts(terms: Terms, groups: Group[], bound: number): { value: number; bounds: number[] } | null {
  const t = terms.t;
  const m = t.pts.length;
  const S = groups.length;
  if (S > m - 1) return null;
  let fronts: Entry[][] = Array.from({ length: m }, () => []);
  fronts[0] = [{ mx: 0, cpu: terms.fixedCpu(S), point: 0 }];
  for (let k = 0; k < S; k++) {
    const next: Entry[][] = Array.from({ length: m }, () => []);
    const g = groups[k];
    const lastJ = k === S - 1 ? m - 1 : m - 1 - (S - 1 - k);
    for (let i = 0; i < m; i++) {
      if (!fronts[i].length) continue;
      for (let j = k === S - 1 ? m - 1 : i + 1; j <= lastJ; j++) {
        const loc = terms.local(g, i, j);
        if (loc >= bound) continue;
        const add = terms.cpu(g, i, j);
        for (const e of fronts[i]) {
          const mx = Math.max(e.mx, loc);
          const cpu = e.cpu.map((c, h) => c + add[h]);
          if (terms.value(mx, cpu) >= bound) continue;
          insert(next[j], { mx, cpu, prev: e, point: j });
        }
      }
    }
    fronts = next;
  }
  let best: Entry | undefined;
  let bestV = Infinity;
  for (const e of fronts[m - 1]) {
    const v = terms.value(e.mx, e.cpu);
    if (v < bestV) {
      bestV = v;
      best = e;
    }
  }
  if (!best) return null;
  const bounds: number[] = [];
  for (let e: Entry | undefined = best; e; e = e.prev) bounds.unshift(e.point);
  return { value: bestV, bounds };
}

/** Add `e` to a Pareto front unless an entry dominates it; drop the entries it dominates. */
function insert(front: Entry[], e: Entry): void {
  const le = (x: Entry, y: Entry) => x.mx <= y.mx && x.cpu.every((c, i) => c <= y.cpu[i]);
  if (front.some((f) => le(f, e))) return;
  for (let i = front.length - 1; i >= 0; i--) if (le(e, front[i])) front.splice(i, 1);
  front.push(e);
}

/** What a partial assignment can still reach: for pruning the search (see planShape). */
interface Reach {
  /** sum of w / tf over the engines placed, and at most over those still to place */
  capacity: number;
  capacityLeft: number;
  /** engines placed, and at most still to place */
  engines: number;
  enginesLeft: number;
}

type Assignment = { kind: number; stage: number; workers: number }[];

/**
 * Every distinct way to spread the kinds' nodes over `S` stages with engine counts, each stage served; shared hosts'
 * cores respected. Per kind and stage: r of its nodes with W engines among them, spread as evenly as possible. For
 * interchangeable nodes an even split dominates every other split of W engines over r nodes: the stage's capacity
 * and the CPU it puts on a host are the same, and the most memory and link share any one node takes are least.
 * Where a kind's nodes have no memory or link limit (and no CPU term of their own above the stage's), r changes
 * nothing but the number of nodes used, and only the fewest (ceil(W / cap)) is tried. `prune` cuts off a partial
 * assignment that cannot beat the best so far.
 */
function* assignments(kinds: Kind[], S: number, replicas: number[] | undefined, hostCores: (h: string) => number, prune: (r: Reach) => boolean): Generator<Assignment> {
  const out: Assignment = [];
  const hostUse = new Map<string, number>();
  const members = new Array<number>(S).fill(0);
  // the most capacity and engines the kinds from k on can add
  const cap = (k: Kind, n: number, coresLeft: number) => Math.min(n * k.cap, coresLeft);
  const capLeft = kinds.map(() => 0);
  const engLeft = kinds.map(() => 0);
  for (let k = kinds.length - 1; k >= 0; k--) {
    const kind = kinds[k];
    const e = cap(kind, kind.nodes.length, kind.sharedHost ? hostCores(kind.sharedHost) : Infinity);
    engLeft[k] = e + (engLeft[k + 1] ?? 0);
    capLeft[k] = e / kind.nodes[0].timeFactor + (capLeft[k + 1] ?? 0);
  }
  // the nodes of the kinds from k on: each serves one stage at most, so stages still without their nodes need as many
  const nodesFrom = kinds.map(() => 0);
  for (let k = kinds.length - 1; k >= 0; k--) nodesFrom[k] = kinds[k].nodes.length + (nodesFrom[k + 1] ?? 0);
  const deficit = (s: number) => (replicas ? replicas[s] - members[s] : members[s] > 0 ? 0 : 1);
  /** whether the nodes still to place can give every stage its nodes: before stage s only the later kinds can */
  const servable = (ki: number, s: number, nodesLeft: number) => {
    let before = 0;
    let after = 0;
    for (let x = 0; x < S; x++) {
      if (x < s) before += deficit(x);
      else after += deficit(x);
    }
    const later = nodesFrom[ki + 1] ?? 0;
    return before <= later && before + after <= later + nodesLeft;
  };
  let capacity = 0;
  let engines = 0;
  function* perKind(ki: number): Generator<Assignment> {
    if (ki === kinds.length) {
      if (members.every((c, s) => (replicas ? c === replicas[s] : c > 0))) yield out.slice();
      return;
    }
    if (prune({ capacity, capacityLeft: capLeft[ki], engines, enginesLeft: engLeft[ki] })) return;
    const kind = kinds[ki];
    const tf = kind.nodes[0].timeFactor;
    const host = kind.sharedHost;
    const cores = host ? hostCores(host) : Infinity;
    function* stage(s: number, nodesLeft: number): Generator<Assignment> {
      if (!servable(ki, s, nodesLeft)) return;
      if (s === S) {
        yield* perKind(ki + 1);
        return;
      }
      yield* stage(s + 1, nodesLeft);
      const used = host ? (hostUse.get(host) ?? 0) : 0;
      for (let r = 1; r <= nodesLeft; r++) {
        if (replicas && members[s] + r > replicas[s]) break;
        for (let w = r; w <= r * kind.cap && used + w <= cores; w++) {
          if (kind.free && !replicas && r !== Math.ceil(w / kind.cap)) continue;
          const rest = cap(kind, nodesLeft - r, cores - used - w);
          capacity += w / tf;
          engines += w;
          if (!prune({ capacity, capacityLeft: rest / tf + (capLeft[ki + 1] ?? 0), engines, enginesLeft: rest + (engLeft[ki + 1] ?? 0) })) {
            if (host) hostUse.set(host, used + w);
            members[s] += r;
            for (let i = 0; i < r; i++) out.push({ kind: ki, stage: s, workers: Math.floor(w / r) + (i < w % r ? 1 : 0) });
            yield* stage(s + 1, nodesLeft - r);
            out.length -= r;
            members[s] -= r;
            if (host) hostUse.set(host, used);
          }
          capacity -= w / tf;
          engines -= w;
        }
      }
    }
    yield* stage(0, kind.nodes.length);
  }
  yield* perKind(0);
}

function validate(nodes: ShapeNode[], cost: CostModel, opts: ShapeOptions): void {
  validateNodes(nodes);
  const r = opts.replicas;
  if (r) {
    if (!r.length || r.some((x) => !Number.isInteger(x) || x < 1)) throw new DeferError('E_CONFIG', `replicas must be whole numbers >= 1, one per stage (e.g. 2,1), got ${r.join(',')}`);
    const total = r.reduce((a, b) => a + b, 0);
    if (total > nodes.length) throw new DeferError('E_CONFIG', `replicas ${r.join(',')} need ${total} nodes, but there are ${nodes.length}`);
    if (r.length - 1 > cost.validCuts.length) throw new DeferError('E_CONFIG', `replicas ${r.join(',')} make ${r.length} stages, but the model has only ${cost.validCuts.length} valid cut points`);
  }
}

/** Choose the deployment's shape for `nodes`: stages, cuts, replicas and engines (see the module comment). */
export function planShape(cost: CostModel, nodes: ShapeNode[], opts: ShapeOptions = {}): ShapePlan {
  validate(nodes, cost, opts);
  const t = new CostTable(cost);
  const terms = new Terms(t, nodes, opts.relay);
  // engines per node: its cap, and on a host of its own no more than the host's cores
  const capOf = (n: ShapeNode) => (n.host && !terms.shared.includes(n.host) ? Math.min(engineCap(n), terms.cores.get(n.host)!) : engineCap(n));
  const kindsWith = (cap: (n: ShapeNode) => number): Kind[] => {
    const kindMap = new Map<string, Kind>();
    for (const n of nodes) {
      const sharedHost = n.host && terms.shared.includes(n.host) ? n.host : undefined;
      const k = kindOf(n, sharedHost);
      // a node alone on its host: its CPU term (share x busy x cf / cores) stays under the stage's (busy x tf / W) when cf <= tf
      const free = n.memoryBytes === undefined && n.bandwidthMbps === undefined && (!n.host || sharedHost !== undefined || (n.cpuFactor ?? n.timeFactor) <= n.timeFactor);
      if (!kindMap.has(k)) kindMap.set(k, { nodes: [], cap: cap(n), sharedHost, free });
      kindMap.get(k)!.nodes.push(n);
    }
    return [...kindMap.values()];
  };
  const totalEngines = nodes.reduce((s, n) => s + engineCap(n), 0);
  const stageCounts = opts.replicas ? [opts.replicas.length] : Array.from({ length: Math.min(opts.maxStages ?? nodes.length, nodes.length, cost.validCuts.length + 1, totalEngines) }, (_, i) => i + 1);
  const fixed = Math.max(0, transferMs(Math.max(t.wireIn(0), t.wireOut(t.pts.length - 1)), opts.dispatcher?.bandwidthMbps));
  const maxShapes = opts.maxShapes ?? 400_000;
  let tried = 0;
  type Best = { value: number; engines: number; stages: number; used: number; groups: Group[]; bounds: number[] };
  let best: Best | undefined;
  const better = (x: Omit<Best, 'groups' | 'bounds'>, y: Best | undefined) => {
    if (!y) return true;
    const lt = (p: number, q: number) => p < q * (1 - 1e-9);
    if (lt(x.value, y.value)) return true;
    if (lt(y.value, x.value)) return false;
    // ties: fewer engines (memory), then fewer stages (latency, messages), then fewer nodes
    return x.engines < y.engines || (x.engines === y.engines && (x.stages < y.stages || (x.stages === y.stages && x.used < y.used)));
  };
  // First with each host running no more engines than its cores; where no shape then fits the nodes' memory,
  // again with more engines than cores, one per node (stages that must be apart for memory share the cores: the
  // CPU terms price it; a second engine on cores already shared would add memory, not throughput)
  const passes: [Kind[], (h: string) => number][] = [
    [kindsWith(capOf), (h) => terms.cores.get(h)!],
    [kindsWith(() => 1), () => Infinity],
  ];
  // Lower bounds, valid for every shape of S stages: the whole model's busy time (each cut adds at least the
  // cheapest decode + encode) over the shape's capacity; and where every node is on one host, that host's CPU (every
  // stage's, with the broker's and dispatcher's least for S stages) over its cores.
  const m = t.pts.length;
  let cheapestCut = Infinity;
  let leastWire = Infinity;
  for (let j = 1; j < m - 1; j++) {
    cheapestCut = Math.min(cheapestCut, t.codecMs(j, j));
    leastWire = Math.min(leastWire, t.wireOut(j));
  }
  const busyOf = (S: number) => t.busyMs(0, m - 1) + (S > 1 ? (S - 1) * cheapestCut : 0);
  const oneHost = nodes[0].host && nodes.every((n) => n.host === nodes[0].host) && terms.shared.includes(nodes[0].host) ? nodes[0].host : undefined;
  const cf = Math.min(...nodes.map((n) => n.cpuFactor ?? n.timeFactor));
  const hostBound = (S: number) => {
    if (!oneHost) return 0;
    const relay = opts.relay && opts.relay.host === oneHost ? ((t.wireIn(0) + t.wireOut(m - 1) + (S - 1) * leastWire) / 1e6) * opts.relay.msPerMB + (S + 1) * opts.relay.msPerMessage : 0;
    return (busyOf(S) * cf + relay) / terms.cores.get(oneHost)!;
  };
  // the most memory any node offers (undefined: some node is unlimited)
  const roomiest = nodes.every((n) => n.memoryBytes !== undefined) ? Math.max(...nodes.map((n) => n.memoryBytes!)) : undefined;
  // a partial shape is cut off when even all the capacity it could still add leaves it worse than the best so far;
  // at a tie it needs all of that capacity, so its engines are known and it loses on engines, then stages
  // (bounds per stage count: the whole model's busy time, and the larger of the fixed and the host's bounds)
  const pruneFor = (S: number, busy: number, floor: number) => (r: Reach) => {
    if (!best || opts.prune === false) return false;
    const need = busy / (r.capacity + r.capacityLeft);
    if (Math.max(floor, need) > best.value * (1 + 1e-9)) return true;
    return need >= best.value * (1 - 1e-9) && !better({ value: best.value, engines: r.engines + r.enginesLeft, stages: S, used: 0 }, best) && S >= best.stages;
  };
  // each stage count gets an even share of what is left of the budget: where one runs out, the next still gets its turn
  let exhaustive = true;
  for (const [kinds, cores] of passes) {
    if (best) break;
    for (const [i, S] of stageCounts.entries()) {
      const busy = busyOf(S);
      const floor = Math.max(fixed, hostBound(S));
      if (best && opts.prune !== false && floor > best.value * (1 + 1e-9)) continue;
      // no S stages fit: even the split whose largest stage needs least needs more than any node has
      if (opts.prune !== false && roomiest !== undefined && Math.max(...memoryBalancedSplit(cost, S)) > roomiest) continue;
      const budget = tried + Math.floor((maxShapes - tried) / (stageCounts.length - i));
      for (const a of assignments(kinds, S, opts.replicas, cores, pruneFor(S, busy, floor))) {
        if (++tried > budget) {
          tried--;
          exhaustive = false;
          break;
        }
        const used = kinds.map(() => 0);
        const groups: Group[] = Array.from({ length: S }, () => ({ members: [], capacity: 0 }));
        for (const x of a) {
          const node = kinds[x.kind].nodes[used[x.kind]++];
          groups[x.stage].members.push({ node, workers: x.workers });
          groups[x.stage].capacity += x.workers / node.timeFactor;
        }
        const engines = a.reduce((s, x) => s + x.workers, 0);
        // a lower bound: the whole model's busy time over every engine of the shape
        const lower = Math.max(floor, busy / groups.reduce((s, g) => s + g.capacity, 0));
        if (best && !better({ value: lower, engines, stages: S, used: a.length }, best) && lower >= best.value * (1 - 1e-9)) continue;
        const r = bestCuts(terms, groups, best ? best.value * (1 + 1e-9) : Infinity);
        if (!r) continue;
        const cand = { value: Math.max(r.value, fixed), engines, stages: S, used: a.length };
        if (better(cand, best)) best = { ...cand, groups, bounds: r.bounds };
      }
    }
  }
  if (!best && !exhaustive) throw new DeferError('E_CONFIG', `no shape found in ${maxShapes} shapes searched for ${nodes.length} nodes: give --replicas (nodes per stage) or fewer --workers`);
  if (!best) {
    throw new DeferError('E_CONFIG', `no shape of the model fits the nodes' memory: ${memoryShortfall(cost, nodes)}`);
  }
  return { ...describe(t, terms, nodes, best.groups, best.bounds, opts, tried), exhaustive };
}

/** Evaluate a given shape (groups in stage order, with their cuts) under the same model: for reports, and the brute-force test. */
export function evaluateShape(cost: CostModel, nodes: ShapeNode[], stages: { members: ShapeMember[] }[], cuts: string[], opts: ShapeOptions = {}): ShapePlan {
  const t = new CostTable(cost);
  const terms = new Terms(t, nodes, opts.relay);
  if (cuts.length !== stages.length - 1) throw new DeferError('E_CONFIG', `${cuts.length} cuts make ${cuts.length + 1} stages, but ${stages.length} stages were given`);
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const groups: Group[] = stages.map((s) => {
    const members = s.members.map((m) => {
      const node = byId.get(m.node);
      if (!node) throw new DeferError('E_CONFIG', `node '${m.node}' is not one of the nodes`);
      return { node, workers: m.workers };
    });
    return { members, capacity: members.reduce((x, m) => x + m.workers / m.node.timeFactor, 0) };
  });
  const bounds = t.boundsOf(cuts);
  return describe(t, terms, nodes, groups, bounds, opts, 1);
}

function describe(t: CostTable, terms: Terms, nodes: ShapeNode[], groups: Group[], bounds: number[], opts: ShapeOptions, tried: number): ShapePlan {
  const c = t.cost;
  let bottleneckMs = 0;
  let bottleneck = 'nothing';
  const consider = (ms: number, what: string) => {
    if (ms > bottleneckMs * (1 + 1e-12)) {
      bottleneckMs = ms;
      bottleneck = what;
    }
  };
  const cpu = terms.fixedCpu(groups.length);
  const stages: ShapeStage[] = groups.map((g, k) => {
    const a = bounds[k];
    const b = bounds[k + 1];
    const first = t.pts[a] + 1;
    const last = t.pts[b];
    const busy = t.busyMs(a, b);
    const names = g.members.map((m) => memberName({ node: m.node.id, workers: m.workers })).join('+');
    const local = terms.local(g, a, b);
    consider(busy / g.capacity, `stage ${k + 1} (${names})`);
    if (local > busy / g.capacity) consider(local, `link or cores of stage ${k + 1} (${names})`);
    const add = terms.cpu(g, a, b);
    add.forEach((x, i) => {
      cpu[i] += x;
    });
    return {
      index: k,
      members: g.members.map((m) => ({ node: m.node.id, workers: m.workers })),
      firstLayer: c.layerNames[first],
      lastLayer: c.layerNames[last],
      layerCount: last - first + 1,
      weightBytes: t.weightBytes(a, b),
      memoryBytes: t.memory(a, b),
      ...(g.members.some((m) => m.node.plainConvolutions) ? { plainMemoryBytes: t.memory(a, b, true) } : {}),
      batchFrameBytes: t.batchFrameBytes(a, b),
      stageMs: busy / g.capacity,
      engineMs: Object.fromEntries(g.members.map((m) => [m.node.id, busy * m.node.timeFactor])),
      share: Object.fromEntries(g.members.map((m) => [m.node.id, m.workers / m.node.timeFactor / g.capacity])),
      outputBytes: t.outBytes(b),
    };
  });
  const hostLoadMs = terms.shared.map((h, i) => ({
    host: h,
    nodes: groups.flatMap((g) => g.members.filter((m) => m.node.host === h).map((m) => m.node.id)),
    cores: terms.cores.get(h)!,
    ms: cpu[i] / terms.cores.get(h)!,
  }));
  for (const h of hostLoadMs) consider(h.ms, `the ${h.cores} cores of host ${h.host}`);
  consider(terms.relayBoundMs(cpu), RELAY_PROCESS);
  consider(transferMs(Math.max(t.wireIn(0), t.wireOut(t.pts.length - 1)), opts.dispatcher?.bandwidthMbps), 'link of the dispatcher');
  const used = new Set(groups.flatMap((g) => g.members.map((m) => m.node.id)));
  return {
    cuts: bounds.slice(1, -1).map((b) => c.layerNames[t.pts[b]]),
    stages,
    idle: nodes.filter((n) => !used.has(n.id)).map((n) => n.id),
    bottleneckMs,
    bottleneck,
    predictedThroughputFps: bottleneckMs > 0 ? 1000 / bottleneckMs : Infinity,
    singleFps: 1000 / t.busyMs(0, t.pts.length - 1),
    hostLoadMs,
    relayCpuMs: terms.relayMs(bounds),
    shapesTried: tried,
    exhaustive: true,
  };
}

/** A node with its engines, as shapes write it: `n1x2` (2 workers), `n1` (one). */
export function memberName(m: ShapeMember): string {
  return m.workers > 1 ? `${m.node}x${m.workers}` : m.node;
}

/** The shape in one line: `n1x2 | n2+n3` (stages separated by |, replicas by +, engines as xW). */
export function shapeLine(stages: (ShapeMember[] | { members: ShapeMember[] })[]): string {
  return stages.map((s) => (Array.isArray(s) ? s : s.members).map(memberName).join('+')).join(' | ');
}
