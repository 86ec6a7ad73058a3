/** `defer plan --auto` as a process. */
/**
 * The planner: exact against brute force, memory and link constraints, node
 * speeds from calibrations, the profile cache, and `defer plan --auto`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { promisify } from 'node:util';
import { setLogLevel } from '../../lib/core/log.js';
import { initEngine } from '../../lib/model/engine.js';
import { type CostModel, evaluateSplit, type PlanNode } from '../../lib/planning/optimiser.js';
import { CLI, ROOT } from '../helpers/common.js';

const run = promisify(execFile);

before(async () => {
  setLogLevel('warn');
  await initEngine('wasm');
});

function _randomCost(rnd: () => number, layers: number): CostModel {
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

function _randomNodes(rnd: () => number, k: number, withMemory: boolean): PlanNode[] {
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
function _bruteForce(cost: CostModel, nodes: PlanNode[], orders: boolean): number {
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

test('defer plan --auto: speeds from the command line, a table and JSON; bad input exits 2 with the reason', { timeout: 120_000 }, async () => {
  const cache = mkdtempSync(join(tmpdir(), 'defer-plan-'));
  const env = { ...process.env, DEFER_PLANNER_CACHE_DIR: cache };
  const { stdout } = await run(process.execPath, [CLI, 'plan', '--model', 'tiny', '--auto', '--nodes', 'fast,slow', '--speeds', '1,0.25', '--json', '--log-level', 'warn'], { cwd: ROOT, env });
  const r = JSON.parse(stdout) as { cuts: string[]; stages: { node: string; computeMs: number; layerCount: number }[]; predictedThroughputFps: number; nodes: { id: string; speed: number }[] };
  assert.equal(r.stages.length, 2);
  assert.deepEqual(
    r.nodes.map((n) => n.speed),
    [1, 0.25],
  );
  assert.ok(r.predictedThroughputFps > 0);
  const slow = r.stages.find((s) => s.node === 'slow')!;
  const fast = r.stages.find((s) => s.node === 'fast')!;
  assert.ok(slow.computeMs / 4 < fast.computeMs, 'the slow node has less of the model');
  const table = await run(process.execPath, [CLI, 'plan', '--model', 'tiny', '--auto', '--speeds', '1,1', '--bandwidth', '100', '--latency', '2', '--log-level', 'warn'], { cwd: ROOT, env });
  assert.match(table.stdout, /profile from cache/);
  assert.match(table.stdout, /stage\s+node\s+layers\s+count\s+params\s+weight MB\s+predicted ms\s+output KiB\s+transfer ms/);
  assert.match(table.stdout, /predicted throughput: [\d.]+ frames\/s \(bottleneck: /);
  for (const [args, re] of [
    [['--auto'], /needs the nodes: --nodes n1,n2/],
    [['--auto', '--speeds', '1,x'], /planner.speeds.*must be a list of numbers/],
    [['--auto', '--nodes', 'a,b', '--speeds', '1,1,1'], /planner.speeds has 3 values for 2 nodes/],
  ] as [string[], RegExp][]) {
    const err = await run(process.execPath, [CLI, 'plan', '--model', 'tiny', ...args], { cwd: ROOT, env }).then(
      () => assert.fail(`${args.join(' ')} should fail`),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(err.code, 2, args.join(' '));
    assert.match(err.stderr, re);
  }
});
