/**
 * The dispatcher's view of the nodes: the last status each one published
 * (retained), and a way to wait until a set of nodes reaches a state.
 */
import type { MqttClient } from 'mqtt';
import { DeferError } from '../lib/errors.js';
import type { Capabilities } from '../lib/calibrate.js';
import { type NodeStatus, decodeStatus } from '../lib/messages.js';
import type { Topics } from '../lib/topics.js';

export class NodeWatch {
  readonly statuses = new Map<string, NodeStatus>();
  private listeners = new Set<() => void>();
  private readonly prefix: string;

  constructor(
    private readonly client: MqttClient,
    private readonly topics: Topics,
  ) {
    this.prefix = `${topics.root}/node/`;
  }

  private readonly onMessage = (topic: string, payload: Buffer) => {
    if (!topic.startsWith(this.prefix) || !topic.endsWith('/status') || payload.length === 0) return;
    try {
      const s = decodeStatus(payload);
      this.statuses.set(s.node, s);
      for (const l of [...this.listeners]) l();
    } catch {
      // a status we cannot read is not ours to act on
    }
  };

  async start(): Promise<void> {
    this.client.on('message', this.onMessage);
    await this.client.subscribeAsync(this.topics.nodeStatusAll, { qos: 1 });
  }

  /** Stop listening (the connection may be shared and stay open). */
  stop(): void {
    this.client.off('message', this.onMessage);
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Wait until every node in `nodes` is up (any state but offline) and has
   * reported its calibration; resolves with each node's figures.
   */
  waitCapabilities(nodes: string[], timeoutMs: number): Promise<Map<string, Capabilities>> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const caps = new Map<string, Capabilities>();
        for (const n of nodes) {
          const s = this.statuses.get(n);
          if (s && s.state !== 'offline' && s.capabilities) caps.set(n, s.capabilities);
        }
        if (caps.size === nodes.length) {
          done();
          resolve(caps);
        }
      };
      const timer = setTimeout(() => {
        done();
        const missing = nodes.filter((n) => {
          const s = this.statuses.get(n);
          return !(s && s.state !== 'offline' && s.capabilities);
        });
        const why = missing.map((n) => {
          const s = this.statuses.get(n);
          return `${n} (${!s ? 'never seen on the broker: is it running, with the same pipeline name?' : s.state === 'offline' ? 'offline' : 'online without a calibration: is it an older version?'})`;
        });
        reject(new DeferError('E_TIMEOUT', `${missing.length} of ${nodes.length} nodes did not report their calibration within ${timeoutMs} ms: ${why.join('; ')}`));
      }, timeoutMs);
      const off = this.onChange(check);
      const done = () => {
        clearTimeout(timer);
        off();
      };
      check();
    });
  }

  /**
   * Wait until every node in `nodes` is ready for `deployment`. Fails at once
   * when one reports `failed` for it, and after `timeoutMs` naming the nodes
   * that are not ready and what they last said.
   */
  waitReady(nodes: string[], deployment: string, timeoutMs: number, onProgress?: (ready: string[]) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      let lastReady = -1;
      const check = () => {
        const ready: string[] = [];
        for (const n of nodes) {
          const s = this.statuses.get(n);
          if (s?.deployment !== deployment) continue;
          if (s.state === 'failed') {
            done();
            reject(new DeferError('E_DEPLOY', `node '${n}' failed to load its stage of deployment ${deployment}: ${s.reason ?? 'no reason given'}`));
            return;
          }
          if (s.state === 'ready') ready.push(n);
        }
        if (ready.length !== lastReady) {
          lastReady = ready.length;
          onProgress?.(ready);
        }
        if (ready.length === nodes.length) {
          done();
          resolve();
        }
      };
      const timer = setTimeout(() => {
        done();
        const missing = nodes
          .filter((n) => !(this.statuses.get(n)?.deployment === deployment && this.statuses.get(n)?.state === 'ready'))
          .map((n) => {
            const s = this.statuses.get(n);
            return `${n} (${!s ? 'never seen on the broker: is it running, with the same pipeline name?' : s.deployment !== deployment ? `${s.state}, not yet on this deployment` : s.state + (s.received !== undefined ? `, ${s.received}/${s.total} weight chunks` : '')})`;
          });
        reject(new DeferError('E_TIMEOUT', `deployment ${deployment}: ${missing.length} of ${nodes.length} nodes not ready after ${timeoutMs} ms: ${missing.join('; ')}`));
      }, timeoutMs);
      const off = this.onChange(check);
      const done = () => {
        clearTimeout(timer);
        off();
      };
      check();
    });
  }
}
