/**
 * Broker throughput for the activation sizes a pipeline sends: one publisher
 * and one subscriber through the embedded Aedes broker, all in this process
 * (so the figure includes the clients' own work, as on a node).
 */
import { startBroker } from '../broker/broker.js';
import { round } from '../lib/core/stats.js';
import { closeMqtt, connectMqtt } from '../lib/mqtt/connect.js';

export interface BrokerRow {
  messageBytes: number;
  messages: number;
  messagesPerSecond: number;
  MBps: number;
}

export async function brokerBench(sizes: number[], messages: number): Promise<BrokerRow[]> {
  const broker = await startBroker({ host: '127.0.0.1', port: 0, maxPacketBytes: 64 * 1024 * 1024 });
  const pub = await connectMqtt({ url: broker.url, clientIdPrefix: 'bench-pub' });
  const sub = await connectMqtt({ url: broker.url, clientIdPrefix: 'bench-sub' });
  const rows: BrokerRow[] = [];
  try {
    await sub.subscribeAsync('bench/+', { qos: 1 });
    for (const size of sizes) {
      const topic = `bench/${size}`;
      const body = Buffer.alloc(size, 7);
      let got = 0;
      let done!: () => void;
      const all = new Promise<void>((r) => (done = r));
      const on = (t: string) => {
        if (t === topic && ++got === messages) done();
      };
      sub.on('message', on);
      const t0 = performance.now();
      // a window of 8 unacknowledged messages, as a node streams
      let sent = 0;
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          while (sent < messages) {
            sent++;
            await pub.publishAsync(topic, body, { qos: 1 });
          }
        }),
      );
      await all;
      const s = (performance.now() - t0) / 1000;
      sub.off('message', on);
      rows.push({ messageBytes: size, messages, messagesPerSecond: round(messages / s, 1), MBps: round((messages * size) / 1e6 / s, 1) });
    }
  } finally {
    await closeMqtt(pub);
    await closeMqtt(sub);
    await broker.close();
  }
  return rows;
}
