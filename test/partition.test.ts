import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine, tf } from '../lib/model/engine.js';
import { CutError } from '../lib/core/errors.js';
import { minMaxCuts } from '../lib/model/graph.js';
import { loadModel } from '../lib/model/model-source.js';
import { FlatModel } from '../lib/model/partition.js';
import { prng } from '../lib/model/zoo.js';
import { profileSegments } from '../lib/planning/profile.js';
import { chooseCuts } from '../lib/planning/balanced-cuts.js';
import { setLogLevel } from '../lib/core/log.js';
import { REAL_MODELS, predict, runChained, sameBits } from './helpers/common.js';

before(async () => {
  setLogLevel('warn');
  await initEngine('wasm');
});

async function flatOf(spec: string) {
  const source = await loadModel(spec);
  return { source, flat: await FlatModel.from(source) };
}

function inputFor(flat: FlatModel, seed: number, lo = 0, hi = 1) {
  return tf.randomUniform([1, ...flat.inputShape], lo, hi, 'float32', seed);
}

test('tiny CNN: every valid cut, alone and all together, gives the whole model output bit for bit', async () => {
  const { source, flat } = await flatOf('tiny');
  const x = inputFor(flat, 3);
  const whole = await predict(source, x);
  assert.deepEqual(flat.validCutNames(), ['conv1', 'block_add', 'block_out', 'pool', 'conv2', 'gap']);
  for (const cut of flat.validCutNames()) assert.ok(sameBits(await runChained(flat, [cut], x), whole), cut);
  assert.ok(sameBits(await runChained(flat, flat.validCutNames(), x), whole), 'all cuts');
  // and the result is not trivially equal: another input gives another output
  assert.ok(!sameBits(await predict(source, inputFor(flat, 4)), whole));
});

test('invalid cuts raise CutError naming the layer, why, and valid cuts near it', async () => {
  const { flat } = await flatOf('tiny');
  const cases: [string[], RegExp][] = [
    [['nope'], /unknown layer 'nope'/],
    [['block_conv_a'], /cannot cut after layer 'block_conv_a': 2 tensors cross this point \(conv1, block_conv_a\).*skip connection.*Valid cuts near it: conv1, block_add/],
    [['block_conv_b'], /inside a block with a skip connection/],
    [['input'], /input layer/],
    [['predictions'], /last layer/],
    [['pool', 'conv1'], /must follow the model's layer order: 'conv1' comes before 'pool'/],
    [['pool', 'pool'], /given twice/],
  ];
  for (const [cuts, re] of cases) {
    assert.throws(() => flat.plan(cuts), (e: unknown) => e instanceof CutError && re.test(e.message) && e.nearbyCuts.length > 0, cuts.join(','));
  }
});

test('real Keras MNIST CNN (newer topology layout): split outputs equal the whole model', async () => {
  const { source, flat } = await flatOf(join(REAL_MODELS, 'mnist-keras'));
  assert.equal(flat.params, 59933);
  const x = inputFor(flat, 5);
  const whole = await predict(source, x);
  for (const cuts of [['max_pooling2d'], ['conv2d', 'flatten', 'dense_1']]) assert.ok(sameBits(await runChained(flat, cuts, x), whole), cuts.join(','));
});

test('real Teachable Machine model (older layout, nested models) cut inside its MobileNetV2', async () => {
  const { source, flat } = await flatOf(join(REAL_MODELS, 'tm-aircraft'));
  const names = flat.graph.layers.map((l) => l.name);
  assert.ok(names.includes('block_5_add') && names.includes('dense_Dense27'), 'nested models are flattened');
  const x = inputFor(flat, 6, -1, 1);
  const whole = await predict(source, x);
  assert.ok(sameBits(await runChained(flat, ['block_5_add', 'block_12_add', 'out_relu'], x), whole));
  assert.throws(() => flat.plan(['block_5_project_BN']), /skip connection/);
});

test('ResNet50 (25.6 M parameters) in 2, 4 and 8 balanced stages gives the whole output bit for bit', async () => {
  const { source, flat } = await flatOf('resnet50');
  assert.equal(flat.params, 25_636_712);
  assert.ok(flat.validCutNames().includes('conv3_block2_out'));
  assert.throws(() => flat.plan(['conv3_block2_2_relu']), /skip connection/);
  const x = inputFor(flat, 7);
  const whole = await predict(source, x);
  for (const k of [2, 4, 8]) {
    const cuts = flat.balancedCuts(k);
    assert.equal(cuts.length, k - 1);
    assert.ok(sameBits(await runChained(flat, cuts, x), whole), `${k} stages: ${cuts.join(',')}`);
  }
  source.dispose();
  flat.model.dispose();
});

test('minMaxCuts is exact: it matches brute force on random costs', () => {
  const rnd = prng(42);
  const bottleneck = (cost: number[], cuts: number[]) => {
    const b = [-1, ...cuts, cost.length - 1];
    let m = 0;
    for (let i = 0; i + 1 < b.length; i++) m = Math.max(m, cost.slice(b[i] + 1, b[i + 1] + 1).reduce((a, c) => a + c, 0));
    return m;
  };
  const combos = (arr: number[], k: number): number[][] =>
    k === 0 ? [[]] : arr.flatMap((v, i) => combos(arr.slice(i + 1), k - 1).map((c) => [v, ...c]));
  for (let trial = 0; trial < 300; trial++) {
    const n = 3 + Math.floor(rnd() * 10);
    const cost = Array.from({ length: n }, () => Math.floor(rnd() * 100));
    const valid = Array.from({ length: n - 1 }, (_, i) => i).filter(() => rnd() < 0.7);
    const stages = 1 + Math.floor(rnd() * Math.min(4, valid.length + 1));
    const got = minMaxCuts(cost, valid, stages);
    const best = Math.min(...combos(valid, stages - 1).map((c) => bottleneck(cost, c)));
    assert.equal(got.length, stages - 1);
    assert.ok(got.every((c) => valid.includes(c)));
    assert.equal(bottleneck(cost, got), best, JSON.stringify({ cost, valid, stages, got }));
  }
});

test('measured-time profile: every segment between valid cuts is timed, and chosen cuts are valid', async () => {
  const { flat } = await flatOf('tiny');
  const profile = await profileSegments(flat, 2);
  const ends = [...flat.cuts.valid, flat.graph.layers.length - 1];
  ends.forEach((i) => assert.ok(profile.layerMs[i] > 0, `segment ending at ${flat.graph.layers[i].name} was timed`));
  profile.layerMs.forEach((ms, i) => assert.ok(ends.includes(i) || ms === 0));
  const profileOpts = { modelSpec: 'tiny', backend: 'wasm', cacheDir: mkdtempSync(join(tmpdir(), 'defer-cuts-')), progress: () => undefined };
  const cuts = await chooseCuts(flat, 3, 'time', profileOpts);
  assert.equal(cuts.length, 2);
  assert.doesNotThrow(() => flat.plan(cuts));
  assert.deepEqual(await chooseCuts(flat, 1, 'time', profileOpts), []);
});
