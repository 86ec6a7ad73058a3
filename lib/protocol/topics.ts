/**
 * The topic tree: every topic the project uses is spelled here, and only here.
 * Everything lives under `defer/<pipeline>/`; see docs/protocol.md.
 *
 * `topicsFor(pipeline)` builds a pipeline's topics; `parse` reads one back.
 * `ANY_PIPELINE` is the same tree with `+` for the pipeline (the broker's ACLs
 * and size limits), and its builders take `+` for any node, stage or device.
 */
import { assertTopicName } from './names.js';

/** The first level of every topic. */
export const TOPIC_ROOT = 'defer';

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
  /** a node's link probe: it publishes there and reads its own messages back through the broker (edge-node/link-probe.ts) */
  nodeProbe(nodeId: string): string;
  nodeWeights(nodeId: string, index: number | '+'): string;
  nodeWeightsAll(nodeId: string): string;
  /** a stage's input; with `node`, the input of one replica of a stage served by several nodes (docs/protocol.md, Replicas) */
  stageIn(stage: number | '+', node?: string): string;
  /** where the last stage publishes, read by the dispatcher that made the deployment */
  results(dispatcherId: string): string;
  metrics(id: string): string;
  metricsAll: string;
  errors: string;
  /** where a device publishes its frames */
  frames(device: string): string;
  framesAll: string;
  /** where a device reads its results */
  deviceResults(device: string): string;
  /** what a topic of this pipeline is, or null for a topic outside it (or not of the protocol) */
  parse(topic: string): ParsedTopic | null;
}

/** A topic of the tree, read back. */
export type ParsedTopic =
  | { kind: 'node-status' | 'node-alive' | 'node-assign' | 'node-prefetch' | 'node-probe'; node: string }
  | { kind: 'node-weights'; node: string; index: number }
  | { kind: 'stage-in'; stage: number; node?: string }
  | { kind: 'results'; dispatcher: string }
  | { kind: 'metrics'; id: string }
  | { kind: 'errors' }
  | { kind: 'frames' | 'device-results'; device: string };

const NODE_KINDS = { status: 'node-status', alive: 'node-alive', assign: 'node-assign', prefetch: 'node-prefetch', probe: 'node-probe' } as const;
const INDEX = /^\d{1,6}$/;

/** Parse the levels below the pipeline (`rest` = topic.split('/').slice(2)). */
function parseRest(rest: string[]): ParsedTopic | null {
  const [a, b, c, d] = rest;
  if (a === 'node' && rest.length === 3 && c in NODE_KINDS) return { kind: NODE_KINDS[c as keyof typeof NODE_KINDS], node: b };
  if (a === 'node' && rest.length === 4 && c === 'weights' && INDEX.test(d)) return { kind: 'node-weights', node: b, index: Number(d) };
  if (a === 'stage' && rest.length === 3 && c === 'in' && INDEX.test(b)) return { kind: 'stage-in', stage: Number(b) };
  if (a === 'stage' && rest.length === 4 && c === 'in' && INDEX.test(b) && d) return { kind: 'stage-in', stage: Number(b), node: d };
  if (a === 'dispatcher' && rest.length === 3 && c === 'out') return { kind: 'results', dispatcher: b };
  if (a === 'metrics' && rest.length === 2) return { kind: 'metrics', id: b };
  if (a === 'errors' && rest.length === 1) return { kind: 'errors' };
  if (a === 'frames' && rest.length === 2) return { kind: 'frames', device: b };
  if (a === 'results' && rest.length === 2) return { kind: 'device-results', device: b };
  return null;
}

function tree(pipeline: string): Topics {
  const root = `${TOPIC_ROOT}/${pipeline}`;
  return {
    root,
    nodeStatus: (id) => `${root}/node/${id}/status`,
    nodeStatusAll: `${root}/node/+/status`,
    nodeAssign: (id) => `${root}/node/${id}/assign`,
    nodeAlive: (id) => `${root}/node/${id}/alive`,
    nodeAliveAll: `${root}/node/+/alive`,
    nodePrefetch: (id) => `${root}/node/${id}/prefetch`,
    nodeProbe: (id) => `${root}/node/${id}/probe`,
    nodeWeights: (id, i) => `${root}/node/${id}/weights/${i}`,
    nodeWeightsAll: (id) => `${root}/node/${id}/weights/+`,
    stageIn: (k, node) => (node === undefined ? `${root}/stage/${k}/in` : `${root}/stage/${k}/in/${node}`),
    results: (d) => `${root}/dispatcher/${d}/out`,
    metrics: (id) => `${root}/metrics/${id}`,
    metricsAll: `${root}/metrics/+`,
    errors: `${root}/errors`,
    frames: (d) => `${root}/frames/${d}`,
    framesAll: `${root}/frames/+`,
    deviceResults: (d) => `${root}/results/${d}`,
    parse: (topic) => {
      const levels = topic.split('/');
      return levels[0] === TOPIC_ROOT && levels[1] === pipeline ? parseRest(levels.slice(2)) : null;
    },
  };
}

export function topicsFor(pipeline: string): Topics {
  assertTopicName('pipeline', pipeline);
  return tree(pipeline);
}

/** The tree for every pipeline at once (`defer/+/...`): for ACLs and limits, not for publishing. */
export const ANY_PIPELINE: Topics = tree('+');

/** Everything under the root, every pipeline. */
export const ALL_TOPICS = `${TOPIC_ROOT}/#`;

/** The pipeline a topic belongs to and what it is there, or null for a topic outside the tree. */
export function parseTopic(topic: string): { pipeline: string; topic: ParsedTopic | null } | null {
  const levels = topic.split('/');
  if (levels[0] !== TOPIC_ROOT || levels.length < 3 || !levels[1]) return null;
  return { pipeline: levels[1], topic: parseRest(levels.slice(2)) };
}

/** `ANY_PIPELINE`'s filter without its `defer/+/` prefix: how limits name topics (e.g. `node/+/status`). */
export function relativeFilter(filter: string): string {
  return filter.slice(ANY_PIPELINE.root.length + 1);
}

/** The absolute filter for a filter relative to `defer/<any pipeline>/`. */
export function absoluteFilter(relative: string): string {
  return `${ANY_PIPELINE.root}/${relative}`;
}

/** Does topic filter `want` (may hold + and #) only ever match topics that `allowed` matches? */
export function filterWithin(want: string, allowed: string): boolean {
  const w = want.split('/');
  const a = allowed.split('/');
  for (let i = 0; i < a.length; i++) {
    if (a[i] === '#') return true;
    if (i >= w.length) return false;
    if (w[i] === '#') return false;
    if (a[i] === '+') continue;
    if (w[i] !== a[i]) return false;
  }
  return w.length === a.length;
}
