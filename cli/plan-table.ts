/** `defer plan` output: one row per stage. */

import type { FlatModel, StageSpan } from '../lib/model/flat-model.js';
import { shortNameMap } from '../lib/model/graph.js';
import type { AutoPlan, ShapedPlan } from '../lib/planning/auto-plan.js';
import { describeBatches } from '../lib/planning/batching.js';
import type { ChainPlan, PlannedStage } from '../lib/planning/optimiser.js';
import { stageMemoryOf } from '../lib/planning/plan-inputs.js';
import { memberName, shapeLine } from '../lib/planning/shape.js';

export interface PlanReport {
  model: string;
  params: number;
  layers: number;
  /** 'node' for graph models: their layers are TensorFlow ops */
  unit: 'layer' | 'node';
  validCuts: string[];
  /** each valid cut's shortest unique name (graph nodes' scoped names shortened; the CLI accepts either) */
  validCutsShort: string[];
  cuts: string[];
  /** memoryBytes: the planner's estimate of what the stage adds to an idle node (one engine, computing large convolutions as products) */
  stages: (Omit<StageSpan, 'layers'> & { layerCount: number; firstLayer: string; memoryBytes: number })[];
}

export function planReport(model: string, flat: FlatModel, plans: StageSpan[]): PlanReport {
  const short = shortNameMap(flat.graph);
  const s = (n: string) => short.get(n) ?? n;
  const validCuts = flat.validCutNames();
  const memory = stageMemoryOf(flat, plans);
  return {
    model,
    params: flat.params,
    layers: flat.graph.layers.length,
    unit: flat.graph.unit ?? 'layer',
    validCuts,
    validCutsShort: validCuts.map(s),
    cuts: plans.slice(0, -1).map((p) => p.last),
    stages: plans.map(({ layers, ...p }, k) => ({ ...p, layerCount: layers.length, firstLayer: s(layers[0]), last: s(p.last), memoryBytes: Math.round(memory[k].stageBytes) })),
  };
}

/** `--list-cuts`: one valid cut a line; for graph models its short name, then its full name. */
export function formatCutList(r: PlanReport): string {
  const rows = r.validCuts.map((full, i) => (r.validCutsShort[i] === full ? full : `${r.validCutsShort[i].padEnd(Math.max(...r.validCutsShort.map((x) => x.length)))}  ${full}`));
  return `valid cuts${r.unit === 'node' ? ' (short name, full node name)' : ''}:\n  ${rows.join('\n  ')}\n`;
}

function table(header: string[], rows: string[][], textColumns = 2): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i < textColumns ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function formatPlan(r: PlanReport): string {
  const mb = (b: number) => (b / 1e6).toFixed(2);
  const rows = r.stages.map((s) => [
    String(s.index + 1),
    `${s.firstLayer} .. ${s.last}`,
    String(s.layerCount),
    s.params.toLocaleString('en'),
    mb(s.weightBytes),
    (s.flops / 1e9).toFixed(3),
    `[${s.outputShape.join(',')}]`,
    (s.outputBytes / 1024).toFixed(1),
    (s.memoryBytes / 1e6).toFixed(0),
  ]);
  return [
    `${r.model}: ${r.layers} ${r.unit}s, ${r.params.toLocaleString('en')} parameters, ${r.validCuts.length} valid cut points`,
    `cuts: ${
      r.stages
        .slice(0, -1)
        .map((s) => s.last)
        .join(', ') || '(none)'
    }`,
    '',
    table(['stage', `${r.unit}s`, 'count', 'params', 'weight MB', 'GFLOPs', 'output shape', 'output KiB', 'memory MB'], rows),
    "memory MB: the planner's estimate of what the stage adds to an idle node (docs/memory.md)",
    '',
  ].join('\n');
}

export interface AutoPlanReport {
  model: string;
  profile: { path: string; cached: boolean; backend: string; totalMs: number; calibrationMs: number };
  nodes: { id: string; speed: number; memoryMB: number | null; bandwidthMbps: number | null; latencyMs: number; host: string | null }[];
  cuts: string[];
  order: string[];
  stages: (PlannedStage & { params: number })[];
  bottleneck: string;
  bottleneckMs: number;
  predictedThroughputFps: number;
  predictedLatencyMs: number;
  hostLoadMs: ChainPlan['hostLoadMs'];
  ordersTried: number;
}

export function autoPlanReport(model: string, flat: FlatModel, a: AutoPlan): AutoPlanReport {
  const plans = flat.spans(a.plan.cuts);
  const p = a.plan;
  const short = shortNameMap(flat.graph);
  const s = (n: string) => short.get(n) ?? n;
  return {
    model,
    profile: { path: a.profilePath, cached: a.profileCached, backend: a.profile.backend, totalMs: a.profile.totalMs, calibrationMs: a.profile.calibration.calibrationMs },
    nodes: a.nodes.map((n) => ({
      id: n.id,
      speed: 1 / n.timeFactor,
      memoryMB: n.memoryBytes === undefined ? null : n.memoryBytes / 1e6,
      bandwidthMbps: n.bandwidthMbps ?? null,
      latencyMs: n.latencyMs ?? 0,
      host: n.host ?? null,
    })),
    cuts: p.cuts,
    order: p.order,
    stages: p.stages.map((st, i) => ({ ...st, firstLayer: s(st.firstLayer), lastLayer: s(st.lastLayer), params: plans[i].params })),
    bottleneck: p.bottleneck,
    bottleneckMs: p.bottleneckMs,
    predictedThroughputFps: p.predictedThroughputFps,
    predictedLatencyMs: p.predictedLatencyMs,
    hostLoadMs: p.hostLoadMs,
    ordersTried: p.ordersTried,
  };
}

export function formatAutoPlan(r: AutoPlanReport): string {
  const f1 = (x: number) => x.toFixed(1);
  const rows = r.stages.map((s) => [
    String(s.index + 1),
    s.node,
    `${s.firstLayer} .. ${s.lastLayer}`,
    String(s.layerCount),
    s.params.toLocaleString('en'),
    (s.weightBytes / 1e6).toFixed(2),
    f1(s.computeMs),
    (s.outputBytes / 1024).toFixed(1),
    f1(s.transferMs),
  ]);
  const nodes = r.nodes.map(
    (n) =>
      `${n.id} speed ${n.speed.toFixed(2)}${n.memoryMB !== null ? `, ${n.memoryMB.toFixed(0)} MB` : ''}${n.bandwidthMbps !== null ? `, ${n.bandwidthMbps} Mbit/s` : ''}${n.latencyMs ? `, ${n.latencyMs} ms` : ''}${n.host ? ` on ${n.host}` : ''}`,
  );
  return [
    `${r.model}: profile ${r.profile.cached ? 'from cache' : 'measured'} on ${r.profile.backend} (whole model ${f1(r.profile.totalMs)} ms here), ${r.profile.path}`,
    `nodes: ${nodes.join('; ')}`,
    `cuts: ${
      r.stages
        .slice(0, -1)
        .map((s) => s.lastLayer)
        .join(', ') || '(none)'
    }   chain: ${r.order.join(' -> ')}   (${r.ordersTried} node orders tried)`,
    '',
    table(['stage', 'node', 'layers', 'count', 'params', 'weight MB', 'predicted ms', 'output KiB', 'transfer ms'], rows, 3),
    '',
    `predicted throughput: ${r.predictedThroughputFps.toFixed(2)} frames/s (bottleneck: ${r.bottleneck}, ${f1(r.bottleneckMs)} ms/frame); latency ${f1(r.predictedLatencyMs)} ms`,
    ...r.hostLoadMs.map((h) => `shared host ${h.host}: ${h.nodes.join(', ')} on ${h.cores} cores, ${f1(h.ms)} ms of CPU per core per frame`),
    '',
  ].join('\n');
}

/** `defer plan --auto` with the shape planner: the shape, its stages with their nodes and engines, the prediction. */
export interface ShapePlanReport {
  model: string;
  profile: { path: string; cached: boolean };
  nodes: { id: string; speed: number; maxWorkers: number | null; cores: number | null; memoryMB: number | null; host: string | null }[];
  shape: string;
  /** the engines' batches in words (lib/planning/batching.ts) */
  batches: string;
  cuts: string[];
  stages: {
    index: number;
    /** each node's engines, share of the stage's frames, and batch (frames per engine call at most) */
    nodes: { node: string; workers: number; batch?: number; share: number }[];
    firstLayer: string;
    lastLayer: string;
    layerCount: number;
    params: number;
    weightBytes: number;
    stageMs: number;
  }[];
  idle: string[];
  bottleneck: string;
  predictedThroughputFps: number;
  /** against one engine running the whole model */
  predictedSpeedup: number;
  shapesTried: number;
  /** false: the search stopped at its limit; the shape is the best found, not proven the best */
  exhaustive: boolean;
}

export function shapePlanReport(model: string, flat: FlatModel, a: ShapedPlan): ShapePlanReport {
  const p = a.plan;
  const plans = flat.spans(p.cuts);
  const short = shortNameMap(flat.graph);
  const s = (n: string) => short.get(n) ?? n;
  return {
    model,
    profile: { path: a.profilePath, cached: a.profileCached },
    nodes: a.nodes.map((n) => ({
      id: n.id,
      speed: 1 / n.timeFactor,
      maxWorkers: n.maxWorkers ?? null,
      cores: n.cores ?? null,
      memoryMB: n.memoryBytes === undefined ? null : n.memoryBytes / 1e6,
      host: n.host ?? null,
    })),
    shape: shapeLine(p.stages),
    batches: describeBatches(p.stages),
    cuts: p.cuts,
    stages: p.stages.map((st, i) => ({
      index: i,
      nodes: st.members.map((m) => ({ ...m, share: st.share[m.node] })),
      firstLayer: s(st.firstLayer),
      lastLayer: s(st.lastLayer),
      layerCount: st.layerCount,
      params: plans[i].params,
      weightBytes: st.weightBytes,
      stageMs: st.stageMs,
    })),
    idle: p.idle,
    bottleneck: p.bottleneck,
    predictedThroughputFps: p.predictedThroughputFps,
    predictedSpeedup: p.predictedThroughputFps / p.singleFps,
    shapesTried: p.shapesTried,
    exhaustive: p.exhaustive,
  };
}

export function formatShapePlan(r: ShapePlanReport): string {
  const f1 = (x: number) => x.toFixed(1);
  const rows = r.stages.map((st) => [
    String(st.index + 1),
    st.nodes.map((n) => `${memberName(n)}${st.nodes.length > 1 ? ` ${Math.round(100 * n.share)}%` : ''}`).join(' + '),
    `${st.firstLayer} .. ${st.lastLayer}`,
    String(st.layerCount),
    st.params.toLocaleString('en'),
    (st.weightBytes / 1e6).toFixed(2),
    f1(st.stageMs),
  ]);
  return [
    `${r.model}: profile ${r.profile.cached ? 'from cache' : 'measured'}, ${r.profile.path}`,
    `nodes: ${r.nodes.map((n) => `${n.id} speed ${n.speed.toFixed(2)}${n.maxWorkers !== null ? `, up to ${n.maxWorkers} workers` : ''}${n.cores !== null ? `, ${n.cores} cores` : ''}${n.host ? ` on ${n.host}` : ''}`).join('; ')}`,
    `shape: ${r.shape}${r.idle.length ? `   idle: ${r.idle.join(', ')}` : ''}   ${r.batches}   cuts: ${r.cuts.join(', ') || '(none)'}   (${r.shapesTried} shapes searched${r.exhaustive ? '' : ': the limit; the best found, not proven the best'})`,
    '',
    table(['stage', 'nodes (xW: workers, %: share of frames)', 'layers', 'count', 'params', 'weight MB', 'stage ms/frame'], rows, 3),
    '',
    `predicted throughput: ${r.predictedThroughputFps.toFixed(2)} frames/s, ${r.predictedSpeedup.toFixed(2)}x one engine (bottleneck: ${r.bottleneck})`,
    '',
  ].join('\n');
}
