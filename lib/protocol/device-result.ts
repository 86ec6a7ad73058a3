/**
 * What a device reads on results/<device>: one message per frame, JSON by
 * default, CBOR (with the whole output tensor) when the frame or the
 * dispatcher asks for it. A served frame's result carries its top scores and
 * its latency, hop by hop; a frame that was not served, the reason.
 */
import { decode as decodeCbor } from 'cbor-x';
import { EnvelopeError } from '../core/errors.js';
import type { Hop } from './activation.js';
import { encodeCbor, obj, PROTOCOL_VERSION } from './fields.js';
import { decodeTensor, encodeTensor, type RawTensor } from './tensor-codec.js';

export type Reply = 'json' | 'cbor';

export interface HopLatency {
  node: string;
  stage: number;
  /** bytes of the message this node received (for stage 0 with a compact first hop: about the image's size) */
  bytesIn: number;
  /** from the previous sender's publish to this node's receipt (clocks of two processes) */
  transferMs: number;
  /** waiting in the node's queue */
  waitMs: number;
  decodeMs: number;
  computeMs: number;
  encodeMs: number;
}

export interface TopScore {
  label: string;
  index: number;
  score: number;
}

export interface ServedResult {
  v: 1;
  ok: true;
  device: string;
  /** the device's n-th frame (1-based), in the order the dispatcher received them */
  seq: number;
  /** the frame's own id, when it gave one */
  id?: string;
  /** the frame's id in the chain */
  frame: string;
  top: TopScore[];
  outputShape: number[];
  latencyMs: { total: number; queue: number; preprocess: number; chain: number };
  hops: HopLatency[];
}

export interface FailedResult {
  v: 1;
  ok: false;
  device: string;
  /** absent when the frame was not counted for the device (too many devices) */
  seq?: number;
  id?: string;
  error: { kind: string; message: string };
}

/** A result as a device reads it (served or not: `ok` says which); with CBOR, the whole output too. */
export type DeviceResult = Partial<Omit<ServedResult, 'ok' | 'v'>> & Partial<Omit<FailedResult, 'ok' | 'v'>> & { v: 1; ok: boolean; device: string; format: Reply; output?: RawTensor };

/** JSON, or with reply 'cbor' CBOR with the whole output (LZ4). */
export function encodeServedResult(r: Omit<ServedResult, 'v' | 'ok'>, reply: Reply, output: RawTensor): Buffer {
  const body = { v: PROTOCOL_VERSION, ok: true, ...r };
  if (reply !== 'cbor') return Buffer.from(JSON.stringify(body));
  const tensor = encodeTensor(output, { codec: 'lz4' });
  return encodeCbor({ ...body, output: tensor }, tensor.data.byteLength);
}

export function encodeFailedResult(r: Omit<FailedResult, 'v' | 'ok'>): Buffer {
  return Buffer.from(JSON.stringify({ v: PROTOCOL_VERSION, ok: false, ...r }));
}

/** Read a result (JSON or CBOR); throws EnvelopeError on anything else. */
export function decodeDeviceResult(payload: Uint8Array): DeviceResult {
  const W = 'device result';
  const json = payload[0] === 0x7b;
  let value: unknown;
  try {
    value = json ? JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8')) : decodeCbor(payload);
  } catch (err) {
    throw new EnvelopeError(`${W} is neither JSON nor CBOR: ${(err as Error).message}`);
  }
  const m = obj(value, W);
  if (m.v !== PROTOCOL_VERSION) throw new EnvelopeError(`${W} has protocol version ${String(m.v)}; this build speaks version ${PROTOCOL_VERSION}`);
  if (typeof m.ok !== 'boolean' || typeof m.device !== 'string') throw new EnvelopeError(`${W}: fields 'ok' and 'device' are required`);
  if (m.ok === false && (typeof m.error !== 'object' || m.error === null)) throw new EnvelopeError(`${W}: a failed result must say why ('error')`);
  const r = { ...m, format: json ? 'json' : 'cbor' } as DeviceResult;
  if (!json && m.output !== undefined) r.output = decodeTensor(m.output);
  return r;
}

/** Per-hop latency from the hop records of a result. */
export function hopLatencies(r: { sentAt: number; hops: Hop[] }): HopLatency[] {
  return r.hops.map((h, k) => {
    const prevSent = k === 0 ? r.sentAt : r.hops[k - 1].sentAt;
    const round = (x: number) => Math.round(x * 100) / 100;
    return {
      node: h.node,
      stage: h.stage,
      bytesIn: h.bytesIn,
      transferMs: round(h.recvAt - prevSent),
      waitMs: round(Math.max(0, h.sentAt - h.recvAt - h.decodeMs - h.computeMs - h.encodeMs)),
      decodeMs: round(h.decodeMs),
      computeMs: round(h.computeMs),
      encodeMs: round(h.encodeMs),
    };
  });
}

/** The k best scores with their labels (index as label where none are known). */
export function topK(scores: ArrayLike<number>, k: number, labels: string[] | null): TopScore[] {
  const idx = Array.from({ length: scores.length }, (_, i) => i).sort((a, b) => scores[b] - scores[a] || a - b);
  return idx.slice(0, k).map((i) => ({ label: labels?.[i] ?? String(i), index: i, score: scores[i] }));
}
