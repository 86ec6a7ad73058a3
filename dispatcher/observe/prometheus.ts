/**
 * The deployment in Prometheus's text format (prom-client, a registry of its
 * own): per node and stage, per link, per device, per deployment, and the
 * dispatcher's own process. Results and events are observed as they come;
 * node states and heartbeat figures are read at each scrape. Every series is
 * labelled with its pipeline. Names: docs/observability.md.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { NODE_STATES } from '../../lib/protocol/index.js';
import type { Dispatcher } from '../dispatcher.js';
import { REPAIR_KINDS } from '../events.js';
import type { DeviceServer } from '../serving/device-server.js';
import type { ChainMonitor } from './chain-monitor.js';

/** a node's states, and 'unknown' before it has published one */
const STATES = [...NODE_STATES, 'unknown'];
/** seconds: 1 ms .. 10 s */
const STAGE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export interface DeferMetrics {
  registry: Registry;
  /** count the device server's frames and latencies too */
  serving(server: DeviceServer): void;
  close(): void;
}

/** A counter whose value is read from elsewhere at scrape time (a node's own total, a server's count). */
function setCounter(c: Counter<string>, labels: Record<string, string>, value: number): void {
  c.remove(labels);
  c.inc(labels, value);
}

export function createMetrics(dispatcher: Dispatcher, monitor: ChainMonitor): DeferMetrics {
  const registry = new Registry();
  const pipeline = dispatcher.opts.pipeline;
  registry.setDefaultLabels({ pipeline });
  collectDefaultMetrics({ register: registry, prefix: 'defer_dispatcher_' });
  const offs: (() => void)[] = [];
  let server: DeviceServer | undefined;

  const stageLabels = ['node', 'stage'];
  const frames = new Counter({
    name: 'defer_stage_frames_total',
    help: 'Frames each node computed for its stage (from the results the dispatcher received)',
    labelNames: stageLabels,
    registers: [registry],
  });
  const compute = new Histogram({ name: 'defer_stage_compute_seconds', help: "A stage's compute time per frame on its node", labelNames: stageLabels, buckets: STAGE_BUCKETS, registers: [registry] });
  const decode = new Histogram({ name: 'defer_stage_decode_seconds', help: "Decoding a stage's input activation", labelNames: stageLabels, buckets: STAGE_BUCKETS, registers: [registry] });
  const encode = new Histogram({ name: 'defer_stage_encode_seconds', help: "Encoding a stage's output activation", labelNames: stageLabels, buckets: STAGE_BUCKETS, registers: [registry] });
  const hopBytes = new Counter({ name: 'defer_hop_bytes_total', help: 'Bytes of activation messages on each link of the chain', labelNames: ['from', 'to'], registers: [registry] });
  const results = new Counter({ name: 'defer_frames_total', help: 'Frames the chain answered', registers: [registry] });
  const failures = new Counter({ name: 'defer_frames_failed_total', help: 'Frames that failed (timeout, a chain that could not be mended, ...)', registers: [registry] });
  const latency = new Histogram({ name: 'defer_frame_latency_seconds', help: 'From the dispatcher sending a frame into the chain to its result', buckets: LATENCY_BUCKETS, registers: [registry] });
  const repairs = new Counter({
    name: 'defer_repairs_total',
    help: 'Repairs of the chain, by kind (standby, merge, replan, reassign, restore, reconnect)',
    labelNames: ['kind'],
    registers: [registry],
  });
  // every kind from the start at 0, so that rate() and increase() see the first repair
  for (const kind of REPAIR_KINDS) repairs.inc({ kind }, 0);
  const deploySeconds = new Gauge({ name: 'defer_deploy_seconds', help: 'Seconds the last deployment took, from publishing to every node ready', registers: [registry] });
  const deviceLatency = new Histogram({
    name: 'defer_device_latency_seconds',
    help: "A device's frame from arrival at the dispatcher to its result",
    labelNames: ['device'],
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });

  const collect = () => {
    const snap = monitor.snapshot();
    nodeState.reset();
    nodeUp.reset();
    queue.reset();
    rss.reset();
    for (const n of [...snap.chain, ...snap.standbys]) {
      const labels = { node: n.node, stage: n.stage === null ? 'standby' : String(n.stage + 1) };
      for (const s of STATES) nodeState.set({ ...labels, state: s }, n.state === s ? 1 : 0);
      nodeUp.set(labels, n.state === 'ready' && n.stage !== null ? 1 : 0);
      if (n.queue !== null) queue.set(labels, n.queue);
      if (n.rssBytes !== null) rss.set(labels, n.rssBytes);
      if (n.cpuSeconds !== null) setCounter(cpu, labels, n.cpuSeconds);
    }
    throughput.set(snap.throughputFps);
    for (const d of snap.devices) {
      setCounter(devFrames, { device: d.device }, d.received);
      setCounter(devServed, { device: d.device }, d.served);
      for (const reason of ['dropped', 'rejected', 'bad', 'failed'] as const) setCounter(devNot, { device: d.device, reason }, d[reason]);
    }
  };
  let collectedAt = -1;
  const once = () => {
    const t = performance.now();
    if (t - collectedAt < 50) return;
    collectedAt = t;
    collect();
  };

  // read at scrape time: prom-client calls a metric's collect() before reading it; one snapshot serves the scrape
  const nodeState = new Gauge({
    name: 'defer_node_state',
    help: "1 for a node's current state (its retained status), 0 for the others",
    labelNames: ['node', 'stage', 'state'],
    registers: [registry],
    collect: once,
  });
  const nodeUp = new Gauge({ name: 'defer_node_up', help: '1 when the node runs its stage (ready), else 0', labelNames: stageLabels, registers: [registry], collect: once });
  const queue = new Gauge({ name: 'defer_node_queue_length', help: "Activations waiting in the node's input queue (its heartbeat)", labelNames: stageLabels, registers: [registry], collect: once });
  const rss = new Gauge({ name: 'defer_node_resident_memory_bytes', help: "Resident memory of the node's process (its heartbeat)", labelNames: stageLabels, registers: [registry], collect: once });
  const cpu = new Counter({ name: 'defer_node_cpu_seconds_total', help: "CPU seconds the node's process has used (its heartbeat)", labelNames: stageLabels, registers: [registry], collect: once });
  const throughput = new Gauge({ name: 'defer_throughput_frames_per_second', help: 'Frames answered per second over the last 10 s', registers: [registry], collect: once });
  const devFrames = new Counter({ name: 'defer_device_frames_received_total', help: 'Frames a device sent', labelNames: ['device'], registers: [registry], collect: once });
  const devServed = new Counter({ name: 'defer_device_frames_served_total', help: "A device's frames answered with a result", labelNames: ['device'], registers: [registry], collect: once });
  const devNot = new Counter({
    name: 'defer_device_frames_not_served_total',
    help: "A device's frames not served, by reason (dropped, rejected, bad, failed)",
    labelNames: ['device', 'reason'],
    registers: [registry],
    collect: once,
  });

  offs.push(
    dispatcher.onResult((r, d) => {
      results.inc();
      latency.observe(r.latencyMs / 1000);
      const chain = d.package.stages.map((s) => s.nodeId);
      for (const h of r.hops) {
        const labels = { node: h.node, stage: String(h.stage + 1) };
        frames.inc(labels);
        compute.observe(labels, h.computeMs / 1000);
        decode.observe(labels, h.decodeMs / 1000);
        encode.observe(labels, h.encodeMs / 1000);
      }
      const ends = ['dispatcher', ...chain, 'dispatcher'];
      r.hopBytes.forEach((b, k) => {
        if (ends[k + 1] !== undefined) hopBytes.inc({ from: ends[k], to: ends[k + 1] }, b);
      });
    }),
    dispatcher.events.onAny((e) => {
      if (e.type === 'repair-done') repairs.inc({ kind: e.kind });
      else if (e.type === 'frame-failed') failures.inc();
      else if (e.type === 'deploy-done') deploySeconds.set(e.ms / 1000);
    }),
  );
  return {
    registry,
    serving(s) {
      server = s;
      offs.push(server.onServed((device, ms) => deviceLatency.observe({ device }, ms / 1000)));
    },
    close() {
      for (const off of offs.splice(0)) off();
      registry.clear();
    },
  };
}
