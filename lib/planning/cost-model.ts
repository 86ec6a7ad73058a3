/**
 * The planner's cost model: what a node, a stage and a plan are, and the time
 * every resource spends per frame for a given split (compute, links, a host's
 * shared cores, the broker and dispatcher). The optimiser (optimiser.ts)
 * searches splits; this module prices them. See docs/planner.md.
 */

import { DeferError } from '../core/errors.js';

export interface PlanNode {
  id: string;
  /** stage time multiplier against the profile: 1 = as fast as the profiling process, 2 = twice as slow */
  timeFactor: number;
  /** CPU multiplier for host sharing (a slowed-down or remote node may use less CPU than its time factor); default timeFactor */
  cpuFactor?: number;
  /** memory the node can give its stage, bytes; default unlimited */
  memoryBytes?: number;
  /** the node's link to the broker, Mbit/s; default unlimited (loopback) */
  bandwidthMbps?: number;
  /** one-way latency of the node's link, ms; default 0 */
  latencyMs?: number;
  /** nodes with the same host share its cores */
  host?: string;
  cores?: number;
  /** its engine keeps twice each convolution filter (Capabilities.plainConvolutions): its stages count twice their weights */
  plainConvolutions?: boolean;
}

export interface CostModel {
  layerNames: string[];
  /** per layer: measured ms of the segment that ends at it, 0 elsewhere (see profile.ts) */
  segmentMs: number[];
  /** layer indices after which the model may be cut, ascending */
  validCuts: number[];
  /** per layer: bytes of its output per frame */
  outputBytes: number[];
  /** per layer: bytes of its weights (as sent) */
  weightBytes: number[];
  /** per layer: bytes of its weights once loaded, where they differ from weightBytes (quantized graph weights become float32); absent: the same */
  loadedBytes?: number[];
  /** per layer: bytes the engine keeps for its weights once its stage has run (LayerInfo.heldBytes); absent: MEMORY_PER_WEIGHT_BYTE x loadedBytes */
  heldBytes?: (number | undefined)[];
  /** bytes of one input frame */
  inputBytes: number;
  /** per layer: ms to encode its output for the wire (at cut points and the last layer; 0 or absent elsewhere) */
  encodeMs?: number[];
  /** per layer: ms to decode its output from the wire */
  decodeMs?: number[];
  /** ms to decode an input frame (stage 0) */
  inputDecodeMs?: number;
  /** what a stage's call costs besides its layers, once per stage per frame (the profile's callMs) */
  stageCallMs?: number;
  /** per layer: bytes of its output on the wire (after the codec); default outputBytes */
  wireBytes?: number[];
  inputWireBytes?: number;
}

/**
 * CPU that the broker and dispatcher spend per frame, on the host where they run. Where they share one process
 * (defer up runs the embedded broker in the dispatcher's), this CPU per frame over RELAY_PROCESS_CORES also bounds
 * the time per frame on its own.
 */
export interface RelayCost {
  host: string;
  /**
   * false: the broker is a process of its own (defer dispatch, against defer broker or Mosquitto). Its CPU and the
   * dispatcher's still count against their host's cores, but the planner knows neither process's share, so no
   * bound of one process applies. Default true (defer up).
   */
  sharedProcess?: boolean;
  /** per MB of messages relayed */
  msPerMB: number;
  /** per message relayed (a frame makes stages + 1) */
  msPerMessage: number;
}

/** The bottleneck's name where the broker's and dispatcher's process bounds the time per frame. */
export const RELAY_PROCESS = 'the broker and dispatcher (their one process)';

/**
 * The cores the broker's and dispatcher's process keeps busy at most: its JavaScript thread and the collector's
 * helper threads. On the 16-core device (2026-11-27, files bench/results/2026-11-27-device16-*), the Teachable
 * Machine model on 15 engines of one node moved 218-236 frames/s, relay-bound, while that process used 1.0-1.5 cores
 * (4.7-6.7 ms of CPU per frame); no run used more than 1.7.
 */
export const RELAY_PROCESS_CORES = 1.2;

/** The broker's and dispatcher's CPU per frame for a split at `bounds`: every message of a frame passes the broker once (the frame, each stage's output). */
export function relayCpuMs(t: CostTable, bounds: number[], relay: RelayCost): number {
  let bytes = t.wireIn(0);
  for (let k = 1; k < bounds.length; k++) bytes += t.wireOut(bounds[k]);
  return (bytes / 1e6) * relay.msPerMB + bounds.length * relay.msPerMessage;
}

export interface LinkSpec {
  bandwidthMbps?: number;
  latencyMs?: number;
}

export interface PlanOptions {
  /** 'best' tries every order of the nodes (equivalent nodes once); 'given' keeps the order given */
  order?: 'best' | 'given';
  /** the dispatcher's own link (frames out, results in); default unlimited */
  dispatcher?: LinkSpec;
  /** more distinct orders than this: keep the given order and the order by speed only */
  maxOrders?: number;
  /** the broker's and dispatcher's CPU, charged to their host's cores */
  relay?: RelayCost;
}

export interface PlannedStage {
  index: number;
  node: string;
  firstLayer: string;
  lastLayer: string;
  layerCount: number;
  weightBytes: number;
  /** estimated memory the stage needs on its node */
  memoryBytes: number;
  /** predicted ms per frame on its node: model compute, plus decoding its input and encoding its output */
  computeMs: number;
  /** of which decoding and encoding */
  codecMs: number;
  /** ms per frame the node's link is busy (max of bytes in and out over its bandwidth) */
  linkMs: number;
  outputBytes: number;
  /** predicted ms to move this stage's output to the next node (or the dispatcher), latency included */
  transferMs: number;
}

export interface ChainPlan {
  cuts: string[];
  /** node ids in chain order */
  order: string[];
  stages: PlannedStage[];
  /** ms per frame of the slowest resource */
  bottleneckMs: number;
  /** which resource that is, e.g. "compute of n2" */
  bottleneck: string;
  predictedThroughputFps: number;
  /** predicted end-to-end latency of one frame when the chain is idle */
  predictedLatencyMs: number;
  /** ms of CPU per frame per core, for hosts that carry more than one node */
  hostLoadMs: { host: string; nodes: string[]; cores: number; ms: number }[];
  /** predicted CPU ms per frame of the broker and dispatcher (0 when the planner was given no relay cost) */
  relayCpuMs: number;
  ordersTried: number;
}

const MS_PER_BIT_PER_MBPS = 1e-3; // bytes*8 / (Mbps*1e6) s = bytes*8e-3/Mbps ms

export function transferMs(bytes: number, mbps: number | undefined): number {
  return mbps && Number.isFinite(mbps) ? (bytes * 8 * MS_PER_BIT_PER_MBPS) / mbps : 0;
}

/**
 * What a stage adds to an idle node's memory (the node's own free memory is measured after it started: see
 * calibrate.ts):
 * - a fixed part (STAGE_BASE_BYTES);
 * - its weights as the engine holds them once the stage has run its first frame and released the packed originals
 *   (CostModel.heldBytes: twice the filter of a convolution the engine computes, transposed and packed; once a
 *   convolution computed as a matrix product, a dense layer's operand and any other weight; where a model gives no
 *   held bytes, MEMORY_PER_WEIGHT_BYTE times its weights as loaded); quantized weights (graph models) also count
 *   once as received: such a stage is built from a blob;
 * - its largest layer's weights once more (MEMORY_PER_LARGEST_WEIGHT_BYTE): on the first frame a layer's weights
 *   and their packed copy live at once until the layer has run, and the engine's heap keeps that high-water mark;
 * - its output 12 times (MEMORY_PER_OUTPUT_BYTE), fitted; taken to be the frames on their way out (the engine's
 *   output tensor, its values read out, their LZ4 encoding and the CBOR message, for the frame being sent and those
 *   computed but not yet written out), though which buffers hold it is not measured.
 * The activations inside the stage do not count of their own: each is freed once its last reader has run
 * (partition.ts), and the whole of ResNet50 peaks at its held weights and 11 MB.
 * Fitted on the wasm engine to the peak RSS of nodes less an idle node's: ResNet50 stages of 0.3 to 102.5 MB on 1,
 * 2, 4 and 8 nodes and on 4 devices of 256 MB, two bench runs (38 stages, 2026-11-28), checked on the Teachable
 * Machine model and MobileNet v1 on 1 and 2 nodes: predicted peaks 0.90-1.11 of the measured, 3 of 44 stages off
 * by more than 10% (docs/memory.md). The estimate before counted 12 times the largest activation instead of the
 * output and the largest layer: 0.91-1.24, 14 of the 44 off by more than 10%, each whole model over by 16-24%.
 */
export const STAGE_BASE_BYTES = 10e6;
export const MEMORY_PER_WEIGHT_BYTE = 2;
export const MEMORY_PER_LARGEST_WEIGHT_BYTE = 1;
export const MEMORY_PER_OUTPUT_BYTE = 12;
/**
 * What each engine of a node that runs its stage on worker threads adds beyond its stage: the thread's own V8
 * isolate, wasm module and TensorFlow.js. Measured on 2 workers (peak RSS less an idle node's, less twice the
 * stage's estimate; 2026-11-27): 51 MB for the Teachable Machine model, 44 for MobileNet v1, 81 for ResNet50.
 */
export const WORKER_THREAD_BYTES = 50e6;

/**
 * What each frame of an engine's batch beyond the first adds (docs/planner.md#batches): its activations through the
 * engine, 8 times the stage's largest. Measured (RSS of one process after six runs of the whole model, batch 4
 * against 1, one run each, 2026-11-27): the Teachable Machine model 47 MB more (its largest activation 4.8 MB: 3.3x
 * per added frame), MobileNet v1 78 MB (3.2 MB: 8x), ResNet50 53 MB (3.2 MB: 5.5x).
 */
export const MEMORY_PER_BATCHED_ACTIVATION_BYTE = 8;

/**
 * Estimated memory `workers` engines of a stage of `stageBytes` (stageMemoryBytes) add to an idle node, each
 * computing up to `batch` frames at once (each beyond the first adding `batchFrameBytes`). On worker threads, the
 * node also holds the stage's `weightBytes` once, as the shared blob every engine builds from, until all are built
 * (ResNet50 on 2 workers, 2026-11-28: peak RSS 685 and 688 MB in two runs, about 550 over an idle node of 138 MB;
 * 416 predicted over an idle node without the blob counted, 519 with it).
 */
export function enginesMemoryBytes(stageBytes: number, workers: number, batch = 1, batchFrameBytes = 0, weightBytes = 0): number {
  const engine = stageBytes + (batch - 1) * batchFrameBytes;
  return workers > 1 ? workers * (engine + WORKER_THREAD_BYTES) + weightBytes : engine;
}

/** The largest tensor going into, through or out of layers first..last, bytes. */
function largestActivationBytes(cost: CostModel, first: number, last: number): number {
  let act = first === 0 ? cost.inputBytes : cost.outputBytes[first - 1];
  for (let i = first; i <= last; i++) act = Math.max(act, cost.outputBytes[i]);
  return act;
}

/** What each frame of a batch beyond the first adds to one engine of layers first..last, bytes. */
export function batchFrameBytes(cost: CostModel, first: number, last: number): number {
  return MEMORY_PER_BATCHED_ACTIVATION_BYTE * largestActivationBytes(cost, first, last);
}

/**
 * Estimated memory a stage adds to an idle node, by the measured constants. On a node whose engine computes every
 * convolution itself (`plainConvolutions`), each layer's weights count MEMORY_PER_WEIGHT_BYTE times as loaded,
 * whatever the model's held bytes say: twice a convolution's filter, and a dense layer's weights twice too (over
 * by those once: on the safe side).
 */
export function stageMemoryBytes(cost: CostModel, first: number, last: number, plainConvolutions = false): number {
  let w = 0;
  let largest = 0;
  const held = plainConvolutions ? undefined : cost.heldBytes;
  for (let i = first; i <= last; i++) {
    const loaded = cost.loadedBytes?.[i];
    w += (held?.[i] ?? MEMORY_PER_WEIGHT_BYTE * (loaded ?? cost.weightBytes[i])) + (loaded !== undefined ? cost.weightBytes[i] : 0);
    largest = Math.max(largest, loaded ?? cost.weightBytes[i]);
  }
  return STAGE_BASE_BYTES + w + MEMORY_PER_LARGEST_WEIGHT_BYTE * largest + MEMORY_PER_OUTPUT_BYTE * cost.outputBytes[last];
}

export interface Evaluation {
  bottleneckMs: number;
  bottleneck: string;
  stages: PlannedStage[];
  hostLoadMs: ChainPlan['hostLoadMs'];
  relayCpuMs: number;
  latencyMs: number;
}

export class CostTable {
  readonly prefix: number[];
  readonly pts: number[];
  constructor(readonly cost: CostModel) {
    this.prefix = [0];
    for (const c of cost.segmentMs) this.prefix.push(this.prefix[this.prefix.length - 1] + c);
    this.pts = [-1, ...cost.validCuts, cost.layerNames.length - 1];
  }
  /** the boundaries of a split given as cut names: 0, each cut's index into pts, the last; E_CUT for a name that is no valid cut */
  boundsOf(cuts: string[]): number[] {
    const inner = cuts.map((c) => {
      const b = this.pts.indexOf(this.cost.layerNames.indexOf(c));
      if (b <= 0) throw new DeferError('E_CUT', `'${c}' is not a valid cut point`);
      return b;
    });
    return [0, ...inner, this.pts.length - 1];
  }
  /** ms of the layers after boundary a up to boundary b (indices into pts) */
  segMs(a: number, b: number): number {
    return this.prefix[this.pts[b] + 1] - this.prefix[this.pts[a] + 1];
  }
  inBytes(a: number): number {
    return a === 0 ? this.cost.inputBytes : this.cost.outputBytes[this.pts[a]];
  }
  outBytes(b: number): number {
    return this.cost.outputBytes[this.pts[b]];
  }
  /** what the stage adds to an idle node (on a node that computes every convolution itself: `plain`) */
  memory(a: number, b: number, plain = false): number {
    return stageMemoryBytes(this.cost, this.pts[a] + 1, this.pts[b], plain);
  }
  /** bytes of the stage's weights as sent */
  weightBytes(a: number, b: number): number {
    let bytes = 0;
    for (let i = this.pts[a] + 1; i <= this.pts[b]; i++) bytes += this.cost.weightBytes[i];
    return bytes;
  }
  /** what each frame of a batch beyond the first adds to one engine of the stage, bytes */
  batchFrameBytes(a: number, b: number): number {
    return batchFrameBytes(this.cost, this.pts[a] + 1, this.pts[b]);
  }
  /** ms to decode the stage's input and encode its output */
  codecMs(a: number, b: number): number {
    const c = this.cost;
    const dec = a === 0 ? (c.inputDecodeMs ?? 0) : (c.decodeMs?.[this.pts[a]] ?? 0);
    return dec + (c.encodeMs?.[this.pts[b]] ?? 0);
  }
  /** ms per frame on a node with time factor 1 */
  busyMs(a: number, b: number): number {
    return this.segMs(a, b) + this.codecMs(a, b) + (this.cost.stageCallMs ?? 0);
  }
  wireOut(b: number): number {
    return this.cost.wireBytes?.[this.pts[b]] ?? this.outBytes(b);
  }
  wireIn(a: number): number {
    return a === 0 ? (this.cost.inputWireBytes ?? this.cost.inputBytes) : (this.cost.wireBytes?.[this.pts[a]] ?? this.inBytes(a));
  }
  /** the per-stage bound that the DP minimises: compute or link, Infinity when it does not fit */
  stageCost(node: PlanNode, a: number, b: number): number {
    if (node.memoryBytes !== undefined && this.memory(a, b, node.plainConvolutions) > node.memoryBytes) return Infinity;
    const compute = this.busyMs(a, b) * node.timeFactor;
    const link = transferMs(Math.max(this.wireIn(a), this.wireOut(b)), node.bandwidthMbps);
    return Math.max(compute, link);
  }
}

/** Every resource's time for nodes in `order` with stage boundaries `bounds` (indices into pts, first 0, last m-1). */
export function evaluate(t: CostTable, order: PlanNode[], bounds: number[], dispatcher: LinkSpec, relay?: RelayCost): Evaluation {
  const c = t.cost;
  let bottleneckMs = 0;
  let bottleneck = 'nothing';
  const consider = (ms: number, what: string) => {
    if (ms > bottleneckMs) {
      bottleneckMs = ms;
      bottleneck = what;
    }
  };
  const stages: PlannedStage[] = order.map((node, k) => {
    const a = bounds[k];
    const b = bounds[k + 1];
    const first = t.pts[a] + 1;
    const last = t.pts[b];
    const next = order[k + 1];
    const computeMs = t.busyMs(a, b) * node.timeFactor;
    const codecMs = t.codecMs(a, b) * node.timeFactor;
    const linkMs = transferMs(Math.max(t.wireIn(a), t.wireOut(b)), node.bandwidthMbps);
    const out = t.wireOut(b);
    const to = next ?? dispatcher;
    const tx = transferMs(out, node.bandwidthMbps) + transferMs(out, to.bandwidthMbps) + (node.latencyMs ?? 0) + (to.latencyMs ?? 0);
    consider(computeMs, `compute of ${node.id}`);
    consider(linkMs, `link of ${node.id}`);
    let weightBytes = 0;
    for (let i = first; i <= last; i++) weightBytes += c.weightBytes[i];
    return {
      index: k,
      node: node.id,
      firstLayer: c.layerNames[first],
      lastLayer: c.layerNames[last],
      layerCount: last - first + 1,
      weightBytes,
      memoryBytes: t.memory(a, b),
      computeMs,
      codecMs,
      linkMs,
      outputBytes: t.outBytes(b),
      transferMs: tx,
    };
  });
  const finalBytes = t.wireOut(bounds[bounds.length - 1]);
  consider(transferMs(Math.max(t.wireIn(0), finalBytes), dispatcher.bandwidthMbps), 'link of the dispatcher');
  const hosts = new Map<string, { nodes: string[]; cores: number; cpuMs: number }>();
  order.forEach((node, k) => {
    if (!node.host) return;
    const h = hosts.get(node.host) ?? { nodes: [], cores: node.cores ?? 1, cpuMs: 0 };
    h.nodes.push(node.id);
    h.cores = Math.min(h.cores, node.cores ?? h.cores);
    h.cpuMs += t.busyMs(bounds[k], bounds[k + 1]) * (node.cpuFactor ?? node.timeFactor);
    hosts.set(node.host, h);
  });
  const relayMs = relay ? relayCpuMs(t, bounds, relay) : 0;
  const relayHost = relay ? hosts.get(relay.host) : undefined;
  if (relayHost) {
    relayHost.cpuMs += relayMs;
    relayHost.nodes.push('broker+dispatcher');
  }
  const hostLoadMs = [...hosts].filter(([, h]) => h.nodes.length > 1).map(([host, h]) => ({ host, nodes: h.nodes, cores: h.cores, ms: h.cpuMs / h.cores }));
  for (const h of hostLoadMs) consider(h.ms, `the ${h.cores} cores of host ${h.host} (${h.nodes.join(', ')})`);
  if (relay && relay.sharedProcess !== false) consider(relayMs / RELAY_PROCESS_CORES, RELAY_PROCESS);
  const first = order[0];
  const latencyMs =
    transferMs(c.inputBytes, dispatcher.bandwidthMbps) +
    transferMs(c.inputBytes, first.bandwidthMbps) +
    (dispatcher.latencyMs ?? 0) +
    (first.latencyMs ?? 0) +
    stages.reduce((s, st) => s + st.computeMs + st.transferMs, 0);
  return { bottleneckMs, bottleneck, stages, hostLoadMs, relayCpuMs: relayMs, latencyMs };
}
