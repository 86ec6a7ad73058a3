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
import { initEngine } from '../../lib/model/engine.js';
import { loadFlatModel } from '../../lib/model/model-source.js';
import { prng } from '../../lib/model/zoo.js';
import { type CostModel, evaluateSplit, type PlanNode, planPipeline } from '../../lib/planning/optimiser.js';
import { costModelOf, planNodes, remeasuredNodes } from '../../lib/planning/plan-inputs.js';
import { getProfile } from '../../lib/planning/profile-cache.js';
import type { Capabilities } from '../../lib/protocol/index.js';

before(async () => {
  setLogLevel('warn');
  await initEngine('wasm');
});

function randomCost(rnd: () => number, layers: number): CostModel {
  const validCuts = Array.from({ length: layers - 1 }, (_, i) => i).filter(() => rnd() < 0.7);
  const segmentMs = Array.from({ length: layers }, () => 0);
  // segments end at the valid cuts and the last layer, as in a profile
  for (const i of [...validCuts, layers - 1]) segmentMs[i] = Math.round(rnd() * 100) / 10;
  return {
    layerNames: Array.from({ length: layers }, (_, i) => `l${i}`),
    segmentMs,
    validCuts,
    outputBytes: Array.from({ length: layers }, () => Math.round(rnd() * 2e6)),
    weightBytes: Array.from({ length: layers }, () => Math.round(rnd() * 5e6)),
    inputBytes: Math.round(rnd() * 1e6),
    encodeMs: Array.from({ length: layers }, () => rnd()),
    decodeMs: Array.from({ length: layers }, () => rnd()),
    inputDecodeMs: rnd(),
  };
}

function randomNodes(rnd: () => number, k: number, withMemory: boolean): PlanNode[] {
  return Array.from({ length: k }, (_, i) => ({
    id: `n${i}`,
    timeFactor: [0.5, 1, 1, 2, 3][Math.floor(rnd() * 5)],
    bandwidthMbps: rnd() < 0.5 ? undefined : [10, 100, 1000][Math.floor(rnd() * 3)],
    latencyMs: Math.floor(rnd() * 10),
    memoryBytes: withMemory && rnd() < 0.5 ? Math.round(rnd() * 40e6) : undefined,
  }));
}

function* combinations(items: number[], k: number, start = 0, acc: number[] = []): Generator<number[]> {
  if (acc.length === k) {
    yield [...acc];
    return;
  }
  for (let i = start; i < items.length; i++) {
    acc.push(items[i]);
    yield* combinations(items, k, i + 1, acc);
    acc.pop();
  }
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
    { id: 'small', timeFactor: 1, memoryBytes: 1e6 },
  ]);
  assert.deepEqual(p.order, ['small', 'big']);
  assert.ok(p.stages[0].memoryBytes <= 1e6);
  assert.throws(
    () =>
      planPipeline(cost, [
        { id: 'x', timeFactor: 1, memoryBytes: 1e6 },
        { id: 'y', timeFactor: 1, memoryBytes: 1e6 },
      ]),
    (e: unknown) => e instanceof DeferError && /no split of the model fits the nodes' memory \(x: 1 MB, y: 1 MB\).*about 60 MB/.test(e.message),
  );
  assert.throws(() => planPipeline(cost, [{ id: 'x', timeFactor: 0 }]), /speed must be a positive number/);
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

test('node figures: from calibrations (noise within 5% merged), from --speeds, per-node options, and re-measured', () => {
  const profile = { backend: 'wasm', calibration: { version: 1, calibrationMs: 20, calibrationCpuMs: 20 } };
  const none = { speeds: [], memoryMb: [], bandwidthMbps: [], latencyMs: [] };
  const caps = new Map([
    ['a', cap(20)],
    ['b', cap(40, { slowdown: 2 })],
    ['c', cap(20.6)],
  ]);
  const nodes = planNodes(['a', 'b', 'c'], none, profile, caps);
  assert.equal(nodes[1].timeFactor, 2);
  assert.equal(nodes[0].timeFactor, nodes[2].timeFactor, 'a and c within 5%: taken as equal');
  assert.equal(nodes[0].memoryBytes, 8e9);
  assert.equal(nodes[0].host, 'h1');
  const given = planNodes(['a', 'b'], { ...none, speeds: [1, 0.25], memoryMb: [512], bandwidthMbps: [100, 0], latencyMs: [5] }, profile);
  assert.deepEqual(
    given.map((n) => [n.timeFactor, n.memoryBytes, n.bandwidthMbps, n.latencyMs]),
    [
      [1, 512e6, 100, 5],
      [4, 512e6, undefined, 5],
    ],
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
