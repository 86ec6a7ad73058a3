/**
 * Measured cost of a model on this process's backend: the model is cut at
 * every valid cut point, each segment is built as its own model and timed
 * after a warm-up run, and its time is charged to its last layer. Balancing
 * stages on these figures beats balancing on estimated FLOPs, because layers
 * differ in time per FLOP (early, wide convolutions are slower).
 *
 * A segment's figure is the mean of its rounds with the fastest and slowest
 * fifth left out: an average, that a burst of noise on a shared machine does
 * not move. The rounds run over all segments in turn, not repeats of one, so
 * such a burst slows one run of many segments instead of every run of one.
 *
 * A stage runs its segments in one call, and a call costs something besides its layers (the layers model's
 * checks, the output's copy). So the whole model is timed in the same rounds, the excess of the segments' sum over
 * it is spread as a per-call cost (`callMs`: (sum - whole) / (segments - 1)), and each segment's figure is its time
 * less that (at least a tenth of it); the cost model charges `callMs` once per stage. (Profiles of the Teachable
 * Machine MobileNetV2 made without the whole model in the rounds summed to 57-91 ms where the model takes 13-17;
 * with it, 15-23: docs/planner.md.)
 */
import { tf } from '../model/engine.js';
import type { FlatModel } from '../model/flat-model.js';
import { buildStageModel } from '../model/stage-model.js';
import { type Codec, decodeTensor, encodeTensor, type RawTensor } from '../protocol/index.js';

/** ms to encode a tensor for the wire and to decode it, per codec */
export type CodecMs = Record<Codec, { encodeMs: number; decodeMs: number; bytes: number }>;

export interface SegmentProfile {
  /** per layer: the measured ms of the segment that ends at it, 0 for other layers */
  layerMs: number[];
  totalMs: number;
  /** one entry per segment between valid cuts */
  segments: { last: string; ms: number; minMs: number; maxMs: number; output: CodecMs }[];
  /** the model input's codec costs (the dispatcher encodes it, stage 0 decodes it) */
  input: CodecMs;
  rounds: number;
  /** what one call of a stage costs besides its layers (charged once per stage); layerMs are net of it */
  callMs: number;
  /** the whole model in one call, ms */
  wholeMs: number;
}

/** Time encoding and decoding `t` with each codec: the fastest of a few runs. */
export function timeCodecs(t: RawTensor, reps = 3): CodecMs {
  const out = {} as CodecMs;
  for (const codec of ['lz4', 'none'] as const) {
    let enc = Infinity;
    let dec = Infinity;
    let bytes = 0;
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      const w = encodeTensor(t, { codec });
      const t1 = performance.now();
      decodeTensor(w, Number.MAX_SAFE_INTEGER);
      const t2 = performance.now();
      enc = Math.min(enc, t1 - t0);
      dec = Math.min(dec, t2 - t1);
      bytes = w.data.byteLength;
    }
    out[codec] = { encodeMs: enc, decodeMs: dec, bytes };
  }
  return out;
}

export function trimmedMean(xs: number[], trim = 0.2): number {
  const s = [...xs].sort((a, b) => a - b);
  const k = Math.floor(s.length * trim);
  const kept = s.slice(k, s.length - k);
  return kept.reduce((a, b) => a + b, 0) / kept.length;
}

export async function profileSegments(flat: FlatModel, rounds = 7): Promise<SegmentProfile> {
  const layerMs = new Array<number>(flat.graph.layers.length).fill(0);
  const index = new Map(flat.graph.layers.map((l, i) => [l.name, i]));
  const segments = [];
  for (const plan of flat.spans(flat.validCutNames())) {
    const { specs, blob } = flat.stageWeights(plan);
    const model = await buildStageModel(flat.format, flat.stageTopology(plan), specs, blob);
    const dtype = plan.inputDtype === 'int32' ? 'int32' : 'float32';
    segments.push({
      last: plan.last,
      at: index.get(plan.last)!,
      model,
      input: tf.randomUniform([1, ...plan.inputShape], 0, 1, dtype, 1),
      times: [] as number[],
      output: undefined as CodecMs | undefined,
    });
  }
  // codec costs on real activations: each segment fed the previous one's output
  const first = segments[0].input;
  const inputCodec = timeCodecs({ dtype: first.dtype === 'int32' ? 'int32' : 'float32', shape: first.shape, data: (await first.data()) as Float32Array | Int32Array });
  let x: tf.Tensor = first;
  for (const s of segments) {
    const y = s.model.run(x);
    if (x !== first) x.dispose();
    x = y;
    s.output = timeCodecs({ dtype: 'float32', shape: y.shape, data: (await y.data()) as Float32Array });
  }
  if (x !== first) x.dispose();
  const whole: number[] = [];
  try {
    for (let r = 0; r <= rounds; r++) {
      for (const s of segments) {
        const t0 = performance.now();
        const out = s.model.run(s.input);
        await out.data();
        out.dispose();
        if (r > 0) s.times.push(performance.now() - t0); // round 0 warms up
      }
      const t0 = performance.now();
      const out = flat.run(first);
      await out.data();
      out.dispose();
      if (r > 0) whole.push(performance.now() - t0);
    }
  } finally {
    for (const s of segments) {
      s.model.dispose();
      s.input.dispose();
    }
  }
  const out = segments.map((s) => ({ last: s.last, ms: trimmedMean(s.times), minMs: Math.min(...s.times), maxMs: Math.max(...s.times), output: s.output! }));
  const wholeMs = trimmedMean(whole);
  const sum = out.reduce((a, s) => a + s.ms, 0);
  const callMs = out.length > 1 ? Math.max(0, (sum - wholeMs) / (out.length - 1)) : 0;
  segments.forEach((s, i) => {
    layerMs[s.at] = Math.max(out[i].ms - callMs, out[i].ms / 10);
  });
  return { layerMs, totalMs: layerMs.reduce((a, b) => a + b, 0) + callMs, segments: out, input: inputCodec, rounds, callMs, wholeMs };
}
