/**
 * The stage an edge node serves, and the one it becomes: how many engines an assignment gets and how many of them
 * build at once (by the planner's memory estimate and the memory free), the stage built from its verified weights
 * and warmed up (in this thread, or on worker threads), swapped in for the old one, or the old one freed first
 * where the memory limit cannot hold both; and standing down when the assignment is cleared.
 */
import { availableParallelism } from 'node:os';
import { now } from '../lib/core/clock.js';
import { errorMessage } from '../lib/core/errors.js';
import { collectGarbage } from '../lib/core/gc.js';
import { log } from '../lib/core/log.js';
import { cgroupLimitBytes } from '../lib/core/process-memory.js';
import type { BackendChoice } from '../lib/model/engine.js';
import type { StageModel } from '../lib/model/flat-model.js';
import type { BlobWeights, WeightSink } from '../lib/model/weight-sink.js';
import { memoryOffer } from '../lib/planning/calibrate.js';
import { enginesMemoryBytes, MEMORY_PER_WEIGHT_BYTE, STAGE_BASE_BYTES } from '../lib/planning/cost-model.js';
import type { Assignment } from '../lib/protocol/index.js';
import type { NodeLink, SetStatus } from './node-link.js';
import { batchesExactly, buildStage, type ComputeContext, type EngineOptions, warmUp } from './stage.js';
import { StageWorkers } from './stage-workers.js';
import type { WeightCache } from './weight-cache.js';

/** A stage being served: in this thread (`model`), or on worker threads (`pool`). */
export interface NodeStage {
  assignment: Assignment;
  model?: StageModel;
  pool?: StageWorkers;
  /** frames one engine call computes at most: the assignment's batch where the stage batches exactly, else 1 */
  batch: number;
}

/** A stage's weights, all received and checked: what it is built from. */
export interface StageWeights {
  assignment: Assignment;
  /** where the stage's weights go, chunk by chunk as they arrive (no chunk is kept): the engine's own tensors where it can, else one blob */
  sink: WeightSink;
  /** engines (worker threads when more than 1) the stage runs on */
  engines: number;
}

/** What building needs of its node: the node's own figures (EdgeNode's). */
export interface NodeEngine {
  readonly opts: EngineOptions & { id: string; memoryLimitBytes?: number };
  /** the TensorFlow.js backend it runs */
  readonly backend: string;
  /** whether its engine keeps twice each convolution filter (EdgeNode.plainConvolutions) */
  readonly plainConvolutions: boolean;
  /** the most engines it runs for a stage */
  readonly maxWorkers: number;
}

/** What the builder asks of the node's weight intake (weight-intake.ts). */
export interface WeightsSide {
  /** the assignment whose weights are coming in, if any */
  readonly loading?: { assignment: Assignment };
  /** start taking assignment `a`'s weights; `releasedFirst`: the stage it replaces was freed first */
  load(a: Assignment, releasedFirst: boolean): void;
  /** forget the weights coming in, and free what they took so far */
  drop(): void;
  /** the weights of `a` (default: those coming in) cannot make a stage: forget them and say so */
  fail(reason: string, a?: Assignment): void;
  /** take the chunks of the weights coming in from the broker (`on`), or none */
  subscribe(on: boolean): Promise<void>;
}

/** What the builder asks of the node's compute loop (compute-pump.ts). */
export interface ComputeSide {
  clear(): void;
  idle(): Promise<void>;
}

/** The ready line's words on batches: the batch taken, or why none was. */
function batchText(a: Assignment, batch: number): string {
  if ((a.batch ?? 1) <= 1) return '';
  return batch > 1 ? `, batches of up to ${batch} frames` : `, no batches (the stage computes a batch of ${a.batch} other than its frames alone)`;
}

/**
 * What `engines` engines of assignment `a`'s stage add to this node: the planner's estimate, which the assignment
 * carries (lib/planning/cost-model.ts, the figure the planner fitted the stage to its node with), for a node whose
 * engine keeps twice its convolution filters (`plain`) its estimate for such a node; where it carries none (an
 * older dispatcher), the same constants on the weights alone, a plain node counting at least twice the weights.
 */
function stageNeedBytes(a: Assignment, engines: number, plain: boolean): number {
  const byWeights = STAGE_BASE_BYTES + MEMORY_PER_WEIGHT_BYTE * a.manifest.totalBytes;
  const stage = plain ? (a.plainMemoryBytes ?? Math.max(a.memoryBytes ?? 0, byWeights)) : (a.memoryBytes ?? byWeights);
  return enginesMemoryBytes(stage, engines, a.batch ?? 1, a.batchFrameBytes ?? 0, a.manifest.totalBytes);
}

/** Free a stage's engine memory: its model in this thread, or its worker threads. */
export async function disposeStage(s: NodeStage | undefined): Promise<void> {
  s?.model?.dispose();
  await s?.pool?.close();
}

export class StageBuilder {
  /** the stage served now */
  current?: NodeStage;
  /** an assignment waiting while the stage it replaces is freed first (the memory limit cannot hold both) */
  releasing?: Assignment;
  /** where the served stage's weights came from */
  weightsFrom?: 'broker' | 'cache';
  /** the deployment whose stage is being built from chunks all received (its chunks, sent again, are not needed) */
  private building?: string;
  /** stand-downs so far: a stage whose build began before the last one is dropped when built */
  private standDowns = 0;

  constructor(
    private readonly node: NodeEngine,
    /** what a frame's computation needs of this node (worker threads get it as it is when they start) */
    private readonly compute: () => ComputeContext,
    private readonly link: NodeLink,
    private readonly cache: WeightCache | undefined,
    private readonly setStatus: SetStatus,
    private readonly weights: WeightsSide,
    private readonly pump: ComputeSide,
  ) {}

  /** Whether deployment `d`'s weights are taken already: its stage is served, or is being built from chunks all received. */
  holds(d: string): boolean {
    return this.current?.assignment.deployment === d || this.building === d;
  }

  /**
   * How many engines to run for assignment `a`: what it asks for (default 1), no more than this node's
   * maximum (--workers) nor than its free memory holds by the planner's estimate (each engine holds its own copy
   * of the weights).
   */
  enginesFor(a: Assignment): number {
    const want = a.workers ?? 1;
    const free = memoryOffer(this.node.opts.memoryLimitBytes).freeMemoryBytes;
    const max = this.node.maxWorkers;
    let engines = Math.min(want, max);
    while (engines > 1 && stageNeedBytes(a, engines, this.node.plainConvolutions) > free) engines--;
    if (engines < want) {
      const why = engines === max ? `its maximum is ${max} (--workers)` : `its free memory (${(free / 1e6).toFixed(0)} MB) holds ${engines}`;
      log.warn(`node ${this.node.opts.id}: stage ${a.stage + 1} asks for ${want} workers; running ${engines}: ${why}`);
    }
    return engines;
  }

  /**
   * How many of `engines` workers may build assignment `a`'s stage at once: each build holds its engine's copy of
   * the weights before packing beyond what the engines keep, so as many as the memory left over by all the engines
   * holds, and no more than the cores (16 ResNet50 engines built one at a time took 36 s on a 16-core machine).
   */
  private buildsAtOnce(a: Assignment, engines: number): number {
    const spare = memoryOffer(this.node.opts.memoryLimitBytes).freeMemoryBytes - stageNeedBytes(a, engines, this.node.plainConvolutions);
    const byMemory = 1 + Math.floor(Math.max(0, spare) / Math.max(1, a.manifest.totalBytes));
    return Math.max(1, Math.min(engines, availableParallelism(), byMemory));
  }

  /**
   * A new assignment `a`: the stage served (if any) serves until `a`'s is built, unless the memory limit cannot hold
   * both: then it goes first (taken out of service now, freed once its calls end), and `a`'s weights load after.
   */
  assign(a: Assignment): void {
    const id = this.node.opts.id;
    this.releasing = undefined; // a stage still being freed for an earlier assignment: this one replaces it
    const old = this.current;
    const limit = this.node.opts.memoryLimitBytes ?? cgroupLimitBytes();
    const need = stageNeedBytes(a, a.workers ?? 1, this.node.plainConvolutions);
    const free = memoryOffer(this.node.opts.memoryLimitBytes).freeMemoryBytes;
    if (!old || limit === undefined || need <= free) {
      this.weights.load(a, false);
      return;
    }
    this.weights.drop();
    this.releasing = a;
    this.current = undefined;
    this.pump.clear();
    void this.setStatus('loading', { received: 0, total: a.manifest.chunks.length, released: 'first' });
    log.warn(
      `node ${id}: freeing stage ${old.assignment.stage + 1} of ${old.assignment.deployment} before loading the new one: it needs about ${(need / 1e6).toFixed(0)} MB, ${(free / 1e6).toFixed(0)} MB of the ${(limit / 1e6).toFixed(0)} MB limit are free (it serves nothing until the new stage is ready)`,
    );
    void (async () => {
      await this.pump.idle();
      await disposeStage(old);
      await this.link.client?.unsubscribeAsync(old.assignment.inputTopic).catch(() => undefined);
      collectGarbage();
      if (this.releasing !== a) return; // replaced or cleared meanwhile
      this.releasing = undefined;
      this.weights.load(a, true);
    })();
  }

  /** Build the stage from its weights, all received (`from` the broker or the cache), warm it up, and serve it. */
  async build(w: StageWeights, from: 'broker' | 'cache'): Promise<void> {
    // the weights outside the engine (a blob) are held here only until built and cached: dropped before the warm-up
    const { assignment: a, engines } = w;
    const { opts } = this.node;
    this.building = a.deployment;
    let sink: WeightSink | undefined = w.sink;
    try {
      const t0 = now();
      const standDowns = this.standDowns;
      let next: NodeStage;
      let released = 0;
      let together = 1;
      const wantBatch = a.batch ?? 1;
      // cached before it is built (an engine's tensors then belong to the stage), once its hash is checked
      if (from === 'broker' && this.cache && sink.sha256() === a.manifest.sha256) await this.cache.put(a.manifest.sha256, sink.pieces());
      if (engines > 1) {
        // each worker builds and warms up its engine's copy from the shared blob, dropped here once they are built
        together = this.buildsAtOnce(a, engines);
        const pool = await StageWorkers.start(a, (sink as BlobWeights).blob, engines, this.node.backend as BackendChoice, { ...this.compute(), processCpu: false }, opts, together, wantBatch);
        released = pool.releasedBytes;
        sink = undefined;
        next = { assignment: a, pool, batch: pool.batch };
      } else {
        const model = await buildStage(a, sink, opts);
        sink = undefined;
        collectGarbage();
        released = warmUp(a, model, opts.keepPackedWeights);
        next = { assignment: a, model, batch: wantBatch > 1 && batchesExactly(a, model) ? wantBatch : 1 };
      }
      if (standDowns !== this.standDowns) {
        await disposeStage(next); // the assignment was cleared meanwhile
        return;
      }
      const old = this.current;
      this.current = next;
      if (old) {
        await disposeStage(old);
        if (old.assignment.inputTopic !== a.inputTopic) await this.link.client?.unsubscribeAsync(old.assignment.inputTopic);
      }
      await this.link.client?.subscribeAsync(a.inputTopic, { qos: a.qos });
      if (!this.weights.loading) await this.weights.subscribe(false); // nothing more to fetch
      this.weightsFrom = from;
      log.info(
        `node ${opts.id}: ready: stage ${a.stage + 1}/${a.stageCount} of ${a.deployment} (weights from the ${from}, built in ${(now() - t0).toFixed(0)} ms${engines > 1 ? ` on ${engines} worker threads, ${together} at once` : ''}${batchText(a, next.batch)}${released > 0 ? `, ${(released / 1e6).toFixed(1)} MB of packed weights released` : ''}), reading ${a.inputTopic}`,
      );
      await this.setStatus('ready');
    } catch (err) {
      sink?.dispose();
      this.weights.fail(errorMessage(err), a);
    } finally {
      if (this.building === a.deployment) this.building = undefined;
    }
    // the weight blob (and a replaced stage's JS objects) are garbage once this returns
    setImmediate(collectGarbage);
  }

  /**
   * The assignment was cleared (the dispatcher gave this node's stage to
   * another, or ended the deployment): stop computing, free the stage, and
   * wait as a standby.
   */
  async standDown(): Promise<void> {
    const old = this.current;
    this.standDowns++; // a stage being built now is dropped when built
    const releasing = this.releasing !== undefined;
    this.releasing = undefined;
    if (!old && !this.weights.loading && !releasing) return;
    this.weights.drop();
    this.current = undefined;
    this.pump.clear();
    await this.pump.idle();
    await disposeStage(old);
    await this.weights.subscribe(false);
    if (old) await this.link.client?.unsubscribeAsync(old.assignment.inputTopic).catch(() => undefined);
    log.info(`node ${this.node.opts.id}: assignment cleared${old ? ` (was stage ${old.assignment.stage + 1}/${old.assignment.stageCount} of ${old.assignment.deployment})` : ''}: standing by`);
    await this.setStatus('online');
  }

  /** Free the stage served (the node is closing). */
  async dispose(): Promise<void> {
    await disposeStage(this.current);
    this.current = undefined;
  }
}
