/**
 * Graph-model partitioning: a TensorFlow.js GraphModel split at single-tensor
 * cut points of its node graph. A stage is a graph JSON holding only its own
 * nodes, the constants they read, and (after stage 0) a Placeholder named as
 * the cut node, so the stage's nodes read it unchanged; its weights are the
 * stored bytes of those constants sliced from the model's blob, quantized as
 * they were. A stage runs with GraphModel.execute, and the chain gives the
 * whole graph's output bit for bit (same kernels, same order).
 */
import type { Hash } from 'node:crypto';
import { DeferError, errorMessage } from '../core/errors.js';
import { bytesPerElement, type DType, elementCount, isDType, type WeightSpec } from '../protocol/index.js';
import { tf } from './engine.js';
import type { FlatModel, LayerInfo, StageModel, StageSpan, StageWeights } from './flat-model.js';
import { spansOf } from './flat-model.js';
import { analyseCuts, type CutAnalysis, type FlatGraph } from './graph.js';
import { analyseGraphDef, type GraphNodeDef, type GraphStructure } from './graph-def.js';
import { recordReads, releasePacked, stopRecording } from './packed-weights.js';

type Json = Record<string, unknown>;

/** What an assignment's `topology` holds for a graph-model stage. */
export interface GraphStageTopology {
  modelTopology: { node: GraphNodeDef[]; versions?: Json };
  /** the Placeholder this stage is fed at */
  input: string;
  /** the node whose output is this stage's output */
  output: string;
}

interface StoredWeight {
  spec: tf.io.WeightsManifestEntry;
  offset: number;
  bytes: number;
}

const QUANT_BYTES: Record<string, number> = { uint8: 1, uint16: 2, float16: 2 };

function storedBytes(e: tf.io.WeightsManifestEntry): number {
  const per = e.quantization ? QUANT_BYTES[e.quantization.dtype] : isDType(e.dtype) ? bytesPerElement(e.dtype) : undefined;
  if (per === undefined)
    throw new DeferError(
      'E_MODEL',
      `weight '${e.name}' is of dtype ${e.dtype}${e.quantization ? ` quantized as ${e.quantization.dtype}` : ''}, which cannot be split; supported are float32 and int32, quantized as uint8, uint16 or float16`,
    );
  return elementCount(e.shape) * per;
}

function flopsOf(op: string, outShape: number[], inShape: number[], weightShape: number[] | undefined): number {
  const out = elementCount(outShape.map((d) => Math.max(d, 1)));
  const w = weightShape ?? [];
  switch (op) {
    case 'Conv2D':
    case '_FusedConv2D':
      return w.length === 4 ? 2 * out * w[0] * w[1] * w[2] : out;
    case 'DepthwiseConv2dNative':
    case 'FusedDepthwiseConv2dNative':
      return w.length === 4 ? 2 * out * w[0] * w[1] : out;
    case 'MatMul':
    case '_FusedMatMul':
    case 'BatchMatMul':
    case 'BatchMatMulV2':
      return 2 * out * (inShape[inShape.length - 1] ?? 1);
    default:
      return out;
  }
}

function placeholderNode(name: string, shape: number[], dtype: DType): GraphNodeDef {
  return {
    name,
    op: 'Placeholder',
    attr: {
      dtype: { type: dtype === 'int32' ? 'DT_INT32' : 'DT_FLOAT' },
      shape: { shape: { dim: [-1, ...shape].map((d) => ({ size: String(d) })) } },
    },
  };
}

export class GraphFlatModel implements FlatModel {
  readonly format = 'graph-model' as const;
  readonly graph: FlatGraph;
  readonly layers: LayerInfo[];
  readonly cuts: CutAnalysis;
  readonly inputShape: number[];
  readonly inputDtype: DType;
  readonly outputShape: number[];
  private readonly structure: GraphStructure;
  private readonly model: tf.GraphModel;
  private readonly weights: Map<string, StoredWeight>;
  private readonly blob: Uint8Array;
  private readonly versions: Json | undefined;

  private constructor(
    structure: GraphStructure,
    model: tf.GraphModel,
    weights: Map<string, StoredWeight>,
    blob: Uint8Array,
    versions: Json | undefined,
    shapes: Map<string, { shape: number[]; dtype: string }>,
  ) {
    this.structure = structure;
    this.graph = structure.graph;
    this.model = model;
    this.weights = weights;
    this.blob = blob;
    this.versions = versions;
    this.inputShape = structure.inputShape;
    this.inputDtype = structure.inputDtype;
    const blocked = new Map(structure.multiOutput);
    const attributed = new Set<string>();
    this.layers = this.graph.layers.map((l) => {
      const out = shapes.get(l.name)!;
      const outputShape = out.shape.slice(1);
      if (out.dtype !== 'float32' && !blocked.has(l.name)) blocked.set(l.name, `its output is ${out.dtype}, and only float32 activations cross a cut`);
      if (out.shape.length < 1 && !blocked.has(l.name)) blocked.set(l.name, 'its output is a scalar without a batch dimension');
      let params = 0;
      let weightBytes = 0;
      let loadedBytes = 0;
      let firstWeight: number[] | undefined;
      for (const c of structure.constInputs.get(l.name)!) {
        const w = weights.get(c);
        if (!w) continue;
        firstWeight ??= w.spec.shape;
        if (attributed.has(c)) continue;
        attributed.add(c);
        params += elementCount(w.spec.shape);
        weightBytes += w.bytes;
        loadedBytes += elementCount(w.spec.shape) * 4;
      }
      const inShape = l.inputs.length ? shapes.get(l.inputs[0])!.shape.slice(1) : outputShape;
      return {
        name: l.name,
        className: l.className,
        params,
        weightBytes,
        loadedBytes,
        outputShape,
        outputBytes: elementCount(outputShape) * 4,
        flops: flopsOf(l.className, outputShape, inShape, firstWeight),
      };
    });
    this.cuts = analyseCuts(this.graph, blocked);
    this.outputShape = this.layers[this.layers.length - 1].outputShape;
  }

  /** Analyse a graph model's JSON and weights (as readModelArtifacts gives them), load it, and run it once to learn every node's output shape. */
  static async from(artifacts: tf.io.ModelArtifacts, where: string): Promise<GraphFlatModel> {
    const modelJson = artifacts as unknown as Json;
    const structure = analyseGraphDef(modelJson, where);
    const data = artifacts.weightData;
    if (Array.isArray(data)) throw new DeferError('E_MODEL', `${where}: weights in several buffers are not supported`);
    const blob = new Uint8Array(data ?? new ArrayBuffer(0));
    const weights = new Map<string, StoredWeight>();
    let offset = 0;
    for (const spec of artifacts.weightSpecs ?? []) {
      const bytes = storedBytes(spec);
      weights.set(spec.name, { spec, offset, bytes });
      offset += bytes;
    }
    if (offset !== blob.byteLength) throw new DeferError('E_MODEL', `${where}: the weight manifest describes ${offset} bytes but the shards hold ${blob.byteLength}`);
    let model: tf.GraphModel;
    try {
      model = await tf.loadGraphModel(tf.io.fromMemory(artifacts));
    } catch (err) {
      throw new DeferError('E_MODEL', `${where}: cannot load the graph model: ${errorMessage(err)}`);
    }
    const names = structure.graph.layers.map((l) => l.name);
    const batch = 1;
    const x = structure.inputDtype === 'int32' ? tf.zeros([batch, ...structure.inputShape], 'int32') : tf.randomUniform([batch, ...structure.inputShape], 0, 1, 'float32', 1);
    const shapes = new Map<string, { shape: number[]; dtype: string }>();
    try {
      const outs = model.execute({ [structure.placeholder.name]: x }, names) as tf.Tensor[];
      outs.forEach((t, i) => {
        shapes.set(names[i], { shape: [...t.shape], dtype: t.dtype });
      });
      tf.dispose(outs.filter((t) => t !== x));
    } catch (err) {
      model.dispose();
      throw new DeferError('E_MODEL', `${where}: running the graph once on a [${batch},${structure.inputShape}] input failed: ${errorMessage(err)}`);
    } finally {
      x.dispose();
    }
    return new GraphFlatModel(structure, model, weights, blob, (modelJson.modelTopology as Json).versions as Json | undefined, shapes);
  }

  get params(): number {
    return this.layers.reduce((s, l) => s + l.params, 0);
  }

  validCutNames(): string[] {
    return this.cuts.valid.map((i) => this.graph.layers[i].name);
  }

  /** The constants a stage needs, in the model's order (a constant two stages share is in both). */
  private stageConsts(span: StageSpan): string[] {
    const want = new Set<string>();
    for (const n of span.layers) for (const c of this.structure.constInputs.get(n)!) want.add(c);
    return this.structure.constOrder.filter((c) => want.has(c));
  }

  spans(cuts: string[]): StageSpan[] {
    return spansOf(this, cuts).map((span) => {
      const ws = this.stageConsts(span)
        .map((c) => this.weights.get(c))
        .filter((w) => w !== undefined);
      return { ...span, params: ws.reduce((s, w) => s + elementCount(w.spec.shape), 0), weightBytes: ws.reduce((s, w) => s + w.bytes, 0) };
    });
  }

  stageTopology(span: StageSpan): Json {
    const nodes = this.structure.nodes;
    const input = span.after ?? this.structure.placeholder.name;
    const head = span.after === null ? [] : [placeholderNode(span.after, span.inputShape, span.inputDtype)];
    const names = new Set([input, ...this.stageConsts(span), ...span.layers]);
    // a control dependency on a node of another stage (converters tie constants to the input with `^input`) orders nothing here
    const body = [...this.stageConsts(span), ...span.layers].map((n) => {
      const node = nodes.get(n)!;
      const kept = node.input?.filter((i) => !i.startsWith('^') || names.has(i.slice(1)));
      return kept?.length === node.input?.length ? node : { ...node, input: kept };
    });
    const topology: GraphStageTopology = { modelTopology: { node: [...head, ...body], ...(this.versions ? { versions: this.versions } : {}) }, input, output: span.last };
    return topology as unknown as Json;
  }

  stageWeights(span: StageSpan): StageWeights {
    const specs: WeightSpec[] = [];
    const parts: Uint8Array[] = [];
    let offset = 0;
    for (const c of this.stageConsts(span)) {
      const w = this.weights.get(c);
      if (!w) continue;
      const q = w.spec.quantization;
      specs.push({
        layer: c,
        name: c,
        dtype: w.spec.dtype as DType,
        shape: [...w.spec.shape],
        offset,
        bytes: w.bytes,
        ...(q ? { quantization: { dtype: q.dtype as 'uint8' | 'uint16' | 'float16', ...(q.scale === undefined ? {} : { scale: q.scale }), ...(q.min === undefined ? {} : { min: q.min }) } } : {}),
      });
      parts.push(this.blob.subarray(w.offset, w.offset + w.bytes));
      offset += w.bytes;
    }
    return { specs, blob: Buffer.concat(parts) };
  }

  run(x: tf.Tensor): tf.Tensor {
    return this.model.execute({ [this.structure.placeholder.name]: x }, this.graph.output) as tf.Tensor;
  }

  dispose(): void {
    this.model.dispose();
  }

  digest(h: Hash): void {
    h.update(JSON.stringify(this.graph));
    h.update(this.blob);
  }
}

function isTopology(t: Json): t is Json & GraphStageTopology {
  const mt = t.modelTopology as Json | undefined;
  return typeof t.input === 'string' && typeof t.output === 'string' && Array.isArray(mt?.node);
}

/** Build a graph stage from its topology JSON and weight blob (as an edge node does). */
export async function buildGraphStage(topology: Json, specs: WeightSpec[], blob: Uint8Array): Promise<StageModel> {
  if (!isTopology(topology)) throw new DeferError('E_MODEL', 'the graph stage topology lacks modelTopology.node, input or output');
  const entries: tf.io.WeightsManifestEntry[] = [];
  let offset = 0;
  for (const s of specs) {
    const entry: tf.io.WeightsManifestEntry = { name: s.name, shape: s.shape, dtype: s.dtype as 'float32' | 'int32', ...(s.quantization ? { quantization: s.quantization } : {}) };
    const bytes = storedBytes(entry);
    if (s.offset !== offset || s.bytes !== bytes) throw new DeferError('E_WEIGHTS', `weight ${s.name}: expected ${bytes} bytes at offset ${offset}, the manifest says ${s.bytes} at ${s.offset}`);
    offset += bytes;
    entries.push(entry);
  }
  if (offset !== blob.byteLength) throw new DeferError('E_WEIGHTS', `the manifest describes ${offset} bytes of weights, the blob has ${blob.byteLength}`);
  // the blob's own buffer where it is the whole of it; else an aligned copy (the blob may be a view at any offset)
  const whole = blob.byteOffset === 0 && blob.byteLength === blob.buffer.byteLength && blob.buffer instanceof ArrayBuffer;
  const weightData = whole ? (blob.buffer as ArrayBuffer) : new Uint8Array(blob).buffer;
  let model: tf.GraphModel;
  try {
    model = await tf.loadGraphModel(
      tf.io.fromMemory({ modelTopology: topology.modelTopology as unknown as tf.io.ModelArtifacts['modelTopology'], weightSpecs: entries, weightData, format: 'graph-model' }),
    );
  } catch (err) {
    throw new DeferError('E_MODEL', `cannot build the graph stage: ${errorMessage(err)}`);
  }
  const { input, output } = topology;
  const run = (x: tf.Tensor) => model.execute({ [input]: x }, output) as tf.Tensor;
  return {
    run,
    runReleasing: (x) => {
      // the graph runs as a whole: its packed weights are released after the frame
      recordReads();
      try {
        const out = run(x);
        const weights = Object.entries(model.weights).flatMap(([name, ts]) => ts.map((tensor) => ({ name, tensor })));
        return { output: out, releasedBytes: releasePacked(weights) };
      } finally {
        stopRecording();
      }
    },
    dispose: () => model.dispose(),
  };
}
