/**
 * Batches: how many waiting frames an engine computes in one call (docs/planner.md#batches). TensorFlow.js spends
 * a fixed share of every call in its own JavaScript (4.8 ms of the Teachable Machine model's 20 per frame on a
 * worker thread), which a batch pays once; the kernels then run over more rows at once. Batches form only where
 * frames wait (frames faster than the engines), so at a sustainable rate nothing changes; under load a light stage
 * serves more frames per second, each waiting longer. A heavy stage gains little and needs the memory, so a stage
 * gets a batch that fills about BATCH_TARGET_MS of its engine's time, at most MAX_AUTO_BATCH frames, and no more
 * than its node's memory holds.
 */
import { enginesMemoryBytes } from './cost-model.js';
import type { ShapeNode, ShapePlan } from './shape.js';

/** an automatic batch fills about this many ms of an engine's time */
export const BATCH_TARGET_MS = 160;
/** the largest automatic batch */
export const MAX_AUTO_BATCH = 8;

/** The automatic batch of an engine that takes `engineMs` per frame: about BATCH_TARGET_MS of frames, 1 to MAX_AUTO_BATCH. */
export function autoBatch(engineMs: number): number {
  if (!(engineMs > 0)) return 1;
  return Math.max(1, Math.min(MAX_AUTO_BATCH, Math.floor(BATCH_TARGET_MS / engineMs)));
}

/**
 * The plan with each member's batch: `given` (> 0) for every member, else automatic by its engine's predicted ms;
 * either way lowered until its engines fit its node's memory (where the node reports it).
 */
export function withBatches(plan: ShapePlan, nodes: readonly ShapeNode[], given = 0): ShapePlan {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const stages = plan.stages.map((s) => ({
    ...s,
    members: s.members.map((m) => {
      let batch = given > 0 ? given : autoBatch(s.engineMs[m.node] ?? 0);
      const node = byId.get(m.node);
      const memory = node?.memoryBytes;
      const stageBytes = (node?.plainConvolutions ? s.plainMemoryBytes : undefined) ?? s.memoryBytes;
      while (batch > 1 && memory !== undefined && enginesMemoryBytes(stageBytes, m.workers, batch, s.batchFrameBytes, s.weightBytes) > memory) batch--;
      return batch > 1 ? { ...m, batch } : { node: m.node, workers: m.workers };
    }),
  }));
  return { ...plan, stages };
}

/** The batches of a shape in a few words, for summaries: `batches of up to 4` (every engine alike), or per stage. */
export function describeBatches(stages: readonly { members: readonly { batch?: number }[] }[]): string {
  const all = stages.map((s) => s.members.map((m) => m.batch ?? 1));
  const flat = all.flat();
  if (flat.every((b) => b === 1)) return 'no batches';
  if (flat.every((b) => b === flat[0])) return `batches of up to ${flat[0]}`;
  return `batches of up to ${all.map((bs) => bs.join('+')).join(' | ')}`;
}
