/**
 * Seeing the chain: the dispatcher's /metrics scraped during a run with real
 * node processes (series, labels, counters that grow with frames, parsed as
 * Prometheus text), the HTTP endpoint's refusals, the live page in headless
 * Chromium (every node drawn; a killed node's state on the page within 2 s),
 * and `defer status` reading the same nodes from the broker.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { type RunningBroker, startBroker } from '../../broker/broker.js';
import { loadConfig } from '../../config/schema.js';
import type { Deployment } from '../../dispatcher/chain/deployment.js';
import type { Dispatcher } from '../../dispatcher/dispatcher.js';
import type { DispatcherEvent } from '../../dispatcher/events.js';
import { type Observer, startObserver } from '../../dispatcher/observe/observer.js';
import { startServing } from '../../dispatcher/serving/start-serving.js';
import { setLogLevel } from '../../lib/core/log.js';
import { initEngine } from '../../lib/model/engine.js';
import type { FlatModel } from '../../lib/model/flat-model.js';
import { loadFlatModel } from '../../lib/model/model-source.js';
import { syntheticFrames } from '../../lib/model/synthetic-frames.js';
import { startNodeProcesses, testDispatcher } from '../helpers/chain.js';
import { CLI, ROOT } from '../helpers/common.js';
import { TestDevice } from '../helpers/device.js';

const require = createRequire(import.meta.url);
type Family = { name: string; type: string; metrics: unknown[] };
const parsePrometheus = require('parse-prometheus-text-format') as (text: string) => Family[];

const PIPE = 'obs';
const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((f) => existsSync(f));
let broker: RunningBroker;
let flat: FlatModel;
let d: Dispatcher;
let dep: Deployment;
let observer: Observer;
let procs: ReturnType<typeof startNodeProcesses>;
const events: DispatcherEvent[] = [];

before(async () => {
  setLogLevel('error');
  await initEngine('wasm');
  broker = await startBroker({ host: '127.0.0.1', port: 0, maxPacketBytes: 1 << 24 });
  flat = await loadFlatModel('tiny');
  procs = startNodeProcesses(broker.url, PIPE, ['n1', 'n2', 's1'], 1);
  // batches of up to 2: the nodes' statuses and defer status show them
  d = testDispatcher(broker.url, PIPE, events, { standby: ['s1'], heartbeatTimeoutMs: 3000, batch: 2 });
  await d.connect();
  await d.nodes.waitCapabilities(['n1', 'n2', 's1'], 60_000);
  observer = await startObserver(d, { host: '127.0.0.1', port: 0, standby: ['s1'] });
  dep = await d.deploy(flat, ['n1', 'n2'], ['block_out']);
  const { server } = await startServing(d, dep, flat, loadConfig(undefined, { 'dispatcher.model': 'tiny' }, {}));
  observer.serving(server);
});

after(async () => {
  await observer?.close();
  await d?.close();
  await procs?.stop();
  await broker?.close();
  flat?.dispose();
});

/** GET `path` on the observer with a raw request (no URL normalisation by a client). */
function get(path: string, method = 'GET'): Promise<{ status: number; type: string; body: string }> {
  const { hostname, port } = new URL(observer.url);
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, path, method }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const family = (fams: Family[], name: string) => {
  const f = fams.find((x) => x.name === name);
  assert.ok(f, `metric ${name} is exposed`);
  return f;
};

/** Every sample line of the text: name, labels, value. */
function samples(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  return text
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(l);
      assert.ok(m, `a sample line: ${l}`);
      const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
      return { name: m[1], labels, value: Number(m[3]) };
    });
}

/** The value of the one sample of `name` with these labels (histograms: name_count). */
function value(text: string, name: string, labels: Record<string, string>): number {
  const hits = samples(text).filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
  assert.equal(hits.length, 1, `one ${name}${JSON.stringify(labels)}: ${hits.length}`);
  return hits[0].value;
}

test('/metrics during a run: every series with its labels, parsed as Prometheus text; counters grow with frames', { timeout: 120_000 }, async () => {
  const frames = syntheticFrames(flat.inputShape, 30, 3);
  await Promise.all(frames.slice(0, 20).map((f) => dep.stream.send(f)));
  const device = await TestDevice.connect(broker.url, PIPE, 'cam1');
  const png = await sharp({ create: { width: 40, height: 30, channels: 3, background: { r: 10, g: 200, b: 90 } } })
    .png()
    .toBuffer();
  for (let i = 0; i < 3; i++) assert.equal((await device.request(png)).ok, true);
  await device.close();
  await new Promise((r) => setTimeout(r, 1500)); // a heartbeat from every node

  const res = await get('/metrics');
  assert.equal(res.status, 200);
  assert.match(res.type, /^text\/plain; version=0\.0\.4/);
  const fams = parsePrometheus(res.body); // the text format parses
  const text = res.body;
  for (const name of [
    'defer_stage_frames_total',
    'defer_stage_compute_seconds',
    'defer_stage_decode_seconds',
    'defer_stage_encode_seconds',
    'defer_hop_bytes_total',
    'defer_frames_total',
    'defer_frame_latency_seconds',
    'defer_node_state',
    'defer_node_up',
    'defer_node_queue_length',
    'defer_node_resident_memory_bytes',
    'defer_node_cpu_seconds_total',
    'defer_throughput_frames_per_second',
    'defer_deploy_seconds',
    'defer_device_frames_received_total',
    'defer_device_frames_served_total',
    'defer_device_frames_not_served_total',
    'defer_device_latency_seconds',
    'defer_dispatcher_process_resident_memory_bytes',
  ]) {
    family(fams, name);
    const mine = samples(text).filter((x) => x.name === name || x.name.startsWith(`${name}_`));
    assert.ok(mine.length > 0 && mine.every((x) => x.labels.pipeline === PIPE), `${name} is labelled with its pipeline`);
  }
  assert.equal(value(text, 'defer_stage_frames_total', { node: 'n1', stage: '1' }), 23);
  assert.equal(value(text, 'defer_stage_frames_total', { node: 'n2', stage: '2' }), 23);
  assert.equal(value(text, 'defer_stage_compute_seconds_count', { node: 'n2', stage: '2' }), 23, 'one observation per frame');
  assert.equal(value(text, 'defer_frames_total', {}), 23);
  assert.ok(value(text, 'defer_hop_bytes_total', { from: 'n1', to: 'n2' }) > 0);
  assert.ok(value(text, 'defer_hop_bytes_total', { from: 'dispatcher', to: 'n1' }) > 0);
  assert.ok(value(text, 'defer_hop_bytes_total', { from: 'n2', to: 'dispatcher' }) > 0);
  assert.equal(value(text, 'defer_node_state', { node: 'n1', stage: '1', state: 'ready' }), 1);
  assert.equal(value(text, 'defer_node_state', { node: 'n1', stage: '1', state: 'offline' }), 0);
  assert.equal(value(text, 'defer_node_state', { node: 's1', stage: 'standby', state: 'online' }), 1);
  assert.equal(value(text, 'defer_node_up', { node: 'n2', stage: '2' }), 1);
  assert.ok(value(text, 'defer_node_resident_memory_bytes', { node: 'n1' }) > 50e6, 'RSS from the heartbeat');
  assert.ok(value(text, 'defer_node_cpu_seconds_total', { node: 'n2' }) > 0);
  assert.ok(value(text, 'defer_throughput_frames_per_second', {}) > 0);
  assert.ok(value(text, 'defer_deploy_seconds', {}) > 0);
  assert.equal(value(text, 'defer_device_frames_received_total', { device: 'cam1' }), 3);
  assert.equal(value(text, 'defer_device_frames_served_total', { device: 'cam1' }), 3);
  assert.equal(value(text, 'defer_device_frames_not_served_total', { device: 'cam1', reason: 'dropped' }), 0);
  assert.equal(value(text, 'defer_device_latency_seconds_count', { device: 'cam1' }), 3);

  // the ready-made Grafana dashboard asks only for series that exist
  const dashboard = readFileSync(join(ROOT, 'monitoring', 'grafana-dashboard.json'), 'utf8');
  const asked = new Set([...dashboard.matchAll(/defer_[a-z_]+/g)].map((m) => m[0]));
  assert.ok(asked.size >= 10);
  const exposed = new Set(samples(text).map((x) => x.name));
  for (const name of asked) assert.ok(exposed.has(name), `the dashboard's ${name} is exposed`);

  await Promise.all(frames.slice(20).map((f) => dep.stream.send(f)));
  const again = (await get('/metrics')).body;
  parsePrometheus(again);
  assert.equal(value(again, 'defer_stage_frames_total', { node: 'n1', stage: '1' }), 33, 'the counter grew by the 10 frames');
  assert.equal(value(again, 'defer_frames_total', {}), 33);
  assert.ok(value(again, 'defer_hop_bytes_total', { from: 'n1', to: 'n2' }) > value(text, 'defer_hop_bytes_total', { from: 'n1', to: 'n2' }));
});

test('the HTTP endpoint refuses what it should: unknown paths, traversal, other methods, too many event streams', { timeout: 30_000 }, async () => {
  assert.match(observer.url, /^http:\/\/127\.0\.0\.1:\d+$/, 'bound to 127.0.0.1 by default');
  assert.equal(observer.exposed, false);
  const wide = await startObserver(d, { host: '0.0.0.0', port: 0 });
  assert.equal(wide.exposed, true, 'bound wider: warned about');
  await wide.close();
  for (const path of ['/nope', '/../package.json', '/%2e%2e/package.json', '/page.js/../../package.json', '/..%2f..%2fpackage.json', '/dist/cli/defer.js', '//etc/passwd']) {
    const r = await get(path);
    if (r.status === 200) assert.doesNotMatch(r.body, /"name": "@defer-mqtt|root:/, `${path} must not reach the file system`);
    else assert.equal(r.status, 404, path);
  }
  assert.equal((await get('/', 'POST')).status, 405);
  assert.equal((await get('/metrics', 'DELETE')).status, 405);
  assert.equal((await get('/events', 'HEAD')).status, 200, 'HEAD of the event stream answers and holds no stream');
  const page = await get('/');
  assert.equal(page.status, 200);
  assert.match(page.type, /^text\/html/);
  const snap = JSON.parse((await get('/snapshot')).body) as { chain: { node: string }[] };
  assert.deepEqual(
    snap.chain.map((n) => n.node),
    ['n1', 'n2'],
  );
  // event streams are bounded: the 17th is refused while 16 are open
  const { hostname, port } = new URL(observer.url);
  const open: import('node:http').ClientRequest[] = [];
  const statuses = await Promise.all(
    Array.from(
      { length: 17 },
      (_, i) =>
        new Promise<number>((resolve) => {
          setTimeout(() => {
            const req = request({ hostname, port, path: '/events' }, (res) => resolve(res.statusCode ?? 0));
            req.on('error', () => resolve(-1));
            req.end();
            open.push(req);
          }, i * 20);
        }),
    ),
  );
  for (const r of open) r.destroy();
  assert.equal(statuses.filter((s) => s === 200).length, 16);
  assert.equal(statuses.filter((s) => s === 503).length, 1);
});

test('defer status: the nodes from their statuses and heartbeats on the broker, as a table and as JSON', { timeout: 60_000 }, async () => {
  const run = promisify(execFile);
  const { stdout } = await run(process.execPath, [CLI, 'status', '--broker', broker.url, '--pipeline', PIPE, '--json', '--wait', '1.5', '--log-level', 'warn'], { cwd: ROOT });
  const r = JSON.parse(stdout) as { nodes: { node: string; state: string; stage: string | null; batch: number | null; rssBytes: number | null; heardSecondsAgo: number | null }[] };
  const by = new Map(r.nodes.map((n) => [n.node, n]));
  assert.deepEqual([by.get('n1')?.state, by.get('n1')?.stage, by.get('n2')?.stage, by.get('s1')?.state, by.get('s1')?.stage], ['ready', '1', '2', 'online', null]);
  assert.deepEqual([by.get('n1')?.batch, by.get('s1')?.batch], [2, null]);
  assert.ok((by.get('n1')?.rssBytes ?? 0) > 0 && by.get('n1')?.heardSecondsAgo !== null, 'figures from a live heartbeat');
  const table = await run(process.execPath, [CLI, 'status', '--broker', broker.url, '--pipeline', PIPE, '--wait', '1.5', '--log-level', 'warn'], { cwd: ROOT });
  assert.match(table.stdout, /^node +state +deployment +stage +workers +frames +queue +memory MB +backend +host +heard$/m);
  assert.match(table.stdout, /^n2 +ready +\S+ +2 +1 \(batch 2\) /m);
  const bad = await run(process.execPath, [CLI, 'status', '--broker', broker.url, '--interval', 'x', '--watch'], { cwd: ROOT }).then(
    () => assert.fail('a bad --interval must fail'),
    (e: { code: number; stderr: string }) => e,
  );
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--interval must be a number of seconds/);
});

test('the live page in headless Chromium: every node of the chain drawn; a killed node shows its state within 2 s', {
  timeout: 120_000,
  skip: CHROMIUM ? false : 'chromium is not installed (apt-get install -y chromium; .ci/run installs it)',
}, async () => {
  const { default: puppeteer } = await import('puppeteer-core');
  const browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  try {
    const page = await browser.newPage();
    await page.goto(`${observer.url}/`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('.node[data-node="n2"][data-state="ready"]', { timeout: 15_000 });
    const drawn = await page.$$eval('#chain .node', (ns) => ns.map((n) => `${(n as HTMLElement).dataset.node}:${(n as HTMLElement).dataset.state}`));
    assert.deepEqual(drawn, ['n1:ready', 'n2:ready']);
    assert.deepEqual(await page.$$eval('#standbys .node', (ns) => ns.map((n) => (n as HTMLElement).dataset.node)), ['s1']);
    const killedAt = performance.now();
    procs.children.get('n2')!.kill('SIGKILL');
    await page.waitForSelector('.node[data-node="n2"][data-state="offline"]', { timeout: 2000 });
    const ms = performance.now() - killedAt;
    process.stderr.write(`# the page showed n2 offline ${ms.toFixed(0)} ms after kill -9\n`);
    // and then the mended chain: the standby runs stage 2
    await page.waitForSelector('#chain .node[data-node="s1"][data-state="ready"]', { timeout: 30_000 });
    assert.ok(await page.$eval('#events', (e) => /goes to standby s1/.test(e.textContent ?? '')), 'the repair is listed as it happens');
  } finally {
    await browser.close();
  }
});
