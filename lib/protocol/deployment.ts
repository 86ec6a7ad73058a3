/**
 * Deployment messages (CBOR): a node's assignment (retained on
 * node/<id>/assign), its weight chunks (retained on node/<id>/weights/<i>), and
 * a standby's prefetch list (retained on node/<id>/prefetch). See docs/protocol.md.
 */
import { EnvelopeError } from '../core/errors.js';
import { arr, decodeMap, encodeCbor, int, name, num, obj, PROTOCOL_VERSION, SHA256, shapeOf, str } from './fields.js';
import { type ImageInput, imageInputOf } from './image-input.js';
import { type Codec, type DType, isDType, PRECISIONS, type Precision } from './tensor-codec.js';

export interface WeightSpec {
  /** layer name in the stage topology */
  layer: string;
  /** `layer/index`, for messages */
  name: string;
  dtype: DType;
  shape: number[];
  /** byte offset in the stage's weight blob */
  offset: number;
  bytes: number;
  /** stored quantized (graph models' converter option): `bytes` are elements x the quantized dtype's size; dequantized on load as value * scale + min (float16: as half floats) */
  quantization?: WeightQuantization;
}

export const QUANTIZED_DTYPES = ['uint8', 'uint16', 'float16'] as const;
export interface WeightQuantization {
  dtype: (typeof QUANTIZED_DTYPES)[number];
  scale?: number;
  min?: number;
}

/** What a stage's `topology` is: a Keras-style functional model (LayersModel), or a TensorFlow graph (GraphModel) fed at a Placeholder. */
export const MODEL_FORMATS = ['layers-model', 'graph-model'] as const;
export type ModelFormat = (typeof MODEL_FORMATS)[number];

export interface WeightManifest {
  specs: WeightSpec[];
  totalBytes: number;
  /** sha256 of the whole blob, hex */
  sha256: string;
  chunkBytes: number;
  /** sha256 of each chunk, hex; chunk i is bytes [i*chunkBytes, (i+1)*chunkBytes) */
  chunks: string[];
}

export interface Assignment {
  v: 1;
  kind: 'assign';
  deployment: string;
  pipeline: string;
  nodeId: string;
  stage: number;
  stageCount: number;
  /** this stage's model as a JSON string: Keras-style functional model JSON, or for `modelFormat` graph-model a GraphStageTopology (docs/protocol.md) */
  topology: string;
  /** absent: layers-model */
  modelFormat?: ModelFormat;
  inputShape: number[];
  inputDtype: DType;
  /** stage 0 only: frames may come as encoded images (Activation.image), decoded by the node this way (a compact first hop) */
  inputImage?: ImageInput;
  manifest: WeightManifest;
  inputTopic: string;
  outputTopic: string;
  codec: Codec;
  /** how precisely this stage's output travels; absent: lossless */
  outputPrecision?: Precision;
  qos: 0 | 1;
  createdAt: number;
  /** engines (worker threads, each with the stage's weights) the node runs for this stage; absent: 1, in the node's own thread */
  workers?: number;
  /** frames an engine may compute in one call when several wait (a batch), where the node finds the stage computes a batch bit for bit as each frame alone; absent: 1 */
  batch?: number;
  /** the node whose retained weight chunks hold this stage's weights (a standby taking over a failed node's stage); unset: the assigned node's own */
  weightsNode?: string;
  /**
   * The planner's estimate of what this stage adds to an idle node, per engine computing one frame at a time, and
   * what each frame of a batch beyond the first adds (lib/planning/cost-model.ts): the node weighs its free memory
   * with the same figures (how many engines fit; whether the old stage must go first). Absent (an older
   * dispatcher): the node estimates from the weights alone.
   */
  memoryBytes?: number;
  batchFrameBytes?: number;
  /**
   * The same estimate for a node whose engine computes every convolution itself and keeps twice each filter
   * (Capabilities.plainConvolutions): the figure such a node weighs its memory with in place of `memoryBytes`.
   */
  plainMemoryBytes?: number;
}

function quantizationOf(value: unknown, W: string): WeightQuantization {
  const q = obj(value, `${W}: quantization`);
  const dtype = q.dtype as WeightQuantization['dtype'];
  if (!QUANTIZED_DTYPES.includes(dtype)) throw new EnvelopeError(`${W}: quantization dtype must be one of ${QUANTIZED_DTYPES.join(', ')}, got '${String(q.dtype)}'`);
  if (dtype === 'float16') return { dtype };
  return { dtype, scale: num(q, 'scale', `${W} quantization`), min: num(q, 'min', `${W} quantization`) };
}

/** A weight manifest, checked field by field (`W` names the message it is in). */
function manifestOf(value: unknown, W: string): WeightManifest {
  const man = obj(value, `${W}: manifest`);
  const specs = arr(man, 'specs', `${W} manifest`, 100_000).map((s, i) => {
    const o = obj(s, `${W} manifest spec ${i}`);
    const dtype = o.dtype;
    if (!isDType(dtype)) throw new EnvelopeError(`${W} manifest spec ${i}: unknown dtype '${String(dtype)}'`);
    return {
      layer: str(o, 'layer', `${W} manifest spec ${i}`),
      name: str(o, 'name', `${W} manifest spec ${i}`),
      dtype,
      shape: shapeOf(o.shape, `${W} manifest spec ${i} shape`),
      offset: int(o, 'offset', `${W} manifest spec ${i}`),
      bytes: int(o, 'bytes', `${W} manifest spec ${i}`),
      ...(o.quantization === undefined ? {} : { quantization: quantizationOf(o.quantization, `${W} manifest spec ${i}`) }),
    };
  });
  const chunks = arr(man, 'chunks', `${W} manifest`, 1_000_000).map((c, i) => {
    if (typeof c !== 'string' || !SHA256.test(c)) throw new EnvelopeError(`${W} manifest chunk ${i}: not a sha256 hex digest`);
    return c;
  });
  const sha256 = str(man, 'sha256', `${W} manifest`);
  if (!SHA256.test(sha256)) throw new EnvelopeError(`${W} manifest: sha256 is not a hex digest`);
  const manifest: WeightManifest = {
    specs,
    totalBytes: int(man, 'totalBytes', `${W} manifest`),
    sha256,
    chunkBytes: int(man, 'chunkBytes', `${W} manifest`, 1),
    chunks,
  };
  if (Math.ceil(manifest.totalBytes / manifest.chunkBytes) !== chunks.length) {
    throw new EnvelopeError(`${W} manifest: ${chunks.length} chunks do not cover ${manifest.totalBytes} bytes in chunks of ${manifest.chunkBytes}`);
  }
  for (const s of specs) {
    if (s.offset + s.bytes > manifest.totalBytes) throw new EnvelopeError(`${W} manifest: weight ${s.name} lies outside the blob`);
  }
  return manifest;
}

export function encodeAssignment(a: Omit<Assignment, 'v' | 'kind'>): Buffer {
  return encodeCbor({ v: PROTOCOL_VERSION, kind: 'assign', ...a });
}

export function decodeAssignment(buf: Uint8Array, maxBytes = 64 * 1024 * 1024): Assignment {
  const W = 'assignment';
  const m = decodeMap(buf, maxBytes, W);
  if (m.kind !== 'assign') throw new EnvelopeError(`${W}: kind must be 'assign', got '${String(m.kind)}'`);
  const manifest = manifestOf(m.manifest, W);
  const inputDtype = m.inputDtype;
  if (!isDType(inputDtype)) throw new EnvelopeError(`${W}: unknown inputDtype '${String(inputDtype)}'`);
  const codec = m.codec;
  if (codec !== 'lz4' && codec !== 'none') throw new EnvelopeError(`${W}: codec must be lz4 or none`);
  const qos = m.qos;
  if (qos !== 0 && qos !== 1) throw new EnvelopeError(`${W}: qos must be 0 or 1`);
  const outputPrecision = m.outputPrecision;
  if (outputPrecision !== undefined && !PRECISIONS.includes(outputPrecision as Precision)) throw new EnvelopeError(`${W}: outputPrecision must be one of ${PRECISIONS.join(', ')}`);
  const stageCount = int(m, 'stageCount', W, 1, 1024);
  const modelFormat = m.modelFormat;
  if (modelFormat !== undefined && !MODEL_FORMATS.includes(modelFormat as ModelFormat)) throw new EnvelopeError(`${W}: modelFormat must be one of ${MODEL_FORMATS.join(', ')}`);
  return {
    v: 1,
    kind: 'assign',
    deployment: str(m, 'deployment', W, 128),
    pipeline: str(m, 'pipeline', W, 64),
    nodeId: str(m, 'nodeId', W, 64),
    stage: int(m, 'stage', W, 0, stageCount - 1),
    stageCount,
    topology: str(m, 'topology', W, maxBytes),
    ...(modelFormat === undefined ? {} : { modelFormat: modelFormat as ModelFormat }),
    inputShape: shapeOf(m.inputShape, `${W}: inputShape`),
    inputDtype,
    ...(m.inputImage === undefined ? {} : { inputImage: imageInputOf(m.inputImage, W) }),
    manifest,
    inputTopic: str(m, 'inputTopic', W, 1024),
    outputTopic: str(m, 'outputTopic', W, 1024),
    codec,
    ...(outputPrecision === undefined ? {} : { outputPrecision: outputPrecision as Precision }),
    qos,
    createdAt: num(m, 'createdAt', W),
    ...(m.weightsNode === undefined ? {} : { weightsNode: name(m, 'weightsNode', W) }),
    ...(m.workers === undefined ? {} : { workers: int(m, 'workers', W, 1, MAX_WORKERS) }),
    ...(m.batch === undefined ? {} : { batch: int(m, 'batch', W, 1, MAX_BATCH) }),
    ...(m.memoryBytes === undefined ? {} : { memoryBytes: int(m, 'memoryBytes', W) }),
    ...(m.batchFrameBytes === undefined ? {} : { batchFrameBytes: int(m, 'batchFrameBytes', W) }),
    ...(m.plainMemoryBytes === undefined ? {} : { plainMemoryBytes: int(m, 'plainMemoryBytes', W) }),
  };
}

/** the most engines one node may run for a stage */
export const MAX_WORKERS = 256;
/** the most frames an assignment may ask one engine call to compute together */
export const MAX_BATCH = 16;

// ---- prefetch list -----------------------------------------------------------

/** What a standby should hold in its weight cache: the stages of the running deployment, and where their chunks are retained. */
export interface PrefetchList {
  v: 1;
  kind: 'prefetch';
  deployment: string;
  stages: { weightsNode: string; manifest: WeightManifest }[];
}

export function encodePrefetchList(p: Omit<PrefetchList, 'v' | 'kind'>): Buffer {
  return encodeCbor({ v: PROTOCOL_VERSION, kind: 'prefetch', ...p });
}

export function decodePrefetchList(buf: Uint8Array, maxBytes = 64 * 1024 * 1024): PrefetchList {
  const W = 'prefetch list';
  const m = decodeMap(buf, maxBytes, W);
  if (m.kind !== 'prefetch') throw new EnvelopeError(`${W}: kind must be 'prefetch', got '${String(m.kind)}'`);
  const stages = arr(m, 'stages', W, 1024).map((x, i) => {
    const o = obj(x, `${W} stage ${i}`);
    return { weightsNode: name(o, 'weightsNode', `${W} stage ${i}`), manifest: manifestOf(o.manifest, `${W} stage ${i}`) };
  });
  return { v: 1, kind: 'prefetch', deployment: str(m, 'deployment', W, 128), stages };
}

// ---- weight chunks -----------------------------------------------------------

export interface WeightChunk {
  v: 1;
  kind: 'weights';
  deployment: string;
  index: number;
  count: number;
  data: Uint8Array;
}

export function encodeWeightChunk(c: Omit<WeightChunk, 'v' | 'kind'>): Buffer {
  return encodeCbor({ v: PROTOCOL_VERSION, kind: 'weights', ...c }, c.data.byteLength);
}

export function decodeWeightChunk(buf: Uint8Array, maxBytes: number): WeightChunk {
  const W = 'weight chunk';
  const m = decodeMap(buf, maxBytes, W);
  if (m.kind !== 'weights') throw new EnvelopeError(`${W}: kind must be 'weights'`);
  if (!(m.data instanceof Uint8Array)) throw new EnvelopeError(`${W}: data must be a byte string`);
  const count = int(m, 'count', W, 1, 1_000_000);
  return { v: 1, kind: 'weights', deployment: str(m, 'deployment', W, 128), index: int(m, 'index', W, 0, count - 1), count, data: m.data };
}
