/**
 * Activations (CBOR), on stage/<k>/in and dispatcher/<id>/out: a frame's
 * tensor between stages, with the hops it has made. See docs/protocol.md.
 */
import { EnvelopeError } from '../core/errors.js';
import { arr, decodeMap, encodeCbor, int, num, obj, PROTOCOL_VERSION, str } from './fields.js';
import type { WireTensor } from './tensor-codec.js';

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
  /** frames the node computed together with this one in one engine call (absent: 1); computeMs is this frame's share */
  batch?: number;
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
  /** the tensor; absent when `image` carries the frame */
  tensor?: WireTensor;
  /**
   * Where each stage sends its output, when a stage has replicas: `route[k]` is the topic stage k publishes to
   * (a replica's input, or the dispatcher's results for the last stage); chosen by the dispatcher per frame.
   * Absent: each stage's assignment says (`outputTopic`).
   */
  route?: string[];
  /** stage 0 only, when its assignment has `inputImage`: the device's encoded image (JPEG, PNG, ...), for the node to decode */
  image?: Uint8Array;
}

export function encodeActivation(a: Omit<Activation, 'v' | 'kind'>): Buffer {
  return encodeCbor({ v: PROTOCOL_VERSION, kind: 'act', ...a }, a.tensor?.data.byteLength ?? a.image?.byteLength ?? 0);
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
      ...(o.batch === undefined ? {} : { batch: int(o, 'batch', H, 1, 64) }),
    };
  });
  if ((m.tensor === undefined) === (m.image === undefined)) throw new EnvelopeError(`${W}: must carry exactly one of tensor and image`);
  if (m.image !== undefined && !(m.image instanceof Uint8Array)) throw new EnvelopeError(`${W}: image must be a byte string`);
  if (m.image !== undefined && m.stage !== 0) throw new EnvelopeError(`${W}: only stage 0 takes an image`);
  const t = m.tensor === undefined ? undefined : obj(m.tensor, `${W}: tensor`);
  const route =
    m.route === undefined
      ? undefined
      : arr(m, 'route', W, 1024).map((x, i) => {
          if (typeof x !== 'string' || x.length === 0 || x.length > 1024) throw new EnvelopeError(`${W}: route entry ${i} must be a topic (a string of 1 to 1024 characters)`);
          return x;
        });
  return {
    v: 1,
    kind: 'act',
    deployment: str(m, 'deployment', W, 128),
    frame: str(m, 'frame', W, 128),
    device: str(m, 'device', W, 64),
    stage: int(m, 'stage', W, 0, 1024),
    sentAt: num(m, 'sentAt', W),
    hops,
    ...(route ? { route } : {}),
    ...(t ? { tensor: t as unknown as WireTensor } : { image: m.image as Uint8Array }),
  };
}
