/**
 * A node's stage on several engines: W worker threads (stage-worker.ts), each with its own TensorFlow.js engine and
 * its own copy of the stage's weights, fed by load: an activation goes to an idle worker, and the node hands out
 * no more activations at once than it has workers. Memory: W times the stage's weights and workspaces.
 */
import { Worker } from 'node:worker_threads';
import { DeferError } from '../lib/core/errors.js';
import type { BackendChoice } from '../lib/model/engine.js';
import type { Assignment } from '../lib/protocol/index.js';
import { type ComputeContext, type ComputeOutcome, FrameComputeError } from './stage.js';
import type { StageWorkerData, WorkerJob, WorkerReply } from './stage-worker.js';

interface Slot {
  worker: Worker;
  job?: { id: number; resolve(r: ComputeOutcome): void; reject(e: Error): void };
  heapBytes?: number;
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
  static async start(assignment: Assignment, blob: Uint8Array, count: number, backend: BackendChoice, ctx: ComputeContext, keepPacked = false, together = 1): Promise<StageWorkers> {
    const pool = new StageWorkers();
    // one copy of the weights that every worker reads (a SharedArrayBuffer is shared, not copied, when passed to a
    // thread): a plain buffer would be copied into each worker and stay there as its workerData
    let shared = blob;
    if (!(blob.buffer instanceof SharedArrayBuffer)) {
      shared = new Uint8Array(new SharedArrayBuffer(blob.byteLength));
      shared.set(blob);
    }
    const data: StageWorkerData = { assignment, blob: shared, backend, ctx, keepPacked };
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
    const slot: Slot = { worker };
    return new Promise<Slot>((resolve, reject) => {
      let started = false;
      worker.on('message', (m: WorkerReply) => {
        if (m.type === 'ready') {
          started = true;
          slot.heapBytes = m.engineHeapBytes;
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

  private reply(slot: Slot, m: Extract<WorkerReply, { type: 'done' | 'error' }>): void {
    const job = slot.job;
    if (!job || job.id !== m.id) return;
    slot.job = undefined;
    if (m.type === 'error') {
      job.reject(m.frame && m.deployment ? new FrameComputeError(m.deployment, m.frame, m.reason) : new DeferError('E_ENVELOPE', m.reason));
      return;
    }
    if (m.engineHeapBytes !== undefined) slot.heapBytes = m.engineHeapBytes;
    job.resolve({ frame: m.frame, deployment: m.deployment, ...(m.body ? { body: Buffer.from(m.body.buffer, m.body.byteOffset, m.body.byteLength) } : {}), ...(m.topic ? { topic: m.topic } : {}) });
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

  /** Compute one activation on an idle worker (the caller keeps at most `size` in flight). */
  compute(payload: Buffer, recvAt: number): Promise<ComputeOutcome> {
    const slot = this.slots.find((s) => !s.job);
    if (!slot) return Promise.reject(new DeferError('E_COMPUTE', this.slots.length ? 'every worker is busy' : 'no worker is running the stage'));
    const id = ++this.seq;
    // a copy of exactly the message's bytes, moved to the worker (the MQTT payload may be a view of a larger buffer)
    const bytes = new Uint8Array(payload);
    return new Promise<ComputeOutcome>((resolve, reject) => {
      slot.job = { id, resolve, reject };
      slot.worker.postMessage({ id, payload: bytes, recvAt } satisfies WorkerJob, [bytes.buffer]);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const slots = this.slots.splice(0);
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }
}
