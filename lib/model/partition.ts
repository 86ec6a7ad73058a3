/**
 * Model partitioning: a LayersModel flattened into one functional graph,
 * split at valid cut points into consecutive stages. Each stage is a fresh
 * functional model built from the original layers' configs, over a new input
 * of the cut tensor's shape, with the original weights copied in.
 */
import { createHash, type Hash } from 'node:crypto';
import { DeferError } from '../core/errors.js';
import { bytesPerElement, type DType, elementCount, type WeightSpec } from '../protocol/index.js';
import { tf } from './engine.js';
import { type FlatModel, type LayerInfo, type StageModel, type StageSpan, type StageWeights, spansOf } from './flat-model.js';
import { analyseCuts, type CutAnalysis, type FlatGraph, type FlatLayer, flattenTopology, toModelTopology } from './graph.js';

type Json = Record<string, unknown>;

function shapeWithoutBatch(s: tf.Shape | tf.Shape[]): number[] {
  const shape = (Array.isArray(s[0]) ? s[0] : s) as (number | null)[];
  return shape.slice(1).map((d) => d ?? -1);
}

function estimateFlops(layer: tf.layers.Layer, inShape: number[], outShape: number[]): number {
  const out = elementCount(outShape.map((d) => Math.max(d, 1)));
  const cfg = layer.getConfig() as Json;
  const ksize = (cfg.kernelSize as number[] | undefined) ?? [1, 1];
  const k = ksize.reduce((a, b) => a * b, 1);
  const inC = inShape[inShape.length - 1] ?? 1;
  switch (layer.getClassName()) {
    case 'Conv2D':
    case 'Conv1D':
      return 2 * out * k * inC;
    case 'DepthwiseConv2D':
      return 2 * out * k;
    case 'SeparableConv2D':
      return 2 * elementCount(outShape.slice(0, -1)) * inC * (k + outShape[outShape.length - 1]);
    case 'Dense':
      return 2 * out * inC;
    default:
      return out;
  }
}

/** A LayersModel as one flat graph of fresh layers, ready to split. */
export class LayersFlatModel implements FlatModel {
  readonly format = 'layers-model' as const;
  readonly graph: FlatGraph;
  readonly model: tf.LayersModel;
  readonly layers: LayerInfo[];
  readonly cuts: CutAnalysis;
  readonly inputDtype: DType;

  private constructor(graph: FlatGraph, model: tf.LayersModel, inputDtype: DType) {
    this.graph = graph;
    this.model = model;
    this.inputDtype = inputDtype;
    this.cuts = analyseCuts(graph);
    const byName = new Map(model.layers.map((l) => [l.name, l]));
    this.layers = graph.layers.map((fl) => {
      const layer = byName.get(fl.name)!;
      const outputShape = shapeWithoutBatch(layer.outputShape);
      const inShape = fl.inputs.length ? shapeWithoutBatch(byName.get(fl.inputs[0])!.outputShape) : outputShape;
      const weightBytes = layer.weights.reduce((s, w) => s + elementCount(w.shape as number[]) * bytesPerElement(w.dtype as DType), 0);
      return {
        name: fl.name,
        className: fl.className,
        params: layer.countParams(),
        weightBytes,
        outputShape,
        outputBytes: elementCount(outputShape) * 4,
        flops: estimateFlops(layer, inShape, outputShape),
      };
    });
  }

  /** Flatten `source` (nested Sequential/functional models included) and copy its weights. */
  static async from(source: tf.LayersModel): Promise<LayersFlatModel> {
    const graph = flattenTopology(source.toJSON(null, false) as unknown as Json);
    const model = await tf.models.modelFromJSON({ modelTopology: toModelTopology(graph.name, graph.layers, graph.layers[0].name, graph.output) } as unknown as tf.io.ModelJSON);
    const originals = new Map<string, tf.layers.Layer>();
    const walk = (m: tf.LayersModel) => {
      for (const l of m.layers) {
        if (l instanceof tf.LayersModel) walk(l);
        else originals.set(l.name, l);
      }
    };
    walk(source);
    for (const l of model.layers) {
      const orig = originals.get(l.name);
      if (orig?.weights.length) l.setWeights(orig.getWeights());
    }
    const inputDtype = (model.inputs[0].dtype ?? 'float32') as DType;
    return new LayersFlatModel(graph, model, inputDtype);
  }

  get inputShape(): number[] {
    return shapeWithoutBatch(this.model.inputs[0].shape);
  }

  get outputShape(): number[] {
    return shapeWithoutBatch(this.model.outputs[0].shape);
  }

  get params(): number {
    return this.layers.reduce((s, l) => s + l.params, 0);
  }

  validCutNames(): string[] {
    return this.cuts.valid.map((i) => this.graph.layers[i].name);
  }

  spans(cuts: string[]): StageSpan[] {
    return spansOf(this, cuts);
  }

  run(x: tf.Tensor): tf.Tensor {
    return this.model.predict(x) as tf.Tensor;
  }

  dispose(): void {
    this.model.dispose();
  }

  digest(h: Hash): void {
    h.update(JSON.stringify(this.graph));
    for (const w of this.model.weights) {
      // read() is the variable itself, not a copy: not to be disposed here
      const data = w.read().dataSync() as Float32Array;
      h.update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    }
  }

  /** The Keras JSON of one stage: a functional model with a fresh input layer. */
  stageTopology(plan: StageSpan): Json {
    const members = new Set(plan.layers);
    const layers: FlatLayer[] = this.graph.layers.filter((l) => members.has(l.name));
    if (plan.after === null) return toModelTopology(`stage_0`, layers, layers[0].name, plan.last);
    let inputName = `${plan.after}_stage_input`;
    while (members.has(inputName)) inputName += '_';
    const input: FlatLayer = {
      name: inputName,
      className: 'InputLayer',
      config: { batch_input_shape: [null, ...plan.inputShape], dtype: plan.inputDtype, sparse: false, name: inputName },
      inputs: [],
    };
    const rewired = layers.map((l) => ({ ...l, inputs: l.inputs.map((i) => (i === plan.after ? inputName : i)) }));
    for (const l of rewired) {
      for (const i of l.inputs) {
        if (i !== inputName && !members.has(i)) throw new DeferError('E_CUT', `internal: stage ${plan.index} layer '${l.name}' reads '${i}' from another stage`);
      }
    }
    return toModelTopology(`stage_${plan.index}`, [input, ...rewired], inputName, plan.last);
  }

  /** The weights of one stage as one little-endian blob and its specs. */
  stageWeights(plan: StageSpan): StageWeights {
    const byName = new Map(this.model.layers.map((l) => [l.name, l]));
    const specs: WeightSpec[] = [];
    const parts: Uint8Array[] = [];
    let offset = 0;
    for (const name of plan.layers) {
      const layer = byName.get(name)!;
      layer.getWeights().forEach((w, i) => {
        const data = w.dataSync() as Float32Array | Int32Array;
        const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
        specs.push({ layer: name, name: `${name}/${i}`, dtype: w.dtype as DType, shape: [...w.shape], offset, bytes: bytes.byteLength });
        parts.push(bytes);
        offset += bytes.byteLength;
      });
    }
    return { specs, blob: Buffer.concat(parts) };
  }
}

/** Build a layers stage from its topology JSON and weight blob (as an edge node does). */
export async function buildLayersStage(topology: Json, specs: WeightSpec[], blob: Uint8Array): Promise<StageModel> {
  let model: tf.LayersModel;
  try {
    model = await tf.models.modelFromJSON({ modelTopology: topology } as unknown as tf.io.ModelJSON);
  } catch (err) {
    throw new DeferError('E_MODEL', `cannot build the stage from its topology: ${(err as Error).message}`);
  }
  const byLayer = new Map<string, WeightSpec[]>();
  for (const s of specs) byLayer.set(s.layer, [...(byLayer.get(s.layer) ?? []), s]);
  try {
    for (const layer of model.layers) {
      const ws = byLayer.get(layer.name) ?? [];
      byLayer.delete(layer.name);
      if (ws.length !== layer.weights.length) {
        throw new DeferError('E_WEIGHTS', `layer '${layer.name}' has ${layer.weights.length} weights but the manifest gives ${ws.length}`);
      }
      if (ws.length === 0) continue;
      const tensors = ws.map((s, i) => {
        const want = layer.weights[i].shape;
        if (want.length !== s.shape.length || want.some((d, j) => d !== s.shape[j])) {
          throw new DeferError('E_WEIGHTS', `weight ${s.name} has shape [${s.shape}] but layer '${layer.name}' expects [${want}]`);
        }
        if (s.bytes !== elementCount(s.shape) * bytesPerElement(s.dtype)) throw new DeferError('E_WEIGHTS', `weight ${s.name}: ${s.bytes} bytes do not fit shape [${s.shape}] ${s.dtype}`);
        const copy = new Uint8Array(s.bytes); // aligned copy: the blob may be a Buffer view at any offset
        copy.set(blob.subarray(s.offset, s.offset + s.bytes));
        const arr = s.dtype === 'int32' ? new Int32Array(copy.buffer) : new Float32Array(copy.buffer);
        return tf.tensor(arr, s.shape, s.dtype === 'int32' ? 'int32' : 'float32');
      });
      layer.setWeights(tensors);
      tf.dispose(tensors);
    }
    if (byLayer.size > 0) throw new DeferError('E_WEIGHTS', `the manifest has weights for layers the stage lacks: ${[...byLayer.keys()].slice(0, 5).join(', ')}`);
  } catch (err) {
    model.dispose();
    throw err;
  }
  return { run: (x) => model.predict(x) as tf.Tensor, dispose: () => model.dispose() };
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
