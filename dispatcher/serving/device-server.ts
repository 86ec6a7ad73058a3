/**
 * Serving devices: frames arrive on defer/<pipeline>/frames/<device>, go down
 * the chain, and their results (or the reason they were not served) go back
 * on defer/<pipeline>/results/<device>. The number of frames being prepared
 * or in the chain is bounded; frames beyond it wait per device under the
 * configured policy (latest, queue, reject), and devices take turns. Every
 * frame is counted exactly once: served, dropped, rejected, bad or failed;
 * and every frame gets exactly one answer: its result, or why not.
 */
import type { MqttClient } from 'mqtt';
import { now } from '../../lib/core/clock.js';
import { errorMessage, FrameError, type FrameErrorKind } from '../../lib/core/errors.js';
import { log } from '../../lib/core/log.js';
import {
  type Counts,
  type DeviceFrame,
  encodeFailedResult,
  encodeMetrics,
  encodeServedResult,
  hopLatencies,
  isName,
  NAME_RULE,
  type Policy,
  parseFrame,
  type RawTensor,
  type Reply,
  type ServeMetrics,
  type Topics,
  topK,
} from '../../lib/protocol/index.js';
import type { FrameResult, FrameStream, ImageFrame } from '../chain/frame-stream.js';
import { frameInput, type ModelInput } from './frame-tensor.js';

export interface ServeOptions {
  policy: Policy;
  /** frames a device may have waiting with policy queue */
  queueSize: number;
  maxDevices: number;
  maxFrameBytes: number;
  topK: number;
  reply: Reply;
  /** 0: metrics only when closing */
  metricsIntervalMs: number;
  /** the dispatcher's id: metrics go to defer/<pipeline>/metrics/<id> */
  id: string;
  /** frames being prepared or in the chain at once; default: the stream's maxInFlight */
  maxInFlight?: number;
}

interface Waiting {
  frame: DeviceFrame;
  arrivedAt: number;
  /** the device's n-th frame (1-based), in the order it arrived: lets a device match results to frames that carry no id */
  seq: number;
}

interface Device {
  name: string;
  queue: Waiting[];
  counts: Counts;
  /** settles when the device's previous frame has gone into the chain: frames enter it, and so come back, in order */
  lastSend: Promise<void>;
}

const zero = (): Counts => ({ received: 0, served: 0, dropped: 0, rejected: 0, bad: 0, failed: 0 });
export class DeviceServer {
  private readonly devices = new Map<string, Device>();
  private readonly total: Counts = zero();
  private readonly badByKind: Partial<Record<FrameErrorKind, number>> = {};
  private inFlight = 0;
  private turn = 0;
  private seq = 0;
  private timer?: NodeJS.Timeout;
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  private readonly onMessage = (topic: string, payload: Buffer) => this.receive(topic, payload);
  readonly maxInFlight: number;

  constructor(
    private readonly client: MqttClient,
    private readonly topics: Topics,
    private readonly stream: FrameStream,
    private readonly input: ModelInput,
    private readonly labels: string[] | null,
    private readonly opts: ServeOptions,
  ) {
    this.maxInFlight = Math.min(opts.maxInFlight ?? stream.maxInFlight, stream.maxInFlight);
  }

  private readonly servedListeners = new Set<(device: string, latencyMs: number) => void>();

  /** Be told of every frame served, with its latency from arrival to result (ms); returns the unsubscribe. */
  onServed(listener: (device: string, latencyMs: number) => void): () => void {
    this.servedListeners.add(listener);
    return () => void this.servedListeners.delete(listener);
  }

  get policy(): string {
    return this.opts.policy === 'queue' ? `queue (up to ${this.opts.queueSize})` : this.opts.policy;
  }

  async start(): Promise<void> {
    this.client.on('message', this.onMessage);
    await this.client.subscribeAsync(this.topics.framesAll, { qos: 1 });
    if (this.opts.metricsIntervalMs > 0) {
      this.timer = setInterval(() => this.publishMetrics(), this.opts.metricsIntervalMs);
      this.timer.unref();
    }
  }

  metrics(): ServeMetrics {
    const perDevice: ServeMetrics['perDevice'] = {};
    let waiting = 0;
    for (const d of this.devices.values()) {
      perDevice[d.name] = { ...d.counts, waiting: d.queue.length };
      waiting += d.queue.length;
    }
    return {
      v: 1,
      dispatcher: this.opts.id,
      at: Date.now(),
      policy: this.opts.policy,
      ...this.total,
      badByKind: { ...this.badByKind },
      inFlight: this.inFlight,
      waiting,
      devices: this.devices.size,
      perDevice,
    };
  }

  private publishMetrics(): void {
    if (this.client.disconnected) return;
    this.client.publish(this.topics.metrics(this.opts.id), encodeMetrics(this.metrics()), { qos: 0, retain: true });
  }

  private count(d: Device | undefined, key: keyof Counts): void {
    this.total[key]++;
    if (d) d.counts[key]++;
  }

  private receive(topic: string, payload: Buffer): void {
    const t = this.topics.parse(topic);
    if (this.closed || t?.kind !== 'frames') return;
    const name = t.device;
    if (!isName(name)) {
      log.warn(`ignored a frame on ${topic}: device names are ${NAME_RULE}`);
      return;
    }
    let d = this.devices.get(name);
    if (!d) {
      if (this.devices.size >= this.opts.maxDevices) {
        this.count(undefined, 'received');
        this.count(undefined, 'rejected');
        this.replyError(name, 0, undefined, new FrameError('too-many-devices', `this dispatcher serves at most ${this.opts.maxDevices} devices (serve.maxDevices)`));
        return;
      }
      d = { name, queue: [], counts: zero(), lastSend: Promise.resolve() };
      this.devices.set(name, d);
    }
    this.count(d, 'received');
    const seq = d.counts.received;
    let frame: DeviceFrame;
    try {
      frame = parseFrame(payload, this.opts.maxFrameBytes);
    } catch (err) {
      this.bad(d, seq, undefined, err);
      return;
    }
    const w: Waiting = { frame, arrivedAt: now(), seq };
    if (this.inFlight < this.maxInFlight && !this.anyWaiting()) {
      this.begin(d, w);
      return;
    }
    switch (this.opts.policy) {
      case 'reject':
        this.count(d, 'rejected');
        this.replyError(d.name, seq, frame.id, new FrameError('busy', `the chain is full (${this.maxInFlight} frames in flight) and the policy is reject: send more slowly`));
        return;
      case 'latest':
        for (const old of d.queue.splice(0)) {
          this.count(d, 'dropped');
          this.replyError(d.name, old.seq, old.frame.id, new FrameError('dropped', `replaced by frame ${seq}, a newer one, while the chain was full (policy latest)`));
        }
        d.queue.push(w);
        return;
      case 'queue':
        if (d.queue.length >= this.opts.queueSize) {
          this.count(d, 'dropped');
          this.replyError(d.name, seq, frame.id, new FrameError('dropped', `${d.queue.length} frames of this device already wait (policy queue, serve.queueSize ${this.opts.queueSize})`));
          return;
        }
        d.queue.push(w);
    }
  }

  private anyWaiting(): boolean {
    for (const d of this.devices.values()) if (d.queue.length) return true;
    return false;
  }

  /** Start the next waiting frames, one device after another. */
  private pump(): void {
    const list = [...this.devices.values()];
    while (this.inFlight < this.maxInFlight && !this.closed) {
      let picked: Device | undefined;
      for (let i = 0; i < list.length; i++) {
        const d = list[(this.turn + i) % list.length];
        if (d.queue.length) {
          picked = d;
          this.turn = (this.turn + i + 1) % list.length;
          break;
        }
      }
      if (!picked) break;
      this.begin(picked, picked.queue.shift()!);
    }
    if (this.inFlight === 0 && !this.anyWaiting()) for (const w of this.idleWaiters.splice(0)) w();
  }

  private begin(d: Device, w: Waiting): void {
    this.inFlight++;
    void this.serve(d, w).finally(() => {
      this.inFlight--;
      this.pump();
    });
  }

  private async serve(d: Device, w: Waiting): Promise<void> {
    const f = w.frame;
    const started = now();
    const previous = d.lastSend;
    let sent!: () => void;
    d.lastSend = new Promise<void>((r) => (sent = r));
    let tensor: RawTensor | ImageFrame;
    try {
      tensor = await frameInput(f, this.input, this.stream.acceptsImages);
    } catch (err) {
      void previous.then(sent);
      this.bad(d, w.seq, f.id, err);
      return;
    }
    const prepared = now();
    // images decode in parallel, but a device's frames enter the chain in the order they came
    await previous;
    let r: FrameResult;
    try {
      const result = this.stream.send(tensor, d.name, `${d.name}-${w.seq}-${++this.seq}`);
      sent();
      r = await result;
    } catch (err) {
      this.count(d, 'failed');
      this.replyError(d.name, w.seq, f.id, new FrameError('failed', errorMessage(err)));
      return;
    }
    this.count(d, 'served');
    const body = {
      device: d.name,
      seq: w.seq,
      ...(f.id !== undefined ? { id: f.id } : {}),
      frame: r.frame,
      top: topK(r.output.data, this.opts.topK, this.labels),
      outputShape: r.output.shape,
      latencyMs: {
        total: round(now() - w.arrivedAt),
        queue: round(started - w.arrivedAt),
        preprocess: round(prepared - started),
        chain: round(r.latencyMs),
      },
      hops: hopLatencies(r),
    };
    for (const l of this.servedListeners) l(d.name, body.latencyMs.total);
    const payload = encodeServedResult(body, f.reply ?? this.opts.reply, r.output);
    this.send(d.name, payload);
  }

  private bad(d: Device, seq: number, id: string | undefined, err: unknown): void {
    const e = err instanceof FrameError ? err : new FrameError('bad-tensor', errorMessage(err));
    this.count(d, 'bad');
    this.badByKind[e.kind] = (this.badByKind[e.kind] ?? 0) + 1;
    this.replyError(d.name, seq, id, e);
  }

  /** `seq` 0: the frame was not counted for the device (too many devices) */
  private replyError(device: string, seq: number, id: string | undefined, e: FrameError): void {
    log.debug(`frame ${seq} from ${device}${id ? ` (id ${id})` : ''} not served: ${e.kind}: ${e.message}`);
    this.send(device, encodeFailedResult({ device, ...(seq ? { seq } : {}), ...(id !== undefined ? { id } : {}), error: { kind: e.kind, message: e.message } }));
  }

  private send(device: string, payload: Buffer): void {
    if (this.client.disconnected) return;
    // not awaited: a device that reads slowly must not hold up the others
    this.client.publish(this.topics.deviceResults(device), payload, { qos: 1 }, (err) => {
      if (err) log.warn(`cannot publish a result to ${device}: ${err.message}`);
    });
  }

  /** Resolves when nothing is waiting or in flight. */
  idle(): Promise<void> {
    if (this.inFlight === 0 && !this.anyWaiting()) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /** Stop taking frames; let those in flight finish (up to `graceMs`); publish the final metrics. */
  async close(graceMs = 5000): Promise<ServeMetrics> {
    if (!this.closed) {
      this.closed = true;
      if (this.timer) clearInterval(this.timer);
      this.client.off('message', this.onMessage);
      for (const d of this.devices.values()) {
        for (const w of d.queue.splice(0)) {
          this.count(d, 'rejected');
          this.replyError(d.name, w.seq, w.frame.id, new FrameError('busy', 'the dispatcher is stopping'));
        }
      }
      if (!this.client.disconnected) await this.client.unsubscribeAsync(this.topics.framesAll).catch(() => undefined);
      await Promise.race([this.idle(), new Promise((r) => setTimeout(r, graceMs).unref())]);
      this.publishMetrics();
    }
    return this.metrics();
  }
}

const round = (x: number) => Math.round(x * 10) / 10;
