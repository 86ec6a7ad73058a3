/**
 * The envelope every CBOR message of the protocol shares, and the field
 * checks its decoders use: each decoder validates every field it returns and
 * throws EnvelopeError (E_TOO_LARGE when over its size limit) on anything else.
 */
import { Encoder } from 'cbor-x';
import { EnvelopeError } from '../core/errors.js';
import { isName } from './names.js';

export const PROTOCOL_VERSION = 1;

// useBuffer (the buffer the next message is written into) is cbor-x's, not in its type declarations
const cbor = new Encoder({ useRecords: false, tagUint8Array: false, mapsAsObjects: true }) as Encoder & { useBuffer(buffer: Uint8Array): void };

/** Messages carrying at least this many bytes of binary data are written into a buffer of their own. */
const OWN_BUFFER_BYTES = 64 * 1024;
/** Room in such a buffer for the rest of the message (its envelope, hops and names); more is grown into. */
const ENVELOPE_ROOM_BYTES = 16 * 1024;

/**
 * One message as CBOR. `payloadBytes`: the bytes of binary data the value carries (a tensor, a weight chunk, a
 * photo). cbor-x writes messages one after another into a buffer it shares among them, grown to 4x the largest
 * message, and each message it returns is a view that keeps that whole buffer alive (a 1.4 MB message was a view
 * of a 5.6 MB buffer; ResNet50's chains measured the same peaks either way: docs/memory.md). A message of 64 KB or more of payload is
 * therefore written into a buffer of its own, of its size plus room for the envelope, and the small messages
 * after it start a fresh small buffer (the last one may still be in use by messages not yet sent).
 */
export function encodeCbor(value: unknown, payloadBytes = 0): Buffer {
  if (payloadBytes < OWN_BUFFER_BYTES) return cbor.encode(value);
  cbor.useBuffer(Buffer.allocUnsafeSlow(payloadBytes + ENVELOPE_ROOM_BYTES));
  try {
    return cbor.encode(value);
  } finally {
    cbor.useBuffer(Buffer.allocUnsafeSlow(8192));
  }
}

export function decodeMap(buf: Uint8Array, maxBytes: number, what: string): Record<string, unknown> {
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

export function str(m: Record<string, unknown>, key: string, what: string, max = 256): string {
  const x = m[key];
  if (typeof x !== 'string' || x.length === 0 || x.length > max) throw new EnvelopeError(`${what}: field '${key}' must be a non-empty string of at most ${max} characters`);
  return x;
}
/** a name that is one topic level (node, pipeline, device) */
export function name(m: Record<string, unknown>, key: string, what: string): string {
  const x = str(m, key, what, 64);
  if (!isName(x)) throw new EnvelopeError(`${what}: field '${key}' must be made of letters, digits, _ . -`);
  return x;
}
export function int(m: Record<string, unknown>, key: string, what: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const x = m[key];
  if (typeof x !== 'number' || !Number.isInteger(x) || x < min || x > max) throw new EnvelopeError(`${what}: field '${key}' must be an integer in [${min}, ${max}]`);
  return x;
}
export function num(m: Record<string, unknown>, key: string, what: string): number {
  const x = m[key];
  if (typeof x !== 'number' || !Number.isFinite(x)) throw new EnvelopeError(`${what}: field '${key}' must be a finite number`);
  return x;
}
export function arr(m: Record<string, unknown>, key: string, what: string, max: number): unknown[] {
  const x = m[key];
  if (!Array.isArray(x) || x.length > max) throw new EnvelopeError(`${what}: field '${key}' must be an array of at most ${max} items`);
  return x;
}
export function obj(x: unknown, what: string): Record<string, unknown> {
  if (x === null || typeof x !== 'object' || Array.isArray(x) || x instanceof Uint8Array) throw new EnvelopeError(`${what} must be a map`);
  return x as Record<string, unknown>;
}
export function shapeOf(x: unknown, what: string): number[] {
  if (!Array.isArray(x) || x.length > 8 || !x.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new EnvelopeError(`${what} must be an array of at most 8 non-negative integers`);
  return x as number[];
}
export const SHA256 = /^[0-9a-f]{64}$/;

/** A JSON message (status, heartbeat, errors, metrics, device results): an object with this protocol version. */
export function decodeJsonObject(buf: Uint8Array, maxBytes: number, what: string): Record<string, unknown> {
  if (buf.byteLength > maxBytes) throw new EnvelopeError(`${what} of ${buf.byteLength} bytes is over the limit of ${maxBytes}`, 'E_TOO_LARGE');
  let m: Record<string, unknown>;
  try {
    m = obj(JSON.parse(Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString('utf8')), what);
  } catch (err) {
    throw err instanceof EnvelopeError ? err : new EnvelopeError(`${what} is not valid JSON`);
  }
  if (m.v !== PROTOCOL_VERSION) throw new EnvelopeError(`${what} has protocol version ${String(m.v)}; this build speaks version ${PROTOCOL_VERSION}`);
  return m;
}

export function encodeJson(value: object): Buffer {
  return Buffer.from(JSON.stringify({ v: PROTOCOL_VERSION, ...value }));
}
