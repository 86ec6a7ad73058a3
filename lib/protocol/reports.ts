/**
 * Reports (JSON) that any MQTT client can read: problems on errors (a node's
 * message it could not use, a publish the broker refused), and a serving
 * dispatcher's counters on metrics/<dispatcher> (retained). See docs/protocol.md.
 */
import { EnvelopeError, type FrameErrorKind } from '../core/errors.js';
import { decodeJsonObject, encodeJson, int, num, obj, str } from './fields.js';

// ---- errors ------------------------------------------------------------------------

export interface ErrorReport {
  v: 1;
  /** the node that could not use a message (absent when the broker reports) */
  node?: string;
  /** true: the broker refused a publish */
  broker?: true;
  /** the topic of the message the report is about */
  topic: string;
  reason: string;
  /** the frame (and its deployment) the report is about, when the node could read that far: the dispatcher fails that frame at once */
  deployment?: string;
  frame?: string;
  at: number;
}

export function encodeErrorReport(r: Omit<ErrorReport, 'v' | 'at'>): Buffer {
  return encodeJson({ ...r, at: Date.now() });
}

export function decodeErrorReport(buf: Uint8Array): ErrorReport {
  const W = 'error report';
  const m = decodeJsonObject(buf, 16 * 1024, W);
  if (m.node === undefined && m.broker !== true) throw new EnvelopeError(`${W}: names neither a node nor the broker`);
  return {
    v: 1,
    ...(m.node !== undefined ? { node: str(m, 'node', W, 64) } : { broker: true as const }),
    topic: str(m, 'topic', W, 1024),
    reason: str(m, 'reason', W, 8192),
    ...(m.frame === undefined ? {} : { frame: str(m, 'frame', W, 128), deployment: str(m, 'deployment', W, 128) }),
    at: num(m, 'at', W),
  };
}

// ---- serving metrics -----------------------------------------------------------------

export type Policy = 'latest' | 'queue' | 'reject';

export interface Counts {
  received: number;
  served: number;
  /** replaced by a newer frame (latest) or over the queue (queue) */
  dropped: number;
  /** answered busy (reject) or too-many-devices */
  rejected: number;
  /** could not be read: by reason */
  bad: number;
  /** the chain did not answer */
  failed: number;
}

export const COUNT_KEYS: readonly (keyof Counts)[] = ['received', 'served', 'dropped', 'rejected', 'bad', 'failed'];

export interface ServeMetrics extends Counts {
  v: 1;
  dispatcher: string;
  at: number;
  policy: Policy;
  badByKind: Partial<Record<FrameErrorKind, number>>;
  inFlight: number;
  waiting: number;
  devices: number;
  perDevice: Record<string, Counts & { waiting: number }>;
}

export function encodeMetrics(m: Omit<ServeMetrics, 'v'>): Buffer {
  return encodeJson(m);
}

export function decodeMetrics(buf: Uint8Array): ServeMetrics {
  const W = 'serving metrics';
  const m = decodeJsonObject(buf, 1024 * 1024, W);
  str(m, 'dispatcher', W, 64);
  num(m, 'at', W);
  if (m.policy !== 'latest' && m.policy !== 'queue' && m.policy !== 'reject') throw new EnvelopeError(`${W}: unknown policy '${String(m.policy)}'`);
  for (const k of [...COUNT_KEYS, 'inFlight', 'waiting', 'devices']) int(m, k, W);
  obj(m.badByKind, `${W}: badByKind`);
  const per = obj(m.perDevice, `${W}: perDevice`);
  for (const [d, c] of Object.entries(per)) for (const k of [...COUNT_KEYS, 'waiting']) int(obj(c, `${W}: perDevice.${d}`), k, `${W}: perDevice.${d}`);
  return m as unknown as ServeMetrics;
}
