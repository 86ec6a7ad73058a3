/**
 * Seeing the chain: the monitor, its Prometheus metrics and the HTTP endpoint
 * together, as `defer up` and `defer dispatch` start them with --http-port.
 */
import type { Dispatcher } from '../dispatcher.js';
import type { DeviceServer } from '../serving/device-server.js';
import { ChainMonitor } from './chain-monitor.js';
import { startObserverServer } from './http-server.js';
import { createMetrics } from './prometheus.js';

export interface Observer {
  /** where the page is; /metrics beside it */
  url: string;
  /** bound to more than this machine (warned about) */
  exposed: boolean;
  monitor: ChainMonitor;
  serving(server: DeviceServer): void;
  close(): Promise<void>;
}

export async function startObserver(dispatcher: Dispatcher, opts: { host: string; port: number; standby?: string[] }): Promise<Observer> {
  const monitor = new ChainMonitor(dispatcher, opts.standby);
  const metrics = createMetrics(dispatcher, monitor);
  let server: Awaited<ReturnType<typeof startObserverServer>>;
  try {
    server = await startObserverServer(monitor, metrics, { host: opts.host, port: opts.port });
  } catch (err) {
    metrics.close();
    monitor.close();
    throw err;
  }
  return {
    url: server.url,
    exposed: server.exposed,
    monitor,
    serving: (s) => {
      monitor.serving(s);
      metrics.serving(s);
    },
    async close() {
      await server.close();
      metrics.close();
      monitor.close();
    },
  };
}
