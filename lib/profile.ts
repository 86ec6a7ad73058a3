/**
 * Measured cost of a model on this process's backend: the model is cut at
 * every valid cut point, each segment is built as its own model and timed
 * (after a warm-up run), and its fastest time is charged to its last layer.
 * Balancing stages on these figures beats balancing on estimated FLOPs,
 * because layers differ in time per FLOP (early, wide convolutions are slower).
 */
import { tf } from './engine.js';
import { buildStageModel, type FlatModel } from './partition.js';

export interface SegmentProfile {
  /** per layer: the measured ms of the segment that ends at it, 0 for other layers */
  layerMs: number[];
  totalMs: number;
}

export async function profileSegments(flat: FlatModel, repeats = 5): Promise<SegmentProfile> {
  const layerMs = new Array<number>(flat.graph.layers.length).fill(0);
  const index = new Map(flat.graph.layers.map((l, i) => [l.name, i]));
  for (const plan of flat.plan(flat.validCutNames())) {
    const { specs, blob } = flat.stageWeights(plan);
    const model = await buildStageModel(flat.stageTopology(plan), specs, blob);
    const input = tf.randomUniform([1, ...plan.inputShape], 0, 1, 'float32', 1);
    const times: number[] = [];
    for (let r = 0; r <= repeats; r++) {
      const t0 = performance.now();
      const out = model.predict(input) as tf.Tensor;
      await out.data();
      out.dispose();
      if (r > 0) times.push(performance.now() - t0);
    }
    input.dispose();
    model.dispose();
    // the minimum: noise on a shared machine only ever adds time
    layerMs[index.get(plan.last)!] = Math.min(...times);
  }
  return { layerMs, totalMs: layerMs.reduce((a, b) => a + b, 0) };
}
