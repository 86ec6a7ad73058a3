/**
 * Node failure, with edge nodes as real child processes (`defer node`) on a
 * real Aedes broker: kill -9 of a node mid-run with a standby, without one
 * (merge), and a frozen node (half-open link: SIGSTOP) caught by its missing
 * heartbeat. Every frame must get exactly one result, equal to the whole
 * model's output here.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { type RunningBroker, startBroker } from '../../broker/broker.js';
import type { FrameResult } from '../../dispatcher/chain/frame-stream.js';
import type { Deployment, DispatcherOptions } from '../../dispatcher/dispatcher.js';
import type { DispatcherEvent } from '../../dispatcher/events.js';
import { type LocalRun, runLocal } from '../../dispatcher/run/measure-run.js';
import { setLogLevel } from '../../lib/core/log.js';
import { initEngine } from '../../lib/model/engine.js';
import type { FlatModel } from '../../lib/model/flat-model.js';
import { loadFlatModel } from '../../lib/model/model-source.js';
import { syntheticFrames } from '../../lib/model/synthetic-frames.js';
import { balancedCuts } from '../../lib/planning/balanced-cuts.js';
import type { RawTensor } from '../../lib/protocol/index.js';
import { eventLines, startNodeProcesses, testDispatcher } from '../helpers/chain.js';
import { sameBits, waitUntil } from '../helpers/common.js';

let broker: RunningBroker;
let flat: FlatModel;
const frames200: RawTensor[] = [];
let local: LocalRun;

before(async () => {
  setLogLevel('error');
  await initEngine('wasm');
  broker = await startBroker({ host: '127.0.0.1', port: 0, maxPacketBytes: 1 << 24 });
  flat = await loadFlatModel('tiny');
  frames200.push(...syntheticFrames(flat.inputShape, 200, 7));
  local = await runLocal(flat, frames200);
});

after(async () => {
  await broker.close();
});

const startNodes = (pipeline: string, ids: string[], slowdown: number) => startNodeProcesses(broker.url, pipeline, ids, slowdown);
const dispatcher = (pipeline: string, lines: DispatcherEvent[], extra: Partial<DispatcherOptions> = {}) => testDispatcher(broker.url, pipeline, lines, extra);

interface Run {
  results: (FrameResult | undefined)[];
  /** performance.now() when each result arrived */
  arrivedAt: number[];
  failures: string[];
}

/** Send every frame; after `at` results, call `hit` once. */
async function stream(d: Deployment, frames: RawTensor[], at: number, hit: () => void): Promise<Run> {
  const results: (FrameResult | undefined)[] = [];
  const arrivedAt: number[] = [];
  const failures: string[] = [];
  let done = 0;
  await Promise.all(
    frames.map((f, i) =>
      d.stream.send(f, 'cam', `f${i}`).then(
        (r) => {
          results[i] = r;
          arrivedAt[i] = performance.now();
          if (++done === at) hit();
        },
        (e: Error) => failures.push(e.message),
      ),
    ),
  );
  return { results, arrivedAt, failures };
}

function assertExact(run: Run, frames: RawTensor[]): void {
  assert.deepEqual(run.failures, []);
  assert.equal(run.results.filter(Boolean).length, frames.length, 'a result for every frame');
  run.results.forEach((r, i) => {
    assert.equal(r!.frame, `f${i}`);
    assert.ok(sameBits(r!.output.data as Float32Array, local.outputs[i]), `frame ${i}: chained output bit-identical to the whole model`);
  });
}

test('kill -9 of the middle node during a 200-frame run, one standby (stages prefetched): every frame answered once, outputs exact; the node comes back as a standby', {
  timeout: 120_000,
}, async (t) => {
  const pipe = 'fo1';
  const procs = startNodes(pipe, ['n1', 'n2', 'n3', 's1'], 8);
  const lines: DispatcherEvent[] = [];
  const d = dispatcher(pipe, lines, { standby: ['s1'] });
  t.after(async () => {
    await d.close();
    await procs.stop();
  });
  await d.connect();
  await d.nodes.waitCapabilities(['n1', 'n2', 'n3', 's1'], 30_000);
  const dep = await d.deploy(flat, ['n1', 'n2', 'n3'], ['block_out', 'conv2']);
  // the standby keeps the three stages in its weight cache, fetched from the broker while idle
  await waitUntil(() => d.nodes.statuses.get('s1')?.prefetched === 3, 30_000);
  assert.deepEqual([d.nodes.statuses.get('s1')?.prefetched, d.nodes.statuses.get('s1')?.prefetchTotal], [3, 3]);
  let killedAt = 0;
  const run = await stream(dep, frames200, 60, () => {
    killedAt = performance.now();
    procs.children.get('n2')!.kill('SIGKILL');
  });
  assertExact(run, frames200);
  assert.ok(killedAt > 0);
  const ev = dep.supervisor!.events;
  assert.equal(ev.length, 1, JSON.stringify(ev));
  assert.deepEqual([ev[0].kind, ev[0].node, ev[0].stage, ev[0].replacement, ev[0].cause], ['standby', 'n2', 1, 's1', 'offline']);
  assert.deepEqual(
    dep.package.stages.map((s) => s.nodeId),
    ['n1', 's1', 'n3'],
  );
  // results went through the standby after the kill; none through n2 after its stage moved
  const viaStandby = run.results.map((r, i) => (r!.hops.some((h) => h.node === 's1') ? run.arrivedAt[i] : Infinity));
  const firstViaStandby = Math.min(...viaStandby);
  assert.ok(Number.isFinite(firstViaStandby), 'some frames went through the standby');
  const killToFirst = firstViaStandby - killedAt;
  const s1 = d.nodes.statuses.get('s1')!;
  assert.equal(s1.weightsFrom, 'cache', 'the standby built the stage from the weights it had prefetched');
  process.stderr.write(
    `# failover: kill -9 n2 to the first result through s1: ${killToFirst.toFixed(0)} ms (repair ${ev[0].repairMs.toFixed(0)} ms, ${ev[0].resent} frames sent again, ${dep.stream.duplicates} duplicate results dropped)\n`,
  );
  assert.ok(
    lines.some((e) => e.type === 'node-failed' && e.node === 'n2' && e.cause === 'offline'),
    eventLines(lines),
  );
  assert.ok(
    lines.some((e) => e.type === 'repair-start' && e.kind === 'standby' && e.standby === 's1'),
    eventLines(lines),
  );

  // n2 restarts: its assignment was cleared, so it joins the standbys instead of its old stage
  procs.start(['n2']);
  await waitUntil(() => d.nodes.statuses.get('n2')?.state === 'online', 30_000);
  assert.equal(d.nodes.statuses.get('n2')?.state, 'online');
  assert.equal(d.nodes.statuses.get('n2')?.deployment, undefined);
  assert.deepEqual(dep.supervisor!.standbys, ['n2']);
  // and the chain still answers, exactly
  const again = await stream(dep, frames200.slice(0, 10), -1, () => undefined);
  assertExact(again, frames200.slice(0, 10));

  // the dispatcher restarts, given the original node list: it adopts the chain as mended (s1 in place of n2)
  await d.close();
  const lines2: DispatcherEvent[] = [];
  const d2 = dispatcher(pipe, lines2, { standby: ['s1'] });
  t.after(() => d2.close());
  await d2.connect();
  const adopted = await d2.adopt(flat, ['n1', 'n2', 'n3'], ['block_out', 'conv2']);
  assert.ok(adopted, eventLines(lines2));
  assert.equal(adopted.id, dep.id);
  assert.deepEqual(
    adopted.package.stages.map((s) => s.nodeId),
    ['n1', 's1', 'n3'],
  );
  assert.ok(
    lines2.some((e) => e.type === 'adopted' && e.chain.join() === 'n1,s1,n3' && JSON.stringify(e.replaced) === JSON.stringify([{ node: 'n2', by: 's1' }])),
    eventLines(lines2),
  );
  assert.deepEqual(adopted.supervisor!.standbys, ['n2'], 'the node s1 replaced is a standby');
  const third = await stream(adopted, frames200.slice(0, 10), -1, () => undefined);
  assertExact(third, frames200.slice(0, 10));
});

test('kill -9 of a node with no standby: its stage is merged into the lighter neighbour, every frame answered once; the node comes back and the chain grows back', { timeout: 120_000 }, async (t) => {
  const pipe = 'fo2';
  const procs = startNodes(pipe, ['m1', 'm2', 'm3'], 8);
  const lines: DispatcherEvent[] = [];
  const d = dispatcher(pipe, lines, { restoreAfterMs: 1000 });
  t.after(async () => {
    await d.close();
    await procs.stop();
  });
  await d.connect();
  await d.nodes.waitCapabilities(['m1', 'm2', 'm3'], 30_000);
  const dep = await d.deploy(flat, ['m1', 'm2', 'm3'], ['block_out', 'conv2']);
  const first = dep.id;
  const frames = frames200.slice(0, 80);
  const run = await stream(dep, frames, 20, () => procs.children.get('m2')!.kill('SIGKILL'));
  assertExact(run, frames);
  const ev = dep.supervisor!.events;
  assert.equal(ev.length, 1, JSON.stringify(ev));
  assert.equal(ev[0].kind, 'merge');
  assert.notEqual(dep.id, first, 'a new deployment');
  assert.equal(dep.package.stages.length, 2);
  assert.deepEqual(
    dep.package.stages.map((s) => s.nodeId),
    ['m1', 'm3'],
  );
  assert.ok(
    lines.some((e) => e.type === 'repair-start' && e.kind === 'merge' && e.mergedInto && ['m1', 'm3'].includes(e.mergedInto.node) && e.mergedInto.stage !== 1),
    eventLines(lines),
  );
  // m2 comes back: a standby; once it has been up and idle for restoreAfterMs, the chain grows back to 3 stages
  procs.start(['m2']);
  await waitUntil(() => dep.supervisor!.events.length >= 2, 30_000);
  assert.equal(dep.supervisor!.events[1]?.kind, 'restore', JSON.stringify(dep.supervisor!.events) + eventLines(lines));
  assert.deepEqual(
    dep.package.stages.map((s) => s.nodeId),
    ['m1', 'm2', 'm3'],
  );
  assert.deepEqual(
    dep.package.stages.slice(0, -1).map((s) => s.span.last),
    ['block_out', 'conv2'],
  );
  const again = await stream(dep, frames200.slice(0, 20), -1, () => undefined);
  assertExact(again, frames200.slice(0, 20));
  assert.ok(again.results.every((r) => r!.hops.length === 3 && r!.hops[1].node === 'm2'));
});

test('a frozen node (SIGSTOP: its link stays open) is caught by its missing heartbeat; a standby without prefetch takes its retained weights; SIGCONT: it stands by', {
  timeout: 120_000,
}, async (t) => {
  const pipe = 'fo3';
  const procs = startNodes(pipe, ['h1', 'h2', 'hs'], 4);
  const lines: DispatcherEvent[] = [];
  // no prefetch: the standby takes the weights retained under the frozen node's topics
  const d = dispatcher(pipe, lines, { standby: ['hs'], heartbeatTimeoutMs: 1500, prefetchStandby: false });
  t.after(async () => {
    await d.close();
    procs.children.get('h2')?.kill('SIGCONT');
    await procs.stop();
  });
  await d.connect();
  await d.nodes.waitCapabilities(['h1', 'h2', 'hs'], 30_000);
  const dep = await d.deploy(flat, ['h1', 'h2'], ['pool']);
  const frames = frames200.slice(0, 60);
  const run = await stream(dep, frames, 15, () => procs.children.get('h2')!.kill('SIGSTOP'));
  assertExact(run, frames);
  const ev = dep.supervisor!.events;
  assert.equal(ev.length, 1, JSON.stringify(ev));
  assert.deepEqual([ev[0].kind, ev[0].node, ev[0].replacement], ['standby', 'h2', 'hs']);
  assert.match(ev[0].cause, /no heartbeat for 1500 ms/);
  assert.equal(d.nodes.statuses.get('hs')?.weightsFrom, 'broker', 'the standby built the stage from the retained weights of h2');
  procs.children.get('h2')!.kill('SIGCONT');
  // the thawed node reads its cleared assignment and stands by
  await waitUntil(() => d.nodes.statuses.get('h2')?.deployment === undefined, 30_000);
  assert.equal(d.nodes.statuses.get('h2')?.state, 'online');
  assert.equal(d.nodes.statuses.get('h2')?.deployment, undefined);
});

test('onNodeFailure replan: the model is cut again over the nodes left (chooseCuts); off: the frames fail with the reason', { timeout: 120_000 }, async (t) => {
  const pipe = 'fo4';
  const procs = startNodes(pipe, ['r1', 'r2', 'r3'], 8);
  const lines: DispatcherEvent[] = [];
  const asked: number[] = [];
  const d = dispatcher(pipe, lines, {
    onNodeFailure: 'replan',
    chooseCuts: async (f, stages) => {
      asked.push(stages);
      return balancedCuts(f, stages, 'params');
    },
  });
  t.after(async () => {
    await d.close();
    await procs.stop();
  });
  await d.connect();
  await d.nodes.waitCapabilities(['r1', 'r2', 'r3'], 30_000);
  const dep = await d.deploy(flat, ['r1', 'r2', 'r3'], ['block_out', 'conv2']);
  const frames = frames200.slice(0, 60);
  const run = await stream(dep, frames, 15, () => procs.children.get('r3')!.kill('SIGKILL'));
  assertExact(run, frames);
  assert.deepEqual(asked, [2]);
  assert.equal(dep.supervisor!.events[0].kind, 'replan');
  assert.deepEqual(
    dep.package.stages.map((s) => s.nodeId),
    ['r1', 'r2'],
  );
  assert.deepEqual(
    dep.package.stages.slice(0, -1).map((s) => s.span.last),
    balancedCuts(flat, 2, 'params'),
  );
  assert.ok(
    lines.some((e) => e.type === 'repair-start' && e.kind === 'replan' && e.chain.length === 2),
    eventLines(lines),
  );

  // the same chain with onNodeFailure off: a failure is not mended, and the frames say why
  const offEvents: DispatcherEvent[] = [];
  const off = dispatcher(pipe, offEvents, { onNodeFailure: 'off' });
  t.after(() => off.close());
  await off.connect();
  const dep2 = await off.deploy(flat, ['r1', 'r2'], ['pool']);
  const run2 = await stream(dep2, frames.slice(0, 30), 5, () => procs.children.get('r2')!.kill('SIGKILL'));
  assert.ok(run2.failures.length > 0, 'frames failed');
  assert.ok(
    run2.failures.every((m) => /node r2 failed \(offline\) and no standby is up; the chain cannot be mended because dispatcher.onNodeFailure is off/.test(m)),
    run2.failures[0],
  );
  await assert.rejects(dep2.stream.send(frames[0], 'cam', 'late'), /onNodeFailure is off/);
  const failedFrames = offEvents.filter((e) => e.type === 'frame-failed');
  assert.equal(failedFrames.length, run2.failures.length + 1, 'a frame-failed event for every failed frame, the late one included');
  assert.ok(
    offEvents.some((e) => e.type === 'repair-failed' && /onNodeFailure is off/.test(e.reason)),
    eventLines(offEvents),
  );
});
