/**
 * A node's measure of its link to the broker, over MQTT itself: it subscribes to its own probe topic
 * (node/<id>/probe), publishes messages there and times their way to the broker and back. A small message's round
 * trip is the link's latency; a stream of large ones comes back at the rate of the link's slower direction (up to
 * the broker, then down again, pipelined): its bandwidth, taken as the same both ways (emulated links are shaped
 * so). The planner uses it where --bandwidth says nothing (lib/planning/plan-inputs.ts).
 */
import type { MqttClient } from 'mqtt';
import { log } from '../lib/core/log.js';

export interface LinkMeasure {
  /** Mbit/s each way */
  mbps: number;
  /** a small message's round trip, ms */
  rttMs: number;
}

/** the stream's messages: each a quarter of a MB; the first may pass within a shaper's burst (tbf: 256 KB here) */
const STREAM_BYTES = 256 * 1024;
const STREAM_COUNT = 5;
const SMALL_BYTES = 64;
/** rounds of the small message; the fastest counts (queues elsewhere only add time) */
const ROUNDS = 3;
/** a probe that takes longer than this gives up: the node starts without a measured link */
const TIMEOUT_MS = 20_000;

/** Send `count` messages of `bytes` back to back on `topic`; resolves with each one's arrival back, ms from the first send. */
function echoes(client: MqttClient, topic: string, bytes: number, count: number, tag: number): Promise<number[]> {
  const t0 = performance.now();
  const arrivals: number[] = [];
  return new Promise<number[]>((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off('message', onMessage);
      reject(new Error(`${arrivals.length} of ${count} probe messages of ${bytes} bytes came back within ${TIMEOUT_MS} ms`));
    }, TIMEOUT_MS);
    const onMessage = (t: string, p: Buffer) => {
      if (t !== topic || p.byteLength !== bytes || p.readUInt32BE(0) !== tag) return;
      arrivals.push(performance.now() - t0);
      if (arrivals.length < count) return;
      clearTimeout(timer);
      client.off('message', onMessage);
      resolve(arrivals);
    };
    client.on('message', onMessage);
    for (let k = 0; k < count; k++) {
      const body = Buffer.alloc(bytes);
      body.writeUInt32BE(tag, 0);
      body.writeUInt32BE(k, 4);
      client.publish(topic, body, { qos: 0 });
    }
  });
}

/**
 * Measure the link through `client` on `topic`; undefined where the probe fails (said in the log). The latency is
 * the fastest round trip of a small message; the bandwidth, the rate at which a stream of messages comes back once
 * the first is through (the spacing of the later arrivals: a shaper's burst and the round trip fall out of it).
 */
export async function probeLink(client: MqttClient, topic: string): Promise<LinkMeasure | undefined> {
  try {
    await client.subscribeAsync(topic, { qos: 0 });
    let rtt = Number.POSITIVE_INFINITY;
    for (let r = 0; r < ROUNDS; r++) rtt = Math.min(rtt, (await echoes(client, topic, SMALL_BYTES, 1, r))[0]);
    const at = await echoes(client, topic, STREAM_BYTES, STREAM_COUNT, ROUNDS);
    const spanMs = Math.max(at[STREAM_COUNT - 1] - at[1], 0.01);
    const mbps = ((STREAM_COUNT - 2) * STREAM_BYTES * 8) / (spanMs / 1000) / 1e6;
    return { mbps: Math.round(mbps * 10) / 10, rttMs: Math.round(rtt * 100) / 100 };
  } catch (err) {
    log.warn(`link probe on ${topic} failed: ${(err as Error).message}; the node starts without a measured link`);
    return undefined;
  } finally {
    await client.unsubscribeAsync(topic).catch(() => undefined);
  }
}
