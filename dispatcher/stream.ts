/**
 * Streaming frames through a deployed chain: each frame is sent into stage 0
 * with a bounded number in flight, and its result matched back by frame id,
 * with its end-to-end latency and the bytes it took on every hop.
 */
import type { MqttClient } from 'mqtt';
import { now } from '../lib/clock.js';
import { DeferError, errorMessage } from '../lib/errors.js';
import { log } from '../lib/log.js';
import { type Hop, decodeActivation, encodeActivation } from '../lib/messages.js';
import { publish } from '../lib/mqtt-connect.js';
import { type Codec, type RawTensor, decodeTensor, encodeTensor } from '../lib/tensor-codec.js';

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
  qos: 0 | 1;
}

interface Pending {
  sentAt: number;
  bytesOut: number;
  timer: NodeJS.Timeout;
  resolve(r: FrameResult): void;
  reject(e: Error): void;
}

export class FrameStream {
  private pending = new Map<string, Pending>();
  private seq = 0;
  private slots: (() => void)[] = [];
  private inFlight = 0;
  private readonly onMessage = (topic: string, payload: Buffer) => this.handle(topic, payload);
  /** results this stream does not know (late, duplicate, foreign, or not from the last stage) */
  unmatched = 0;

  constructor(
    private readonly client: MqttClient,
    private readonly target: StreamTarget,
    private readonly opts: { maxInFlight: number; frameTimeoutMs: number; maxMessageBytes: number },
  ) {}

  /** frames that may be in the chain at once */
  get maxInFlight(): number {
    return this.opts.maxInFlight;
  }

  async open(): Promise<void> {
    this.client.on('message', this.onMessage);
    await this.client.subscribeAsync(this.target.resultTopic, { qos: this.target.qos });
  }

  async close(): Promise<void> {
    this.client.off('message', this.onMessage);
    for (const [frame, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new DeferError('E_DEPLOY', `stream closed before frame ${frame} returned`));
    }
    this.pending.clear();
    if (!this.client.disconnected) await this.client.unsubscribeAsync(this.target.resultTopic).catch(() => undefined);
  }

  private handle(topic: string, payload: Buffer): void {
    if (topic !== this.target.resultTopic) return;
    const at = now();
    try {
      const msg = decodeActivation(payload, this.opts.maxMessageBytes);
      const p = this.pending.get(msg.frame);
      if (!p || msg.deployment !== this.target.deployment || msg.stage !== this.target.stageCount) {
        this.unmatched++;
        return;
      }
      this.pending.delete(msg.frame);
      clearTimeout(p.timer);
      this.release();
      let output: RawTensor;
      try {
        output = decodeTensor(msg.tensor, this.opts.maxMessageBytes * 8);
      } catch (err) {
        p.reject(new DeferError('E_ENVELOPE', `result of frame ${msg.frame} is unreadable: ${errorMessage(err)}`));
        return;
      }
      p.resolve({
        frame: msg.frame,
        device: msg.device,
        output,
        latencyMs: at - p.sentAt,
        sentAt: p.sentAt,
        hopBytes: [p.bytesOut, ...msg.hops.slice(1).map((h) => h.bytesIn), payload.byteLength],
        hops: msg.hops,
      });
    } catch (err) {
      log.warn(`dispatcher: unreadable message on ${topic}: ${errorMessage(err)}`);
    }
  }

  private release(): void {
    this.inFlight--;
    this.slots.shift()?.();
  }

  private async acquire(): Promise<void> {
    while (this.inFlight >= this.opts.maxInFlight) await new Promise<void>((r) => this.slots.push(r));
    this.inFlight++;
  }

  /**
   * Send one frame; resolves with its result. Waits first for a free slot when
   * `maxInFlight` frames are already on their way.
   */
  async send(input: RawTensor, device = 'dispatcher', frameId?: string): Promise<FrameResult> {
    await this.acquire();
    const frame = frameId ?? `f${++this.seq}`;
    const tensor = encodeTensor(input, { codec: this.target.codec });
    const sentAt = now();
    const body = encodeActivation({ deployment: this.target.deployment, frame, device, stage: 0, sentAt, hops: [], tensor });
    const result = new Promise<FrameResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (!this.pending.delete(frame)) return;
        this.release();
        reject(new DeferError('E_TIMEOUT', `frame ${frame} got no result within ${this.opts.frameTimeoutMs} ms (dispatcher.frameTimeoutMs): is every node of deployment ${this.target.deployment} still up?`));
      }, this.opts.frameTimeoutMs);
      this.pending.set(frame, { sentAt, bytesOut: body.byteLength, timer, resolve, reject });
    });
    try {
      await publish(this.client, this.target.inputTopic, body, { qos: this.target.qos });
    } catch (err) {
      const p = this.pending.get(frame);
      if (p) {
        this.pending.delete(frame);
        clearTimeout(p.timer);
        this.release();
        p.reject(new DeferError('E_DEPLOY', `cannot publish frame ${frame}: ${errorMessage(err)}`));
      }
    }
    return result;
  }
}
