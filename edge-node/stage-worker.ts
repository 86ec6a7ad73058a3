/**
 * One engine of a node that runs its stage in worker threads (`defer node --workers`): this thread starts its own
 * TensorFlow.js engine, builds the stage from the weights it is given, warms it up, and then computes one
 * activation at a time for the node's main thread (stage-workers.ts), which owns the MQTT connection.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { errorMessage } from '../lib/core/errors.js';
import { type BackendChoice, engineHeapBytes, initEngine } from '../lib/model/engine.js';
import { BlobWeights } from '../lib/model/weight-sink.js';
import type { Assignment } from '../lib/protocol/index.js';
import { buildStage, type ComputeContext, computeActivation, FrameComputeError, type RunningStage, warmUp } from './stage.js';

/** What the main thread gives a worker when it starts it. */
export interface StageWorkerData {
  assignment: Assignment;
  /** the stage's weights, in a SharedArrayBuffer that every worker of the stage reads; dropped once built */
  blob: Uint8Array;
  backend: BackendChoice;
  ctx: ComputeContext;
  keepPacked: boolean;
}

/** Main thread -> worker: one activation to compute. */
export interface WorkerJob {
  id: number;
  payload: Uint8Array;
  recvAt: number;
}

/** Worker -> main thread. */
export type WorkerReply =
  | { type: 'ready'; backend: string; engineHeapBytes?: number; releasedBytes: number }
  | { type: 'failed'; reason: string }
  | { type: 'done'; id: number; frame: string; deployment: string; body?: Uint8Array; topic?: string; engineHeapBytes?: number }
  | { type: 'error'; id: number; reason: string; frame?: string; deployment?: string };

async function main(): Promise<void> {
  const port = parentPort!;
  const data = workerData as StageWorkerData;
  let stage: RunningStage;
  try {
    const backend = await initEngine(data.backend);
    const model = await buildStage(data.assignment, BlobWeights.of(Buffer.from(data.blob.buffer, data.blob.byteOffset, data.blob.byteLength)));
    // the weights are the engine's now: workerData would keep the shared copy alive for this thread's life
    data.blob = new Uint8Array(0);
    const releasedBytes = warmUp(data.assignment, model, data.keepPacked);
    stage = { assignment: data.assignment, model };
    port.postMessage({ type: 'ready', backend, engineHeapBytes: engineHeapBytes(), releasedBytes } satisfies WorkerReply);
  } catch (err) {
    port.postMessage({ type: 'failed', reason: errorMessage(err) } satisfies WorkerReply);
    return;
  }
  port.on('message', async (job: WorkerJob) => {
    try {
      const payload = Buffer.from(job.payload.buffer, job.payload.byteOffset, job.payload.byteLength);
      const r = await computeActivation(stage, payload, job.recvAt, data.ctx);
      // a copy of exactly its bytes, moved (not cloned): the encoder's buffer may be a view of a larger one
      const body = r.body ? new Uint8Array(r.body) : undefined;
      const reply: WorkerReply = { type: 'done', id: job.id, frame: r.frame, deployment: r.deployment, body, topic: r.topic, engineHeapBytes: engineHeapBytes() };
      port.postMessage(reply, body ? [body.buffer] : []);
    } catch (err) {
      const known = err instanceof FrameComputeError ? { frame: err.frame, deployment: err.deployment } : {};
      port.postMessage({ type: 'error', id: job.id, reason: errorMessage(err), ...known } satisfies WorkerReply);
    }
  });
}

void main();
