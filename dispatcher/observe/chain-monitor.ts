/**
 * A live picture of a running deployment, for people and for Prometheus:
 * each node of the chain with its state and figures (frames per second, ms per
 * frame, queue, memory, from the results' hop records and the nodes'
 * heartbeats), the bytes on each link, the devices being served, and the
 * repairs as they happen. Fed by the dispatcher's events, its results and its
 * node watch; nothing here talks MQTT.
 */
import type { Deployment } from '../chain/deployment.js';
import type { FrameResult } from '../chain/frame-stream.js';
import type { Dispatcher } from '../dispatcher.js';
import { type DispatcherEvent, describeEvent, type RepairEvent } from '../events.js';
import type { DeviceServer } from '../serving/device-server.js';

/** Figures over the last WINDOW_MS of results. */
const WINDOW_MS = 10_000;
const MAX_EVENTS = 30;

export type ChainState = 'starting' | 'deploying' | 'running' | 'mending' | 'broker lost' | 'broken';

export interface NodeView {
  node: string;
  /** its stage (0-based), or null for a standby */
  stage: number | null;
  /** the state its status says (online, loading, ready, failed, offline), or 'unknown' before it has said one */
  state: string;
  /** frames per second through it, over the last 10 s */
  fps: number;
  /** mean decode + compute + encode ms per frame over the last 10 s (the last frame's, when none came in that time), null before any */
  msPerFrame: number | null;
  queue: number | null;
  rssBytes: number | null;
  cpuSeconds: number | null;
  backend: string | null;
}

export interface LinkView {
  from: string;
  to: string;
  /** mean bytes per frame over the last 10 s (the last frame's, when none came in that time) */
  bytesPerFrame: number;
}

export interface ChainSnapshot {
  pipeline: string;
  deployment: string | null;
  state: ChainState;
  /** epoch ms */
  at: number;
  chain: NodeView[];
  standbys: NodeView[];
  /** dispatcher -> first node, ..., last node -> dispatcher */
  links: LinkView[];
  throughputFps: number;
  frames: number;
  failedFrames: number;
  devices: { device: string; received: number; served: number; dropped: number; rejected: number; bad: number; failed: number; waiting: number }[];
  repairs: RepairEvent[];
  /** the latest events, newest last, as lines for people */
  events: { at: number; type: string; text: string }[];
}

interface Sample {
  at: number;
  /** per hop: node, busy ms */
  hops: { node: string; ms: number }[];
  bytes: number[];
}

export class ChainMonitor {
  private server?: DeviceServer;
  private state: ChainState = 'starting';
  private samples: Sample[] = [];
  private frames = 0;
  private failed = 0;
  private readonly repairs: RepairEvent[] = [];
  private readonly events: ChainSnapshot['events'] = [];
  private readonly listeners = new Set<() => void>();
  /** the last figures seen, shown while no frames flow: a node's ms per frame, a link's bytes per frame */
  private readonly lastMs = new Map<string, number>();
  private readonly lastBytes: number[] = [];
  private readonly offs: (() => void)[] = [];

  constructor(
    private readonly dispatcher: Dispatcher,
    private readonly standbyIds: string[] = [],
  ) {
    this.offs.push(
      dispatcher.events.onAny((e) => this.onEvent(e)),
      dispatcher.onResult((r, d) => this.onResult(r, d)),
      dispatcher.nodes.onChange(() => this.changed()),
    );
  }

  /** The device server, when devices are served. */
  serving(server: DeviceServer): void {
    this.server = server;
    this.changed();
  }

  /** Be told when the picture changed (at most as often as events and results come); returns the unsubscribe. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  close(): void {
    for (const off of this.offs.splice(0)) off();
    this.listeners.clear();
  }

  private changed(): void {
    for (const l of [...this.listeners]) l();
  }

  private onEvent(e: DispatcherEvent): void {
    this.events.push({ at: Date.now(), type: e.type, text: describeEvent(e).trim() });
    if (this.events.length > MAX_EVENTS) this.events.shift();
    if (e.type === 'deploy-start' && this.state === 'starting') this.state = 'deploying';
    else if ((e.type === 'deploy-done' || e.type === 'adopted') && this.state === 'deploying') this.state = 'running';
    else if (e.type === 'node-failed' || e.type === 'node-left' || (e.type === 'repair-start' && e.kind === 'restore')) this.state = 'mending';
    else if (e.type === 'broker-lost') this.state = 'broker lost';
    else if (e.type === 'repair-done') {
      this.state = 'running';
      this.repairs.push({ ...e });
    } else if (e.type === 'repair-failed') this.state = 'broken';
    else if (e.type === 'frame-failed') this.failed++;
    this.changed();
  }

  private onResult(r: FrameResult, d: Deployment): void {
    if (d !== this.dispatcher.deployment) return;
    this.frames++;
    const at = performance.now();
    const hops = r.hops.map((h) => ({ node: h.node, ms: h.decodeMs + h.computeMs + h.encodeMs }));
    this.samples.push({ at, hops, bytes: r.hopBytes });
    for (const h of hops) this.lastMs.set(h.node, h.ms);
    r.hopBytes.forEach((b, k) => {
      this.lastBytes[k] = b;
    });
    this.prune(at);
    this.changed();
  }

  private prune(now: number): void {
    let i = 0;
    while (i < this.samples.length && now - this.samples[i].at > WINDOW_MS) i++;
    if (i) this.samples.splice(0, i);
  }

  private nodeView(node: string, stage: number | null): NodeView {
    const watch = this.dispatcher.nodes;
    const st = watch.statuses.get(node);
    const hb = watch.heartbeats.get(node);
    const mine = this.samples.flatMap((s) => s.hops.filter((h) => h.node === node).map((h) => h.ms));
    const span = Math.min(WINDOW_MS, this.samples.length ? performance.now() - this.samples[0].at : 0) / 1000;
    return {
      node,
      stage,
      state: st?.state ?? 'unknown',
      fps: span > 0 ? mine.length / Math.max(span, 1) : 0,
      msPerFrame: mine.length ? mine.reduce((a, b) => a + b, 0) / mine.length : (this.lastMs.get(node) ?? null),
      queue: hb?.queue ?? null,
      rssBytes: hb?.rssBytes ?? null,
      cpuSeconds: hb?.cpuSeconds ?? null,
      backend: st?.backend ?? null,
    };
  }

  snapshot(): ChainSnapshot {
    this.prune(performance.now());
    const d = this.dispatcher.deployment;
    const chainIds = d ? d.package.stages.map((s) => s.nodeId) : [];
    const standbyIds = [...new Set([...this.standbyIds, ...(d?.supervisor?.standbys ?? [])])].filter((n) => !chainIds.includes(n));
    const ends = ['dispatcher', ...chainIds, 'dispatcher'];
    const links = ends.slice(0, -1).map((from, k) => {
      const bytes = this.samples.map((s) => s.bytes[k]).filter((b) => b !== undefined);
      return { from, to: ends[k + 1], bytesPerFrame: bytes.length ? bytes.reduce((a, b) => a + b, 0) / bytes.length : (this.lastBytes[k] ?? 0) };
    });
    const span = this.samples.length ? Math.max(1, Math.min(WINDOW_MS, performance.now() - this.samples[0].at) / 1000) : 0;
    const m = this.server?.metrics();
    return {
      pipeline: this.dispatcher.opts.pipeline,
      deployment: d?.id ?? null,
      state: this.state,
      at: Date.now(),
      chain: chainIds.map((n, k) => this.nodeView(n, k)),
      standbys: standbyIds.map((n) => this.nodeView(n, null)),
      links,
      throughputFps: span ? this.samples.length / span : 0,
      frames: this.frames,
      failedFrames: this.failed,
      devices: m ? Object.entries(m.perDevice).map(([device, c]) => ({ device, ...c })) : [],
      repairs: [...this.repairs],
      events: [...this.events],
    };
  }
}
