/**
 * Dispatcher and edge nodes over a real Aedes broker, in this process: the
 * deployment protocol, its failure cases, and the nodes' handling of bad input.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import mqtt from 'mqtt';
import { type RunningBroker, startBroker } from '../../broker/broker.js';
import { packageDeployment, publishDeployment } from '../../dispatcher/deploy/deployment-package.js';
import { Dispatcher } from '../../dispatcher/dispatcher.js';
import { runChain, runLocal } from '../../dispatcher/run/measure-run.js';
import { EdgeNode } from '../../edge-node/edge-node.js';
import { setLogLevel } from '../../lib/core/log.js';
import { initEngine, tf } from '../../lib/model/engine.js';
import type { FlatModel } from '../../lib/model/flat-model.js';
import { loadFlatModel } from '../../lib/model/model-source.js';
import { LayersFlatModel } from '../../lib/model/partition.js';
import { syntheticFrames } from '../../lib/model/synthetic-frames.js';
import { stageMemoryOf } from '../../lib/planning/plan-inputs.js';
import { decodeErrorReport, decodeStatus, encodeActivation, encodeAssignment, encodeTensor, encodeWeightChunk } from '../../lib/protocol/index.js';
import { sameBits, waitUntil } from '../helpers/common.js';

let broker: RunningBroker;
let flat: FlatModel;
const nodes: EdgeNode[] = [];
let dispatcher: Dispatcher;

const dispatcherOpts = () => ({
  brokerUrl: broker.url,
  pipeline: 'ptest',
  chunkBytes: 1024, // many chunks even for the tiny model
  readyTimeoutMs: 20_000,
  frameTimeoutMs: 20_000,
  maxInFlight: 3,
  maxMessageBytes: 1 << 24,
  codec: 'lz4' as const,
  qos: 1 as const,
});

before(async () => {
  setLogLevel('error');
  await initEngine('wasm');
  broker = await startBroker({ host: '127.0.0.1', port: 0, maxPacketBytes: 1 << 24 });
  flat = await loadFlatModel('tiny');
  for (const id of ['n1', 'n2']) {
    const n = new EdgeNode({ id, brokerUrl: broker.url, pipeline: 'ptest', backend: 'wasm', maxMessageBytes: 1 << 24, maxQueue: 16 });
    await n.start();
    nodes.push(n);
  }
  dispatcher = new Dispatcher(dispatcherOpts());
  await dispatcher.connect();
});

after(async () => {
  await dispatcher.close();
  for (const n of nodes) await n.close();
  await broker.close();
});

test('deploy over retained topics, stream frames, and match the whole model bit for bit', async () => {
  const d = await dispatcher.deploy(flat, ['n1', 'n2'], ['block_out']);
  assert.equal(nodes[0].assignment?.deployment, d.id);
  assert.equal(nodes[1].assignment?.stage, 1);
  // each node has the planner's estimate of its stage's memory, which it weighs its free memory with
  const estimate = stageMemoryOf(flat, flat.spans(['block_out']));
  assert.deepEqual(
    nodes.slice(0, 2).map((n) => [n.assignment?.memoryBytes, n.assignment?.batchFrameBytes, n.assignment?.plainMemoryBytes]),
    estimate.map((e) => [Math.round(e.stageBytes), Math.round(e.batchFrameBytes), Math.round(e.plainStageBytes)]),
  );
  const frames = syntheticFrames(flat.inputShape, 12, 3);
  const chain = await runChain(d, frames);
  const local = await runLocal(flat, frames);
  assert.deepEqual(chain.failures, []);
  assert.equal(chain.results.length, 12);
  chain.byFrame.forEach((r, i) => {
    assert.ok(r, `frame ${i}`);
    assert.ok(sameBits(r.output.data as Float32Array, local.outputs[i]), `frame ${i} differs from the local run`);
    assert.equal(r.hopBytes.length, 3);
    assert.deepEqual(
      r.hops.map((h) => h.node),
      ['n1', 'n2'],
    );
    assert.ok(
      r.hops.every((h) => typeof h.cpuMs === 'number' && h.cpuMs >= 0),
      'each hop carries its CPU time',
    );
  });
  assert.ok(!sameBits(local.outputs[0], local.outputs[1]), 'different frames give different outputs');
});

test('lossy hops: an int8 middle hop is a quarter of the bytes, carried in the assignment; outputs close to the whole model, same top-1; a wrong list is refused', async () => {
  const frames = syntheticFrames(flat.inputShape, 10, 5);
  const local = await runLocal(flat, frames);
  const lossless = await runChain(await dispatcher.deploy(flat, ['n1', 'n2'], ['block_out']), frames);
  const lossy = new Dispatcher({ ...dispatcherOpts(), precision: ['lossless', 'int8', 'float16'] });
  await lossy.connect();
  try {
    const d = await lossy.deploy(flat, ['n1', 'n2'], ['block_out']);
    assert.deepEqual(d.package.precision, ['lossless', 'int8', 'float16']);
    assert.equal(nodes[0].assignment?.outputPrecision, 'int8', 'the node was told');
    assert.equal(nodes[1].assignment?.outputPrecision, 'float16');
    const chain = await runChain(d, frames);
    assert.deepEqual(chain.failures, []);
    const top = (x: ArrayLike<number>) => Array.from(x).indexOf(Math.max(...Array.from(x)));
    chain.byFrame.forEach((r, i) => {
      const out = r!.output.data as Float32Array;
      assert.equal(top(out), top(local.outputs[i]), `frame ${i}: same top-1`);
      assert.ok(
        out.every((v, j) => Math.abs(v - local.outputs[i][j]) < 0.02),
        `frame ${i}: close to the whole model`,
      );
    });
    const bytes = (run: typeof chain, hop: number) => run.results.reduce((t, r) => t + r.hopBytes[hop], 0) / run.results.length;
    assert.ok(bytes(chain, 1) < 0.35 * bytes(lossless, 1), `int8 hop ${bytes(chain, 1)} bytes against ${bytes(lossless, 1)}`);
    assert.ok(bytes(chain, 2) < bytes(lossless, 2), 'the float16 result is smaller');
    const bad = new Dispatcher({ ...dispatcherOpts(), precision: ['int8', 'int8'] });
    await bad.connect();
    await assert.rejects(bad.deploy(flat, ['n1', 'n2'], ['block_out']), /dispatcher.precision has 2 values; a chain of 2 stages has 3 hops/);
    await bad.close();
  } finally {
    await lossy.close();
  }
});

test('nodes report their calibration, host and memory in their status; the dispatcher can wait for them', async () => {
  const caps = await dispatcher.nodes.waitCapabilities(['n1', 'n2'], 5000);
  for (const id of ['n1', 'n2']) {
    const c = caps.get(id)!;
    assert.equal(c.backend, 'wasm');
    assert.ok(c.calibrationMs > 0 && c.calibrationCpuMs > 0 && c.cores >= 1 && c.freeMemoryBytes > 0 && c.host.length > 0, JSON.stringify(c));
    assert.equal(c.slowdown, 1);
    assert.equal(c.plainConvolutions, undefined, 'convolutions as products: the engine passed its check');
  }
  // a node told to compute every convolution itself says so: the planner counts twice its stages' weights
  const plain = new EdgeNode({ id: 'pc1', brokerUrl: broker.url, pipeline: 'ptest', backend: 'wasm', maxMessageBytes: 1 << 24, maxQueue: 8, plainConvolutions: true });
  await plain.start();
  try {
    assert.equal((await dispatcher.nodes.waitCapabilities(['pc1'], 30_000)).get('pc1')?.plainConvolutions, true);
    // which run summaries predict its stage's memory for as the planner counts it there
    assert.deepEqual([...dispatcher.nodes.plainConvolutionNodes()], ['pc1']);
  } finally {
    await plain.close();
  }
  await assert.rejects(dispatcher.nodes.waitCapabilities(['ghost'], 300), /1 of 1 nodes did not report their calibration within 300 ms: ghost \(never seen on the broker/);
  const bad = (c: Record<string, unknown>) => Buffer.from(JSON.stringify({ v: 1, node: 'x', state: 'online', at: 1, capabilities: c }));
  assert.throws(() => decodeStatus(bad({ ...caps.get('n1'), calibrationMs: -1 })), /capabilities.calibrationMs must be a number >= 0/);
  assert.throws(() => decodeStatus(bad({ ...caps.get('n1'), host: '' })), /field 'host' must be a non-empty string/);
});

test('messages of another deployment are dropped and counted; garbage is rejected; the node keeps serving', async () => {
  const d = await dispatcher.deploy(flat, ['n1', 'n2'], ['conv1']);
  const client = await mqtt.connectAsync(broker.url);
  const tensor = encodeTensor({ dtype: 'float32', shape: [1, ...flat.inputShape], data: new Float32Array(32 * 32 * 3) });
  const dropped = nodes[0].counters.dropped;
  const rejected = nodes[0].counters.rejected;
  const input = dispatcher.topics.stageIn(0);
  await client.publishAsync(input, encodeActivation({ deployment: 'someone-else', frame: 'x', device: 'd', stage: 0, sentAt: 0, hops: [], tensor }), { qos: 1 });
  await client.publishAsync(input, Buffer.from('not cbor at all'), { qos: 1 });
  const wrongShape = encodeTensor({ dtype: 'float32', shape: [1, 8], data: new Float32Array(8) });
  await client.publishAsync(input, encodeActivation({ deployment: d.id, frame: 'y', device: 'd', stage: 0, sentAt: 0, hops: [], tensor: wrongShape }), { qos: 1 });
  await client.endAsync();
  const chain = await runChain(d, syntheticFrames(flat.inputShape, 3, 9));
  assert.equal(chain.results.length, 3);
  await nodes[0].idle();
  assert.equal(nodes[0].counters.dropped, dropped + 1);
  assert.equal(nodes[0].counters.rejected, rejected + 2);
});

test('a new deployment replaces the stage and frees the old one', async () => {
  await dispatcher.deploy(flat, ['n1', 'n2'], ['pool']);
  const tensors = tf.memory().numTensors;
  for (let i = 0; i < 3; i++) await dispatcher.deploy(flat, ['n1', 'n2'], ['pool']);
  assert.equal(tf.memory().numTensors, tensors, 'old stages were disposed');
});

test('weights that do not match their manifest: the node reports failed with the reason, deploy fails naming it', async () => {
  const client = await mqtt.connectAsync(broker.url);
  const plan = packageDeployment(flat, dispatcher.topics, { nodes: ['n1', 'n2'], cuts: ['block_out'], chunkBytes: 1024, codec: 'lz4', qos: 1, resultTopic: 'x', pipeline: 'ptest' });
  const bad = Buffer.from(plan.stages[1].chunks[2]);
  bad[10] ^= 0xff;
  plan.stages[1].chunks[2] = bad;
  const ready = dispatcher.nodes.waitReady(['n1', 'n2'], plan.id, 10_000);
  await publishDeployment(client, dispatcher.topics, plan);
  await assert.rejects(ready, (e: Error) => /node 'n2' failed.*weight chunk 2 does not match its sha256/.test(e.message));
  const status = dispatcher.nodes.statuses.get('n2')!;
  assert.equal(status.state, 'failed');
  assert.match(status.reason ?? '', /sha256/);
  await client.endAsync();
  // the node recovers with the next good deployment
  await dispatcher.deploy(flat, ['n1', 'n2'], ['block_out']);
});

test('nodes that never become ready: a timeout that names them', async () => {
  const d = new Dispatcher({ ...dispatcherOpts(), readyTimeoutMs: 1500 });
  await d.connect();
  await assert.rejects(d.deploy(flat, ['n1', 'ghost'], ['block_out']), (e: Error) => /1 of 2 nodes not ready.*ghost \(never seen on the broker/.test(e.message));
  await d.close();
});

test('wrong number of nodes for the cuts, and a node listed twice, are configuration errors', async () => {
  await assert.rejects(dispatcher.deploy(flat, ['n1'], ['block_out']), /2 stages but 1 nodes/);
  await assert.rejects(dispatcher.deploy(flat, ['n1', 'n1'], ['block_out']), /listed twice/);
});

test('a restarted dispatcher adopts the deployment the nodes run: no weights sent, frames flow; another split is not adopted', async () => {
  const a = new Dispatcher(dispatcherOpts());
  await a.connect();
  const first = await a.deploy(flat, ['n1', 'n2'], ['conv2']);
  await a.close();
  const chunks = nodes.map((n) => n.counters.chunks);
  const b = new Dispatcher(dispatcherOpts());
  await b.connect();
  try {
    assert.equal(await b.adopt(flat, ['n1', 'n2'], ['block_out']), null, 'a different split is not adopted');
    assert.equal(await b.adopt(flat, ['n2', 'n1'], ['conv2']), null, 'nor the same split on other nodes');
    const adopted = await b.adopt(flat, ['n1', 'n2'], ['conv2']);
    assert.ok(adopted);
    assert.equal(adopted.id, first.id);
    const run = await runChain(adopted, syntheticFrames(flat.inputShape, 4, 8));
    assert.equal(run.results.length, 4);
    assert.deepEqual(
      nodes.map((n) => n.counters.chunks),
      chunks,
      'no weight chunk was sent',
    );
  } finally {
    await b.close();
  }
});

test("frames of a new stage that arrive while the replaced stage's last frame computes start when it ends, not at their timeout", { timeout: 300_000 }, async () => {
  // a node id of its own: its deployments stay retained on the broker for the tests after this one
  const node = new EdgeNode({ id: 'nr1', brokerUrl: broker.url, pipeline: 'ptest', backend: 'wasm', maxMessageBytes: 1 << 24, maxQueue: 16 });
  await node.start(); // calibrated unslowed: the slow-down below is for one frame only
  const d = new Dispatcher({ ...dispatcherOpts(), frameTimeoutMs: 150_000 });
  await d.connect();
  const client = await mqtt.connectAsync(broker.url);
  const opts = (node as unknown as { opts: { slowdown?: number } }).opts;
  const active = () => (node as unknown as { active: number }).active;
  try {
    const a = await d.deploy(flat, ['nr1'], []);
    const [probe] = (await runChain(a, syntheticFrames(flat.inputShape, 1, 4))).results;
    // the next frame of deployment a computes about 5 s (its slow-down sleeps after the compute)
    opts.slowdown = 1 + 5000 / Math.max(0.05, probe.hops[0].computeMs);
    const stage0 = a.package.stages[0].assignment;
    const [x] = syntheticFrames(flat.inputShape, 1, 5);
    await client.publishAsync(
      stage0.inputTopic,
      Buffer.from(encodeActivation({ deployment: a.id, frame: 'slow', device: 'test', stage: 0, sentAt: Date.now(), hops: [], tensor: encodeTensor(x, { codec: 'lz4' }) })),
      { qos: 1 },
    );
    await waitUntil(() => active() !== 0, 30_000, 10);
    assert.equal(active(), 1, 'the slow frame is computing');
    // a new deployment of the same stage (its input topic is the same): ready while the slow frame still computes
    const b = await d.deploy(flat, ['nr1'], []);
    assert.equal(active(), 1, 'the slow frame still computes once the new stage is ready (make its slow-down longer if not)');
    opts.slowdown = 1;
    // when the slow frame ends: the first frame the node finishes from now (the new stage's wait for it)
    const finished = () => node.counters.frames + node.counters.dropped + node.counters.rejected;
    const before = finished();
    let slowEnded = 0;
    const slowEnd = waitUntil(
      () => {
        if (!slowEnded && finished() > before) slowEnded = performance.now();
        return slowEnded;
      },
      150_000,
      5,
    );
    const t0 = performance.now();
    const run = await runChain(b, syntheticFrames(flat.inputShape, 3, 6));
    const answered = performance.now();
    await slowEnd;
    assert.equal(run.results.length, 3, run.failures.join('; '));
    assert.ok(slowEnded > 0, 'the slow frame ended');
    // they waited for the slow frame, then ran at once; not for the dispatcher's timeout and a resend. The slow
    // frame lasts about 5 s alone (its sleep is its compute times the slow-down, and a frame of the tiny model
    // computes in well under a millisecond), far longer beside another test's work: hence the long timeout
    assert.ok(answered - slowEnded < 10_000, `the new stage's frames were answered ${(answered - slowEnded).toFixed(0)} ms after the slow frame ended`);
    assert.ok(answered - t0 < 150_000, `the new stage's frames took ${(answered - t0).toFixed(0)} ms: the dispatcher's timeout`);
  } finally {
    opts.slowdown = 1;
    await client.endAsync();
    await d.close();
    await node.close();
  }
});

test('a restarted node builds its stage from its weight cache, without a transfer; a damaged cache file is fetched again', async () => {
  const cacheDir = mkdtempSync(join(tmpdir(), 'defer-wcache-'));
  const opts = { id: 'c1', brokerUrl: broker.url, pipeline: 'ptest', backend: 'wasm' as const, maxMessageBytes: 1 << 24, maxQueue: 8, calibrate: false, weightCache: cacheDir };
  const first = new EdgeNode(opts);
  await first.start();
  // no supervisor: it would give c1's stage away when c1 stops (test/failover.test.ts)
  const unsupervised = new Dispatcher({ ...dispatcherOpts(), supervise: false });
  await unsupervised.connect();
  after(() => unsupervised.close());
  const d = await unsupervised.deploy(flat, ['c1', 'n2'], ['pool']);
  assert.equal(first.weightsFrom, 'broker');
  assert.ok(first.counters.chunks > 0);
  await first.close();
  // the same node again: the retained assignment, its weights from disk
  const again = new EdgeNode(opts);
  await again.start();
  await waitUntil(() => again.currentState === 'ready', 30_000);
  assert.equal(again.weightsFrom, 'cache');
  assert.equal(again.counters.chunks, 0, 'no weight chunk came from the broker');
  const run = await runChain(d, syntheticFrames(flat.inputShape, 3, 4));
  assert.equal(run.results.length, 3);
  await again.close();
  // a damaged file is not trusted
  for (const f of readdirSync(cacheDir)) writeFileSync(join(cacheDir, f), Buffer.from('garbage'));
  const third = new EdgeNode(opts);
  await third.start();
  await waitUntil(() => third.currentState === 'ready', 30_000);
  assert.equal(third.weightsFrom, 'broker');
  assert.ok(third.counters.chunks > 0);
  await third.close();
});

test('a node that goes away is reported offline by its Last Will', async () => {
  const n = new EdgeNode({ id: 'n9', brokerUrl: broker.url, pipeline: 'ptest', backend: 'wasm', maxMessageBytes: 1 << 20, maxQueue: 4 });
  await n.start();
  const client = (n as unknown as { client: mqtt.MqttClient }).client;
  const watcher = await mqtt.connectAsync(broker.url);
  const states: string[] = [];
  watcher.on('message', (_t, p) => p.length && states.push(decodeStatus(p).state));
  try {
    await watcher.subscribeAsync(dispatcher.topics.nodeStatus('n9'));
    await new Promise((r) => setTimeout(r, 100));
    client.stream.destroy(); // a dropped link, not a clean close
    client.options.reconnectPeriod = 0;
    await waitUntil(() => states.includes('offline'), 30_000, 100);
    assert.deepEqual([states[0], states.at(-1)], ['online', 'offline']);
  } finally {
    await watcher.endAsync();
    client.end(true);
  }
});

test('a status speaks only for the node of its topic: a node cannot report another one offline', async () => {
  const c = await mqtt.connectAsync(broker.url, { reconnectPeriod: 0 });
  await c.publishAsync(dispatcher.topics.nodeStatus('n1'), JSON.stringify({ v: 1, node: 'n2', state: 'offline', at: Date.now() }), { qos: 1 });
  await c.publishAsync(dispatcher.topics.nodeStatus('ghost'), JSON.stringify({ v: 1, node: 'ghost', state: 'offline', at: Date.now() }), { qos: 1 });
  await waitUntil(() => dispatcher.nodes.statuses.has('ghost'), 30_000, 25);
  await c.endAsync();
  assert.equal(dispatcher.nodes.statuses.get('ghost')?.state, 'offline', 'a status on its own topic counts');
  assert.notEqual(dispatcher.nodes.statuses.get('n2')?.state, 'offline', "one on another node's topic does not");
});

test("a busy node's input queue: it holds at least 4 frames per engine and frame of its batch beyond its --max-queue, drops the rest, counts and reports each", async () => {
  const node = new EdgeNode({ id: 'q1', brokerUrl: broker.url, pipeline: 'ptest', backend: 'wasm', maxMessageBytes: 1 << 24, maxQueue: 2, slowdown: 20, calibrate: false });
  await node.start();
  const d = new Dispatcher({ ...dispatcherOpts(), batch: 3 });
  await d.connect();
  const c = await mqtt.connectAsync(broker.url);
  try {
    const deployment = await d.deploy(flat, ['q1'], []);
    const a = deployment.package.stages[0].assignment;
    assert.equal(a.batch, 3);
    const reports: string[] = [];
    c.on('message', (_t, p) => reports.push(decodeErrorReport(p).reason));
    await c.subscribeAsync(d.topics.errors, { qos: 1 });
    const [x] = syntheticFrames(flat.inputShape, 1, 5);
    const tensor = encodeTensor({ dtype: 'float32', shape: x.shape, data: x.data as Float32Array });
    const n = 40;
    await Promise.all(
      Array.from({ length: n }, (_, i) =>
        c.publishAsync(a.inputTopic, encodeActivation({ deployment: deployment.id, frame: `q${i}`, device: 'q', stage: 0, sentAt: Date.now(), hops: [], tensor }), { qos: 1 }),
      ),
    );
    await waitUntil(() => node.counters.frames + node.counters.overflow >= n, 30_000);
    await node.idle();
    // its limit is 4 x 1 engine x a batch of 3 = 12, not its --max-queue of 2: the rest dropped, none lost unsaid
    assert.equal(node.counters.frames + node.counters.overflow, n, JSON.stringify(node.counters));
    assert.ok(node.counters.overflow > 0 && node.counters.frames > 12, JSON.stringify(node.counters));
    await waitUntil(() => reports.length >= node.counters.overflow, 30_000);
    assert.equal(reports.length, node.counters.overflow);
    assert.ok(
      reports.every((r) => r === 'input queue full (12); activation dropped'),
      reports[0],
    );
  } finally {
    await c.endAsync();
    await d.close();
    await node.close();
  }
});

test('weight chunks that come before their assignment: a node holds at most 16 MiB of them, takes the rest from the broker once the assignment comes, and builds the stage', async () => {
  // a stage of 17.6 MB (one dense layer of 2100 x 2100), on a node with no weight cache, so that it must take every byte
  const dense = tf.sequential({ layers: [tf.layers.dense({ inputShape: [2100], units: 2100, name: 'big' })] });
  const big = await LayersFlatModel.from(dense);
  const node = new EdgeNode({ id: 'e1', brokerUrl: broker.url, pipeline: 'ptest', backend: 'wasm', maxMessageBytes: 1 << 24, maxQueue: 16, calibrate: false });
  await node.start();
  const client = await mqtt.connectAsync(broker.url);
  try {
    const pack = () => packageDeployment(big, dispatcher.topics, { nodes: ['e1'], cuts: [], chunkBytes: 256 * 1024, codec: 'lz4', qos: 1, resultTopic: 'x', pipeline: 'ptest' });
    const [a, b] = [pack(), pack()];
    assert.ok(b.totalBytes > 16 * 2 ** 20, `${b.totalBytes} bytes`);
    // deployment a: its assignment only, so the node waits for its chunks, subscribed to its weights topic
    await client.publishAsync(dispatcher.topics.nodeAssign('e1'), encodeAssignment(a.stages[0].assignment), { qos: 1, retain: true });
    const loadingA = () => dispatcher.nodes.statuses.get('e1')?.state === 'loading' && dispatcher.nodes.statuses.get('e1')?.deployment === a.id;
    await waitUntil(() => loadingA(), 30_000, 25);
    assert.ok(loadingA(), JSON.stringify(dispatcher.nodes.statuses.get('e1')));
    // deployment b's chunks before its assignment
    const chunks = b.stages[0].chunks;
    for (const [index, data] of chunks.entries()) {
      await client.publishAsync(dispatcher.topics.nodeWeights('e1', index), encodeWeightChunk({ deployment: b.id, index, count: chunks.length, data }), { qos: 1, retain: true });
    }
    await waitUntil(() => node.counters.earlyChunks + node.counters.earlyDropped >= chunks.length, 30_000, 25);
    assert.equal(node.counters.earlyChunks, 64, 'held: 16 MiB of 256 KiB chunks');
    assert.equal(node.counters.earlyDropped, chunks.length - 64);
    const ready = dispatcher.nodes.waitReady(['e1'], b.id, 20_000);
    await client.publishAsync(dispatcher.topics.nodeAssign('e1'), encodeAssignment(b.stages[0].assignment), { qos: 1, retain: true });
    await ready;
    assert.equal(node.assignment?.deployment, b.id);
    assert.equal(node.counters.chunks, chunks.length, 'each chunk stored once');
    // the stage computes the layer's own output
    const x = tf.randomUniform([1, 2100], -1, 1, 'float32', 5);
    const want = dense.predict(x) as tf.Tensor;
    const stage = (node as unknown as { stage: { model: { run(x: tf.Tensor): tf.Tensor } } }).stage.model;
    const got = stage.run(x);
    assert.ok(sameBits(got.dataSync() as Float32Array, want.dataSync() as Float32Array), 'the built stage is the layer');
    tf.dispose([x, want, got]);
  } finally {
    await client.publishAsync(dispatcher.topics.nodeAssign('e1'), Buffer.alloc(0), { qos: 1, retain: true });
    await client.endAsync();
    await node.close();
    dense.dispose();
  }
});
