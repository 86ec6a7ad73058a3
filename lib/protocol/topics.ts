/**
 * The topic tree. Everything lives under `defer/<pipeline>/`; see docs/protocol.md.
 */
import { DeferError } from '../core/errors.js';

const NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** Pipeline, node and device names become topic levels: keep them plain. */
export function assertTopicName(kind: string, name: string): void {
  if (!NAME.test(name)) {
    throw new DeferError(
      'E_CONFIG',
      `${kind} '${name}' is not a valid name: use 1-64 letters, digits, '_', '.' or '-' (it becomes an MQTT topic level)`,
    );
  }
}

export interface Topics {
  root: string;
  nodeStatus(nodeId: string): string;
  nodeStatusAll: string;
  nodeAssign(nodeId: string): string;
  /** a node's heartbeat (not retained): how the dispatcher tells a half-open link from a quiet node */
  nodeAlive(nodeId: string): string;
  nodeAliveAll: string;
  /** retained: the stages a standby keeps in its weight cache */
  nodePrefetch(nodeId: string): string;
  nodeWeights(nodeId: string, index: number): string;
  nodeWeightsAll(nodeId: string): string;
  stageIn(stage: number): string;
  /** where the last stage publishes, read by the dispatcher that made the deployment */
  results(dispatcherId: string): string;
  metrics(id: string): string;
  errors: string;
  /** where a device publishes its frames */
  frames(device: string): string;
  framesAll: string;
  /** where a device reads its results */
  deviceResults(device: string): string;
}

export function topicsFor(pipeline: string): Topics {
  assertTopicName('pipeline', pipeline);
  const root = `defer/${pipeline}`;
  return {
    root,
    nodeStatus: (id) => `${root}/node/${id}/status`,
    nodeStatusAll: `${root}/node/+/status`,
    nodeAssign: (id) => `${root}/node/${id}/assign`,
    nodeAlive: (id) => `${root}/node/${id}/alive`,
    nodeAliveAll: `${root}/node/+/alive`,
    nodePrefetch: (id) => `${root}/node/${id}/prefetch`,
    nodeWeights: (id, i) => `${root}/node/${id}/weights/${i}`,
    nodeWeightsAll: (id) => `${root}/node/${id}/weights/+`,
    stageIn: (k) => `${root}/stage/${k}/in`,
    results: (d) => `${root}/dispatcher/${d}/out`,
    metrics: (id) => `${root}/metrics/${id}`,
    errors: `${root}/errors`,
    frames: (d) => `${root}/frames/${d}`,
    framesAll: `${root}/frames/+`,
    deviceResults: (d) => `${root}/results/${d}`,
  };
}

/** The weight chunk index at the end of a `.../weights/<i>` topic, or -1. */
export function chunkIndexOf(topic: string): number {
  const last = topic.slice(topic.lastIndexOf('/') + 1);
  return /^\d{1,6}$/.test(last) ? Number(last) : -1;
}
