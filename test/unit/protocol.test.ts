/**
 * The wire protocol module: every topic it builds parses back to what it is,
 * the broker's patterns come from the same tree, and every message round-trips
 * through its encoder and validating decoder, refusing what it should.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { nextTopic } from '../../edge-node/stage.js';
import { DeferError, EnvelopeError } from '../../lib/core/errors.js';
import {
  ANY_PIPELINE,
  type Assignment,
  assertTopicName,
  decodeActivation,
  decodeAssignment,
  decodeDeviceResult,
  decodeErrorReport,
  decodeHeartbeat,
  decodeMetrics,
  decodeStatus,
  encodeActivation,
  encodeAssignment,
  encodeCbor,
  encodeDeviceFrame,
  encodeErrorReport,
  encodeFailedResult,
  encodeHeartbeat,
  encodeMetrics,
  encodeServedResult,
  encodeStatus,
  filterWithin,
  isName,
  parseFrame,
  parseTopic,
  relativeFilter,
  type ServeMetrics,
  topicsFor,
  type WireTensor,
} from '../../lib/protocol/index.js';

test('topics: every builder parses back to its kind and name; other pipelines and foreign topics are not ours', () => {
  const t = topicsFor('p1');
  const cases: [string, unknown][] = [
    [t.nodeStatus('n1'), { kind: 'node-status', node: 'n1' }],
    [t.nodeAlive('n1'), { kind: 'node-alive', node: 'n1' }],
    [t.nodeAssign('n-2'), { kind: 'node-assign', node: 'n-2' }],
    [t.nodePrefetch('s.1'), { kind: 'node-prefetch', node: 's.1' }],
    [t.nodeProbe('n1'), { kind: 'node-probe', node: 'n1' }],
    [t.nodeWeights('n1', 17), { kind: 'node-weights', node: 'n1', index: 17 }],
    [t.stageIn(3), { kind: 'stage-in', stage: 3 }],
    [t.stageIn(3, 'n2'), { kind: 'stage-in', stage: 3, node: 'n2' }],
    [t.results('disp1'), { kind: 'results', dispatcher: 'disp1' }],
    [t.metrics('disp1'), { kind: 'metrics', id: 'disp1' }],
    [t.errors, { kind: 'errors' }],
    [t.frames('cam1'), { kind: 'frames', device: 'cam1' }],
    [t.deviceResults('cam1'), { kind: 'device-results', device: 'cam1' }],
  ];
  for (const [topic, want] of cases) {
    assert.deepEqual(t.parse(topic), want, topic);
    assert.deepEqual(parseTopic(topic), { pipeline: 'p1', topic: want }, topic);
  }
  assert.equal(t.parse(topicsFor('p2').nodeStatus('n1')), null, 'another pipeline');
  for (const foreign of ['cameras/cam1/image', 'defer/p1/node/n1', 'defer/p1/node/n1/weights/x', 'defer/p1/stage/a/in', 'defer/p1/frames', 'defer/p1/node/n1/status/extra']) {
    assert.equal(t.parse(foreign), null, foreign);
  }
  assert.equal(parseTopic('cameras/cam1/image'), null);
});

test('names: one rule for every topic level; the broker patterns come from the same tree', () => {
  for (const ok of ['n1', 'cam_01', 'a.b-c', 'x'.repeat(64)]) assert.ok(isName(ok), ok);
  for (const bad of ['', 'a/b', 'a+b', '#', 'a b', 'x'.repeat(65), 'é']) assert.ok(!isName(bad), bad);
  assert.throws(() => topicsFor('bad/pipe'), /pipeline 'bad\/pipe' is not a valid name/);
  assert.throws(() => assertTopicName('device', '+'), /device '\+' is not a valid name/);
  assert.equal(ANY_PIPELINE.nodeStatus('n1'), 'defer/+/node/n1/status');
  assert.equal(relativeFilter(ANY_PIPELINE.nodeStatusAll), 'node/+/status');
  assert.ok(filterWithin(topicsFor('p').nodeWeights('n1', 3), ANY_PIPELINE.nodeWeightsAll('+')));
  assert.ok(!filterWithin(ANY_PIPELINE.nodeWeightsAll('+'), ANY_PIPELINE.nodeWeightsAll('n1')), 'a wildcard may not widen a grant');
});

test('node status and heartbeat: round trip; wrong version, unknown state, bad capabilities and oversize are refused', () => {
  const s = { node: 'n1', state: 'ready' as const, at: 5, deployment: 'd1', stage: 0, heartbeatMs: 1000 };
  assert.deepEqual(decodeStatus(encodeStatus(s)), { v: 1, ...s });
  const bad = (o: object) => Buffer.from(JSON.stringify(o));
  assert.throws(() => decodeStatus(bad({ v: 2, node: 'n1', state: 'ready', at: 1 })), /protocol version 2/);
  assert.throws(() => decodeStatus(bad({ v: 1, node: 'n1', state: 'dancing', at: 1 })), /unknown state 'dancing'/);
  assert.throws(() => decodeStatus(bad({ v: 1, node: 'n1', state: 'ready', at: 1, capabilities: { calibrationMs: -1 } })), EnvelopeError);
  const caps = {
    backend: 'wasm',
    calibrationMs: 20,
    calibrationCpuMs: 20,
    slowdown: 1,
    cores: 0.2,
    freeMemoryBytes: 1e8,
    totalMemoryBytes: 2e8,
    host: 'h/n1',
    plainConvolutions: true,
    linkMbps: 19.4,
    linkRttMs: 0.75,
  };
  assert.deepEqual(decodeStatus(encodeStatus({ ...s, capabilities: caps })).capabilities, caps);
  assert.throws(() => decodeStatus(bad({ v: 1, node: 'n1', state: 'ready', at: 1, capabilities: { ...caps, plainConvolutions: 'yes' } })), /plainConvolutions must be a boolean/);
  assert.throws(() => decodeStatus(bad({ v: 1, node: 'n1', state: 'ready', at: 1, capabilities: { ...caps, linkMbps: 0 } })), /capabilities.linkMbps must be a positive number/);
  assert.throws(
    () => decodeStatus(Buffer.alloc(70 * 1024, 0x20)),
    (e: unknown) => e instanceof EnvelopeError && e.code === 'E_TOO_LARGE',
  );
  assert.throws(() => decodeStatus(Buffer.from('{not json')), /not valid JSON/);
  const h = { node: 'n1', at: 123, frames: 7 };
  assert.deepEqual(decodeHeartbeat(encodeHeartbeat(h)), { v: 1, ...h });
  assert.throws(() => decodeHeartbeat(bad({ v: 1, node: 'n1', at: 1, frames: -1 })), /frames/);
  const full = { node: 'n1', at: 5, frames: 9, queue: 2, rssBytes: 180_000_000, cpuSeconds: 12.5, busyMs: 2400 };
  assert.deepEqual(decodeHeartbeat(encodeHeartbeat(full)), { v: 1, ...full });
  assert.throws(() => decodeHeartbeat(bad({ ...full, v: 1, queue: 1.5 })), /queue/);
  assert.throws(() => decodeHeartbeat(bad({ ...full, v: 1, cpuSeconds: -1 })), /cpuSeconds/);
});

test('error reports and serving metrics: round trip and validation', () => {
  const r = decodeErrorReport(encodeErrorReport({ node: 'n1', topic: 'defer/p/stage/0/in', reason: 'garbage' }));
  assert.deepEqual([r.node, r.topic, r.reason, r.broker], ['n1', 'defer/p/stage/0/in', 'garbage', undefined]);
  assert.ok(r.at > 0);
  assert.equal(decodeErrorReport(encodeErrorReport({ broker: true, topic: 't', reason: 'over' })).broker, true);
  assert.throws(() => decodeErrorReport(Buffer.from(JSON.stringify({ v: 1, topic: 't', reason: 'r', at: 1 }))), /neither a node nor the broker/);
  const zero = { received: 0, served: 0, dropped: 0, rejected: 0, bad: 0, failed: 0 };
  const m: Omit<ServeMetrics, 'v'> = {
    dispatcher: 'd1',
    at: 1,
    policy: 'latest',
    ...zero,
    served: 3,
    badByKind: {},
    inFlight: 0,
    waiting: 0,
    devices: 1,
    perDevice: { cam1: { ...zero, waiting: 0 } },
  };
  assert.deepEqual(decodeMetrics(encodeMetrics(m)), { v: 1, ...m });
  assert.throws(() => decodeMetrics(encodeMetrics({ ...m, policy: 'never' as 'latest' })), /unknown policy/);
  assert.throws(() => decodeMetrics(encodeMetrics({ ...m, served: -1 })), /served/);
});

test('device frames and results: what a device sends parses; results round-trip as JSON and CBOR (with the whole output)', () => {
  const jpeg = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]);
  const f = parseFrame(encodeDeviceFrame({ image: jpeg, id: 'f1', reply: 'cbor' }), 1 << 20);
  assert.deepEqual([f.format, f.id, f.reply], ['jpeg', 'f1', 'cbor']);
  const served = {
    device: 'cam1',
    seq: 1,
    frame: 'cam1-1-1',
    top: [{ label: 'a', index: 0, score: 0.75 }],
    outputShape: [1, 2],
    latencyMs: { total: 3, queue: 0, preprocess: 1, chain: 2 },
    hops: [],
  };
  const output = { dtype: 'float32' as const, shape: [1, 2], data: new Float32Array([0.75, 0.25]) };
  const asJson = decodeDeviceResult(encodeServedResult(served, 'json', output));
  assert.deepEqual([asJson.ok, asJson.format, asJson.top, asJson.output], [true, 'json', served.top, undefined]);
  const asCbor = decodeDeviceResult(encodeServedResult(served, 'cbor', output));
  assert.deepEqual([asCbor.ok, asCbor.format, [...(asCbor.output!.data as Float32Array)]], [true, 'cbor', [0.75, 0.25]]);
  const failed = decodeDeviceResult(encodeFailedResult({ device: 'cam1', seq: 2, error: { kind: 'bad-image', message: 'no' } }));
  assert.deepEqual([failed.ok, failed.error?.kind], [false, 'bad-image']);
  assert.throws(() => decodeDeviceResult(Buffer.from('{"v":1,"ok":false,"device":"c"}')), /must say why/);
  assert.throws(() => decodeDeviceResult(Buffer.from('{"v":9,"ok":true,"device":"c"}')), /protocol version 9/);
  assert.throws(() => decodeDeviceResult(Buffer.from([0xff, 0x00])), EnvelopeError);
});

test("assignments: a graph-model stage with uint8 and float16 quantized weights and the planner's memory estimate round-trips; a bad model format, quantization or estimate is refused", () => {
  const sha = 'ab'.repeat(32);
  const a: Omit<Assignment, 'v' | 'kind'> = {
    deployment: 'd1',
    pipeline: 'p',
    nodeId: 'n1',
    stage: 0,
    stageCount: 2,
    topology: '{"modelTopology":{"node":[]},"input":"x","output":"y"}',
    modelFormat: 'graph-model',
    inputShape: [4],
    inputDtype: 'float32',
    manifest: {
      specs: [
        { layer: 'w', name: 'w', dtype: 'float32', shape: [2, 2], offset: 0, bytes: 4, quantization: { dtype: 'uint8', scale: 0.5, min: -1 } },
        { layer: 'b', name: 'b', dtype: 'float32', shape: [2], offset: 4, bytes: 4, quantization: { dtype: 'float16' } },
      ],
      totalBytes: 8,
      sha256: sha,
      chunkBytes: 8,
      chunks: [sha],
    },
    inputTopic: 'a',
    outputTopic: 'b',
    codec: 'lz4',
    qos: 1,
    createdAt: 1,
    memoryBytes: 10_000_008,
    batchFrameBytes: 128,
    plainMemoryBytes: 10_000_016,
  };
  assert.deepEqual(decodeAssignment(encodeAssignment(a)), { v: 1, kind: 'assign', ...a });
  const { modelFormat: _, ...layers } = a;
  assert.equal(decodeAssignment(encodeAssignment(layers)).modelFormat, undefined, 'absent: a layers model');
  const bad = (patch: Record<string, unknown>, re: RegExp) =>
    assert.throws(
      () => decodeAssignment(encodeCbor({ v: 1, kind: 'assign', ...a, ...patch })),
      (e: unknown) => e instanceof EnvelopeError && re.test(e.message),
    );
  bad({ modelFormat: 'onnx' }, /modelFormat must be one of layers-model, graph-model/);
  bad({ memoryBytes: -1 }, /field 'memoryBytes' must be an integer/);
  bad({ batchFrameBytes: 1.5 }, /field 'batchFrameBytes' must be an integer/);
  bad({ plainMemoryBytes: '1e7' }, /field 'plainMemoryBytes' must be an integer/);
  const { memoryBytes: _m, batchFrameBytes: _f, plainMemoryBytes: _p, ...older } = a;
  const fromOlder = decodeAssignment(encodeAssignment(older));
  assert.deepEqual([fromOlder.memoryBytes, fromOlder.plainMemoryBytes], [undefined, undefined], "absent: an older dispatcher's");
  const spec = a.manifest.specs[0];
  bad({ manifest: { ...a.manifest, specs: [{ ...spec, quantization: { dtype: 'int4', scale: 1, min: 0 } }] } }, /quantization dtype must be one of uint8, uint16, float16/);
  bad({ manifest: { ...a.manifest, specs: [{ ...spec, quantization: { dtype: 'uint8', scale: Number.NaN, min: 0 } }] } }, /field 'scale' must be a finite number/);
});

test("compact first hop: an activation carries a tensor or an image, never both, the image only to stage 0; an assignment's inputImage is checked field by field", () => {
  const base = { v: 1, kind: 'act', deployment: 'd1', frame: 'f1', device: 'cam', stage: 0, sentAt: 1, hops: [] };
  const image = Buffer.from([0xff, 0xd8, 0xff, 0xe0]);
  assert.deepEqual(decodeActivation(encodeActivation({ deployment: 'd1', frame: 'f1', device: 'cam', stage: 0, sentAt: 1, hops: [], image }), 1 << 20).image, image);
  const refused = (m: Record<string, unknown>, re: RegExp) =>
    assert.throws(
      () => decodeActivation(encodeCbor({ ...base, ...m }), 1 << 20),
      (e: unknown) => e instanceof EnvelopeError && re.test(e.message),
    );
  refused({}, /exactly one of tensor and image/);
  refused({ image, tensor: { dtype: 'float32', shape: [1], codec: 'none', size: 4, crc: 0, data: Buffer.alloc(4) } }, /exactly one of tensor and image/);
  refused({ image, stage: 1 }, /only stage 0 takes an image/);
  refused({ image: 'not bytes' }, /image must be a byte string/);
  const sha = 'cd'.repeat(32);
  const inputImage = { height: 224, width: 224, channels: 3, range: [-1, 1], channelOrder: 'rgb', resize: 'crop', pad: 0, maxPixels: 40_000_000 };
  const a = {
    v: 1,
    kind: 'assign',
    deployment: 'd1',
    pipeline: 'p',
    nodeId: 'n1',
    stage: 0,
    stageCount: 1,
    topology: '{}',
    inputShape: [224, 224, 3],
    inputDtype: 'float32',
    inputImage,
    manifest: { specs: [], totalBytes: 0, sha256: sha, chunkBytes: 1, chunks: [] },
    inputTopic: 'a',
    outputTopic: 'b',
    codec: 'lz4',
    qos: 1,
    createdAt: 1,
  };
  assert.deepEqual(decodeAssignment(encodeCbor(a)).inputImage, inputImage);
  const badImage = (patch: Record<string, unknown>, re: RegExp) =>
    assert.throws(
      () => decodeAssignment(encodeCbor({ ...a, inputImage: { ...inputImage, ...patch } })),
      (e: unknown) => e instanceof EnvelopeError && re.test(e.message),
    );
  badImage({ channels: 2 }, /channels must be 1 or 3/);
  badImage({ resize: 'zoom' }, /resize must be one of crop, letterbox, stretch/);
  badImage({ mean: [0.5] }, /mean and std come together/);
  badImage({ mean: [0.5], std: [0] }, /std positive/);
  badImage({ height: 0 }, /'height' must be an integer/);
  badImage({ range: [0, Number.NaN] }, /must be a finite number/);
  // an engine's batch: 1..MAX_BATCH frames a call
  assert.equal(decodeAssignment(encodeCbor({ ...a, batch: 4 })).batch, 4);
  assert.equal(decodeAssignment(encodeCbor(a)).batch, undefined);
  for (const batch of [0, 17, 2.5]) assert.throws(() => decodeAssignment(encodeCbor({ ...a, batch })), /field 'batch' must be an integer in \[1, 16\]/);
});

test("replica routes: an activation's route round-trips; a node sends to its route's next-stage input, refuses any other topic, and the last stage to its output", () => {
  const t = topicsFor('p');
  const route = [t.stageIn(1, 'n2'), t.stageIn(2)];
  const act = decodeActivation(encodeActivation({ deployment: 'd1', frame: 'f1', device: 'cam', stage: 0, sentAt: 1, hops: [], route, image: Buffer.from([1]) }), 1 << 20);
  assert.deepEqual(act.route, route);
  assert.throws(
    () => decodeActivation(encodeCbor({ v: 1, kind: 'act', deployment: 'd1', frame: 'f1', device: 'cam', stage: 0, sentAt: 1, hops: [], route: [7], image: Buffer.from([1]) }), 1 << 20),
    (e: unknown) => e instanceof EnvelopeError && /route entry 0 must be a topic/.test(e.message),
  );
  const at = (stage: number) => ({ pipeline: 'p', stage, stageCount: 3, outputTopic: stage === 2 ? t.results('disp1') : t.stageIn(stage + 1) }) as Assignment;
  assert.equal(nextTopic(at(0), act), t.stageIn(1, 'n2'));
  assert.equal(nextTopic(at(1), act), t.stageIn(2));
  assert.equal(nextTopic(at(2), act), t.results('disp1'), 'the last stage answers where its assignment says');
  assert.equal(nextTopic(at(0), { ...act, route: undefined }), t.stageIn(1), 'no route: the assignment says');
  for (const bad of [[t.stageIn(2, 'n2')], [topicsFor('other').stageIn(1, 'n2')], [t.errors], []]) {
    assert.throws(
      () => nextTopic(at(0), { ...act, route: bad }),
      (e: unknown) => e instanceof DeferError && /is not an input of stage 1 of pipeline p/.test(e.message),
      JSON.stringify(bad),
    );
  }
});

test('messages with large payloads: each in a buffer of its own, not a view of one shared and grown to 4x the largest', () => {
  const tensor: WireTensor = { dtype: 'float32', shape: [1, 350_000], codec: 'none', size: 1_400_000, crc: 0, data: Buffer.alloc(1_400_000, 7) };
  const hops: never[] = [];
  const sent = [1, 2, 3].map((i) => encodeActivation({ deployment: 'd1', frame: `f${i}`, device: 'cam', stage: 1, sentAt: 1, hops, tensor }));
  const small = encodeCbor({ v: 1, kind: 'small' });
  for (const [i, m] of sent.entries()) {
    // its own buffer, of its size and some room for the envelope: a frame in flight keeps no other frame's bytes
    assert.ok(m.buffer.byteLength < m.byteLength + 32 * 1024, `message ${i}: ${m.byteLength} bytes in a buffer of ${m.buffer.byteLength}`);
    for (const other of [...sent.slice(0, i), small]) assert.notEqual(m.buffer, other.buffer);
    const back = decodeActivation(m, 1 << 22);
    assert.equal(back.frame, `f${i + 1}`);
    assert.deepEqual(back.tensor?.data, tensor.data);
  }
  assert.ok(small.buffer.byteLength <= 64 * 1024, `a small message after them: a buffer of ${small.buffer.byteLength}`);
});
