/**
 * The dispatcher: owns one MQTT connection, deploys a partitioned model onto
 * named nodes (or adopts the deployment they run: deploy/adopt.ts), waits for
 * them, streams frames through the chain (chain/frame-stream.ts), and has it
 * supervised (chain/supervisor.ts).
 */

import { randomBytes } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { DeferError, errorMessage } from '../lib/core/errors.js';
import { log } from '../lib/core/log.js';
import { TypedEmitter } from '../lib/core/typed-emitter.js';
import type { FlatModel } from '../lib/model/flat-model.js';
import { closeMqtt, connectMqtt } from '../lib/mqtt/connect.js';
import type { ChoosePrecision } from '../lib/planning/precision-choice.js';
import { assertTopicName, type Codec, type ImageInput, type Precision, type Topics, topicsFor } from '../lib/protocol/index.js';
import type { Deployment } from './chain/deployment.js';
import { type FrameResult, FrameStream } from './chain/frame-stream.js';
import { type ChainHost, type FailurePolicy, type LostMember, Supervisor } from './chain/supervisor.js';
import { type Adopted, type AdoptHost, adoptChain, adoptShape } from './deploy/adopt.js';
import { type DeploymentPackage, deploymentNodes, hasReplicas, packageDeployment, publishDeployment, replicaTargets, type StageMember, stageNodes } from './deploy/deployment-package.js';
import { NodeWatch } from './deploy/node-watch.js';
import type { DispatcherEvent } from './events.js';

export interface DispatcherOptions {
  brokerUrl: string;
  pipeline: string;
  chunkBytes: number;
  readyTimeoutMs: number;
  frameTimeoutMs: number;
  maxInFlight: number;
  /** frames an engine may compute in one call, for stages whose shape gives none (chains, repairs); 0 or absent: 1 */
  batch?: number;
  maxMessageBytes: number;
  codec: Codec;
  /** how precisely activations travel: one value for every hop, or one per hop (default lossless); auto: `choosePrecision` decides for each chain */
  precision?: (Precision | 'auto')[];
  /** stage 0 decodes the devices' encoded images itself, this way (a compact first hop: a JPEG travels instead of its float32 pixels); absent: the dispatcher decodes them */
  inputImage?: ImageInput;
  /** for precision auto: each hop's precision for a chain (dispatcher/deploy/precision-auto.ts makes one from the configuration) */
  choosePrecision?: ChoosePrecision;
  qos: 0 | 1;
  /** use this connection instead of opening one (it is then not closed by close()) */
  client?: MqttClient;
  username?: string;
  password?: string;
  ca?: string;
  /** mend the chain when a node fails or the broker goes (default true) */
  supervise?: boolean;
  /** nodes kept out of the chain to take over a failed node's stage */
  standby?: string[];
  /** a node of the chain silent for longer is taken as failed; 0: its Last Will only (default 5000) */
  heartbeatTimeoutMs?: number;
  /** with no standby up: merge the orphaned stage into a neighbour (default), re-plan (needs chooseCuts), or off */
  onNodeFailure?: FailurePolicy;
  /** cuts for a number of stages, for onNodeFailure 'replan' */
  chooseCuts?: (flat: FlatModel, stages: number) => Promise<string[]>;
  /** after a merge or re-plan, a standby (a node that came back) up this long brings the chain back to its first split; 0: never (default 10000) */
  restoreAfterMs?: number;
  /** standbys keep the deployment's stages in their weight caches, so a takeover needs no transfer (default true) */
  prefetchStandby?: boolean;
}

export type { Deployment };

/**
 * Frames in flight by default: two per engine (one computing, one waiting), four where a stage has replicas: fed
 * by least expected wait, a replica k times slower than its twin gets frames only while the twin holds k or more,
 * so the window must let the twin hold that many (4 per engine: up to about 8x on two nodes). Each counts as many
 * frames as its batch: a batch forms only from frames waiting.
 */
export function defaultInFlight(plan: Pick<DeploymentPackage, 'stages'>): number {
  const slots = plan.stages.reduce((n, s) => n + stageNodes(s).reduce((w, x) => w + (x.assignment.workers ?? 1) * (x.assignment.batch ?? 1), 0), 0);
  return (hasReplicas(plan) ? 4 : 2) * slots;
}

/**
 * The dispatcher: deploys and adopts chains, streams frames into them, and
 * supervises them. What it does is told as typed events (`events`, see
 * events.ts): subscribe before `deploy`.
 */
export class Dispatcher implements ChainHost {
  readonly id = `disp${randomBytes(3).toString('hex')}`;
  readonly events = new TypedEmitter<DispatcherEvent>();
  private latest?: Deployment;
  private readonly resultListeners = new Set<(r: FrameResult, d: Deployment) => void>();
  readonly topics: Topics;
  private client?: MqttClient;
  private watch?: NodeWatch;
  private streams: FrameStream[] = [];
  private supervisors: Supervisor[] = [];

  constructor(readonly opts: DispatcherOptions) {
    this.topics = topicsFor(opts.pipeline);
  }

  async connect(): Promise<void> {
    if (this.opts.client) this.client = this.opts.client;
    else {
      this.client = await connectMqtt({ url: this.opts.brokerUrl, clientIdPrefix: `defer-${this.id}`, username: this.opts.username, password: this.opts.password, ca: this.opts.ca });
      this.client.on('error', (err) => log.warn(`dispatcher mqtt: ${err.message}`));
    }
    this.watch = new NodeWatch(this.client, this.topics);
    await this.watch.start();
  }

  /** The deployment opened last (the one supervised and served), if any. */
  get deployment(): Deployment | undefined {
    return this.latest;
  }

  /** Be told of every result of every stream, as it arrives (metrics, the live page); returns the unsubscribe. */
  onResult(listener: (r: FrameResult, d: Deployment) => void): () => void {
    this.resultListeners.add(listener);
    return () => void this.resultListeners.delete(listener);
  }

  /** the dispatcher's MQTT connection (for the frame server) */
  get mqtt(): MqttClient {
    if (!this.client) throw new Error('dispatcher is not connected: call connect() first');
    return this.client;
  }

  get nodes(): NodeWatch {
    if (!this.watch) throw new Error('dispatcher is not connected: call connect() first');
    return this.watch;
  }

  /**
   * A dispatcher that restarts: if the retained assignments of `nodes` are a
   * deployment of exactly this split (each stage's weights by sha256, in this
   * order) and every node reports it ready, carry on with it: no weights are
   * sent, results are read where its last stage writes them. A stage that a
   * standby (dispatcher.standby) took over from its node is adopted on the
   * standby. Null otherwise (deploy/adopt.ts).
   */
  async adopt(flat: FlatModel, nodes: string[], cuts: string[], waitMs = 1500): Promise<Deployment | null> {
    if (!this.client || !this.watch) throw new Error('dispatcher is not connected: call connect() first');
    const t0 = performance.now();
    return this.openAdopted(await adoptChain(this.adoptHost, flat, nodes, cuts, waitMs), flat, t0);
  }

  /**
   * A dispatcher that restarts, for a deployment with replicas or workers (`shape`: each stage's nodes with their
   * engines): if the nodes of the shape run their stages of one deployment, ready, with those engines, carry on
   * with it; a replica missing is adopted as lost while its stage has another node, and rejoins once up and idle
   * (deploy/adopt.ts). Null where a stage has none of its nodes, or a node of the shape runs something else.
   */
  async adoptShape(flat: FlatModel, shape: StageMember[][], cuts: string[], waitMs = 1500): Promise<Deployment | null> {
    if (!this.client || !this.watch) throw new Error('dispatcher is not connected: call connect() first');
    const t0 = performance.now();
    return this.openAdopted(await adoptShape(this.adoptHost, flat, shape, cuts, waitMs), flat, t0);
  }

  /** what adoption needs of this dispatcher */
  private get adoptHost(): AdoptHost {
    return { mqtt: this.mqtt, nodes: this.nodes, topics: this.topics, opts: this.opts, precisionFor: (f, n, c) => this.precisionFor(f, n, c), emit: (e) => this.events.emit(e) };
  }

  /** A stream (and supervisor) into the deployment adopted, if one was; `t0`: when adoption began. */
  private async openAdopted(a: Adopted | null, flat: FlatModel, t0: number): Promise<Deployment | null> {
    if (!a) return null;
    return this.openStream(a.plan, flat, a.inputTopic, a.resultTopic, performance.now() - t0, a.spares, a.lostReplicas);
  }

  /** `adopt` (or `adoptShape` for replicas and workers) when allowed and possible, else `deploy`. */
  async adoptOrDeploy(flat: FlatModel, nodes: string[], cuts: string[], adopt: boolean, shape?: StageMember[][]): Promise<Deployment> {
    const chain = !shape || shape.every((s) => s.length === 1 && s[0].workers === 1);
    const adopted = adopt ? await (chain ? this.adopt(flat, nodes, cuts) : this.adoptShape(flat, shape!, cuts)) : null;
    return adopted ?? this.deploy(flat, nodes, cuts, shape);
  }

  /**
   * Deploy `flat` cut at `cuts` onto `nodes` (one per stage, in order), wait until all are ready, and open a stream
   * into it. `shape`: the nodes of each stage with their engines instead (several nodes: replicas, fed by load).
   */
  async deploy(flat: FlatModel, nodes: string[], cuts: string[], shape?: StageMember[][]): Promise<Deployment> {
    // the deployment it replaces is no longer mended (its supervisor would take the nodes back)
    for (const s of this.supervisors.splice(0)) s.stop();
    const { plan, deployMs } = await this.publishPlan(flat, shape ? shape.map((s) => s[0].node) : nodes, cuts, false, shape);
    const first = plan.stages[0].assignment;
    return this.openStream(plan, flat, first.inputTopic, this.topics.results(this.id), deployMs);
  }

  /** Chains deployed from now on take encoded images at stage 0, decoded this way (undefined: tensors). */
  useImageInput(spec: ImageInput | undefined): void {
    this.opts.inputImage = spec;
  }

  /**
   * The precision of each hop of a chain: as given, or chosen (precision auto, told as a 'precision-chosen'
   * event). `mended`: a repair's chain, where a precision given hop by hop for another length is lossless.
   */
  private async precisionFor(flat: FlatModel, nodes: string[], cuts: string[], mended = false): Promise<Precision[] | undefined> {
    const given = this.opts.precision;
    if (given?.includes('auto')) {
      if (!this.opts.choosePrecision) throw new DeferError('E_CONFIG', "precision 'auto' needs a chooser (choosePrecision); the defer command and the Node-RED dispatcher give one");
      const d = await this.opts.choosePrecision(flat, nodes, cuts);
      this.events.emit({ type: 'precision-chosen', chain: nodes, precision: d.precision, hops: d.hops, calibration: d.calibration });
      return d.precision;
    }
    const list = given as Precision[] | undefined;
    return mended && (list?.length ?? 0) > 1 && list?.length !== cuts.length + 2 ? ['lossless'] : list;
  }

  /** Publish a new deployment of `flat` cut at `cuts` onto `nodes`, and wait until all are ready. */
  /**
   * `mended`: a repair's new chain (merge, re-plan, restore). A precision given hop by hop for a chain of
   * another length does not fit it: its hops are then lossless (a single given precision still applies).
   */
  async publishPlan(flat: FlatModel, nodes: string[], cuts: string[], mended = false, shape?: StageMember[][]): Promise<{ plan: DeploymentPackage; deployMs: number }> {
    if (!this.client || !this.watch) throw new Error('dispatcher is not connected: call connect() first');
    for (const n of shape ? shape.flat().map((m) => m.node) : nodes) assertTopicName('node id', n);
    const t0 = performance.now();
    const plan = packageDeployment(flat, this.topics, {
      nodes,
      ...(shape ? { shape } : {}),
      cuts,
      chunkBytes: this.opts.chunkBytes,
      codec: this.opts.codec,
      precision: await this.precisionFor(flat, nodes, cuts, mended),
      qos: this.opts.qos,
      ...(this.opts.batch ? { batch: this.opts.batch } : {}),
      resultTopic: this.topics.results(this.id),
      pipeline: this.opts.pipeline,
      ...(this.opts.inputImage ? { inputImage: this.opts.inputImage } : {}),
    });
    const all = deploymentNodes(plan);
    this.events.emit({ type: 'deploy-start', deployment: plan.id, nodes: all, stages: plan.stages.length, totalBytes: plan.totalBytes });
    let lastPct = -1;
    const ready = this.watch.waitReady(all, plan.id, this.opts.readyTimeoutMs, (r) => {
      if (r.length) this.events.emit({ type: 'nodes-ready', deployment: plan.id, ready: r, total: all.length });
    });
    ready.catch(() => undefined); // observed below
    await publishDeployment(this.client, this.topics, plan, (sent, total) => {
      const pct = total ? Math.floor((sent / total) * 10) * 10 : 100;
      if (pct !== lastPct) {
        lastPct = pct;
        this.events.emit({ type: 'weights-sent', deployment: plan.id, sentBytes: sent, totalBytes: total, pct });
      }
    });
    await ready;
    const deployMs = performance.now() - t0;
    this.events.emit({ type: 'deploy-done', deployment: plan.id, ms: deployMs });
    return { plan, deployMs };
  }

  /** The retained message on `topic`, if the broker has one within `waitMs`. */
  async readRetained(topic: string, waitMs: number): Promise<Buffer | null> {
    const client = this.mqtt;
    let got: Buffer | null = null;
    const onMessage = (t: string, payload: Buffer, packet: { retain?: boolean }) => {
      if (t === topic && packet.retain && payload.length) got = payload;
    };
    client.on('message', onMessage);
    try {
      await client.subscribeAsync(topic, { qos: 1 });
      for (let t = 0; t < waitMs && !got; t += 50) await new Promise((r) => setTimeout(r, 50));
      await client.unsubscribeAsync(topic).catch(() => undefined);
    } finally {
      client.off('message', onMessage);
    }
    return got;
  }

  private async openStream(
    plan: DeploymentPackage,
    flat: FlatModel,
    inputTopic: string,
    resultTopic: string,
    deployMs: number,
    spares: string[] = [],
    lostReplicas: LostMember[] = [],
  ): Promise<Deployment> {
    const stream = new FrameStream(
      this.client!,
      {
        deployment: plan.id,
        stageCount: plan.stages.length,
        inputTopic,
        resultTopic,
        codec: this.opts.codec,
        precision: plan.precision[0],
        imageInput: plan.stages[0].assignment.inputImage !== undefined,
        qos: this.opts.qos,
        replicas: replicaTargets(plan),
      },
      {
        errorTopic: this.topics.errors,
        maxInFlight: this.opts.maxInFlight > 0 ? this.opts.maxInFlight : defaultInFlight(plan),
        frameTimeoutMs: this.opts.frameTimeoutMs,
        maxMessageBytes: this.opts.maxMessageBytes,
        onResult: (r) => {
          for (const l of this.resultListeners) l(r, d);
        },
        onFrameFailed: (frame, device, err, deployment) => this.events.emit({ type: 'frame-failed', deployment, frame, device, reason: errorMessage(err) }),
      },
    );
    await stream.open();
    this.streams.push(stream);
    const d: Deployment = { id: plan.id, package: plan, stream, deployMs, flat };
    this.latest = d;
    if (this.opts.supervise !== false) {
      // one deployment is supervised at a time: the newest
      for (const s of this.supervisors.splice(0)) s.stop();
      const supervisor = new Supervisor(this, d, {
        standby: [...(this.opts.standby ?? []), ...spares].filter((n) => !deploymentNodes(plan).includes(n)),
        heartbeatTimeoutMs: this.opts.heartbeatTimeoutMs ?? 5000,
        onNodeFailure: this.opts.onNodeFailure ?? 'merge',
        chooseCuts: this.opts.chooseCuts,
        readyTimeoutMs: this.opts.readyTimeoutMs,
        restoreAfterMs: this.opts.restoreAfterMs ?? 10_000,
        prefetch: this.opts.prefetchStandby ?? true,
        lostReplicas,
        emit: (e) => this.events.emit(e),
      });
      supervisor.start();
      d.supervisor = supervisor;
      this.supervisors.push(supervisor);
    }
    return d;
  }

  async close(): Promise<void> {
    for (const s of this.supervisors.splice(0)) s.stop();
    for (const s of this.streams.splice(0)) await s.close();
    this.watch?.stop();
    if (!this.opts.client) await closeMqtt(this.client);
    this.client = undefined;
  }
}
