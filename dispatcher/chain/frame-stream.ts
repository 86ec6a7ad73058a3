/**
 * Streaming frames through a deployed chain: each frame is sent into stage 0
 * with a bounded number in flight, and its result matched back by frame id,
 * with its end-to-end latency and the bytes it took on every hop.
 *
 * Nothing is lost when the chain breaks: every frame stays pending (with its
 * encoded input) until its result arrives, so the supervisor can pause the
 * stream, mend the chain (a standby, a merged stage, a reconnected broker),
 * retarget it, and send every pending frame again. A frame's first result is
 * delivered; later copies are dropped by frame id and counted.
 *
 * A stage served by several nodes (replicas): each frame gets a route, one node
 * per stage, chosen when it is sent by load (replica-router.ts). A replica that fails
 * is dropped from the routes and the frames it held are sent again through the
 * others (dropReplica).
 */
import type { MqttClient } from 'mqtt';
import { now } from '../../lib/core/clock.js';
import { DeferError, errorMessage } from '../../lib/core/errors.js';
import { log } from '../../lib/core/log.js';
import { publish } from '../../lib/mqtt/connect.js';
import {
  type Codec,
  decodeActivation,
  decodeErrorReport,
  decodeTensor,
  type ErrorReport,
  encodeActivation,
  encodeTensor,
  type Hop,
  Lz4Gate,
  type Precision,
  type RawTensor,
  type WireTensor,
} from '../../lib/protocol/index.js';
import { ReplicaRouter, type ReplicaTarget } from './replica-router.js';

export interface FrameResult {
  frame: string;
  device: string;
  output: RawTensor;
  latencyMs: number;
  /** when the dispatcher sent it (epoch ms, see lib/clock.ts) */
  sentAt: number;
  /** bytes of each message on the wire: dispatcher -> stage 0, stage 0 -> stage 1, ..., last stage -> dispatcher */
  hopBytes: number[];
  hops: Hop[];
}

export interface StreamTarget {
  deployment: string;
  stageCount: number;
  inputTopic: string;
  resultTopic: string;
  codec: Codec;
  /** how precisely frames go into the chain (default lossless) */
  precision?: Precision;
  /** stage 0 decodes encoded images itself (its assignment has inputImage): frames may go as images */
  imageInput?: boolean;
  qos: 0 | 1;
  /** the nodes serving each stage, when a stage has several (frames then carry a route); absent: a chain, `inputTopic` */
  replicas?: ReplicaTarget[][];
}

/** A frame as the device sent it: an encoded image, for a stage 0 that decodes images itself. */
export interface ImageFrame {
  image: Uint8Array;
}

interface Pending {
  device: string;
  tensor?: WireTensor;
  image?: Uint8Array;
  sentAt: number;
  bytesOut: number;
  /** times sent into the chain */
  sends: number;
  /** the node of each stage this frame was last sent through (replicated deployments) */
  path?: string[];
  timer?: NodeJS.Timeout;
  resolve(r: FrameResult): void;
  reject(e: Error): void;
}

/** frame ids remembered after their result, to tell a duplicate from a stranger */
const DONE_MEMORY = 8192;

export class FrameStream {
  private pending = new Map<string, Pending>();
  private seq = 0;
  private slots: (() => void)[] = [];
  private inFlight = 0;
  private readonly onMessage = (topic: string, payload: Buffer) => this.handle(topic, payload);
  /** deployments whose results this stream accepts (the current one and those it replaced), with their stage counts */
  private readonly deployments = new Map<string, number>();
  private readonly done = new Set<string>();
  private paused?: { resumed: Promise<void>; resume(): void };
  private target: StreamTarget;
  private broken?: Error;
  /** results this stream does not know (foreign, or not from the last stage) */
  unmatched = 0;
  /** second and later results of a frame (after frames were sent again), dropped */
  duplicates = 0;
  /** frames sent again after the chain was mended */
  resent = 0;
  /** the longest a node spent on one frame (decode + compute + encode, from the hop records), ms: its event loop was busy that long */
  readonly busyMs = new Map<string, number>();
  /** which replica of each stage serves a frame (replicated deployments): frames held, each node's ms per frame */
  private readonly router = new ReplicaRouter();
  /** whether the frames are worth an LZ4 attempt (a camera's pixels mostly are not) */
  private readonly lz4 = new Lz4Gate();

  constructor(
    private readonly client: MqttClient,
    target: StreamTarget,
    private readonly opts: {
      maxInFlight: number;
      frameTimeoutMs: number;
      maxMessageBytes: number;
      /** told of every result, as it is delivered (observers: metrics, the live page) */
      onResult?: (r: FrameResult) => void;
      /** told of every frame that fails (timeout, a chain that cannot be mended, an unreadable result, the stream closed) */
      onFrameFailed?: (frame: string, device: string, err: Error, deployment: string) => void;
      /** where nodes report what they could not use (topics.errors): a report naming a pending frame fails it at once */
      errorTopic?: string;
    },
  ) {
    this.target = target;
    this.deployments.set(target.deployment, target.stageCount);
  }

  /** frames sent and not yet answered */
  /** the deployment frames go into now */
  get deployment(): string {
    return this.target.deployment;
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  get isPaused(): boolean {
    return this.paused !== undefined;
  }

  /** frames may be sent as encoded images (stage 0 decodes them) */
  get acceptsImages(): boolean {
    return this.target.imageInput === true;
  }

  /**
   * The chain cannot be mended: every pending frame and every later send
   * fails with `err`.
   */
  fail(err: Error): void {
    this.broken = err;
    for (const [frame, p] of this.pending) {
      this.settle(frame, p);
      p.reject(err);
    }
    const paused = this.paused;
    this.paused = undefined;
    paused?.resume();
  }

  /** Hold new frames (they wait in send()) while the chain is being mended; pending frames stay pending. */
  pause(): void {
    if (this.paused) return;
    let resume!: () => void;
    const resumed = new Promise<void>((r) => (resume = r));
    this.paused = { resumed, resume };
  }

  /**
   * The chain works again, possibly as another deployment (`to`): send every
   * pending frame into it again (their timeouts start again), then let new
   * frames through. Returns how many were sent again.
   */
  async resume(to?: Partial<StreamTarget>): Promise<number> {
    if (to) await this.retarget({ ...this.target, ...to });
    const again = [...this.pending.keys()];
    for (const frame of again) void this.transmit(frame); // not awaited: a broker that goes again must not hold the supervisor
    this.resent += again.length;
    const p = this.paused;
    this.paused = undefined;
    p?.resume();
    return again.length;
  }

  private async retarget(next: StreamTarget): Promise<void> {
    const old = this.target;
    this.target = next;
    this.deployments.set(next.deployment, next.stageCount);
    if (next.resultTopic !== old.resultTopic) {
      await this.client.subscribeAsync(next.resultTopic, { qos: next.qos });
      await this.client.unsubscribeAsync(old.resultTopic).catch(() => undefined);
    }
  }

  /** frames that may be in the chain at once */
  get maxInFlight(): number {
    return this.opts.maxInFlight;
  }

  async open(): Promise<void> {
    this.client.on('message', this.onMessage);
    await this.client.subscribeAsync(this.target.resultTopic, { qos: this.target.qos });
    if (this.opts.errorTopic) await this.client.subscribeAsync(this.opts.errorTopic, { qos: 1 });
  }

  async close(): Promise<void> {
    this.client.off('message', this.onMessage);
    for (const [frame, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new DeferError('E_DEPLOY', `stream closed before frame ${frame} returned`));
    }
    this.pending.clear();
    this.paused?.resume();
    this.paused = undefined;
    if (!this.client.disconnected) await this.client.unsubscribeAsync(this.target.resultTopic).catch(() => undefined);
    if (this.opts.errorTopic && !this.client.disconnected) await this.client.unsubscribeAsync(this.opts.errorTopic).catch(() => undefined);
  }

  /** A node's report about a pending frame of ours: that frame fails now, with the node's reason. */
  private handleError(payload: Buffer): void {
    let r: ErrorReport;
    try {
      r = decodeErrorReport(payload);
    } catch {
      return; // not ours to judge
    }
    if (!r.frame || !r.deployment || !this.deployments.has(r.deployment)) return;
    const p = this.pending.get(r.frame);
    if (!p) return;
    this.settle(r.frame, p);
    this.remember(r.frame);
    p.reject(new DeferError('E_COMPUTE', `node ${r.node ?? '?'} could not compute frame ${r.frame}: ${r.reason}`));
  }

  private handle(topic: string, payload: Buffer): void {
    if (topic === this.opts.errorTopic) {
      this.handleError(payload);
      return;
    }
    if (topic !== this.target.resultTopic) return;
    const at = now();
    try {
      const msg = decodeActivation(payload, this.opts.maxMessageBytes);
      const p = this.pending.get(msg.frame);
      if (!p || this.deployments.get(msg.deployment) !== msg.stage) {
        if (this.done.has(msg.frame) && this.deployments.get(msg.deployment) === msg.stage) this.duplicates++;
        else this.unmatched++;
        return;
      }
      this.settle(msg.frame, p);
      this.remember(msg.frame);
      for (const h of msg.hops) {
        const busy = h.decodeMs + h.computeMs + h.encodeMs;
        if (busy > (this.busyMs.get(h.node) ?? 0)) this.busyMs.set(h.node, busy);
        this.router.measured(h.node, busy);
      }
      let output: RawTensor;
      try {
        output = decodeTensor(msg.tensor, this.opts.maxMessageBytes * 8);
      } catch (err) {
        p.reject(new DeferError('E_ENVELOPE', `result of frame ${msg.frame} is unreadable: ${errorMessage(err)}`));
        return;
      }
      const r: FrameResult = {
        frame: msg.frame,
        device: msg.device,
        output,
        latencyMs: at - p.sentAt,
        sentAt: p.sentAt,
        hopBytes: [p.bytesOut, ...msg.hops.slice(1).map((h) => h.bytesIn), payload.byteLength],
        hops: msg.hops,
      };
      this.opts.onResult?.(r);
      p.resolve(r);
    } catch (err) {
      log.warn(`dispatcher: unreadable message on ${topic}: ${errorMessage(err)}`);
    }
  }

  private remember(frame: string): void {
    this.done.add(frame);
    if (this.done.size > DONE_MEMORY) this.done.delete(this.done.values().next().value as string);
  }

  private release(): void {
    this.inFlight--;
    this.slots.shift()?.();
  }

  /** A pending frame is done with (answered, failed or given up): it leaves the pending set, its timer, its route's nodes and its slot. */
  private settle(frame: string, p: Pending): void {
    this.pending.delete(frame);
    clearTimeout(p.timer);
    this.unhold(p);
    this.release();
  }

  /** the frame no longer holds its route's nodes */
  private unhold(p: Pending): void {
    if (p.path) this.router.release(p.path);
    p.path = undefined;
  }

  /**
   * A replica is gone: no frame is routed through it again, and every pending frame routed through it is sent
   * again through the others. Not dropped when it is the last node of its stage, or in no route.
   */
  dropReplica(node: string): { dropped: boolean; resent: number } {
    const r = this.target.replicas;
    const k = r?.findIndex((stage) => stage.some((x) => x.node === node)) ?? -1;
    if (!r || k < 0 || r[k].length < 2) return { dropped: false, resent: 0 };
    this.target = { ...this.target, replicas: r.map((stage, i) => (i === k ? stage.filter((x) => x.node !== node) : stage)) };
    let resent = 0;
    for (const [frame, p] of this.pending) {
      if (!p.path?.includes(node)) continue;
      resent++;
      void this.transmit(frame);
    }
    this.resent += resent;
    return { dropped: true, resent };
  }

  /** A node rejoins stage `k` as one more replica: frames are routed through it again (it is probed first). */
  addReplica(k: number, replica: ReplicaTarget): void {
    const r = this.target.replicas;
    if (!r?.[k] || r[k].some((x) => x.node === replica.node)) return;
    this.target = { ...this.target, replicas: r.map((stage, i) => (i === k ? [...stage, replica] : stage)) };
  }

  private async acquire(): Promise<void> {
    while (this.inFlight >= this.opts.maxInFlight) await new Promise<void>((r) => this.slots.push(r));
    this.inFlight++;
  }

  /**
   * Send one frame; resolves with its result. Waits first for a free slot when
   * `maxInFlight` frames are already on their way.
   */
  async send(input: RawTensor | ImageFrame, device = 'dispatcher', frameId?: string): Promise<FrameResult> {
    const ids = { frame: frameId ?? '(not sent)' };
    try {
      return await this.sendOne(input, device, frameId, ids);
    } catch (err) {
      this.opts.onFrameFailed?.(ids.frame, device, err as Error, this.target.deployment);
      throw err;
    }
  }

  private async sendOne(input: RawTensor | ImageFrame, device: string, frameId: string | undefined, ids: { frame: string }): Promise<FrameResult> {
    if (this.broken) throw this.broken;
    await this.acquire();
    while (this.paused) await this.paused.resumed;
    if (this.broken) {
      this.release();
      throw this.broken;
    }
    const frame = frameId ?? `f${++this.seq}`;
    ids.frame = frame;
    if (this.pending.has(frame)) {
      this.release();
      throw new DeferError('E_ENVELOPE', `frame id ${frame} is already in the chain: frame ids must be unique`);
    }
    const body = 'image' in input ? { image: input.image } : { tensor: this.encodeFrame(input) };
    const result = new Promise<FrameResult>((resolve, reject) => {
      this.pending.set(frame, { device, ...body, sentAt: now(), bytesOut: 0, sends: 0, resolve, reject });
    });
    await this.transmit(frame);
    return result;
  }

  /** A frame's tensor for the wire: the deployment's codec and precision, LZ4 tried where it has lately paid. */
  private encodeFrame(input: RawTensor): WireTensor {
    const codec = this.lz4.codec(this.target.codec);
    const tensor = encodeTensor(input, { codec, precision: input.dtype === 'float32' ? this.target.precision : 'lossless' });
    this.lz4.record(codec, tensor);
    return tensor;
  }

  /** (Re)send a pending frame into the current deployment, and (re)start its timeout. */
  private async transmit(frame: string): Promise<void> {
    const p = this.pending.get(frame);
    if (!p) return;
    const t = this.target;
    if (p.image && !t.imageInput) {
      this.settle(frame, p);
      p.reject(new DeferError('E_DEPLOY', `frame ${frame} is an encoded image, but stage 0 of deployment ${t.deployment} takes tensors`));
      return;
    }
    let topic = t.inputTopic;
    let route: string[] | undefined;
    if (t.replicas) {
      this.unhold(p);
      const chosen = this.router.route(t.replicas);
      p.path = chosen.map((r) => r.node);
      topic = chosen[0].topic;
      route = chosen.slice(1).map((r) => r.topic);
    }
    const body = encodeActivation({
      deployment: t.deployment,
      frame,
      device: p.device,
      stage: 0,
      sentAt: p.sentAt,
      hops: [],
      ...(route ? { route } : {}),
      ...(p.image ? { image: p.image } : { tensor: p.tensor }),
    });
    p.bytesOut = body.byteLength;
    p.sends++;
    clearTimeout(p.timer);
    p.timer = setTimeout(() => {
      if (this.pending.get(frame) !== p) return;
      this.settle(frame, p);
      p.reject(
        new DeferError(
          'E_TIMEOUT',
          `frame ${frame} got no result within ${this.opts.frameTimeoutMs} ms (dispatcher.frameTimeoutMs)${p.sends > 1 ? `, sent ${p.sends} times` : ''}: is every node of deployment ${t.deployment} still up?`,
        ),
      );
    }, this.opts.frameTimeoutMs);
    try {
      await publish(this.client, topic, body, { qos: t.qos });
    } catch (err) {
      // a connection that is down keeps the frame pending: it is sent again once the chain works
      if (this.paused || !this.client.connected) return;
      if (this.pending.get(frame) !== p) return;
      this.settle(frame, p);
      p.reject(new DeferError('E_DEPLOY', `cannot publish frame ${frame}: ${errorMessage(err)}`));
    }
  }
}
