/**
 * The planner: exact against brute force, memory and link constraints, node
 * speeds from calibrations, the profile cache (`defer plan --auto` as a process:
 * test/integration/plan-cli.test.ts).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { DeferError } from '../../lib/core/errors.js';
import { setLogLevel } from '../../lib/core/log.js';
import { prng } from '../../lib/core/prng.js';
import { initEngine } from '../../lib/model/engine.js';
import { loadFlatModel } from '../../lib/model/model-source.js';
import { type CostModel, evaluateSplit, type PlanNode, planPipeline } from '../../lib/planning/optimiser.js';
import { costModelOf, MEMORY_PLANNED_SHARE, planNodes, remeasuredNodes } from '../../lib/planning/plan-inputs.js';
import { choosePrecisions, type HopMeasure } from '../../lib/planning/precision-choice.js';
import { getProfile } from '../../lib/planning/profile-cache.js';
import { planShape } from '../../lib/planning/shape.js';
import type { Capabilities } from '../../lib/protocol/index.js';
import { combinations, randomCost } from '../helpers/brute-force.js';

before(async () => {
  setLogLevel('warn');
  await initEngine('wasm');
});

function randomNodes(rnd: () => number, k: number, withMemory: boolean): PlanNode[] {
  return Array.from({ length: k }, (_, i) => ({
    id: `n${i}`,
    timeFactor: [0.5, 1, 1, 2, 3][Math.floor(rnd() * 5)],
    bandwidthMbps: rnd() < 0.5 ? undefined : [10, 100, 1000][Math.floor(rnd() * 3)],
    latencyMs: Math.floor(rnd() * 10),
    memoryBytes: withMemory && rnd() < 0.5 ? Math.round(rnd() * 40e6) : undefined,
  }));
}

function* permutations<T>(xs: T[]): Generator<T[]> {
  if (xs.length <= 1) {
    yield xs;
    return;
  }
  for (let i = 0; i < xs.length; i++) for (const p of permutations([...xs.slice(0, i), ...xs.slice(i + 1)])) yield [xs[i], ...p];
}

/** The best bottleneck by trying every cut combination (and every order), or Infinity when nothing fits memory. */
function bruteForce(cost: CostModel, nodes: PlanNode[], orders: boolean): number {
  let best = Infinity;
  for (const order of orders ? permutations(nodes) : [nodes]) {
    for (const combo of combinations(cost.validCuts, nodes.length - 1)) {
      const p = evaluateSplit(
        cost,
        order,
        combo.map((i) => cost.layerNames[i]),
      );
      if (p.stages.some((s, k) => order[k].memoryBytes !== undefined && s.memoryBytes > order[k].memoryBytes!)) continue;
      best = Math.min(best, p.bottleneckMs);
    }
  }
  return best;
}

test('planner is exact: random costs, speeds, links and memory match a brute-force search (given order and best order)', () => {
  const rnd = prng(42);
  let cases = 0;
  let infeasible = 0;
  for (let trial = 0; trial < 300; trial++) {
    const cost = randomCost(rnd, 4 + Math.floor(rnd() * 9));
    const k = 1 + Math.floor(rnd() * Math.min(4, cost.validCuts.length + 1));
    const nodes = randomNodes(rnd, k, trial % 2 === 1);
    for (const orders of [false, true]) {
      const want = bruteForce(cost, nodes, orders);
      if (want === Infinity) {
        infeasible++;
        assert.throws(() => planPipeline(cost, nodes, { order: orders ? 'best' : 'given' }), /fits the nodes' memory/);
        continue;
      }
      const got = planPipeline(cost, nodes, { order: orders ? 'best' : 'given' });
      assert.ok(Math.abs(got.bottleneckMs - want) <= 1e-9 * Math.max(1, want), `trial ${trial} (orders ${orders}): planner ${got.bottleneckMs}, brute force ${want}`);
      // and what it reports is what its own evaluation of that split says
      const again = evaluateSplit(
        cost,
        got.order.map((id) => nodes.find((n) => n.id === id)!),
        got.cuts,
      );
      assert.equal(again.bottleneckMs, got.bottleneckMs);
      cases++;
    }
  }
  assert.ok(cases > 400 && infeasible > 0, `${cases} feasible cases, ${infeasible} infeasible`);
});

test('a node twice as slow gets about half the work of a fast one; a slow link moves the cut to a smaller activation', () => {
  const layers = 41;
  const cost: CostModel = {
    layerNames: Array.from({ length: layers }, (_, i) => `l${i}`),
    segmentMs: Array.from({ length: layers }, (_, i) => (i === 0 ? 0 : 1)),
    validCuts: Array.from({ length: layers - 2 }, (_, i) => i + 1),
    outputBytes: Array.from({ length: layers }, (_, i) => (i === 10 ? 1e5 : 1e6)),
    weightBytes: Array.from({ length: layers }, () => 0),
    inputBytes: 1000,
  };
  const equal = planPipeline(cost, [
    { id: 'a', timeFactor: 1 },
    { id: 'b', timeFactor: 1 },
    { id: 'c', timeFactor: 1 },
  ]);
  assert.deepEqual(
    equal.stages.map((s) => s.layerCount),
    [14, 13, 14],
  );
  const slow = planPipeline(
    cost,
    [
      { id: 'a', timeFactor: 1 },
      { id: 'b', timeFactor: 2 },
      { id: 'c', timeFactor: 1 },
    ],
    { order: 'given' },
  );
  const work = slow.stages.map((s) => s.layerCount);
  assert.deepEqual(work, [17, 8, 16]); // stage 0 also holds the input layer, which costs nothing
  assert.equal(slow.bottleneckMs, 16);
  // 'best' order: a slow node is as good anywhere with uniform costs; the given order wins the tie
  assert.deepEqual(
    planPipeline(cost, [
      { id: 'a', timeFactor: 1 },
      { id: 'b', timeFactor: 2 },
      { id: 'c', timeFactor: 1 },
    ]).order,
    ['a', 'b', 'c'],
  );
  // 10 Mbit/s on the first node: 1 MB outputs take 800 ms, the small output at l10 80 ms: cut there
  const link = planPipeline(
    cost,
    [
      { id: 'a', timeFactor: 1, bandwidthMbps: 10 },
      { id: 'b', timeFactor: 1 },
    ],
    { order: 'given' },
  );
  assert.deepEqual(link.cuts, ['l10']);
  assert.equal(link.bottleneck, 'link of a');
  assert.ok(Math.abs(link.bottleneckMs - 80) < 1e-9);
});

test("a stage's call cost (the profile's callMs) is charged once per stage: in each stage's time, and against more stages", () => {
  const layers = 9;
  const cost: CostModel = {
    layerNames: Array.from({ length: layers }, (_, i) => `l${i}`),
    segmentMs: Array.from({ length: layers }, () => 1),
    validCuts: Array.from({ length: layers - 2 }, (_, i) => i + 1),
    outputBytes: Array.from({ length: layers }, () => 1000),
    weightBytes: Array.from({ length: layers }, () => 0),
    inputBytes: 1000,
  };
  const nodes = [
    { id: 'a', timeFactor: 1 },
    { id: 'b', timeFactor: 1 },
  ];
  const plain = evaluateSplit(cost, nodes, ['l3']);
  const called = evaluateSplit({ ...cost, stageCallMs: 2.5 }, nodes, ['l3']);
  assert.deepEqual(
    plain.stages.map((s) => s.computeMs),
    [4, 5],
  );
  assert.deepEqual(
    called.stages.map((s) => s.computeMs),
    [6.5, 7.5],
  );
  // profiled segments net of the call cost, plus one call per stage: the whole model in one stage is its one call
  const flatLike = { layers: cost.layerNames.map((name) => ({ name, outputBytes: 1000, weightBytes: 0 })), inputShape: [250], cuts: { valid: cost.layerNames.slice(1, -1).map((_, i) => i + 1) } };
  const fromProfile = costModelOf(flatLike as never, {
    layerMs: cost.segmentMs,
    segments: [],
    input: { lz4: { encodeMs: 0, decodeMs: 0, bytes: 1000 }, none: { encodeMs: 0, decodeMs: 0, bytes: 1000 } },
    callMs: 2.5,
  });
  assert.equal(fromProfile.stageCallMs, 2.5);
});

test('memory: a node never gets a stage that does not fit it, and too little memory overall is a clear error', () => {
  const layers = 11;
  const cost: CostModel = {
    layerNames: Array.from({ length: layers }, (_, i) => `l${i}`),
    segmentMs: Array.from({ length: layers }, () => 1),
    validCuts: Array.from({ length: layers - 2 }, (_, i) => i + 1),
    outputBytes: Array.from({ length: layers }, () => 0),
    weightBytes: Array.from({ length: layers }, (_, i) => (i >= 8 ? 10e6 : 0)),
    inputBytes: 0,
  };
  // the last layers are heavy: the small node must take the start, even though the order given puts it last
  const p = planPipeline(cost, [
    { id: 'big', timeFactor: 1 },
    { id: 'small', timeFactor: 1, memoryBytes: 12e6 },
  ]);
  assert.deepEqual(p.order, ['small', 'big']);
  assert.ok(p.stages[0].memoryBytes <= 12e6);
  assert.throws(
    () =>
      planPipeline(cost, [
        { id: 'x', timeFactor: 1, memoryBytes: 12e6 },
        { id: 'y', timeFactor: 1, memoryBytes: 40e6 },
      ]),
    // the whole model (3 layers of 10 MB: 10 MB + 2 x 30 MB + its largest layer's 10 MB) on one node; split by memory, 40 and 60 MB
    (e: unknown) =>
      e instanceof DeferError &&
      /no split of the model fits the nodes' memory: the whole model needs about 80 MB on one node \(the most a node offers: 40 MB on y\); split in 2 stages by memory, the stages need 40 MB, 60 MB: y offers 40 MB for a stage of 60 MB \(lacks 20 MB\); x offers 12 MB for a stage of 40 MB \(lacks 28 MB\)/.test(
        e.message,
      ),
  );
  assert.throws(() => planPipeline(cost, [{ id: 'x', timeFactor: 0 }]), /speed must be a positive number/);
  // weights the engine holds once (convolutions as products): the whole model needs 10 + 30 + 10 MB; on a node
  // whose engine computes every convolution itself, twice its weights: 10 + 60 + 10 MB
  const once: CostModel = { ...cost, heldBytes: cost.weightBytes };
  assert.equal(planPipeline(once, [{ id: 'p', timeFactor: 1, memoryBytes: 60e6 }]).stages.length, 1);
  // refused, it is told what the model needs there (the products' 50 MB would fit the 60 MB it offers)
  assert.throws(
    () => planPipeline(once, [{ id: 'p', timeFactor: 1, memoryBytes: 60e6, plainConvolutions: true }]),
    /the whole model needs about 80 MB on one node \(the most a node offers: 60 MB on p, which computes convolutions itself\)/,
  );
  assert.throws(
    () =>
      planPipeline(once, [
        { id: 'p', timeFactor: 1, memoryBytes: 20e6, plainConvolutions: true },
        { id: 'q', timeFactor: 1, memoryBytes: 20e6, plainConvolutions: true },
      ]),
    /split in 2 stages by memory, the stages need 40 MB, 60 MB: p offers 20 MB for a stage of 60 MB \(lacks 40 MB\)/,
  );
  assert.throws(
    () =>
      planPipeline(once, [
        { id: 'p', timeFactor: 1, memoryBytes: 20e6 },
        { id: 'q', timeFactor: 1, memoryBytes: 20e6 },
      ]),
    /split in 2 stages by memory, the stages need 30 MB, 40 MB: p offers 20 MB for a stage of 40 MB \(lacks 20 MB\)/,
    'the same nodes computing products',
  );
  assert.equal(planShape(once, [{ id: 'p', timeFactor: 1, memoryBytes: 60e6 }]).stages.length, 1);
  assert.throws(() => planShape(once, [{ id: 'p', timeFactor: 1, memoryBytes: 60e6, plainConvolutions: true }]), /fits the nodes' memory/);
  assert.deepEqual(
    planShape(once, [{ id: 'p', timeFactor: 1, memoryBytes: 100e6, plainConvolutions: true }]).stages.map((st) => [st.memoryBytes, st.plainMemoryBytes]),
    [[50e6, 80e6]],
    'a plain member: its stage says what it needs there (batches are sized by it: batches.test.ts)',
  );
  // two nodes alike but for that: the heavy end goes to the node that holds it once
  const p2 = planPipeline(once, [
    { id: 'products', timeFactor: 1, memoryBytes: 45e6 },
    { id: 'plain', timeFactor: 1, memoryBytes: 45e6, plainConvolutions: true },
  ]);
  assert.deepEqual(p2.order, ['plain', 'products']);
  assert.throws(
    () =>
      planPipeline(
        cost,
        Array.from({ length: 12 }, (_, i) => ({ id: `n${i}`, timeFactor: 1 })),
      ),
    /only 9 valid cut points \(10 nodes at most\)/,
  );
});

const cap = (calibrationMs: number, extra: Partial<Capabilities> = {}): Capabilities => ({
  backend: 'wasm',
  calibrationMs,
  calibrationCpuMs: 20,
  slowdown: 1,
  cores: 2,
  freeMemoryBytes: 8e9,
  totalMemoryBytes: 16e9,
  host: 'h1',
  ...extra,
});

test('node figures: from calibrations (noise within 5% merged), from --speeds, per-node options, measured links, and re-measured', () => {
  const profile = { backend: 'wasm', calibration: { version: 1, calibrationMs: 20, calibrationCpuMs: 20 } };
  const none = { speeds: [], memoryMb: [], bandwidthMbps: [], latencyMs: [] };
  const caps = new Map([
    ['a', cap(20)],
    ['b', cap(40, { slowdown: 2 })],
    ['c', cap(20.6, { plainConvolutions: true })],
  ]);
  const nodes = planNodes(['a', 'b', 'c'], none, profile, caps);
  assert.deepEqual(
    nodes.map((n) => n.plainConvolutions),
    [undefined, undefined, true],
    "a node's plain convolutions, from its capabilities",
  );
  assert.equal(nodes[1].timeFactor, 2);
  assert.equal(nodes[0].timeFactor, nodes[2].timeFactor, 'a and c within 5%: taken as equal');
  assert.equal(nodes[0].memoryBytes, 8e9 * MEMORY_PLANNED_SHARE, 'a share of the free memory it reported');
  assert.equal(nodes[0].host, 'h1');
  const given = planNodes(['a', 'b'], { ...none, speeds: [1, 0.25], memoryMb: [512], bandwidthMbps: [100, 0], latencyMs: [5] }, profile);
  assert.deepEqual(
    given.map((n) => [n.timeFactor, n.memoryBytes, n.bandwidthMbps, n.latencyMs]),
    [
      [1, 512e6, 100, 5],
      [4, 512e6, undefined, 5],
    ],
  );
  // a link the node measured counts where --bandwidth says nothing; a loopback's (>= 1000 Mbit/s) does not; given wins
  const linked = new Map([
    ['a', cap(20, { linkMbps: 19.4, linkRttMs: 0.7 })],
    ['b', cap(20, { linkMbps: 2440, linkRttMs: 0.5 })],
  ]);
  assert.deepEqual(
    planNodes(['a', 'b'], none, profile, linked).map((n) => n.bandwidthMbps),
    [19.4, undefined],
  );
  assert.deepEqual(
    planNodes(['a', 'b'], { ...none, bandwidthMbps: [100, 0] }, profile, linked).map((n) => n.bandwidthMbps),
    [100, undefined],
  );
  assert.throws(() => planNodes(['a', 'b', 'c'], { ...none, speeds: [1, 2] }, profile), /planner.speeds has 2 values for 3 nodes/);
  assert.throws(() => planNodes(['a'], { ...none, speeds: [0] }, profile), /speeds must be positive/);
  assert.throws(() => planNodes(['z'], none, profile, caps), /no speed for node z: it has not reported a calibration/);
  const re = remeasuredNodes(given, [{ node: 'b', predictedMs: 100, measuredMs: 150 }]);
  assert.equal(re[1].timeFactor, 6);
  assert.equal(re[0].timeFactor, 1);
});

test('profile cache: measured once, then read back by model hash and backend; a stale or corrupt file is measured again', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'defer-prof-'));
  const flat = await loadFlatModel('tiny');
  const opts = { modelSpec: 'tiny', backend: 'wasm', cacheDir: dir, progress: () => undefined };
  const first = await getProfile(flat, opts);
  assert.equal(first.cached, false);
  assert.match(first.path, /tiny\.profile\.wasm\.[0-9a-f]{16}\.json$/);
  assert.equal(first.profile.segments.length, flat.validCutNames().length + 1);
  assert.ok(first.profile.segments.every((s) => s.ms > 0 && s.output.lz4.bytes > 0));
  const second = await getProfile(flat, opts);
  assert.equal(second.cached, true);
  assert.deepEqual(second.profile.layerMs, first.profile.layerMs);
  // another seed is another model: another file
  const other = await loadFlatModel('tiny', 2);
  const third = await getProfile(other, opts);
  assert.equal(third.cached, false);
  assert.notEqual(third.path, first.path);
  writeFileSync(first.path, '{ not json');
  assert.equal((await getProfile(flat, opts)).cached, false);
  assert.equal((await getProfile(flat, { ...opts, refresh: true })).cached, false);
  assert.equal(readdirSync(dir).filter((f) => f.endsWith('.tmp')).length, 0);
  // the cost model built from it has a cost at every valid cut
  const cost = costModelOf(flat, first.profile);
  assert.ok(cost.validCuts.every((i) => cost.segmentMs[i] > 0 && cost.encodeMs![i] > 0));
  flat.dispose();
  other.dispose();
});

test('precision auto: lossless where the link carries it within the slowest stage, else the most accurate precision that fits, within the accuracy budget', () => {
  // 3 stages, two inner hops; lossless 1 MB, float16 0.5 MB, int8 0.25 MB at each
  const m = (hop: number, f16: number, i8: number): HopMeasure[] => [
    { hop, after: `c${hop}`, precision: 'lossless', bytes: 1_000_000, frames: 100, top1Agreement: 1, maxAbsDiff: 0 },
    { hop, after: `c${hop}`, precision: 'float16', bytes: 500_000, frames: 100, top1Agreement: f16, maxAbsDiff: 1e-4 },
    { hop, after: `c${hop}`, precision: 'int8', bytes: 250_000, frames: 100, top1Agreement: i8, maxAbsDiff: 1e-2 },
  ];
  const measures = [...m(1, 1, 0.997), ...m(2, 1, 0.996)];
  const choose = (mbps: (number | undefined)[], bottleneckMs: number, maxTop1Loss = 0.005) => choosePrecisions({ stages: 3, measures, linkMbps: (h) => mbps[h - 1], bottleneckMs, maxTop1Loss });
  // 1 MB at 100 Mbit/s is 80 ms: within a 100 ms stage, lossless; no bandwidth known: lossless
  assert.deepEqual(choose([100, undefined], 100).precision, ['lossless', 'lossless', 'lossless', 'lossless']);
  // at 50 Mbit/s lossless takes 160 ms, float16 80 ms: float16 fits, and loses nothing
  const half = choose([50, 50], 100);
  assert.deepEqual(half.precision, ['lossless', 'float16', 'float16', 'lossless']);
  assert.match(half.hops[0].reason, /lossless would take 160\.0 ms per frame at 50 Mbit\/s, over the slowest stage's 100\.0 ms; float16 takes 80\.0 ms/);
  // at 20 Mbit/s only int8 fits (100 ms); the first int8 hop spends 0.3% of the 0.5% budget, the second would exceed it: float16 (the smallest within budget)
  assert.deepEqual(choose([20, 20], 100).precision, ['lossless', 'int8', 'float16', 'lossless']);
  // a larger budget takes int8 on both; a zero budget only what loses nothing
  assert.deepEqual(choose([20, 20], 100, 0.01).precision, ['lossless', 'int8', 'int8', 'lossless']);
  assert.deepEqual(choose([20, 20], 100, 0).precision, ['lossless', 'float16', 'float16', 'lossless']);
  // when no lossy precision is within the budget, the hop stays lossless and says why
  const poor = choosePrecisions({ stages: 2, measures: m(1, 0.9, 0.8), linkMbps: () => 10, bottleneckMs: 50, maxTop1Loss: 0.005 });
  assert.deepEqual(poor.precision, ['lossless', 'lossless', 'lossless']);
  assert.match(poor.hops[0].reason, /no lossy precision is within the accuracy budget \(best: float16, top-1 agreement 90\.0% on 100 frames\)/);
});
