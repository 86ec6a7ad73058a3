/**
 * `defer status`: the nodes of a pipeline as the broker knows them (their
 * retained statuses and their heartbeats) and each serving dispatcher's
 * counters, as one table. Read-only: it publishes nothing.
 */
import type { MqttClient } from 'mqtt';
import { NodeWatch } from '../dispatcher/deploy/node-watch.js';
import { type BrokerAuth, closeMqtt, connectMqtt } from '../lib/mqtt/connect.js';
import { decodeMetrics, type ServeMetrics, topicsFor } from '../lib/protocol/index.js';

export interface StatusRow {
  node: string;
  state: string;
  deployment: string | null;
  /** 1-based, of how many, as people count stages; null when it runs none */
  stage: string | null;
  /** engines running its stage (worker threads; 1: its own thread); null when it runs none */
  workers: number | null;
  /** frames each engine computes in one call at most (null: no stage) */
  batch: number | null;
  frames: number | null;
  queue: number | null;
  rssBytes: number | null;
  backend: string | null;
  host: string | null;
  /** seconds since it was last heard from (status or heartbeat) while this command listened; null: only its retained status */
  heardSecondsAgo: number | null;
}

export interface StatusReport {
  pipeline: string;
  at: number;
  nodes: StatusRow[];
  dispatchers: Pick<ServeMetrics, 'dispatcher' | 'received' | 'served' | 'dropped' | 'rejected' | 'bad' | 'failed' | 'devices' | 'at'>[];
}

export class StatusReader {
  private constructor(
    private readonly client: MqttClient,
    private readonly watch: NodeWatch,
    private readonly pipeline: string,
    private readonly metrics: Map<string, ServeMetrics>,
    private readonly startedAt: number,
  ) {}

  static async open(brokerUrl: string, pipeline: string, auth: BrokerAuth = {}): Promise<StatusReader> {
    const topics = topicsFor(pipeline);
    const client = await connectMqtt({ url: brokerUrl, clientIdPrefix: 'defer-status', ...auth });
    const watch = new NodeWatch(client, topics);
    const metrics = new Map<string, ServeMetrics>();
    client.on('message', (topic, payload) => {
      const t = topics.parse(topic);
      if (t?.kind !== 'metrics' || !payload.length) return;
      try {
        metrics.set(t.id, decodeMetrics(payload));
      } catch {
        // not a dispatcher's counters we can read
      }
    });
    await watch.start();
    await client.subscribeAsync(topics.metricsAll, { qos: 1 });
    return new StatusReader(client, watch, pipeline, metrics, performance.now());
  }

  report(): StatusReport {
    const now = performance.now();
    const nodes = [...this.watch.statuses.values()]
      .sort((a, b) => a.node.localeCompare(b.node))
      .map((s): StatusRow => {
        const hb = this.watch.heartbeats.get(s.node);
        const live = this.watch.lastLive.get(s.node);
        return {
          node: s.node,
          state: s.state,
          deployment: s.deployment ?? null,
          stage: s.stage !== undefined && s.deployment ? String(s.stage + 1) : null,
          workers: s.stage !== undefined && s.deployment ? (s.workers ?? 1) : null,
          batch: s.stage !== undefined && s.deployment ? (s.batch ?? 1) : null,
          frames: hb?.frames ?? s.frames ?? null,
          queue: hb?.queue ?? null,
          rssBytes: hb?.rssBytes ?? null,
          backend: s.backend ?? null,
          host: s.capabilities?.host ?? null,
          heardSecondsAgo: live !== undefined && live >= this.startedAt ? Math.round((now - live) / 100) / 10 : null,
        };
      });
    const dispatchers = [...this.metrics.values()].map(({ dispatcher, received, served, dropped, rejected, bad, failed, devices, at }) => ({
      dispatcher,
      received,
      served,
      dropped,
      rejected,
      bad,
      failed,
      devices,
      at,
    }));
    return { pipeline: this.pipeline, at: Date.now(), nodes, dispatchers };
  }

  async close(): Promise<void> {
    this.watch.stop();
    await closeMqtt(this.client);
  }
}

export function formatStatus(r: StatusReport): string {
  const head = ['node', 'state', 'deployment', 'stage', 'workers', 'frames', 'queue', 'memory MB', 'backend', 'host', 'heard'];
  const rows = r.nodes.map((n) => [
    n.node,
    n.state,
    n.deployment ?? '-',
    n.stage ?? '-',
    n.workers === null ? '-' : `${n.workers}${(n.batch ?? 1) > 1 ? ` (batch ${n.batch})` : ''}`,
    n.frames === null ? '-' : String(n.frames),
    n.queue === null ? '-' : String(n.queue),
    n.rssBytes === null ? '-' : (n.rssBytes / 1e6).toFixed(1),
    n.backend ?? '-',
    n.host ?? '-',
    n.heardSecondsAgo === null ? 'retained' : `${n.heardSecondsAgo} s ago`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]))
      .join('  ')
      .trimEnd();
  const out = [`pipeline ${r.pipeline}: ${r.nodes.length} node(s)`, '', line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)];
  if (!r.nodes.length) out.push('(no node has published a status on this pipeline)');
  for (const d of r.dispatchers) {
    out.push('', `dispatcher ${d.dispatcher}: ${d.devices} device(s), ${d.served} of ${d.received} frames served (dropped ${d.dropped}, rejected ${d.rejected}, bad ${d.bad}, failed ${d.failed})`);
  }
  return `${out.join('\n')}\n`;
}
