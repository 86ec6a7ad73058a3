/**
 * Tensor codec: a tensor as `{dtype, shape, codec, size, data}` where `data`
 * is the raw little-endian bytes, LZ4-block compressed (`codec: 'lz4'`) or as
 * they are (`codec: 'none'`, used for tiny or incompressible tensors).
 *
 * Lossless: decode(encode(t)) is bit-identical to t. Every field of an
 * incoming tensor is validated; anything wrong raises a CodecError.
 */
import { createRequire } from 'node:module';
import { endianness } from 'node:os';
import { crc32 } from 'node:zlib';
import { CodecError } from '../core/errors.js';

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
}

export interface EncodeOptions {
  /** 'lz4' (default) compresses unless it does not pay; 'none' never does. */
  codec?: Codec;
}

/** Tensors smaller than this many bytes are sent uncompressed. */
const MIN_COMPRESS_BYTES = 64;
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
  const raw = toLittleEndianBytes(t.data);
  const size = raw.byteLength;
  const crc = crc32(raw);
  if ((opts.codec ?? 'lz4') === 'lz4' && size >= MIN_COMPRESS_BYTES) {
    const out = Buffer.allocUnsafe(lz4.encodeBound(size));
    const n = lz4.encodeBlock(raw, out);
    if (n > 0 && n < size) {
      return { dtype: t.dtype, shape: [...t.shape], codec: 'lz4', size, crc, data: out.subarray(0, n) };
    }
  }
  return { dtype: t.dtype, shape: [...t.shape], codec: 'none', size, crc, data: raw };
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
  const { dtype, shape, codec, size, crc, data } = w as Record<string, unknown>;
  if (!isDType(dtype)) throw new CodecError(`unknown tensor dtype '${String(dtype)}'`);
  validateShape(shape);
  const width = bytesPerElement(dtype);
  const expected = elementCount(shape) * width;
  if (!Number.isSafeInteger(expected)) throw new CodecError(`tensor shape [${shape.join(',')}] is too large`);
  if (expected > maxBytes) {
    throw new CodecError(`tensor of shape [${shape.join(',')}] ${dtype} needs ${expected} bytes, over the limit of ${maxBytes}`, 'E_TOO_LARGE');
  }
  if (size !== expected) throw new CodecError(`tensor size field ${String(size)} does not match shape and dtype (${expected} bytes)`);
  if (!(data instanceof Uint8Array)) throw new CodecError('tensor data must be a byte string');

  // Copy into a fresh, aligned buffer: CBOR byte strings can sit at any offset.
  const out = new Uint8Array(expected);
  if (codec === 'none') {
    if (data.byteLength !== expected) throw new CodecError(`uncompressed tensor data is ${data.byteLength} bytes, expected ${expected}`);
    out.set(data);
  } else if (codec === 'lz4') {
    if (expected === 0) throw new CodecError('an empty tensor must use codec none');
    const n = lz4.decodeBlock(data, out);
    if (n !== expected) {
      throw new CodecError(n < 0 ? `corrupt LZ4 block (error at input byte ${-n})` : `LZ4 block decoded to ${n} bytes, expected ${expected}`);
    }
  } else {
    throw new CodecError(`unknown tensor codec '${String(codec)}': expected lz4 or none`);
  }
  if (crc !== crc32(out)) throw new CodecError(`tensor data does not match its CRC-32 (corrupt in transit)`);
  const bytes = LITTLE_ENDIAN_HOST || width === 1 ? out : swapBytes(out, width);
  const Ctor = DTYPES[dtype];
  return { dtype, shape: [...shape], data: new Ctor(bytes.buffer as ArrayBuffer, bytes.byteOffset, expected / width) as TypedArray };
}
