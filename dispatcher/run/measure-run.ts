/**
 * Running a batch of frames through a deployment, and through the whole model
 * in this process, and summarising both: what `defer up` and `defer dispatch`
 * print.
 */

import { maxAbsDiff, mean, percentile, round } from '../../lib/core/stats.js';
import { count } from '../../lib/core/words.js';
import { tf } from '../../lib/model/engine.js';
import type { StageModel } from '../../lib/model/flat-model.js';
import { shortNameMap } from '../../lib/model/graph.js';
import { enginesMemoryBytes } from '../../lib/planning/cost-model.js';
import { formatPlanCheck, type PredictionCheck } from '../../lib/planning/plan-check.js';
import { stageMemoryOf } from '../../lib/planning/plan-inputs.js';
import { memberName, type ShapePlan, shapeLine } from '../../lib/planning/shape.js';
import type { Heartbeat, Hop, ImageInput, Precision, RawTensor } from '../../lib/protocol/index.js';
import type { FrameResult } from '../chain/frame-stream.js';
import { stageNodes } from '../deploy/deployment-package.js';
import type { Deployment } from '../dispatcher.js';
import type { RepairEvent } from '../events.js';
import { modelInputOf } from './run-frames.js';

export interface ChainRun {
  /** the result of frame i, or undefined where it failed */
  byFrame: (FrameResult | undefined)[];
  results: FrameResult[];
  failures: string[];
  wallMs: number;
  /** epoch ms when the first frame was sent */
  startedAt: number;
  /** CPU time (user + system) this process spent while the frames ran */
  cpuMs: number;
  /** ms from the first frame sent to the first result and to the last: the chain's fill, and the run's end */
  firstResultMs: number | null;
  lastResultMs: number | null;
}

let runs = 0;

/**
 * Warm a fresh deployment up: `count` frames (the first ones again, not counted anywhere; default one window of the
 * stream) through it, untimed, as the single-process baseline's first two are: fresh node processes and worker
 * threads, like the baseline, compute their first frames slower.
 */
export async function warmChain(d: Deployment, frames: RawTensor[], count = d.stream.maxInFlight): Promise<void> {
  const run = ++runs;
  await Promise.allSettled(Array.from({ length: count }, (_, i) => d.stream.send(frames[i % frames.length], 'dispatcher', `w${run}-${i}`)));
}

/** Stream every frame (bounded in flight by the stream); results are kept in frame order. */
export async function runChain(d: Deployment, frames: RawTensor[], onResult?: (done: number) => void): Promise<ChainRun> {
  const run = ++runs;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const startedAt = Date.now();
  let done = 0;
  let firstResultMs: number | null = null;
  let lastResultMs: number | null = null;
  const settled = await Promise.allSettled(
    frames.map((f, i) =>
      d.stream.send(f, 'dispatcher', `r${run}-${i}`).then((r) => {
        lastResultMs = performance.now() - t0;
        firstResultMs ??= lastResultMs;
        onResult?.(++done);
        return r;
      }),
    ),
  );
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const byFrame = settled.map((s) => (s.status === 'fulfilled' ? s.value : undefined));
  const failures = settled.flatMap((s) => (s.status === 'rejected' ? [(s.reason as Error).message] : []));
  return { byFrame, results: byFrame.filter((r): r is FrameResult => r !== undefined), failures, wallMs, startedAt, cpuMs: (cpu.user + cpu.system) / 1000, firstResultMs, lastResultMs };
}

export interface LocalRun {
  outputs: Float32Array[];
  wallMs: number;
}

/**
 * The whole model, one frame after another, in this process (after two warm-up frames). Pixel frames are
 * normalised as `image` says, in the timed loop, as a single device would have to.
 */
export async function runLocal(model: StageModel, frames: RawTensor[], image?: ImageInput): Promise<LocalRun> {
  const run = async (frame: RawTensor) => {
    const f = modelInputOf(frame, image);
    const out = tf.tidy(() => model.run(tf.tensor(f.data as Float32Array, f.shape, 'float32')));
    const data = (await out.data()) as Float32Array;
    out.dispose();
    return data;
  };
  // two warm-up frames: the first call compiles kernels and sizes memory
  for (const f of frames.slice(0, 2)) await run(f);
  const t0 = performance.now();
  const outputs: Float32Array[] = [];
  for (const f of frames) {
    outputs.push(await run(f));
    // let I/O through between frames (heartbeats, keep-alive): the wasm kernels block the event loop
    await new Promise((r) => setImmediate(r));
  }
  return { outputs, wallMs: performance.now() - t0 };
}

export interface RunSummary {
  model: string;
  backend: string;
  deployment: string;
  /** what the model's stages are made of: Keras layers, or graph nodes */
  unit: 'layer' | 'node';
  stages: {
    index: number;
    node: string;
    layers: number;
    /** first and last layer, as their shortest unique names (graph nodes' scoped names shortened) */
    firstLayer: string;
    lastLayer: string;
    params: number;
    weightBytes: number;
    outputShape: number[];
    outputBytes: number;
    meanComputeMs: number;
    /** decode + compute + encode: the node's time per frame */
    meanBusyMs: number;
    /** CPU ms of the node's process per frame (null where the node does not report it) */
    meanCpuMs: number | null;
    /** the node process's largest resident set so far, bytes, from its last heartbeat (null: not reported) */
    peakRssBytes: number | null;
    /** the engine's heap in that process (the wasm backend's memory), bytes */
    engineHeapBytes: number | null;
    /** what the planner's memory model expects the stage to add to an idle node (the first node, with its engines: worker threads each hold a copy), bytes */
    predictedMemoryBytes: number;
    /** the node's memory cgroup: its limit and the most it was charged, bytes (null: the node is in none) */
    memoryLimitBytes: number | null;
    memoryPeakBytes: number | null;
    /** every node that served this stage (replicas), with its engines, the frames it computed and its time per frame */
    nodes: StageNodeRun[];
  }[];
  /** the deployment's shape in one line: stages separated by |, replicas by +, engines as xW (e.g. `n1x2 | n2+n3`) */
  shape: string;
  cuts: string[];
  frames: number;
  framesReturned: number;
  failures: string[];
  throughputFps: number;
  /** the run's wall time and, within it, the first result's arrival (the chain filling up), ms */
  wallMs: number;
  firstResultMs: number | null;
  /** frames/s from the first result to the last: the rate once the chain is full (null: fewer than 2 results) */
  steadyThroughputFps: number | null;
  latencyMs: { p50: number; p95: number; mean: number; max: number };
  /** mean bytes on the wire per frame, for each hop: dispatcher -> stage 0, ..., last stage -> dispatcher */
  bytesPerFramePerHop: { hop: string; precision: Precision; bytes: number; rawBytes: number }[];
  deployMs: number;
  /** CPU ms per frame of the dispatcher's process while streaming (with `defer up`, the broker runs there too) */
  dispatcherCpuMsPerFrame: number;
  singleProcess: { throughputFps: number; msPerFrame: number } | null;
  speedupVsSingleProcess: number | null;
  maxAbsDiffVsLocal: number | null;
  /** share of frames whose top-1 class is the local run's (1 when lossless; less is what a lossy precision costs) */
  top1AgreementVsLocal: number | null;
  /** failures the dispatcher mended while the frames ran (node failures, broker reconnects); stage figures are of the chain at the end */
  repairs: RepairEvent[];
  /** results that arrived twice after frames were sent again, and were dropped */
  duplicates: number;
  /** with a planned deployment: measured against predicted */
  predicted?: PredictionCheck;
  /** with a shape the planner chose: its prediction, stage by stage and node by node, beside what was measured */
  plannedShape?: ShapeCheck;
  /** with --replan: the run after re-planning from measured figures */
  replanned?: { changed: boolean; summary: RunSummary };
}

export interface StageNodeRun {
  node: string;
  workers: number;
  /** the most frames each engine computed in one call (its assignment's batch; 1: none) */
  batch: number;
  /** frames per engine call, on average over this run (from the hops) */
  meanBatch: number;
  /** frames of this run it computed */
  frames: number;
  /** its decode + compute + encode per frame, ms (one engine) */
  meanBusyMs: number;
  /** its process's peak resident set, bytes, from its last heartbeat (null: not reported): W workers hold W copies of the stage */
  peakRssBytes: number | null;
}

export interface ShapeCheck {
  shape: string;
  idle: string[];
  bottleneck: string;
  predictedThroughputFps: number;
  measuredThroughputFps: number;
  /** predicted throughput over one engine's (the single-process baseline's) */
  predictedSpeedup: number;
  /**
   * the whole model on one engine: the profile's ms per frame, the single-process baseline's in this run (null
   * without one), and the first over the second. Far from 1, the profile was made on a busier (or idler) machine
   * than this run's, and every prediction is off by about as much: `--refresh` profiles the model again.
   */
  wholeModel: { profileMs: number; baselineMs: number | null; profileOverBaseline: number | null };
  /** the run's own figures that bear on a miss: its length, the first result's arrival, the rate from then on */
  run: { wallMs: number; firstResultMs: number | null; steadyThroughputFps: number | null; dispatcherCpuMsPerFrame: number; predictedRelayCpuMs: number };
  stages: {
    index: number;
    predictedStageMs: number;
    /** measured ms per frame of the stage as a whole: each node's engines over its busy time, summed */
    measuredStageMs: number;
    nodes: { node: string; workers: number; batch: number; predictedShare: number; measuredShare: number; predictedEngineMs: number; measuredEngineMs: number }[];
  }[];
}

/** A shape plan beside a run of it. */
export function checkShape(plan: ShapePlan, s: RunSummary): ShapeCheck {
  return {
    shape: s.shape,
    idle: plan.idle,
    bottleneck: plan.bottleneck,
    predictedThroughputFps: round(plan.predictedThroughputFps, 3),
    measuredThroughputFps: s.throughputFps,
    predictedSpeedup: round(plan.predictedThroughputFps / plan.singleFps, 3),
    wholeModel: {
      profileMs: round(1000 / plan.singleFps, 1),
      baselineMs: s.singleProcess?.msPerFrame ?? null,
      profileOverBaseline: s.singleProcess ? round(1000 / plan.singleFps / s.singleProcess.msPerFrame, 2) : null,
    },
    run: {
      wallMs: s.wallMs,
      firstResultMs: s.firstResultMs,
      steadyThroughputFps: s.steadyThroughputFps,
      dispatcherCpuMsPerFrame: s.dispatcherCpuMsPerFrame,
      predictedRelayCpuMs: round(plan.relayCpuMs, 1),
    },
    stages: plan.stages.map((ps, k) => {
      const ran = s.stages[k]?.nodes ?? [];
      const total = ran.reduce((n, x) => n + x.frames, 0);
      const rate = ran.reduce((r, x) => r + (x.meanBusyMs > 0 ? x.workers / x.meanBusyMs : 0), 0);
      return {
        index: k,
        predictedStageMs: round(ps.stageMs, 2),
        measuredStageMs: rate > 0 ? round(1 / rate, 2) : 0,
        nodes: ps.members.map((m) => {
          const x = ran.find((r) => r.node === m.node);
          return {
            node: m.node,
            workers: m.workers,
            batch: m.batch ?? 1,
            predictedShare: round(ps.share[m.node], 3),
            measuredShare: x && total ? round(x.frames / total, 3) : 0,
            predictedEngineMs: round(ps.engineMs[m.node], 1),
            measuredEngineMs: x?.meanBusyMs ?? 0,
          };
        }),
      };
    }),
  };
}

/** A profile whose whole model is this far from the run's own single process (either way) is named stale. */
export const STALE_PROFILE_RATIO = 1.2;

/** A measured throughput this far under the predicted is explained, from the run's own figures. */
export const MISS_RATIO = 1.2;

/** The profile against this run's single process, where they differ by more than STALE_PROFILE_RATIO either way. */
function staleProfile(c: ShapeCheck): string | undefined {
  const w = c.wholeModel;
  if (w.profileOverBaseline === null || (w.profileOverBaseline <= STALE_PROFILE_RATIO && w.profileOverBaseline >= 1 / STALE_PROFILE_RATIO)) return undefined;
  return `the profile's whole model takes ${w.profileMs} ms per frame, this run's single process ${w.baselineMs} ms (${w.profileOverBaseline}x): the model ran ${w.profileOverBaseline < 1 ? 'slower' : 'faster'} here in this run than in its profile, and every prediction, made from the profile, is off by about as much; --refresh profiles the model again`;
}

/**
 * Why a run fell short of its prediction, each reason a figure the run measured: the chain's fill in a short run,
 * the machine slower than when the model was profiled, a stage slower than planned, the dispatcher's CPU per frame
 * above what the planner charged it. Empty when the run is within MISS_RATIO of its prediction (or above it).
 */
export function explainMiss(c: ShapeCheck): string[] {
  if (c.measuredThroughputFps * MISS_RATIO >= c.predictedThroughputFps) return [];
  const why: string[] = [];
  const r = c.run;
  if (r.firstResultMs !== null && r.steadyThroughputFps !== null && r.steadyThroughputFps > c.measuredThroughputFps * 1.1)
    why.push(
      `the run lasted ${r.wallMs} ms, ${r.firstResultMs} of them before the first result (the chain filling up); from the first result to the last it ran at ${r.steadyThroughputFps} frames/s: more frames (--frames) weigh the fill less`,
    );
  const stale = staleProfile(c);
  if (stale && c.wholeModel.profileOverBaseline! < 1) why.push(stale);
  for (const st of c.stages)
    if (st.measuredStageMs > st.predictedStageMs * MISS_RATIO)
      why.push(`stage ${st.index + 1} took ${st.measuredStageMs} ms per frame, ${round(st.measuredStageMs / st.predictedStageMs, 2)}x the predicted ${st.predictedStageMs}`);
  if (r.predictedRelayCpuMs > 0 && r.dispatcherCpuMsPerFrame > r.predictedRelayCpuMs * MISS_RATIO)
    why.push(`the dispatcher's process used ${r.dispatcherCpuMsPerFrame} ms of CPU per frame, the planner charged it ${r.predictedRelayCpuMs}`);
  if (why.length === 0) why.push("none of the run's figures measured here (its fill, the whole model's speed, the stages' times, the dispatcher's CPU) accounts for it");
  return why;
}

export function formatShapeCheck(c: ShapeCheck): string {
  const why = explainMiss(c);
  const stale = staleProfile(c);
  return [
    `  planned shape ${c.shape}${c.idle.length ? ` (idle: ${c.idle.join(', ')})` : ''}: predicted ${c.predictedThroughputFps} frames/s (${c.predictedSpeedup}x one engine; bottleneck: ${c.bottleneck}), measured ${c.measuredThroughputFps}`,
    ...(why.length ? [`    measured ${round(c.measuredThroughputFps / c.predictedThroughputFps, 2)}x the prediction, as measured:`, ...why.map((x) => `      - ${x}`)] : stale ? [`    ${stale}`] : []),
    ...c.stages.map(
      (st) =>
        `    stage ${st.index + 1}: predicted ${st.predictedStageMs} ms/frame, measured ${st.measuredStageMs}; ${st.nodes.map((n) => `${memberName(n)} ${Math.round(100 * n.measuredShare)}% of frames (predicted ${Math.round(100 * n.predictedShare)}%), ${n.measuredEngineMs} ms/frame per engine (predicted ${n.predictedEngineMs})`).join('; ')}`,
    ),
  ].join('\n');
}

const argMax = (x: ArrayLike<number>) => {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
};

function hopMean(res: FrameResult[], stage: number, f: (h: Hop) => number): number {
  return round(mean(res.map((r) => (r.hops[stage] ? f(r.hops[stage]) : NaN)).filter((x) => !Number.isNaN(x))), 1);
}

/** What a node last said of its memory (its heartbeat). */
export type NodeMemory = Pick<Heartbeat, 'rssBytes' | 'peakRssBytes' | 'engineHeapBytes' | 'memoryLimitBytes' | 'memoryPeakBytes'>;

/**
 * A run's summary. `memory`: what each node last said of its memory; `plainNodes`: the nodes that compute every
 * convolution themselves, whose stage is predicted as the planner counts it for them.
 */
export function summarise(
  modelName: string,
  backend: string,
  d: Deployment,
  frames: RawTensor[],
  chain: ChainRun,
  local: LocalRun | null,
  memory?: ReadonlyMap<string, NodeMemory>,
  plainNodes?: ReadonlySet<string>,
): RunSummary {
  const stages = d.package.stages;
  const res = chain.results;
  const lat = res.map((r) => r.latencyMs);
  const names = ['dispatcher', ...stages.map((s) => s.nodeId), 'dispatcher'];
  const rawIn = [frames[0]?.data.byteLength ?? 0, ...stages.map((s) => s.span.outputBytes)];
  const bytesPerFramePerHop = names.slice(0, -1).map((from, i) => ({
    hop: `${from} -> ${names[i + 1]}`,
    precision: d.package.precision[i],
    bytes: round(mean(res.map((r) => r.hopBytes[i])), 0),
    rawBytes: rawIn[i],
  }));
  let diff: number | null = null;
  let agree: number | null = null;
  if (local) {
    diff = 0;
    let same = 0;
    let compared = 0;
    local.outputs.forEach((out, i) => {
      const r = chain.byFrame[i];
      if (!r) return;
      diff = Math.max(diff!, maxAbsDiff(out, r.output.data));
      compared++;
      if (argMax(out) === argMax(r.output.data)) same++;
    });
    agree = compared ? round(same / compared, 4) : null;
  }
  const throughputFps = res.length ? res.length / (chain.wallMs / 1000) : 0;
  const single = local && frames.length ? { throughputFps: round(frames.length / (local.wallMs / 1000), 3), msPerFrame: round(local.wallMs / frames.length, 1) } : null;
  const short = shortNameMap(d.flat.graph);
  const nodesOf = (k: number): StageNodeRun[] => {
    const assigned = new Map(stageNodes(stages[k]).map((n) => [n.nodeId, n.assignment]));
    const seen = [...new Set([...assigned.keys(), ...res.flatMap((r) => (r.hops[k] ? [r.hops[k].node] : []))])];
    return seen.map((node) => {
      const mine = res.flatMap((r) => (r.hops[k]?.node === node ? [r.hops[k]] : []));
      // a batch of b frames is b hops that each say b: calls = sum of 1/b
      const calls = mine.reduce((n, h) => n + 1 / (h.batch ?? 1), 0);
      return {
        node,
        workers: assigned.get(node)?.workers ?? 1,
        batch: assigned.get(node)?.batch ?? 1,
        meanBatch: calls > 0 ? round(mine.length / calls, 2) : 1,
        frames: mine.length,
        meanBusyMs: round(mean(mine.map((h) => h.decodeMs + h.computeMs + h.encodeMs)), 1),
        peakRssBytes: memory?.get(node)?.peakRssBytes ?? null,
      };
    });
  };
  const stageNodeRuns = stages.map((_, k) => nodesOf(k));
  const predictedMemory = stageMemoryOf(
    d.flat,
    stages.map((s) => s.span),
  );
  return {
    model: modelName,
    backend,
    deployment: d.id,
    unit: d.flat.graph.unit ?? 'layer',
    stages: stages.map((s, k) => ({
      index: k,
      node: s.nodeId,
      layers: s.span.layers.length,
      firstLayer: short.get(s.span.layers[0]) ?? s.span.layers[0],
      lastLayer: short.get(s.span.last) ?? s.span.last,
      params: s.span.params,
      weightBytes: s.span.weightBytes,
      outputShape: s.span.outputShape,
      outputBytes: s.span.outputBytes,
      meanComputeMs: hopMean(res, k, (h) => h.computeMs),
      meanBusyMs: hopMean(res, k, (h) => h.decodeMs + h.computeMs + h.encodeMs),
      meanCpuMs: res.some((r) => r.hops[k]?.cpuMs !== undefined) ? hopMean(res, k, (h) => h.cpuMs ?? NaN) : null,
      peakRssBytes: memory?.get(s.nodeId)?.peakRssBytes ?? null,
      engineHeapBytes: memory?.get(s.nodeId)?.engineHeapBytes ?? null,
      predictedMemoryBytes: Math.round(
        enginesMemoryBytes(
          plainNodes?.has(s.nodeId) ? predictedMemory[k].plainStageBytes : predictedMemory[k].stageBytes,
          firstNodeWorkers({ node: s.nodeId, nodes: stageNodeRuns[k] }),
          s.assignment.batch ?? 1,
          predictedMemory[k].batchFrameBytes,
          s.span.weightBytes,
        ),
      ),
      memoryLimitBytes: memory?.get(s.nodeId)?.memoryLimitBytes ?? null,
      memoryPeakBytes: memory?.get(s.nodeId)?.memoryPeakBytes ?? null,
      nodes: stageNodeRuns[k],
    })),
    shape: shapeLine(stageNodeRuns),
    cuts: stages.slice(0, -1).map((s) => s.span.last),
    frames: frames.length,
    framesReturned: res.length,
    failures: chain.failures.slice(0, 10),
    throughputFps: round(throughputFps, 3),
    wallMs: round(chain.wallMs, 1),
    firstResultMs: chain.firstResultMs === null ? null : round(chain.firstResultMs, 1),
    steadyThroughputFps:
      res.length >= 2 && chain.firstResultMs !== null && chain.lastResultMs !== null && chain.lastResultMs > chain.firstResultMs
        ? round((res.length - 1) / ((chain.lastResultMs - chain.firstResultMs) / 1000), 3)
        : null,
    latencyMs: { p50: round(percentile(lat, 50), 1), p95: round(percentile(lat, 95), 1), mean: round(mean(lat), 1), max: round(Math.max(...lat), 1) },
    bytesPerFramePerHop,
    deployMs: round(d.deployMs, 0),
    dispatcherCpuMsPerFrame: round(chain.cpuMs / Math.max(1, frames.length), 1),
    singleProcess: single,
    speedupVsSingleProcess: single && throughputFps ? round(throughputFps / single.throughputFps, 3) : null,
    maxAbsDiffVsLocal: diff,
    top1AgreementVsLocal: agree,
    repairs: (d.supervisor?.events ?? []).filter((e) => e.at >= chain.startedAt),
    duplicates: d.stream.duplicates,
  };
}

/** The engines of a stage's first node (the one whose memory the summary reports). */
function firstNodeWorkers(st: { node: string; nodes: { node: string; workers: number }[] }): number {
  return st.nodes.find((n) => n.node === st.node)?.workers ?? 1;
}

export function formatSummary(s: RunSummary): string {
  const kb = (b: number) => `${(b / 1024).toFixed(1)} KiB`;
  const lines = [
    '',
    `DEFER run: ${s.model} on ${count(s.stages.length, 'stage')} (${s.shape}), backend ${s.backend}, deployment ${s.deployment}`,
    ...s.stages.map(
      (st) =>
        `  stage ${st.index + 1} on ${st.nodes.length > 1 || st.nodes[0]?.workers > 1 || st.nodes[0]?.batch > 1 ? st.nodes.map((n) => `${memberName(n)} (${n.frames} frames${n.batch > 1 ? `, batches of up to ${n.batch}: ${n.meanBatch} on average` : ''}${n.peakRssBytes !== null && st.nodes.length > 1 ? `, peak RSS ${(n.peakRssBytes / 1e6).toFixed(0)} MB` : ''})`).join(' + ') : st.node}: ${st.layers} ${s.unit}s (${st.firstLayer} .. ${st.lastLayer}), ${st.params.toLocaleString('en')} params, out [${st.outputShape}] ${kb(st.outputBytes)}, compute ${st.meanComputeMs} ms/frame (busy ${st.meanBusyMs} ms${st.meanCpuMs !== null ? `, CPU ${st.meanCpuMs} ms` : ''})` +
        (st.peakRssBytes !== null
          ? `, weights ${(st.weightBytes / 1e6).toFixed(1)} MB, peak RSS ${(st.peakRssBytes / 1e6).toFixed(0)} MB (${st.engineHeapBytes !== null ? `wasm heap ${(st.engineHeapBytes / 1e6).toFixed(0)} MB; ` : ''}predicted ${(st.predictedMemoryBytes / 1e6).toFixed(0)} MB over an idle node${firstNodeWorkers(st) > 1 ? `, ${firstNodeWorkers(st)} engines` : ''})${st.memoryLimitBytes !== null ? `, cgroup peak ${st.memoryPeakBytes === null ? 'n/a' : (st.memoryPeakBytes / 1e6).toFixed(0)} of ${(st.memoryLimitBytes / 1e6).toFixed(0)} MB` : ''}`
          : ''),
    ),
    `  frames: ${s.framesReturned}/${s.frames} returned${s.failures.length ? ` (${s.failures.length} failed: ${s.failures[0]})` : ''}`,
    `  throughput: ${s.throughputFps} frames/s` +
      (s.singleProcess ? ` (single process: ${s.singleProcess.throughputFps} frames/s, ${s.singleProcess.msPerFrame} ms/frame; speed-up ${s.speedupVsSingleProcess}x)` : ''),
    `  latency: p50 ${s.latencyMs.p50} ms, p95 ${s.latencyMs.p95} ms`,
    `  bytes per frame per hop: ${s.bytesPerFramePerHop.map((h) => `${h.hop}: ${kb(h.bytes)} (raw ${kb(h.rawBytes)}${h.precision === 'lossless' ? '' : `, ${h.precision}`})`).join('; ')}`,
    `  deployment took ${(s.deployMs / 1000).toFixed(1)} s; dispatcher CPU ${s.dispatcherCpuMsPerFrame} ms/frame`,
    `  maxAbsDiffVsLocal: ${s.maxAbsDiffVsLocal === null ? 'not measured (--no-baseline)' : s.maxAbsDiffVsLocal}${s.top1AgreementVsLocal === null ? '' : `; top-1 agreement with the local run ${(100 * s.top1AgreementVsLocal).toFixed(2)}%`}`,
    ...s.repairs.map(
      (e) =>
        `  mended: ${e.kind === 'reconnect' ? 'broker connection lost' : e.kind === 'restore' ? e.cause : `node ${e.node} (stage ${(e.stage ?? 0) + 1}) ${e.cause}`}: ${e.kind === 'restore' ? `back to the first split: deployment ${e.deployment}` : e.kind === 'standby' ? `stage moved to standby ${e.replacement}` : e.kind === 'reconnect' ? `reconnected${e.republished ? ', deployment republished' : ''}` : e.kind === 'reassign' ? 'assigned again' : `${e.kind === 'merge' ? 'stage merged into its neighbour' : 're-planned over the nodes left'}: deployment ${e.deployment}`} in ${(e.repairMs / 1000).toFixed(2)} s, ${count(e.resent, 'frame')} sent again`,
    ),
  ];
  if (s.predicted) lines.push(formatPlanCheck(s.predicted));
  if (s.plannedShape) lines.push(formatShapeCheck(s.plannedShape));
  if (s.replanned) lines.push('', `after re-planning from the measured figures (${s.replanned.changed ? 'new plan, redeployed' : 'same plan, run again'}):`, formatSummary(s.replanned.summary));
  return lines.join('\n');
}
