/**
 * The Node-RED nodes with node-red-node-test-helper (a real Node-RED runtime
 * in this process): every node loads, configures and runs; a message in gives
 * the expected message out; bad configurations give a red status and a log
 * line, never a crash; closing releases the broker, the connections and the
 * model's memory.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { after, afterEach, before, test } from 'node:test';
import mqtt from 'mqtt';
import sharp from 'sharp';
import { loadConfig } from '../../config/schema.js';
import { modelInputFor } from '../../dispatcher/serving/start-serving.js';
import { setLogLevel } from '../../lib/core/log.js';
import { initEngine, tf } from '../../lib/model/engine.js';
import { loadFlatModel } from '../../lib/model/model-source.js';
import { preprocessImage } from '../../lib/model/preprocess.js';
import deferBroker from '../../node-red-nodes/defer-broker.js';
import deferDispatcher from '../../node-red-nodes/defer-dispatcher.js';
import deferEdgeNode from '../../node-red-nodes/defer-edge-node.js';
import deferStatus from '../../node-red-nodes/defer-status.js';
import { freePort, IMAGES, REAL_MODELS, waitUntil } from '../helpers/common.js';

const require = createRequire(import.meta.url);
// eslint-disable-next-line @typescript-eslint/no-require-imports
const helper = require('node-red-node-test-helper') as {
  init(path: string): void;
  startServer(cb: () => void): void;
  stopServer(cb: () => void): void;
  load(nodes: unknown[], flow: unknown[], creds: Record<string, unknown>, cb: () => void): void;
  unload(): Promise<void>;
  getNode(id: string): TestNode;
  log(): { args: unknown[][] };
};
helper.init(require.resolve('node-red'));

interface TestNode {
  id: string;
  status: (s: { fill?: string; text?: string }) => void;
  receive(msg: Record<string, unknown>): void;
  on(ev: string, cb: (msg: Record<string, unknown>) => void): void;
}

const NODES = [deferBroker, deferDispatcher, deferEdgeNode, deferStatus];

const load = (flow: unknown[], creds: Record<string, unknown> = {}) => new Promise<void>((r) => helper.load(NODES, flow, creds, r));

// Every status any node sets, from its creation on: Node-RED keeps no last status to ask for.
const statusLog = new Map<string, { fill?: string; text?: string }[]>();
const statusWaiters: (() => void)[] = [];
{
  const NodeClass = require(require.resolve('@node-red/runtime/lib/nodes/Node', { paths: [require.resolve('node-red')] })) as { prototype: { status(this: { id: string }, s: object): void } };
  const orig = NodeClass.prototype.status;
  NodeClass.prototype.status = function (this: { id: string }, st: { fill?: string; text?: string }) {
    statusLog.set(this.id, [...(statusLog.get(this.id) ?? []), st]);
    for (const w of statusWaiters.splice(0)) w();
    return orig.call(this, st);
  };
}

function watchStatus(n: { id: string }): { all: { fill?: string; text?: string }[]; until(re: RegExp, timeoutMs?: number): Promise<{ fill?: string; text?: string }> } {
  return {
    get all() {
      return statusLog.get(n.id) ?? [];
    },
    async until(re, timeoutMs = 60_000) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const hit = (statusLog.get(n.id) ?? []).find((st) => re.test(st.text ?? ''));
        if (hit) return hit;
        if (Date.now() > end) throw new Error(`node ${n.id}: no status matching ${re} within ${timeoutMs} ms; saw: ${(statusLog.get(n.id) ?? []).map((st) => st.text).join(' | ')}`);
        await new Promise<void>((r) => {
          statusWaiters.push(r);
          setTimeout(r, 200);
        });
      }
    },
  };
}

/** A broker, two edge nodes, a dispatcher on the tiny CNN, a status node, and helper nodes after them. */
function pipelineFlow(port: number, extra: Record<string, unknown> = {}) {
  return [
    { id: 'b', type: 'defer-broker', mode: 'embedded', host: '127.0.0.1', port, pipeline: 'nrtest' },
    { id: 'e1', type: 'defer-edge-node', broker: 'b', nodeId: 'n1' },
    { id: 'e2', type: 'defer-edge-node', broker: 'b', nodeId: 'n2' },
    { id: 'd', type: 'defer-dispatcher', broker: 'b', model: 'tiny', nodes: 'n1,n2', cuts: 'block_out', codec: 'lz4', topK: 3, wires: [['out']], ...extra },
    { id: 's', type: 'defer-status', broker: 'b', metrics: true, wires: [['statusOut']] },
    { id: 'out', type: 'helper' },
    { id: 'statusOut', type: 'helper' },
  ];
}

/** A PNG of one colour, its input tensor for the tiny CNN, and the tiny CNN's scores for it run whole, here. */
async function imageAndLocalScores(background: { r: number; g: number; b: number }, width: number, height: number) {
  const png = await sharp({ create: { width, height, channels: 3, background } })
    .png()
    .toBuffer();
  const flat = await loadFlatModel('tiny');
  const input = modelInputFor(flat, loadConfig(undefined, {}, {}).serve, { teachableMachine: false });
  const x = await preprocessImage(png, input.preprocess!);
  const local = tf.tidy(() => flat.run(tf.tensor(x.data as Float32Array, x.shape)) as tf.Tensor);
  const want = Array.from((await local.data()) as Float32Array);
  tf.dispose(local);
  flat.dispose();
  return { png, x, want };
}

before(async () => {
  setLogLevel('error');
  await initEngine('wasm');
  await new Promise<void>((r) => helper.startServer(r));
});

afterEach(async () => {
  await helper.unload();
  statusLog.clear();
});

after(async () => {
  await new Promise<void>((r) => helper.stopServer(r));
});

test('a flow of broker, 2 edge nodes, dispatcher and status: an image in, the local prediction out, the message kept', { timeout: 120_000 }, async () => {
  const port = await freePort();
  const tensors0 = tf.memory().numTensors;
  await load(pipelineFlow(port));
  const d = helper.getNode('d');
  const status = watchStatus(d);
  const statusMsgs: Record<string, unknown>[] = [];
  helper.getNode('statusOut').on('input', (m) => statusMsgs.push(m));
  await status.until(/^ready \(2 nodes: n1 \| n2\)$/);
  assert.ok(
    status.all.some((s) => /deploying/.test(s.text ?? '')),
    'it showed deploying first',
  );
  // the image, and the same through the local whole model
  const { png, x, want } = await imageAndLocalScores({ r: 10, g: 200, b: 90 }, 48, 40);
  const out = helper.getNode('out');
  const got = new Promise<Record<string, unknown>>((r) => out.on('input', r));
  d.receive({ payload: png, topic: 'cameras/cam1/image', _msgid: 'm-1', mine: { keep: true } });
  const msg = await got;
  assert.deepEqual(msg.payload, want, 'the chained scores are the local ones, exactly');
  assert.equal(msg.topic, 'cameras/cam1/image');
  assert.equal(msg._msgid, 'm-1');
  assert.deepEqual(msg.mine, { keep: true });
  assert.equal((msg.topk as unknown[]).length, 3);
  assert.equal(typeof msg.frameId, 'string');
  assert.ok(typeof msg.latencyMs === 'number' && msg.latencyMs >= 0);
  assert.equal((msg.hops as unknown[]).length, 2);
  // a typed array with msg.shape works too
  const got2 = new Promise<Record<string, unknown>>((r) => out.on('input', r));
  d.receive({ payload: x.data, shape: [32, 32, 3] });
  assert.deepEqual((await got2).payload, want);
  // the status node reported both edge nodes
  const seen = new Set(statusMsgs.map((m) => m.topic));
  assert.ok(seen.has('status/n1') && seen.has('status/n2'), [...seen].join(','));
  await helper.unload();
  // closed: the embedded broker is gone, and the stages and the model are freed
  await assert.rejects(mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 1000 }));
  assert.equal(tf.memory().numTensors, tensors0, 'no tensors left behind');
});

test('replicas, workers and batches: both edge nodes serve the one stage on 2 worker threads each, in batches of up to 2; the status says so; scores exact', { timeout: 120_000 }, async () => {
  const port = await freePort();
  await load(pipelineFlow(port, { replicas: '2', workers: 2, batch: 2, cuts: 'auto' }));
  const d = helper.getNode('d');
  await watchStatus(d).until(/^ready \(2 nodes: n1x2\+n2x2\)$/);
  await watchStatus(helper.getNode('s')).until(/x2 workers, batches of 2/);
  const { png, want } = await imageAndLocalScores({ r: 200, g: 20, b: 90 }, 40, 30);
  const out = helper.getNode('out');
  const got: Record<string, unknown>[] = [];
  out.on('input', (m) => got.push(m));
  for (let i = 0; i < 12; i++) d.receive({ payload: png, _msgid: `r-${i}` });
  await waitUntil(() => got.length >= 12, 30_000);
  assert.equal(got.length, 12);
  for (const m of got) assert.deepEqual(m.payload, want, 'every replica and worker gives the local scores, exactly');
  const nodes = new Set(got.map((m) => (m.hops as { node: string }[])[0].node));
  assert.deepEqual([...nodes].sort(), ['n1', 'n2'], 'both replicas answered');
});

test("the dispatcher node with a graph model (TF-Hub MobileNetV2) and a short node name as its cut: a real photo in, the whole graph's scores out", { timeout: 120_000 }, async () => {
  const port = await freePort();
  const model = join(REAL_MODELS, 'graph-mobilenet-v2');
  await load(pipelineFlow(port, { model, cuts: 'expanded_conv_8/add', topK: 2 }));
  const d = watchStatus(helper.getNode('d'));
  await d.until(/^ready \(2 nodes: n1 \| n2\)$/);
  const jpeg = readFileSync(join(IMAGES, 'n02095889_Sealyham_terrier.JPEG'));
  const flat = await loadFlatModel(model);
  const input = modelInputFor(flat, loadConfig(undefined, {}, {}).serve, { teachableMachine: false });
  const x = await preprocessImage(jpeg, input.preprocess!);
  const local = tf.tidy(() => flat.run(tf.tensor(x.data as Float32Array, x.shape)));
  const want = Array.from((await local.data()) as Float32Array);
  tf.dispose(local);
  flat.dispose();
  const out = helper.getNode('out');
  const got = new Promise<Record<string, unknown>>((r) => out.on('input', r));
  helper.getNode('d').receive({ payload: jpeg });
  const msg = await got;
  assert.deepEqual(msg.payload, want, "the chained scores are the whole graph's, exactly");
  assert.equal((msg.hops as unknown[]).length, 2);
});

test('edge node status shows its stage (k of n) and the frames it served; the dispatcher shows a node that went offline, mends the chain, and says so', { timeout: 120_000 }, async () => {
  const port = await freePort();
  await load(pipelineFlow(port));
  const e2 = watchStatus(helper.getNode('e2'));
  const d = watchStatus(helper.getNode('d'));
  await d.until(/^ready/);
  await e2.until(/^n2: stage 2 of 2, 0 frames served$/);
  const { png } = await imageAndLocalScores({ r: 90, g: 20, b: 200 }, 30, 30);
  const served = new Promise<unknown>((r) => helper.getNode('out').on('input', r));
  helper.getNode('d').receive({ payload: png });
  await served;
  await e2.until(/^n2: stage 2 of 2, 1 frame served(, [\d.]+\/s)?$/, 10_000);
  // what n2's Last Will would publish if its host lost power
  const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0 });
  await c.publishAsync('defer/nrtest/node/n2/status', JSON.stringify({ v: 1, node: 'n2', state: 'offline', at: Date.now() }), { qos: 1, retain: true });
  await c.endAsync();
  const down = await d.until(/^node n2 down: mending$/);
  assert.equal(down.fill, 'yellow');
  // no standby: n2's stage is merged into n1, which now runs the whole model (n2, alive, stands by)
  const mended = await d.until(/^ready \(1 node: n1\)$/);
  assert.equal(mended.fill, 'green');
  await e2.until(/^n2: waiting for a stage$/);
});

test('the broker config node owns the subscriptions of the nodes that use it: one closing does not cut off another', { timeout: 60_000 }, async () => {
  const port = await freePort();
  await load([
    { id: 'b', type: 'defer-broker', mode: 'embedded', host: '127.0.0.1', port, pipeline: 'nrsub' },
    { id: 's1', type: 'defer-status', broker: 'b', metrics: false, wires: [['h1']] },
    { id: 's2', type: 'defer-status', broker: 'b', metrics: false, wires: [['h2']] },
    { id: 'h1', type: 'helper' },
    { id: 'h2', type: 'helper' },
  ]);
  const got: Record<string, string[]> = { h1: [], h2: [] };
  for (const h of ['h1', 'h2']) helper.getNode(h).on('input', (msg) => got[h].push(String(msg.topic)));
  await watchStatus(helper.getNode('s1')).until(/listening/);
  await watchStatus(helper.getNode('s2')).until(/listening/);
  const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`);
  const say = (node: string) => c.publishAsync(`defer/nrsub/node/${node}/status`, JSON.stringify({ v: 1, node, state: 'online', at: Date.now() }), { qos: 1 });
  const until = async (ok: () => boolean) => {
    await waitUntil(() => ok(), 30_000);
  };
  await say('x1');
  await until(() => got.h1.length > 0 && got.h2.length > 0);
  assert.deepEqual([got.h1, got.h2], [['status/x1'], ['status/x1']], 'both users of the one subscription get the message');
  await (helper.getNode('s1') as unknown as { close(removed: boolean): Promise<void> }).close(true);
  await say('x2');
  await until(() => got.h2.length > 1);
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual([got.h1, got.h2], [['status/x1'], ['status/x1', 'status/x2']], 's1 unsubscribed on close; s2 still subscribed');
  await c.endAsync();
});

test('bad configurations: a red status and a log line, no crash; a message to a misconfigured dispatcher is an error', { timeout: 60_000 }, async () => {
  const port = await freePort();
  await load([
    { id: 'b', type: 'defer-broker', mode: 'embedded', port, pipeline: 'bad pipeline!' },
    { id: 'b2', type: 'defer-broker', mode: 'external', url: 'not a url', pipeline: 'ok' },
    { id: 'good', type: 'defer-broker', mode: 'embedded', port, pipeline: 'ok' },
    { id: 'd1', type: 'defer-dispatcher', broker: 'good', model: '', nodes: 'n1' },
    { id: 'd2', type: 'defer-dispatcher', broker: 'good', model: 'tiny', nodes: 'n1,n2', cuts: 'a,b,c' },
    { id: 'd3', type: 'defer-dispatcher', broker: 'missing', model: 'tiny', nodes: 'n1' },
    { id: 'd4', type: 'defer-dispatcher', broker: 'b', model: 'tiny', nodes: 'n1' },
    { id: 'd5', type: 'defer-dispatcher', broker: 'b2', model: 'tiny', nodes: 'bad id!' },
    { id: 'd6', type: 'defer-dispatcher', broker: 'good', model: 'tiny', nodes: 'n1,n2', standby: 'n3,n2' },
    { id: 'd7', type: 'defer-dispatcher', broker: 'good', model: 'tiny', nodes: 'n1,n2', precision: 'int4' },
    { id: 'd8', type: 'defer-dispatcher', broker: 'good', model: 'tiny', nodes: 'n1,n2', precision: 'int8,int8' },
    { id: 'd9', type: 'defer-dispatcher', broker: 'good', model: 'tiny', nodes: 'n1,n2', replicas: '2,1' },
    { id: 'd10', type: 'defer-dispatcher', broker: 'good', model: 'tiny', nodes: 'n1,n2', workers: 'many' },
    { id: 'd11', type: 'defer-dispatcher', broker: 'good', model: 'tiny', nodes: 'n1,n2', batch: 17 },
    { id: 'e1', type: 'defer-edge-node', broker: 'good', nodeId: 'has space' },
    { id: 's1', type: 'defer-status' },
  ]);
  const errors = helper
    .log()
    .args.map((a) => a[0] as { level?: number; msg?: unknown; id?: string })
    .filter((e) => e?.level === 20)
    .map((e) => `${e.id}: ${String(e.msg)}`);
  const expect: [string, RegExp][] = [
    ['d1', /no model: give a model.json path or a zoo name/],
    ['d2', /3 cuts make 4 stages, but there are 2 nodes/],
    ['d3', /no DEFER broker configured/],
    ['d4', /broker: pipeline 'bad pipeline!' must be 1-64 letters/],
    ['d5', /broker: broker URL 'not a url' must look like mqtt:\/\/host:1883/],
    ['d6', /'n2' is both an edge node of the chain and a standby/],
    ['d7', /precision 'int4' must be auto, or one of lossless, float16, int8/],
    ['d8', /precision has 2 values; 2 stages have 3 hops/],
    ['d9', /replicas 2,1 need 3 nodes, but 2 are given/],
    ['d10', /workers must be a positive integer/],
    ['d11', /batch must be a whole number from 1 to 16 \(frames an engine computes in one call; 1: none\), not '17'/],
    ['e1', /node id 'has space' must be 1-64 letters/],
    ['s1', /no DEFER broker configured/],
  ];
  for (const [id, re] of expect)
    assert.ok(
      errors.some((e) => e.startsWith(`${id}:`) && re.test(e)),
      `${id}: ${re} in\n${errors.join('\n')}`,
    );
  // an input to a misconfigured dispatcher is reported as an error, and the runtime goes on
  const d1 = helper.getNode('d1') as TestNode & { error: (e: unknown) => void };
  const reported = new Promise<unknown>((r) => {
    const orig = d1.error.bind(d1);
    d1.error = (e: unknown) => {
      r(e);
      orig(e);
    };
  });
  d1.receive({ payload: Buffer.from('x') });
  assert.match(String(await reported), /not configured: no model/);
});

test('a model that cannot be loaded or an unreachable broker: red status with the reason', { timeout: 90_000 }, async () => {
  const port = await freePort();
  const closedPort = await freePort();
  await load([
    { id: 'b', type: 'defer-broker', mode: 'embedded', port, pipeline: 'm' },
    { id: 'x', type: 'defer-broker', mode: 'external', url: `mqtt://127.0.0.1:${closedPort}`, pipeline: 'm' },
    { id: 'd', type: 'defer-dispatcher', broker: 'b', model: '/no/such/model.json', nodes: 'n1' },
    { id: 'e', type: 'defer-edge-node', broker: 'x', nodeId: 'n9' },
  ]);
  await watchStatus(helper.getNode('d')).until(/^error: model '\/no\/such\/model.json' is neither/);
  await watchStatus(helper.getNode('e')).until(/cannot connect to the MQTT broker/);
});

test("frames from an MQTT topic on the broker node's own connection, sent as soon as it subscribed (while it deploys): each answered, its prediction published with the labels given", {
  timeout: 120_000,
}, async () => {
  const port = await freePort();
  const labels = 'zero,one,two,three,four,five,six,seven,eight,nine';
  const flow = pipelineFlow(port, { topic: 'cameras/+/image', replyTopic: 'cameras/+/prediction', labels, cuts: 'auto' });
  await load(flow);
  const { png, want } = await imageAndLocalScores({ r: 30, g: 60, b: 220 }, 40, 30);
  // a camera, connected as soon as the embedded broker listens: before the chain is deployed
  let c: mqtt.MqttClient | undefined;
  for (let i = 0; i < 300 && !c; i++) {
    c = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 1000 }).catch(() => undefined);
    if (!c) await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(c, 'the embedded broker listens');
  const published: { topic: string; body: { label: string; score: number; topk: { label: string; index: number; score: number }[] } }[] = [];
  c.on('message', (topic, payload) => published.push({ topic, body: JSON.parse(payload.toString()) }));
  await c.subscribeAsync('cameras/+/prediction', { qos: 1 });
  const out: Record<string, unknown>[] = [];
  helper.getNode('out').on('input', (m) => out.push(m));
  // the dispatcher subscribes as soon as its connection is up (a frame before that has no subscriber, as with any MQTT
  // topic): wait for its subscription, then send while it still deploys
  const d = watchStatus(helper.getNode('d'));
  await d.until(/loading model/);
  const early = !d.all.some((st) => /^ready/.test(st.text ?? ''));
  await c.publishAsync('cameras/cam7/image', png, { qos: 1 });
  await waitUntil(() => published.length > 0 && out.length > 0, 60_000);
  process.stderr.write(`the camera's frame was sent ${early ? 'before' : 'after'} the dispatcher was ready\n`);
  assert.equal(out.length, 1);
  assert.equal(out[0].topic, 'cameras/cam7/image');
  assert.deepEqual(out[0].payload, want, 'the local scores, exactly');
  assert.equal(published.length, 1);
  assert.equal(published[0].topic, 'cameras/cam7/prediction');
  const best = want.indexOf(Math.max(...want));
  assert.equal(published[0].body.label, labels.split(',')[best]);
  assert.deepEqual(
    published[0].body.topk.map((k) => k.index),
    [...want.keys()].sort((a, b) => want[b] - want[a] || a - b).slice(0, 3),
  );
  assert.deepEqual((out[0].prediction as { label: string }).label, published[0].body.label);
  await c.endAsync();
});

test('the port of the embedded broker taken: every node shows the same short, whole status; the broker node logs what to do once; a message gets a one-line error', { timeout: 60_000 }, async () => {
  const { createServer } = await import('node:net');
  const holder = createServer();
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
  const port = (holder.address() as { port: number }).port;
  try {
    await load(pipelineFlow(port));
    const want = `port ${port} in use: set the DEFER broker to external`;
    for (const id of ['d', 'e1', 'e2', 's']) await watchStatus(helper.getNode(id)).until(new RegExp(`^${want}$`), 30_000);
    const errors = helper
      .log()
      .args.map((a) => a[0] as { level?: number; msg?: unknown; id?: string })
      .filter((e) => e?.level === 20)
      .map((e) => `${e.id}: ${String(e.msg)}`);
    assert.deepEqual(
      errors.filter((e) => /is taken/.test(e)),
      [
        `b: 127.0.0.1:${port} is taken: set Broker to "external", URL mqtt://127.0.0.1:${port} (the broker already there, on most Node-RED hosts Mosquitto), and deploy; or give the embedded broker a free port (docs/node-red.md, "Port 1883 taken")`,
      ],
    );
    assert.deepEqual(
      errors.filter((e) => !e.startsWith('b:')),
      [],
      'the nodes that use it only show it',
    );
    const d = helper.getNode('d') as TestNode & { error: (e: unknown) => void };
    const reported = new Promise<unknown>((r) => {
      const orig = d.error.bind(d);
      d.error = (e: unknown, m?: unknown) => {
        r(e);
        (orig as (e: unknown, m?: unknown) => void)(e, m);
      };
    });
    d.receive({ payload: Buffer.from('x') });
    assert.equal(await reported, `not started: ${want}`);
  } finally {
    holder.close();
  }
});
