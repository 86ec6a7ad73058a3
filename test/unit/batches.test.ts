/**
 * Batches: frames waiting for an engine computed in one call. Each frame's output is its own bit for bit, a bad
 * frame in a batch fails alone, the planner's automatic batch fills about BATCH_TARGET_MS of an engine and fits its
 * node's memory, the dispatcher's window counts each engine's batch, and the protocol carries and bounds it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { packageDeployment } from '../../dispatcher/deploy/deployment-package.js';
import { defaultInFlight } from '../../dispatcher/dispatcher.js';
import { type ActivationIn, batchesExactly, buildStage, computeActivations, FrameComputeError, type RunningStage, warmUp } from '../../edge-node/stage.js';
import { initEngine, tf } from '../../lib/model/engine.js';
import { LayersFlatModel } from '../../lib/model/partition.js';
import { BlobWeights } from '../../lib/model/weight-sink.js';
import { createZooModel } from '../../lib/model/zoo.js';
import { autoBatch, BATCH_TARGET_MS, describeBatches, MAX_AUTO_BATCH, withBatches } from '../../lib/planning/batching.js';
import { enginesMemoryBytes } from '../../lib/planning/cost-model.js';
import type { ShapePlan } from '../../lib/planning/shape.js';
import { type Assignment, decodeActivation, encodeActivation, PROTOCOL_VERSION, topicsFor } from '../../lib/protocol/index.js';
import { decodeTensor, encodeTensor } from '../../lib/protocol/tensor-codec.js';

const ctx = { nodeId: 'b', maxMessageBytes: 64 * 2 ** 20, slowdown: 1 };

async function tinyStage(): Promise<{ flat: LayersFlatModel; stage: RunningStage }> {
  assert.equal(await initEngine('wasm'), 'wasm');
  const flat = await LayersFlatModel.from(createZooModel('tiny'));
  const plan = packageDeployment(flat, topicsFor('batches'), { nodes: ['n1'], cuts: [], chunkBytes: 4096, codec: 'lz4', qos: 1, resultTopic: 'out', pipeline: 'batches', batch: 4 });
  const assignment = { v: PROTOCOL_VERSION, kind: 'assign', ...plan.stages[0].assignment } as Assignment;
  assert.equal(assignment.batch, 4, 'the deployment option reaches the assignment');
  const model = await buildStage(assignment, BlobWeights.of(Buffer.concat(plan.stages[0].chunks)));
  warmUp(assignment, model);
  return { flat, stage: { assignment, model } };
}

test('frames computed as one batch: each output is its frame alone, bit for bit; a bad frame fails alone; another deployment is dropped', async () => {
  const { flat, stage } = await tinyStage();
  const a = stage.assignment;
  assert.ok(batchesExactly(a, stage.model), 'the tiny model batches exactly on wasm');
  const xs = [1, 2, 3].map((seed) => tf.randomUniform([1, ...flat.inputShape], -1, 1, 'float32', seed));
  const want = xs.map((x) => flat.run(x).dataSync());
  const job = (frame: string, data: Float32Array, shape: number[], deployment = a.deployment): ActivationIn => ({
    payload: encodeActivation({ deployment, frame, device: 'd', stage: 0, sentAt: Date.now(), hops: [], tensor: encodeTensor({ dtype: 'float32', shape, data }) }),
    recvAt: Date.now(),
  });
  const data = (k: number) => xs[k].dataSync() as Float32Array;
  const jobs = [
    job('f0', data(0), xs[0].shape),
    job('bad', new Float32Array(3), [1, 3]),
    job('f1', data(1), xs[1].shape),
    job('other', data(2), xs[2].shape, 'another-deployment'),
    job('f2', data(2), xs[2].shape),
  ];
  const out = await computeActivations(stage, jobs, ctx, 4);
  assert.equal(out.length, jobs.length);
  const bad = out[1];
  assert.ok('error' in bad && bad.error instanceof FrameComputeError && bad.error.frame === 'bad', 'the bad frame fails, named');
  assert.match((bad as { error: Error }).error.message, /does not fit stage input/);
  const other = out[3];
  assert.ok(!('error' in other) && other.body === undefined && other.deployment === 'another-deployment', "another deployment's frame is dropped");
  const shares = new Set<number>();
  for (const [i, k] of [
    [0, 0],
    [2, 1],
    [4, 2],
  ]) {
    const r = out[i];
    assert.ok(!('error' in r) && r.body);
    const msg = decodeActivation(r.body, ctx.maxMessageBytes);
    assert.equal(msg.frame, `f${k}`);
    assert.equal(msg.hops[0].batch, 3, 'the three good frames went as one batch');
    assert.equal(typeof msg.hops[0].cpuMs, 'number', "each hop carries its share of the process's CPU");
    shares.add(msg.hops[0].computeMs);
    const got = decodeTensor(msg.tensor);
    assert.deepEqual(
      Buffer.from(got.data.buffer, got.data.byteOffset, got.data.byteLength),
      Buffer.from(want[k].buffer, want[k].byteOffset, want[k].byteLength),
      `frame f${k}: bit for bit its own output`,
    );
  }
  assert.equal(shares.size, 1, "each frame of the batch carries the same share of the call's time");
  // at most maxBatch a call: 3 good frames with a batch of 2 go as 2 + 1
  const split = await computeActivations(
    stage,
    [0, 1, 2].map((k) => job(`f${k}`, data(k), xs[k].shape)),
    ctx,
    2,
  );
  assert.deepEqual(
    split.map((r) => ('error' in r || !r.body ? null : (decodeActivation(r.body, ctx.maxMessageBytes).hops[0].batch ?? 1))),
    [2, 2, 1],
  );
  tf.dispose(xs);
});

test("the planner's batch: about BATCH_TARGET_MS of an engine's frames, at most MAX_AUTO_BATCH, lowered to fit the node's memory", () => {
  assert.equal(autoBatch(BATCH_TARGET_MS / 4), 4);
  assert.equal(autoBatch(20), 8, 'the Teachable Machine model on a worker');
  assert.equal(autoBatch(65), 2, 'MobileNet v1 on a worker');
  assert.equal(autoBatch(0.5), MAX_AUTO_BATCH);
  assert.equal(autoBatch(BATCH_TARGET_MS * 2), 1, 'a heavy stage gets none');
  assert.equal(autoBatch(0), 1);
  assert.equal(autoBatch(Number.NaN), 1);
  const stage = (index: number, engineMs: number, workers: number) => ({
    index,
    members: [{ node: `n${index}`, workers }],
    engineMs: { [`n${index}`]: engineMs },
    memoryBytes: 50e6,
    batchFrameBytes: 10e6,
  });
  const plan = { stages: [stage(0, 10, 2), stage(1, 200, 1), stage(2, 5, 1)] } as unknown as ShapePlan;
  const free = withBatches(plan, [{ id: 'n0', timeFactor: 1 }]);
  assert.deepEqual(
    free.stages.map((s) => s.members[0].batch),
    [8, undefined, 8],
  );
  assert.equal(describeBatches(free.stages), 'batches of up to 8 | 1 | 8');
  // n0's two engines: 2 x (50 + (b - 1) x 10 + a worker thread's 50) MB must fit 300 MB: b = 6
  const tight = withBatches(plan, [{ id: 'n0', timeFactor: 1, memoryBytes: 300e6 }]);
  const b = tight.stages[0].members[0].batch!;
  assert.equal(b, 6);
  assert.equal(withBatches(plan, [{ id: 'n0', timeFactor: 1, memoryBytes: 210e6 }]).stages[0].members[0].batch, undefined, 'no room for a second frame: no batch');
  assert.ok(enginesMemoryBytes(50e6, 2, b, 10e6) <= 300e6 && enginesMemoryBytes(50e6, 2, b + 1, 10e6) > 300e6);
  // a node whose engine computes every convolution itself: its stage's memory as the planner counts it there
  const plainPlan = { stages: [{ ...plan.stages[0], plainMemoryBytes: 70e6 }] } as unknown as ShapePlan;
  assert.equal(withBatches(plainPlan, [{ id: 'n0', timeFactor: 1, memoryBytes: 300e6 }]).stages[0].members[0].batch, 6);
  // 2 x (70 + (b - 1) x 10 + 50) MB must fit 300 MB: b = 4
  assert.equal(withBatches(plainPlan, [{ id: 'n0', timeFactor: 1, memoryBytes: 300e6, plainConvolutions: true }]).stages[0].members[0].batch, 4);
  const given = withBatches(plan, [], 3);
  assert.equal(describeBatches(given.stages), 'batches of up to 3');
  assert.equal(describeBatches(withBatches(plan, [], 1).stages), 'no batches');
});

test("the dispatcher's window counts each engine's batch; a hop carries its batch, bounded (an assignment's: protocol.test.ts)", () => {
  const as = (workers: number, batch?: number) => ({ assignment: { workers, ...(batch ? { batch } : {}) } });
  const stages = [
    { ...as(2, 4), nodeId: 'a' },
    { ...as(1), nodeId: 'b' },
  ] as unknown as Parameters<typeof defaultInFlight>[0]['stages'];
  assert.equal(defaultInFlight({ stages }), 2 * (2 * 4 + 1));
  const hop = { node: 'n1', stage: 0, bytesIn: 1, recvAt: 1, decodeMs: 0, computeMs: 1, encodeMs: 0, sentAt: 2 };
  const act = (h: object) =>
    encodeActivation({ deployment: 'd1', frame: 'f', device: 'x', stage: 1, sentAt: 1, hops: [h as typeof hop], tensor: encodeTensor({ dtype: 'float32', shape: [1], data: new Float32Array(1) }) });
  assert.equal(decodeActivation(act({ ...hop, batch: 3 }), 1 << 20).hops[0].batch, 3);
  assert.throws(() => decodeActivation(act({ ...hop, batch: 0 }), 1 << 20), /batch/);
});
