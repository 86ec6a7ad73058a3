import assert from 'node:assert/strict';
import test from 'node:test';
import { checkShape, explainMiss, formatShapeCheck, type RunSummary } from '../../dispatcher/run/measure-run.js';
import type { ShapePlan } from '../../lib/planning/shape.js';

const plan = (singleFps: number): ShapePlan => ({
  cuts: [],
  stages: [{ members: [{ node: 'n1', workers: 2 }], share: { n1: 1 }, engineMs: { n1: 437.7 }, stageMs: 218.9 }] as unknown as ShapePlan['stages'],
  idle: ['n2'],
  bottleneckMs: 218.9,
  bottleneck: 'the 2 cores of host vm',
  predictedThroughputFps: 4.57,
  singleFps,
  hostLoadMs: [],
  relayCpuMs: 0,
  shapesTried: 1,
  exhaustive: true,
});

const run = (baselineMs: number | null, throughputFps = 5.63, timing: Partial<RunSummary> = {}) =>
  ({
    shape: 'n1x2',
    throughputFps,
    wallMs: 5329,
    firstResultMs: 700,
    steadyThroughputFps: 6.26,
    dispatcherCpuMsPerFrame: 2,
    ...timing,
    stages: [{ nodes: [{ node: 'n1', workers: 2, frames: 30, meanBusyMs: 347.5, peakRssBytes: null }] }],
    singleProcess: baselineMs === null ? null : { throughputFps: 1000 / baselineMs, msPerFrame: baselineMs },
  }) as unknown as RunSummary;

test("a run's shape check: the profile's whole model against the run's single process, named stale beyond 1.2x either way", () => {
  // the profile made on a busy machine: 333 ms where this run's single process takes 260.5
  const stale = checkShape(plan(1000 / 333), run(260.5));
  assert.deepEqual(stale.wholeModel, { profileMs: 333, baselineMs: 260.5, profileOverBaseline: 1.28 });
  assert.match(
    formatShapeCheck(stale),
    /the profile's whole model takes 333 ms per frame, this run's single process 260.5 ms \(1.28x\): the model ran faster here in this run than in its profile, .* --refresh profiles the model again/,
  );
  const idler = checkShape(plan(1000 / 200), run(260.5));
  assert.match(formatShapeCheck(idler), /\(0.77x\): the model ran slower here in this run/);
  // within 1.2x either way, or no baseline: nothing said
  assert.doesNotMatch(formatShapeCheck(checkShape(plan(1000 / 280), run(260.5))), /profile/);
  const none = checkShape(plan(1000 / 333), run(null));
  assert.deepEqual(none.wholeModel, { profileMs: 333, baselineMs: null, profileOverBaseline: null });
  assert.doesNotMatch(formatShapeCheck(none), /profile/);
  assert.equal(stale.stages[0].measuredStageMs, 173.75);
});

test('a run under its prediction is explained by its own figures: the fill of a short run, a slow machine, a slow stage', () => {
  // 30 frames of a light model: 44 ms in all, 38 of them before the first result; 700 frames/s from then on
  const short = checkShape(plan(1000 / 280), run(260.5, 2.5, { wallMs: 44, firstResultMs: 38, steadyThroughputFps: 4.8 }));
  const why = explainMiss(short);
  assert.match(why[0], /the run lasted 44 ms, 38 of them before the first result .* 4.8 frames\/s/);
  // the stage measured 173.75 ms per frame against 218.9 predicted: not a reason
  assert.equal(why.length, 1, why.join('; '));
  assert.match(formatShapeCheck(short), /measured 0.55x the prediction, as measured:\n {6}- the run lasted/);
  // slower than profiled, and the stage slower than planned, without any fill
  const slow = { ...plan(1000 / 200), stages: [{ ...plan(0).stages[0], stageMs: 100 }] } as ShapePlan;
  const reasons = explainMiss(checkShape(slow, run(260.5, 2.5, { steadyThroughputFps: 2.6 })));
  assert.equal(reasons.length, 2, reasons.join('; '));
  assert.match(reasons[0], /\(0.77x\): the model ran slower here/);
  assert.match(reasons[1], /stage 1 took 173.75 ms per frame, 1.74x the predicted 100/);
  // within 1.2x of the prediction: nothing to explain
  assert.deepEqual(explainMiss(checkShape(plan(1000 / 280), run(260.5, 4))), []);
});
