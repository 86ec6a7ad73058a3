/**
 * What an edge node says about itself: its status on node/<id>/status (retained; a Last Will says `offline`), its
 * heartbeat on node/<id>/alive, and error reports. Both messages are built by functions of plain values
 * (`statusOf`; the heartbeat's `heartbeatOf`, heartbeat-figures.ts), so that the heartbeat can be sent from a thread
 * of its own, off the compute path (heartbeat-thread.ts).
 */
import { errorMessage } from '../lib/core/errors.js';
import { log } from '../lib/core/log.js';
import { publish } from '../lib/mqtt/connect.js';
import { type Assignment, type Capabilities, encodeErrorReport, encodeHeartbeat, encodeStatus, type NodeState, type NodeStatus, type Topics } from '../lib/protocol/index.js';
import { heartbeatOf, processFigures, type WorkFigures } from './heartbeat-figures.js';
import type { NodeLink, ReportError } from './node-link.js';

/** What a node's status tells besides its state, as plain values. */
export interface StatusFacts {
  /** the assignment being loaded, freed for, or served (the first of these there is) */
  assignment?: Assignment;
  backend: string;
  frames: number;
  dropped: number;
  rejected: number;
  /** the engine's live tensors in this thread */
  tensors: number;
  capabilities?: Capabilities;
  weightsFrom?: 'broker' | 'cache';
  /** the stage served: on how many engines, with what batch (none while no stage is served) */
  serving?: { workers: number; batch: number };
  /** the heartbeat's period, ms (0: none) */
  heartbeatMs: number;
  /** a standby's prefetch: stages of its list in the cache, of how many */
  prefetch?: { held: number; total: number };
}

/** A node's status: `state`, the facts, and `extra` over them. */
export function statusOf(node: string, state: NodeState, f: StatusFacts, extra: Partial<NodeStatus> = {}): Omit<NodeStatus, 'v'> {
  const a = f.assignment;
  return {
    node,
    state,
    at: Date.now(),
    deployment: a?.deployment,
    stage: a?.stage,
    backend: f.backend,
    pid: process.pid,
    frames: f.frames,
    dropped: f.dropped,
    rejected: f.rejected,
    tensors: f.tensors,
    capabilities: f.capabilities,
    weightsFrom: f.weightsFrom,
    ...(f.serving ? { workers: f.serving.workers } : {}),
    ...(f.serving && f.serving.batch > 1 ? { batch: f.serving.batch } : {}),
    heartbeatMs: f.heartbeatMs || undefined,
    ...(f.prefetch?.total ? { prefetched: f.prefetch.held, prefetchTotal: f.prefetch.total } : {}),
    ...extra,
  };
}

/** The Last Will: what the broker says for a node whose connection drops. */
export function lastWillOf(node: string): Buffer {
  return encodeStatus({ node, state: 'offline', at: 0 });
}

/** Publishes a node's status, heartbeat and error reports through its connection. */
export class StatusPublisher {
  /** the state last said (said again after a reconnection) */
  state: NodeState = 'online';
  private heartbeat?: NodeJS.Timeout;

  constructor(
    private readonly link: NodeLink,
    private readonly node: string,
    private readonly topics: Topics,
    /** error reports are counted here */
    private readonly counters: { rejected: number },
    private readonly facts: () => StatusFacts,
  ) {}

  async set(state: NodeState, extra: Partial<NodeStatus> = {}): Promise<void> {
    this.state = state;
    const client = this.link.client;
    if (!client || this.link.closed) return;
    await publish(client, this.topics.nodeStatus(this.node), encodeStatus(statusOf(this.node, state, this.facts(), extra)), { qos: 1, retain: true }).catch((err) =>
      log.warn(`cannot publish status: ${errorMessage(err)}`),
    );
  }

  /** Say the last state again (a broker that restarted without persistence has lost the retained status). */
  again(): Promise<void> {
    return this.set(this.state);
  }

  readonly reportError: ReportError = (topic, reason, frame) => {
    this.counters.rejected++;
    log.warn(`rejected a message on ${topic}: ${reason}`);
    this.link.client?.publish(this.topics.errors, encodeErrorReport({ node: this.node, topic, reason, ...(frame ?? {}) }), { qos: frame ? 1 : 0 });
  };

  /** Publish the heartbeat every `everyMs` (0: never) while connected, at QoS 0, from `work` and the process's figures. */
  startHeartbeat(everyMs: number, work: () => WorkFigures, memoryLimitBytes?: number): void {
    if (everyMs <= 0) return;
    const alive = this.topics.nodeAlive(this.node);
    this.heartbeat = setInterval(() => {
      const client = this.link.client;
      if (client?.connected) client.publish(alive, encodeHeartbeat(heartbeatOf(this.node, Date.now(), work(), processFigures(memoryLimitBytes))), { qos: 0 });
    }, everyMs);
    this.heartbeat.unref();
  }

  stopHeartbeat(): void {
    clearInterval(this.heartbeat);
  }
}
