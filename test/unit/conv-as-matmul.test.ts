/**
 * Convolutions computed as matrix products (lib/model/conv-as-matmul.ts): the same bits as the engine's own
 * convolutions on whole real and zoo models, frames alone and in batches; the rewrite really happens where the
 * filter outweighs the patches, and it holds the filter once where the engine's convolution holds it twice.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { asMatMul, patchesOf, selfCheck } from '../../lib/model/conv-as-matmul.js';
import { initEngine, tf } from '../../lib/model/engine.js';
import type { FlatModel } from '../../lib/model/flat-model.js';
import { loadFlatModel } from '../../lib/model/model-source.js';
import { LayersFlatModel } from '../../lib/model/partition.js';
import { buildStageModel } from '../../lib/model/stage-model.js';
import { REAL_MODELS } from '../helpers/common.js';

const bits = (t: tf.Tensor) => new Uint32Array(t.dataSync().slice().buffer);

// first in this file (its own process): no other test's freed memory for the stages to reuse
test("the engine's heap: a convolution computed as a product holds its filter once, the engine's own twice", async () => {
  assert.equal(await initEngine('wasm'), 'wasm');
  const w = (tf.backend() as unknown as { wasm: { _malloc(n: number): number; _free(p: number): void } }).wasm;
  // the heap grown first with room to spare: a large request then lands above every allocation
  w._free(w._malloc(1e9));
  const top = () => {
    const p = w._malloc(5e8);
    w._free(p);
    return p;
  };
  const input = tf.input({ shape: [7, 7, 512] });
  const output = tf.layers.conv2d({ filters: 512, kernelSize: 3, padding: 'same', name: 'c' }).apply(input) as tf.SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: output });
  const flat = await LayersFlatModel.from(model);
  const [span] = flat.spans([]);
  const { specs, blob } = flat.stageWeights(span);
  const topology = flat.stageTopology(span);
  flat.dispose();
  model.dispose();
  const x = tf.zeros([1, 7, 7, 512]);
  // both stages stay alive until both have run: the second cannot reuse what the first holds
  const stages: { dispose(): void }[] = [];
  const grows = async (plainConvolutions: boolean) => {
    const stage = await buildStageModel('layers-model', topology, specs, blob, { plainConvolutions });
    stages.push(stage);
    const t0 = top();
    stage.run(x).dispose();
    return (top() - t0) / (3 * 3 * 512 * 512 * 4);
  };
  const lean = await grows(false);
  const plain = await grows(true);
  for (const s of stages) s.dispose();
  x.dispose();
  assert.ok(lean < 1.3, `as a product: its first frame adds ${lean.toFixed(2)}x the filter`);
  assert.ok(plain > 1.8, `the engine's convolution: ${plain.toFixed(2)}x the filter`);
});

test("patches: TensorFlow's 'same' and 'valid' sizes and padding", () => {
  assert.deepEqual(patchesOf([3, 3], [1, 1], 'same', 14, 14, 256), {
    kh: 3,
    kw: 3,
    stride: [1, 1],
    pad: [
      [1, 1],
      [1, 1],
    ],
    outH: 14,
    outW: 14,
    bytes: 14 * 14 * 9 * 256 * 4,
  });
  // stride 2 on an even size pads after only; on an odd size, both sides
  assert.deepEqual(patchesOf([3, 3], [2, 2], 'same', 16, 16, 8).pad, [
    [0, 1],
    [0, 1],
  ]);
  assert.deepEqual(patchesOf([3, 3], [2, 2], 'same', 15, 15, 8).pad, [
    [1, 1],
    [1, 1],
  ]);
  assert.equal(patchesOf([7, 7], [2, 2], 'valid', 230, 230, 3).outH, 112);
  assert.equal(patchesOf([1, 1], [1, 1], 'valid', 56, 56, 64).bytes, 0, 'a 1x1 convolution with stride 1 reads its input as it is');
  assert.equal(patchesOf([1, 1], [2, 2], 'valid', 14, 14, 1024).bytes, 7 * 7 * 1024 * 4);
});

test('the engine computes small convolutions of every kind the same bits both ways', async () => {
  assert.equal(await initEngine('wasm'), 'wasm');
  assert.equal(selfCheck(), '');
});

/** The whole model as one stage built as a node builds it, against the model's own predict: bit for bit, alone and in a batch of 2; and the kernels it ran. */
async function compare(flat: FlatModel, plainConvolutions: boolean): Promise<Record<string, number>> {
  const [span] = flat.spans([]);
  const { specs, blob } = flat.stageWeights(span);
  const stage = await buildStageModel(flat.format, JSON.parse(JSON.stringify(flat.stageTopology(span))), specs, blob, { plainConvolutions });
  try {
    const x = tf.randomUniform([2, ...flat.inputShape], 0, 1, 'float32', 3);
    const want = flat.run(x);
    const profile = await tf.profile(() => {
      stage.run(x).dispose();
    });
    const got = stage.run(x);
    assert.deepEqual(bits(got), bits(want), 'a batch of 2: the same bits as the model');
    const one = x.slice([1], [1]);
    const alone = stage.run(one);
    assert.deepEqual(bits(alone), bits(want).slice(bits(want).length / 2), 'the second frame alone: the same bits');
    tf.dispose([x, want, got, one, alone]);
    const kernels: Record<string, number> = {};
    for (const k of profile.kernels) kernels[k.name] = (kernels[k.name] ?? 0) + 1;
    return kernels;
  } finally {
    stage.dispose();
  }
}

for (const [name, spec] of [
  ['MobileNet v1 (zoo)', 'mobilenet'],
  ['the Teachable Machine MobileNetV2', join(REAL_MODELS, 'tm-aircraft')],
  ['the Keras MNIST CNN', join(REAL_MODELS, 'mnist-keras')],
  ['the tiny CNN (zoo)', 'tiny'],
] as const) {
  test(`${name}: convolutions as matrix products give the model's bits`, async () => {
    assert.equal(await initEngine('wasm'), 'wasm');
    const flat = await loadFlatModel(spec);
    try {
      const lean = await compare(flat, false);
      const plain = await compare(flat, true);
      const convs = flat.layers.filter((l) => l.className === 'Conv2D').length;
      assert.equal((plain.FusedConv2D ?? 0) + (plain.Conv2D ?? 0), convs, 'plain: every convolution on the engine');
      const rewritten = (plain.FusedConv2D ?? 0) + (plain.Conv2D ?? 0) - (lean.FusedConv2D ?? 0) - (lean.Conv2D ?? 0);
      assert.equal((lean._FusedMatMul ?? 0) - (plain._FusedMatMul ?? 0), rewritten, 'each rewritten convolution is one matrix product');
      // MobileNet v1's 1x1 convolutions of 512 KB and more: 256 -> 512, five 512 -> 512, 512 -> 1024, 1024 -> 1024 and
      // the classifier (conv_preds, 1024 -> 1000)
      if (spec === 'mobilenet') assert.equal(rewritten, 9, "MobileNet v1's 1x1 convolutions from 256 -> 512 on are products");
    } finally {
      flat.dispose();
    }
  });
}

test('which convolutions: those whose filter outweighs their patches', async () => {
  assert.equal(await initEngine('wasm'), 'wasm');
  const conv = (kernelSize: number, filters: number, strides = 1) => {
    const l = tf.layers.conv2d({ filters, kernelSize, strides, padding: 'same' });
    return l;
  };
  const big = conv(3, 512);
  big.apply(tf.input({ shape: [7, 7, 512] }));
  assert.equal(asMatMul(big, [7, 7, 512]), true, '3x3, 512 -> 512 on 7x7: 9.4 MB of filter against 0.9 MB of patches');
  const early = conv(3, 64);
  early.apply(tf.input({ shape: [56, 56, 64] }));
  assert.equal(asMatMul(early, [56, 56, 64]), false, '3x3, 64 -> 64 on 56x56: 0.15 MB of filter against 7.2 MB of patches');
  const small = conv(1, 96);
  small.apply(tf.input({ shape: [112, 112, 16] }));
  assert.equal(asMatMul(small, [112, 112, 16]), false, '1x1, 16 -> 96: no patches to make, but 6 KB of filter: not worth the calls');
  const dilated = tf.layers.conv2d({ filters: 512, kernelSize: 3, dilationRate: 2, padding: 'same' });
  dilated.apply(tf.input({ shape: [7, 7, 512] }));
  assert.equal(asMatMul(dilated, [7, 7, 512]), false, 'dilated: the engine');
  const elu = tf.layers.conv2d({ filters: 512, kernelSize: 1, activation: 'elu' });
  elu.apply(tf.input({ shape: [7, 7, 512] }));
  assert.equal(asMatMul(elu, [7, 7, 512]), false, 'elu, which Keras fuses into the convolution: the engine');
  tf.dispose([big, early, small, dilated, elu].flatMap((l) => l.getWeights()));
});
