/**
 * One pipeline measurement: a local deployment (embedded broker, N node
 * processes), first deployment and redeployment timed, frames through the
 * chain, and the figures DEFER's evaluation reports: throughput and latency
 * against the single-process baseline, the ideal bound, CPU per frame per
 * node, energy where RAPL counters exist, and per-hop overhead.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type Local, type UpOptions, withLocalDeployment } from '../cli/up.js';
import type { DeferConfig } from '../config/schema.js';
import { deploymentNodes } from '../dispatcher/deploy/deployment-package.js';
import { type LocalRun, runChain, runLocal, summarise, warmChain } from '../dispatcher/run/measure-run.js';
import { runFramesFor } from '../dispatcher/run/run-frames.js';
import { mean, round } from '../lib/core/stats.js';
import { chooseSplit } from '../lib/planning/auto-plan.js';
import { hopLatencies } from '../lib/protocol/index.js';

export interface PipelineRow {
  model: string;
  /** node processes started */
  nodes: number;
  /** planned: the shape planner's choice (stages, replicas, workers, idle nodes); chain: one node per stage, one engine each */
  deployment: 'planned' | 'chain';
  /** the shape run: stages separated by |, replicas by +, workers as xW */
  shape: string;
  /** engines that computed (worker threads, or nodes' own threads) */
  engines: number;
  /** the engines' batches (frames per call at most) and the mean frames per call reached, e.g. '8 (7.41 per call)'; 'none': one frame a call */
  batches?: string;
  frames: number;
  cuts: string[];
  throughputFps: number;
  singleProcessFps: number;
  speedup: number;
  /** single-process ms per frame over the slowest stage's compute ms (over its engines): what a perfect deployment of this shape would reach */
  idealSpeedup: number;
  idealFps: number;
  p50Ms: number;
  p95Ms: number;
  stageComputeMs: number[];
  /** CPU ms per frame of each stage's node processes over the run (their heartbeats' CPU seconds; worker threads, MQTT and all) */
  nodeCpuMsPerFrame: number[];
  /** CPU ms per frame of the process holding the broker and the dispatcher */
  brokerDispatcherCpuMsPerFrame: number;
  /**
   * per node, ms per frame: transfer (from the sender's publish to this node's receipt: the broker, the
   * sockets, and the time the message waits in the socket while the node, single-threaded, computes the
   * frame before), decode, compute, encode; and the codec's share of the node's busy time
   */
  overhead: { node: string; transferMs: number; decodeMs: number; encodeMs: number; computeMs: number; codecShare: number }[];
  bytesPerHop: number[];
  /** each hop's precision (dispatcher -> first stage, ..., last stage -> dispatcher) */
  precision: string[];
  /** share of frames whose top-1 is the single-process run's */
  top1AgreementVsLocal: number;
  deployMs: number;
  /** null where the run skipped the redeployment */
  redeployMs: number | null;
  weightBytes: number;
  /**
   * per stage (its first node): its weight bytes, what the planner's memory model predicts it adds to an idle node,
   * and its process's peak RSS, wasm heap and (in a cgroup) the cgroup's limit and peak (bytes, from its last
   * heartbeat; null: not reported)
   */
  memory: {
    weightBytes: number;
    predictedBytes: number;
    peakRssBytes: number | null;
    engineHeapBytes: number | null;
    memoryLimitBytes: number | null;
    memoryPeakBytes: number | null;
  }[];
  /** joules per frame from RAPL, or null where the machine has no counters */
  joulesPerFrame: number | null;
  maxAbsDiffVsLocal: number;
}

/** Sum of the RAPL package counters in µJ, or null where there are none (VMs, non-Intel/AMD, no permission). */
export async function raplMicrojoules(): Promise<number | null> {
  const base = '/sys/class/powercap';
  try {
    const zones = (await readdir(base)).filter((z) => /^intel-rapl:\d+$/.test(z));
    if (!zones.length) return null;
    let total = 0;
    for (const z of zones) total += Number((await readFile(join(base, z, 'energy_uj'), 'utf8')).trim());
    return total;
  } catch {
    return null;
  }
}

/** Baselines per model, measured once in this process on the same frames. */
const baselines = new Map<string, LocalRun>();

export async function measurePipeline(config: DeferConfig, progress: (l: string) => void, opts: Pick<UpOptions, 'nodeNetwork'> & { redeploy?: boolean } = {}): Promise<PipelineRow> {
  return withLocalDeployment(config, { progress: () => undefined, ...opts }, async (l: Local) => {
    const { order, cuts, shape } = await chooseSplit({ config: l.config, backend: l.backend, flat: l.flat, ids: l.ids, caps: l.caps, cuts: l.cuts, progress: () => undefined });
    // nodes up first: the deployment time is from dispatch to all ready, not node start-up
    await l.dispatcher.nodes.waitCapabilities(l.ids, 120_000);
    const { frames, image } = await runFramesFor(l.flat, config);
    if (image) l.dispatcher.useImageInput(image);
    const first = await l.dispatcher.deploy(l.flat, order, cuts, shape);
    const again = opts.redeploy === false ? first : await l.dispatcher.deploy(l.flat, order, cuts, shape);
    const key = `${config.dispatcher.model}/${frames.length}/${image ? 'pixels' : 'float32'}`;
    if (!baselines.has(key)) baselines.set(key, await runLocal(l.flat, frames, image));
    const local = baselines.get(key)!;
    const e0 = await raplMicrojoules();
    await warmChain(again, frames);
    // each node process's CPU seconds from its heartbeats, before and after: its CPU per frame, worker threads included
    const nodeIds = deploymentNodes(again.package);
    await l.dispatcher.nodes.freshHeartbeats(nodeIds, Date.now());
    const cpuBefore = new Map(nodeIds.map((n) => [n, l.dispatcher.nodes.heartbeats.get(n)?.cpuSeconds]));
    const chain = await runChain(again, frames);
    const e1 = await raplMicrojoules();
    await l.dispatcher.nodes.freshHeartbeats(nodeIds, Date.now());
    const cpuMsPerFrame = (node: string) => {
      const a = cpuBefore.get(node);
      const b = l.dispatcher.nodes.heartbeats.get(node)?.cpuSeconds;
      return a === undefined || b === undefined ? NaN : ((b - a) * 1000) / frames.length;
    };
    const s = summarise(config.dispatcher.model, l.backend, again, frames, chain, local, l.dispatcher.nodes.heartbeats, l.dispatcher.nodes.plainConvolutionNodes());
    const hops = chain.results.map(hopLatencies);
    const overhead = s.stages.map((st, k) => {
      const m = (f: (h: ReturnType<typeof hopLatencies>[number]) => number) => round(mean(hops.map((h) => f(h[k]))), 2);
      const transferMs = m((h) => h.transferMs);
      const decodeMs = m((h) => h.decodeMs);
      const encodeMs = m((h) => h.encodeMs);
      const computeMs = m((h) => h.computeMs);
      return { node: st.node, transferMs, decodeMs, encodeMs, computeMs, codecShare: round((decodeMs + encodeMs) / (decodeMs + encodeMs + computeMs), 4) };
    });
    const single = s.singleProcess!;
    // a stage served by several engines takes its compute time over their number
    const slowest = Math.max(...s.stages.map((st) => st.meanComputeMs / st.nodes.reduce((w, x) => w + x.workers, 0)));
    progress(
      `  ${config.dispatcher.model} on ${config.up.nodes} node(s), ${shape ? 'planned' : 'chain'} ${s.shape}: ${s.throughputFps} frames/s (single ${single.throughputFps}), deploy ${(first.deployMs / 1000).toFixed(1)} s${opts.redeploy === false ? '' : `, redeploy ${(again.deployMs / 1000).toFixed(1)} s`}`,
    );
    return {
      model: config.dispatcher.model,
      nodes: config.up.nodes,
      deployment: shape ? 'planned' : 'chain',
      shape: s.shape,
      engines: s.stages.reduce((n, st) => n + st.nodes.reduce((w, x) => w + x.workers, 0), 0),
      batches: batchesOf(s.stages.flatMap((st) => st.nodes.filter((x) => x.frames > 0))),
      frames: frames.length,
      cuts,
      throughputFps: s.throughputFps,
      singleProcessFps: single.throughputFps,
      speedup: s.speedupVsSingleProcess ?? 0,
      idealSpeedup: round(single.msPerFrame / slowest, 3),
      idealFps: round(1000 / slowest, 3),
      p50Ms: s.latencyMs.p50,
      p95Ms: s.latencyMs.p95,
      stageComputeMs: s.stages.map((st) => st.meanComputeMs),
      nodeCpuMsPerFrame: s.stages.map((st) =>
        round(
          st.nodes.reduce((sum, n) => sum + cpuMsPerFrame(n.node), 0),
          1,
        ),
      ),
      brokerDispatcherCpuMsPerFrame: s.dispatcherCpuMsPerFrame,
      overhead,
      bytesPerHop: s.bytesPerFramePerHop.map((h) => h.bytes),
      precision: s.bytesPerFramePerHop.map((h) => h.precision),
      top1AgreementVsLocal: s.top1AgreementVsLocal ?? NaN,
      deployMs: round(first.deployMs, 0),
      redeployMs: opts.redeploy === false ? null : round(again.deployMs, 0),
      weightBytes: again.package.totalBytes,
      memory: s.stages.map((st) => ({
        weightBytes: st.weightBytes,
        predictedBytes: st.predictedMemoryBytes,
        peakRssBytes: st.peakRssBytes,
        engineHeapBytes: st.engineHeapBytes,
        memoryLimitBytes: st.memoryLimitBytes,
        memoryPeakBytes: st.memoryPeakBytes,
      })),
      joulesPerFrame: e0 !== null && e1 !== null ? round((e1 - e0) / 1e6 / frames.length, 3) : null,
      maxAbsDiffVsLocal: s.maxAbsDiffVsLocal ?? NaN,
    };
  });
}

/** The batches of a run's engines in a few words: '8 (7.41 per call)', per node where they differ; 'none' where every call took one frame. */
function batchesOf(nodes: { batch: number; meanBatch: number }[]): string {
  if (nodes.every((n) => n.batch <= 1)) return 'none';
  return [...new Set(nodes.map((n) => `${n.batch} (${n.meanBatch} per call)`))].join(', ');
}
