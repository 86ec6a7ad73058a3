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
 *  - the dispatcher's link; memory: each engine holds its stage (w_i x the stage's memory must fit the node).
 * Throughput is 1 / the largest bound.
 *
 * Search, exact for this model: every distinct assignment of nodes to stages and engine counts (nodes with
 * identical figures are interchangeable, so each multiset is tried once), and for each, the cuts by dynamic
 * programming over the valid cut points that keeps, per point, the Pareto front of (slowest stage or link so far,
 * CPU so far on each shared host): the bottleneck is a maximum of monotone functions of these, so nothing better
 * is ever dropped. Tested against brute force over every shape and every set of cuts.
 */
import { DeferError } from '../core/errors.js';
import { type CostModel, CostTable, type LinkSpec, type PlanNode, type RelayCost, transferMs } from './cost-model.js';
import { memoryShortfall } from './memory-fit.js';
import { validateNodes } from './optimiser.js';

export interface ShapeNode extends PlanNode {
  /** the most engines this node may run (its --workers); default: its cores, else 1 */
  maxWorkers?: number;
}

export interface ShapeMember {
  node: string;
  workers: number;
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
}

export interface ShapeOptions {
  dispatcher?: LinkSpec;
  relay?: RelayCost;
  /** force the number of nodes serving each stage (its length: the number of stages), e.g. [2, 1] */
  replicas?: number[];
  /** the most stages to consider (default: nodes, and valid cuts + 1) */
  maxStages?: number;
  /** give up (E_CONFIG) beyond this many distinct assignments (default 2,000,000) */
  maxShapes?: number;
}

/** the engines a node may run: its --workers, else its cores, else 1 */
export function engineCap(n: ShapeNode): number {
  return Math.max(1, Math.floor(n.maxWorkers ?? n.cores ?? 1));
}

const kindOf = (n: ShapeNode) => JSON.stringify([n.timeFactor, n.cpuFactor, n.memoryBytes, n.bandwidthMbps, n.latencyMs, n.host, n.cores, engineCap(n)]);

interface Kind {
  nodes: ShapeNode[];
  cap: number;
}

/** One stage's nodes, before cuts: the members, their engines, and what follows from them alone. */
interface Group {
  members: { node: ShapeNode; workers: number }[];
  /** sum of w_i / tf_i: frames per ms per ms of busy time */
  capacity: number;
}

/** The bound terms of a stage on points a..b for group g: stage time (max with its link and one-node hosts), and CPU per shared host. */
class Terms {
  readonly shared: string[];
  readonly cores: Map<string, number>;
  private readonly relayHost?: string;
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
  }

  /** the stage-local bound (Infinity: does not fit memory) */
  local(g: Group, a: number, b: number): number {
    const t = this.t;
    const busy = t.busyMs(a, b);
    const mem = t.memory(a, b);
    let v = busy / g.capacity;
    const bytes = Math.max(t.wireIn(a), t.wireOut(b));
    for (const { node, workers } of g.members) {
      if (node.memoryBytes !== undefined && workers * mem > node.memoryBytes) return Infinity;
      const share = workers / node.timeFactor / g.capacity;
      v = Math.max(v, share * transferMs(bytes, node.bandwidthMbps));
      if (node.host && !this.shared.includes(node.host)) v = Math.max(v, (share * busy * (node.cpuFactor ?? node.timeFactor)) / this.cores.get(node.host)!);
    }
    return v;
  }

  /** CPU ms per frame this stage adds to each shared host (the relay's bytes for this stage's output included) */
  cpu(g: Group, a: number, b: number): number[] {
    const busy = this.t.busyMs(a, b);
    const out = this.shared.map(() => 0);
    for (const { node, workers } of g.members) {
      const i = node.host ? this.shared.indexOf(node.host) : -1;
      if (i >= 0) out[i] += (workers / node.timeFactor / g.capacity) * busy * (node.cpuFactor ?? node.timeFactor);
    }
    if (this.relayHost) out[this.shared.indexOf(this.relayHost)] += (this.t.wireOut(b) / 1e6) * this.relay!.msPerMB;
    return out;
  }

  /** CPU on each shared host that does not depend on the cuts: the relay's input bytes and its messages */
  fixedCpu(stages: number): number[] {
    const out = this.shared.map(() => 0);
    if (this.relayHost) out[this.shared.indexOf(this.relayHost)] = (this.t.wireIn(0) / 1e6) * this.relay!.msPerMB + (stages + 1) * this.relay!.msPerMessage;
    return out;
  }

  /** the broker's and dispatcher's CPU per frame for a split at `bounds` (0 where their host runs no node): fixedCpu's and cpu's relay parts together */
  relayMs(bounds: number[]): number {
    if (!this.relayHost) return 0;
    let bytes = this.t.wireIn(0);
    for (let k = 1; k < bounds.length; k++) bytes += this.t.wireOut(bounds[k]);
    return (bytes / 1e6) * this.relay!.msPerMB + bounds.length * this.relay!.msPerMessage;
  }

  /** the bottleneck from a stage maximum and the shared hosts' CPU */
  value(mx: number, cpu: number[]): number {
    let v = mx;
    this.shared.forEach((h, i) => {
      v = Math.max(v, cpu[i] / this.cores.get(h)!);
    });
    return v;
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

/** Every distinct way to spread the kinds' nodes over `S` stages with engine counts, each stage served; host cores respected. */
function* assignments(kinds: Kind[], S: number, replicas: number[] | undefined, cores: (k: Kind) => [string | undefined, number]): Generator<{ kind: number; stage: number; workers: number }[]> {
  // options for one node: (stage, workers)
  const out: { kind: number; stage: number; workers: number }[] = [];
  const hostUse = new Map<string, number>();
  const members = new Array<number>(S).fill(0);
  function* perKind(ki: number): Generator<{ kind: number; stage: number; workers: number }[]> {
    if (ki === kinds.length) {
      if (members.every((c, s) => (replicas ? c === replicas[s] : c > 0))) yield out.slice();
      return;
    }
    const kind = kinds[ki];
    const [host, hostCores] = cores(kind);
    // non-increasing sequence of option indices: a multiset of options for this kind's nodes (the rest idle)
    const options: [number, number][] = [];
    for (let s = 0; s < S; s++) for (let w = 1; w <= kind.cap; w++) options.push([s, w]);
    function* pick(left: number, from: number): Generator<{ kind: number; stage: number; workers: number }[]> {
      yield* perKind(ki + 1);
      if (left === 0) return;
      for (let o = from; o < options.length; o++) {
        const [s, w] = options[o];
        if (replicas && members[s] >= replicas[s]) continue;
        const used = host ? (hostUse.get(host) ?? 0) : 0;
        if (host && used + w > hostCores) continue;
        if (host) hostUse.set(host, used + w);
        members[s]++;
        out.push({ kind: ki, stage: s, workers: w });
        yield* pick(left - 1, o);
        out.pop();
        members[s]--;
        if (host) hostUse.set(host, used);
      }
    }
    yield* pick(kind.nodes.length, 0);
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
  const kindMap = new Map<string, Kind>();
  for (const n of nodes) {
    const k = kindOf(n);
    if (!kindMap.has(k)) kindMap.set(k, { nodes: [], cap: engineCap(n) });
    kindMap.get(k)!.nodes.push(n);
  }
  const kinds = [...kindMap.values()];
  const coresOf = (k: Kind): [string | undefined, number] => {
    const h = k.nodes[0].host;
    return [h, h ? terms.cores.get(h)! : Infinity];
  };
  const totalEngines = nodes.reduce((s, n) => s + engineCap(n), 0);
  const stageCounts = opts.replicas ? [opts.replicas.length] : Array.from({ length: Math.min(opts.maxStages ?? nodes.length, nodes.length, cost.validCuts.length + 1, totalEngines) }, (_, i) => i + 1);
  const fixed = Math.max(0, transferMs(Math.max(t.wireIn(0), t.wireOut(t.pts.length - 1)), opts.dispatcher?.bandwidthMbps));
  const maxShapes = opts.maxShapes ?? 2_000_000;
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
  // again without that rule (stages that must be apart for memory share the cores: the CPU terms price it)
  for (const cores of [coresOf, (k: Kind): [string | undefined, number] => [k.nodes[0].host, Infinity]]) {
    if (best) break;
    for (const S of stageCounts) {
      for (const a of assignments(kinds, S, opts.replicas, cores)) {
        if (++tried > maxShapes) throw new DeferError('E_CONFIG', `more than ${maxShapes} shapes to search for ${nodes.length} nodes: give --replicas or fewer --workers`);
        const used = kinds.map(() => 0);
        const groups: Group[] = Array.from({ length: S }, () => ({ members: [], capacity: 0 }));
        for (const x of a) {
          const node = kinds[x.kind].nodes[used[x.kind]++];
          groups[x.stage].members.push({ node, workers: x.workers });
          groups[x.stage].capacity += x.workers / node.timeFactor;
        }
        const engines = a.reduce((s, x) => s + x.workers, 0);
        // a lower bound: the whole model's busy time over every engine of the shape
        const lower = Math.max(fixed, t.busyMs(0, t.pts.length - 1) / groups.reduce((s, g) => s + g.capacity, 0));
        if (best && !better({ value: lower, engines, stages: S, used: a.length }, best) && lower >= best.value * (1 - 1e-9)) continue;
        const r = bestCuts(terms, groups, best ? best.value * (1 + 1e-9) : Infinity);
        if (!r) continue;
        const cand = { value: Math.max(r.value, fixed), engines, stages: S, used: a.length };
        if (better(cand, best)) best = { ...cand, groups, bounds: r.bounds };
      }
    }
  }
  if (!best) {
    throw new DeferError('E_CONFIG', `no shape of the model fits the nodes' memory: ${memoryShortfall(cost, nodes)}`);
  }
  return describe(t, terms, nodes, best.groups, best.bounds, opts, tried);
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
    consider(busy / g.capacity, `stage ${k} (${names})`);
    if (local > busy / g.capacity) consider(local, `link or cores of stage ${k} (${names})`);
    const add = terms.cpu(g, a, b);
    add.forEach((x, i) => {
      cpu[i] += x;
    });
    let weightBytes = 0;
    for (let i = first; i <= last; i++) weightBytes += c.weightBytes[i];
    return {
      index: k,
      members: g.members.map((m) => ({ node: m.node.id, workers: m.workers })),
      firstLayer: c.layerNames[first],
      lastLayer: c.layerNames[last],
      layerCount: last - first + 1,
      weightBytes,
      memoryBytes: t.memory(a, b),
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
