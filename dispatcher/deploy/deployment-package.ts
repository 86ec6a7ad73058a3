/**
 * Packaging a partitioned model into per-node assignments and weight chunks,
 * and publishing them, retained, on each node's topics.
 */

import { randomBytes } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { DeferError } from '../../lib/core/errors.js';
import type { FlatModel, StageSpan } from '../../lib/model/flat-model.js';
import { sha256 } from '../../lib/model/partition.js';
import { publish } from '../../lib/mqtt/connect.js';
import { stageMemoryOf } from '../../lib/planning/plan-inputs.js';
import type { ShapeMember } from '../../lib/planning/shape.js';
import {
  type Assignment,
  type Codec,
  encodeAssignment,
  encodeWeightChunk,
  type ImageInput,
  PRECISIONS,
  type Precision,
  type Topics,
  type WeightManifest,
  zfpAvailable,
} from '../../lib/protocol/index.js';
import type { ReplicaTarget } from '../chain/replica-router.js';

/** One node serving a stage, with its engines (the shape planner's member). */
export type StageMember = ShapeMember;

export interface DeployOptions {
  /** one node per stage (a chain); with `shape`, each stage's first node */
  nodes: string[];
  /** the nodes serving each stage and their engines (several: replicas, fed by load); absent: `nodes`, one engine each */
  shape?: StageMember[][];
  cuts: string[];
  chunkBytes: number;
  codec: Codec;
  /** how precisely activations travel: one value for every hop, or one per hop (dispatcher -> stage 0, stage 0 -> 1, ..., last stage -> dispatcher) */
  precision?: Precision[];
  qos: 0 | 1;
  /** frames an engine may compute in one call where a stage's member gives none (default 1) */
  batch?: number;
  /** topic where the last stage publishes its output */
  resultTopic: string;
  pipeline: string;
  /** stage 0 decodes encoded images itself, this way (a compact first hop); absent: frames arrive as tensors */
  inputImage?: ImageInput;
}

export interface StagePackage {
  span: StageSpan;
  /** the stage's first node: its weight chunks are retained under this node's topics */
  nodeId: string;
  assignment: Omit<Assignment, 'v' | 'kind'>;
  chunks: Uint8Array[];
  /** the stage's other nodes (replicas), each reading its own input topic and the first node's chunks */
  replicas?: { nodeId: string; assignment: Omit<Assignment, 'v' | 'kind'> }[];
}

/** Every node of a stage with its assignment: the first, then its replicas. */
export function stageNodes(s: StagePackage): { nodeId: string; assignment: Omit<Assignment, 'v' | 'kind'> }[] {
  return [{ nodeId: s.nodeId, assignment: s.assignment }, ...(s.replicas ?? [])];
}

/** Every node of a deployment, stage by stage. */
export function deploymentNodes(d: Pick<DeploymentPackage, 'stages'>): string[] {
  return d.stages.flatMap((s) => stageNodes(s).map((n) => n.nodeId));
}

/** Where each stage's nodes read, with their engines: the stream's routes (undefined for a chain: no stage has replicas). */
export function replicaTargets(d: Pick<DeploymentPackage, 'stages' | 'routed'>): ReplicaTarget[][] | undefined {
  if (!hasReplicas(d)) return undefined;
  return d.stages.map((s) => stageNodes(s).map((n) => ({ node: n.nodeId, topic: n.assignment.inputTopic, workers: n.assignment.workers ?? 1 })));
}

/** Does a stage of this deployment have replicas (frames then carry a route, chosen by the dispatcher)? */
export function hasReplicas(d: Pick<DeploymentPackage, 'stages' | 'routed'>): boolean {
  return d.routed === true || d.stages.some((s) => (s.replicas?.length ?? 0) > 0);
}

export interface DeploymentPackage {
  id: string;
  stages: StagePackage[];
  totalBytes: number;
  /** the precision of each hop: dispatcher -> stage 0, stage 0 -> 1, ..., last stage -> dispatcher */
  precision: Precision[];
  /** frames carry routes though no stage has replicas now: a replicated deployment adopted with replicas missing, which rejoin */
  routed?: true;
}

/** One precision per hop of a chain of `stages` stages, from one value for all or one per hop. */
export function hopPrecisions(given: readonly Precision[] | undefined, stages: number): Precision[] {
  const list = given?.length ? given : ['lossless' as const];
  const bad = list.find((p) => !PRECISIONS.includes(p));
  if (bad) throw new DeferError('E_CONFIG', `precision '${bad}' is not one of ${PRECISIONS.join(', ')} (dispatcher.precision)`);
  if (list.includes('zfp') && !zfpAvailable())
    throw new DeferError(
      'E_CONFIG',
      'precision zfp needs the ZFP addon, which this install lacks: install libzfp-dev (Debian) and run npx defer build-zfp (in a clone: npm run build), on the dispatcher and every node',
    );
  if (list.length === 1) return Array.from({ length: stages + 1 }, () => list[0]);
  if (list.length !== stages + 1) {
    throw new DeferError(
      'E_CONFIG',
      `dispatcher.precision has ${list.length} values; a chain of ${stages} stages has ${stages + 1} hops (dispatcher -> first stage, between stages, last stage -> dispatcher): give one value, or ${stages + 1}`,
    );
  }
  return [...list];
}

/**
 * The assignment of `member` as a node serving the stage of `of` (another node's assignment of it, decoded or
 * not): its own input topic, its engines, the weights read where they are retained (under the node whose
 * assignment has no `weightsNode`: the stage's first).
 */
export function replicaAssignment(of: Omit<Assignment, 'v' | 'kind'> & { v?: unknown; kind?: unknown }, member: StageMember, topics: Topics): Omit<Assignment, 'v' | 'kind'> {
  const { workers: _w, batch: _b, weightsNode, v: _v, kind: _k, ...base } = of;
  const from = weightsNode ?? of.nodeId;
  return {
    ...base,
    nodeId: member.node,
    inputTopic: topics.stageIn(of.stage, member.node),
    ...(from === member.node ? {} : { weightsNode: from }),
    ...(member.workers > 1 ? { workers: member.workers } : {}),
    ...((member.batch ?? 1) > 1 ? { batch: member.batch } : {}),
  };
}

export function newDeploymentId(): string {
  return `d${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
}

export function packageDeployment(flat: FlatModel, topics: Topics, opts: DeployOptions): DeploymentPackage {
  const plans = flat.spans(opts.cuts);
  const given = opts.batch ?? 1;
  const shape = (opts.shape ?? opts.nodes.map((node): StageMember[] => [{ node, workers: 1 }])).map((s) => s.map((m) => (m.batch === undefined && given > 1 ? { ...m, batch: given } : m)));
  if (plans.length !== shape.length) {
    throw new DeferError(
      'E_CONFIG',
      `${opts.cuts.length} cuts make ${plans.length} stages but ${shape.length} ${opts.shape ? 'stages of nodes' : 'nodes'} were given (${shape.map((m) => m.map((x) => x.node).join('+')).join(', ')}): give one ${opts.shape ? 'group of nodes' : 'node'} per stage`,
    );
  }
  const all = shape.flat().map((m) => m.node);
  const dup = all.find((n, i) => all.indexOf(n) !== i);
  if (dup) throw new DeferError('E_CONFIG', `node '${dup}' is listed twice: a node serves one stage`);
  const empty = shape.findIndex((m) => m.length === 0);
  if (empty >= 0) throw new DeferError('E_CONFIG', `stage ${empty + 1} has no node`);
  const id = newDeploymentId();
  const precision = hopPrecisions(opts.precision, plans.length);
  // the planner's estimate of each stage's memory, which its nodes weigh their free memory with
  const memory = stageMemoryOf(flat, plans);
  let totalBytes = 0;
  const stages = plans.map((plan, k): StagePackage => {
    const { specs, blob } = flat.stageWeights(plan);
    const chunks: Uint8Array[] = [];
    for (let off = 0; off < blob.byteLength; off += opts.chunkBytes) chunks.push(blob.subarray(off, Math.min(off + opts.chunkBytes, blob.byteLength)));
    const manifest: WeightManifest = { specs, totalBytes: blob.byteLength, sha256: sha256(blob), chunkBytes: opts.chunkBytes, chunks: chunks.map((c) => sha256(c)) };
    totalBytes += blob.byteLength;
    const [first, ...others] = shape[k];
    const replicated = others.length > 0;
    const assignment: Omit<Assignment, 'v' | 'kind'> = {
      deployment: id,
      pipeline: opts.pipeline,
      nodeId: first.node,
      stage: k,
      stageCount: plans.length,
      topology: JSON.stringify(flat.stageTopology(plan)),
      ...(flat.format === 'layers-model' ? {} : { modelFormat: flat.format }),
      inputShape: plan.inputShape,
      inputDtype: plan.inputDtype,
      ...(k === 0 && opts.inputImage ? { inputImage: opts.inputImage } : {}),
      manifest,
      inputTopic: replicated ? topics.stageIn(k, first.node) : topics.stageIn(k),
      outputTopic: k === plans.length - 1 ? opts.resultTopic : topics.stageIn(k + 1),
      codec: opts.codec,
      ...(precision[k + 1] === 'lossless' ? {} : { outputPrecision: precision[k + 1] }),
      qos: opts.qos,
      createdAt: Date.now(),
      ...(first.workers > 1 ? { workers: first.workers } : {}),
      ...((first.batch ?? 1) > 1 ? { batch: first.batch } : {}),
      memoryBytes: Math.round(memory[k].stageBytes),
      batchFrameBytes: Math.round(memory[k].batchFrameBytes),
      plainMemoryBytes: Math.round(memory[k].plainStageBytes),
    };
    const replicas = others.map((m) => ({ nodeId: m.node, assignment: replicaAssignment(assignment, m, topics) }));
    return { span: plan, nodeId: first.node, chunks, assignment, ...(replicated ? { replicas } : {}) };
  });
  return { id, stages, totalBytes, precision };
}

/**
 * Publish every assignment, then every weight chunk, all retained with QoS 1,
 * keeping a bounded number of publishes in flight. Reports bytes sent.
 */
export async function publishDeployment(client: MqttClient, topics: Topics, d: DeploymentPackage, onProgress?: (sentBytes: number, totalBytes: number) => void): Promise<void> {
  for (const s of d.stages) {
    for (const n of stageNodes(s)) await publish(client, topics.nodeAssign(n.nodeId), encodeAssignment(n.assignment), { qos: 1, retain: true });
  }
  const jobs: (() => Promise<void>)[] = [];
  let sent = 0;
  for (const s of d.stages) {
    s.chunks.forEach((data, index) => {
      jobs.push(async () => {
        const body = encodeWeightChunk({ deployment: d.id, index, count: s.chunks.length, data });
        await publish(client, topics.nodeWeights(s.assignment.weightsNode ?? s.nodeId, index), body, { qos: 1, retain: true });
        sent += data.byteLength;
        onProgress?.(sent, d.totalBytes);
      });
    });
  }
  const WINDOW = 8;
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) await jobs[next++]();
  };
  await Promise.all(Array.from({ length: Math.min(WINDOW, jobs.length) }, worker));
}

/**
 * Publish a running deployment again, as it is now (a broker that restarted
 * without persistence lost it): every assignment, and the weight chunks under
 * the topics the assignments name (a standby's are its failed node's). An
 * adopted deployment carries no chunks: they are cut again from the model.
 */
export async function republishDeployment(client: MqttClient, topics: Topics, d: DeploymentPackage, flat: FlatModel): Promise<void> {
  const stages = d.stages.map((s) => {
    if (s.chunks.length || s.assignment.manifest.totalBytes === 0) return s;
    const { blob } = flat.stageWeights(s.span);
    const size = s.assignment.manifest.chunkBytes;
    const chunks: Uint8Array[] = [];
    for (let off = 0; off < blob.byteLength; off += size) chunks.push(blob.subarray(off, Math.min(off + size, blob.byteLength)));
    return { ...s, chunks };
  });
  await publishDeployment(client, topics, { ...d, stages });
}
