/**
 * The node's side of its heartbeat thread (heartbeat-worker.ts): starts it with its own connection to the broker,
 * writes the compute side's figures for it twice a heartbeat period (a timer of this thread, which runs whenever
 * the engine leaves the event loop), and stops it. A thread that fails later is said in the log: the node's
 * heartbeat then stops, and the dispatcher takes it for failed, as for a cut link.
 */
import { Worker } from 'node:worker_threads';
import { DeferError, errorMessage } from '../lib/core/errors.js';
import { log } from '../lib/core/log.js';
import type { ConnectOptions } from '../lib/mqtt/connect.js';
import { figuresBuffer, type WorkFigures, writeFigures } from './heartbeat-figures.js';
import type { HeartbeatWorkerData } from './heartbeat-worker.js';

/** a small heap: the thread holds an MQTT client and a timer */
const HEARTBEAT_LIMITS = { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 24, codeRangeSizeMb: 4, stackSizeMb: 1 };

type Reply = { type: 'ready' } | { type: 'failed'; reason: string } | { type: 'closed' };

export class HeartbeatThread {
  private timer?: NodeJS.Timeout;

  private constructor(
    private readonly worker: Worker,
    private readonly shared: SharedArrayBuffer,
    private readonly work: () => WorkFigures,
  ) {}

  /** Start the thread; resolves once its connection is up, rejects with the reason if it cannot start. */
  static async start(opts: { connect: ConnectOptions; node: string; topic: string; everyMs: number; memoryLimitBytes?: number }, work: () => WorkFigures): Promise<HeartbeatThread> {
    const shared = figuresBuffer();
    writeFigures(shared, work());
    const data: HeartbeatWorkerData = { ...opts, shared };
    const worker = new Worker(new URL('./heartbeat-worker.js', import.meta.url), { workerData: data, resourceLimits: HEARTBEAT_LIMITS });
    const t = new HeartbeatThread(worker, shared, work);
    await new Promise<void>((resolve, reject) => {
      worker.once('message', (m: Reply) => (m.type === 'ready' ? resolve() : reject(new DeferError('E_CONFIG', `the heartbeat thread did not start: ${m.type === 'failed' ? m.reason : m.type}`))));
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new DeferError('E_CONFIG', `the heartbeat thread exited (code ${code}) before it started`)));
    });
    worker.removeAllListeners('exit');
    worker.removeAllListeners('error');
    worker.on('error', (err) => log.error(`node ${opts.node}: the heartbeat thread failed: ${errorMessage(err)}; no more heartbeats`));
    worker.unref();
    const every = Math.max(50, opts.everyMs / 2);
    t.timer = setInterval(() => t.update(), every);
    t.timer.unref();
    return t;
  }

  /** Write the compute side's figures now (the main thread is free: it is running this). */
  update(): void {
    writeFigures(this.shared, this.work());
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    const closed = new Promise<void>((resolve) => {
      this.worker.on('message', (m: Reply) => m.type === 'closed' && resolve());
      this.worker.once('exit', () => resolve());
    });
    this.worker.postMessage({ type: 'close' });
    await Promise.race([closed, new Promise((r) => setTimeout(r, 2000).unref())]);
    await this.worker.terminate();
  }
}
