import assert from 'node:assert/strict';
import test from 'node:test';
import { checkShape, formatShapeCheck, type RunSummary } from '../../dispatcher/run/measure-run.js';
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

const run = (baselineMs: number | null) =>
  ({
    shape: 'n1x2',
    throughputFps: 5.63,
    stages: [{ nodes: [{ node: 'n1', workers: 2, frames: 30, meanBusyMs: 347.5, peakRssBytes: null }] }],
    singleProcess: baselineMs === null ? null : { throughputFps: 1000 / baselineMs, msPerFrame: baselineMs },
  }) as unknown as RunSummary;

test("a run's shape check: the profile's whole model against the run's single process, named stale beyond 1.2x either way", () => {
  // the profile made on a busy machine: 333 ms where this run's single process takes 260.5
  const stale = checkShape(plan(1000 / 333), run(260.5));
  assert.deepEqual(stale.wholeModel, { profileMs: 333, baselineMs: 260.5, profileOverBaseline: 1.28 });
  assert.match(
    formatShapeCheck(stale),
    /the profile's whole model takes 333 ms per frame, this run's single process 260.5 ms \(1.28x\): the profile was made on a busier machine .* --refresh profiles the model again/,
  );
  const idler = checkShape(plan(1000 / 200), run(260.5));
  assert.match(formatShapeCheck(idler), /\(0.77x\): the profile was made on a less busy machine/);
  // within 1.2x either way, or no baseline: nothing said
  assert.doesNotMatch(formatShapeCheck(checkShape(plan(1000 / 280), run(260.5))), /profile/);
  const none = checkShape(plan(1000 / 333), run(null));
  assert.deepEqual(none.wholeModel, { profileMs: 333, baselineMs: null, profileOverBaseline: null });
  assert.doesNotMatch(formatShapeCheck(none), /profile/);
  assert.equal(stale.stages[0].measuredStageMs, 173.75);
});
