/**
 * Backpressure, with the nodes as real child processes (slowed down, so the
 * chain is slow and this process stays free to take frames): a device
 * publishing 10x faster than the chain serves, for 20 s; and the queue and
 * reject policies on a burst. Every frame is answered once and counted once.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import sharp from 'sharp';
import { type RunningBroker, startBroker } from '../../broker/broker.js';
import { NodeProcesses } from '../../cli/node-processes.js';
import { loadConfig } from '../../config/schema.js';
import { type Deployment, Dispatcher } from '../../dispatcher/dispatcher.js';
import { runChain } from '../../dispatcher/run/measure-run.js';
import { DeviceServer } from '../../dispatcher/serving/device-server.js';
import { modelInputFor } from '../../dispatcher/serving/start-serving.js';
import { setLogLevel } from '../../lib/core/log.js';
import { percentile } from '../../lib/core/stats.js';
import { initEngine } from '../../lib/model/engine.js';
import type { FlatModel } from '../../lib/model/flat-model.js';
import { loadFlatModel } from '../../lib/model/model-source.js';
import { syntheticFrames } from '../../lib/model/synthetic-frames.js';
import type { Policy } from '../../lib/protocol/index.js';
import { TestDevice } from '../helpers/device.js';

const PIPE = 'flood';
let broker: RunningBroker;
let nodes: NodeProcesses;
let dispatcher: Dispatcher;
let flat: FlatModel;
let deployment: Deployment;
let chainFps = 0;

before(async () => {
  setLogLevel('error');
  await initEngine('wasm');
  broker = await startBroker({ host: '127.0.0.1', port: 0, maxPacketBytes: 1 << 24 });
  nodes = new NodeProcesses({ ids: ['f1', 'f2'], brokerUrl: broker.url, pipeline: PIPE, backend: 'wasm', logLevel: 'error', extraArgs: ['--slowdown', '30'] });
  nodes.start();
  dispatcher = new Dispatcher({
    brokerUrl: broker.url,
    pipeline: PIPE,
    chunkBytes: 65536,
    readyTimeoutMs: 60_000,
    frameTimeoutMs: 30_000,
    maxInFlight: 4,
    maxMessageBytes: 1 << 24,
    codec: 'lz4',
    qos: 1,
  });
  await dispatcher.connect();
  flat = await loadFlatModel('tiny');
  deployment = await dispatcher.deploy(flat, ['f1', 'f2'], ['block_out']);
  const run = await runChain(deployment, syntheticFrames(flat.inputShape, 30, 1));
  chainFps = run.results.length / (run.wallMs / 1000);
});

after(async () => {
  await dispatcher.close();
  await nodes.stop();
  await broker.close();
  flat.dispose();
});

async function server(policy: Policy, queueSize = 8): Promise<DeviceServer> {
  const config = loadConfig(undefined, { 'serve.policy': policy, 'serve.queueSize': queueSize, 'serve.metricsIntervalMs': 0 }, {});
  const s = new DeviceServer(dispatcher.mqtt, dispatcher.topics, deployment.stream, modelInputFor(flat, config.serve, { teachableMachine: false }), null, { ...config.serve, id: dispatcher.id });
  await s.start();
  return s;
}

async function pngFrames(n: number): Promise<Buffer[]> {
  return Promise.all(
    Array.from({ length: n }, (_, i) =>
      sharp({ create: { width: 32, height: 32, channels: 3, background: { r: (i * 37) % 256, g: (i * 91) % 256, b: (i * 13) % 256 } } })
        .png()
        .toBuffer(),
    ),
  );
}

/** Every frame answered exactly once: seqs 1..n, no duplicates. */
function assertAnsweredOnce(results: { seq?: number }[], n: number): void {
  const seqs = results.map((r) => r.seq).sort((a, b) => a! - b!);
  assert.equal(seqs.length, n, 'one answer per frame');
  for (const [i, s] of seqs.entries()) assert.equal(s, i + 1, 'seq');
}

test('flood: a device 10x faster than the chain for 8 s, policy latest: memory bounded, counts add up, latency bounded', { timeout: 120_000 }, async (t) => {
  const s = await server('latest');
  const device = await TestDevice.connect(broker.url, PIPE, 'flood-cam');
  t.after(() => Promise.all([s.close(), device.close()]));
  const frames = await pngFrames(50);
  const rate = Math.max(50, Math.round(chainFps * 10));
  const durationMs = 8_000;
  global.gc?.();
  const mem0 = process.memoryUsage();
  let peakRss = mem0.rss;
  let peakHeap = mem0.heapUsed;
  let maxWaiting = 0;
  const sampler = setInterval(() => {
    const m = process.memoryUsage();
    peakRss = Math.max(peakRss, m.rss);
    peakHeap = Math.max(peakHeap, m.heapUsed);
    maxWaiting = Math.max(maxWaiting, s.metrics().waiting);
  }, 100);
  let published = 0;
  const t0 = performance.now();
  // publish in 10 ms ticks, catching up to the rate
  while (performance.now() - t0 < durationMs) {
    const due = Math.floor(((performance.now() - t0) / 1000) * rate);
    while (published < due) void device.publish(frames[published++ % frames.length]);
    await new Promise((r) => setTimeout(r, 10));
  }
  const results = await device.waitFor(published, 60_000);
  await s.idle();
  clearInterval(sampler);
  const m = await s.close();
  assert.equal(m.received, published, 'every published frame arrived');
  assert.equal(m.served + m.dropped + m.rejected + m.bad + m.failed, m.received, 'served + dropped + rejected + bad + failed = received');
  assert.equal(m.rejected + m.bad + m.failed, 0);
  assert.ok(m.dropped > published / 2, `most frames were dropped: ${m.dropped} of ${published}`);
  assertAnsweredOnce(results, published);
  const served = results.filter((r) => r.ok);
  assert.equal(served.length, m.served);
  assert.ok(results.filter((r) => !r.ok).every((r) => r.error!.kind === 'dropped'));
  assert.ok(maxWaiting <= 1, `latest keeps at most one waiting frame per device (saw ${maxWaiting})`);
  const lat = served.map((r) => r.latencyMs!.total);
  const heapMB = (peakHeap - mem0.heapUsed) / 1e6;
  const rssMB = (peakRss - mem0.rss) / 1e6;
  console.log(
    `# flood: chain ${chainFps.toFixed(1)} frames/s, device ${rate} frames/s for ${durationMs / 1000} s: published ${published}, served ${m.served}, dropped ${m.dropped}; ` +
      `served latency p50 ${percentile(lat, 50).toFixed(0)} ms, p95 ${percentile(lat, 95).toFixed(0)} ms, max ${Math.max(...lat).toFixed(0)} ms; ` +
      `heap +${heapMB.toFixed(1)} MB, rss +${rssMB.toFixed(1)} MB (peak over the start)`,
  );
  // bounded: a growing backlog would reach seconds (8 s of frames) and hundreds of MB
  assert.ok(Math.max(...lat) < 3000, `served latency stays bounded (max ${Math.max(...lat).toFixed(0)} ms)`);
  assert.ok(heapMB < 64, `dispatcher heap growth ${heapMB.toFixed(1)} MB, bound 64 MB`);
  await device.close();
});

test('policies on a burst: queue keeps up to N per device and drops the rest; reject answers busy; each frame answered once', { timeout: 60_000 }, async (t) => {
  const frames = await pngFrames(40);
  for (const [policy, kind] of [
    ['queue', 'dropped'],
    ['reject', 'busy'],
  ] as const) {
    const s = await server(policy, 5);
    const device = await TestDevice.connect(broker.url, PIPE, `burst-${policy}`);
    t.after(() => Promise.all([s.close(), device.close()]));
    await Promise.all(frames.map((f) => device.publish(f)));
    const results = await device.waitFor(frames.length, 30_000);
    await s.idle();
    const m = await s.close();
    assertAnsweredOnce(results, frames.length);
    const notServed = results.filter((r) => !r.ok);
    assert.ok(notServed.length > 0, `${policy}: a burst of 40 against 4 in flight turns frames away`);
    assert.ok(
      notServed.every((r) => r.error!.kind === kind),
      `${policy}: ${kind}`,
    );
    assert.equal(m.served + (policy === 'queue' ? m.dropped : m.rejected), frames.length);
    if (policy === 'queue') {
      assert.ok(m.served >= 4 + 5, `queue: at least the in-flight frames and the queue are served (${m.served})`);
      // served frames of one device come back in the order they were sent
      const seqs = results.filter((r) => r.ok).map((r) => r.seq!);
      assert.deepEqual(
        seqs,
        [...seqs].sort((a, b) => a - b),
      );
    }
    await device.close();
  }
});
