/**
 * An edge node's weight intake: an assignment's weights taken from the weight cache where it holds them, else chunk
 * by chunk from the broker's retained chunks, each checked against the manifest (sha256, size) and written into its
 * sink as it comes; chunks that come before their assignment held (up to EARLY_CHUNK_BYTES); the stage built once
 * every chunk is in.
 */
import { errorMessage } from '../lib/core/errors.js';
import { collectGarbage } from '../lib/core/gc.js';
import { log } from '../lib/core/log.js';
import { sha256 } from '../lib/model/partition.js';
import { BlobWeights, EngineWeights } from '../lib/model/weight-sink.js';
import type { Assignment, Topics } from '../lib/protocol/index.js';
import type { NodeLink, SetStatus } from './node-link.js';
import type { StageWeights } from './stage-builder.js';
import type { WeightCache } from './weight-cache.js';

/**
 * The most bytes of weight chunks a node holds before their assignment comes (they come on another topic, and may
 * come first); beyond it, it takes them from the broker's retained copies once the assignment is there.
 */
const EARLY_CHUNK_BYTES = 16 * 2 ** 20;

/** An assignment whose weights are coming in. */
export interface Loading extends StageWeights {
  /** which chunks have arrived */
  got: boolean[];
  received: number;
  lastReport: number;
  /** chunk bytes stored since the last garbage collection */
  sinceGc: number;
}

/** What the intake asks of the rest of its node. */
export interface IntakeHost {
  /** how many engines assignment `a`'s stage runs on (stage-builder.ts) */
  enginesFor(a: Assignment): number;
  /** whether deployment `d`'s weights are taken already (its stage served, or being built) */
  holds(d: string): boolean;
  /** build the stage from its weights, all in (stage-builder.ts) */
  build(w: StageWeights, from: 'broker' | 'cache'): Promise<void>;
  /** stop a standby's prefetch, if one runs (a stage to run: its weights come first) */
  stopPrefetch(): Promise<void>;
  setStatus: SetStatus;
}

/** The counters the intake adds to (the node's own). */
export interface IntakeCounters {
  /** weight chunks taken from the broker */
  chunks: number;
  /** weight chunks held because they came before their assignment */
  earlyChunks: number;
  /** weight chunks that came before their assignment and were not held (EARLY_CHUNK_BYTES): taken from the broker again */
  earlyDropped: number;
}

/** A weight chunk as decoded from the broker. */
export interface WeightChunk {
  deployment: string;
  index: number;
  count: number;
  data: Uint8Array;
}

export class WeightIntake {
  /** the assignment whose weights are coming in, and how far they are */
  loading?: Loading;
  /**
   * chunks that arrived before their assignment, for one deployment at most, up to EARLY_CHUNK_BYTES (`dropped`:
   * some were not kept, so the node subscribes again for the broker's retained copies when the assignment comes)
   */
  private early?: { deployment: string; chunks: Map<number, Uint8Array>; bytes: number; dropped: boolean };
  /** the weight chunks' topic subscribed to now */
  private weightsTopic?: string;

  constructor(
    private readonly node: string,
    private readonly topics: Topics,
    private readonly link: NodeLink,
    private readonly cache: WeightCache | undefined,
    private readonly counters: IntakeCounters,
    private readonly host: IntakeHost,
  ) {}

  /** whose retained chunks hold the weights being loaded: this node's own, or a failed node's that this one replaces */
  get weightsNode(): string {
    return this.loading?.assignment.weightsNode ?? this.node;
  }

  /** Start loading assignment `a`'s weights (from early chunks, the cache, or the broker); `releasedFirst`: the stage it replaces was freed first. */
  load(a: Assignment, releasedFirst: boolean): void {
    const count = a.manifest.chunks.length;
    const engines = this.host.enginesFor(a);
    // one engine on this thread builds from tensors written in place; worker threads each build from one blob they share
    const sink = (engines === 1 && (a.modelFormat ?? 'layers-model') === 'layers-model' ? EngineWeights.tryFor(a.manifest.specs) : undefined) ?? new BlobWeights(a.manifest.totalBytes, engines > 1);
    this.drop();
    this.loading = { assignment: a, sink, engines, got: new Array<boolean>(count).fill(false), received: 0, lastReport: 0, sinceGc: 0 };
    void this.host.setStatus('loading', { received: 0, total: count, ...(releasedFirst ? { released: 'first' as const } : {}) });
    let again = false;
    if (this.early?.deployment === a.deployment) {
      const early = this.early;
      this.early = undefined;
      again = early.dropped;
      // each one let go as it is stored: the chunks and the weights are never held twice
      for (const [i, data] of early.chunks) {
        early.chunks.delete(i);
        if (this.loading?.assignment !== a) break; // failed
        this.storeChunk(i, data);
      }
    }
    this.maybeBuild();
    if (this.loading?.assignment === a) void this.fetch(this.loading, again);
  }

  /** A weight chunk from the broker (of `weightsNode`'s topic). */
  onChunk(c: WeightChunk): void {
    const l = this.loading;
    if (!l || l.assignment.deployment !== c.deployment) {
      // a chunk of the stage this node runs, or builds from chunks all received (sent again: after a reconnection,
      // the broker sends every retained chunk of a subscription once more)
      if (this.host.holds(c.deployment)) return;
      // the assignment may come after its chunks: hold them, for one deployment only, and only so many
      if (this.early?.deployment !== c.deployment) this.early = { deployment: c.deployment, chunks: new Map(), bytes: 0, dropped: false };
      const e = this.early;
      if (e.chunks.has(c.index)) return;
      if (e.bytes + c.data.byteLength > EARLY_CHUNK_BYTES) {
        if (!e.dropped)
          log.info(`node ${this.node}: weight chunks of ${c.deployment} came before its assignment; beyond ${EARLY_CHUNK_BYTES / 2 ** 20} MiB of them, the rest will be taken from the broker again`);
        e.dropped = true;
        this.counters.earlyDropped++;
        return;
      }
      e.chunks.set(c.index, c.data);
      e.bytes += c.data.byteLength;
      this.counters.earlyChunks++;
      return;
    }
    if (c.count !== l.got.length) {
      this.fail(`weight chunk ${c.index} says ${c.count} chunks, the manifest ${l.got.length}`);
      return;
    }
    this.storeChunk(c.index, c.data);
    this.maybeBuild();
  }

  private storeChunk(index: number, data: Uint8Array): void {
    const l = this.loading!;
    if (index >= l.got.length || l.got[index]) return;
    const digest = sha256(data);
    const m = l.assignment.manifest;
    if (digest !== m.chunks[index]) {
      this.fail(`weight chunk ${index} does not match its sha256 in the manifest (got ${digest.slice(0, 12)}…, expected ${m.chunks[index].slice(0, 12)}…)`);
      return;
    }
    const at = index * m.chunkBytes;
    const want = Math.min(m.chunkBytes, m.totalBytes - at);
    if (data.byteLength !== want) {
      this.fail(`weight chunk ${index} is ${data.byteLength} bytes; the manifest makes it ${want}`);
      return;
    }
    // the sink allocates with the first chunk that fits: an assignment alone costs no memory
    l.sink.write(at, data);
    l.got[index] = true;
    l.received++;
    // the broker's messages are garbage once copied: collected every 4 MB, they never pile up
    l.sinceGc += data.byteLength;
    if (l.sinceGc >= 4 * 2 ** 20) {
      l.sinceGc = 0;
      collectGarbage();
    }
    this.counters.chunks++;
    const t = Date.now();
    if (t - l.lastReport > 250 && l.received < l.got.length) {
      l.lastReport = t;
      void this.host.setStatus('loading', { received: l.received, total: l.got.length });
    }
  }

  /** Forget the stage being loaded, and free what its weights took so far. */
  drop(): void {
    this.loading?.sink.dispose();
    this.loading = undefined;
  }

  /** The weights of `failed` (default: those being loaded) cannot make a stage: forget them and say so. */
  fail(reason: string, failed?: Assignment): void {
    const a = failed ?? this.loading?.assignment;
    this.drop();
    log.error(`node ${this.node}: deployment ${a?.deployment} failed: ${reason}`);
    // report the failed deployment, not the one still running
    void this.host.setStatus('failed', { reason, deployment: a?.deployment, stage: a?.stage });
  }

  private maybeBuild(): void {
    const l = this.loading;
    if (!l || l.received < l.got.length) return;
    this.loading = undefined;
    void this.host.build(l, 'broker');
  }

  /** Subscribe to the retained chunks of the weights being loaded (`on`), or to none. */
  async subscribe(on: boolean): Promise<void> {
    const client = this.link.client;
    if (!client || this.link.closed) return;
    const want = on ? this.topics.nodeWeightsAll(this.weightsNode) : undefined;
    if (want === this.weightsTopic) return;
    const old = this.weightsTopic;
    this.weightsTopic = want;
    try {
      if (old) await client.unsubscribeAsync(old);
      if (want) await client.subscribeAsync(want, { qos: 1 });
    } catch (err) {
      log.warn(`cannot change the weights subscription (${old ?? 'none'} -> ${want ?? 'none'}): ${errorMessage(err)}`);
    }
  }

  /** Build from the weight cache if it holds the blob; else fetch the chunks (`again`: some that came early were not kept). */
  private async fetch(l: Loading, again = false): Promise<void> {
    await this.host.stopPrefetch(); // a stage to run: no more prefetching (and its weights subscription is released)
    if (this.loading !== l) return;
    const m = l.assignment.manifest;
    const cached = this.cache ? await this.cache.readInto(m.sha256, l.sink) : false;
    if (this.loading !== l) return; // replaced meanwhile
    if (cached) {
      log.info(`node ${this.node}: weights of ${l.assignment.deployment} from the cache (${(m.totalBytes / 1e6).toFixed(1)} MB, no transfer)`);
      this.loading = undefined;
      await this.host.build(l, 'cache');
      return;
    }
    // chunks that came before the assignment and were not kept: the broker sends its retained copies to a new subscription
    if (again) await this.subscribe(false);
    await this.subscribe(true);
  }
}
