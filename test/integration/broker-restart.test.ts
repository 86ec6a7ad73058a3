/**
 * The broker dies mid-run and comes back on the same port: `defer broker`
 * (Aedes) with a persistent store, and Mosquitto from Debian without one. Edge
 * nodes are real `defer node` processes; the dispatcher runs here. Every frame
 * must get exactly one result, equal to the whole model's.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import mqtt from 'mqtt';
import type { FrameResult } from '../../dispatcher/chain/frame-stream.js';
import type { Deployment } from '../../dispatcher/dispatcher.js';
import type { DispatcherEvent } from '../../dispatcher/events.js';
import { type LocalRun, runLocal } from '../../dispatcher/run/measure-run.js';
import { setLogLevel } from '../../lib/core/log.js';
import { initEngine } from '../../lib/model/engine.js';
import type { FlatModel } from '../../lib/model/flat-model.js';
import { loadFlatModel } from '../../lib/model/model-source.js';
import { syntheticFrames } from '../../lib/model/synthetic-frames.js';
import type { RawTensor } from '../../lib/protocol/index.js';
import { eventLines, startNodeProcesses, testDispatcher, verbose } from '../helpers/chain.js';
import { brokerReachable, CLI, freePort, ROOT, sameBits, waitUntil } from '../helpers/common.js';

let flat: FlatModel;
let frames: RawTensor[];
let local: LocalRun;

before(async () => {
  setLogLevel('error');
  await initEngine('wasm');
  flat = await loadFlatModel('tiny');
  frames = syntheticFrames(flat.inputShape, 150, 9);
  local = await runLocal(flat, frames);
});

const exited = (c: ChildProcess) => new Promise<void>((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r())));

/**
 * Nodes n1, n2 (slowed so the run lasts a few seconds) and a dispatcher on
 * `url`; 150 frames; after 40 results `kill()` the broker, wait, `restart()` it.
 */
async function runThroughRestart(t: { after(fn: () => Promise<void> | void): void }, url: string, pipeline: string, kill: () => Promise<void>, restart: () => Promise<void>) {
  const lines: DispatcherEvent[] = [];
  const procs = startNodeProcesses(url, pipeline, ['n1', 'n2'], 8);
  const d = testDispatcher(url, pipeline, lines, { frameTimeoutMs: 40_000 });
  t.after(async () => {
    await d.close();
    await procs.stop();
  });
  await d.connect();
  await d.nodes.waitCapabilities(['n1', 'n2'], 30_000);
  const dep: Deployment = await d.deploy(flat, ['n1', 'n2'], ['block_out']);
  const results: (FrameResult | undefined)[] = [];
  const failures: string[] = [];
  let done = 0;
  let outage: Promise<void> | undefined;
  await Promise.all(
    frames.map((f, i) =>
      dep.stream.send(f, 'cam', `f${i}`).then(
        (r) => {
          results[i] = r;
          if (++done === 40) {
            outage = (async () => {
              await kill();
              await new Promise((r) => setTimeout(r, 1000));
              await restart();
            })();
          }
        },
        (e: Error) => failures.push(e.message),
      ),
    ),
  );
  await outage;
  assert.deepEqual(failures, []);
  assert.equal(results.filter(Boolean).length, frames.length, 'a result for every frame');
  for (const [i, r] of results.entries()) assert.ok(sameBits(r!.output.data as Float32Array, local.outputs[i]), `frame ${i} exact`);
  const ev = dep.supervisor!.events;
  assert.equal(ev.filter((e) => e.kind === 'reconnect').length, 1, JSON.stringify(ev) + '\n' + eventLines(lines));
  assert.deepEqual(
    ev.filter((e) => e.kind !== 'reconnect'),
    [],
    'no node was taken for failed',
  );
  process.stderr.write(
    `# ${pipeline}: broker back, chain resumed in ${ev[0].repairMs.toFixed(0)} ms, ${ev[0].resent} frames sent again, ${dep.stream.duplicates} duplicate results dropped, republished: ${ev[0].republished}\n`,
  );
  return { dep, event: ev[0] };
}

test('defer broker (Aedes) with a persistent store, killed -9 and restarted mid-run: every frame answered once; the retained deployment survived', { timeout: 120_000 }, async (t) => {
  const port = await freePort();
  const url = `mqtt://127.0.0.1:${port}`;
  const store = mkdtempSync(join(tmpdir(), 'defer-broker-store-'));
  let broker: ChildProcess | undefined;
  const start = async () => {
    broker = spawn(process.execPath, [CLI, 'broker', '--port', String(port), '--persistence', store, '--log-level', 'warn'], {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', verbose ? 'inherit' : 'ignore'],
    });
    await brokerReachable(url);
  };
  t.after(async () => {
    broker?.kill('SIGTERM');
    if (broker) await exited(broker);
  });
  await start();
  const { event } = await runThroughRestart(
    t,
    url,
    'rs1',
    async () => {
      broker!.kill('SIGKILL');
      await exited(broker!);
    },
    start,
  );
  assert.equal(event.republished, false, 'the persistent store kept the retained assignments');
});

const hasMosquitto = existsSync('/usr/sbin/mosquitto');

test('Mosquitto killed -9 and restarted mid-run (no persistence): every frame answered once; the dispatcher republished its deployment', {
  timeout: 120_000,
  skip: !hasMosquitto && !process.env.CI ? 'mosquitto is not installed (apt-get install -y mosquitto; .ci/run installs it)' : false,
}, async (t) => {
  const port = await freePort();
  const url = `mqtt://127.0.0.1:${port}`;
  const dir = mkdtempSync(join(tmpdir(), 'defer-mosq-restart-'));
  writeFileSync(join(dir, 'mosquitto.conf'), `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\n`);
  let mosq: ChildProcess | undefined;
  const start = async () => {
    mosq = spawn('/usr/sbin/mosquitto', ['-c', join(dir, 'mosquitto.conf')], { stdio: 'ignore' });
    await brokerReachable(url);
  };
  t.after(async () => {
    mosq?.kill('SIGTERM');
    if (mosq) await exited(mosq);
  });
  await start();
  const { dep, event } = await runThroughRestart(
    t,
    url,
    'rs2',
    async () => {
      mosq!.kill('SIGKILL');
      await exited(mosq!);
    },
    start,
  );
  assert.equal(event.republished, true, 'Mosquitto without persistence lost the retained deployment: the dispatcher published it again');
  // what a node restarting now would read: its assignment is retained again
  const c = await mqtt.connectAsync(url, { reconnectPeriod: 0 });
  let retained = 0;
  c.on('message', (_t, p, packet) => packet.retain && p.length && retained++);
  await c.subscribeAsync(['defer/rs2/node/n1/assign', 'defer/rs2/node/n2/assign']);
  await waitUntil(() => retained >= 2, 30_000);
  await c.endAsync();
  assert.equal(retained, 2, `assignments of ${dep.id} retained again`);
});
