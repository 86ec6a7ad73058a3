/**
 * Protocol messages (version 1). Assignments, weight chunks and activations
 * are CBOR maps; node status is JSON so that any MQTT client can read it.
 * Every decoder validates each field it returns and throws EnvelopeError
 * (or CodecError for the tensor) on anything else. See docs/protocol.md.
 */
import type { Capabilities } from '../planning/calibrate.js';
import { Encoder } from 'cbor-x';
import { EnvelopeError } from '../core/errors.js';
import { type WireTensor, isDType, type DType, type Codec } from './tensor-codec.js';

export const PROTOCOL_VERSION = 1;

const cbor = new Encoder({ useRecords: false, tagUint8Array: false, mapsAsObjects: true });

export function encodeCbor(value: unknown): Buffer {
  return cbor.encode(value);
}

function decodeMap(buf: Uint8Array, maxBytes: number, what: string): Record<string, unknown> {
  if (buf.byteLength > maxBytes) throw new EnvelopeError(`${what} of ${buf.byteLength} bytes is over the limit of ${maxBytes}`, 'E_TOO_LARGE');
  let value: unknown;
  try {
    value = cbor.decode(buf);
  } catch (err) {
    throw new EnvelopeError(`${what} is not valid CBOR: ${(err as Error).message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value) || value instanceof Uint8Array) {
    throw new EnvelopeError(`${what} must be a CBOR map`);
  }
  const m = value as Record<string, unknown>;
  if (m.v !== PROTOCOL_VERSION) throw new EnvelopeError(`${what} has protocol version ${String(m.v)}; this build speaks version ${PROTOCOL_VERSION}`);
  return m;
}

// ---- field checks -----------------------------------------------------------

function str(m: Record<string, unknown>, key: string, what: string, max = 256): string {
  const x = m[key];
  if (typeof x !== 'string' || x.length === 0 || x.length > max) throw new EnvelopeError(`${what}: field '${key}' must be a non-empty string of at most ${max} characters`);
  return x;
}
/** a name that is one topic level (node, pipeline, device) */
function name(m: Record<string, unknown>, key: string, what: string): string {
  const x = str(m, key, what, 64);
  if (!/^[A-Za-z0-9_.-]+$/.test(x)) throw new EnvelopeError(`${what}: field '${key}' must be made of letters, digits, _ . -`);
  return x;
}
function int(m: Record<string, unknown>, key: string, what: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const x = m[key];
  if (typeof x !== 'number' || !Number.isInteger(x) || x < min || x > max) throw new EnvelopeError(`${what}: field '${key}' must be an integer in [${min}, ${max}]`);
  return x;
}
function num(m: Record<string, unknown>, key: string, what: string): number {
  const x = m[key];
  if (typeof x !== 'number' || !Number.isFinite(x)) throw new EnvelopeError(`${what}: field '${key}' must be a finite number`);
  return x;
}
function arr(m: Record<string, unknown>, key: string, what: string, max: number): unknown[] {
  const x = m[key];
  if (!Array.isArray(x) || x.length > max) throw new EnvelopeError(`${what}: field '${key}' must be an array of at most ${max} items`);
  return x;
}
function obj(x: unknown, what: string): Record<string, unknown> {
  if (x === null || typeof x !== 'object' || Array.isArray(x) || x instanceof Uint8Array) throw new EnvelopeError(`${what} must be a map`);
  return x as Record<string, unknown>;
}
function shapeOf(x: unknown, what: string): number[] {
  if (!Array.isArray(x) || x.length > 8 || !x.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new EnvelopeError(`${what} must be an array of at most 8 non-negative integers`);
  return x as number[];
}
const SHA256 = /^[0-9a-f]{64}$/;

// ---- assignment ------------------------------------------------------------

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
}

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
  /** Keras-style model JSON of this stage (a functional model), as a string */
  topology: string;
  inputShape: number[];
  inputDtype: DType;
  manifest: WeightManifest;
  inputTopic: string;
  outputTopic: string;
  codec: Codec;
  qos: 0 | 1;
  createdAt: number;
  /** the node whose retained weight chunks hold this stage's weights (a standby taking over a failed node's stage); unset: the assigned node's own */
  weightsNode?: string;
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
  const stageCount = int(m, 'stageCount', W, 1, 1024);
  return {
    v: 1,
    kind: 'assign',
    deployment: str(m, 'deployment', W, 128),
    pipeline: str(m, 'pipeline', W, 64),
    nodeId: str(m, 'nodeId', W, 64),
    stage: int(m, 'stage', W, 0, stageCount - 1),
    stageCount,
    topology: str(m, 'topology', W, maxBytes),
    inputShape: shapeOf(m.inputShape, `${W}: inputShape`),
    inputDtype,
    manifest,
    inputTopic: str(m, 'inputTopic', W, 1024),
    outputTopic: str(m, 'outputTopic', W, 1024),
    codec,
    qos,
    createdAt: num(m, 'createdAt', W),
    ...(m.weightsNode === undefined ? {} : { weightsNode: name(m, 'weightsNode', W) }),
  };
}

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
  return encodeCbor({ v: PROTOCOL_VERSION, kind: 'weights', ...c });
}

export function decodeWeightChunk(buf: Uint8Array, maxBytes: number): WeightChunk {
  const W = 'weight chunk';
  const m = decodeMap(buf, maxBytes, W);
  if (m.kind !== 'weights') throw new EnvelopeError(`${W}: kind must be 'weights'`);
  if (!(m.data instanceof Uint8Array)) throw new EnvelopeError(`${W}: data must be a byte string`);
  const count = int(m, 'count', W, 1, 1_000_000);
  return { v: 1, kind: 'weights', deployment: str(m, 'deployment', W, 128), index: int(m, 'index', W, 0, count - 1), count, data: m.data };
}

// ---- activations ---------------------------------------------------------------

/** What one node did to one frame: its stage, times (ms since epoch) and the bytes it took in. */
export interface Hop {
  node: string;
  stage: number;
  bytesIn: number;
  recvAt: number;
  decodeMs: number;
  computeMs: number;
  encodeMs: number;
  sentAt: number;
  /** CPU ms (user + system) the node's process spent on this frame, decode to encode (optional) */
  cpuMs?: number;
}

export interface Activation {
  v: 1;
  kind: 'act';
  deployment: string;
  frame: string;
  device: string;
  /** the stage this message is for; equal to stageCount for the final result */
  stage: number;
  sentAt: number;
  hops: Hop[];
  tensor: WireTensor;
}

export function encodeActivation(a: Omit<Activation, 'v' | 'kind'>): Buffer {
  return encodeCbor({ v: PROTOCOL_VERSION, kind: 'act', ...a });
}

/**
 * Decode an activation envelope. The tensor is returned still encoded (its
 * fields are checked by decodeTensor when it is used).
 */
export function decodeActivation(buf: Uint8Array, maxBytes: number): Activation {
  const W = 'activation';
  const m = decodeMap(buf, maxBytes, W);
  if (m.kind !== 'act') throw new EnvelopeError(`${W}: kind must be 'act', got '${String(m.kind)}'`);
  const hops = arr(m, 'hops', W, 1024).map((h, i) => {
    const o = obj(h, `${W} hop ${i}`);
    const H = `${W} hop ${i}`;
    return {
      node: str(o, 'node', H, 64),
      stage: int(o, 'stage', H, 0, 1024),
      bytesIn: int(o, 'bytesIn', H),
      recvAt: num(o, 'recvAt', H),
      decodeMs: num(o, 'decodeMs', H),
      computeMs: num(o, 'computeMs', H),
      encodeMs: num(o, 'encodeMs', H),
      sentAt: num(o, 'sentAt', H),
      ...(o.cpuMs === undefined ? {} : { cpuMs: num(o, 'cpuMs', H) }),
    };
  });
  const t = obj(m.tensor, `${W}: tensor`);
  return {
    v: 1,
    kind: 'act',
    deployment: str(m, 'deployment', W, 128),
    frame: str(m, 'frame', W, 128),
    device: str(m, 'device', W, 64),
    stage: int(m, 'stage', W, 0, 1024),
    sentAt: num(m, 'sentAt', W),
    hops,
    tensor: t as unknown as WireTensor,
  };
}

// ---- node status (JSON) ----------------------------------------------------------

export type NodeState = 'online' | 'loading' | 'ready' | 'failed' | 'offline';
const STATES: readonly NodeState[] = ['online', 'loading', 'ready', 'failed', 'offline'];

export interface NodeStatus {
  v: 1;
  node: string;
  state: NodeState;
  at: number;
  deployment?: string;
  stage?: number;
  reason?: string;
  backend?: string;
  pid?: number;
  /** weight transfer progress while loading */
  received?: number;
  total?: number;
  /** counters since start */
  frames?: number;
  dropped?: number;
  rejected?: number;
  /** tensors held by the node's engine: shows that a replaced stage was freed */
  tensors?: number;
  /** the node's calibration and host figures, measured at start */
  capabilities?: Capabilities;
  /** where the running stage's weights came from: the broker, or the node's weight cache */
  weightsFrom?: 'broker' | 'cache';
  /** the node publishes a heartbeat on node/<id>/alive this often (ms); absent: none */
  heartbeatMs?: number;
  /** a standby's prefetch: stages of the running deployment in its weight cache, of how many */
  prefetched?: number;
  prefetchTotal?: number;
}

const CAPABILITY_NUMBERS = ['calibrationMs', 'calibrationCpuMs', 'slowdown', 'cores', 'freeMemoryBytes', 'totalMemoryBytes'] as const;

export function encodeStatus(s: Omit<NodeStatus, 'v'>): Buffer {
  return Buffer.from(JSON.stringify({ v: PROTOCOL_VERSION, ...s }));
}

export function decodeStatus(buf: Uint8Array): NodeStatus {
  const W = 'node status';
  if (buf.byteLength > 64 * 1024) throw new EnvelopeError(`${W} over 64 KiB`, 'E_TOO_LARGE');
  let m: Record<string, unknown>;
  try {
    m = obj(JSON.parse(Buffer.from(buf).toString('utf8')), W);
  } catch (err) {
    throw err instanceof EnvelopeError ? err : new EnvelopeError(`${W} is not valid JSON`);
  }
  if (m.v !== PROTOCOL_VERSION) throw new EnvelopeError(`${W} has protocol version ${String(m.v)}`);
  if (!STATES.includes(m.state as NodeState)) throw new EnvelopeError(`${W}: unknown state '${String(m.state)}'`);
  str(m, 'node', W, 64);
  if (m.heartbeatMs !== undefined) int(m, 'heartbeatMs', W, 1, 3_600_000);
  if (m.capabilities !== undefined) {
    const c = obj(m.capabilities, `${W} capabilities`);
    for (const k of CAPABILITY_NUMBERS) {
      if (typeof c[k] !== 'number' || !Number.isFinite(c[k]) || (c[k] as number) < 0) throw new EnvelopeError(`${W}: capabilities.${k} must be a number >= 0`);
    }
    if (!((c.calibrationMs as number) > 0)) throw new EnvelopeError(`${W}: capabilities.calibrationMs must be positive`);
    str(c, 'backend', `${W} capabilities`, 64);
    str(c, 'host', `${W} capabilities`, 256);
  }
  return m as unknown as NodeStatus;
}
