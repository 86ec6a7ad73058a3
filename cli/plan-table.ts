/** `defer plan` output: one row per stage. */
import type { FlatModel, StagePlan } from '../lib/partition.js';

export interface PlanReport {
  model: string;
  params: number;
  layers: number;
  validCuts: string[];
  cuts: string[];
  stages: (Omit<StagePlan, 'layers'> & { layerCount: number; firstLayer: string })[];
}

export function planReport(model: string, flat: FlatModel, plans: StagePlan[]): PlanReport {
  return {
    model,
    params: flat.params,
    layers: flat.graph.layers.length,
    validCuts: flat.validCutNames(),
    cuts: plans.slice(0, -1).map((p) => p.last),
    stages: plans.map(({ layers, ...p }) => ({ ...p, layerCount: layers.length, firstLayer: layers[0] })),
  };
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function formatPlan(r: PlanReport): string {
  const mb = (b: number) => (b / 1e6).toFixed(2);
  const rows = r.stages.map((s) => [
    String(s.index),
    `${s.firstLayer} .. ${s.last}`,
    String(s.layerCount),
    s.params.toLocaleString('en'),
    mb(s.weightBytes),
    (s.flops / 1e9).toFixed(3),
    `[${s.outputShape.join(',')}]`,
    (s.outputBytes / 1024).toFixed(1),
  ]);
  return [
    `${r.model}: ${r.layers} layers, ${r.params.toLocaleString('en')} parameters, ${r.validCuts.length} valid cut points`,
    `cuts: ${r.cuts.join(', ') || '(none)'}`,
    '',
    table(['stage', 'layers', 'count', 'params', 'weight MB', 'GFLOPs', 'output shape', 'output KiB'], rows),
    '',
  ].join('\n');
}
