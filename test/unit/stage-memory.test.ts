/**
 * A stage's memory on the wasm engine: weights written straight into the engine's tensors (chunks in any order
 * and size), and weights the engine has packed given back after the first frame. Both must leave the stage's
 * outputs bit for bit as a stage built from one blob with every weight kept, and a released weight must never
 * be read again silently.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { warmUp } from '../../edge-node/stage.js';
import { prng } from '../../lib/core/prng.js';
import { initEngine, tf } from '../../lib/model/engine.js';
import { buildLayersStage, LayersFlatModel } from '../../lib/model/partition.js';
import { buildStageModel } from '../../lib/model/stage-model.js';
import { EngineWeights } from '../../lib/model/weight-sink.js';
import { createZooModel } from '../../lib/model/zoo.js';
import type { Assignment } from '../../lib/protocol/index.js';

test('engine weights and released packed weights: the same bits as a blob-built stage, and a released weight is never read', async () => {
  assert.equal(await initEngine('wasm'), 'wasm');
  const flat = await LayersFlatModel.from(createZooModel('tiny'));
  const [span] = flat.spans(['block_out']).slice(1); // the second stage: convolutions and the dense layer
  const { specs, blob } = flat.stageWeights(span);
  const topology = flat.stageTopology(span);
  const a = { stage: 1, inputShape: span.inputShape, inputDtype: 'float32' } as unknown as Assignment;

  // chunks of random sizes, in random order, straight into the engine's tensors
  const sink = EngineWeights.tryFor(specs);
  assert.ok(sink, 'a layers stage of float32 weights on wasm takes engine weights');
  const rnd = prng(3);
  const pieces: [number, number][] = [];
  for (let at = 0; at < blob.byteLength; ) {
    const n = Math.min(blob.byteLength - at, 1 + Math.floor(rnd() * 700));
    pieces.push([at, n]);
    at += n;
  }
  for (let i = pieces.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [pieces[i], pieces[j]] = [pieces[j], pieces[i]];
  }
  for (const [at, n] of pieces) sink.write(at, blob.subarray(at, at + n));
  const sha = createHash('sha256').update(blob).digest('hex');
  assert.equal(sink.sha256(), sha, 'the hash of the tensors in order is the blob hash');
  const copies: Buffer[] = [];
  for (const p of sink.pieces()) copies.push(Buffer.from(p)); // each piece is valid until the next is taken
  assert.deepEqual(Buffer.concat(copies), blob, 'its pieces in order are the blob');
  assert.throws(() => sink.write(blob.byteLength - 2, new Uint8Array(4)), /outside the stage's \d+ bytes of weights/);

  const reference = await buildStageModel('layers-model', topology, specs, blob);
  assert.equal(warmUp(a, reference, true), 0, 'kept: nothing released');
  const lean = await buildLayersStage(topology, specs, sink.take());
  const released = warmUp(a, lean);
  // every convolution's filter and bias (fused) and the dense kernel; not the dense bias: a softmax layer adds its
  // bias in a kernel of its own (softmax is not fused), which reads it every frame
  const packed = specs.filter((s) => /conv/.test(s.layer) || s.name === 'predictions/0').reduce((n, s) => n + s.bytes, 0);
  assert.equal(released, packed, 'convolution filters and biases and the dense kernel released; the dense bias kept');

  for (let i = 0; i < 5; i++) {
    const x = tf.randomUniform([1, ...span.inputShape], -1, 2, 'float32', 100 + i);
    const want = reference.run(x);
    const got = lean.run(x);
    assert.deepEqual(new Uint32Array(got.dataSync().buffer), new Uint32Array(want.dataSync().buffer), `frame ${i}: bit for bit`);
    tf.dispose([x, want, got]);
  }

  // a released weight read by a kernel that needs its values is refused, not read as garbage
  // (the variables in creation order: the lean stage's conv2 kernel is the last of that shape)
  const kernels = Object.values(tf.engine().state.registeredVariables).filter((v) => v.name.includes('conv2') && v.shape.length === 4);
  const [kept, released1] = kernels.slice(-2); // the reference stage's, then the lean one's
  assert.ok(kept && released1, kernels.map((v) => v.name).join(', '));
  assert.throws(() => tf.add(released1, 1), /kernel Add would read weight .*conv2.*--keep-packed-weights/);
  tf.dispose(tf.add(kept, 1)); // the reference's, kept, reads as ever

  const before = tf.memory().numTensors;
  lean.dispose();
  reference.dispose();
  assert.ok(tf.memory().numTensors < before, 'disposing a stage with released weights frees its tensors');
});
