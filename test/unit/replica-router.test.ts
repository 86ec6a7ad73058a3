import assert from 'node:assert/strict';
import test from 'node:test';
import { PROBE_EVERY, ReplicaRouter, type ReplicaTarget } from '../../dispatcher/chain/replica-router.js';

const replica = (node: string, workers = 1): ReplicaTarget => ({ node, topic: `defer/p/stage/0/in/${node}`, workers });

/**
 * Frames through one replicated stage, `window` in flight, as the frame stream sends them: each replica serves
 * its frames in turn on `workers` engines taking `ms[node]` each; an answered frame releases its route and the
 * next frame is routed. Returns how many frames each node served and when the last was done (ms).
 */
function simulate(stage: ReplicaTarget[], ms: Record<string, number>, frames: number, window = 8): { served: Record<string, number>; endMs: number } {
  const router = new ReplicaRouter();
  const engines = new Map(stage.map((r) => [r.node, Array<number>(r.workers).fill(0)]));
  const done: { at: number; node: string }[] = [];
  const served: Record<string, number> = Object.fromEntries(stage.map((r) => [r.node, 0]));
  let now = 0;
  let sent = 0;
  const send = () => {
    const [r] = router.route([stage]);
    const free = engines.get(r.node)!;
    const i = free.indexOf(Math.min(...free));
    free[i] = Math.max(free[i], now) + ms[r.node];
    done.push({ at: free[i], node: r.node });
    sent++;
  };
  while (sent < Math.min(window, frames)) send();
  while (done.length) {
    done.sort((a, b) => a.at - b.at);
    const d = done.shift()!;
    now = d.at;
    served[d.node]++;
    router.measured(d.node, ms[d.node]);
    router.release([d.node]);
    if (sent < frames) send();
  }
  return { served, endMs: now };
}

test('replica router: frames in proportion to measured speed (a replica 3x slower gets about a quarter), engines counted, held frames released', () => {
  const { served, endMs } = simulate([replica('fast'), replica('slow')], { fast: 10, slow: 30 }, 400);
  assert.equal(served.fast + served.slow, 400);
  const share = served.slow / 400;
  assert.ok(share > 0.2 && share < 0.3, `slow replica served ${served.slow} of 400`);
  // the ideal for rates 1/10 + 1/30 per ms: 400 / (4/30) = 3000 ms; round robin would take 200 x 30 = 6000
  assert.ok(endMs < 3000 * 1.1, `done at ${endMs} ms`);
  // a node with two engines, each as fast as the other node's one: about two thirds of the frames
  const two = simulate([replica('a', 2), replica('b', 1)], { a: 10, b: 10 }, 300).served;
  assert.ok(two.a / 300 > 0.6 && two.a / 300 < 0.73, JSON.stringify(two));
  // equal replicas, nothing measured yet: turns
  const router = new ReplicaRouter();
  const stage = [replica('x'), replica('y')];
  assert.deepEqual(
    [0, 1, 2, 3].map(() => router.route([stage])[0].node),
    ['x', 'y', 'x', 'y'],
  );
  assert.deepEqual([router.holds('x'), router.holds('y')], [2, 2]);
  router.release(['x', 'x', 'x']);
  assert.equal(router.holds('x'), 0, 'never below nothing held');
});

test('replica router: a replica measured very slow once is probed again after PROBE_EVERY routes, when it holds no frame', () => {
  const router = new ReplicaRouter();
  const stage = [replica('cold'), replica('warm')];
  // both routed once, the cold one measured 100x slower (its engine was cold), both answered
  router.route([stage]);
  router.route([stage]);
  router.measured('cold', 1000);
  router.measured('warm', 10);
  router.release(['cold', 'warm']);
  const picks: string[] = [];
  for (let i = 0; i < PROBE_EVERY + 2; i++) {
    const [r] = router.route([stage]);
    picks.push(r.node);
    router.release([r.node]);
  }
  // released at once, the warm one always waits less; the cold one is sent one frame to be measured again
  assert.equal(picks.filter((n) => n === 'cold').length, 1, picks.join(' '));
  assert.ok(picks.indexOf('cold') >= PROBE_EVERY - 2, picks.join(' '));
  // a multi-stage route picks per stage and holds every node on it
  const r2 = new ReplicaRouter();
  const route = r2.route([[replica('s0')], [replica('a'), replica('b')]]).map((r) => r.node);
  assert.deepEqual(route, ['s0', 'a']);
  assert.deepEqual([r2.holds('s0'), r2.holds('a'), r2.holds('b')], [1, 1, 0]);
});
