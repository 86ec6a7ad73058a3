/**
 * An edge node: announces itself, takes its assignment and weights from the
 * broker, builds its stage, and computes every activation that arrives on its
 * input topic, forwarding the result to its output topic.
 */
import { availableParallelism, totalmem } from 'node:os';
import type { MqttClient } from 'mqtt';
import { now } from '../lib/core/clock.js';
import { DeferError, errorMessage } from '../lib/core/errors.js';
import { collectGarbage } from '../lib/core/gc.js';
import { log } from '../lib/core/log.js';
import { cgroupLimitBytes, cgroupPeakBytes, peakRssBytes } from '../lib/core/process-memory.js';
import { convolutionsAsProducts } from '../lib/model/conv-as-matmul.js';
import { type BackendChoice, engineHeapBytes, initEngine, tf } from '../lib/model/engine.js';
import type { StageModel } from '../lib/model/flat-model.js';
import { sha256 } from '../lib/model/partition.js';
import { BlobWeights, EngineWeights, type WeightSink } from '../lib/model/weight-sink.js';
import { closeMqtt, connectMqtt, publish } from '../lib/mqtt/connect.js';
import { calibrate, memoryOffer } from '../lib/planning/calibrate.js';
import { enginesMemoryBytes, MEMORY_PER_WEIGHT_BYTE, STAGE_BASE_BYTES } from '../lib/planning/cost-model.js';
import {
  type Assignment,
  assertTopicName,
  type Capabilities,
  decodeAssignment,
  decodePrefetchList,
  decodeWeightChunk,
  encodeErrorReport,
  encodeHeartbeat,
  encodeStatus,
  type Heartbeat,
  type NodeState,
  type NodeStatus,
  type ParsedTopic,
  type Topics,
  topicsFor,
} from '../lib/protocol/index.js';
import { Prefetcher } from './prefetch.js';
import { type ActivationIn, batchesExactly, buildStage, type ComputeContext, type ComputeOutcome, computeActivations, FrameComputeError, warmUp } from './stage.js';
import { StageWorkers } from './stage-workers.js';
import { WeightCache } from './weight-cache.js';

const isChunkOf = (t: ParsedTopic | null, node: string) => t?.kind === 'node-weights' && t.node === node;

export interface EdgeNodeOptions {
  id: string;
  brokerUrl: string;
  pipeline: string;
  backend: BackendChoice;
  /** largest activation or weight-chunk message accepted, in bytes */
  maxMessageBytes: number;
  /** activations waiting beyond this are dropped (and counted) */
  maxQueue: number;
  /** artificial slow-down factor (>= 1): the node idles (factor - 1) x its compute time after each frame; default 1 */
  slowdown?: number;
  /** run the calibration workload at start and report it in the status (default true) */
  calibrate?: boolean;
  username?: string;
  password?: string;
  ca?: string;
  /** folder for stage weights by hash (a restarted node builds from it without a transfer); unset: none */
  weightCache?: string;
  /** how often the node publishes its heartbeat on node/<id>/alive, ms; 0: never (default 1000) */
  heartbeatMs?: number;
  /** the most engines (worker threads) this node runs for a stage; the assignment says how many (default: the cores) */
  workers?: number;
  /** keep the weights the engine packed as well as their packed copies (default: release them after the first frame) */
  keepPackedWeights?: boolean;
  /** every convolution on the engine's own kernel, none as a matrix product (default: those whose filter outweighs their patches) */
  plainConvolutions?: boolean;
  /** the memory this node may use, bytes (default: its cgroup's limit, where it can read one; else the host's) */
  memoryLimitBytes?: number;
}

/** A stage being served: in this thread (`model`), or on worker threads (`pool`). */
interface NodeStage {
  assignment: Assignment;
  model?: StageModel;
  pool?: StageWorkers;
  /** frames one engine call computes at most: the assignment's batch where the stage batches exactly, else 1 */
  batch: number;
}

/** frame bytes (messages in and out, twice for their decoded and encoded copies) between young-generation collections */
const FRAME_BYTES_PER_GC = 8 * 2 ** 20;
/**
 * A full collection at most this often, and never more than 1/FULL_GC_SHARE of the time (each one is timed): the
 * engine's bookkeeping of every kernel call is garbage in V8's old generation, which V8 lets grow by tens of MB
 * before it collects it (ResNet50 on one node, 30 frames: peak RSS 264 and 274 MB with a full collection each
 * second, 288 and 290 without; 25 ms each).
 */
const FULL_GC_EVERY_MS = 1000;
const FULL_GC_SHARE = 40;

/**
 * The most bytes of weight chunks a node holds before their assignment comes (they come on another topic, and may
 * come first); beyond it, it takes them from the broker's retained copies once the assignment is there.
 */
const EARLY_CHUNK_BYTES = 16 * 2 ** 20;

/** The ready line's words on batches: the batch taken, or why none was. */
function batchText(a: Assignment, batch: number): string {
  if ((a.batch ?? 1) <= 1) return '';
  return batch > 1 ? `, batches of up to ${batch} frames` : `, no batches (the stage computes a batch of ${a.batch} other than its frames alone)`;
}

/**
 * What `engines` engines of assignment `a`'s stage add to this node: the planner's estimate, which the assignment
 * carries (lib/planning/cost-model.ts, the figure the planner fitted the stage to its node with), for a node whose
 * engine keeps twice its convolution filters (`plain`) its estimate for such a node; where it carries none (an
 * older dispatcher), the same constants on the weights alone, a plain node counting at least twice the weights.
 */
function stageNeedBytes(a: Assignment, engines: number, plain: boolean): number {
  const byWeights = STAGE_BASE_BYTES + MEMORY_PER_WEIGHT_BYTE * a.manifest.totalBytes;
  const stage = plain ? (a.plainMemoryBytes ?? Math.max(a.memoryBytes ?? 0, byWeights)) : (a.memoryBytes ?? byWeights);
  return enginesMemoryBytes(stage, engines, a.batch ?? 1, a.batchFrameBytes ?? 0, a.manifest.totalBytes);
}

export interface EdgeNodeCounters {
  frames: number;
  /** messages for another deployment */
  dropped: number;
  /** messages that failed validation or computation */
  rejected: number;
  /** activations dropped because the queue was full */
  overflow: number;
  /** weight chunks taken from the broker */
  chunks: number;
  /** weight chunks held because they came before their assignment */
  earlyChunks: number;
  /** weight chunks that came before their assignment and were not held (EARLY_CHUNK_BYTES): taken from the broker again */
  earlyDropped: number;
}

interface Loading {
  assignment: Assignment;
  /** where the stage's weights go, chunk by chunk as they arrive (no chunk is kept): the engine's own tensors where it can, else one blob */
  sink: WeightSink;
  /** engines (worker threads when more than 1) the stage will run on */
  engines: number;
  /** which chunks have arrived */
  got: boolean[];
  received: number;
  lastReport: number;
  /** chunk bytes stored since the last garbage collection */
  sinceGc: number;
}

export class EdgeNode {
  readonly opts: EdgeNodeOptions;
  readonly topics: Topics;
  readonly counters: EdgeNodeCounters = { frames: 0, dropped: 0, rejected: 0, overflow: 0, chunks: 0, earlyChunks: 0, earlyDropped: 0 };
  backend = '';
  capabilities?: Capabilities;
  /** where the running stage's weights came from */
  weightsFrom?: 'broker' | 'cache';
  private client?: MqttClient;
  private stage?: NodeStage;
  private loading?: Loading;
  private frameBytesSinceGc = 0;
  /** when the last full collection ran, and how long it took (ms) */
  private fullGc = { at: 0, ms: 0 };
  /**
   * chunks that arrived before their assignment, for one deployment at most, up to EARLY_CHUNK_BYTES (`dropped`:
   * some were not kept, so the node subscribes again for the broker's retained copies when the assignment comes)
   */
  private early?: { deployment: string; chunks: Map<number, Uint8Array>; bytes: number; dropped: boolean };
  /** the deployment whose stage is being built from chunks all received (its chunks, sent again, are not needed) */
  private building?: string;
  private state: NodeState = 'online';
  private queue: { payload: Buffer; recvAt: number }[] = [];
  /** activations being computed now (at most one per engine) */
  private active = 0;
  /** results published and not yet acknowledged (QoS 1) or written out (QoS 0) */
  private unsent = 0;
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  private heartbeat?: NodeJS.Timeout;
  /** an assignment waiting while the stage it replaces is freed first (the memory limit cannot hold both) */
  private releasing?: Assignment;
  /** a standby's prefetch into the weight cache (only with a cache) */
  private prefetcher?: Prefetcher;

  constructor(opts: EdgeNodeOptions) {
    assertTopicName('node id', opts.id);
    this.opts = opts;
    this.topics = topicsFor(opts.pipeline);
    if (opts.weightCache) this.cache = new WeightCache(opts.weightCache);
  }

  async start(): Promise<void> {
    this.backend = await initEngine(this.opts.backend);
    if (this.opts.calibrate !== false) {
      // before connecting: the first status the planner sees carries the figures
      this.capabilities = {
        ...(await calibrate({ slowdown: this.slowdown, memoryLimitBytes: this.opts.memoryLimitBytes })),
        workers: this.maxWorkers,
        ...(this.plainConvolutions ? { plainConvolutions: true } : {}),
      };
      log.info(
        `node ${this.opts.id}: calibration ${this.capabilities.calibrationMs.toFixed(1)} ms (cpu ${this.capabilities.calibrationCpuMs.toFixed(1)} ms, slow-down ${this.slowdown}), ${this.capabilities.cores} cores, ${(this.capabilities.freeMemoryBytes / 1e6).toFixed(0)} MB free${this.capabilities.totalMemoryBytes < totalmem() ? ` for a stage (memory limit ${(this.capabilities.totalMemoryBytes / 1e6).toFixed(0)} MB)` : ''}`,
      );
    }
    const statusTopic = this.topics.nodeStatus(this.opts.id);
    this.client = await connectMqtt({
      url: this.opts.brokerUrl,
      clientIdPrefix: `defer-node-${this.opts.id}`,
      username: this.opts.username,
      password: this.opts.password,
      ca: this.opts.ca,
      will: { topic: statusTopic, payload: encodeStatus({ node: this.opts.id, state: 'offline', at: 0 }), qos: 1, retain: true },
    });
    this.client.on('message', (topic, payload) => this.onMessage(topic, payload));
    this.client.on('error', (err) => log.warn(`mqtt: ${err.message}`));
    // mqtt.js reconnects (with backoff, lib/mqtt-connect.ts) and subscribes again by itself; a
    // broker that restarted without persistence has lost the retained status: say it again
    this.client.on('offline', () => log.warn(`node ${this.opts.id}: lost the broker at ${this.opts.brokerUrl}; reconnecting`));
    this.client.on('connect', () => {
      // registered after the first connection: every 'connect' is a reconnection
      log.info(`node ${this.opts.id}: reconnected to the broker`);
      void this.setStatus(this.state);
    });
    await this.setStatus('online');
    const every = this.opts.heartbeatMs ?? 1000;
    if (every > 0) {
      const alive = this.topics.nodeAlive(this.opts.id);
      this.heartbeat = setInterval(() => {
        if (this.client?.connected) this.client.publish(alive, encodeHeartbeat(this.heartbeatNow()), { qos: 0 });
      }, every);
      this.heartbeat.unref();
    }
    // weights are subscribed to only when an assignment needs them (they are retained): not when the cache has them
    await this.client.subscribeAsync(this.topics.nodeAssign(this.opts.id), { qos: 1 });
    if (this.cache) {
      // as a standby, keep the running deployment's stages in the cache (the dispatcher says which)
      this.prefetcher = new Prefetcher(this.client, this.topics, this.cache, this.opts.maxMessageBytes, () => void this.setStatus(this.state));
      await this.client.subscribeAsync(this.topics.nodePrefetch(this.opts.id), { qos: 1 });
    }
    log.info(`node ${this.opts.id}: online at ${this.opts.brokerUrl} (backend ${this.backend}, pipeline ${this.opts.pipeline})`);
  }

  /** What the heartbeat says: frames computed, the input queue, and the process's memory and CPU. */
  private heartbeatNow(): Omit<Heartbeat, 'v'> {
    const cpu = process.cpuUsage();
    const heap = this.stage?.pool ? this.stage.pool.engineHeapBytes : engineHeapBytes();
    const limit = this.opts.memoryLimitBytes ?? cgroupLimitBytes();
    const peak = limit === undefined ? undefined : cgroupPeakBytes();
    return {
      node: this.opts.id,
      at: Date.now(),
      frames: this.counters.frames,
      queue: this.queue.length,
      rssBytes: process.memoryUsage.rss(),
      peakRssBytes: peakRssBytes(),
      ...(heap === undefined ? {} : { engineHeapBytes: heap }),
      ...(limit === undefined ? {} : { memoryLimitBytes: limit }),
      ...(peak === undefined ? {} : { memoryPeakBytes: peak }),
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
    };
  }

  get slowdown(): number {
    return this.opts.slowdown ?? 1;
  }

  /**
   * Whether this node's wasm engine computes every convolution itself, keeping twice each filter: as told
   * (--plain-convolutions), or as its engine failed the check that products give the same bits (conv-as-matmul.ts)
   */
  get plainConvolutions(): boolean {
    return this.backend === 'wasm' && (this.opts.plainConvolutions === true || !convolutionsAsProducts());
  }

  /** the most engines this node runs for a stage: --workers, or its cores */
  get maxWorkers(): number {
    return Math.max(1, this.opts.workers ?? availableParallelism());
  }

  /**
   * Activations this node holds at most: its --max-queue, and no fewer than the dispatcher's default window may
   * give it (4 per engine and frame of its batch, where its stage has replicas), so that batches on many engines
   * are not dropped.
   */
  private get queueLimit(): number {
    const s = this.stage;
    return Math.max(this.opts.maxQueue, s ? 4 * (s.pool?.size ?? 1) * s.batch : 0);
  }

  /** engines running the stage now */
  get workers(): number {
    return this.stage?.pool?.size ?? (this.stage ? 1 : 0);
  }

  get currentState(): NodeState {
    return this.state;
  }

  get assignment(): Assignment | undefined {
    return this.stage?.assignment;
  }

  private status(state: NodeState, extra: Partial<NodeStatus> = {}): Omit<NodeStatus, 'v'> {
    const a = this.loading?.assignment ?? this.releasing ?? this.stage?.assignment;
    return {
      node: this.opts.id,
      state,
      at: Date.now(),
      deployment: a?.deployment,
      stage: a?.stage,
      backend: this.backend,
      pid: process.pid,
      frames: this.counters.frames,
      dropped: this.counters.dropped,
      rejected: this.counters.rejected,
      tensors: tf.memory().numTensors,
      capabilities: this.capabilities,
      weightsFrom: this.weightsFrom,
      ...(this.stage ? { workers: this.workers } : {}),
      ...(this.stage && this.stage.batch > 1 ? { batch: this.stage.batch } : {}),
      heartbeatMs: (this.opts.heartbeatMs ?? 1000) || undefined,
      ...(this.prefetcher?.total ? { prefetched: this.prefetcher.held, prefetchTotal: this.prefetcher.total } : {}),
      ...extra,
    };
  }

  private async setStatus(state: NodeState, extra: Partial<NodeStatus> = {}): Promise<void> {
    this.state = state;
    if (!this.client || this.closed) return;
    await publish(this.client, this.topics.nodeStatus(this.opts.id), encodeStatus(this.status(state, extra)), { qos: 1, retain: true }).catch((err) =>
      log.warn(`cannot publish status: ${errorMessage(err)}`),
    );
  }

  /** Publish what this node could not use; `frame` when the message was a frame it could read that far. */
  private reportError(topic: string, reason: string, frame?: { deployment: string; frame: string }): void {
    this.counters.rejected++;
    log.warn(`rejected a message on ${topic}: ${reason}`);
    this.client?.publish(this.topics.errors, encodeErrorReport({ node: this.opts.id, topic, reason, ...(frame ?? {}) }), { qos: frame ? 1 : 0 });
  }

  private onMessage(topic: string, payload: Buffer): void {
    if (this.closed) return;
    if (this.prefetcher?.onMessage(topic, payload)) return;
    try {
      if (topic === this.stage?.assignment.inputTopic) {
        this.enqueue(payload);
      } else if (topic === this.topics.nodeAssign(this.opts.id)) {
        if (payload.length === 0) {
          void this.standDown();
          return;
        }
        this.onAssignment(decodeAssignment(payload, this.opts.maxMessageBytes * 4));
      } else if (topic === this.topics.nodePrefetch(this.opts.id)) {
        if (payload.length === 0) void this.prefetcher?.stop();
        else if (!this.stage && !this.loading && !this.releasing) this.prefetcher?.start(decodePrefetchList(payload, this.opts.maxMessageBytes * 4));
      } else if (isChunkOf(this.topics.parse(topic), this.weightsNode)) {
        if (payload.length === 0) return; // chunk cleared
        this.onChunk(decodeWeightChunk(payload, this.opts.maxMessageBytes));
      }
    } catch (err) {
      this.reportError(topic, errorMessage(err));
    }
  }

  private weightsTopic?: string;
  private standDowns = 0;
  private cache?: WeightCache;

  /** whose retained chunks hold the weights being loaded: this node's own, or a failed node's that this one replaces */
  private get weightsNode(): string {
    return this.loading?.assignment.weightsNode ?? this.opts.id;
  }

  /**
   * The assignment was cleared (the dispatcher gave this node's stage to
   * another, or ended the deployment): stop computing, free the stage, and
   * wait as a standby.
   */
  private async standDown(): Promise<void> {
    const old = this.stage;
    this.standDowns++; // a stage being built now is dropped when built
    const releasing = this.releasing !== undefined;
    this.releasing = undefined;
    if (!old && !this.loading && !releasing) return;
    this.dropLoading();
    this.stage = undefined;
    this.queue.length = 0;
    await this.idle();
    await disposeStage(old);
    await this.subscribeWeights(false);
    if (old) await this.client?.unsubscribeAsync(old.assignment.inputTopic).catch(() => undefined);
    log.info(`node ${this.opts.id}: assignment cleared${old ? ` (was stage ${old.assignment.stage + 1}/${old.assignment.stageCount} of ${old.assignment.deployment})` : ''}: standing by`);
    await this.setStatus('online');
  }

  private async subscribeWeights(on: boolean): Promise<void> {
    if (!this.client || this.closed) return;
    const want = on ? this.topics.nodeWeightsAll(this.weightsNode) : undefined;
    if (want === this.weightsTopic) return;
    const old = this.weightsTopic;
    this.weightsTopic = want;
    try {
      if (old) await this.client.unsubscribeAsync(old);
      if (want) await this.client.subscribeAsync(want, { qos: 1 });
    } catch (err) {
      log.warn(`cannot change the weights subscription (${old ?? 'none'} -> ${want ?? 'none'}): ${errorMessage(err)}`);
    }
  }

  /** Build from the weight cache if it holds the blob; else fetch the chunks. */
  private async fetchWeights(l: Loading, again = false): Promise<void> {
    await this.prefetcher?.stop(); // a stage to run: no more prefetching (and its weights subscription is released)
    if (this.loading !== l) return;
    const m = l.assignment.manifest;
    const cached = this.cache ? await this.cache.readInto(m.sha256, l.sink) : false;
    if (this.loading !== l) return; // replaced meanwhile
    if (cached) {
      log.info(`node ${this.opts.id}: weights of ${l.assignment.deployment} from the cache (${(m.totalBytes / 1e6).toFixed(1)} MB, no transfer)`);
      this.loading = undefined;
      await this.build(l, 'cache');
      return;
    }
    // chunks that came before the assignment and were not kept: the broker sends its retained copies to a new subscription
    if (again) await this.subscribeWeights(false);
    await this.subscribeWeights(true);
  }

  private onAssignment(a: Assignment): void {
    if (a.nodeId !== this.opts.id) throw new DeferError('E_ENVELOPE', `assignment is for node '${a.nodeId}', not '${this.opts.id}'`);
    if (a.pipeline !== this.opts.pipeline) throw new DeferError('E_ENVELOPE', `assignment is for pipeline '${a.pipeline}', not '${this.opts.pipeline}'`);
    const have = this.releasing ?? (this.loading ?? this.stage)?.assignment;
    if (a.deployment === have?.deployment && a.stage === have.stage) return; // already have it
    log.info(`node ${this.opts.id}: assignment ${a.deployment}: stage ${a.stage + 1}/${a.stageCount}, ${(a.manifest.totalBytes / 1e6).toFixed(1)} MB of weights in ${a.manifest.chunks.length} chunks`);
    this.releasing = undefined; // a stage still being freed for an earlier assignment: this one replaces it
    // the old stage serves until the new one is built, unless the memory limit cannot hold both: then it goes first
    const old = this.stage;
    const limit = this.opts.memoryLimitBytes ?? cgroupLimitBytes();
    const need = stageNeedBytes(a, a.workers ?? 1, this.plainConvolutions);
    const free = memoryOffer(this.opts.memoryLimitBytes).freeMemoryBytes;
    if (old && limit !== undefined && need > free) {
      this.dropLoading();
      this.releasing = a;
      this.stage = undefined;
      this.queue.length = 0;
      void this.setStatus('loading', { received: 0, total: a.manifest.chunks.length, released: 'first' });
      log.warn(
        `node ${this.opts.id}: freeing stage ${old.assignment.stage + 1} of ${old.assignment.deployment} before loading the new one: it needs about ${(need / 1e6).toFixed(0)} MB, ${(free / 1e6).toFixed(0)} MB of the ${(limit / 1e6).toFixed(0)} MB limit are free (it serves nothing until the new stage is ready)`,
      );
      void (async () => {
        await this.idle();
        await disposeStage(old);
        await this.client?.unsubscribeAsync(old.assignment.inputTopic).catch(() => undefined);
        collectGarbage();
        if (this.releasing !== a) return; // replaced or cleared meanwhile
        this.releasing = undefined;
        this.load(a, true);
      })();
      return;
    }
    this.load(a, false);
  }

  /** Start loading assignment `a`'s weights (from early chunks, the cache, or the broker). */
  private load(a: Assignment, releasedFirst: boolean): void {
    const count = a.manifest.chunks.length;
    const engines = this.enginesFor(a);
    // one engine on this thread builds from tensors written in place; worker threads each build from one blob they share
    const sink = (engines === 1 && (a.modelFormat ?? 'layers-model') === 'layers-model' ? EngineWeights.tryFor(a.manifest.specs) : undefined) ?? new BlobWeights(a.manifest.totalBytes, engines > 1);
    this.dropLoading();
    this.loading = { assignment: a, sink, engines, got: new Array<boolean>(count).fill(false), received: 0, lastReport: 0, sinceGc: 0 };
    void this.setStatus('loading', { received: 0, total: count, ...(releasedFirst ? { released: 'first' as const } : {}) });
    let again = false;
    if (this.early?.deployment === a.deployment) {
      const early = this.early;
      this.early = undefined;
      again = early.dropped;
      // each one let go as it is stored: the chunks and the weights are never held twice
      for (const [i, data] of early.chunks) {
        early.chunks.delete(i);
        if (this.loading?.assignment !== a) break; // failed
        this.storeChunk(i, data);
      }
    }
    this.maybeBuild();
    if (this.loading?.assignment === a) void this.fetchWeights(this.loading, again);
  }

  private onChunk(c: { deployment: string; index: number; count: number; data: Uint8Array }): void {
    const l = this.loading;
    if (!l || l.assignment.deployment !== c.deployment) {
      // a chunk of the stage this node runs, or builds from chunks all received (sent again: after a reconnection,
      // the broker sends every retained chunk of a subscription once more)
      if (this.stage?.assignment.deployment === c.deployment || this.building === c.deployment) return;
      // the assignment may come after its chunks: hold them, for one deployment only, and only so many
      if (this.early?.deployment !== c.deployment) this.early = { deployment: c.deployment, chunks: new Map(), bytes: 0, dropped: false };
      const e = this.early;
      if (e.chunks.has(c.index)) return;
      if (e.bytes + c.data.byteLength > EARLY_CHUNK_BYTES) {
        if (!e.dropped)
          log.info(
            `node ${this.opts.id}: weight chunks of ${c.deployment} came before its assignment; beyond ${EARLY_CHUNK_BYTES / 2 ** 20} MiB of them, the rest will be taken from the broker again`,
          );
        e.dropped = true;
        this.counters.earlyDropped++;
        return;
      }
      e.chunks.set(c.index, c.data);
      e.bytes += c.data.byteLength;
      this.counters.earlyChunks++;
      return;
    }
    if (c.count !== l.got.length) {
      this.failLoading(`weight chunk ${c.index} says ${c.count} chunks, the manifest ${l.got.length}`);
      return;
    }
    this.storeChunk(c.index, c.data);
    this.maybeBuild();
  }

  private storeChunk(index: number, data: Uint8Array): void {
    const l = this.loading!;
    if (index >= l.got.length || l.got[index]) return;
    const digest = sha256(data);
    const m = l.assignment.manifest;
    if (digest !== m.chunks[index]) {
      this.failLoading(`weight chunk ${index} does not match its sha256 in the manifest (got ${digest.slice(0, 12)}…, expected ${m.chunks[index].slice(0, 12)}…)`);
      return;
    }
    const at = index * m.chunkBytes;
    const want = Math.min(m.chunkBytes, m.totalBytes - at);
    if (data.byteLength !== want) {
      this.failLoading(`weight chunk ${index} is ${data.byteLength} bytes; the manifest makes it ${want}`);
      return;
    }
    // the sink allocates with the first chunk that fits: an assignment alone costs no memory
    l.sink.write(at, data);
    l.got[index] = true;
    l.received++;
    // the broker's messages are garbage once copied: collected every 4 MB, they never pile up
    l.sinceGc += data.byteLength;
    if (l.sinceGc >= 4 * 2 ** 20) {
      l.sinceGc = 0;
      collectGarbage();
    }
    this.counters.chunks++;
    const t = Date.now();
    if (t - l.lastReport > 250 && l.received < l.got.length) {
      l.lastReport = t;
      void this.setStatus('loading', { received: l.received, total: l.got.length });
    }
  }

  /** Forget the stage being loaded, and free what its weights took so far. */
  private dropLoading(): void {
    this.loading?.sink.dispose();
    this.loading = undefined;
  }

  private failLoading(reason: string, failed?: Assignment): void {
    const a = failed ?? this.loading?.assignment;
    this.dropLoading();
    log.error(`node ${this.opts.id}: deployment ${a?.deployment} failed: ${reason}`);
    // report the failed deployment, not the one still running
    void this.setStatus('failed', { reason, deployment: a?.deployment, stage: a?.stage });
  }

  private maybeBuild(): void {
    const l = this.loading;
    if (!l || l.received < l.got.length) return;
    this.loading = undefined;
    void this.build(l, 'broker');
  }

  private async build(l: Loading, from: 'broker' | 'cache'): Promise<void> {
    // the weights outside the engine (a blob) are held here only until built and cached: dropped before the warm-up
    const { assignment: a, engines } = l;
    this.building = a.deployment;
    let sink: WeightSink | undefined = l.sink;
    try {
      const t0 = now();
      const standDowns = this.standDowns;
      let next: NodeStage;
      let released = 0;
      let together = 1;
      const wantBatch = a.batch ?? 1;
      // cached before it is built (an engine's tensors then belong to the stage), once its hash is checked
      if (from === 'broker' && this.cache && sink.sha256() === a.manifest.sha256) await this.cache.put(a.manifest.sha256, sink.pieces());
      if (engines > 1) {
        // each worker builds and warms up its engine's copy from the shared blob, dropped here once they are built
        together = this.buildsAtOnce(a, engines);
        const pool = await StageWorkers.start(a, (sink as BlobWeights).blob, engines, this.backend as BackendChoice, { ...this.computeContext, processCpu: false }, this.opts, together, wantBatch);
        released = pool.releasedBytes;
        sink = undefined;
        next = { assignment: a, pool, batch: pool.batch };
      } else {
        const model = await buildStage(a, sink, this.opts);
        sink = undefined;
        collectGarbage();
        released = warmUp(a, model, this.opts.keepPackedWeights);
        next = { assignment: a, model, batch: wantBatch > 1 && batchesExactly(a, model) ? wantBatch : 1 };
      }
      if (standDowns !== this.standDowns) {
        await disposeStage(next); // the assignment was cleared meanwhile
        return;
      }
      const old = this.stage;
      this.stage = next;
      if (old) {
        await disposeStage(old);
        if (old.assignment.inputTopic !== a.inputTopic) await this.client?.unsubscribeAsync(old.assignment.inputTopic);
      }
      await this.client?.subscribeAsync(a.inputTopic, { qos: a.qos });
      if (!this.loading) await this.subscribeWeights(false); // nothing more to fetch
      this.weightsFrom = from;
      log.info(
        `node ${this.opts.id}: ready: stage ${a.stage + 1}/${a.stageCount} of ${a.deployment} (weights from the ${from}, built in ${(now() - t0).toFixed(0)} ms${engines > 1 ? ` on ${engines} worker threads, ${together} at once` : ''}${batchText(a, next.batch)}${released > 0 ? `, ${(released / 1e6).toFixed(1)} MB of packed weights released` : ''}), reading ${a.inputTopic}`,
      );
      await this.setStatus('ready');
    } catch (err) {
      sink?.dispose();
      this.failLoading(errorMessage(err), a);
    } finally {
      if (this.building === a.deployment) this.building = undefined;
    }
    // the weight blob (and a replaced stage's JS objects) are garbage once this returns
    setImmediate(collectGarbage);
  }

  private enqueue(payload: Buffer): void {
    const limit = this.queueLimit;
    if (this.queue.length >= limit) {
      this.counters.overflow++;
      this.reportError(this.stage!.assignment.inputTopic, `input queue full (${limit}); activation dropped`);
      return;
    }
    this.queue.push({ payload, recvAt: now() });
    this.pump();
  }

  /**
   * How many of `engines` workers may build assignment `a`'s stage at once: each build holds its engine's copy of
   * the weights before packing beyond what the engines keep, so as many as the memory left over by all the engines
   * holds, and no more than the cores (16 ResNet50 engines built one at a time took 36 s on a 16-core machine).
   */
  private buildsAtOnce(a: Assignment, engines: number): number {
    const spare = memoryOffer(this.opts.memoryLimitBytes).freeMemoryBytes - stageNeedBytes(a, engines, this.plainConvolutions);
    const byMemory = 1 + Math.floor(Math.max(0, spare) / Math.max(1, a.manifest.totalBytes));
    return Math.max(1, Math.min(engines, availableParallelism(), byMemory));
  }

  /**
   * How many engines to run for assignment `a`: what it asks for (default 1), no more than this node's
   * maximum (--workers) nor than its free memory holds by the planner's estimate (each engine holds its own copy
   * of the weights).
   */
  private enginesFor(a: Assignment): number {
    const want = a.workers ?? 1;
    const free = memoryOffer(this.opts.memoryLimitBytes).freeMemoryBytes;
    let engines = Math.min(want, this.maxWorkers);
    while (engines > 1 && stageNeedBytes(a, engines, this.plainConvolutions) > free) engines--;
    if (engines < want) {
      const why = engines === this.maxWorkers ? `its maximum is ${this.maxWorkers} (--workers)` : `its free memory (${(free / 1e6).toFixed(0)} MB) holds ${engines}`;
      log.warn(`node ${this.opts.id}: stage ${a.stage + 1} asks for ${want} workers; running ${engines}: ${why}`);
    }
    return engines;
  }

  /** Start computing queued activations: one engine call per engine at most, each with up to the stage's batch. */
  private pump(): void {
    const stage = this.stage;
    const engines = stage?.pool?.size ?? 1;
    // no new frame while the last ones are still not written out: on a slow link or a busy broker, results would
    // otherwise pile up in the MQTT client (ResNet50's first stage: 3.1 MB each), and memory with them
    while (stage && this.active < engines && this.unsent <= engines * stage.batch && this.queue.length > 0 && !this.closed) {
      const jobs = this.queue.splice(0, stage.batch);
      this.active++;
      this.compute(stage, jobs)
        .catch((err) => this.reportError(stage.assignment.inputTopic, errorMessage(err)))
        .finally(() => {
          this.active--;
          // the current stage's queue, even when these frames were the replaced stage's: frames of the new stage
          // that arrived while they computed could not start then, and nothing else would start them
          this.pump();
        });
    }
    this.notifyIdle();
  }

  /** Nothing computing: whoever waits in idle() goes on. */
  private notifyIdle(): void {
    if (this.active === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  /** what a frame's computation needs of this node */
  private get computeContext(): ComputeContext {
    return { nodeId: this.opts.id, maxMessageBytes: this.opts.maxMessageBytes, slowdown: this.slowdown };
  }

  private async compute(stage: NodeStage, jobs: ActivationIn[]): Promise<void> {
    const a = stage.assignment;
    const outcomes = stage.pool ? await stage.pool.compute(jobs) : await computeActivations({ assignment: a, model: stage.model! }, jobs, this.computeContext, stage.batch);
    for (const [k, r] of outcomes.entries()) {
      if ('error' in r) {
        const e = r.error;
        this.reportError(a.inputTopic, errorMessage(e), e instanceof FrameComputeError ? { deployment: e.deployment, frame: e.frame } : undefined);
      } else this.send(a, r, jobs[k].payload.byteLength);
    }
  }

  /** Publish one frame's output (not awaited: waiting for the broker's PUBACK would idle this node for a round trip on every frame). */
  private send(a: Assignment, r: ComputeOutcome, bytesIn: number): void {
    if (!r.body) {
      this.counters.dropped++;
      log.debug(`dropped frame ${r.frame} of deployment ${r.deployment} (current: ${a.deployment})`);
      return;
    }
    this.counters.frames++;
    // a frame's buffers (its message, tensors, encoding) are garbage once it is sent, outside V8's heap: left to
    // V8, tens of MB of them pile up before it collects; a young-generation collection every few MB frees them
    this.frameBytesSinceGc += 2 * (bytesIn + r.body.byteLength);
    const t = now();
    if (t - this.fullGc.at >= Math.max(FULL_GC_EVERY_MS, FULL_GC_SHARE * this.fullGc.ms)) {
      this.fullGc.at = t;
      this.frameBytesSinceGc = 0;
      setImmediate(() => {
        const t0 = now();
        collectGarbage();
        this.fullGc.ms = now() - t0;
      });
    } else if (this.frameBytesSinceGc >= FRAME_BYTES_PER_GC) {
      this.frameBytesSinceGc = 0;
      setImmediate(() => collectGarbage('minor'));
    }
    const topic = r.topic ?? a.outputTopic;
    this.unsent++;
    this.client!.publish(topic, r.body, { qos: a.qos }, (err) => {
      this.unsent--;
      if (err) log.warn(`cannot publish frame ${r.frame} to ${topic}: ${err.message}`);
      this.pump();
    });
  }

  /** Resolves when the input queue is empty (for tests and clean shutdown). */
  idle(): Promise<void> {
    if (this.active === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    clearInterval(this.heartbeat);
    // say so, but do not wait forever for a broker that is gone (its Last Will says it then)
    await Promise.race([this.setStatus('offline'), new Promise((r) => setTimeout(r, 2000).unref())]);
    this.closed = true;
    this.queue.length = 0;
    await this.idle();
    await disposeStage(this.stage);
    this.stage = undefined;
    await closeMqtt(this.client);
  }
}

/** Free a stage's engine memory: its model in this thread, or its worker threads. */
async function disposeStage(s: NodeStage | undefined): Promise<void> {
  s?.model?.dispose();
  await s?.pool?.close();
}
