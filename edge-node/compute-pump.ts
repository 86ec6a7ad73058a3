/**
 * An edge node's compute loop: activations wait in a bounded queue; each engine computes one call at a time, of
 * as many waiting activations as the stage's batch; each output is handed to the MQTT client without waiting for
 * the broker. Garbage collection is paced by the frames' bytes and time, and `idle()` tells when nothing computes.
 */
import { now } from '../lib/core/clock.js';
import { errorMessage } from '../lib/core/errors.js';
import { collectGarbage } from '../lib/core/gc.js';
import { log } from '../lib/core/log.js';
import type { Assignment } from '../lib/protocol/index.js';
import type { NodeLink, ReportError } from './node-link.js';
import { type ActivationIn, type ComputeContext, type ComputeOutcome, computeActivations, FrameComputeError } from './stage.js';
import type { NodeStage } from './stage-builder.js';

/** frame bytes (messages in and out, twice for their decoded and encoded copies) between young-generation collections */
const FRAME_BYTES_PER_GC = 8 * 2 ** 20;
/**
 * A full collection at most this often, and never more than 1/FULL_GC_SHARE of the time (each one is timed): the
 * engine's bookkeeping of every kernel call is garbage in V8's old generation, which V8 lets grow by tens of MB
 * before it collects it (ResNet50 on one node, 30 frames: peak RSS 264 and 274 MB with a full collection each
 * second, 288 and 290 without; 25 ms each).
 */
const FULL_GC_EVERY_MS = 1000;
const FULL_GC_SHARE = 40;

/** What the loop needs of its node's options. */
export interface PumpOptions {
  /** activations waiting beyond this are dropped (and counted); at least 4 per engine and frame of its batch */
  maxQueue: number;
  /** what a frame's computation needs of this node (read for each engine call: a test changes its slow-down) */
  compute: () => ComputeContext;
}

/** The counters the loop adds to (the node's own). */
export interface PumpCounters {
  frames: number;
  /** frames of another deployment */
  dropped: number;
  /** activations dropped because the queue was full */
  overflow: number;
}

export class ComputePump {
  private queue: ActivationIn[] = [];
  /** engine calls running now (at most one per engine) */
  private active = 0;
  /** results published and not yet acknowledged (QoS 1) or written out (QoS 0) */
  private unsent = 0;
  private idleWaiters: (() => void)[] = [];
  private frameBytesSinceGc = 0;
  /** when the last full collection ran, and how long it took (ms) */
  private fullGc = { at: 0, ms: 0 };

  constructor(
    private readonly opts: PumpOptions,
    private readonly link: NodeLink,
    private readonly counters: PumpCounters,
    /** the stage served now */
    private readonly stage: () => NodeStage | undefined,
    private readonly reportError: ReportError,
  ) {}

  /** activations waiting */
  get waiting(): number {
    return this.queue.length;
  }

  /** engine calls running now */
  get running(): number {
    return this.active;
  }

  /**
   * Activations this node holds at most: its --max-queue, and no fewer than the dispatcher's default window may
   * give it (4 per engine and frame of its batch, where its stage has replicas), so that batches on many engines
   * are not dropped.
   */
  private get limit(): number {
    const s = this.stage();
    return Math.max(this.opts.maxQueue, s ? 4 * (s.pool?.size ?? 1) * s.batch : 0);
  }

  /** An activation for the stage served: queued (or dropped, counted and reported when the queue is full), then computed in turn. */
  enqueue(payload: Buffer): void {
    const limit = this.limit;
    if (this.queue.length >= limit) {
      this.counters.overflow++;
      this.reportError(this.stage()!.assignment.inputTopic, `input queue full (${limit}); activation dropped`);
      return;
    }
    this.queue.push({ payload, recvAt: now() });
    this.pump();
  }

  /** Drop every activation waiting (those computing finish). */
  clear(): void {
    this.queue.length = 0;
  }

  /** Resolves when nothing computes (for tests and clean shutdown). */
  idle(): Promise<void> {
    if (this.active === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /** Start computing queued activations: one engine call per engine at most, each with up to the stage's batch. */
  private pump(): void {
    const stage = this.stage();
    const engines = stage?.pool?.size ?? 1;
    // no new frame while the last ones are still not written out: on a slow link or a busy broker, results would
    // otherwise pile up in the MQTT client (ResNet50's first stage: 3.1 MB each), and memory with them
    while (stage && this.active < engines && this.unsent <= engines * stage.batch && this.queue.length > 0 && !this.link.closed) {
      const jobs = this.queue.splice(0, stage.batch);
      this.active++;
      this.compute(stage, jobs)
        .catch((err) => this.reportError(stage.assignment.inputTopic, errorMessage(err)))
        .finally(() => {
          this.active--;
          // the current stage's queue, even when these frames were the replaced stage's: frames of the new stage
          // that arrived while they computed could not start then, and nothing else would start them
          this.pump();
        });
    }
    this.notifyIdle();
  }

  /** Nothing computing: whoever waits in idle() goes on. */
  private notifyIdle(): void {
    if (this.active === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private async compute(stage: NodeStage, jobs: ActivationIn[]): Promise<void> {
    const a = stage.assignment;
    const outcomes = stage.pool ? await stage.pool.compute(jobs) : await computeActivations({ assignment: a, model: stage.model! }, jobs, this.opts.compute(), stage.batch);
    for (const [k, r] of outcomes.entries()) {
      if ('error' in r) {
        const e = r.error;
        this.reportError(a.inputTopic, errorMessage(e), e instanceof FrameComputeError ? { deployment: e.deployment, frame: e.frame } : undefined);
      } else this.send(a, r, jobs[k].payload.byteLength);
    }
  }

  /** Publish one frame's output (not awaited: waiting for the broker's PUBACK would idle this node for a round trip on every frame). */
  private send(a: Assignment, r: ComputeOutcome, bytesIn: number): void {
    if (!r.body) {
      this.counters.dropped++;
      log.debug(`dropped frame ${r.frame} of deployment ${r.deployment} (current: ${a.deployment})`);
      return;
    }
    this.counters.frames++;
    // a frame's buffers (its message, tensors, encoding) are garbage once it is sent, outside V8's heap: left to
    // V8, tens of MB of them pile up before it collects; a young-generation collection every few MB frees them
    this.frameBytesSinceGc += 2 * (bytesIn + r.body.byteLength);
    const t = now();
    if (t - this.fullGc.at >= Math.max(FULL_GC_EVERY_MS, FULL_GC_SHARE * this.fullGc.ms)) {
      this.fullGc.at = t;
      this.frameBytesSinceGc = 0;
      setImmediate(() => {
        const t0 = now();
        collectGarbage();
        this.fullGc.ms = now() - t0;
      });
    } else if (this.frameBytesSinceGc >= FRAME_BYTES_PER_GC) {
      this.frameBytesSinceGc = 0;
      setImmediate(() => collectGarbage('minor'));
    }
    const topic = r.topic ?? a.outputTopic;
    this.unsent++;
    this.link.client!.publish(topic, r.body, { qos: a.qos }, (err) => {
      this.unsent--;
      if (err) log.warn(`cannot publish frame ${r.frame} to ${topic}: ${err.message}`);
      this.pump();
    });
  }
}
