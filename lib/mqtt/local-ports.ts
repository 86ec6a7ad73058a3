/** Local brokers for benches and tests: a free port to start one on, and waiting until it answers. */
import { createServer } from 'node:net';
import mqtt from 'mqtt';

/** A TCP port that was free a moment ago, on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** Wait (up to 10 s) until an MQTT client can connect to `url`; throws naming the URL otherwise. */
export async function brokerReachable(url: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 500 }).then(
      (c) => c.endAsync().then(() => true),
      () => false,
    );
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no broker at ${url}`);
}
