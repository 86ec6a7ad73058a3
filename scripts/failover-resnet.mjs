// ResNet50 on 3 edge-node processes (+ 1 standby); kill -9 the middle node after 60 results.
// Usage: npm run build && node scripts/failover-resnet.mjs standby|standby-noprefetch|merge [frames]

import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startBroker } from '../dist/broker/broker.js';
import { NodeProcesses } from '../dist/cli/node-processes.js';
import { Dispatcher } from '../dist/dispatcher/dispatcher.js';
import { runLocal } from '../dist/dispatcher/run-frames.js';
import { initEngine } from '../dist/lib/engine.js';
import { syntheticFrames } from '../dist/lib/frames.js';
import { loadFlatModel } from '../dist/lib/model-source.js';

const mode = process.argv[2] ?? 'standby';
const N = Number(process.argv[3] ?? 200);
await initEngine('wasm');
const broker = await startBroker({ host: '127.0.0.1', port: 0, maxPacketBytes: 1 << 26 });
const flat = await loadFlatModel('resnet50');
const frames = syntheticFrames(flat.inputShape, N, 3);
const local = await runLocal(flat.model, frames);
const cache = mkdtempSync(join(tmpdir(), 'fo-rn-'));
const withStandby = mode.startsWith('standby');
const ids = withStandby ? ['n1', 'n2', 'n3', 's1'] : ['n1', 'n2', 'n3'];
const procs = new NodeProcesses({
  ids,
  brokerUrl: broker.url,
  pipeline: 'rn',
  backend: 'wasm',
  logLevel: 'warn',
  argsFor: (id) => ['--weight-cache', join(cache, id)],
  onLine: (id, l) => console.error(`[${id}] ${l}`),
});
procs.start();
const t = () => (performance.now() / 1000).toFixed(2);
const d = new Dispatcher({
  brokerUrl: broker.url,
  pipeline: 'rn',
  chunkBytes: 262144,
  readyTimeoutMs: 120000,
  frameTimeoutMs: 120000,
  maxInFlight: 0,
  maxMessageBytes: 1 << 26,
  codec: 'lz4',
  qos: 1,
  progress: (l) => console.error(`${t()} [d] ${l}`),
  standby: withStandby ? ['s1'] : [],
  prefetchStandby: mode === 'standby',
});
await d.connect();
await d.nodes.waitCapabilities(ids, 60000);
const dep = await d.deploy(flat, ['n1', 'n2', 'n3'], ['conv3_block1_out', 'conv4_block3_out']);
let prefetchMs = null;
if (mode === 'standby') {
  const p0 = performance.now();
  while (d.nodes.statuses.get('s1')?.prefetched !== 3) await new Promise((r) => setTimeout(r, 50));
  prefetchMs = Math.round(performance.now() - p0);
  console.error(`${t()} s1 prefetched the 3 stages in ${prefetchMs} ms`);
}
let killedAt = 0,
  done = 0;
const arrived = [],
  res = [];
const t0 = performance.now();
await Promise.all(
  frames.map((f, i) =>
    dep.stream.send(f, 'cam', `f${i}`).then((r) => {
      res[i] = r;
      arrived[i] = performance.now();
      if (++done === 60) {
        killedAt = performance.now();
        console.error(`${t()} kill -9 n2`);
        procs.children.get('n2').kill('SIGKILL');
      }
    }),
  ),
);
const wall = performance.now() - t0;
const ev = dep.supervisor.events[0];
let same = 0;
res.forEach((r, i) => {
  const a = Buffer.from(r.output.data.buffer, r.output.data.byteOffset, r.output.data.byteLength);
  const b = Buffer.from(local.outputs[i].buffer);
  if (a.equals(b)) same++;
});
const after = res
  .map((r, i) => [r, arrived[i]])
  .filter(([, a]) => a > killedAt)
  .sort((x, y) => x[1] - y[1]);
const firstAfter = after.length ? after[0][1] - killedAt : NaN;
const viaNew = res.map((r, i) => ((withStandby ? r.hops.some((h) => h.node === 's1') : r.hops.length === 2) ? arrived[i] : Infinity));
const firstNew = Math.min(...viaNew) - killedAt;
const beforeFps = 60 / ((killedAt - t0) / 1000);
const lastArr = Math.max(...arrived);
const afterN = res.filter((_r, i) => arrived[i] > killedAt + firstNew).length;
const afterFps = afterN / ((lastArr - (killedAt + firstNew)) / 1000);
console.log(
  JSON.stringify({
    mode,
    frames: N,
    answered: res.filter(Boolean).length,
    bitIdentical: same,
    duplicates: dep.stream.duplicates,
    resent: ev?.resent,
    repairMs: Math.round(ev?.repairMs),
    killToFirstResultMs: Math.round(firstAfter),
    killToFirstViaNewChainMs: Math.round(firstNew),
    fpsBefore: +beforeFps.toFixed(2),
    fpsAfter: +afterFps.toFixed(2),
    standbyWeightsFrom: d.nodes.statuses.get('s1')?.weightsFrom,
    prefetchMs,
    wallS: +(wall / 1000).toFixed(1),
  }),
);
await d.close();
await procs.stop();
await broker.close();
