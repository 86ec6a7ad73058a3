import assert from 'node:assert/strict';
import { test } from 'node:test';
import mqtt from 'mqtt';
import { startBroker } from '../../broker/broker.js';
import { setLogLevel } from '../../lib/core/log.js';
import { waitUntil } from '../helpers/common.js';

test('the embedded broker enforces its maximum packet size and keeps serving others', async () => {
  setLogLevel('silent');
  const broker = await startBroker({ host: '127.0.0.1', port: 0, maxPacketBytes: 64 * 1024 });
  const reader = await mqtt.connectAsync(broker.url, { clientId: 'a-client-id-longer-than-23-characters' });
  const got: number[] = [];
  reader.on('message', (_t, p) => got.push(p.length));
  await reader.subscribeAsync('t', { qos: 1 });
  const big = await mqtt.connectAsync(broker.url, { reconnectPeriod: 0 });
  const closed = new Promise<void>((r) => big.once('close', () => r()));
  big.publish('t', Buffer.alloc(100 * 1024));
  await closed;
  await reader.publishAsync('t', Buffer.alloc(60 * 1024), { qos: 1 });
  await waitUntil(() => got.length !== 0, 30_000, 20);
  assert.deepEqual(got, [60 * 1024], 'only the packet under the limit went through');
  assert.equal(broker.oversized, 1);
  big.end(true);
  await reader.endAsync();
  await broker.close();
});

test('bad broker settings and a port in use give clear errors; close is clean and idempotent', async () => {
  await assert.rejects(startBroker({ host: '127.0.0.1', port: 0, maxPacketBytes: 10 }), /maxPacketBytes must be an integer from 1024/);
  const a = await startBroker({ host: '127.0.0.1', port: 0, maxPacketBytes: 1 << 20 });
  await assert.rejects(startBroker({ host: '127.0.0.1', port: a.port, maxPacketBytes: 1 << 20 }), /already in use.*--port/);
  const c = await mqtt.connectAsync(a.url, { reconnectPeriod: 0 });
  const closed = new Promise<void>((r) => c.once('close', () => r()));
  await a.close();
  await a.close();
  await closed;
  c.end(true);
});
