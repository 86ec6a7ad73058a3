/**
 * Hostile input, property-based (fast-check): every decoder, given random
 * bytes and mutations of valid messages (bit flips, truncation, extension,
 * spliced garbage), either returns a value or throws a DeferError; never a
 * TypeError, RangeError or a crash. Then the handlers: an edge node and a
 * serving dispatcher over a real broker take thousands of such messages on
 * their topics and keep serving, with memory flat.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import mqtt from 'mqtt';
import sharp from 'sharp';
import { type RunningBroker, startBroker } from '../../broker/broker.js';
import { loadConfig } from '../../config/schema.js';
import { Dispatcher } from '../../dispatcher/dispatcher.js';
import { runChain } from '../../dispatcher/run/measure-run.js';
import { DeviceServer } from '../../dispatcher/serving/device-server.js';
import { frameTensor } from '../../dispatcher/serving/frame-tensor.js';
import { modelInputFor } from '../../dispatcher/serving/start-serving.js';
import { EdgeNode } from '../../edge-node/edge-node.js';
import { DeferError } from '../../lib/core/errors.js';
import { setLogLevel } from '../../lib/core/log.js';
import { initEngine } from '../../lib/model/engine.js';
import type { FlatModel } from '../../lib/model/flat-model.js';
import { loadFlatModel } from '../../lib/model/model-source.js';
import { syntheticFrames } from '../../lib/model/synthetic-frames.js';
import {
  decodeActivation,
  decodeAssignment,
  decodePrefetchList,
  decodeStatus,
  decodeTensor,
  decodeWeightChunk,
  encodeActivation,
  encodeAssignment,
  encodeCbor,
  encodePrefetchList,
  encodeStatus,
  encodeTensor,
  encodeWeightChunk,
  parseFrame,
} from '../../lib/protocol/index.js';
import { frameOf } from '../../node-red-nodes/defer-dispatcher.js';
import { TestDevice } from '../helpers/device.js';

const RUNS = 2000;

/** Valid messages of every kind, to mutate. */
function samples(): Buffer[] {
  const tensor = encodeTensor({ dtype: 'float32', shape: [1, 4, 4, 2], data: new Float32Array(32).map((_, i) => Math.sin(i)) });
  const raw = encodeTensor({ dtype: 'int32', shape: [3], data: new Int32Array([1, 2, 3]) }, { codec: 'none' });
  const lossy = (precision: 'float16' | 'int8') =>
    encodeActivation({
      deployment: 'd1',
      frame: 'f2',
      device: 'cam',
      stage: 1,
      sentAt: 1,
      hops: [],
      tensor: encodeTensor({ dtype: 'float32', shape: [1, 4, 4, 2], data: new Float32Array(32).map((_, i) => Math.cos(i) * 9) }, { precision }),
    });
  return [
    lossy('float16'),
    lossy('int8'),
    encodeActivation({
      deployment: 'd1',
      frame: 'f1',
      device: 'cam',
      stage: 1,
      sentAt: 1,
      hops: [{ node: 'n1', stage: 0, bytesIn: 10, recvAt: 1, decodeMs: 1, computeMs: 2, encodeMs: 3, sentAt: 4, cpuMs: 1 }],
      tensor,
    }),
    encodeAssignment({
      deployment: 'd1',
      pipeline: 'p',
      nodeId: 'n1',
      stage: 0,
      stageCount: 2,
      topology: '{"class_name":"Model"}',
      inputShape: [4, 4, 2],
      inputDtype: 'float32',
      manifest: {
        specs: [{ layer: 'dense', name: 'dense/0', shape: [2, 2], dtype: 'float32', offset: 0, bytes: 16 }],
        totalBytes: 16,
        sha256: 'a'.repeat(64),
        chunkBytes: 16,
        chunks: ['b'.repeat(64)],
      },
      inputTopic: 'defer/p/stage/0/in',
      outputTopic: 'defer/p/stage/1/in',
      codec: 'lz4',
      qos: 1,
      createdAt: 1,
    }),
    encodeWeightChunk({ deployment: 'd1', index: 0, count: 1, data: new Uint8Array(16) }),
    encodePrefetchList({
      deployment: 'd1',
      stages: [
        {
          weightsNode: 'n2',
          manifest: {
            specs: [{ layer: 'dense', name: 'dense/0', shape: [2, 2], dtype: 'float32', offset: 0, bytes: 16 }],
            totalBytes: 16,
            sha256: 'a'.repeat(64),
            chunkBytes: 16,
            chunks: ['b'.repeat(64)],
          },
        },
      ],
    }),
    encodeStatus({
      node: 'n1',
      state: 'ready',
      at: 1,
      capabilities: { backend: 'wasm', calibrationMs: 20, calibrationCpuMs: 20, slowdown: 1, cores: 2, freeMemoryBytes: 1, totalMemoryBytes: 2, host: 'h' },
    }),
    encodeCbor({ id: 'x', tensor: raw }),
    Buffer.from(JSON.stringify({ id: 'j', shape: [4, 4, 2], data: Array(32).fill(0.5) })),
  ];
}

/** Random bytes, or a valid sample flipped, cut, extended or spliced. */
function hostile(base: Buffer[]): fc.Arbitrary<Buffer> {
  const pick = fc.integer({ min: 0, max: base.length - 1 });
  return fc.oneof(
    fc.uint8Array({ maxLength: 512 }).map((a) => Buffer.from(a)),
    fc.tuple(pick, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 8 })).map(([i, flips]) => {
      const b = Buffer.from(base[i]);
      for (const [at, x] of flips) b[at % b.length] ^= x;
      return b;
    }),
    fc.tuple(pick, fc.nat()).map(([i, n]) => base[i].subarray(0, n % base[i].length)),
    fc.tuple(pick, fc.uint8Array({ minLength: 1, maxLength: 64 })).map(([i, extra]) => Buffer.concat([base[i], extra])),
    fc.tuple(pick, fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 32 })).map(([i, at, junk]) => {
      const cut = at % base[i].length;
      return Buffer.concat([base[i].subarray(0, cut), junk, base[i].subarray(cut)]);
    }),
  );
}

/** Run `f`; a DeferError is an answer, anything else thrown is a failure. */
function typedOrValue(f: () => unknown): void {
  try {
    f();
  } catch (err) {
    if (!(err instanceof DeferError)) throw new Error(`threw ${(err as Error)?.name}: ${(err as Error)?.message}`);
  }
}

let flat: FlatModel;
before(async () => {
  setLogLevel('silent');
  await initEngine('wasm');
  flat = await loadFlatModel('tiny');
});

test('decoders: thousands of random and mutated messages give a value or a DeferError, never anything else', () => {
  const base = samples();
  fc.assert(
    fc.property(hostile(base), (b) => {
      typedOrValue(() => decodeActivation(b, 1 << 20));
      typedOrValue(() => decodeAssignment(b, 1 << 20));
      typedOrValue(() => decodeWeightChunk(b, 1 << 20));
      typedOrValue(() => decodePrefetchList(b, 1 << 20));
      typedOrValue(() => decodeStatus(b));
      typedOrValue(() => parseFrame(b, 1 << 20));
      typedOrValue(() => frameOf({ payload: b }, 1 << 20));
      typedOrValue(() => {
        const a = decodeActivation(b, 1 << 20);
        decodeTensor(a.tensor, 1 << 20);
      });
    }),
    { numRuns: RUNS, seed: 42 },
  );
  // and tensor maps built from arbitrary values
  fc.assert(
    fc.property(
      fc.record(
        {
          dtype: fc.constantFrom('float32', 'int32', 'uint8', 'bogus', 7),
          shape: fc.array(fc.oneof(fc.integer({ min: -2, max: 70000 }), fc.double()), { maxLength: 10 }),
          codec: fc.constantFrom('lz4', 'none', 'zip'),
          size: fc.oneof(fc.nat(), fc.double()),
          crc: fc.nat(),
          data: fc.uint8Array({ maxLength: 256 }),
          precision: fc.constantFrom('float16', 'int8', 'int4', 3),
          scale: fc.oneof(fc.uint8Array({ maxLength: 16 }), fc.constant(new Uint8Array(new Float32Array([Number.NaN, -1]).buffer))),
          offset: fc.uint8Array({ maxLength: 16 }),
        },
        { requiredKeys: [] },
      ),
      (m) => {
        typedOrValue(() => decodeTensor(m, 1 << 20));
      },
    ),
    { numRuns: RUNS, seed: 7 },
  );
});

test('frames: mutated images and tensors are answered with a reason, never a crash (sharp included)', async () => {
  const png = await sharp({ create: { width: 40, height: 30, channels: 3, background: { r: 1, g: 2, b: 3 } } })
    .png()
    .toBuffer();
  const jpeg = await sharp({ create: { width: 40, height: 30, channels: 3, background: { r: 1, g: 2, b: 3 } } })
    .jpeg()
    .toBuffer();
  const input = modelInputFor(flat, loadConfig(undefined, {}, {}).serve, { teachableMachine: false });
  await fc.assert(
    fc.asyncProperty(hostile([png, jpeg, ...samples()]), async (b) => {
      try {
        await frameTensor(parseFrame(b, 1 << 20), input);
      } catch (err) {
        if (!(err instanceof DeferError)) throw new Error(`threw ${(err as Error)?.name}: ${(err as Error)?.message}`);
      }
    }),
    { numRuns: 500, seed: 3 },
  );
});

let broker: RunningBroker;
const closers: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of closers.reverse()) await c();
  await broker?.close();
});

test('handlers: an edge node and a serving dispatcher take 9,000 hostile messages and keep serving, memory flat', { timeout: 120_000 }, async () => {
  broker = await startBroker({ host: '127.0.0.1', port: 0, maxPacketBytes: 1 << 20 });
  const nodes = ['z1', 'z2'].map((id) => new EdgeNode({ id, brokerUrl: broker.url, pipeline: 'fz', backend: 'wasm', maxMessageBytes: 1 << 20, maxQueue: 16, calibrate: false }));
  for (const n of nodes) await n.start();
  closers.push(...nodes.map((n) => () => n.close()));
  // a standby with a weight cache: it reads prefetch lists
  const spare = new EdgeNode({
    id: 'z3',
    brokerUrl: broker.url,
    pipeline: 'fz',
    backend: 'wasm',
    maxMessageBytes: 1 << 20,
    maxQueue: 16,
    calibrate: false,
    weightCache: mkdtempSync(join(tmpdir(), 'defer-fuzz-cache-')),
  });
  await spare.start();
  closers.push(() => spare.close());
  const d = new Dispatcher({ brokerUrl: broker.url, pipeline: 'fz', chunkBytes: 4096, readyTimeoutMs: 20_000, frameTimeoutMs: 20_000, maxInFlight: 4, maxMessageBytes: 1 << 20, codec: 'lz4', qos: 1 });
  await d.connect();
  closers.push(() => d.close());
  const dep = await d.deploy(flat, ['z1', 'z2'], ['block_out']);
  const config = loadConfig(undefined, { 'serve.metricsIntervalMs': 0, 'serve.policy': 'queue', 'serve.queueSize': 10_000 }, {});
  const server = new DeviceServer(d.mqtt, d.topics, dep.stream, modelInputFor(flat, config.serve, { teachableMachine: false }), null, { ...config.serve, id: d.id });
  await server.start();
  closers.push(() => server.close());
  const attacker = await mqtt.connectAsync(broker.url, { reconnectPeriod: 0 });
  closers.push(() => attacker.endAsync());
  const topics = [
    d.topics.stageIn(0),
    d.topics.stageIn(1),
    d.topics.nodeAssign('z1'),
    `${d.topics.root}/node/z2/weights/0`,
    d.topics.results(d.id),
    d.topics.frames('evil'),
    d.topics.nodeStatus('z1'),
    d.topics.nodeAlive('z2'),
    d.topics.nodePrefetch('z3'),
  ];
  const messages = fc.sample(hostile(samples()), { numRuns: 1000, seed: 11 });
  const check = async () => {
    const run = await runChain(dep, syntheticFrames(flat.inputShape, 3, 5));
    assert.equal(run.results.length, 3, 'the chain still answers');
  };
  await check();
  global.gc?.();
  const heap0 = process.memoryUsage().heapUsed;
  for (let round = 0; round < 1; round++) {
    for (const m of messages) for (const t of topics) attacker.publish(t, m, { qos: 0 });
  }
  await attacker.publishAsync('defer/fz/sync', 'x', { qos: 1 }); // everything before it has reached the broker
  await new Promise((r) => setTimeout(r, 1500));
  for (const n of nodes) await n.idle();
  await server.idle();
  await check();
  const heapMB = (process.memoryUsage().heapUsed - heap0) / 1e6;
  const rejected = nodes[0].counters.rejected + nodes[1].counters.rejected + spare.counters.rejected;
  assert.ok(spare.counters.rejected > 300, `the standby rejected the prefetch lists it could not read (${spare.counters.rejected})`);
  const m = server.metrics();
  console.log(
    `# fuzz: ${messages.length * topics.length} hostile messages; nodes rejected ${rejected}, dropped ${nodes[0].counters.dropped + nodes[1].counters.dropped}; the server answered ${m.bad} bad frames of ${m.received}; heap ${heapMB >= 0 ? '+' : ''}${heapMB.toFixed(1)} MB`,
  );
  assert.ok(rejected > 1000, 'the nodes rejected what they could not read');
  assert.equal(m.received, messages.length);
  assert.equal(m.served + m.bad + m.dropped + m.rejected + m.failed, m.received);
  assert.ok(heapMB < 50, `heap growth ${heapMB.toFixed(1)} MB`);
  // a device still gets served
  const dev = await TestDevice.connect(broker.url, 'fz', 'good');
  closers.push(() => dev.close());
  const png = await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 9, g: 9, b: 9 } } })
    .png()
    .toBuffer();
  assert.equal((await dev.request(png)).ok, true);
});
