/**
 * Model partitioning: a LayersModel flattened into one functional graph,
 * split at valid cut points into consecutive stages. Each stage is a fresh
 * functional model built from the original layers' configs, over a new input
 * of the cut tensor's shape, with the original weights copied in.
 */
import { createHash, type Hash } from 'node:crypto';
import { DeferError } from '../core/errors.js';
import { bytesPerElement, type DType, elementCount, type WeightSpec } from '../protocol/index.js';
import { asMatMul, convAsMatMul, engineWeightCopies } from './conv-as-matmul.js';
import { tf } from './engine.js';
import { type FlatModel, type LayerInfo, type StageModel, type StageSpan, type StageWeights, spansOf } from './flat-model.js';
import { analyseCuts, type CutAnalysis, type FlatGraph, type FlatLayer, flattenTopology, toModelTopology } from './graph.js';
import { recordReads, releasePacked, stopRecording } from './packed-weights.js';

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
        heldBytes: engineWeightCopies(layer, inShape) * weightBytes,
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

/**
 * Each weight's tensor, handed to the layer that creates it: a stage's layers are built with their real
 * weights as their initial values (the variable takes the tensor's memory over), so no layer ever holds a
 * random initial copy of its weights, and the engine's heap (which never shrinks on wasm) grows by the
 * weights once. Keyed by build and layer; a layer takes its weights in creation order, which is the order
 * of `layer.weights` and of the manifest.
 */
const pendingWeights = new Map<string, tf.Tensor[]>();
/** a key's layer name, for messages (keys are plain letters and digits: the config converter rewrites snake_case strings) */
const layerOfKey = new Map<string, string>();
let builds = 0;

class StageWeightInitializer extends tf.serialization.Serializable {
  static readonly className = 'DeferStageWeight';
  constructor(private readonly cfg: { key: string }) {
    super();
  }
  override getClassName(): string {
    return StageWeightInitializer.className;
  }
  override getConfig(): tf.serialization.ConfigDict {
    return { key: this.cfg.key };
  }
  static override fromConfig<T extends tf.serialization.Serializable>(cls: tf.serialization.SerializableConstructor<T>, config: tf.serialization.ConfigDict): T {
    return new cls(config);
  }
  apply(shape: number[], dtype?: string): tf.Tensor {
    const queue = pendingWeights.get(this.cfg.key);
    const t = queue?.shift();
    const layer = layerOfKey.get(this.cfg.key) ?? this.cfg.key;
    if (!t) throw new DeferError('E_WEIGHTS', `layer ${layer} creates more weights than the manifest gives it`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]) || (dtype && dtype !== t.dtype)) {
      throw new DeferError('E_WEIGHTS', `a weight of layer ${layer} has shape [${t.shape}] ${t.dtype}, but the layer expects [${shape}] ${dtype ?? ''}`);
    }
    return t;
  }
}
tf.serialization.registerClass(StageWeightInitializer);

/** The weights of the blob as tensors, each made once from a view (an aligned copy of the blob only when it is not 4-byte aligned). */
function weightTensors(specs: WeightSpec[], blob: Uint8Array): tf.Tensor[] {
  const base = blob.byteOffset % 4 === 0 ? blob : new Uint8Array(blob);
  return specs.map((s) => {
    if (s.bytes !== elementCount(s.shape) * bytesPerElement(s.dtype)) throw new DeferError('E_WEIGHTS', `weight ${s.name}: ${s.bytes} bytes do not fit shape [${s.shape}] ${s.dtype}`);
    if (s.offset % 4 !== 0) throw new DeferError('E_WEIGHTS', `weight ${s.name} starts at byte ${s.offset}, not a multiple of 4`);
    const n = elementCount(s.shape);
    const at = base.byteOffset + s.offset;
    const data = s.dtype === 'int32' ? new Int32Array(base.buffer, at, n) : new Float32Array(base.buffer, at, n);
    return tf.tensor(data, s.shape, s.dtype === 'int32' ? 'int32' : 'float32');
  });
}

/** How a stage is built for its engine. */
export interface StageBuildOptions {
  /** compute every convolution with the engine's own kernel, never as a matrix product (conv-as-matmul.ts) */
  plainConvolutions?: boolean;
}

/**
 * Build a layers stage from its topology JSON and weights (as an edge node does): a blob, or one tensor per spec,
 * which the stage then owns. On the wasm engine, a convolution whose filter outweighs its patches is computed as
 * a matrix product (the same bits, its filter held once, not twice) unless `plainConvolutions`.
 */
export async function buildLayersStage(topology: Json, specs: WeightSpec[], weights: Uint8Array | tf.Tensor[], options: StageBuildOptions = {}): Promise<StageModel> {
  const byLayer = new Map<string, WeightSpec[]>();
  for (const s of specs) byLayer.set(s.layer, [...(byLayer.get(s.layer) ?? []), s]);
  const build = `b${++builds}`;
  const keyOf = new Map<string, string>();
  const key = (layer: string) => {
    let k = keyOf.get(layer);
    if (!k) {
      k = `${build}x${keyOf.size}`;
      keyOf.set(layer, k);
      layerOfKey.set(k, layer);
    }
    return k;
  };
  // every initializer of every layer hands out that layer's real weights
  const t = structuredClone(topology) as { config?: { layers?: { name?: string; config?: Json }[] } };
  const layers = t.config?.layers ?? [];
  const names = new Set(layers.map((l) => String(l.name ?? l.config?.name)));
  const unknown = [...byLayer.keys()].filter((n) => !names.has(n));
  if (unknown.length) throw new DeferError('E_WEIGHTS', `the manifest has weights for layers the stage lacks: ${unknown.slice(0, 5).join(', ')}`);
  for (const l of layers) {
    const name = String(l.name ?? l.config?.name);
    for (const k of Object.keys(l.config ?? {})) if (k.endsWith('_initializer')) l.config![k] = { class_name: StageWeightInitializer.className, config: { key: key(name) } };
  }
  const tensors = Array.isArray(weights) ? weights : weightTensors(specs, weights);
  if (tensors.length !== specs.length) throw new DeferError('E_WEIGHTS', `${tensors.length} weight tensors for ${specs.length} specs`);
  let at = 0;
  for (const s of specs) pendingWeights.set(key(s.layer), [...(pendingWeights.get(key(s.layer)) ?? []), tensors[at++]]);
  let model: tf.LayersModel | undefined;
  try {
    try {
      model = await tf.models.modelFromJSON({ modelTopology: t } as unknown as tf.io.ModelJSON);
    } catch (err) {
      if (err instanceof DeferError) throw err;
      throw new DeferError('E_MODEL', `cannot build the stage from its topology: ${(err as Error).message}`);
    }
    for (const layer of model.layers) {
      const want = byLayer.get(layer.name) ?? [];
      if (want.length !== layer.weights.length) throw new DeferError('E_WEIGHTS', `layer '${layer.name}' has ${layer.weights.length} weights but the manifest gives ${want.length}`);
    }
    const left = [...keyOf].filter(([, k]) => (pendingWeights.get(k)?.length ?? 0) > 0);
    if (left.length) throw new DeferError('E_WEIGHTS', `layer ${left[0][0]} took fewer weights than the manifest gives it`);
  } catch (err) {
    model?.dispose();
    throw err;
  } finally {
    // tensors no layer took are freed; the taken ones belong to their variables now
    for (const k of keyOf.values()) {
      tf.dispose(pendingWeights.get(k) ?? []);
      pendingWeights.delete(k);
      layerOfKey.delete(k);
    }
  }
  const m = model!;
  const run = layerByLayer(m, t as Json, !options.plainConvolutions);
  return {
    run: (x) => run(x),
    runReleasing: (x) => {
      // a layer's weights are read only while the layer runs: once it has run for the last time in the frame,
      // those the engine packed are released, so that the next layers' packed copies reuse their memory
      let releasedBytes = 0;
      recordReads();
      try {
        const output = run(x, (layer) => {
          releasedBytes += releasePacked(layer.weights.map((w) => ({ name: w.name, tensor: w.read() })));
        });
        return { output, releasedBytes };
      } finally {
        stopRecording();
      }
    },
    dispose: () => m.dispose(),
  };
}

/**
 * A functional model run one layer at a time, each tensor disposed as soon as the last layer that reads it
 * has run: `predict` keeps every intermediate tensor until the end, and on wasm the engine's heap keeps the
 * high-water mark for good (ResNet50's last quarter: 173 MB of intermediates on 77 MB of weights). The same
 * layers in the same order, so the same bits; with `convAsMatMuls`, the convolutions that conv-as-matmul.ts
 * takes are computed as matrix products (decided on each layer's first frame's shape).
 */
function layerByLayer(model: tf.LayersModel, topology: Json, convAsMatMuls: boolean): (x: tf.Tensor, afterLastUse?: (layer: tf.layers.Layer) => void) => tf.Tensor {
  const cfg = topology.config as { layers: { name: string; inbound_nodes: unknown[][] }[]; input_layers: unknown[][]; output_layers: unknown[][] };
  const input = String(cfg.input_layers[0][0]);
  const output = String(cfg.output_layers[0][0]);
  const byName = new Map(model.layers.map((l) => [l.name, l]));
  const steps = cfg.layers.filter((l) => l.name !== input).map((l) => ({ layer: byName.get(l.name)!, inputs: ((l.inbound_nodes[0] ?? []) as unknown[][]).map((ref) => String(ref[0])) }));
  const readers = new Map<string, number>();
  for (const s of steps) for (const i of s.inputs) readers.set(i, (readers.get(i) ?? 0) + 1);
  // the step after which a layer (applied more than once in a shared model) runs no more
  const lastStep = new Map(steps.map((s, i) => [s.layer, i]));
  // per step: whether its convolution is computed as a matrix product (decided on its first frame's shape)
  const matMul: (boolean | undefined)[] = [];
  return (x, afterLastUse) => {
    const values = new Map<string, tf.Tensor>([[input, x]]);
    const left = new Map(readers);
    try {
      for (const [at, s] of steps.entries()) {
        const ins = s.inputs.map((n) => values.get(n)!);
        matMul[at] ??= convAsMatMuls && ins.length === 1 && asMatMul(s.layer, ins[0].shape.slice(1));
        const mm = matMul[at];
        values.set(s.layer.name, mm ? convAsMatMul(s.layer, ins[0]) : applyLayer(s.layer, ins));
        if (afterLastUse && lastStep.get(s.layer) === at) afterLastUse(s.layer);
        for (const n of s.inputs) {
          const k = left.get(n)! - 1;
          left.set(n, k);
          if (k === 0 && n !== input && n !== output) {
            values.get(n)!.dispose();
            values.delete(n);
          }
        }
      }
      const y = values.get(output)!;
      values.delete(output);
      return y;
    } finally {
      for (const [n, t] of values) if (n !== input) t.dispose();
    }
  };
}

/**
 * One layer on concrete tensors, in a scope of its own: what the layer makes on the way is freed as soon as it
 * returns, not at the frame's end (Keras's ReLU with a maximum keeps its unclipped output: on the wasm engine the
 * heap's high-water mark of MobileNetV2 fell from 28 to 23 MiB, of MobileNet v1 from 100 to 83). The same
 * kernels, so the same bits.
 */
function applyLayer(layer: tf.layers.Layer, ins: tf.Tensor[]): tf.Tensor {
  return tf.tidy(() => layer.apply(ins.length === 1 ? ins[0] : ins) as tf.Tensor);
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
