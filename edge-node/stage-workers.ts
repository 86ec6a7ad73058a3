/**
 * A node's stage on several engines: W worker threads (stage-worker.ts), each with its own TensorFlow.js engine
 * built from one shared copy of the stage's weights, fed by load: activations go to an idle worker (as many as its
 * batch, in one engine call, when more wait), and the node hands out no more calls at once than it has workers.
 * Memory: W times the stage's weights and workspaces.
 */
import { Worker } from 'node:worker_threads';
import { DeferError } from '../lib/core/errors.js';
import type { BackendChoice } from '../lib/model/engine.js';
import type { Assignment } from '../lib/protocol/index.js';
import { type ActivationIn, type BatchOutcome, type ComputeContext, type EngineOptions, FrameComputeError } from './stage.js';
import type { StageWorkerData, WorkerJob, WorkerReply } from './stage-worker.js';

interface Slot {
  worker: Worker;
  job?: { id: number; resolve(r: BatchOutcome[]): void; reject(e: Error): void };
  heapBytes?: number;
  /** frames it computes in one call at most (1 where its stage does not batch exactly) */
  batch: number;
}

export class StageWorkers {
  private slots: Slot[] = [];
  private seq = 0;
  private closed = false;
  /** bytes of packed weights the workers released after their first frame, all together */
  releasedBytes = 0;

  /**
   * Start `count` workers on `blob` and wait until each has built and warmed up the stage; throws with the first
   * failure. Up to `together` build at once: each build holds its engine's copy of the weights before packing, so
   * the caller bounds it by memory; after a failure no more start, and those started are closed.
   */
  static async start(
    assignment: Assignment,
    blob: Uint8Array,
    count: number,
    backend: BackendChoice,
    ctx: ComputeContext,
    engine: EngineOptions = {},
    together = 1,
    maxBatch = 1,
  ): Promise<StageWorkers> {
    const pool = new StageWorkers();
    // one copy of the weights that every worker reads (a SharedArrayBuffer is shared, not copied, when passed to a
    // thread): a plain buffer would be copied into each worker and stay there as its workerData
    let shared = blob;
    if (!(blob.buffer instanceof SharedArrayBuffer)) {
      shared = new Uint8Array(new SharedArrayBuffer(blob.byteLength));
      shared.set(blob);
    }
    // only these fields: the caller may pass its whole options object, which a thread would be sent a copy of
    const { keepPackedWeights, plainConvolutions } = engine;
    const data: StageWorkerData = { assignment, blob: shared, backend, ctx, engine: { keepPackedWeights, plainConvolutions }, maxBatch };
    const url = new URL('./stage-worker.js', import.meta.url);
    try {
      let next = 0;
      let failure: unknown;
      const lane = async () => {
        while (next < count && failure === undefined) {
          const index = next++;
          try {
            pool.slots.push(await pool.startOne(url, data, index));
          } catch (err) {
            failure ??= err;
          }
        }
      };
      await Promise.all(Array.from({ length: Math.max(1, Math.min(together, count)) }, lane));
      if (failure !== undefined) throw failure;
    } catch (err) {
      await pool.close();
      throw err;
    }
    return pool;
  }

  private startOne(url: URL, data: StageWorkerData, index: number): Promise<Slot> {
    const worker = new Worker(url, { workerData: data });
    const slot: Slot = { worker, batch: 1 };
    return new Promise<Slot>((resolve, reject) => {
      let started = false;
      worker.on('message', (m: WorkerReply) => {
        if (m.type === 'ready') {
          started = true;
          slot.heapBytes = m.engineHeapBytes;
          slot.batch = m.batch;
          this.releasedBytes += m.releasedBytes;
          resolve(slot);
        } else if (m.type === 'failed') reject(new DeferError('E_WEIGHTS', `worker ${index + 1} could not build the stage: ${m.reason}`));
        else this.reply(slot, m);
      });
      const lost = (why: string) => {
        const e = new DeferError('E_COMPUTE', `worker ${index + 1} of the stage ${why}`);
        if (!started) reject(e);
        const job = slot.job;
        slot.job = undefined;
        job?.reject(e);
        if (started && !this.closed) this.slots = this.slots.filter((s) => s !== slot);
      };
      worker.on('error', (err) => lost(`failed: ${err.message}`));
      worker.on('exit', (code) => lost(`exited (code ${code})`));
    });
  }

  private reply(slot: Slot, m: Extract<WorkerReply, { type: 'done' }>): void {
    const job = slot.job;
    if (!job || job.id !== m.id) return;
    slot.job = undefined;
    if (m.engineHeapBytes !== undefined) slot.heapBytes = m.engineHeapBytes;
    job.resolve(
      m.results.map((r): BatchOutcome => {
        if ('reason' in r) return { error: r.frame && r.deployment ? new FrameComputeError(r.deployment, r.frame, r.reason) : new DeferError('E_ENVELOPE', r.reason) };
        return { frame: r.frame, deployment: r.deployment, ...(r.body ? { body: Buffer.from(r.body.buffer, r.body.byteOffset, r.body.byteLength) } : {}), ...(r.topic ? { topic: r.topic } : {}) };
      }),
    );
  }

  /** workers running */
  get size(): number {
    return this.slots.length;
  }

  /** the engines' heaps together (wasm linear memory), bytes */
  get engineHeapBytes(): number | undefined {
    const known = this.slots.map((s) => s.heapBytes).filter((b): b is number => b !== undefined);
    return known.length ? known.reduce((a, b) => a + b, 0) : undefined;
  }

  /** frames one call may carry: the least any worker takes (each checked its stage batches exactly) */
  get batch(): number {
    return this.slots.length ? Math.min(...this.slots.map((s) => s.batch)) : 1;
  }

  /** Compute activations (at most `batch`) on an idle worker, in one engine call where they fit (the caller keeps at most `size` calls in flight). */
  compute(jobs: readonly ActivationIn[]): Promise<BatchOutcome[]> {
    const slot = this.slots.find((s) => !s.job);
    if (!slot) return Promise.reject(new DeferError('E_COMPUTE', this.slots.length ? 'every worker is busy' : 'no worker is running the stage'));
    const id = ++this.seq;
    // copies of exactly the messages' bytes, moved to the worker (an MQTT payload may be a view of a larger buffer)
    const payloads = jobs.map((j) => new Uint8Array(j.payload));
    return new Promise<BatchOutcome[]>((resolve, reject) => {
      slot.job = { id, resolve, reject };
      slot.worker.postMessage(
        { id, payloads, recvAts: jobs.map((j) => j.recvAt) } satisfies WorkerJob,
        payloads.map((p) => p.buffer),
      );
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const slots = this.slots.splice(0);
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }
}
