/**
 * A device's frame, as it arrives on defer/<pipeline>/frames/<device>: the
 * bytes of an image (JPEG, PNG, WebP, GIF), JSON `{shape, data, id?, reply?}`,
 * or a CBOR map `{image | tensor | shape + data, id?, reply?}`. Parsing is in two
 * steps: `parseFrame` here (cheap, on arrival: format, size, envelope), and
 * `frameTensor` in dispatcher/serving (on admission: image decoding and
 * preprocessing, shape check).
 * Every failure is a FrameError whose kind goes back to the device.
 */
import { decode as decodeCbor } from 'cbor-x';
import { errorMessage, FrameError } from '../core/errors.js';
import type { Reply } from './device-result.js';
import { encodeCbor } from './fields.js';
import { type DType, decodeTensor, elementCount, type RawTensor } from './tensor-codec.js';

export interface DeviceFrame {
  format: 'jpeg' | 'png' | 'webp' | 'gif' | 'json' | 'cbor';
  /** the device's own message id, echoed in its result */
  id?: string;
  /** the result format the frame asks for */
  reply?: Reply;
  image?: Uint8Array;
  tensor?: RawTensor;
  bytes: number;
}

const startsWith = (b: Uint8Array, sig: number[], at = 0) => b.length >= at + sig.length && sig.every((x, i) => b[at + i] === x);

function imageFormat(b: Uint8Array): DeviceFrame['format'] | null {
  if (startsWith(b, [0xff, 0xd8, 0xff])) return 'jpeg';
  if (startsWith(b, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'png';
  if (startsWith(b, [0x52, 0x49, 0x46, 0x46]) && startsWith(b, [0x57, 0x45, 0x42, 0x50], 8)) return 'webp';
  if (startsWith(b, [0x47, 0x49, 0x46, 0x38])) return 'gif';
  return null;
}

function envelopeFields(m: Record<string, unknown>, kind: 'bad-json' | 'bad-cbor'): { id?: string; reply?: Reply } {
  const out: { id?: string; reply?: Reply } = {};
  if (m.id !== undefined) {
    if ((typeof m.id !== 'string' && typeof m.id !== 'number') || String(m.id).length > 128) throw new FrameError(kind, "field 'id' must be a string or number of at most 128 characters");
    out.id = String(m.id);
  }
  if (m.reply !== undefined) {
    if (m.reply !== 'json' && m.reply !== 'cbor') throw new FrameError(kind, "field 'reply' must be 'json' or 'cbor'");
    out.reply = m.reply;
  }
  return out;
}

function plainTensor(m: Record<string, unknown>, kind: 'bad-json' | 'bad-cbor'): RawTensor {
  const { shape, data } = m;
  const dtype = (m.dtype ?? 'float32') as DType;
  if (dtype !== 'float32' && dtype !== 'int32') throw new FrameError('bad-tensor', `dtype '${String(m.dtype)}' is not supported: send float32 or int32`);
  if (!Array.isArray(shape) || shape.length === 0 || shape.length > 8 || !shape.every((d) => Number.isSafeInteger(d) && d > 0)) {
    throw new FrameError(kind, "field 'shape' must be an array of 1-8 positive integers");
  }
  const n = elementCount(shape as number[]);
  let values: ArrayLike<number>;
  if (Array.isArray(data)) values = data as number[];
  else if (data instanceof Float32Array || data instanceof Int32Array || data instanceof Float64Array) values = data;
  else if (data instanceof Uint8Array && kind === 'bad-cbor') {
    if (data.byteLength !== n * 4) throw new FrameError('bad-tensor', `data is ${data.byteLength} bytes; shape [${shape.join(',')}] of ${dtype} needs ${n * 4}`);
    const copy = new Uint8Array(data); // aligned
    values = dtype === 'int32' ? new Int32Array(copy.buffer) : new Float32Array(copy.buffer);
  } else throw new FrameError(kind, "field 'data' must be an array of numbers" + (kind === 'bad-cbor' ? ', a typed array, or the little-endian bytes' : ''));
  if (values.length !== n) throw new FrameError('bad-tensor', `data has ${values.length} values; shape [${shape.join(',')}] needs ${n}`);
  const out = dtype === 'int32' ? new Int32Array(n) : new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new FrameError('bad-tensor', `data[${i}] is not a finite number`);
    out[i] = v;
  }
  return { dtype, shape: shape as number[], data: out };
}

/** Recognise and unwrap a frame; no image decoding yet. */
export function parseFrame(payload: Uint8Array, maxBytes: number): DeviceFrame {
  const bytes = payload.byteLength;
  if (bytes > maxBytes) throw new FrameError('too-large', `frame of ${bytes} bytes is over the limit of ${maxBytes} (serve.maxFrameBytes)`);
  if (bytes === 0) throw new FrameError('unknown-format', 'empty frame');
  const img = imageFormat(payload);
  if (img) return { format: img, image: payload, bytes };
  let i = 0;
  while (i < payload.length && (payload[i] === 0x20 || payload[i] === 0x0a || payload[i] === 0x0d || payload[i] === 0x09)) i++;
  if (payload[i] === 0x7b) {
    let m: unknown;
    try {
      m = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
    } catch (err) {
      throw new FrameError('bad-json', `frame is not valid JSON: ${errorMessage(err)}`);
    }
    if (m === null || typeof m !== 'object' || Array.isArray(m)) throw new FrameError('bad-json', 'a JSON frame must be an object {shape, data}');
    const o = m as Record<string, unknown>;
    return { format: 'json', ...envelopeFields(o, 'bad-json'), tensor: plainTensor(o, 'bad-json'), bytes };
  }
  const major = payload[0] >> 5;
  if (major === 5) {
    let m: unknown;
    try {
      m = decodeCbor(payload);
    } catch (err) {
      throw new FrameError('bad-cbor', `frame is not valid CBOR: ${errorMessage(err)}`);
    }
    if (m === null || typeof m !== 'object' || Array.isArray(m) || m instanceof Uint8Array) throw new FrameError('bad-cbor', 'a CBOR frame must be a map');
    const o = m as Record<string, unknown>;
    if (o.image !== undefined) {
      if (!(o.image instanceof Uint8Array) || !imageFormat(o.image)) throw new FrameError('bad-cbor', "field 'image' must hold the bytes of a JPEG, PNG, WebP or GIF image");
      return { format: imageFormat(o.image)!, ...envelopeFields(o, 'bad-cbor'), image: o.image, bytes };
    }
    let tensor: RawTensor;
    if (o.tensor !== undefined) {
      try {
        tensor = decodeTensor(o.tensor, maxBytes * 4);
      } catch (err) {
        throw new FrameError('bad-tensor', `the frame's tensor: ${errorMessage(err)}`);
      }
    } else tensor = plainTensor(o, 'bad-cbor');
    return { format: 'cbor', ...envelopeFields(o, 'bad-cbor'), tensor, bytes };
  }
  throw new FrameError('unknown-format', 'frame is neither an image (JPEG, PNG, WebP, GIF), JSON {shape, data} nor a CBOR map');
}

/** A frame as a device sends it in CBOR: an image's bytes or a tensor, with an optional id and result format. */
export function encodeDeviceFrame(f: ({ image: Uint8Array } | { tensor: unknown }) & { id?: string; reply?: Reply }): Buffer {
  return encodeCbor(f, 'image' in f ? f.image.byteLength : 0);
}
