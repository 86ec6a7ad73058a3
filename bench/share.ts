/**
 * Feeding a replicated stage: the dispatcher's routes (each replica its own topic, chosen per frame by
 * replica-router.ts) against MQTT 5 shared subscriptions (`$share/<group>/<topic>`, the broker chooses), on
 * Mosquitto. Two replicas, one `--slow` times slower than the other; each serves its frames one at a time (a
 * timer for the compute, so the machine's cores do not limit it: replicas stand for separate devices); frames go
 * out with `--window` in flight, as `defer dispatch` sends them. Reported per scheme: how many frames each replica
 * served, frames per second, and that against the ideal (the sum of the replicas' rates).
 *
 *   node dist/bench/share.js [--frames 300] [--fast-ms 10] [--slow 3] [--window 8] [--bytes 150000] [--out bench/results] [--host NAME]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import mqtt, { type MqttClient } from 'mqtt';
import { ReplicaRouter, type ReplicaTarget } from '../dispatcher/chain/replica-router.js';
import { brokerReachable, freePort } from '../lib/mqtt/local-ports.js';

const MOSQUITTO = '/usr/sbin/mosquitto';
const STAGE = 'bench/share/stage/0/in';
const RESULTS = 'bench/share/results';

type Scheme = 'routes' | 'share-qos1' | 'share-qos1-receive-max-1';

const SCHEMES: Record<Scheme, string> = {
  routes: "the dispatcher's routes: a topic per replica, least expected wait (MQTT 3.1.1)",
  'share-qos1': '$share, QoS 1, acknowledged on arrival (mqtt.js default)',
  'share-qos1-receive-max-1': '$share, QoS 1, receive maximum 1, acknowledged after the work',
};

interface Row {
  scheme: Scheme;
  frames: number;
  served: Record<string, number>;
  slowShare: number;
  framesPerSecond: number;
  vsIdeal: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function startMosquitto(): Promise<{ url: string; proc: ChildProcess }> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'defer-share-'));
  writeFileSync(join(dir, 'mosquitto.conf'), `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\n`);
  const proc = spawn(MOSQUITTO, ['-c', join(dir, 'mosquitto.conf')], { stdio: 'ignore' });
  const url = `mqtt://127.0.0.1:${port}`;
  try {
    await brokerReachable(url);
  } catch {
    proc.kill();
    throw new Error(`mosquitto did not listen on ${url} within 10 s (is ${MOSQUITTO} installed? apt-get install -y mosquitto)`);
  }
  return { url, proc };
}

/** A replica: serves each frame `ms` long, one at a time, and publishes the frame id and its time. */
async function replica(url: string, node: string, ms: number, scheme: Scheme): Promise<MqttClient> {
  let busyUntil = 0;
  const serve = async (c: MqttClient, payload: Buffer) => {
    // one at a time: a frame that arrives while another is served waits for it, as on one engine
    const start = Math.max(performance.now(), busyUntil);
    busyUntil = start + ms;
    await sleep(busyUntil - performance.now());
    // not awaited: with acknowledgements after the work, mqtt.js reads no packet (this publish's PUBACK included)
    // until the frame's handler is done
    c.publish(RESULTS, JSON.stringify({ frame: payload.readUInt32LE(0), node, busyMs: ms }), { qos: 1 });
  };
  if (scheme === 'share-qos1-receive-max-1') {
    const c: MqttClient = await mqtt.connectAsync(url, {
      protocolVersion: 5,
      properties: { receiveMaximum: 1 },
      customHandleAcks: (_topic, message, _packet, done) => void serve(c, message).then(() => done(0)),
    });
    await c.subscribeAsync(`$share/replicas/${STAGE}`, { qos: 1 });
    return c;
  }
  const c = await mqtt.connectAsync(url, { protocolVersion: scheme === 'routes' ? 4 : 5 });
  c.on('message', (_t, p) => void serve(c, p));
  await c.subscribeAsync(scheme === 'routes' ? `${STAGE}/${node}` : `$share/replicas/${STAGE}`, { qos: 1 });
  return c;
}

async function runScheme(url: string, scheme: Scheme, o: { frames: number; fastMs: number; slow: number; window: number; bytes: number }): Promise<Row> {
  const ms: Record<string, number> = { fast: o.fastMs, slow: o.fastMs * o.slow };
  const replicas = await Promise.all(Object.entries(ms).map(([node, t]) => replica(url, node, t, scheme)));
  const stage: ReplicaTarget[] = Object.keys(ms).map((node) => ({ node, topic: `${STAGE}/${node}`, workers: 1 }));
  const router = new ReplicaRouter();
  const d = await mqtt.connectAsync(url, { protocolVersion: 5 });
  const served: Record<string, number> = { fast: 0, slow: 0 };
  const body = Buffer.alloc(o.bytes);
  let sent = 0;
  let answered = 0;
  const send = () => {
    body.writeUInt32LE(sent++, 0);
    const topic = scheme === 'routes' ? router.route([stage])[0].topic : STAGE;
    d.publish(topic, body, { qos: 1 });
  };
  const t0 = performance.now();
  const finished = new Promise<void>((resolve) => {
    d.on('message', (_t, p) => {
      const r = JSON.parse(p.toString()) as { node: string; busyMs: number };
      served[r.node]++;
      router.measured(r.node, r.busyMs);
      router.release([r.node]);
      if (++answered === o.frames) resolve();
      else if (sent < o.frames) send();
    });
  });
  await d.subscribeAsync(RESULTS, { qos: 1 });
  while (sent < Math.min(o.window, o.frames)) send();
  await finished;
  const seconds = (performance.now() - t0) / 1000;
  await Promise.all([d, ...replicas].map((c) => c.endAsync()));
  const ideal = 1000 / ms.fast + 1000 / ms.slow;
  return {
    scheme,
    frames: o.frames,
    served,
    slowShare: served.slow / o.frames,
    framesPerSecond: o.frames / seconds,
    vsIdeal: o.frames / seconds / ideal,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      frames: { type: 'string', default: '300' },
      'fast-ms': { type: 'string', default: '10' },
      slow: { type: 'string', default: '3' },
      window: { type: 'string', default: '8' },
      bytes: { type: 'string', default: '150000' },
      out: { type: 'string', default: 'bench/results' },
      host: { type: 'string', default: hostname() },
    },
  });
  const o = { frames: Number(values.frames), fastMs: Number(values['fast-ms']), slow: Number(values.slow), window: Number(values.window), bytes: Number(values.bytes) };
  for (const [k, v] of Object.entries(o)) {
    if (!Number.isFinite(v) || v <= 0) throw new Error(`--${k} must be a positive number, not ${JSON.stringify(v)}`);
  }
  if (o.bytes < 4) throw new Error('--bytes must be at least 4 (the frame id)');
  const { url, proc } = await startMosquitto();
  const rows: Row[] = [];
  try {
    for (const scheme of Object.keys(SCHEMES) as Scheme[]) {
      process.stderr.write(`${scheme}: ${o.frames} frames...\n`);
      rows.push(await runScheme(url, scheme, o));
    }
  } finally {
    proc.kill('SIGTERM');
  }
  const date = new Date().toISOString().slice(0, 10);
  const base = join(values.out, `${date}-${values.host}-share`);
  await mkdir(values.out, { recursive: true });
  const ideal = 1000 / o.fastMs + 1000 / (o.fastMs * o.slow);
  const md = [
    `# Feeding a replicated stage: routes against $share (Mosquitto, ${date}, ${values.host})`,
    '',
    `Two replicas, ${o.fastMs} ms and ${o.fastMs * o.slow} ms per frame (one at a time), ${o.frames} frames of ${o.bytes} bytes, ${o.window} in flight; ideal ${ideal.toFixed(1)} frames/s, the slow replica then serving ${((1 / o.slow / (1 + 1 / o.slow)) * 100).toFixed(0)}% of the frames.`,
    `Command: \`node dist/bench/share.js --frames ${o.frames} --fast-ms ${o.fastMs} --slow ${o.slow} --window ${o.window} --bytes ${o.bytes}\`.`,
    '',
    '| scheme | frames fast / slow | slow share | frames/s | x ideal |',
    '| --- | --- | --- | --- | --- |',
    ...rows.map((r) => `| ${SCHEMES[r.scheme]} | ${r.served.fast} / ${r.served.slow} | ${(r.slowShare * 100).toFixed(0)}% | ${r.framesPerSecond.toFixed(1)} | ${r.vsIdeal.toFixed(2)} |`),
    '',
  ].join('\n');
  writeFileSync(`${base}.json`, `${JSON.stringify({ date, host: values.host, options: o, idealFramesPerSecond: ideal, rows }, null, 2)}\n`);
  writeFileSync(`${base}.md`, md);
  process.stdout.write(`${md}\nwritten: ${base}.json, ${base}.md\n`);
}

main().catch((err) => {
  process.stderr.write(`error: ${(err as Error).message}\n`);
  process.exit(1);
});
