/**
 * The dispatcher's view of the nodes: the last status each one published
 * (retained), and a way to wait until a set of nodes reaches a state.
 */
import type { MqttClient } from 'mqtt';
import { DeferError } from '../../lib/core/errors.js';
import { type BrokerAuth, closeMqtt, connectMqtt } from '../../lib/mqtt/connect.js';
import { type Capabilities, decodeHeartbeat, decodeStatus, type Heartbeat, type NodeStatus, type Topics, topicsFor } from '../../lib/protocol/index.js';

/** how long a wait for the nodes' calibration runs before it is told, and then how often */
const WAITING_FIRST_MS = 2000;
const WAITING_EVERY_MS = 10_000;

export class NodeWatch {
  readonly statuses = new Map<string, NodeStatus>();
  /** when each node was last heard from (a status or a heartbeat), performance.now() ms */
  readonly lastSeen = new Map<string, number>();
  /** when each node last sent something live (a heartbeat, or a status as it was published, not one the broker kept) */
  readonly lastLive = new Map<string, number>();
  /** each node's latest heartbeat (frames, queue, memory, CPU) */
  readonly heartbeats = new Map<string, Heartbeat>();
  private listeners = new Set<() => void>();

  constructor(
    private readonly client: MqttClient,
    private readonly topics: Topics,
  ) {}

  private readonly onMessage = (topic: string, payload: Buffer, packet?: { retain?: boolean }) => {
    if (payload.length === 0) return;
    const t = this.topics.parse(topic);
    if (t?.kind === 'node-alive') {
      if (!this.statuses.has(t.node)) return; // a node we do not know yet: its status comes first
      this.lastSeen.set(t.node, performance.now());
      this.lastLive.set(t.node, performance.now());
      try {
        const h = decodeHeartbeat(payload);
        if (h.node === t.node) this.heartbeats.set(t.node, h);
      } catch {
        // still a sign of life; its figures are not ours to use
      }
      return;
    }
    if (t?.kind !== 'node-status') return;
    try {
      const s = decodeStatus(payload);
      // a status speaks for the node of its topic only (the ACLs let a node write its own topic, not another's)
      if (s.node !== t.node) return;
      this.statuses.set(s.node, s);
      this.lastSeen.set(s.node, performance.now());
      if (!packet?.retain) this.lastLive.set(s.node, performance.now());
      for (const l of [...this.listeners]) l();
    } catch {
      // a status we cannot read is not ours to act on
    }
  };

  async start(): Promise<void> {
    this.client.on('message', this.onMessage);
    await this.client.subscribeAsync([this.topics.nodeStatusAll, this.topics.nodeAliveAll], { qos: 1 });
  }

  /** Stop listening (the connection may be shared and stay open). */
  stop(): void {
    this.client.off('message', this.onMessage);
  }

  /**
   * Wait (up to `ms`) until each of `nodes` has sent a heartbeat stamped at or after `since` (epoch ms), so that
   * its figures (memory, CPU) cover everything up to then. Resolves either way; nodes that send no heartbeat are not waited for long.
   */
  async freshHeartbeats(nodes: string[], since: number, ms = 2500): Promise<void> {
    for (let t = 0; t < ms; t += 50) {
      if (nodes.every((n) => (this.heartbeats.get(n)?.at ?? 0) >= since)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** The nodes whose engine computes every convolution itself, as their statuses say (Capabilities.plainConvolutions). */
  plainConvolutionNodes(): Set<string> {
    return new Set([...this.statuses.values()].filter((s) => s.capabilities?.plainConvolutions).map((s) => s.node));
  }

  /** Up as far as we can tell: its status is not offline, and its heartbeat (if it sends one) is not older than `staleMs`. */
  isUp(node: string, staleMs: number): boolean {
    const s = this.statuses.get(node);
    if (!s || s.state === 'offline') return false;
    // a node that sends no heartbeat (its status says so) is judged by its status alone
    return !s.heartbeatMs || staleMs <= 0 || performance.now() - (this.lastSeen.get(node) ?? 0) <= staleMs;
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Run `check` now and on every status change until it settles the promise
   * (it returns true once it has resolved or rejected); after `timeoutMs`,
   * reject with `onTimeout()`.
   */
  private waitFor<T>(timeoutMs: number, check: (resolve: (v: T) => void, reject: (e: Error) => void) => boolean, onTimeout: () => Error): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(onTimeout());
      }, timeoutMs);
      const run = () => {
        if (check(resolve, reject)) {
          clearTimeout(timer);
          off();
        }
      };
      const off = this.onChange(run);
      run();
    });
  }

  /**
   * Wait until every node in `nodes` is up (any state but offline) and has
   * reported its calibration; resolves with each node's figures. While it waits, `onWaiting` is told which nodes
   * it still waits for and why (after WAITING_FIRST_MS, then every WAITING_EVERY_MS).
   */
  async waitCapabilities(nodes: string[], timeoutMs: number, onWaiting?: (missing: string[], waitedMs: number) => void): Promise<Map<string, Capabilities>> {
    const up = (n: string) => {
      const s = this.statuses.get(n);
      return s && s.state !== 'offline' && s.capabilities ? s.capabilities : undefined;
    };
    const why = () =>
      nodes
        .filter((n) => !up(n))
        .map((n) => {
          const s = this.statuses.get(n);
          return `${n} (${!s ? 'never seen on the broker: is it running, with the same pipeline name?' : s.state === 'offline' ? 'offline' : 'online without a calibration: is it an older version?'})`;
        });
    const t0 = performance.now();
    let every: NodeJS.Timeout | undefined;
    const first = onWaiting
      ? setTimeout(() => {
          const tell = () => {
            const missing = why();
            if (missing.length) onWaiting(missing, performance.now() - t0);
          };
          tell();
          every = setInterval(tell, WAITING_EVERY_MS);
        }, WAITING_FIRST_MS)
      : undefined;
    try {
      return await this.waitFor(
        timeoutMs,
        (resolve) => {
          if (!nodes.every(up)) return false;
          resolve(new Map(nodes.map((n) => [n, up(n)!])));
          return true;
        },
        () => {
          const missing = why();
          return new DeferError('E_TIMEOUT', `${missing.length} of ${nodes.length} nodes did not report their calibration within ${timeoutMs} ms: ${missing.join('; ')}`);
        },
      );
    } finally {
      clearTimeout(first);
      clearInterval(every);
    }
  }

  /** Wait until `node` is ready with stage `stage` of `deployment`; fails when it reports failed for it or goes offline. */
  waitStage(node: string, deployment: string, stage: number, timeoutMs: number): Promise<void> {
    return this.waitFor<void>(
      timeoutMs,
      (resolve, reject) => {
        const s = this.statuses.get(node);
        if (s?.state === 'offline') {
          reject(new DeferError('E_DEPLOY', `node '${node}' went offline`));
          return true;
        }
        if (s?.deployment !== deployment || s.stage !== stage) return false;
        if (s.state === 'failed') reject(new DeferError('E_DEPLOY', `node '${node}' failed to load stage ${stage + 1} of ${deployment}: ${s.reason ?? 'no reason given'}`));
        else if (s.state === 'ready') resolve();
        else return false;
        return true;
      },
      () => new DeferError('E_TIMEOUT', `node '${node}' was not ready with stage ${stage + 1} of ${deployment} after ${timeoutMs} ms (last: ${this.statuses.get(node)?.state ?? 'never seen'})`),
    );
  }

  /**
   * Wait until every node in `nodes` is ready for `deployment`. Fails at once
   * when one reports `failed` for it, and after `timeoutMs` naming the nodes
   * that are not ready and what they last said.
   */
  waitReady(nodes: string[], deployment: string, timeoutMs: number, onProgress?: (ready: string[]) => void): Promise<void> {
    let lastReady = -1;
    return this.waitFor<void>(
      timeoutMs,
      (resolve, reject) => {
        const ready: string[] = [];
        for (const n of nodes) {
          const s = this.statuses.get(n);
          if (s?.deployment !== deployment) continue;
          if (s.state === 'failed') {
            reject(new DeferError('E_DEPLOY', `node '${n}' failed to load its stage of deployment ${deployment}: ${s.reason ?? 'no reason given'}`));
            return true;
          }
          if (s.state === 'ready') ready.push(n);
        }
        if (ready.length !== lastReady) {
          lastReady = ready.length;
          onProgress?.(ready);
        }
        if (ready.length < nodes.length) return false;
        resolve();
        return true;
      },
      () => {
        const missing = nodes
          .filter((n) => !(this.statuses.get(n)?.deployment === deployment && this.statuses.get(n)?.state === 'ready'))
          .map((n) => {
            const s = this.statuses.get(n);
            return `${n} (${!s ? 'never seen on the broker: is it running, with the same pipeline name?' : s.deployment !== deployment ? `${s.state}, not yet on this deployment` : s.state + (s.received !== undefined ? `, ${s.received}/${s.total} weight chunks` : '')})`;
          });
        return new DeferError('E_TIMEOUT', `deployment ${deployment}: ${missing.length} of ${nodes.length} nodes not ready after ${timeoutMs} ms: ${missing.join('; ')}`);
      },
    );
  }
}

/** Read the nodes' calibrations from their retained status on the broker. */
export async function fetchCapabilities(brokerUrl: string, pipeline: string, ids: string[], timeoutMs: number, auth: BrokerAuth = {}): Promise<Map<string, Capabilities>> {
  const client = await connectMqtt({ url: brokerUrl, clientIdPrefix: 'defer-plan', ...auth });
  try {
    const watch = new NodeWatch(client, topicsFor(pipeline));
    await watch.start();
    return await watch.waitCapabilities(ids, timeoutMs);
  } finally {
    await closeMqtt(client);
  }
}
