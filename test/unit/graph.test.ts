/** Cutting a model: valid and invalid cuts of the tiny CNN, and the exact min-max search. */
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { CutError } from '../../lib/core/errors.js';
import { setLogLevel } from '../../lib/core/log.js';
import { prng } from '../../lib/core/prng.js';
import { initEngine } from '../../lib/model/engine.js';
import { balancedCuts } from '../../lib/planning/balanced-cuts.js';
import { minMaxCuts } from '../../lib/planning/min-max.js';
import { flatOf, inputFor, predict, runChained, sameBits } from '../helpers/common.js';

before(async () => {
  setLogLevel('warn');
  await initEngine('wasm');
});

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
    [['input'], /it is the model's input \(InputLayer\)/],
    [['predictions'], /last layer/],
    [['pool', 'conv1'], /must follow the model's layer order: 'conv1' comes before 'pool'/],
    [['pool', 'pool'], /given twice/],
  ];
  for (const [cuts, re] of cases) {
    assert.throws(
      () => flat.spans(cuts),
      (e: unknown) => e instanceof CutError && re.test(e.message) && e.nearbyCuts.length > 0,
      cuts.join(','),
    );
  }
});

test('minMaxCuts is exact: it matches brute force on random costs', () => {
  const rnd = prng(42);
  const bottleneck = (cost: number[], cuts: number[]) => {
    const b = [-1, ...cuts, cost.length - 1];
    let m = 0;
    for (let i = 0; i + 1 < b.length; i++)
      m = Math.max(
        m,
        cost.slice(b[i] + 1, b[i + 1] + 1).reduce((a, c) => a + c, 0),
      );
    return m;
  };
  const combos = (arr: number[], k: number): number[][] => (k === 0 ? [[]] : arr.flatMap((v, i) => combos(arr.slice(i + 1), k - 1).map((c) => [v, ...c])));
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

test('balanced cuts are always distinct and valid, whatever the layer costs (a cut moved past an activation never lands on the next cut)', async () => {
  const { flat } = await flatOf('tiny');
  const rnd = prng(11);
  for (let trial = 0; trial < 300; trial++) {
    // sparse costs, many zeros: the min-max search then likes one-layer stages such as a lone activation
    const cost = flat.layers.map(() => (rnd() < 0.5 ? 0 : Math.floor(rnd() * 100)));
    for (let stages = 2; stages <= flat.cuts.valid.length + 1; stages++) {
      const cuts = balancedCuts(flat, stages, cost);
      assert.equal(new Set(cuts).size, stages - 1, `distinct: ${cuts} for ${cost}`);
      assert.doesNotThrow(() => flat.spans(cuts), `${cuts} for ${cost}`);
    }
  }
  flat.dispose();
});
