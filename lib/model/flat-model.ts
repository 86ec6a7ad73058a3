/**
 * What the planner, the dispatcher and the tests see of a model they split:
 * one flat list of nodes (Keras layers, or a TensorFlow graph's ops) in
 * topological order, its valid cut points, per-node costs, and for a list of
 * cuts the stages with their topology and weights. Two kinds implement it:
 * LayersFlatModel (partition.ts) and GraphFlatModel (graph-partition.ts).
 */
import type { Hash } from 'node:crypto';
import type { DType, ModelFormat, WeightSpec } from '../protocol/index.js';
import type { tf } from './engine.js';
import { type CutAnalysis, type FlatGraph, resolveCuts } from './graph.js';

type Json = Record<string, unknown>;

export interface LayerInfo {
  name: string;
  className: string;
  params: number;
  /** bytes of its weights as stored and sent */
  weightBytes: number;
  /** bytes of its weights once loaded, where that differs (quantized weights are float32 in memory) */
  loadedBytes?: number;
  /** bytes the wasm engine keeps for its weights once its stage has run (conv-as-matmul.ts engineWeightCopies); absent: twice its weights as loaded */
  heldBytes?: number;
  /** output shape without the batch dimension */
  outputShape: number[];
  outputBytes: number;
  /** estimated multiply-accumulate operations times two, per frame */
  flops: number;
}

export interface StageSpan {
  index: number;
  layers: string[];
  /** name of the layer whose output this stage reads (null for stage 0) */
  after: string | null;
  /** name of this stage's last layer */
  last: string;
  inputShape: number[];
  /** the model's input dtype for stage 0; activations (float32) after it */
  inputDtype: DType;
  outputShape: number[];
  params: number;
  /** bytes of the stage's weight blob (as stored: quantized weights count their stored size) */
  weightBytes: number;
  outputBytes: number;
  flops: number;
}

export interface StageWeights {
  specs: WeightSpec[];
  blob: Uint8Array;
}

/** Something that maps one input tensor to one output tensor: a whole model or one stage of it. */
export interface StageModel {
  /** run on `x` ([batch, ...inputShape]); the caller disposes the result */
  run(x: tf.Tensor): tf.Tensor;
  /**
   * The first frame: run on `x` as `run` does, and where the engine keeps packed copies of weights (wasm),
   * give back the memory of the weights it no longer reads (packed-weights.ts). Later frames use `run`.
   */
  runReleasing?(x: tf.Tensor): { output: tf.Tensor; releasedBytes: number };
  dispose(): void;
}

export interface FlatModel extends StageModel {
  readonly format: ModelFormat;
  readonly graph: FlatGraph;
  readonly layers: LayerInfo[];
  readonly cuts: CutAnalysis;
  readonly inputDtype: DType;
  readonly inputShape: number[];
  readonly outputShape: number[];
  readonly params: number;
  validCutNames(): string[];
  /** the stages (spans of nodes) for the given cuts (validated; see resolveCuts for the errors) */
  spans(cuts: string[]): StageSpan[];
  /** one stage's model as JSON (what an assignment's `topology` carries) */
  stageTopology(span: StageSpan): Json;
  /** one stage's weights: its specs and one blob */
  stageWeights(span: StageSpan): StageWeights;
  /** feed everything that defines the model (topology and weight bytes) to `h` */
  digest(h: Hash): void;
}

/** The stages for `cuts` from per-node infos: the part of spans() both kinds share. */
export function spansOf(flat: Pick<FlatModel, 'graph' | 'cuts' | 'layers' | 'inputShape' | 'inputDtype'>, cuts: string[]): StageSpan[] {
  const idx = resolveCuts(flat.graph, cuts, flat.cuts);
  const bounds = [-1, ...idx, flat.graph.layers.length - 1];
  const plans: StageSpan[] = [];
  for (let k = 0; k + 1 < bounds.length; k++) {
    const infos = flat.layers.slice(bounds[k] + 1, bounds[k + 1] + 1);
    const last = infos[infos.length - 1];
    plans.push({
      index: k,
      layers: infos.map((l) => l.name),
      after: k === 0 ? null : flat.graph.layers[bounds[k]].name,
      last: last.name,
      inputShape: k === 0 ? flat.inputShape : flat.layers[bounds[k]].outputShape,
      inputDtype: k === 0 ? flat.inputDtype : 'float32',
      outputShape: last.outputShape,
      params: infos.reduce((s, l) => s + l.params, 0),
      weightBytes: infos.reduce((s, l) => s + l.weightBytes, 0),
      outputBytes: last.outputBytes,
      flops: infos.reduce((s, l) => s + l.flops, 0),
    });
  }
  return plans;
}
