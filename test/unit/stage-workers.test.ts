/**
 * A node's stage on worker threads, built several at a time: every worker gives the whole model's output bit for
 * bit, and a stage that cannot be built fails once with the reason, leaving no worker running (a thread left
 * running would keep this test's process alive past its timeout).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { packageDeployment } from '../../dispatcher/deploy/deployment-package.js';
import { StageWorkers } from '../../edge-node/stage-workers.js';
import { initEngine, tf } from '../../lib/model/engine.js';
import { LayersFlatModel } from '../../lib/model/partition.js';
import { createZooModel } from '../../lib/model/zoo.js';
import { type Assignment, decodeActivation, encodeActivation, PROTOCOL_VERSION, topicsFor } from '../../lib/protocol/index.js';
import { decodeTensor, encodeTensor } from '../../lib/protocol/tensor-codec.js';

const ctx = { nodeId: 'w', maxMessageBytes: 64 * 2 ** 20, slowdown: 1, processCpu: false };

async function wholeModelStage() {
  assert.equal(await initEngine('wasm'), 'wasm');
  const flat = await LayersFlatModel.from(createZooModel('tiny'));
  const plan = packageDeployment(flat, topicsFor('workers'), { nodes: ['n1'], cuts: [], chunkBytes: 4096, codec: 'lz4', qos: 1, resultTopic: 'out', pipeline: 'workers' });
  const assignment = { v: PROTOCOL_VERSION, kind: 'assign', ...plan.stages[0].assignment } as Assignment;
  const blob = new Uint8Array(Buffer.concat(plan.stages[0].chunks));
  return { flat, assignment, blob };
}

test('workers built at once: each gives the whole model its bits, one frame or a batch per call', { timeout: 120_000 }, async () => {
  const { flat, assignment, blob } = await wholeModelStage();
  const pool = await StageWorkers.start(assignment, blob, 3, 'wasm', ctx, {}, 3, 2);
  try {
    assert.equal(pool.size, 3);
    assert.equal(pool.batch, 2, 'the stage batches exactly, so each worker takes 2 frames a call');
    const xs = [5, 6].map((seed) => tf.randomUniform([1, ...flat.inputShape], -1, 1, 'float32', seed));
    const want = xs.map((x) => flat.run(x).dataSync());
    const job = (k: number) => ({
      payload: encodeActivation({
        deployment: assignment.deployment,
        frame: `f${k}`,
        device: 'd',
        stage: 0,
        sentAt: Date.now(),
        hops: [],
        tensor: encodeTensor({ dtype: 'float32', shape: xs[k].shape, data: xs[k].dataSync() as Float32Array }),
      }),
      recvAt: Date.now(),
    });
    // three calls at once, one on each worker: a frame alone, two frames together, and the two the other way round
    const calls = await Promise.all([[0], [0, 1], [1, 0]].map((ks) => pool.compute(ks.map(job)).then((outs) => ({ ks, outs }))));
    for (const { ks, outs } of calls) {
      assert.equal(outs.length, ks.length);
      for (const [i, out] of outs.entries()) {
        assert.ok(!('error' in out) && out.body, 'a result for this deployment');
        const msg = decodeActivation(out.body, ctx.maxMessageBytes);
        assert.equal(msg.frame, `f${ks[i]}`);
        assert.equal(msg.hops[0].batch, ks.length > 1 ? ks.length : undefined, 'the hop says the frames were computed together');
        const got = decodeTensor(msg.tensor);
        const w = want[ks[i]];
        assert.deepEqual(Buffer.from(got.data.buffer, got.data.byteOffset, got.data.byteLength), Buffer.from(w.buffer, w.byteOffset, w.byteLength));
      }
    }
    tf.dispose(xs);
  } finally {
    await pool.close();
  }
});

test('a stage that cannot be built: one error with the reason, no worker left running', { timeout: 60_000 }, async () => {
  const { assignment, blob } = await wholeModelStage();
  const bad = new Uint8Array(blob);
  bad[100] ^= 0xff;
  await assert.rejects(StageWorkers.start(assignment, bad, 4, 'wasm', ctx, {}, 2), /worker \d could not build the stage: the weights do not match the sha256/);
});
