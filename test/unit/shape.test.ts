/**
 * The shape planner (stages, cuts, replicas, engines): exact against brute force over every shape and every set
 * of cuts, and the shapes it picks where the answer is known.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { prng } from '../../lib/core/prng.js';
import { type CostModel, CostTable, evaluate, RELAY_PROCESS, RELAY_PROCESS_CORES } from '../../lib/planning/cost-model.js';
import { engineCap, evaluateShape, planShape, type ShapeMember, type ShapeNode, shapeLine } from '../../lib/planning/shape.js';
import { combinations, randomCost } from '../helpers/brute-force.js';
import { planInWorker } from '../helpers/plan-in-worker.js';

function randomNodes(rnd: () => number, k: number): ShapeNode[] {
  const hosts = ['h1', 'h1', 'h2', undefined];
  return Array.from({ length: k }, (_, i) => {
    const host = hosts[Math.floor(rnd() * hosts.length)];
    return {
      id: `n${i}`,
      timeFactor: [0.5, 1, 1, 2][Math.floor(rnd() * 4)],
      cpuFactor: rnd() < 0.3 ? 0.5 : undefined,
      bandwidthMbps: rnd() < 0.6 ? undefined : [10, 100, 1000][Math.floor(rnd() * 3)],
      memoryBytes: rnd() < 0.3 ? Math.round(rnd() * 60e6) : undefined,
      host,
      cores: host ? (host === 'h1' ? 2 : 3) : undefined,
      maxWorkers: rnd() < 0.5 ? 1 : 2,
    };
  });
}

/** Every node idle or on one of S stages with 1..cap engines, hosts' cores respected; every stage served. */
function* everyShape(nodes: ShapeNode[], S: number): Generator<{ members: ShapeMember[] }[]> {
  const choice: [number, number][] = [];
  function* rec(i: number): Generator<{ members: ShapeMember[] }[]> {
    if (i === nodes.length) {
      const stages = Array.from({ length: S }, () => ({ members: [] as ShapeMember[] }));
      choice.forEach(([s, w], j) => {
        if (s >= 0) stages[s].members.push({ node: nodes[j].id, workers: w });
      });
      const hostUse = new Map<string, number>();
      choice.forEach(([s, w], j) => {
        const h = nodes[j].host;
        if (s >= 0 && h) hostUse.set(h, (hostUse.get(h) ?? 0) + w);
      });
      const coresOk = [...hostUse].every(([h, u]) => u <= Math.min(...nodes.filter((n) => n.host === h).map((n) => n.cores ?? 1)));
      if (coresOk && stages.every((s) => s.members.length > 0)) yield stages;
      return;
    }
    choice.push([-1, 0]);
    yield* rec(i + 1);
    choice.pop();
    for (let s = 0; s < S; s++)
      for (let w = 1; w <= engineCap(nodes[i]); w++) {
        choice.push([s, w]);
        yield* rec(i + 1);
        choice.pop();
      }
  }
  yield* rec(0);
}

function bruteForce(cost: CostModel, nodes: ShapeNode[], relay?: { host: string; msPerMB: number; msPerMessage: number }): number {
  let best = Infinity;
  for (let S = 1; S <= Math.min(nodes.length, cost.validCuts.length + 1); S++) {
    for (const combo of combinations(cost.validCuts, S - 1)) {
      const cuts = combo.map((i) => cost.layerNames[i]);
      for (const shape of everyShape(nodes, S)) best = Math.min(best, evaluateShape(cost, nodes, shape, cuts, { relay }).bottleneckMs);
    }
  }
  return best;
}

test('shape planner is exact: random costs, speeds, engines, links, memory and shared hosts match brute force over every shape and cut', () => {
  const rnd = prng(7);
  let cases = 0;
  let replicated = 0;
  let chains = 0;
  let relayBound = 0;
  for (let trial = 0; trial < 240; trial++) {
    const cost = randomCost(rnd, 3 + Math.floor(rnd() * 5), 0.1);
    let nodes = randomNodes(rnd, 1 + Math.floor(rnd() * 3));
    // a third of the cases: every node on one host whose cores the stages share (the stages' CPU then couples the cuts)
    if (trial % 3 === 1) nodes = nodes.map((n) => ({ ...n, host: 'h1', cores: 2, bandwidthMbps: undefined }));
    if (trial % 3 === 1) cost.encodeMs = cost.encodeMs!.map((x) => 10 * x);
    const relay = trial % 3 !== 2 ? { host: 'h1', msPerMB: 2, msPerMessage: 0.3 } : undefined;
    const want = bruteForce(cost, nodes, relay);
    if (want === Infinity) {
      assert.throws(() => planShape(cost, nodes, { relay }), /fits the nodes' memory/);
      continue;
    }
    const got = planShape(cost, nodes, { relay });
    assert.ok(Math.abs(got.bottleneckMs - want) <= 1e-9 * Math.max(1, want), `trial ${trial}: planner ${got.bottleneckMs} (${shapeLine(got.stages)}), brute force ${want}`);
    // what it reports is what the evaluation of that shape says
    const again = evaluateShape(cost, nodes, got.stages, got.cuts, { relay });
    assert.ok(Math.abs(again.bottleneckMs - got.bottleneckMs) <= 1e-9 * Math.max(1, want));
    if (got.stages.some((s) => s.members.length > 1)) replicated++;
    if (got.stages.length > 1) chains++;
    if (got.bottleneck === RELAY_PROCESS) relayBound++;
    cases++;
  }
  assert.ok(cases > 100 && replicated > 5 && chains > 5 && relayBound > 2, `${cases} cases, ${replicated} with replicas, ${chains} with several stages, ${relayBound} bound by the relay's process`);
});

test('shape planner is exact for interchangeable nodes with several engines each (the search spreads engines evenly and prunes): brute force agrees', () => {
  const rnd = prng(11);
  let cases = 0;
  for (let trial = 0; trial < 120; trial++) {
    const cost = randomCost(rnd, 3 + Math.floor(rnd() * 4), 0.1);
    const [proto] = randomNodes(rnd, 1);
    const k = 2 + Math.floor(rnd() * 2);
    const sameHost = trial % 2 === 0;
    const nodes: ShapeNode[] = Array.from({ length: k }, (_, i) => ({
      ...proto,
      id: `n${i}`,
      maxWorkers: 1 + (trial % 3),
      host: sameHost ? 'h1' : `own${i}`,
      cores: sameHost ? 2 + (trial % 4) : 1 + (trial % 3),
      // half the cases unconstrained (the search then tries only the fewest nodes for a stage's engines)
      ...(trial % 4 < 2 ? { memoryBytes: undefined, bandwidthMbps: undefined } : {}),
    }));
    const relay = trial % 3 !== 2 ? { host: 'h1', msPerMB: 2, msPerMessage: 0.3 } : undefined;
    const want = bruteForce(cost, nodes, relay);
    if (want === Infinity) continue;
    const got = planShape(cost, nodes, { relay });
    assert.ok(Math.abs(got.bottleneckMs - want) <= 1e-9 * Math.max(1, want), `trial ${trial}: planner ${got.bottleneckMs} (${shapeLine(got.stages)}), brute force ${want}`);
    cases++;
  }
  assert.ok(cases > 80, `${cases} cases`);
});

test('cutting off partial shapes by their bounds loses nothing: fleets of 4-5 nodes, with and without pruning', () => {
  const rnd = prng(23);
  let pruned = 0;
  for (let trial = 0; trial < 60; trial++) {
    const cost = randomCost(rnd, 6 + Math.floor(rnd() * 10), 0.5);
    const whole = new CostTable(cost).memory(0, cost.validCuts.length + 1);
    const nodes = randomNodes(rnd, 4 + (trial % 2)).map((n, i) => ({
      ...n,
      maxWorkers: 1 + Math.floor(rnd() * 3),
      // a third: too little memory for the whole model on one node, so the best shape has several stages
      memoryBytes: trial % 3 === 0 ? whole * (0.55 + 0.5 * rnd()) : n.memoryBytes,
      ...(trial % 2 ? { host: 'h1', cores: 4 + (i % 2), bandwidthMbps: undefined } : {}),
    }));
    const relay = { host: 'h1', msPerMB: 2, msPerMessage: 0.3 };
    let want: number;
    try {
      want = planShape(cost, nodes, { relay, prune: false }).bottleneckMs;
    } catch {
      assert.throws(() => planShape(cost, nodes, { relay }), /fits the nodes' memory/);
      continue;
    }
    const got = planShape(cost, nodes, { relay });
    const all = planShape(cost, nodes, { relay, prune: false });
    assert.ok(Math.abs(got.bottleneckMs - want) <= 1e-9 * Math.max(1, want), `trial ${trial}: pruned ${got.bottleneckMs} (${shapeLine(got.stages)}), every shape ${want} (${shapeLine(all.stages)})`);
    if (got.shapesTried < all.shapesTried) pruned++;
  }
  assert.ok(pruned > 30, `the bounds cut off shapes in ${pruned} of 60 cases`);
});

test('shape planner scales to fleets: 8 and 16 nodes with many cores each are searched in a few thousand shapes', () => {
  const cost = randomCost(prng(5), 40, 0.1);
  const relay = { host: 'vm', msPerMB: 1, msPerMessage: 0.2 };
  // the bench's 16-core machine: every node a process on it
  for (const n of [8, 16]) {
    const local: ShapeNode[] = Array.from({ length: n }, (_, i) => ({ id: `n${i + 1}`, timeFactor: 1, host: 'vm', cores: 16, maxWorkers: 16 }));
    const p = planShape(cost, local, { relay });
    assert.ok(p.shapesTried < 1000, `${n} nodes on one host: ${p.shapesTried} shapes`);
    assert.equal(p.stages.reduce((s, st) => s + st.members.reduce((x, m) => x + m.workers, 0), 0) <= 16, true);
  }
  // devices of their own (4 cores each), of three speeds: the whole model on each, every core used
  for (const n of [8, 16]) {
    const fleet: ShapeNode[] = Array.from({ length: n }, (_, i) => ({ id: `d${i + 1}`, timeFactor: 1 + (i % 3) / 2, host: `pi${i}`, cores: 4, maxWorkers: 4 }));
    const p = planShape(cost, fleet, { relay });
    assert.ok(p.shapesTried < 20_000, `${n} devices: ${p.shapesTried} shapes`);
    assert.equal(p.idle.length, 0);
    assert.ok(p.stages.every((st) => st.members.every((m) => m.workers === 4)));
    assert.equal(p.exhaustive, true);
  }
  // a search past its limit returns the best it found, says so, and gave every stage count its turn
  const tight: ShapeNode[] = Array.from({ length: 4 }, (_, i) => ({ id: `m${i + 1}`, timeFactor: 1 + (i % 3) / 2, host: `pi${i}`, cores: 4, maxWorkers: 4, bandwidthMbps: 100 }));
  const full = planShape(cost, tight, { relay });
  const cut = planShape(cost, tight, { relay, maxShapes: 60 });
  assert.equal(full.exhaustive, true);
  assert.equal(cut.exhaustive, false);
  assert.ok(cut.shapesTried <= 60 && cut.bottleneckMs >= full.bottleneckMs * (1 - 1e-9), `${cut.shapesTried} shapes, ${cut.bottleneckMs} against ${full.bottleneckMs}`);
});

test('eight devices no two alike (speeds and memory): the search skips partial shapes that leave a stage without nodes, so it reaches its budget instead of spinning', {
  timeout: 120_000,
}, async () => {
  // before: with every node its own kind, the search enumerated (1 + 4S)^8 partial shapes for S stages, almost none
  // of them serving every stage, without yielding one: over 10 minutes for this fleet (now well under a second);
  // run in a worker so that a search that does not end fails the test instead of hanging it
  const fleet: ShapeNode[] = Array.from({ length: 8 }, (_, i) => ({ id: `m${i + 1}`, timeFactor: 1 + (i % 3) / 2, host: `pi${i}`, cores: 4, maxWorkers: 4, memoryBytes: (60 + 20 * (i % 4)) * 1e6 }));
  const p = await planInWorker({ nodes: fleet, seed: 5, layers: 40, options: { relay: { host: 'vm', msPerMB: 1, msPerMessage: 0.2 }, maxShapes: 4000 } }, 60_000);
  assert.equal(p.exhaustive, false);
  assert.ok(p.shapesTried <= 4000 && Number.isFinite(p.bottleneckMs), `${p.shapesTried} shapes, ${p.bottleneckMs} ms`);
  assert.ok(p.stageMembers.every((n) => n > 0));
});

/** A light model: 20 ms of compute, 600 KB in, small out; the codec costs of a cut matter. */
function lightModel(): CostModel {
  const layers = 6;
  return {
    layerNames: ['a', 'b', 'c', 'd', 'e', 'f'],
    segmentMs: [4, 4, 4, 4, 2, 2],
    validCuts: [0, 1, 2, 3, 4],
    outputBytes: [800e3, 400e3, 200e3, 100e3, 50e3, 4e3],
    weightBytes: Array.from({ length: layers }, () => 2e6),
    inputBytes: 600e3,
    encodeMs: [2, 1.2, 0.8, 0.5, 0.3, 0.1],
    decodeMs: [1.5, 1, 0.6, 0.4, 0.2, 0.1],
    inputDecodeMs: 1,
  };
}

test('shapes where the answer is known: replicas for a light model on one host, a chain for memory, idle nodes beyond the cores, forced replicas', () => {
  const cost = lightModel();
  const local = (n: number, cores = 2, maxWorkers = 1): ShapeNode[] => Array.from({ length: n }, (_, i) => ({ id: `n${i + 1}`, timeFactor: 1, host: 'vm', cores, maxWorkers }));
  const relay = { host: 'vm', msPerMB: 1, msPerMessage: 0.2 };
  // 2 nodes on a 2-core host: the whole model twice beats any chain (no codec between stages)
  const two = planShape(cost, local(2), { relay });
  assert.equal(shapeLine(two.stages), 'n1+n2');
  // 4 nodes on the same 2 cores: two engines at most, the others idle
  const four = planShape(cost, local(4), { relay });
  assert.equal(shapeLine(four.stages), 'n1+n2');
  assert.deepEqual(four.idle, ['n3', 'n4']);
  assert.ok(Math.abs(four.bottleneckMs - two.bottleneckMs) < 1e-9);
  // one node with 2 workers allowed does as well as two nodes (a tie: fewest nodes)
  const one = planShape(cost, local(1, 2, 2), { relay });
  assert.equal(shapeLine(one.stages), 'n1x2');
  // nodes on their own hosts, each with 1 core, too little memory for the whole model: a chain
  const small: ShapeNode[] = ['a', 'b'].map((id) => ({ id, timeFactor: 1, host: id, cores: 1, memoryBytes: 33e6 }));
  const chain = planShape(cost, small);
  assert.equal(chain.stages.length, 2);
  assert.deepEqual(
    chain.stages.map((s) => s.members.length),
    [1, 1],
  );
  // forced replica counts
  const forced = planShape(cost, local(3, 4), { replicas: [2, 1], relay });
  assert.deepEqual(
    forced.stages.map((s) => s.members.length),
    [2, 1],
  );
  assert.throws(() => planShape(cost, local(2), { replicas: [2, 1] }), /need 3 nodes, but there are 2/);
  assert.throws(() => planShape(cost, local(2), { replicas: [0] }), /whole numbers >= 1/);
  // a node 3x slower gets about a third of a stage's frames next to a normal one
  const mixed: ShapeNode[] = [
    { id: 'fast', timeFactor: 1, host: 'x', cores: 1 },
    { id: 'slow', timeFactor: 3, host: 'y', cores: 1 },
  ];
  const m = planShape(cost, mixed);
  if (m.stages.length === 1) assert.ok(Math.abs(m.stages[0].share.slow - 0.25) < 1e-9, JSON.stringify(m.stages[0].share));
});

test('the broker and dispatcher in one process (defer up): on a many-core host its CPU per frame bounds a light model, and engines beyond it are not added; a broker apart does not', () => {
  const cost = lightModel();
  const host = (maxWorkers: number): ShapeNode[] => [{ id: 'n1', timeFactor: 1, host: 'big', cores: 16, maxWorkers }];
  const busy = 1000 / planShape(cost, host(1)).singleFps;
  // the relay's bound (its CPU per frame over the cores its process keeps busy) of busy / 2.5: 3 engines reach it,
  // 2 do not. Its CPU: 2 messages, the 600 KB input and the 4 KB output at 1 ms per MB.
  const boundMs = busy / 2.5;
  const relayMs = boundMs * RELAY_PROCESS_CORES;
  const relay = { host: 'big', msPerMB: 1, msPerMessage: (relayMs - 0.604) / 2 };
  const p = planShape(cost, host(16), { relay });
  assert.equal(shapeLine(p.stages), 'n1x3', p.bottleneck);
  assert.equal(p.bottleneck, RELAY_PROCESS);
  assert.ok(Math.abs(p.bottleneckMs - boundMs) < 1e-9 && Math.abs(p.relayCpuMs - relayMs) < 1e-9, `${p.bottleneckMs} ms, relay ${p.relayCpuMs} ms`);
  // the host's 16 cores alone would have taken 12 engines: (busy + relay) / 16 is far below busy / 3
  assert.ok((busy + relayMs) / 16 < busy / 3);
  // where the relay runs on another machine than the nodes it still bounds them, and is not charged to their host
  const away = planShape(cost, host(16), { relay: { ...relay, host: 'elsewhere' } });
  assert.equal(shapeLine(away.stages), 'n1x3');
  assert.deepEqual(away.hostLoadMs, []);
  // a broker in a process of its own (defer dispatch): no one process carries all of it, so only the host's cores
  // bound the engines
  const apart = planShape(cost, host(16), { relay: { ...relay, sharedProcess: false } });
  assert.notEqual(apart.bottleneck, RELAY_PROCESS);
  assert.ok(apart.stages[0].members[0].workers > 3, shapeLine(apart.stages));
  // the chain planner's evaluation names the same bound
  const t = new CostTable(cost);
  const ev = evaluate(t, [{ id: 'n1', timeFactor: 1 / 3, host: 'big', cores: 16 }], [0, t.pts.length - 1], {}, relay);
  assert.equal(ev.bottleneck, RELAY_PROCESS);
  assert.ok(Math.abs(ev.bottleneckMs - boundMs) < 1e-9);
  assert.notEqual(evaluate(t, [{ id: 'n1', timeFactor: 1 / 3, host: 'big', cores: 16 }], [0, t.pts.length - 1], {}, { ...relay, sharedProcess: false }).bottleneck, RELAY_PROCESS);
});
