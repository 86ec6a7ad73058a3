/**
 * Broker security with real clients: users with salted password hashes, the
 * per-role topic ACLs (each role refused outside its topics, and enough for a
 * real deployment), TLS with a certificate made in the test, an external auth
 * hook, and per-topic size limits.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import { addUser, hashPassword, loadAuthHook, mayPublish, maySubscribe, readUsers, verifyPassword } from '../../broker/auth.js';
import { type RunningBroker, startBroker } from '../../broker/broker.js';
import { checkTopicLimits, DEFAULT_TOPIC_LIMITS, limitFor } from '../../broker/topic-limits.js';
import { Dispatcher } from '../../dispatcher/dispatcher.js';
import { runChain } from '../../dispatcher/run/measure-run.js';
import { EdgeNode } from '../../edge-node/edge-node.js';
import { setLogLevel } from '../../lib/core/log.js';
import { initEngine } from '../../lib/model/engine.js';
import { loadFlatModel } from '../../lib/model/model-source.js';
import { syntheticFrames } from '../../lib/model/synthetic-frames.js';
import { decodeStatus, filterWithin, topicsFor } from '../../lib/protocol/index.js';
import { CLI, freePort, ROOT, waitUntil } from '../helpers/common.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'defer-sec-'));
const usersFile = join(dir, 'users.json');
const PASS = 'correct horse battery';
let broker: RunningBroker;

before(async () => {
  setLogLevel('silent');
  await initEngine('wasm');
  for (const [u, role, id] of [
    ['disp', 'dispatcher'],
    ['n1', 'node'],
    ['n2', 'node'],
    ['cam1', 'sensor'],
    ['ops', 'admin'],
    ['camera-7', 'sensor', 'cam7'],
  ] as const) {
    await addUser(usersFile, u, role, PASS, id);
  }
  broker = await startBroker({ host: '127.0.0.1', port: 0, maxPacketBytes: 1 << 24, users: await readUsers(usersFile) });
});

after(async () => {
  await broker.close();
});

const connect = (username?: string, password = PASS) => mqtt.connectAsync(broker.url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 3000, ...(username ? { username, password } : {}) });

/** A dispatcher for the tiny CNN that logs in as `user`. */
const dispatcherAs = (user: string, brokerUrl: string, pipeline: string) =>
  new Dispatcher({
    brokerUrl,
    pipeline,
    chunkBytes: 2048,
    readyTimeoutMs: 20_000,
    frameTimeoutMs: 20_000,
    maxInFlight: 4,
    maxMessageBytes: 1 << 24,
    codec: 'lz4',
    qos: 1,
    username: user,
    password: PASS,
  });

test('passwords are salted scrypt hashes; the users file is private; ACL filters nest correctly', async () => {
  const a = hashPassword('s3cret-pass');
  const b = hashPassword('s3cret-pass');
  assert.notEqual(a.hash, b.hash, 'a fresh salt each time');
  assert.ok(verifyPassword('s3cret-pass', a) && !verifyPassword('s3cret-pasS', a));
  const file = JSON.parse(readFileSync(usersFile, 'utf8'));
  assert.equal(file.users.length, 6);
  assert.ok(!readFileSync(usersFile, 'utf8').includes(PASS), 'no clear-text password in the file');
  assert.equal(statSync(usersFile).mode & 0o777, 0o600);
  await assert.rejects(addUser(usersFile, 'x', 'node', 'short'), /at least 8 characters/);
  await assert.rejects(addUser(usersFile, 'x', 'root' as never, PASS), /role must be one of/);
  assert.ok(filterWithin('defer/p/node/n1/weights/+', 'defer/+/node/n1/weights/+'));
  assert.ok(!filterWithin('defer/p/node/+/weights/+', 'defer/+/node/n1/weights/+'), 'a wildcard may not widen the grant');
  assert.ok(!filterWithin('defer/#', 'defer/+/frames/cam1'));
  assert.ok(filterWithin('defer/a/b/c', 'defer/#'));
  const node = { username: 'n1', role: 'node' as const, id: 'n1' };
  assert.ok(mayPublish(node, 'defer/p/node/n1/status') && !mayPublish(node, 'defer/p/node/n2/status') && !mayPublish(node, 'defer/p/node/n1/assign'));
  assert.ok(maySubscribe(node, 'defer/p/stage/3/in') && !maySubscribe(node, 'defer/p/frames/+'));
});

test('wrong password, unknown user and no credentials are refused', async () => {
  await assert.rejects(connect('disp', 'wrong password'), /Bad username or password|Not authorized/);
  await assert.rejects(connect('nobody'), /Bad username or password|Not authorized/);
  await assert.rejects(connect(), /Bad username or password|Not authorized/);
  const ok = await connect('disp');
  await ok.endAsync();
});

/** Subscribe to each filter on its own: 'ok', or 'refused' (SUBACK 0x80). */
async function grants(c: mqtt.MqttClient, filters: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const f of filters)
    out.push(
      await c.subscribeAsync(f, { qos: 1 }).then(
        () => 'ok',
        (e: { packet?: { granted?: number[] } }) => (e.packet?.granted?.[0] === 128 ? 'refused' : `error ${String(e)}`),
      ),
    );
  return out;
}

/** Publish as `who` and report whether the admin watcher saw it. */
async function delivered(who: mqtt.MqttClient, topic: string, watcher: { seen: string[] }): Promise<boolean> {
  const marker = `${topic}#${Math.random()}`;
  who.publish(topic, marker, { qos: 0 });
  await new Promise((r) => setTimeout(r, 300));
  return watcher.seen.includes(marker);
}

test('each role is refused outside its topics: sensors, nodes; only the dispatcher writes assignments', async () => {
  const ops = await connect('ops');
  const watcher = { seen: [] as string[] };
  ops.on('message', (_t, p) => watcher.seen.push(p.toString()));
  await ops.subscribeAsync('defer/#', { qos: 0 });
  const cam1 = await connect('cam1');
  assert.equal(await delivered(cam1, 'defer/p/frames/cam1', watcher), true, 'a sensor publishes its own frames');
  const cam7 = await connect('camera-7');
  assert.equal(await delivered(cam7, 'defer/p/frames/cam7', watcher), true, 'as the id it was given');
  assert.deepEqual(await grants(cam1, ['defer/p/results/cam1', 'defer/p/results/cam2', 'defer/p/frames/#']), ['ok', 'refused', 'refused'], 'its own results only');
  assert.equal(await delivered(cam1, 'defer/p/frames/cam2', watcher), false, "not another device's frames");
  const n1 = await connect('n1');
  assert.deepEqual(await grants(n1, ['defer/p/node/n1/assign', 'defer/p/node/n1/weights/+', 'defer/p/stage/0/in', 'defer/p/node/n2/assign', 'defer/p/frames/+']), [
    'ok',
    'ok',
    'ok',
    'refused',
    'refused',
  ]);
  assert.equal(await delivered(n1, 'defer/p/node/n1/status', watcher), true);
  assert.equal(await delivered(n1, 'defer/p/stage/1/in', watcher), true);
  const n2 = await connect('n2');
  assert.equal(await delivered(n2, 'defer/p/node/n1/assign', watcher), false, 'a node cannot write assignments');
  assert.equal(await delivered(n2, 'defer/p/node/n1/status', watcher), false, "nor another node's status");
  const disp = await connect('disp');
  assert.equal(await delivered(disp, 'defer/p/node/n1/assign', watcher), true, 'the dispatcher writes assignments');
  for (const c of [ops, cam1, cam7, n1, n2, disp]) await c.endAsync(true);
});

test('the ACLs are enough for a real deployment: nodes and dispatcher with credentials deploy and stream', { timeout: 60_000 }, async () => {
  const flat = await loadFlatModel('tiny');
  const nodes = ['n1', 'n2'].map(
    (id) => new EdgeNode({ id, brokerUrl: broker.url, pipeline: 'sec', backend: 'wasm', maxMessageBytes: 1 << 24, maxQueue: 8, calibrate: false, username: id, password: PASS }),
  );
  for (const n of nodes) await n.start();
  const d = dispatcherAs('disp', broker.url, 'sec');
  await d.connect();
  try {
    const dep = await d.deploy(flat, ['n1', 'n2'], ['block_out']);
    const r = await runChain(dep, syntheticFrames(flat.inputShape, 5, 2));
    assert.equal(r.results.length, 5);
  } finally {
    await d.close();
    for (const n of nodes) await n.close();
    flat.dispose();
  }
});

test('TLS: the broker speaks mqtts with a certificate made here; a client with the CA connects, one without is refused', { timeout: 60_000 }, async () => {
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
  const tls = await startBroker({ host: '127.0.0.1', port: 0, maxPacketBytes: 1 << 20, tlsCert: cert, tlsKey: key, users: await readUsers(usersFile) });
  try {
    assert.match(tls.url, /^mqtts:\/\/127\.0\.0\.1:\d+$/);
    const c = await mqtt.connectAsync(tls.url, { ca: readFileSync(cert), username: 'ops', password: PASS, reconnectPeriod: 0 });
    const got = new Promise<string>((r) => c.on('message', (_t, p) => r(p.toString())));
    await c.subscribeAsync('defer/t/x');
    await c.publishAsync('defer/t/x', 'over TLS');
    assert.equal(await got, 'over TLS');
    await c.endAsync();
    await assert.rejects(mqtt.connectAsync(tls.url, { username: 'ops', password: PASS, reconnectPeriod: 0, connectTimeout: 3000 }), /self.signed|certificate/i);
    // the command line: defer node with --broker mqtts://... and the CA in DEFER_BROKER_CA connects and publishes its status
    const watcher = await mqtt.connectAsync(tls.url, { ca: readFileSync(cert), username: 'ops', password: PASS, reconnectPeriod: 0 });
    const online = new Promise<string>((r) =>
      watcher.on('message', (_t, p) => {
        const st = decodeStatus(p);
        if (st.node === 'n1' && st.state === 'online') r(st.state);
      }),
    );
    await watcher.subscribeAsync(topicsFor('tls').nodeStatus('n1'), { qos: 1 });
    const node = spawn(process.execPath, [CLI, 'node', '--id', 'n1', '--broker', tls.url, '--pipeline', 'tls', '--log-level', 'warn'], {
      cwd: ROOT,
      env: { ...process.env, DEFER_BROKER_CA: cert, DEFER_BROKER_USERNAME: 'n1', DEFER_BROKER_PASSWORD: PASS },
      stdio: 'ignore',
    });
    const timeout = new Promise<string>((r) => setTimeout(() => r('no status within 20 s'), 20_000).unref());
    assert.equal(await Promise.race([online, timeout]), 'online', 'the node connected over TLS and published its status');
    node.kill('SIGTERM');
    await watcher.endAsync();
  } finally {
    await tls.close();
  }
});

test('an external auth hook (broker.authModule) answers for users the file does not know; its roles get the same ACLs; a broken hook refuses', { timeout: 60_000 }, async () => {
  const hookFile = join(dir, 'auth-hook.mjs');
  writeFileSync(
    hookFile,
    `export default async ({ username, password, clientId }) => {
  if (username === 'broken') throw new Error('directory down');
  if (username === 'odd') return { role: 'superuser' };
  return password === 'token-' + username && clientId ? { role: 'sensor', id: username } : null;
};\n`,
  );
  const hooked = await startBroker({ host: '127.0.0.1', port: 0, maxPacketBytes: 1 << 20, users: await readUsers(usersFile), authHook: await loadAuthHook(hookFile) });
  try {
    const to = (username: string, password: string) => mqtt.connectAsync(hooked.url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 3000, username, password });
    const cam = await to('cam42', 'token-cam42');
    // the hook's sensor may publish its own frames and nothing else
    assert.deepEqual(
      await Promise.all(
        ['defer/p/results/cam42', 'defer/p/results/cam1'].map((f) =>
          cam.subscribeAsync(f).then(
            (g) => (g[0].qos === 128 ? 'refused' : 'ok'),
            () => 'refused',
          ),
        ),
      ),
      ['ok', 'refused'],
    );
    await cam.endAsync();
    // users of the file still log in; wrong tokens, a hook that throws, and an unknown role are refused
    await (await to('ops', PASS)).endAsync();
    for (const [u, p] of [
      ['cam42', 'token-cam43'],
      ['broken', 'x'],
      ['odd', 'x'],
    ])
      await assert.rejects(to(u, p), /Not authorized|Bad username|Server unavailable|unavailable/i, `${u} refused`);
  } finally {
    await hooked.close();
  }
  await assert.rejects(loadAuthHook(join(dir, 'missing.mjs')), /cannot load the auth module/);
  writeFileSync(join(dir, 'no-fn.mjs'), 'export const x = 1;\n');
  await assert.rejects(loadAuthHook(join(dir, 'no-fn.mjs')), /must export a function/);
});

test('per-topic size limits: a 70 KB node status or a 2 KB heartbeat is refused (client disconnected, reported on errors); activations may be large', { timeout: 60_000 }, async () => {
  const open = await startBroker({ host: '127.0.0.1', port: 0, maxPacketBytes: 1 << 22 });
  try {
    const watcher = await mqtt.connectAsync(open.url, { reconnectPeriod: 0 });
    const errors: { topic: string; reason: string }[] = [];
    watcher.on('message', (_t, p) => errors.push(JSON.parse(p.toString())));
    await watcher.subscribeAsync('defer/lim/errors');
    const bad = [
      ['defer/lim/node/n1/status', 70 * 1024],
      ['defer/lim/node/n1/alive', 2048],
      ['defer/lim/errors', 17 * 1024],
    ] as const;
    for (const [topic, size] of bad) {
      const c = await mqtt.connectAsync(open.url, { reconnectPeriod: 0 });
      const closed = new Promise<void>((r) => c.once('close', () => r()));
      c.publish(topic, Buffer.alloc(size, 1), { qos: 1 });
      await closed;
      c.end(true);
    }
    // a large activation is within the packet limit and has no topic limit
    const node = await mqtt.connectAsync(open.url, { reconnectPeriod: 0 });
    await node.publishAsync('defer/lim/stage/1/in', Buffer.alloc(3 << 20, 2), { qos: 1 });
    await node.endAsync();
    await waitUntil(() => errors.length >= bad.length, 30_000);
    assert.equal(open.overLimit, 3);
    assert.deepEqual(errors.map((e) => e.topic).sort(), ['defer/lim/errors', 'defer/lim/node/n1/alive', 'defer/lim/node/n1/status']);
    assert.match(errors[0].reason, /over the topic's limit of \d+ bytes \(broker.topicLimits\)/);
    await watcher.endAsync();
  } finally {
    await open.close();
  }
  assert.throws(() => checkTopicLimits({ 'frames/+': -1 }), /limit of 'frames\/\+' must be an integer/);
  assert.throws(() => checkTopicLimits({ '/abs': 1 }), /not a topic pattern/);
  assert.equal(limitFor(DEFAULT_TOPIC_LIMITS, 'defer/p/frames/cam1'), 16 * 1024 * 1024);
  assert.equal(limitFor(DEFAULT_TOPIC_LIMITS, 'defer/p/stage/0/in'), undefined);
});

const hasMosquitto = ['/usr/sbin/mosquitto', '/usr/bin/mosquitto_passwd'].every((f) => existsSync(f));

test('Mosquitto with `defer user acl` and mosquitto_passwd: a deployment under the roles works; a sensor reads no activations, only its results', {
  timeout: 60_000,
  skip: !hasMosquitto && !process.env.CI ? 'mosquitto is not installed (.ci/run installs it)' : false,
}, async (t) => {
  const port = await freePort();
  const url = `mqtt://127.0.0.1:${port}`;
  // Mosquitto started as root reads these after dropping to its own user: they must be readable by it
  const mdir = mkdtempSync(join(tmpdir(), 'defer-mosq-acl-'));
  chmodSync(mdir, 0o755);
  const acl = join(mdir, 'mosquitto.acl');
  await run(process.execPath, [CLI, 'user', 'acl', '--file', usersFile, '--out', acl], { cwd: ROOT });
  assert.match(readFileSync(acl, 'utf8'), /user n1\ntopic readwrite defer\/\+\/node\/n1\/probe\ntopic readwrite defer\/\+\/stage\/\+\/in\ntopic write defer\/\+\/node\/n1\/status\n/);
  const pw = join(mdir, 'mosquitto.pw');
  for (const [i, u] of ['disp', 'n1', 'n2', 'cam1', 'ops'].entries()) await run('/usr/bin/mosquitto_passwd', [...(i === 0 ? ['-c'] : []), '-b', pw, u, PASS]);
  for (const f of [acl, pw]) chmodSync(f, 0o644);
  writeFileSync(join(mdir, 'mosq-acl.conf'), `listener ${port} 127.0.0.1\nallow_anonymous false\npassword_file ${pw}\nacl_file ${acl}\npersistence false\n`);
  const mosq = spawn('/usr/sbin/mosquitto', ['-c', join(mdir, 'mosq-acl.conf')], { stdio: 'ignore' });
  t.after(() => mosq.kill('SIGTERM'));
  const as = (username: string) => mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 2000, username, password: PASS });
  for (let i = 0; i < 50; i++) {
    if (
      await as('ops').then(
        (c) => c.endAsync().then(() => true),
        () => false,
      )
    )
      break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await assert.rejects(mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 2000 }), /Not authorized|Connection refused/i, 'anonymous refused');
  // a sensor listening to everything hears nothing of the chain
  const cam = await as('cam1');
  const heard: string[] = [];
  cam.on('message', (topic) => heard.push(topic));
  await cam.subscribeAsync(['defer/#', 'defer/mq/results/cam1']).catch(() => undefined);
  const flat = await loadFlatModel('tiny');
  const nodes = ['n1', 'n2'].map((id) => new EdgeNode({ id, brokerUrl: url, pipeline: 'mq', backend: 'wasm', maxMessageBytes: 1 << 24, maxQueue: 8, calibrate: false, username: id, password: PASS }));
  for (const n of nodes) await n.start();
  const d = dispatcherAs('disp', url, 'mq');
  try {
    await d.connect();
    const dep = await d.deploy(flat, ['n1', 'n2'], ['block_out']);
    const r = await runChain(dep, syntheticFrames(flat.inputShape, 5, 2));
    assert.equal(r.results.length, 5);
    const ops = await as('ops');
    await ops.publishAsync('defer/mq/results/cam1', '{"ok":true}', { qos: 1 });
    await ops.endAsync();
    await waitUntil(() => heard.includes('defer/mq/results/cam1'), 30_000);
    assert.deepEqual([...new Set(heard)], ['defer/mq/results/cam1'], 'the sensor heard only its results');
  } finally {
    await cam.endAsync();
    await d.close();
    for (const n of nodes) await n.close();
  }
});
