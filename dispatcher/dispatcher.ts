/**
 * The dispatcher: owns one MQTT connection, deploys a partitioned model onto
 * named nodes, waits for them, and streams frames through the chain.
 */

import { randomBytes } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { DeferError, errorMessage } from '../lib/core/errors.js';
import { log } from '../lib/core/log.js';
import { TypedEmitter } from '../lib/core/typed-emitter.js';
import type { FlatModel } from '../lib/model/flat-model.js';
import { sha256 } from '../lib/model/partition.js';
import { closeMqtt, connectMqtt, publish } from '../lib/mqtt/connect.js';
import type { ChoosePrecision } from '../lib/planning/precision-choice.js';
import { memberName } from '../lib/planning/shape.js';
import { type Assignment, assertTopicName, type Codec, decodeAssignment, type ImageInput, type Precision, type Topics, topicsFor } from '../lib/protocol/index.js';
import type { Deployment } from './chain/deployment.js';
import { type FrameResult, FrameStream } from './chain/frame-stream.js';
import { type ChainHost, type FailurePolicy, type LostMember, Supervisor } from './chain/supervisor.js';
import {
  type DeploymentPackage,
  deploymentNodes,
  hasReplicas,
  hopPrecisions,
  packageDeployment,
  publishDeployment,
  replicaAssignment,
  replicaTargets,
  type StageMember,
  stageNodes,
} from './deploy/deployment-package.js';
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
   * standby. Null otherwise.
   */
  async adopt(flat: FlatModel, nodes: string[], cuts: string[], waitMs = 1500): Promise<Deployment | null> {
    if (!this.client || !this.watch) throw new Error('dispatcher is not connected: call connect() first');
    const t0 = performance.now();
    const plans = flat.spans(cuts);
    if (plans.length !== nodes.length || new Set(nodes).size !== nodes.length) return null;
    const standby = (this.opts.standby ?? []).filter((n) => !nodes.includes(n));
    const precision = hopPrecisions(await this.precisionFor(flat, nodes, cuts), plans.length);
    const candidates = [...nodes, ...standby];
    const found = new Map<string, Assignment>();
    const runs = (n: string, id: string, k: number) => this.runsStage(n, found.get(n), id, k, precision);
    // stage k runs on its own node or on a standby; the deployment is the one stage 0 runs
    const chain = (): string[] | null => {
      const first = [nodes[0], ...standby].find((n) => found.get(n)?.stage === 0);
      const id = first && found.get(first)!.deployment;
      if (!id) return null;
      const order = plans.map((_, k) => [nodes[k], ...standby].find((n) => runs(n, id, k)));
      return order.every(Boolean) && new Set(order).size === order.length ? (order as string[]) : null;
    };
    await this.readAssignments(candidates, found, () => chain() !== null, waitMs);
    const order = chain();
    if (!order) return null;
    const as = order.map((n) => found.get(n)!);
    const id = as[0].deployment;
    // the same weights, stage by stage: only the blobs' hashes are needed (no chunking)
    if (!plans.every((p, k) => sha256(flat.stageWeights(p).blob) === as[k].manifest.sha256)) return null;
    const replaced = order.flatMap((n, k) => (n === nodes[k] ? [] : [{ node: nodes[k], by: n }]));
    this.events.emit({ type: 'adopted', deployment: id, chain: order, replaced });
    const plan: DeploymentPackage = {
      id,
      stages: plans.map((p, k) => ({ span: p, nodeId: order[k], assignment: as[k], chunks: [] })),
      totalBytes: as.reduce((t, a) => t + a.manifest.totalBytes, 0),
      precision,
    };
    // nodes a standby replaced are standbys now
    return this.openStream(
      plan,
      flat,
      as[0].inputTopic,
      as[nodes.length - 1].outputTopic,
      performance.now() - t0,
      nodes.filter((n) => !order.includes(n)),
    );
  }

  /**
   * A dispatcher that restarts, for a deployment with replicas or workers (`shape`: each stage's nodes with their
   * engines): if the nodes of the shape run their stages of one deployment, ready, with those engines, and each
   * stage's weights are this split's (by sha256), carry on with it: no weights sent, frames routed over the
   * replicas again. A replica missing (down, or dropped by the supervisor before the restart: its assignment
   * empty) is adopted as lost while its stage has another node: the frames go through the others, its retained
   * assignment is cleared, and the supervisor gives it its stage back once it is up and idle (as after a replica
   * failure). Null where a stage has none of its nodes, or a node of the shape runs something else.
   */
  async adoptShape(flat: FlatModel, shape: StageMember[][], cuts: string[], waitMs = 1500): Promise<Deployment | null> {
    if (!this.client || !this.watch) throw new Error('dispatcher is not connected: call connect() first');
    const t0 = performance.now();
    const plans = flat.spans(cuts);
    const members = shape.flat().map((m) => m.node);
    if (plans.length !== shape.length || new Set(members).size !== members.length) return null;
    const precision = hopPrecisions(
      await this.precisionFor(
        flat,
        shape.map((s) => s[0].node),
        cuts,
      ),
      plans.length,
    );
    const found = new Map<string, Assignment>();
    const statuses = this.watch.statuses;
    // the deployment: the one the shape's first ready node runs
    const id = (): string | undefined => {
      for (const n of members) {
        const a = found.get(n);
        const st = statuses.get(n);
        if (a && st?.state === 'ready' && st.deployment === a.deployment) return a.deployment;
      }
      return undefined;
    };
    const runs = (m: StageMember, k: number) => {
      const a = found.get(m.node);
      return (a?.workers ?? 1) === m.workers && (a?.batch ?? 1) === (m.batch ?? 1) && this.runsStage(m.node, a, id(), k, precision);
    };
    const all = () => id() !== undefined && shape.every((s, k) => s.every((m) => runs(m, k)));
    await this.readAssignments(members, found, all, waitMs);
    const deployment = id();
    if (deployment === undefined) return null;
    const running = shape.map((s, k) => s.filter((m) => runs(m, k)));
    // a node that is not running its stage may be lost (its assignment ours or none, not serving), not busy elsewhere
    const lost = shape.flatMap((s, k) => s.filter((m) => !running[k].includes(m)).map((m) => ({ m, k })));
    const isLost = ({ m }: { m: StageMember }) => {
      const a = found.get(m.node);
      return (a === undefined || a.deployment === deployment) && statuses.get(m.node)?.state !== 'ready';
    };
    if (running.some((r) => r.length === 0) || !lost.every(isLost)) return null;
    const as = running.map((r) => r.map((m) => found.get(m.node)!));
    if (!plans.every((p, k) => sha256(flat.stageWeights(p).blob) === as[k][0].manifest.sha256)) return null;
    // a lost replica's assignment, as its stage's others have it
    const lostReplicas = lost.map(({ m, k }) => ({ node: m.node, stage: k, assignment: replicaAssignment(as[k][0], m, this.topics) }));
    // cleared, a lost node that comes back is idle: the supervisor then gives it its stage again
    for (const { m } of lost) if (found.has(m.node)) await publish(this.mqtt, this.topics.nodeAssign(m.node), Buffer.alloc(0), { qos: 1, retain: true });
    this.events.emit({
      type: 'adopted',
      deployment,
      chain: running.map((r) => r.map((m) => memberName(m)).join('+')),
      replaced: [],
      ...(lost.length ? { missing: lost.map(({ m }) => m.node) } : {}),
    });
    const plan: DeploymentPackage = {
      id: deployment,
      stages: plans.map((p, k) => ({
        span: p,
        nodeId: running[k][0].node,
        assignment: as[k][0],
        chunks: [],
        ...(running[k].length > 1 ? { replicas: running[k].slice(1).map((m, i) => ({ nodeId: m.node, assignment: as[k][i + 1] })) } : {}),
      })),
      totalBytes: as.reduce((t, a) => t + a[0].manifest.totalBytes, 0),
      precision,
      ...(lost.length ? { routed: true as const } : {}),
    };
    return this.openStream(plan, flat, as[0][0].inputTopic, as[plans.length - 1][0].outputTopic, performance.now() - t0, [], lostReplicas);
  }

  /**
   * Whether `node`, by its retained assignment `a` and its status, runs stage `k` of deployment `id` as this
   * dispatcher would deploy it (the same number of stages, codec and output precision), ready.
   */
  private runsStage(node: string, a: Assignment | undefined, id: string | undefined, k: number, precision: Precision[]): boolean {
    const st = this.nodes.statuses.get(node);
    return (
      a !== undefined &&
      a.deployment === id &&
      a.stage === k &&
      a.stageCount === precision.length - 1 &&
      a.codec === this.opts.codec &&
      (a.outputPrecision ?? 'lossless') === precision[k + 1] &&
      st?.deployment === id &&
      st.stage === k &&
      st.state === 'ready'
    );
  }

  /**
   * Read the retained assignments of `nodes` into `found` (those that decode) until `done()` or `waitMs` has
   * passed: what a restarted dispatcher looks at before it adopts a running deployment.
   */
  private async readAssignments(nodes: string[], found: Map<string, Assignment>, done: () => boolean, waitMs: number): Promise<void> {
    const client = this.mqtt;
    const topics = nodes.map((n) => this.topics.nodeAssign(n));
    const onMessage = (topic: string, payload: Buffer) => {
      const i = topics.indexOf(topic);
      if (i < 0 || payload.length === 0) return;
      try {
        found.set(nodes[i], decodeAssignment(payload, this.opts.maxMessageBytes * 4));
      } catch {
        // not one we can adopt
      }
    };
    client.on('message', onMessage);
    try {
      await client.subscribeAsync(topics, { qos: 1 });
      for (let t = 0; t < waitMs && !done(); t += 50) await new Promise((r) => setTimeout(r, 50));
      await client.unsubscribeAsync(topics);
    } finally {
      client.off('message', onMessage);
    }
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
