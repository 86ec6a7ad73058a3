/**
 * A standby's prefetch: the stages of the running deployment, fetched one at a
 * time from the chunks retained on the broker (each checked against its
 * manifest) into the node's weight cache, so that taking over a failed node's
 * stage needs no transfer. Stops as soon as the node is given a stage.
 */
import type { MqttClient } from 'mqtt';
import { errorMessage } from '../lib/core/errors.js';
import { log } from '../lib/core/log.js';
import { sha256 } from '../lib/model/partition.js';
import { decodeWeightChunk, type PrefetchList, type Topics, type WeightManifest } from '../lib/protocol/index.js';
import type { WeightCache } from './weight-cache.js';

interface Fetching {
  deployment: string;
  /** the node whose retained chunks hold the weights */
  weightsNode: string;
  manifest: WeightManifest;
  chunks: (Uint8Array | undefined)[];
  received: number;
  complete: () => void;
}

export class Prefetcher {
  /** stages of the current list in the cache, and how many the list has */
  held = 0;
  total = 0;
  private fetching?: Fetching;
  private generation = 0;
  private running: Promise<void> = Promise.resolve();

  constructor(
    private readonly client: MqttClient,
    private readonly topics: Topics,
    private readonly cache: WeightCache,
    private readonly maxMessageBytes: number,
    private readonly onProgress: () => void,
  ) {}

  /** A chunk for the stage being prefetched? Then it is taken here (true). */
  onMessage(topic: string, payload: Buffer): boolean {
    const f = this.fetching;
    if (!f) return false;
    const t = this.topics.parse(topic);
    if (t?.kind !== 'node-weights' || t.node !== f.weightsNode) return false;
    if (payload.length === 0) return true;
    try {
      const c = decodeWeightChunk(payload, this.maxMessageBytes);
      if (c.deployment !== f.deployment || c.count !== f.chunks.length || f.chunks[c.index]) return true;
      if (sha256(c.data) !== f.manifest.chunks[c.index]) {
        log.warn(`prefetch: chunk ${c.index} on ${topic} does not match its manifest; ignored`);
        return true;
      }
      f.chunks[c.index] = c.data;
      if (++f.received === f.chunks.length) f.complete();
    } catch (err) {
      log.warn(`prefetch: unreadable chunk on ${topic}: ${errorMessage(err)}`);
    }
    return true;
  }

  /** Fetch the stages of `list` that the cache lacks (a new list replaces the old one). */
  start(list: PrefetchList): void {
    const gen = ++this.generation;
    this.fetching?.complete(); // a fetch of the old list ends (it may wait for chunks that never come)
    this.total = list.stages.length;
    this.held = 0;
    this.running = this.running.then(() => this.fetchAll(list, gen)).catch((err) => log.warn(`prefetch: ${errorMessage(err)}`));
  }

  /** Stop fetching (the node was given a stage, or the list was cleared); resolves once unsubscribed. */
  async stop(): Promise<void> {
    this.generation++;
    this.fetching?.complete();
    await this.running;
  }

  private async fetchAll(list: PrefetchList, gen: number): Promise<void> {
    for (const s of list.stages) {
      if (gen !== this.generation) return;
      const m = s.manifest;
      if (!(await this.cache.has(m.sha256, m.totalBytes))) {
        let complete!: () => void;
        const done = new Promise<void>((r) => (complete = r));
        const f: Fetching = { deployment: list.deployment, weightsNode: s.weightsNode, manifest: m, chunks: new Array(m.chunks.length), received: 0, complete };
        this.fetching = f;
        const topic = this.topics.nodeWeightsAll(s.weightsNode);
        try {
          await this.client.subscribeAsync(topic, { qos: 1 });
          await done;
        } finally {
          this.fetching = undefined;
          await this.client.unsubscribeAsync(topic).catch(() => undefined);
        }
        if (gen !== this.generation || f.received < f.chunks.length) return;
        const blob = Buffer.concat(f.chunks as Uint8Array[]);
        if (sha256(blob) !== m.sha256) {
          log.warn(`prefetch: the weights under ${s.weightsNode} do not match their manifest; skipped`);
          continue;
        }
        await this.cache.put(m.sha256, blob);
      }
      this.held++;
      this.onProgress();
    }
  }
}
