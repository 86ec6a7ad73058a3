/**
 * One engine of a node that runs its stage in worker threads (`defer node --workers`): this thread starts its own
 * TensorFlow.js engine, builds the stage from the weights it is given, warms it up, and then computes one
 * call at a time (one activation, or a batch of them) for the node's main thread (stage-workers.ts), which owns the MQTT connection.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { errorMessage } from '../lib/core/errors.js';
import { type BackendChoice, engineHeapBytes, initEngine } from '../lib/model/engine.js';
import { BlobWeights } from '../lib/model/weight-sink.js';
import type { Assignment } from '../lib/protocol/index.js';
import { type BatchOutcome, batchesExactly, buildStage, type ComputeContext, computeActivations, type EngineOptions, FrameComputeError, type RunningStage, warmUp } from './stage.js';

/** What the main thread gives a worker when it starts it. */
export interface StageWorkerData {
  assignment: Assignment;
  /** the stage's weights, in a SharedArrayBuffer that every worker of the stage reads; dropped once built */
  blob: Uint8Array;
  backend: BackendChoice;
  ctx: ComputeContext;
  /** what the engine keeps of the weights (defer node --keep-packed-weights, --plain-convolutions) */
  engine: EngineOptions;
  /** frames this worker may compute in one engine call, if its stage batches exactly (stage.ts batchesExactly) */
  maxBatch: number;
}

/** Main thread -> worker: activations to compute, together where they fit (at most the worker's batch). */
export interface WorkerJob {
  id: number;
  payloads: Uint8Array[];
  recvAts: number[];
}

/** One activation's outcome in a reply: its encoded output and topic (none: another deployment's frame), or why it failed. */
export type WorkerResult = { frame: string; deployment: string; body?: Uint8Array; topic?: string } | { reason: string; frame?: string; deployment?: string };

/** Worker -> main thread. */
export type WorkerReply =
  | { type: 'ready'; backend: string; engineHeapBytes?: number; releasedBytes: number; batch: number }
  | { type: 'failed'; reason: string }
  | { type: 'done'; id: number; results: WorkerResult[]; engineHeapBytes?: number };

async function main(): Promise<void> {
  const port = parentPort!;
  const data = workerData as StageWorkerData;
  let stage: RunningStage;
  let batch = 1;
  try {
    const backend = await initEngine(data.backend);
    const model = await buildStage(data.assignment, BlobWeights.of(Buffer.from(data.blob.buffer, data.blob.byteOffset, data.blob.byteLength)), data.engine);
    // the weights are the engine's now: workerData would keep the shared copy alive for this thread's life
    data.blob = new Uint8Array(0);
    const releasedBytes = warmUp(data.assignment, model, data.engine.keepPackedWeights);
    batch = data.maxBatch > 1 && batchesExactly(data.assignment, model) ? data.maxBatch : 1;
    stage = { assignment: data.assignment, model };
    port.postMessage({ type: 'ready', backend, engineHeapBytes: engineHeapBytes(), releasedBytes, batch } satisfies WorkerReply);
  } catch (err) {
    port.postMessage({ type: 'failed', reason: errorMessage(err) } satisfies WorkerReply);
    return;
  }
  port.on('message', async (job: WorkerJob) => {
    const jobs = job.payloads.map((p, k) => ({ payload: Buffer.from(p.buffer, p.byteOffset, p.byteLength), recvAt: job.recvAts[k] }));
    let outcomes: BatchOutcome[];
    try {
      outcomes = await computeActivations(stage, jobs, data.ctx, batch);
    } catch (err) {
      outcomes = jobs.map(() => ({ error: err instanceof Error ? err : new Error(String(err)) }));
    }
    const moved: ArrayBuffer[] = [];
    const results = outcomes.map((r): WorkerResult => {
      if ('error' in r) return { reason: errorMessage(r.error), ...(r.error instanceof FrameComputeError ? { frame: r.error.frame, deployment: r.error.deployment } : {}) };
      // a copy of exactly its bytes, moved (not cloned): the encoder's buffer may be a view of a larger one
      const body = r.body ? new Uint8Array(r.body) : undefined;
      if (body) moved.push(body.buffer);
      return { frame: r.frame, deployment: r.deployment, body, topic: r.topic };
    });
    port.postMessage({ type: 'done', id: job.id, results, engineHeapBytes: engineHeapBytes() } satisfies WorkerReply, moved);
  });
}

void main();
