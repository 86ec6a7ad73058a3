/**
 * Adoption: a dispatcher that restarts looks at the nodes' retained assignments and statuses, and where they run a
 * deployment of exactly the split it would deploy (each stage's weights by sha256, in order), ready, it carries on
 * with that deployment: no weights are sent. What is found here is a package without chunks; the dispatcher opens
 * its stream and supervisor (dispatcher.ts).
 */
import type { MqttClient } from 'mqtt';
import type { FlatModel } from '../../lib/model/flat-model.js';
import { sha256 } from '../../lib/model/partition.js';
import { publish } from '../../lib/mqtt/connect.js';
import { memberName } from '../../lib/planning/shape.js';
import { type Assignment, type Codec, decodeAssignment, type Precision, type Topics } from '../../lib/protocol/index.js';
import type { LostMember } from '../chain/supervisor.js';
import type { DispatcherEvent } from '../events.js';
import { type DeploymentPackage, hopPrecisions, replicaAssignment, type StageMember } from './deployment-package.js';
import type { NodeWatch } from './node-watch.js';

/** What adoption needs of the dispatcher (connected). */
export interface AdoptHost {
  readonly mqtt: MqttClient;
  readonly nodes: NodeWatch;
  readonly topics: Topics;
  readonly opts: {
    /** nodes kept out of the chain to take over a failed node's stage */
    standby?: string[];
    codec: Codec;
    maxMessageBytes: number;
  };
  /** the precision of each hop of a chain of `nodes` cut at `cuts`: as given, or chosen */
  precisionFor(flat: FlatModel, nodes: string[], cuts: string[]): Promise<Precision[] | undefined>;
  emit(event: DispatcherEvent): void;
}

/** A running deployment found: its package (no chunks), where its frames go in and its results come out. */
export interface Adopted {
  plan: DeploymentPackage;
  inputTopic: string;
  resultTopic: string;
  /** nodes of the chain asked for that a standby replaced: standbys now */
  spares: string[];
  /** replicas missing, adopted as lost: each rejoins its stage once up and idle */
  lostReplicas: LostMember[];
}

/**
 * If the retained assignments of `nodes` are a deployment of exactly this split (each stage's weights by sha256,
 * in this order) and every node reports it ready, that deployment. A stage that a standby (dispatcher.standby)
 * took over from its node is adopted on the standby. Null otherwise.
 */
export async function adoptChain(host: AdoptHost, flat: FlatModel, nodes: string[], cuts: string[], waitMs: number): Promise<Adopted | null> {
  const plans = flat.spans(cuts);
  if (plans.length !== nodes.length || new Set(nodes).size !== nodes.length) return null;
  const standby = (host.opts.standby ?? []).filter((n) => !nodes.includes(n));
  const precision = hopPrecisions(await host.precisionFor(flat, nodes, cuts), plans.length);
  const candidates = [...nodes, ...standby];
  const found = new Map<string, Assignment>();
  const runs = (n: string, id: string, k: number) => runsStage(host, n, found.get(n), id, k, precision);
  // stage k runs on its own node or on a standby; the deployment is the one stage 0 runs
  const chain = (): string[] | null => {
    const first = [nodes[0], ...standby].find((n) => found.get(n)?.stage === 0);
    const id = first && found.get(first)!.deployment;
    if (!id) return null;
    const order = plans.map((_, k) => [nodes[k], ...standby].find((n) => runs(n, id, k)));
    return order.every(Boolean) && new Set(order).size === order.length ? (order as string[]) : null;
  };
  await readAssignments(host, candidates, found, () => chain() !== null, waitMs);
  const order = chain();
  if (!order) return null;
  const as = order.map((n) => found.get(n)!);
  const id = as[0].deployment;
  // the same weights, stage by stage: only the blobs' hashes are needed (no chunking)
  if (!plans.every((p, k) => sha256(flat.stageWeights(p).blob) === as[k].manifest.sha256)) return null;
  const replaced = order.flatMap((n, k) => (n === nodes[k] ? [] : [{ node: nodes[k], by: n }]));
  host.emit({ type: 'adopted', deployment: id, chain: order, replaced });
  const plan: DeploymentPackage = {
    id,
    stages: plans.map((p, k) => ({ span: p, nodeId: order[k], assignment: as[k], chunks: [] })),
    totalBytes: as.reduce((t, a) => t + a.manifest.totalBytes, 0),
    precision,
  };
  // nodes a standby replaced are standbys now
  return { plan, inputTopic: as[0].inputTopic, resultTopic: as[nodes.length - 1].outputTopic, spares: nodes.filter((n) => !order.includes(n)), lostReplicas: [] };
}

/**
 * For a deployment with replicas or workers (`shape`: each stage's nodes with their engines): if the nodes of the
 * shape run their stages of one deployment, ready, with those engines, and each stage's weights are this split's
 * (by sha256), that deployment: frames are routed over the replicas again. A replica missing (down, or dropped by
 * the supervisor before the restart: its assignment empty) is adopted as lost while its stage has another node:
 * the frames go through the others, its retained assignment is cleared, and the supervisor gives it its stage
 * back once it is up and idle (as after a replica failure). Null where a stage has none of its nodes, or a node
 * of the shape runs something else.
 */
export async function adoptShape(host: AdoptHost, flat: FlatModel, shape: StageMember[][], cuts: string[], waitMs: number): Promise<Adopted | null> {
  const plans = flat.spans(cuts);
  const members = shape.flat().map((m) => m.node);
  if (plans.length !== shape.length || new Set(members).size !== members.length) return null;
  const precision = hopPrecisions(
    await host.precisionFor(
      flat,
      shape.map((s) => s[0].node),
      cuts,
    ),
    plans.length,
  );
  const found = new Map<string, Assignment>();
  const statuses = host.nodes.statuses;
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
    return (a?.workers ?? 1) === m.workers && (a?.batch ?? 1) === (m.batch ?? 1) && runsStage(host, m.node, a, id(), k, precision);
  };
  const all = () => id() !== undefined && shape.every((s, k) => s.every((m) => runs(m, k)));
  await readAssignments(host, members, found, all, waitMs);
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
  const lostReplicas = lost.map(({ m, k }) => ({ node: m.node, stage: k, assignment: replicaAssignment(as[k][0], m, host.topics) }));
  // cleared, a lost node that comes back is idle: the supervisor then gives it its stage again
  for (const { m } of lost) if (found.has(m.node)) await publish(host.mqtt, host.topics.nodeAssign(m.node), Buffer.alloc(0), { qos: 1, retain: true });
  host.emit({
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
  return { plan, inputTopic: as[0][0].inputTopic, resultTopic: as[plans.length - 1][0].outputTopic, spares: [], lostReplicas };
}

/**
 * Whether `node`, by its retained assignment `a` and its status, runs stage `k` of deployment `id` as this
 * dispatcher would deploy it (the same number of stages, codec and output precision), ready.
 */
function runsStage(host: AdoptHost, node: string, a: Assignment | undefined, id: string | undefined, k: number, precision: Precision[]): boolean {
  const st = host.nodes.statuses.get(node);
  return (
    a !== undefined &&
    a.deployment === id &&
    a.stage === k &&
    a.stageCount === precision.length - 1 &&
    a.codec === host.opts.codec &&
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
async function readAssignments(host: AdoptHost, nodes: string[], found: Map<string, Assignment>, done: () => boolean, waitMs: number): Promise<void> {
  const client = host.mqtt;
  const topics = nodes.map((n) => host.topics.nodeAssign(n));
  const onMessage = (topic: string, payload: Buffer) => {
    const i = topics.indexOf(topic);
    if (i < 0 || payload.length === 0) return;
    try {
      found.set(nodes[i], decodeAssignment(payload, host.opts.maxMessageBytes * 4));
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
