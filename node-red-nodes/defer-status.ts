import { errorMessage } from '../lib/core/errors.js';
import { decodeMetrics, decodeStatus, topicsFor } from '../lib/protocol/index.js';
import { BrokerStartError, type BrokerState, type DeferBrokerNode, statusOf } from './defer-broker.js';
import { type NodeAPI, type RedNode, short } from './red.js';

export interface StatusConfig {
  name?: string;
  broker?: string;
  metrics?: boolean;
}

export default function (RED: NodeAPI): void {
  function DeferStatusNode(this: RedNode, config: StatusConfig) {
    RED.nodes.createNode(this, config);
    const node = this;
    const broker = RED.nodes.getNode(config.broker ?? '') as DeferBrokerNode | null;
    const problem = !broker ? 'no DEFER broker configured: pick or add one' : broker.problem ? `broker: ${broker.problem}` : null;
    if (problem) {
      node.status({ fill: 'red', shape: 'ring', text: short(problem) });
      node.error(`defer-status not started: ${problem}`);
      return;
    }
    const topics = topicsFor(broker!.pipeline);
    const wantMetrics = config.metrics !== false;
    let closed = false;
    let seen = 0;
    /** the last node status, in words (its stage and workers) */
    let last = '';
    const onMessage = (topic: string, payload: Buffer) => {
      if (payload.length === 0) return;
      try {
        const t = topics.parse(topic);
        if (t?.kind === 'node-status') {
          const s = decodeStatus(payload);
          node.send({ topic: `status/${s.node}`, payload: s });
          last = `${s.node} ${s.state}${s.stage !== undefined && s.state === 'ready' ? ` stage ${s.stage + 1}` : ''}${(s.workers ?? 1) > 1 ? ` x${s.workers} workers` : ''}${(s.batch ?? 1) > 1 ? `, batches of ${s.batch}` : ''}`;
        } else if (wantMetrics && t?.kind === 'metrics') {
          node.send({ topic: `metrics/${t.id}`, payload: decodeMetrics(payload) });
        } else return;
        seen++;
        node.status({ fill: 'green', shape: 'dot', text: `${seen} updates${last ? `; ${last}` : ''}` });
      } catch (err) {
        node.warn(`unreadable message on ${topic}: ${errorMessage(err)}`);
      }
    };
    const user = {
      id: node.id,
      brokerState(b: BrokerState) {
        if (!closed) node.status(b.connected ? { fill: 'green', shape: 'ring', text: 'listening' } : { fill: 'red', shape: 'ring', text: short(b.text) });
      },
    };
    (async () => {
      await broker!.register(user);
      if (closed) return;
      for (const filter of [topics.nodeStatusAll, ...(wantMetrics ? [topics.metricsAll] : [])]) await broker!.subscribe(user, filter, onMessage);
    })().catch((err) => {
      if (closed) return;
      node.status({ fill: 'red', shape: 'dot', text: statusOf(err) });
      // the broker's own failure: the broker node logs it once, with what to do; the status here says it in short
      if (!(err instanceof BrokerStartError)) node.error(`defer-status: ${errorMessage(err)}`);
    });
    node.on('close', (_removed, done) => {
      closed = true;
      broker!.deregister(user).then(done, done);
    });
  }

  RED.nodes.registerType('defer-status', DeferStatusNode as never);
}
