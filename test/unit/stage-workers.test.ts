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

test('workers built at once: each gives the whole model its bits', { timeout: 120_000 }, async () => {
  const { flat, assignment, blob } = await wholeModelStage();
  const pool = await StageWorkers.start(assignment, blob, 3, 'wasm', ctx, false, 3);
  try {
    assert.equal(pool.size, 3);
    const x = tf.randomUniform([1, ...flat.inputShape], -1, 1, 'float32', 5);
    const want = flat.run(x);
    const wantData = want.dataSync();
    const payload = () =>
      encodeActivation({
        deployment: assignment.deployment,
        frame: 'f',
        device: 'd',
        stage: 0,
        sentAt: Date.now(),
        hops: [],
        tensor: encodeTensor({ dtype: 'float32', shape: x.shape, data: x.dataSync() as Float32Array }),
      });
    // three at once: one on each worker
    const outs = await Promise.all([0, 1, 2].map(() => pool.compute(payload(), Date.now())));
    for (const out of outs) {
      assert.ok(out.body, 'a result for this deployment');
      const got = decodeTensor(decodeActivation(out.body, ctx.maxMessageBytes).tensor);
      assert.deepEqual(got.shape, want.shape);
      assert.deepEqual(Buffer.from(got.data.buffer, got.data.byteOffset, got.data.byteLength), Buffer.from(wantData.buffer, wantData.byteOffset, wantData.byteLength));
    }
    tf.dispose([x, want]);
  } finally {
    await pool.close();
  }
});

test('a stage that cannot be built: one error with the reason, no worker left running', { timeout: 60_000 }, async () => {
  const { assignment, blob } = await wholeModelStage();
  const bad = new Uint8Array(blob);
  bad[100] ^= 0xff;
  await assert.rejects(StageWorkers.start(assignment, bad, 4, 'wasm', ctx, false, 2), /worker \d could not build the stage: the weights do not match the sha256/);
});
