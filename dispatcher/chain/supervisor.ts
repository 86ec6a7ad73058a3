/**
 * Keeping a deployment alive: the supervisor watches the nodes of the running
 * chain (their Last Will turns a status offline; a heartbeat that stops tells a
 * half-open link) and the dispatcher's own broker connection, and mends the
 * chain when either breaks.
 *
 * - A node fails: its retained assignment is cleared (so it comes back as a
 *   standby, not into the chain), and its stage goes to an up standby, which
 *   reads the weights retained under the failed node's topics (or its own
 *   cache): same deployment, same stage topics, nothing else changes. With no
 *   standby, the orphaned stage is merged into its lighter neighbour (or the
 *   model is re-planned over the nodes left): a new deployment.
 * - The broker goes: new frames wait; once reconnected and the nodes are
 *   back, the retained deployment is republished if the broker lost it.
 *
 * Either way every frame still pending is then sent again; the stream delivers
 * the first result of each frame and drops later copies.
 *
 * One file of about 520 lines, kept whole: every repair here (a node or a replica failed, a node left its stage,
 * a replica rejoins, a merged chain grows back, the broker is back) runs in the one repair queue and reads and
 * changes the same state (the deployment and its package, the nodes dropped, the replicas lost, `busy`, the
 * broker's loss); split along the repairs, each part would need all of it through an interface as wide as this
 * class. What needs none of it is apart already: the standbys' prefetch lists (standby-prefetch.ts), the choice of
 * replica per frame (replica-router.ts), the cuts of a merge (lib/planning/repair.ts).
 */
import type { MqttClient } from 'mqtt';
import { DeferError, errorMessage } from '../../lib/core/errors.js';
import { log } from '../../lib/core/log.js';
import type { FlatModel } from '../../lib/model/flat-model.js';
import { publish } from '../../lib/mqtt/connect.js';
import { mergeCuts } from '../../lib/planning/repair.js';
import { type Assignment, encodeAssignment, type Topics } from '../../lib/protocol/index.js';
import type { DeploymentPackage } from '../deploy/deployment-package.js';
import { deploymentNodes, replicaTargets, republishDeployment, stageNodes } from '../deploy/deployment-package.js';
import type { NodeWatch } from '../deploy/node-watch.js';
import type { DispatcherEvent, RepairEvent } from '../events.js';
import type { Deployment } from './deployment.js';
import { StandbyPrefetch } from './standby-prefetch.js';

export type FailurePolicy = 'merge' | 'replan' | 'off';

export interface SupervisorOptions {
  /** nodes kept out of the chain to take over a failed node's stage, in order of preference */
  standby: string[];
  /** a node whose heartbeat is older than this is taken as failed (half-open link); 0: Last Will only */
  heartbeatTimeoutMs: number;
  /** with no standby up: merge the orphaned stage into a neighbour, re-plan over the nodes left, or give up */
  onNodeFailure: FailurePolicy;
  /** cuts for `stages` stages (replan); without it, replan merges */
  chooseCuts?: (flat: FlatModel, stages: number) => Promise<string[]>;
  readyTimeoutMs: number;
  /** after a merge or re-plan, a standby up this long (ms) brings the chain back to its first split; 0: never */
  restoreAfterMs: number;
  /** tell the standbys to keep the deployment's stages in their weight caches */
  prefetch: boolean;
  /** replicas already lost when supervision starts (an adopted deployment missing some): each rejoins its stage once up and idle */
  lostReplicas?: LostMember[];
  /** where the supervisor tells what it sees and does */
  emit: (event: DispatcherEvent) => void;
}

/** What the supervisor needs of the dispatcher. */
export interface ChainHost {
  readonly mqtt: MqttClient;
  readonly topics: Topics;
  readonly nodes: NodeWatch;
  /** publish a new deployment of `flat` cut at `cuts` onto `nodes` and wait until all are ready */
  publishPlan(flat: FlatModel, nodes: string[], cuts: string[], mended?: boolean): Promise<{ plan: DeploymentPackage; deployMs: number }>;
  /** the retained message on `topic`, if the broker has one within `waitMs` */
  readRetained(topic: string, waitMs: number): Promise<Buffer | null>;
}

/** Where the stream sends frames and reads results, for a new deployment of the chain. */
const streamTarget = (plan: DeploymentPackage) => ({
  deployment: plan.id,
  stageCount: plan.stages.length,
  inputTopic: plan.stages[0].assignment.inputTopic,
  resultTopic: plan.stages.at(-1)!.assignment.outputTopic,
  precision: plan.precision[0],
  imageInput: plan.stages[0].assignment.inputImage !== undefined,
  replicas: replicaTargets(plan),
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A replica of a stage that is not serving it, with the assignment that gives it the stage back. */
export type LostMember = { node: string; stage: number; assignment: Omit<Assignment, 'v' | 'kind'> };

/** A replica that failed (kept by node): the deployment and stage it served, and its assignment, to give back when it returns. */
type LostReplica = Omit<LostMember, 'node'> & { deployment: string };

export class Supervisor {
  readonly events: RepairEvent[] = [];
  private timer?: NodeJS.Timeout;
  private offChange?: () => void;
  private repairing: Promise<void> = Promise.resolve();
  private busy = false;
  /** nodes taken out of the chain; they may come back as standbys */
  private readonly dropped = new Set<string>();
  /** the split the deployment started with: a merged chain grows back to it */
  private readonly first: { nodes: string[]; cuts: string[] };
  /** replicas that failed, with the stage they served: each rejoins it once it is up and idle again */
  private readonly lostReplicas = new Map<string, LostReplica>();
  /** since when each standby has been up and idle (performance.now ms) */
  private readonly idleSince = new Map<string, number>();
  private readonly prefetch?: StandbyPrefetch;
  private lostAt = 0;
  private stopped = false;
  private readonly onOffline = () => this.connectionLost();
  private readonly onConnect = () => this.connectionBack();

  constructor(
    private readonly dispatcher: ChainHost,
    private readonly deployment: Deployment,
    private readonly opts: SupervisorOptions,
  ) {
    const stages = deployment.package.stages;
    this.first = { nodes: stages.map((s) => s.nodeId), cuts: stages.slice(0, -1).map((s) => s.span.last) };
    for (const r of opts.lostReplicas ?? []) {
      this.lostReplicas.set(r.node, { deployment: deployment.id, stage: r.stage, assignment: r.assignment });
      this.dropped.add(r.node);
    }
    if (opts.prefetch) this.prefetch = new StandbyPrefetch(() => dispatcher.mqtt, dispatcher.topics);
  }

  start(): void {
    const watch = this.dispatcher.nodes;
    this.offChange = watch.onChange(() => this.check(false));
    const every = Math.max(100, Math.min(1000, (this.opts.heartbeatTimeoutMs || 4000) / 4));
    let last = performance.now();
    this.timer = setInterval(() => {
      const now = performance.now();
      const late = now - last - every;
      last = now;
      // This process was blocked (a long computation here): the nodes' heartbeats may sit unread in the
      // socket, and timers run before I/O. Judge heartbeats again at the next tick, once they are read.
      this.check(late < every);
    }, every);
    this.timer.unref();
    this.dispatcher.mqtt.on('offline', this.onOffline);
    this.dispatcher.mqtt.on('close', this.onOffline);
    this.dispatcher.mqtt.on('connect', this.onConnect);
    this.enqueue(async () => undefined); // sends the standbys their prefetch lists, in turn with repairs
  }

  /** Tell the standbys which stages to keep in their weight caches (standby-prefetch.ts). */
  private async sendPrefetch(): Promise<void> {
    if (this.prefetch) await this.prefetch.update(this.deployment.package, this.standbys);
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    this.offChange?.();
    this.dispatcher.mqtt.off('offline', this.onOffline);
    this.dispatcher.mqtt.off('close', this.onOffline);
    this.dispatcher.mqtt.off('connect', this.onConnect);
  }

  /** the chain's nodes now, in order */
  private get chain(): string[] {
    return this.deployment.package.stages.map((s) => s.nodeId);
  }

  /** A repair worked: keep it (for run summaries) and tell. */
  private done(e: RepairEvent): void {
    this.events.push(e);
    this.opts.emit({ type: 'repair-done', ...e });
  }

  /** The standbys: configured ones and nodes dropped from the chain, not in the chain now. */
  get standbys(): string[] {
    const inChain = new Set(deploymentNodes(this.deployment.package));
    return [...new Set([...this.opts.standby, ...this.dropped])].filter((n) => !inChain.has(n));
  }

  private enqueue(job: () => Promise<void>): void {
    this.repairing = this.repairing.then(async () => {
      if (this.stopped) return;
      this.busy = true;
      try {
        await job();
        await this.sendPrefetch();
      } catch (err) {
        if (this.stopped) return; // the dispatcher closed under it
        log.error(`supervisor: ${errorMessage(err)}`);
        this.opts.emit({ type: 'repair-failed', deployment: this.deployment.id, reason: errorMessage(err) });
        // frames must not wait forever on a chain that will not come back: they fail with the reason
        if (this.dispatcher.mqtt.connected && this.deployment.stream.isPaused) {
          this.deployment.stream.fail(new DeferError('E_DEPLOY', `the chain of deployment ${this.deployment.id} broke and could not be mended: ${errorMessage(err)}`));
          this.stop();
        }
      } finally {
        this.busy = false;
      }
    });
  }

  /**
   * How long a node may be silent: the heartbeat timeout, or three times the
   * longest it spent on one frame (its heartbeat cannot go out while it
   * computes), whichever is longer. 0: heartbeats are not judged.
   */
  private silenceMs(node: string): number {
    const hb = this.opts.heartbeatTimeoutMs;
    return hb > 0 ? Math.max(hb, Math.ceil(3 * (this.deployment.stream.busyMs.get(node) ?? 0))) : 0;
  }

  /** Which node of the chain is down, if any; heartbeats are judged only when `beats` (from the timer, on time). */
  private check(beats = false): void {
    if (this.stopped || this.busy || !this.dispatcher.mqtt.connected || this.lostAt) return;
    const watch = this.dispatcher.nodes;
    for (const [k, stage] of this.deployment.package.stages.entries()) {
      const replicated = (stage.replicas?.length ?? 0) > 0;
      for (const s of stageNodes(stage)) {
        const st = watch.statuses.get(s.nodeId);
        let cause: string | undefined;
        if (st?.state === 'offline') cause = 'offline';
        else if (st?.state === 'failed' && st.deployment === this.deployment.id) cause = `failed: ${st.reason ?? 'no reason given'}`;
        else if (beats && st && !watch.isUp(s.nodeId, this.silenceMs(s.nodeId))) cause = `no heartbeat for ${this.silenceMs(s.nodeId)} ms`;
        else if (st?.deployment && st.deployment !== this.deployment.id) {
          // another deployment (another dispatcher, or this one redeploying) has the node: do not fight over it
          this.opts.emit({ type: 'unsupervised', deployment: this.deployment.id, node: s.nodeId, other: st.deployment });
          this.stop();
          return;
        } else if (st && st.state !== 'loading' && (st.deployment !== this.deployment.id || st.stage !== k)) {
          // up, but no longer running its stage (its assignment was cleared or replaced by someone else): give it back
          const node = s.nodeId;
          this.busy = true;
          const why = `left the deployment (now ${st.state}${st.deployment ? ` on ${st.deployment}` : ''})`;
          this.enqueue(() => (replicated ? this.replicaFailed(node, k, why) : this.reassign(node, k, why)));
          return;
        }
        if (!cause) continue;
        const node = s.nodeId;
        this.busy = true; // until the queued repair runs
        this.enqueue(() => (replicated ? this.replicaFailed(node, k, cause!) : this.nodeFailed(node, k, cause!)));
        return;
      }
    }
    if (beats) {
      this.maybeRestore();
      this.maybeRejoin();
    }
  }

  /** A replica that failed is up and idle again (for `restoreAfterMs`): it serves its stage again. */
  private maybeRejoin(): void {
    if (this.opts.restoreAfterMs <= 0 || !this.lostReplicas.size || this.busy) return;
    const settled = this.settledStandbys();
    for (const [node, r] of this.lostReplicas) {
      if (r.deployment !== this.deployment.id) {
        this.lostReplicas.delete(node); // the deployment was replaced (merged, re-planned): it has other stages now
        continue;
      }
      if (!settled.includes(node)) continue;
      this.busy = true;
      this.enqueue(() => this.rejoin(node, r));
      return;
    }
  }

  /** Give the node its assignment again; it joins the routes once ready (waited for outside the repair queue). */
  private async rejoin(node: string, r: LostReplica): Promise<void> {
    const d = this.deployment;
    const stage = d.package.stages[r.stage];
    this.lostReplicas.delete(node);
    if (!stage || d.id !== r.deployment || stageNodes(stage).some((n) => n.nodeId === node)) return;
    const t0 = performance.now();
    const at = Date.now();
    const client = this.dispatcher.mqtt;
    const clear = () => publish(client, this.dispatcher.topics.nodeAssign(node), Buffer.alloc(0), { qos: 1, retain: true });
    await publish(client, this.dispatcher.topics.nodeAssign(node), encodeAssignment({ ...r.assignment, createdAt: Date.now() }), { qos: 1, retain: true });
    // other failures are watched for meanwhile: the wait holds no repair back
    void this.dispatcher.nodes.waitStage(node, d.id, r.stage, this.opts.readyTimeoutMs).then(
      () =>
        this.enqueue(async () => {
          const now = d.package.stages[r.stage];
          if (d.id !== r.deployment || !now) {
            await clear(); // the deployment was mended into another meanwhile: the node stands by
            return;
          }
          d.package.stages[r.stage] = { ...now, replicas: [...(now.replicas ?? []), { nodeId: node, assignment: r.assignment }] };
          d.stream.addReplica(r.stage, { node, topic: r.assignment.inputTopic, workers: r.assignment.workers ?? 1 });
          this.dropped.delete(node);
          this.idleSince.delete(node);
          this.done({
            kind: 'rejoin',
            at,
            node,
            stage: r.stage,
            cause: `up and idle for ${this.opts.restoreAfterMs} ms`,
            deployment: d.id,
            chain: this.chain,
            repairMs: performance.now() - t0,
            resent: 0,
          });
        }),
      (err: unknown) =>
        this.enqueue(async () => {
          // not this time: it stays a standby (and a later failure of its stage's nodes can still take it)
          await clear();
          this.opts.emit({ type: 'standby-refused', deployment: d.id, standby: node, reason: `did not take its stage back: ${errorMessage(err)}` });
        }),
    );
  }

  /** Standbys that are up, idle (no deployment) and have been for `restoreAfterMs`. */
  private settledStandbys(): string[] {
    const watch = this.dispatcher.nodes;
    const now = performance.now();
    const ok: string[] = [];
    for (const n of this.standbys) {
      const idle = watch.isUp(n, this.opts.heartbeatTimeoutMs) && !watch.statuses.get(n)?.deployment;
      if (!idle) {
        this.idleSince.delete(n);
        continue;
      }
      if (!this.idleSince.has(n)) this.idleSince.set(n, now);
      if (now - this.idleSince.get(n)! >= this.opts.restoreAfterMs) ok.push(n);
    }
    return ok;
  }

  /** A merged (or re-planned) chain has fewer stages than it started with: grow it back when standbys have settled. */
  private maybeRestore(): void {
    const missing = this.first.nodes.length - this.deployment.package.stages.length;
    if (this.opts.restoreAfterMs <= 0 || missing <= 0) return;
    const spares = this.settledStandbys();
    if (spares.length < missing) return;
    const inChain = new Set(this.deployment.package.stages.map((s) => s.nodeId));
    // the first split, each node that is gone replaced by a settled standby (a node that came back takes its own place)
    const pool = spares.filter((n) => !this.first.nodes.includes(n));
    const nodes = this.first.nodes.map((n) => (inChain.has(n) || spares.includes(n) ? n : pool.shift()!));
    if (nodes.some((n) => !n) || new Set(nodes).size !== nodes.length) return;
    this.busy = true;
    this.enqueue(() => this.restore(nodes));
  }

  private async restore(nodes: string[]): Promise<void> {
    const d = this.deployment;
    const t0 = performance.now();
    const at = Date.now();
    const before = d.package.stages.map((s) => s.nodeId);
    d.stream.pause();
    this.opts.emit({ type: 'repair-start', kind: 'restore', deployment: d.id, cuts: this.first.cuts, chain: nodes, was: before });
    const { plan, deployMs } = await this.dispatcher.publishPlan(d.flat, nodes, this.first.cuts, true);
    const old = d.id;
    d.id = plan.id;
    d.package = plan;
    d.deployMs += deployMs;
    for (const n of nodes) this.dropped.delete(n);
    const resent = await d.stream.resume(streamTarget(plan));
    const repairMs = performance.now() - t0;
    this.done({
      kind: 'restore',
      at,
      cause: `${nodes.filter((n) => !before.includes(n)).join(', ')} up and idle for ${this.opts.restoreAfterMs} ms`,
      deployment: plan.id,
      previous: old,
      chain: nodes,
      repairMs,
      resent,
    });
  }

  /** A node of the chain is up but dropped its stage: publish its assignment again (it builds from its cache or the retained chunks). */
  private async reassign(node: string, k: number, cause: string): Promise<void> {
    const d = this.deployment;
    const stage = d.package.stages[k];
    if (stage?.nodeId !== node) return;
    const t0 = performance.now();
    const at = Date.now();
    d.stream.pause();
    this.opts.emit({ type: 'node-left', deployment: d.id, node, stage: k, stageCount: d.package.stages.length, cause });
    await publish(this.dispatcher.mqtt, this.dispatcher.topics.nodeAssign(node), encodeAssignment({ ...stage.assignment, createdAt: Date.now() }), { qos: 1, retain: true });
    try {
      await this.dispatcher.nodes.waitStage(node, d.id, k, this.opts.readyTimeoutMs);
    } catch (err) {
      await this.nodeFailed(node, k, `did not take its stage again: ${errorMessage(err)}`, true);
      return;
    }
    const resent = await d.stream.resume();
    const repairMs = performance.now() - t0;
    this.done({ kind: 'reassign', at, node, stage: k, cause, replacement: node, deployment: d.id, chain: this.chain, repairMs, resent });
  }

  /**
   * A node of a stage that has other nodes failed: it leaves the routes, the frames it held go through the
   * others (no redeployment, no pause), and it comes back as a standby.
   */
  private async replicaFailed(node: string, k: number, cause: string): Promise<void> {
    const d = this.deployment;
    const stage = d.package.stages[k];
    const all = stage ? stageNodes(stage) : [];
    if (!all.some((n) => n.nodeId === node)) return; // already mended
    if (all.length < 2) return this.nodeFailed(node, k, cause);
    const t0 = performance.now();
    const at = Date.now();
    this.opts.emit({ type: 'node-failed', deployment: d.id, node, stage: k, stageCount: d.package.stages.length, cause, held: d.stream.pendingCount });
    const { resent } = d.stream.dropReplica(node);
    const rest = all.filter((n) => n.nodeId !== node);
    this.lostReplicas.set(node, { deployment: d.id, stage: k, assignment: all.find((n) => n.nodeId === node)!.assignment });
    d.package.stages[k] = { ...stage, nodeId: rest[0].nodeId, assignment: rest[0].assignment, replicas: rest.slice(1) };
    await publish(this.dispatcher.mqtt, this.dispatcher.topics.nodeAssign(node), Buffer.alloc(0), { qos: 1, retain: true });
    this.dropped.add(node);
    this.done({ kind: 'replica', at, node, stage: k, cause, deployment: d.id, chain: this.chain, repairMs: performance.now() - t0, resent });
  }

  private async nodeFailed(node: string, k: number, cause: string, paused = false): Promise<void> {
    const d = this.deployment;
    if (d.package.stages[k]?.nodeId !== node) return; // already mended
    const t0 = performance.now();
    const at = Date.now();
    const stream = d.stream;
    const n = d.package.stages.length;
    if (!paused) stream.pause();
    this.opts.emit({ type: 'node-failed', deployment: d.id, node, stage: k, stageCount: n, cause, held: stream.pendingCount });
    const client = this.dispatcher.mqtt;
    const topics = this.dispatcher.topics;
    // it must not come back into its stage: cleared, it returns as a standby
    await publish(client, topics.nodeAssign(node), Buffer.alloc(0), { qos: 1, retain: true });
    this.dropped.add(node);
    const watch = this.dispatcher.nodes;
    for (const spare of this.standbys) {
      if (spare === node || !watch.isUp(spare, this.opts.heartbeatTimeoutMs)) continue;
      const busy = watch.statuses.get(spare)?.deployment;
      if (busy && busy !== d.id) continue; // it runs another deployment: not ours to take
      const old = d.package.stages[k].assignment;
      const a: Omit<Assignment, 'v' | 'kind'> = { ...old, nodeId: spare, weightsNode: old.weightsNode ?? node, createdAt: Date.now() };
      this.opts.emit({ type: 'repair-start', kind: 'standby', deployment: d.id, stage: k, stageCount: n, standby: spare, weightsNode: a.weightsNode! });
      await publish(client, topics.nodeAssign(spare), encodeAssignment(a), { qos: 1, retain: true });
      try {
        await watch.waitStage(spare, d.id, k, this.opts.readyTimeoutMs);
      } catch (err) {
        this.opts.emit({ type: 'standby-refused', deployment: d.id, standby: spare, reason: errorMessage(err) });
        await publish(client, topics.nodeAssign(spare), Buffer.alloc(0), { qos: 1, retain: true });
        continue;
      }
      d.package.stages[k] = { ...d.package.stages[k], nodeId: spare, assignment: a };
      const resent = await stream.resume();
      const repairMs = performance.now() - t0;
      this.done({ kind: 'standby', at, node, stage: k, cause, replacement: spare, deployment: d.id, chain: this.chain, repairMs, resent });
      return;
    }
    const policy = this.opts.onNodeFailure;
    if (policy === 'off' || n < 2) {
      const why = n < 2 ? 'it ran the only stage' : 'dispatcher.onNodeFailure is off';
      stream.fail(new DeferError('E_DEPLOY', `node ${node} failed (${cause}) and no standby is up; the chain cannot be mended because ${why}`));
      this.opts.emit({ type: 'repair-failed', deployment: d.id, reason: `node ${node} failed (${cause}), no standby is up and ${why}: frames fail until a node is added` });
      return;
    }
    const nodes = d.package.stages.map((s) => s.nodeId).filter((x) => x !== node);
    // the new deployment is a chain: the other stages' replicas stand by
    for (const s of d.package.stages) for (const r of s.replicas ?? []) await publish(client, topics.nodeAssign(r.nodeId), Buffer.alloc(0), { qos: 1, retain: true });
    let cuts: string[];
    let how: string;
    let mergedInto: { stage: number; node: string } | undefined;
    const replanned = policy === 'replan' && this.opts.chooseCuts !== undefined;
    if (replanned && this.opts.chooseCuts) {
      cuts = await this.opts.chooseCuts(d.flat, nodes.length);
      how = `re-planned over the ${nodes.length} nodes left`;
    } else {
      const m = mergeCuts(
        d.package.stages.map((st) => st.span),
        k,
      );
      cuts = m.cuts;
      mergedInto = { stage: m.into, node: d.package.stages[m.into].nodeId };
      how = `stage ${k + 1} merged into stage ${m.into + 1} (on ${d.package.stages[m.into].nodeId})${policy === 'replan' ? ' (no planner here: merged)' : ''}`;
    }
    this.opts.emit({ type: 'repair-start', kind: replanned ? 'replan' : 'merge', deployment: d.id, how, cuts, chain: nodes, ...(mergedInto ? { mergedInto } : {}) });
    const { plan, deployMs } = await this.dispatcher.publishPlan(d.flat, nodes, cuts, true);
    const old = d.id;
    d.id = plan.id;
    d.package = plan;
    d.deployMs += deployMs;
    const resent = await stream.resume(streamTarget(plan));
    const repairMs = performance.now() - t0;
    this.done({ kind: replanned ? 'replan' : 'merge', at, node, stage: k, cause, deployment: plan.id, previous: old, chain: nodes, repairMs, resent });
  }

  private connectionLost(): void {
    if (this.stopped || this.lostAt) return;
    this.lostAt = Date.now();
    this.deployment.stream.pause();
    this.opts.emit({ type: 'broker-lost', deployment: this.deployment.id, held: this.deployment.stream.pendingCount });
  }

  private connectionBack(): void {
    if (this.stopped || !this.lostAt) return;
    const at = this.lostAt;
    this.enqueue(async () => {
      const t0 = performance.now();
      const d = this.deployment;
      const watch = this.dispatcher.nodes;
      const nodes = d.package.stages.map((s) => s.nodeId);
      this.opts.emit({ type: 'broker-back', deployment: d.id, afterMs: Date.now() - at, waitingFor: nodes });
      // heartbeats stopped for everyone while the broker was gone: start their clocks again
      const since = performance.now();
      for (const n of nodes) watch.lastSeen.set(n, since);
      const republished = await this.restoreRetained();
      // the nodes reconnect on their own backoff: wait until each has said something since
      const waitMs = Math.max(3000, 2 * this.opts.heartbeatTimeoutMs);
      for (let t = 0; t < waitMs; t += 100) {
        // live, not the status the broker kept: the node is connected and subscribed again
        if (nodes.every((n) => (watch.lastLive.get(n) ?? 0) > since && watch.statuses.get(n)?.state === 'ready')) break;
        await sleep(100);
      }
      this.lostAt = 0;
      const resent = await d.stream.resume();
      const repairMs = performance.now() - t0;
      this.done({ kind: 'reconnect', at, cause: 'broker connection lost', deployment: d.id, chain: this.chain, repairMs, resent, republished });
      this.check(false);
    });
  }

  /** If the broker lost the retained assignments (a restart without persistence), publish them again. */
  private async restoreRetained(): Promise<boolean> {
    const d = this.deployment;
    const first = d.package.stages[0].nodeId;
    const have = await this.dispatcher.readRetained(this.dispatcher.topics.nodeAssign(first), 1000);
    if (have) return false;
    await republishDeployment(this.dispatcher.mqtt, this.dispatcher.topics, d.package, d.flat);
    return true;
  }
}
