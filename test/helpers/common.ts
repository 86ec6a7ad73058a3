/** Shared test helpers. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tf } from '../../lib/model/engine.js';
import type { FlatModel } from '../../lib/model/flat-model.js';
import { loadModel } from '../../lib/model/model-source.js';
import { LayersFlatModel } from '../../lib/model/partition.js';
import { buildStageModel } from '../../lib/model/stage-model.js';

export { brokerReachable, freePort } from '../../lib/mqtt/local-ports.js';

/** Repository root (this file runs from dist/test/helpers). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
/** Real exported models and photos, kept in the repository (see test/fixtures/README.md). */
export const FIXTURES = join(ROOT, 'test', 'fixtures');
export const REAL_MODELS = join(FIXTURES, 'models');
export const IMAGES = join(FIXTURES, 'images');

// Tests write nothing into the working tree or the user's caches: profiles and weight caches go
// to temporary folders, for this process and the child processes it starts.
process.env.DEFER_PLANNER_CACHE_DIR ??= mkdtempSync(join(tmpdir(), 'defer-test-profiles-'));
process.env.DEFER_NODE_WEIGHT_CACHE ??= mkdtempSync(join(tmpdir(), 'defer-test-weights-'));
export const CLI = join(ROOT, 'dist', 'cli', 'defer.js');

/** Run `input` through the stages cut at `cuts`, each built as an edge node builds it. */
export async function runChained(flat: FlatModel, cuts: string[], input: tf.Tensor): Promise<Float32Array> {
  let x = input;
  for (const plan of flat.spans(cuts)) {
    const { specs, blob } = flat.stageWeights(plan);
    const stage = await buildStageModel(flat.format, JSON.parse(JSON.stringify(flat.stageTopology(plan))), specs, blob);
    const y = stage.run(x);
    if (x !== input) x.dispose();
    x = y;
    stage.dispose();
  }
  const out = (await x.data()) as Float32Array;
  x.dispose();
  return out;
}

export async function predict(model: tf.LayersModel, input: tf.Tensor): Promise<Float32Array> {
  const y = model.predict(input) as tf.Tensor;
  const out = (await y.data()) as Float32Array;
  y.dispose();
  return out;
}

/** Bit-level equality of two float arrays (NaN payloads and -0 included). */
export function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** A model by zoo name or path, and the same model flattened for cutting. */
export async function flatOf(spec: string): Promise<{ source: tf.LayersModel; flat: LayersFlatModel }> {
  const source = await loadModel(spec);
  return { source, flat: await LayersFlatModel.from(source) };
}

/** A seeded random input for `flat`, batch 1, values in [lo, hi). */
export function inputFor(flat: FlatModel, seed: number, lo = 0, hi = 1): tf.Tensor {
  return tf.randomUniform([1, ...flat.inputShape], lo, hi, 'float32', seed);
}

/**
 * Waits until `done()` holds, checking every `everyMs`, for at most `ms`; then returns either way, and the caller's
 * assertion says what is missing. The deadlines are generous on purpose: `npm test` runs two test files at once on
 * two cores, and a node process started beside another file's work takes several times as long as alone (a
 * restarted node was not online within 10 s). They cost nothing when the condition comes.
 */
export async function waitUntil(done: () => unknown, ms = 30_000, everyMs = 50): Promise<void> {
  for (const end = Date.now() + ms; !done() && Date.now() < end; ) await new Promise((r) => setTimeout(r, everyMs));
}
