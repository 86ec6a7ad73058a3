/**
 * defer-edge-node: makes the Node-RED host a DEFER compute node with the
 * given id. It measures itself, announces itself, takes the stage a
 * dispatcher assigns it, and computes. Its status shows its stage (1-based),
 * the frames it has served, and their rate. It has no wires: its work arrives and leaves over MQTT.
 */
import { EdgeNode } from '../edge-node/edge-node.js';
import { errorMessage } from '../lib/core/errors.js';
import { count } from '../lib/core/words.js';
import { BACKEND_CHOICES, type BackendChoice } from '../lib/model/engine.js';
import { isName, NAME_RULE } from '../lib/protocol/index.js';
import { BrokerStartError, type BrokerState, type DeferBrokerNode, statusOf } from './defer-broker.js';
import { type NodeAPI, positiveInt, type RedNode, short } from './red.js';

export interface EdgeNodeConfig {
  name?: string;
  broker?: string;
  nodeId?: string;
  backend?: string;
  maxQueue?: number | string;
}

export function edgeNodeProblem(c: EdgeNodeConfig): string | null {
  if (!c.nodeId || !isName(c.nodeId)) return `node id '${c.nodeId ?? ''}' must be ${NAME_RULE}`;
  if (c.backend && !(BACKEND_CHOICES as readonly string[]).includes(c.backend)) return `backend must be one of ${BACKEND_CHOICES.join(', ')}`;
  if (Number.isNaN(positiveInt(c.maxQueue, 64))) return 'queue size must be a positive integer';
  return null;
}

export default function (RED: NodeAPI): void {
  function DeferEdgeNode(this: RedNode, config: EdgeNodeConfig) {
    RED.nodes.createNode(this, config);
    const node = this;
    const broker = RED.nodes.getNode(config.broker ?? '') as DeferBrokerNode | null;
    const problem = !broker ? 'no DEFER broker configured: pick or add one' : broker.problem ? `broker: ${broker.problem}` : edgeNodeProblem(config);
    if (problem) {
      node.status({ fill: 'red', shape: 'ring', text: short(problem) });
      node.error(`defer-edge-node not started: ${problem}`);
      return;
    }
    const id = config.nodeId!;
    let edge: EdgeNode | undefined;
    let closed = false;
    let timer: NodeJS.Timeout | undefined;
    let last = { frames: 0, at: Date.now() };
    let connected = true;
    // the frames computed since the node started (EdgeNode.counters.frames), and their rate over the last 2 s
    const servedText = (frames: number, fps: number) => `${count(frames, 'frame')} served${fps > 0 ? `, ${fps.toFixed(1)}/s` : ''}`;

    const show = () => {
      if (!edge || closed) return;
      if (!connected) return;
      const a = edge.assignment;
      const now = Date.now();
      const fps = ((edge.counters.frames - last.frames) * 1000) / Math.max(1, now - last.at);
      last = { frames: edge.counters.frames, at: now };
      switch (edge.currentState) {
        case 'ready':
          node.status({ fill: 'green', shape: 'dot', text: `${id}: stage ${a!.stage + 1} of ${a!.stageCount}, ${servedText(edge.counters.frames, fps)}` });
          break;
        case 'loading':
          node.status({ fill: 'yellow', shape: 'ring', text: `${id}: loading its stage` });
          break;
        case 'failed':
          node.status({ fill: 'red', shape: 'dot', text: `${id}: stage failed to load` });
          break;
        default:
          node.status({ fill: 'grey', shape: 'ring', text: `${id}: waiting for a stage` });
      }
    };
    const user = {
      id: node.id,
      brokerState(b: BrokerState) {
        connected = b.connected;
        if (closed) return;
        if (!b.connected) node.status({ fill: 'red', shape: 'ring', text: short(b.text) });
        else show();
      },
    };

    (async () => {
      node.status({ fill: 'yellow', shape: 'ring', text: `${id}: connecting` });
      const endpoint = await broker!.register(user);
      if (closed) return;
      node.status({ fill: 'yellow', shape: 'ring', text: `${id}: measuring itself` });
      edge = new EdgeNode({
        id,
        brokerUrl: endpoint.url,
        username: endpoint.username,
        password: endpoint.password,
        pipeline: endpoint.pipeline,
        backend: (config.backend || 'auto') as BackendChoice,
        maxMessageBytes: 64 * 1024 * 1024,
        maxQueue: positiveInt(config.maxQueue, 64),
      });
      await edge.start();
      if (closed) {
        await edge.close();
        return;
      }
      node.log(`edge node ${id} online (backend ${edge.backend}, pipeline ${endpoint.pipeline})`);
      show();
      timer = setInterval(show, 2000);
    })().catch((err) => {
      if (closed) return;
      node.status({ fill: 'red', shape: 'dot', text: statusOf(err) });
      // the broker's own failure: the broker node logs it once, with what to do; the status here says it in short
      if (!(err instanceof BrokerStartError)) node.error(`defer-edge-node ${id}: ${errorMessage(err)}`);
    });

    node.on('close', (_removed, done) => {
      closed = true;
      if (timer) clearInterval(timer);
      (async () => {
        await edge?.close().catch(() => undefined);
        edge = undefined;
        await broker!.deregister(user);
        node.status({});
      })().then(done, done);
    });
  }

  RED.nodes.registerType('defer-edge-node', DeferEdgeNode as never);
}
