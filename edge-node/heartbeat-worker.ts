/**
 * The heartbeat's own thread: a second MQTT connection that publishes the node's heartbeat on node/<id>/alive
 * every period, whatever the node's main thread is doing. A stage computed on the main thread blocks its event
 * loop for as long as a frame takes (seconds on a device of a fifth of a core), and heartbeats sent from there
 * stopped: the dispatcher took slow nodes for dead. Only this process dying, stopping or losing its link stops
 * them now. The main thread writes its figures into shared memory (heartbeat-thread.ts); this thread reads them,
 * adds the process's memory and CPU, and says how long ago the main thread last wrote (`busyMs`).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { errorMessage } from '../lib/core/errors.js';
import { type ConnectOptions, closeMqtt, connectMqtt } from '../lib/mqtt/connect.js';
import { encodeHeartbeat } from '../lib/protocol/node-status.js';
import { heartbeatOf, processFigures, readFigures } from './heartbeat-figures.js';

/** What the main thread gives the heartbeat thread. */
export interface HeartbeatWorkerData {
  connect: ConnectOptions;
  node: string;
  topic: string;
  everyMs: number;
  memoryLimitBytes?: number;
  /** the main thread's figures (heartbeat-figures.ts) */
  shared: SharedArrayBuffer;
}

const data = workerData as HeartbeatWorkerData;

async function main(): Promise<void> {
  const client = await connectMqtt(data.connect);
  const timer = setInterval(() => {
    if (!client.connected) return;
    const at = Date.now();
    const { work, writtenAt } = readFigures(data.shared);
    const beat = { ...heartbeatOf(data.node, at, work, processFigures(data.memoryLimitBytes)), busyMs: Math.max(0, Math.round(at - writtenAt)) };
    client.publish(data.topic, encodeHeartbeat(beat), { qos: 0 });
  }, data.everyMs);
  parentPort!.postMessage({ type: 'ready' });
  parentPort!.on('message', (m: { type: string }) => {
    if (m.type !== 'close') return;
    clearInterval(timer);
    void closeMqtt(client).finally(() => parentPort!.postMessage({ type: 'closed' }));
  });
}

main().catch((err) => parentPort!.postMessage({ type: 'failed', reason: errorMessage(err) }));
