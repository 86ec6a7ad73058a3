/**
 * Tensor codec: a tensor as `{dtype, shape, codec, size, crc, data}` where
 * `data` is the raw little-endian bytes, LZ4-block compressed (`codec: 'lz4'`)
 * or as they are (`codec: 'none'`, used for tiny or incompressible tensors).
 *
 * Lossless by default: decode(encode(t)) is bit-identical to t. A float32
 * tensor may be sent with less precision (`precision`): `float16` (IEEE half
 * values), or `int8` (affine, one scale and offset per channel of the last
 * axis: x ~ offset + scale * q, q in [-127, 127]); the receiver gets float32
 * back. Every field of an incoming tensor is validated; anything wrong raises
 * a CodecError. The exact layout: docs/protocol.md#tensor.
 */
import { createRequire } from 'node:module';
import { endianness } from 'node:os';
import { crc32 } from 'node:zlib';
import { CodecError } from '../core/errors.js';
import { fromHalf, toHalf } from './float16.js';
import { ZFP_BITS, zfpCompress, zfpDecompress } from './zfp.js';

const require = createRequire(import.meta.url);
const lz4 = require('lz4') as {
  encodeBound(n: number): number;
  encodeBlock(src: Uint8Array, dst: Uint8Array): number;
  decodeBlock(src: Uint8Array, dst: Uint8Array): number;
};

export const DTYPES = {
  float32: Float32Array,
  float64: Float64Array,
  int32: Int32Array,
  int16: Int16Array,
  int8: Int8Array,
  uint8: Uint8Array,
  uint16: Uint16Array,
  uint32: Uint32Array,
  bool: Uint8Array,
} as const;
export type DType = keyof typeof DTYPES;
export type TypedArray = Float32Array | Float64Array | Int32Array | Int16Array | Int8Array | Uint8Array | Uint16Array | Uint32Array;
export type Codec = 'lz4' | 'none';
/**
 * How precisely a float32 activation travels: as it is, as IEEE half floats, as int8 with a scale and offset per
 * channel, or as ZFP (DEFER's codec, fixed precision; only where the optional ZFP addon is built: lib/protocol/zfp.ts).
 */
export type Precision = 'lossless' | 'float16' | 'int8' | 'zfp';
export const PRECISIONS: readonly Precision[] = ['lossless', 'float16', 'int8', 'zfp'];

export interface RawTensor {
  dtype: DType;
  shape: number[];
  data: TypedArray;
}

/** The tensor as it travels inside a CBOR envelope. */
export interface WireTensor {
  dtype: DType;
  shape: number[];
  codec: Codec;
  /** byte length of the raw (uncompressed) data */
  size: number;
  /** CRC-32 of the raw little-endian bytes: LZ4 blocks carry no checksum of their own */
  crc: number;
  data: Uint8Array;
  /** absent: the data is `dtype` as it is; float16, int8 or zfp: the float32 values with less precision (size and crc are of those bytes: for zfp, its stream) */
  precision?: 'float16' | 'int8' | 'zfp';
  /** zfp: bit planes kept per value (its fixed-precision parameter) */
  zfpBits?: number;
  /** int8: one float32 (little-endian) per channel of the last axis */
  scale?: Uint8Array;
  offset?: Uint8Array;
}

export interface EncodeOptions {
  /** 'lz4' (default) compresses unless it does not pay; 'none' never does. */
  codec?: Codec;
  /** 'lossless' (default), or less precision for a float32 tensor */
  precision?: Precision;
}

/** Tensors smaller than this many bytes are sent uncompressed. */
export const MIN_COMPRESS_BYTES = 64;
/**
 * LZ4 must save this share of the bytes, else the tensor goes uncompressed. A 600 KB frame of random float32
 * values did not shrink at all, yet its compression attempt cost 2.3 ms per frame; the 64 KB sample that now
 * decides costs about 0.25 ms (measured, 2026-11-27). Activations with zeros (ReLU) and decoded photos compress
 * well and still go as LZ4.
 */
const LZ4_MIN_SAVING = 0.03;
/** Tensors this large are first tried on a sample from their middle: incompressible ones then cost no full compression. */
const LZ4_SAMPLE_BYTES = 64 * 1024;

/** Does LZ4 save at least LZ4_MIN_SAVING on a sample of `raw` (large tensors only; small ones are simply tried)? */
function lz4Pays(raw: Uint8Array): boolean {
  if (raw.byteLength < 4 * LZ4_SAMPLE_BYTES) return true;
  const at = Math.floor((raw.byteLength - LZ4_SAMPLE_BYTES) / 2);
  const sample = raw.subarray(at, at + LZ4_SAMPLE_BYTES);
  const out = Buffer.allocUnsafe(lz4.encodeBound(LZ4_SAMPLE_BYTES));
  const n = lz4.encodeBlock(sample, out);
  return n > 0 && n < LZ4_SAMPLE_BYTES * (1 - LZ4_MIN_SAVING);
}
const LITTLE_ENDIAN_HOST = endianness() === 'LE';
export const DEFAULT_MAX_TENSOR_BYTES = 256 * 1024 * 1024;

export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && Object.hasOwn(DTYPES, x);
}

export function bytesPerElement(dtype: DType): number {
  return DTYPES[dtype].BYTES_PER_ELEMENT;
}

export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function toLittleEndianBytes(data: TypedArray): Uint8Array {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (LITTLE_ENDIAN_HOST || data.BYTES_PER_ELEMENT === 1) return bytes;
  return swapBytes(bytes, data.BYTES_PER_ELEMENT);
}

function swapBytes(bytes: Uint8Array, width: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i += width) {
    for (let j = 0; j < width; j++) out[i + j] = bytes[i + width - 1 - j];
  }
  return out;
}

export function encodeTensor(t: RawTensor, opts: EncodeOptions = {}): WireTensor {
  if (!isDType(t.dtype)) throw new CodecError(`cannot encode dtype '${String(t.dtype)}': supported are ${Object.keys(DTYPES).join(', ')}`);
  validateShape(t.shape);
  if (elementCount(t.shape) !== t.data.length) {
    throw new CodecError(`shape [${t.shape.join(',')}] holds ${elementCount(t.shape)} elements but the data has ${t.data.length}`);
  }
  // int8 with fewer than 4 values per channel would be larger than the float32 it replaces (8 bytes of scale and
  // offset per channel): such a tensor (a classifier's scores, say) travels lossless
  const tooFewPerChannel = opts.precision === 'int8' && t.data.length < 4 * channelsOf(t.shape);
  const precision = tooFewPerChannel || (opts.precision === 'zfp' && t.data.length === 0) ? 'lossless' : (opts.precision ?? 'lossless');
  if (precision !== 'lossless' && t.dtype !== 'float32') throw new CodecError(`precision ${precision} is for float32 tensors, not ${t.dtype}`);
  const lossy =
    precision === 'float16'
      ? { precision, raw: toFloat16Bytes(t.data as Float32Array) }
      : precision === 'int8'
        ? { precision, ...toInt8(t.data as Float32Array, t.shape) }
        : precision === 'zfp'
          ? { precision, raw: zfpCompress(t.data as Float32Array, t.shape), zfpBits: ZFP_BITS }
          : null;
  const raw = lossy ? lossy.raw : toLittleEndianBytes(t.data);
  const extra = lossy ? { precision: lossy.precision, ...('scale' in lossy ? { scale: lossy.scale, offset: lossy.offset } : {}), ...('zfpBits' in lossy ? { zfpBits: lossy.zfpBits } : {}) } : {};
  const size = raw.byteLength;
  const crc = crc32(raw);
  if ((opts.codec ?? 'lz4') === 'lz4' && size >= MIN_COMPRESS_BYTES && lz4Pays(raw)) {
    const out = Buffer.allocUnsafe(lz4.encodeBound(size));
    const n = lz4.encodeBlock(raw, out);
    if (n > 0 && n < size * (1 - LZ4_MIN_SAVING)) {
      return { dtype: t.dtype, shape: [...t.shape], codec: 'lz4', size, crc, data: out.subarray(0, n), ...extra };
    }
  }
  return { dtype: t.dtype, shape: [...t.shape], codec: 'none', size, crc, data: raw, ...extra };
}

function toFloat16Bytes(x: Float32Array): Uint8Array {
  const out = new Uint8Array(x.length * 2);
  for (let i = 0; i < x.length; i++) {
    const h = toHalf(x[i]);
    out[2 * i] = h & 0xff;
    out[2 * i + 1] = h >> 8;
  }
  return out;
}

/** Channels of the last axis (1 for a scalar). */
const channelsOf = (shape: readonly number[]) => (shape.length ? shape[shape.length - 1] : 1);

function float32Bytes(values: Float32Array): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat32(4 * i, values[i], true);
  return out;
}

/** Affine int8 per channel of the last axis: offset = (min + max) / 2, scale = (max - min) / 254. */
function toInt8(x: Float32Array, shape: readonly number[]): { raw: Uint8Array; scale: Uint8Array; offset: Uint8Array } {
  const c = channelsOf(shape);
  const min = new Float32Array(c).fill(Number.POSITIVE_INFINITY);
  const max = new Float32Array(c).fill(Number.NEGATIVE_INFINITY);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    if (!Number.isFinite(v)) throw new CodecError(`value ${i} is ${v}: int8 precision carries finite values only (send this hop lossless or float16)`);
    const k = i % c;
    if (v < min[k]) min[k] = v;
    if (v > max[k]) max[k] = v;
  }
  const scale = new Float32Array(c);
  const offset = new Float32Array(c);
  for (let k = 0; k < c; k++) {
    if (min[k] > max[k]) continue; // an empty tensor
    offset[k] = (min[k] + max[k]) / 2;
    scale[k] = (max[k] - min[k]) / 254;
  }
  const q = new Uint8Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const k = i % c;
    const v = scale[k] > 0 ? Math.round((x[i] - offset[k]) / scale[k]) : 0;
    q[i] = Math.max(-127, Math.min(127, v)) & 0xff;
  }
  return { raw: q, scale: float32Bytes(scale), offset: float32Bytes(offset) };
}

/** The per-channel float32 array of an int8 tensor's `scale` or `offset`, checked. */
function channelFloats(x: unknown, field: string, c: number): Float32Array {
  if (!(x instanceof Uint8Array) || x.byteLength !== c * 4) throw new CodecError(`int8 tensor: '${field}' must hold ${c} float32 values (${c * 4} bytes), one per channel of the last axis`);
  const view = new DataView(x.buffer, x.byteOffset, x.byteLength);
  const out = new Float32Array(c);
  for (let k = 0; k < c; k++) {
    out[k] = view.getFloat32(4 * k, true);
    if (!Number.isFinite(out[k]) || (field === 'scale' && out[k] < 0))
      throw new CodecError(`int8 tensor: ${field} of channel ${k} is ${out[k]}: it must be a finite number${field === 'scale' ? ' >= 0' : ''}`);
  }
  return out;
}

function validateShape(shape: unknown): asserts shape is number[] {
  if (!Array.isArray(shape)) throw new CodecError(`tensor shape must be an array, got ${typeof shape}`);
  if (shape.length > 8) throw new CodecError(`tensor rank ${shape.length} is over the limit of 8`);
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw new CodecError(`tensor shape [${shape.join(',')}] has a dimension that is not a non-negative integer`);
    }
  }
}

/**
 * Decode and validate a tensor that came off the wire. `maxBytes` bounds the
 * decompressed size, so a small message cannot claim a huge allocation.
 */
export function decodeTensor(w: unknown, maxBytes = DEFAULT_MAX_TENSOR_BYTES): RawTensor {
  if (w === null || typeof w !== 'object' || Array.isArray(w)) throw new CodecError('tensor must be a map');
  const { dtype, shape, codec, size, crc, data, precision, scale, offset, zfpBits } = w as Record<string, unknown>;
  if (!isDType(dtype)) throw new CodecError(`unknown tensor dtype '${String(dtype)}'`);
  validateShape(shape);
  if (precision !== undefined && precision !== 'float16' && precision !== 'int8' && precision !== 'zfp')
    throw new CodecError(`unknown tensor precision '${String(precision)}': expected float16, int8 or zfp (or none)`);
  if (precision !== undefined && dtype !== 'float32') throw new CodecError(`a ${precision} tensor must have dtype float32, not ${dtype}`);
  if (precision === 'zfp' && !(Number.isInteger(zfpBits) && (zfpBits as number) >= 1 && (zfpBits as number) <= 32))
    throw new CodecError(`a zfp tensor needs zfpBits, an integer in [1, 32], not ${String(zfpBits)}`);
  const n = elementCount(shape);
  const width = precision === 'float16' ? 2 : precision === 'int8' ? 1 : bytesPerElement(dtype);
  // a zfp stream's size is its own: bounded by the raw float32 bytes and ZFP's per-block overhead
  if (precision === 'zfp' && !(Number.isInteger(size) && (size as number) <= n * 4 * 2 + 4096))
    throw new CodecError(`zfp tensor size field ${String(size)} is not a plausible stream size for ${n} values`);
  const expected = precision === 'zfp' ? (size as number) : n * width;
  if (!Number.isSafeInteger(expected) || !Number.isSafeInteger(n * 4)) throw new CodecError(`tensor shape [${shape.join(',')}] is too large`);
  if (n * bytesPerElement(dtype) > maxBytes) {
    throw new CodecError(`tensor of shape [${shape.join(',')}] ${dtype} needs ${n * bytesPerElement(dtype)} bytes, over the limit of ${maxBytes}`, 'E_TOO_LARGE');
  }
  if (size !== expected) throw new CodecError(`tensor size field ${String(size)} does not match shape, dtype and precision (${expected} bytes)`);
  if (!(data instanceof Uint8Array)) throw new CodecError('tensor data must be a byte string');
  // int8: the scale and offset first, so that a tensor with bad ones costs no decompression
  const c = channelsOf(shape);
  const affine = precision === 'int8' ? { scale: channelFloats(scale, 'scale', c), offset: channelFloats(offset, 'offset', c) } : null;

  // Copy into a fresh, aligned buffer: CBOR byte strings can sit at any offset.
  const out = new Uint8Array(expected);
  if (codec === 'none') {
    if (data.byteLength !== expected) throw new CodecError(`uncompressed tensor data is ${data.byteLength} bytes, expected ${expected}`);
    out.set(data);
  } else if (codec === 'lz4') {
    if (expected === 0) throw new CodecError('an empty tensor must use codec none');
    const got = lz4.decodeBlock(data, out);
    if (got !== expected) {
      throw new CodecError(got < 0 ? `corrupt LZ4 block (error at input byte ${-got})` : `LZ4 block decoded to ${got} bytes, expected ${expected}`);
    }
  } else {
    throw new CodecError(`unknown tensor codec '${String(codec)}': expected lz4 or none`);
  }
  if (crc !== crc32(out)) throw new CodecError(`tensor data does not match its CRC-32 (corrupt in transit)`);
  if (precision === 'zfp') return { dtype: 'float32', shape: [...shape], data: zfpDecompress(out, shape, n, zfpBits as number) };
  if (precision === 'float16') {
    const f = new Float32Array(n);
    for (let i = 0; i < n; i++) f[i] = fromHalf(out[2 * i] | (out[2 * i + 1] << 8));
    return { dtype: 'float32', shape: [...shape], data: f };
  }
  if (affine) {
    const q = new Int8Array(out.buffer, out.byteOffset, n);
    const f = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      if (q[i] === -128) throw new CodecError(`int8 tensor: value ${i} is -128, outside [-127, 127]`);
      const k = i % c;
      f[i] = affine.offset[k] + affine.scale[k] * q[i];
    }
    return { dtype: 'float32', shape: [...shape], data: f };
  }
  const bytes = LITTLE_ENDIAN_HOST || width === 1 ? out : swapBytes(out, width);
  const Ctor = DTYPES[dtype];
  return { dtype, shape: [...shape], data: new Ctor(bytes.buffer as ArrayBuffer, bytes.byteOffset, expected / width) as TypedArray };
}
