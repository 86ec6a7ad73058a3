/**
 * A shape search run in a worker thread, so that a test can give up on one that does not end (a search that
 * never yields cannot be stopped by node:test's timeout on the thread that runs it). workerData: the fleet, the
 * random cost model's seed and layers, and the options; posts the plan's figures.
 */
import { parentPort, Worker, workerData } from 'node:worker_threads';
import { prng } from '../../lib/core/prng.js';
import { planShape, type ShapeNode, type ShapeOptions } from '../../lib/planning/shape.js';
import { randomCost } from './brute-force.js';

export interface PlanJob {
  nodes: ShapeNode[];
  seed: number;
  layers: number;
  options: ShapeOptions;
}

export interface PlanFigures {
  shapesTried: number;
  exhaustive: boolean;
  bottleneckMs: number;
  stageMembers: number[];
}

/** Plan `job` in a worker; rejects when it takes longer than `limitMs` (the worker is stopped). */
export function planInWorker(job: PlanJob, limitMs: number): Promise<PlanFigures> {
  const worker = new Worker(new URL(import.meta.url), { workerData: job });
  return new Promise<PlanFigures>((resolve, reject) => {
    const timer = setTimeout(() => {
      void worker.terminate();
      reject(new Error(`the shape search did not end within ${limitMs} ms`));
    }, limitMs);
    worker.once('message', (m: PlanFigures) => {
      clearTimeout(timer);
      void worker.terminate();
      resolve(m);
    });
    worker.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

if (parentPort && workerData) {
  const job = workerData as PlanJob;
  const p = planShape(randomCost(prng(job.seed), job.layers, 0.1), job.nodes, job.options);
  parentPort.postMessage({ shapesTried: p.shapesTried, exhaustive: p.exhaustive, bottleneckMs: p.bottleneckMs, stageMembers: p.stages.map((s) => s.members.length) } satisfies PlanFigures);
}
