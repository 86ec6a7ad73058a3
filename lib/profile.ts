/**
 * Measured cost of a model on this process's backend: the model is cut at
 * every valid cut point, each segment is built as its own model and timed
 * after a warm-up run, and its fastest time is charged to its last layer.
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

export async function profileSegments(flat: FlatModel, rounds = 5): Promise<SegmentProfile> {
  const layerMs = new Array<number>(flat.graph.layers.length).fill(Infinity);
  const index = new Map(flat.graph.layers.map((l, i) => [l.name, i]));
  const segments = [];
  for (const plan of flat.plan(flat.validCutNames())) {
    const { specs, blob } = flat.stageWeights(plan);
    const model = await buildStageModel(flat.stageTopology(plan), specs, blob);
    segments.push({ at: index.get(plan.last)!, model, input: tf.randomUniform([1, ...plan.inputShape], 0, 1, 'float32', 1) });
  }
  try {
    // Rounds over all segments, not repeats of one: a burst of noise on a shared
    // machine then slows one run of many segments instead of every run of one.
    for (let r = 0; r <= rounds; r++) {
      for (const s of segments) {
        const t0 = performance.now();
        const out = s.model.predict(s.input) as tf.Tensor;
        await out.data();
        out.dispose();
        // round 0 warms up; afterwards keep the minimum, since noise only ever adds time
        if (r > 0) layerMs[s.at] = Math.min(layerMs[s.at], performance.now() - t0);
      }
    }
  } finally {
    for (const s of segments) {
      s.model.dispose();
      s.input.dispose();
    }
  }
  for (let i = 0; i < layerMs.length; i++) if (layerMs[i] === Infinity) layerMs[i] = 0;
  return { layerMs, totalMs: layerMs.reduce((a, b) => a + b, 0) };
}
