/**
 * A real Node-RED runtime (the node-red package, as a process, with its own
 * throwaway user directory and a free port): our package installed into it
 * the way a user installs it, the editor files served, the example flow taken
 * from the runtime's examples library and deployed through the admin API, and
 * frames from an ordinary MQTT client answered with the local predictions.
 * (node-red-editor.test.ts does the same through the editor, in Chromium.)
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import sharp from 'sharp';
import { loadConfig } from '../../config/schema.js';
import { modelInputFor } from '../../dispatcher/serving/start-serving.js';
import { initEngine, tf } from '../../lib/model/engine.js';
import { loadFlatModel } from '../../lib/model/model-source.js';
import { preprocessImage } from '../../lib/model/preprocess.js';
import { topK } from '../../lib/protocol/index.js';
import { freePort, ROOT, waitUntil } from '../helpers/common.js';

const require = createRequire(import.meta.url);
const PKG = '@defer-mqtt/node-red-defer';
const EXAMPLE = 'DEFER - camera frames to predictions';

let red: ChildProcess | undefined;
after(() => {
  red?.kill('SIGINT');
});

test('Node-RED runtime: our package installs, its node types and editor files load, the example flow deploys and serves MQTT frames with the local predictions', { timeout: 300_000 }, async () => {
  const userDir = mkdtempSync(join(tmpdir(), 'defer-nr-'));
  writeFileSync(join(userDir, 'package.json'), JSON.stringify({ name: 'node-red-project', private: true }));
  // as a user would: npm install <this package> in the user directory (a local folder: no network needed)
  await promisify(execFile)('npm', ['install', ROOT, '--no-audit', '--no-fund', '--offline', '--ignore-scripts'], { cwd: userDir });
  const port = await freePort();
  const mqttPort = await freePort();
  const api = `http://127.0.0.1:${port}`;
  let log = '';
  const redJs = join(require.resolve('node-red/package.json'), '..', 'red.js'); // the node-red command
  red = spawn(process.execPath, [redJs, '--userDir', userDir, '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  red.stdout!.on('data', (d) => (log += d));
  red.stderr!.on('data', (d) => (log += d));
  let up = false;
  for (let i = 0; i < 300 && !up; i++) {
    up = await fetch(`${api}/settings`).then(
      (r) => r.ok,
      () => false,
    );
    if (!up) await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(up, `Node-RED answers on ${api}\n${log}`);
  // 1. the runtime lists our node types, from our module, without errors
  const sets = (await (await fetch(`${api}/nodes`, { headers: { Accept: 'application/json' } })).json()) as { module: string; types: string[]; enabled: boolean; err?: string }[];
  const ours = sets.filter((s) => s.module === PKG);
  assert.deepEqual(ours.flatMap((s) => s.types).sort(), ['defer-broker', 'defer-dispatcher', 'defer-edge-node', 'defer-status'], log);
  assert.ok(
    ours.every((s) => s.enabled && !s.err),
    JSON.stringify(ours),
  );
  // 2. and serves their editor files: registration, form, help
  const html = await (await fetch(`${api}/nodes`, { headers: { Accept: 'text/html' } })).text();
  for (const t of ['defer-broker', 'defer-dispatcher', 'defer-edge-node', 'defer-status']) {
    assert.ok(html.includes(`registerType('${t}'`), `${t} registered in the editor`);
    assert.ok(html.includes(`data-template-name="${t}"`), `${t} has its form`);
    assert.ok(html.includes(`data-help-name="${t}"`), `${t} has its help`);
  }
  // 3. the example flow, from the runtime's examples library (the editor's Import > Examples menu)
  const modules = (await (await fetch(`${api}/library/examples/flows/`)).json()) as string[];
  assert.ok(modules.includes(PKG), `${PKG} has examples: ${modules.join(', ')}`);
  const listed = (await (await fetch(`${api}/library/examples/flows/${PKG}`)).json()) as { fn: string }[];
  assert.deepEqual(listed, [{ fn: EXAMPLE }, { fn: 'DEFER - with an existing MQTT broker' }]);
  const flow = (await (await fetch(`${api}/library/examples/flows/${PKG}/${encodeURIComponent(EXAMPLE)}`)).json()) as Record<string, unknown>[];
  for (const n of flow) if (n.type === 'defer-broker') n.port = String(mqttPort);
  const deployed = await fetch(`${api}/flows`, { method: 'POST', headers: { 'Content-Type': 'application/json', 'Node-RED-Deployment-Type': 'full' }, body: JSON.stringify(flow) });
  assert.equal(deployed.status, 204, await deployed.text());
  // 4. an ordinary MQTT client: wait for the two edge nodes, then send frames
  let client: mqtt.MqttClient | undefined;
  for (let i = 0; i < 100 && !client; i++) {
    client = await mqtt.connectAsync(`mqtt://127.0.0.1:${mqttPort}`, { reconnectPeriod: 0, connectTimeout: 1000 }).catch(() => undefined);
    if (!client) await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(client, `the flow's embedded broker came up on ${mqttPort}\n${log}`);
  const ready = new Set<string>();
  const predictions: { topk: { label: string; index: number; score: number }[] }[] = [];
  client.on('message', (topic, payload) => {
    if (topic.endsWith('/status')) {
      const s = JSON.parse(payload.toString()) as { node: string; state: string };
      if (s.state === 'ready') ready.add(s.node);
    } else predictions.push(JSON.parse(payload.toString()));
  });
  await client.subscribeAsync(['defer/nodered/node/+/status', 'cameras/cam1/prediction'], { qos: 1 });
  await waitUntil(() => ready.size >= 2, 60_000, 100);
  assert.equal(ready.size, 2, `both edge nodes ready\n${log}`);
  // the local reference: the same images, the same preprocessing, the whole model in this process
  await initEngine('wasm');
  const flat = await loadFlatModel('tiny');
  const input = modelInputFor(flat, loadConfig(undefined, {}, {}).serve, { teachableMachine: false });
  const images = await Promise.all(
    [
      [64, 48, 'jpeg'],
      [32, 32, 'png'],
      [100, 60, 'jpeg'],
    ].map(([w, h, fmt], i) => {
      const img = sharp({ create: { width: w as number, height: h as number, channels: 3, background: { r: 40 * i, g: 200 - 50 * i, b: 90 } } });
      return (fmt === 'png' ? img.png() : img.jpeg()).toBuffer();
    }),
  );
  const want: ReturnType<typeof topK>[] = [];
  for (const img of images) {
    const x = await preprocessImage(img, input.preprocess!);
    const y = tf.tidy(() => flat.run(tf.tensor(x.data as Float32Array, x.shape)) as tf.Tensor);
    want.push(topK((await y.data()) as Float32Array, 3, null));
    y.dispose();
  }
  flat.dispose();
  // the dispatcher took its frames topic on the broker node's connection before it deployed: each frame is answered
  // once, the first too (no second MQTT connection that could still be waiting to connect)
  for (const img of images) {
    const n = predictions.length;
    await client.publishAsync('cameras/cam1/image', img, { qos: 1 });
    await waitUntil(() => predictions.length !== n, 30_000, 100);
  }
  assert.deepEqual(
    predictions.map((p) => p.topk),
    want,
    'the flow answers each frame with the local top 3 (labels: the class indices of a model without labels), exactly',
  );
  await client.endAsync();
  red.kill('SIGINT');
  await new Promise((r) => red!.once('exit', r));
  red = undefined;
});
