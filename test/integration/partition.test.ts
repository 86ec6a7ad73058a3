/** Real models cut into stages: the Keras MNIST CNN, the Teachable Machine MobileNetV2, ResNet50; the measured-time profile. */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { setLogLevel } from '../../lib/core/log.js';
import { initEngine } from '../../lib/model/engine.js';
import { balancedCuts, chooseCuts } from '../../lib/planning/balanced-cuts.js';
import { stageMemoryOf } from '../../lib/planning/plan-inputs.js';
import { profileSegments } from '../../lib/planning/profile.js';
import { flatOf, inputFor, predict, REAL_MODELS, runChained, sameBits } from '../helpers/common.js';

before(async () => {
  setLogLevel('warn');
  await initEngine('wasm');
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
  assert.throws(() => flat.spans(['block_5_project_BN']), /skip connection/);
});

test('ResNet50 (25.6 M parameters) in 2, 4 and 8 balanced stages gives the whole output bit for bit', async () => {
  const { source, flat } = await flatOf('resnet50');
  assert.equal(flat.params, 25_636_712);
  assert.ok(flat.validCutNames().includes('conv3_block2_out'));
  assert.throws(() => flat.spans(['conv3_block2_2_relu']), /skip connection/);
  const x = inputFor(flat, 7);
  const whole = await predict(source, x);
  for (const k of [2, 4, 8]) {
    const cuts = balancedCuts(flat, k);
    assert.equal(cuts.length, k - 1);
    assert.ok(sameBits(await runChained(flat, cuts, x), whole), `${k} stages: ${cuts.join(',')}`);
  }
  // balanced by memory: no split into 4 stages has a lighter heaviest stage by the planner's memory estimate
  const heaviest = (cuts: string[]) => Math.max(...stageMemoryOf(flat, flat.spans(cuts)).map((m) => m.stageBytes));
  const names = flat.validCutNames();
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < names.length; i++) for (let j = i + 1; j < names.length; j++) for (let k = j + 1; k < names.length; k++) best = Math.min(best, heaviest([names[i], names[j], names[k]]));
  const byMemory = balancedCuts(flat, 4, 'memory');
  assert.equal(heaviest(byMemory), best, byMemory.join(','));
  assert.ok(heaviest(balancedCuts(flat, 4, 'flops')) > best, 'balanced by FLOPs, the heaviest stage is heavier');
  assert.throws(() => balancedCuts(flat, names.length + 2, 'memory'), /cannot make \d+ stages: the model has only \d+ valid cut points/);
  source.dispose();
  flat.dispose();
});

test('measured-time profile: every segment between valid cuts is timed, and chosen cuts are valid', async () => {
  const { flat } = await flatOf('tiny');
  const profile = await profileSegments(flat, 2);
  const ends = [...flat.cuts.valid, flat.graph.layers.length - 1];
  for (const i of ends) assert.ok(profile.layerMs[i] > 0, `segment ending at ${flat.graph.layers[i].name} was timed`);
  for (const [i, ms] of profile.layerMs.entries()) assert.ok(ends.includes(i) || ms === 0);
  // the whole model timed in one call; the segments' figures are net of the per-call cost, never above their measured time
  assert.ok(profile.wholeMs > 0 && profile.callMs >= 0);
  for (const s of profile.segments) assert.ok(profile.layerMs[flat.graph.layers.findIndex((l) => l.name === s.last)] <= s.ms);
  const profileOpts = { modelSpec: 'tiny', backend: 'wasm', cacheDir: mkdtempSync(join(tmpdir(), 'defer-cuts-')), progress: () => undefined };
  const cuts = await chooseCuts(flat, 3, 'time', profileOpts);
  assert.equal(cuts.length, 2);
  assert.doesNotThrow(() => flat.spans(cuts));
  assert.deepEqual(await chooseCuts(flat, 1, 'time', profileOpts), []);
});
