/**
 * An edge node: announces itself, takes its assignment and weights from the
 * broker, builds its stage, and computes every activation that arrives on its
 * input topic, forwarding the result to its output topic.
 *
 * This file puts the node's parts together and runs its life cycle (start, close) and its messages (which part
 * each one goes to). The parts, each with its own state, meet at small interfaces (node-link.ts):
 *   status-publisher.ts  its status (retained, Last Will), error reports, and the heartbeat where it has no thread
 *   heartbeat-thread.ts  its heartbeat from a thread of its own (heartbeat-worker.ts, its own connection), off the
 *                        compute path; heartbeat-figures.ts: what it says, from plain figures in shared memory
 *   weight-intake.ts     an assignment's weights: from the weight cache, or chunk by chunk from the broker (checked;
 *                        early chunks held)
 *   stage-builder.ts     the stage served and the next one: engines, build and warm-up, the old stage freed first
 *                        where memory is short, standing down
 *   compute-pump.ts      the input queue and the compute loop: engine calls, results published, garbage collection
 *   prefetch.ts          a standby filling its weight cache
 *   link-probe.ts        its link to the broker, measured at start over MQTT (for the planner)
 */
import { availableParallelism, totalmem } from 'node:os';
import type { MqttClient } from 'mqtt';
import { DeferError, errorMessage } from '../lib/core/errors.js';
import { collectGarbage } from '../lib/core/gc.js';
import { log } from '../lib/core/log.js';
import { convolutionsAsProducts } from '../lib/model/conv-as-matmul.js';
import { type BackendChoice, engineHeapBytes, initEngine, tf } from '../lib/model/engine.js';
import { closeMqtt, connectMqtt } from '../lib/mqtt/connect.js';
import { calibrate, memoryOffer } from '../lib/planning/calibrate.js';
import {
  type Assignment,
  assertTopicName,
  type Capabilities,
  decodeAssignment,
  decodePrefetchList,
  decodeWeightChunk,
  type NodeState,
  type ParsedTopic,
  type Topics,
  topicsFor,
} from '../lib/protocol/index.js';
import { ComputePump } from './compute-pump.js';
import type { WorkFigures } from './heartbeat-figures.js';
import { HeartbeatThread } from './heartbeat-thread.js';
import { probeLink } from './link-probe.js';
import { Prefetcher } from './prefetch.js';
import type { ComputeContext } from './stage.js';
import { type NodeStage, StageBuilder } from './stage-builder.js';
import { lastWillOf, type StatusFacts, StatusPublisher } from './status-publisher.js';
import { WeightCache } from './weight-cache.js';
import { WeightIntake } from './weight-intake.js';

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
  /** send the heartbeat from the compute thread itself, not a thread of its own (default: a thread of its own) */
  heartbeatThread?: boolean;
  /** the cores this node may use (a CPU quota), where it cannot read its cgroup's (default: its cgroup's, else none) */
  cpus?: number;
  /** the most engines (worker threads) this node runs for a stage; the assignment says how many (default: the cores) */
  workers?: number;
  /** keep the weights the engine packed as well as their packed copies (default: release them after the first frame) */
  keepPackedWeights?: boolean;
  /** every convolution on the engine's own kernel, none as a matrix product (default: those whose filter outweighs their patches) */
  plainConvolutions?: boolean;
  /** the memory this node may use, bytes (default: its cgroup's limit, where it can read one; else the host's) */
  memoryLimitBytes?: number;
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

export class EdgeNode {
  readonly opts: EdgeNodeOptions;
  readonly topics: Topics;
  readonly counters: EdgeNodeCounters = { frames: 0, dropped: 0, rejected: 0, overflow: 0, chunks: 0, earlyChunks: 0, earlyDropped: 0 };
  backend = '';
  capabilities?: Capabilities;
  /** the connection to the broker, as every part sees it */
  private readonly link: { client?: MqttClient; closed: boolean } = { closed: false };
  private readonly cache?: WeightCache;
  private readonly status: StatusPublisher;
  private readonly pump: ComputePump;
  private readonly intake: WeightIntake;
  private readonly stages: StageBuilder;
  /** a standby's prefetch into the weight cache (only with a cache) */
  private prefetcher?: Prefetcher;
  private heartbeat?: HeartbeatThread;

  constructor(opts: EdgeNodeOptions) {
    assertTopicName('node id', opts.id);
    this.opts = opts;
    this.topics = topicsFor(opts.pipeline);
    if (opts.weightCache) this.cache = new WeightCache(opts.weightCache);
    this.status = new StatusPublisher(this.link, opts.id, this.topics, this.counters, () => this.statusFacts());
    const setStatus = this.status.set.bind(this.status);
    const compute = () => this.computeContext;
    this.pump = new ComputePump({ maxQueue: opts.maxQueue, compute }, this.link, this.counters, () => this.stage, this.status.reportError);
    this.intake = new WeightIntake(opts.id, this.topics, this.link, this.cache, this.counters, {
      enginesFor: (a) => this.stages.enginesFor(a),
      holds: (d) => this.stages.holds(d),
      build: (w, from) => this.stages.build(w, from),
      stopPrefetch: () => this.prefetcher?.stop() ?? Promise.resolve(),
      setStatus,
    });
    this.stages = new StageBuilder(this, compute, this.link, this.cache, setStatus, this.intake, this.pump);
  }

  async start(): Promise<void> {
    this.backend = await initEngine(this.opts.backend);
    if (this.opts.calibrate !== false) {
      // before connecting: the first status the planner sees carries the figures
      const measured = await calibrate({ slowdown: this.slowdown, memoryLimitBytes: this.opts.memoryLimitBytes, cpus: this.opts.cpus, device: this.opts.id });
      this.capabilities = {
        ...measured,
        workers: Math.max(1, this.opts.workers ?? Math.floor(measured.cores)),
        ...(this.plainConvolutions ? { plainConvolutions: true } : {}),
      };
      log.info(
        `node ${this.opts.id}: calibration ${this.capabilities.calibrationMs.toFixed(1)} ms (cpu ${this.capabilities.calibrationCpuMs.toFixed(1)} ms, slow-down ${this.slowdown}), ${this.capabilities.cores} cores, ${(this.capabilities.freeMemoryBytes / 1e6).toFixed(0)} MB free${this.capabilities.totalMemoryBytes < totalmem() ? ` for a stage (memory limit ${(this.capabilities.totalMemoryBytes / 1e6).toFixed(0)} MB)` : ''}`,
      );
    }
    const client = await connectMqtt({
      url: this.opts.brokerUrl,
      clientIdPrefix: `defer-node-${this.opts.id}`,
      username: this.opts.username,
      password: this.opts.password,
      ca: this.opts.ca,
      will: { topic: this.topics.nodeStatus(this.opts.id), payload: lastWillOf(this.opts.id), qos: 1, retain: true },
    });
    this.link.client = client;
    client.on('message', (topic, payload) => this.onMessage(topic, payload));
    client.on('error', (err) => log.warn(`mqtt: ${err.message}`));
    // mqtt.js reconnects (with backoff, lib/mqtt-connect.ts) and subscribes again by itself; a
    // broker that restarted without persistence has lost the retained status: say it again
    client.on('offline', () => log.warn(`node ${this.opts.id}: lost the broker at ${this.opts.brokerUrl}; reconnecting`));
    client.on('connect', () => {
      // registered after the first connection: every 'connect' is a reconnection
      log.info(`node ${this.opts.id}: reconnected to the broker`);
      void this.status.again();
    });
    if (this.capabilities) {
      // its link to the broker, measured before the first status: the planner reads it from there
      const link = await probeLink(client, this.topics.nodeProbe(this.opts.id));
      if (link) {
        this.capabilities = { ...this.capabilities, linkMbps: link.mbps, linkRttMs: link.rttMs };
        log.info(`node ${this.opts.id}: link to the broker ${link.mbps} Mbit/s each way, round trip ${link.rttMs} ms (measured)`);
      }
    }
    await this.startHeartbeat(this.opts.heartbeatMs ?? 1000);
    if (this.capabilities) {
      // what it offers a stage, measured again on its idle self now that it is all up (its heartbeat thread, its
      // connection, the probe's garbage collected): 15-30 MB less than right after the calibration
      collectGarbage();
      await new Promise((r) => setTimeout(r, 100));
      this.capabilities = { ...this.capabilities, ...memoryOffer(this.opts.memoryLimitBytes) };
    }
    await this.status.set('online');
    // weights are subscribed to only when an assignment needs them (they are retained): not when the cache has them
    await client.subscribeAsync(this.topics.nodeAssign(this.opts.id), { qos: 1 });
    if (this.cache) {
      // as a standby, keep the running deployment's stages in the cache (the dispatcher says which)
      this.prefetcher = new Prefetcher(client, this.topics, this.cache, this.opts.maxMessageBytes, () => void this.status.again());
      await client.subscribeAsync(this.topics.nodePrefetch(this.opts.id), { qos: 1 });
    }
    log.info(`node ${this.opts.id}: online at ${this.opts.brokerUrl} (backend ${this.backend}, pipeline ${this.opts.pipeline})`);
  }

  /** what a frame's computation needs of this node */
  private get computeContext(): ComputeContext {
    return { nodeId: this.opts.id, maxMessageBytes: this.opts.maxMessageBytes, slowdown: this.slowdown };
  }

  // What test/integration/pipeline.test.ts reads of a node's inside, by these names: its connection, the engine
  // calls running, the stage served.
  private get client(): MqttClient | undefined {
    return this.link.client;
  }

  // biome-ignore lint/correctness/noUnusedPrivateClassMembers: read by the test named above (the node uses the pump's own)
  private get active(): number {
    return this.pump.running;
  }

  private get stage(): NodeStage | undefined {
    return this.stages.current;
  }

  /** What the status tells besides its state. */
  private statusFacts(): StatusFacts {
    const s = this.stage;
    return {
      assignment: this.intake.loading?.assignment ?? this.stages.releasing ?? s?.assignment,
      backend: this.backend,
      frames: this.counters.frames,
      dropped: this.counters.dropped,
      rejected: this.counters.rejected,
      tensors: tf.memory().numTensors,
      capabilities: this.capabilities,
      weightsFrom: this.weightsFrom,
      serving: s ? { workers: this.workers, batch: s.batch } : undefined,
      heartbeatMs: this.opts.heartbeatMs ?? 1000,
      prefetch: this.prefetcher ? { held: this.prefetcher.held, total: this.prefetcher.total } : undefined,
    };
  }

  /** What the heartbeat tells of the compute side: frames computed, the input queue, the engines' heap. */
  private workFigures(): WorkFigures {
    const s = this.stage;
    return { frames: this.counters.frames, queue: this.pump.waiting, engineHeapBytes: s?.pool ? s.pool.engineHeapBytes : engineHeapBytes() };
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

  /** the most engines this node runs for a stage: --workers, or its cores (a CPU quota's, whole: one engine uses one core) */
  get maxWorkers(): number {
    return Math.max(1, this.opts.workers ?? Math.floor(this.capabilities?.cores ?? this.opts.cpus ?? availableParallelism()));
  }

  /** engines running the stage now */
  get workers(): number {
    const s = this.stage;
    return s?.pool?.size ?? (s ? 1 : 0);
  }

  get currentState(): NodeState {
    return this.status.state;
  }

  get assignment(): Assignment | undefined {
    return this.stage?.assignment;
  }

  /** where the running stage's weights came from */
  get weightsFrom(): 'broker' | 'cache' | undefined {
    return this.stages.weightsFrom;
  }

  private onMessage(topic: string, payload: Buffer): void {
    if (this.link.closed) return;
    if (this.prefetcher?.onMessage(topic, payload)) return;
    try {
      if (topic === this.stage?.assignment.inputTopic) {
        this.pump.enqueue(payload);
      } else if (topic === this.topics.nodeAssign(this.opts.id)) {
        if (payload.length === 0) {
          void this.stages.standDown();
          return;
        }
        this.onAssignment(decodeAssignment(payload, this.opts.maxMessageBytes * 4));
      } else if (topic === this.topics.nodePrefetch(this.opts.id)) {
        if (payload.length === 0) void this.prefetcher?.stop();
        else if (!this.stage && !this.intake.loading && !this.stages.releasing) this.prefetcher?.start(decodePrefetchList(payload, this.opts.maxMessageBytes * 4));
      } else if (isChunkOf(this.topics.parse(topic), this.intake.weightsNode)) {
        if (payload.length === 0) return; // chunk cleared
        this.intake.onChunk(decodeWeightChunk(payload, this.opts.maxMessageBytes));
      }
    } catch (err) {
      this.status.reportError(topic, errorMessage(err));
    }
  }

  private onAssignment(a: Assignment): void {
    if (a.nodeId !== this.opts.id) throw new DeferError('E_ENVELOPE', `assignment is for node '${a.nodeId}', not '${this.opts.id}'`);
    if (a.pipeline !== this.opts.pipeline) throw new DeferError('E_ENVELOPE', `assignment is for pipeline '${a.pipeline}', not '${this.opts.pipeline}'`);
    const have = this.stages.releasing ?? (this.intake.loading ?? this.stage)?.assignment;
    if (a.deployment === have?.deployment && a.stage === have.stage) return; // already have it
    log.info(`node ${this.opts.id}: assignment ${a.deployment}: stage ${a.stage + 1}/${a.stageCount}, ${(a.manifest.totalBytes / 1e6).toFixed(1)} MB of weights in ${a.manifest.chunks.length} chunks`);
    this.stages.assign(a);
  }

  /**
   * The heartbeat, every `everyMs` (0: none): from a thread of its own with its own connection (heartbeat-thread.ts),
   * so that a stage computed on this thread does not silence it; from this thread where that thread cannot start.
   */
  private async startHeartbeat(everyMs: number): Promise<void> {
    if (everyMs <= 0) return;
    if (this.opts.heartbeatThread !== false) {
      try {
        this.heartbeat = await HeartbeatThread.start(
          {
            connect: { url: this.opts.brokerUrl, clientIdPrefix: `defer-node-${this.opts.id}-alive`, username: this.opts.username, password: this.opts.password, ca: this.opts.ca },
            node: this.opts.id,
            topic: this.topics.nodeAlive(this.opts.id),
            everyMs,
            memoryLimitBytes: this.opts.memoryLimitBytes,
          },
          () => this.workFigures(),
        );
        return;
      } catch (err) {
        log.warn(`node ${this.opts.id}: ${errorMessage(err)}; the heartbeat goes from the compute thread, and stops while it computes`);
      }
    }
    this.status.startHeartbeat(everyMs, () => this.workFigures(), this.opts.memoryLimitBytes);
  }

  /** Resolves when nothing computes (for tests and clean shutdown). */
  idle(): Promise<void> {
    return this.pump.idle();
  }

  async close(): Promise<void> {
    if (this.link.closed) return;
    this.status.stopHeartbeat();
    await this.heartbeat?.close();
    // say so, but do not wait forever for a broker that is gone (its Last Will says it then)
    await Promise.race([this.status.set('offline'), new Promise((r) => setTimeout(r, 2000).unref())]);
    this.link.closed = true;
    this.pump.clear();
    await this.pump.idle();
    await this.stages.dispose();
    await closeMqtt(this.client);
  }
}
