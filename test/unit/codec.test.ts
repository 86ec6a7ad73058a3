import assert from 'node:assert/strict';
import { test } from 'node:test';
import { crc32 } from 'node:zlib';
import { CodecError, EnvelopeError } from '../../lib/core/errors.js';
import { prng } from '../../lib/core/prng.js';
import {
  DTYPES,
  type DType,
  decodeActivation,
  decodeAssignment,
  decodeStatus,
  decodeTensor,
  decodeWeightChunk,
  encodeActivation,
  encodeCbor,
  encodeTensor,
  Lz4Gate,
  MISSES_BEFORE_SKIP,
  PROBE_EVERY,
  type RawTensor,
  ZFP_BITS,
  zfpAvailable,
} from '../../lib/protocol/index.js';

const bitEqual = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

function bytesOf(t: RawTensor): Buffer {
  return Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

function randomTensor(dtype: DType, shape: number[], seed: number, sparse = false): RawTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const Ctor = DTYPES[dtype];
  const data = new Ctor(n);
  const bytes = new Uint8Array(data.buffer);
  const rnd = prng(seed);
  for (let i = 0; i < bytes.length; i++) bytes[i] = sparse && rnd() < 0.6 ? 0 : Math.floor(rnd() * 256);
  if (dtype === 'bool') for (let i = 0; i < n; i++) data[i] = data[i] & 1;
  return { dtype, shape, data };
}

test('every dtype and shape round-trips bit-exactly through both codecs', () => {
  const shapes = [[], [0], [1], [7], [3, 0, 2], [2, 3, 4], [1, 16, 16, 8]];
  let seed = 1;
  for (const dtype of Object.keys(DTYPES) as DType[]) {
    for (const shape of shapes) {
      for (const codec of ['lz4', 'none'] as const) {
        for (const sparse of [false, true]) {
          const t = randomTensor(dtype, shape, seed++, sparse);
          const w = encodeTensor(t, { codec });
          const back = decodeTensor(w);
          assert.equal(back.dtype, dtype);
          assert.deepEqual(back.shape, shape);
          assert.ok(bytesOf(back).equals(bytesOf(t)), `${dtype} [${shape}] ${codec}`);
          if (codec === 'none') assert.equal(w.codec, 'none');
        }
      }
    }
  }
});

test('special float values (NaN payloads, -0, Infinity) survive bit-exactly', () => {
  const data = new Float32Array([NaN, -0, Infinity, -Infinity, 1e-45, 3.4e38, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  new Uint32Array(data.buffer)[0] = 0x7fc00123; // a NaN with a payload
  const back = decodeTensor(encodeTensor({ dtype: 'float32', shape: [20], data }));
  assert.ok(bytesOf(back).equals(Buffer.from(data.buffer)));
});

test('large tensors (> 16 MB) round-trip, compressible and not', () => {
  const n = 4.5e6; // 18 MB of float32
  const sparse = new Float32Array(n);
  for (let i = 0; i < n; i += 3) sparse[i] = i * 0.5;
  const w1 = encodeTensor({ dtype: 'float32', shape: [1, n], data: sparse });
  assert.equal(w1.codec, 'lz4');
  assert.ok(w1.data.byteLength < sparse.byteLength);
  assert.ok(bytesOf(decodeTensor(w1)).equals(Buffer.from(sparse.buffer)));
  const noisy = randomTensor('float32', [n], 99);
  const w2 = encodeTensor(noisy);
  assert.equal(w2.codec, 'none', 'incompressible data is sent as it is');
  assert.ok(bytesOf(decodeTensor(w2)).equals(bytesOf(noisy)));
});

test('corrupt, truncated, inconsistent or oversized tensors raise a typed error', () => {
  const t = randomTensor('float32', [64, 64], 5, true);
  const good = encodeTensor(t);
  assert.equal(good.codec, 'lz4');
  const cases: [string, unknown, string?][] = [
    ['truncated lz4', { ...good, data: good.data.subarray(0, good.data.byteLength >> 1) }],
    ['corrupt lz4', { ...good, data: Buffer.from(good.data).fill(0xff, 4, 40) }],
    ['size mismatch', { ...good, size: good.size - 4 }],
    ['shape mismatch', { ...good, shape: [64, 63] }],
    ['negative dim', { ...good, shape: [-1, 64] }],
    ['fractional dim', { ...good, shape: [1.5, 64] }],
    ['unknown dtype', { ...good, dtype: 'float128' }],
    ['unknown codec', { ...good, codec: 'zstd' }],
    ['data not bytes', { ...good, data: 'abc' }],
    ['not a map', [1, 2, 3]],
    ['null', null],
    ['bad crc', { ...good, crc: (good.crc + 1) >>> 0 }],
    ['raw length', { ...encodeTensor(t, { codec: 'none' }), data: new Uint8Array(10) }],
    ['oversized claim', { dtype: 'float32', shape: [1e6, 1e6], codec: 'lz4', size: 4e12, data: new Uint8Array(8) }, 'E_TOO_LARGE'],
    ['over limit', { ...good }, 'E_TOO_LARGE'],
  ];
  for (const [name, w, code] of cases) {
    assert.throws(
      () => decodeTensor(w, name === 'over limit' ? 1000 : undefined),
      (err: unknown) => err instanceof CodecError && err.code === (code ?? 'E_CODEC'),
      name,
    );
  }
});

test('envelopes: garbage, wrong version and bad fields are rejected with EnvelopeError', () => {
  const tensor = encodeTensor({ dtype: 'float32', shape: [1, 2], data: new Float32Array([1, 2]) });
  const act = { deployment: 'd1', frame: 'f1', device: 'cam', stage: 0, sentAt: 1, hops: [], tensor };
  const ok = decodeActivation(encodeActivation(act), 1 << 20);
  assert.equal(ok.frame, 'f1');
  const bad: [string, Buffer][] = [
    ['not cbor', Buffer.from([0x1c, 0xff, 0x00])],
    ['empty', Buffer.alloc(0)],
    ['not a map', encodeCbor([1, 2])],
    ['version 2', encodeCbor({ v: 2, kind: 'act', ...act })],
    ['wrong kind', encodeCbor({ v: 1, kind: 'assign', ...act })],
    ['missing frame', encodeCbor({ v: 1, kind: 'act', ...act, frame: undefined })],
    ['stage negative', encodeCbor({ v: 1, kind: 'act', ...act, stage: -1 })],
    ['hop not map', encodeCbor({ v: 1, kind: 'act', ...act, hops: [3] })],
    ['tensor missing', encodeCbor({ v: 1, kind: 'act', ...act, tensor: null })],
  ];
  for (const [name, buf] of bad) assert.throws(() => decodeActivation(buf, 1 << 20), EnvelopeError, name);
  assert.throws(
    () => decodeActivation(encodeActivation(act), 10),
    (e: unknown) => e instanceof EnvelopeError && e.code === 'E_TOO_LARGE',
  );
  assert.throws(() => decodeAssignment(encodeCbor({ v: 1, kind: 'assign' })), EnvelopeError);
  assert.throws(() => decodeWeightChunk(encodeCbor({ v: 1, kind: 'weights', deployment: 'd', index: 5, count: 2, data: Buffer.alloc(1) }), 1000), EnvelopeError);
  assert.throws(() => decodeStatus(Buffer.from('{"v":1,"node":"n1","state":"dancing"}')), EnvelopeError);
  assert.throws(() => decodeStatus(Buffer.from('nope')), EnvelopeError);
});

test('lossy precisions: float16 within half a unit in the last place, int8 within half a step per channel; int8 keeps constant channels exact', () => {
  const shape = [1, 6, 5, 4];
  const n = 120;
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = i % 4 === 3 ? 2.5 : Math.sin(i) * (1 + (i % 4) * 10); // channel 3 constant
  const f16 = encodeTensor({ dtype: 'float32', shape, data: x }, { precision: 'float16' });
  assert.deepEqual([f16.precision, f16.size, f16.dtype], ['float16', n * 2, 'float32']);
  const y16 = decodeTensor(f16).data as Float32Array;
  for (let i = 0; i < n; i++) assert.ok(Math.abs(y16[i] - x[i]) <= Math.abs(x[i]) * 2 ** -11 + 2 ** -25, `float16 value ${i}`);
  const i8 = encodeTensor({ dtype: 'float32', shape, data: x }, { precision: 'int8', codec: 'none' });
  assert.deepEqual([i8.precision, i8.size, i8.scale?.byteLength, i8.offset?.byteLength], ['int8', n, 16, 16]);
  const y8 = decodeTensor(i8).data as Float32Array;
  const range = [0, 1, 2, 3].map((c) => {
    const v = Array.from(x).filter((_, i) => i % 4 === c);
    return Math.max(...v) - Math.min(...v);
  });
  for (let i = 0; i < n; i++) assert.ok(Math.abs(y8[i] - x[i]) <= range[i % 4] / 254 / 2 + 1e-5, `int8 value ${i}: ${y8[i]} for ${x[i]}`);
  for (let i = 3; i < n; i += 4) assert.equal(y8[i], 2.5, 'a constant channel is exact');
  // lossless stays bit-exact, and the empty tensor survives every precision
  assert.ok(bitEqual(decodeTensor(encodeTensor({ dtype: 'float32', shape, data: x }, { precision: 'lossless' })).data as Float32Array, x));
  for (const precision of ['float16', 'int8'] as const) assert.equal(decodeTensor(encodeTensor({ dtype: 'float32', shape: [0, 3], data: new Float32Array(0) }, { precision })).data.length, 0);
  // a classifier's scores: one value per channel; int8 would be larger, so they travel lossless (bit-exact)
  const scores = new Float32Array(1000).map((_, i) => Math.cos(i) / 7);
  const w = encodeTensor({ dtype: 'float32', shape: [1, 1000], data: scores }, { precision: 'int8' });
  assert.equal(w.precision, undefined);
  assert.ok(bitEqual(decodeTensor(w).data as Float32Array, scores));
});

test('lossy precisions refuse what they cannot carry, and their decoders refuse bad fields with a CodecError', () => {
  const shape = [4, 3];
  const x = new Float32Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  assert.throws(
    () => encodeTensor({ dtype: 'float32', shape, data: new Float32Array([1, Number.NaN, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]) }, { precision: 'int8' }),
    /int8 precision carries finite values only/,
  );
  assert.throws(() => encodeTensor({ dtype: 'float32', shape, data: new Float32Array([1, Number.POSITIVE_INFINITY, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]) }, { precision: 'int8' }), CodecError);
  assert.throws(() => encodeTensor({ dtype: 'int32', shape: [2], data: new Int32Array([1, 2]) }, { precision: 'float16' }), /for float32 tensors/);
  const good = encodeTensor({ dtype: 'float32', shape, data: x }, { precision: 'int8', codec: 'none' });
  const f32 = (...v: number[]) => new Uint8Array(new Float32Array(v).buffer);
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ ...good, scale: f32(1, 1) }, /'scale' must hold 3 float32 values/],
    [{ ...good, scale: undefined }, /'scale' must hold/],
    [{ ...good, scale: f32(1, Number.NaN, 1) }, /scale of channel 1 is NaN/],
    [{ ...good, scale: f32(1, -1, 1) }, /scale of channel 1 is -1: it must be a finite number >= 0/],
    [{ ...good, offset: f32(0, Number.POSITIVE_INFINITY, 0) }, /offset of channel 1/],
    [{ ...good, precision: 'int4' }, /unknown tensor precision 'int4'/],
    [{ ...good, dtype: 'int32' }, /must have dtype float32/],
    [{ ...good, size: 48 }, /size field 48 does not match shape, dtype and precision \(12 bytes\)/],
  ];
  for (const [w, re] of bad)
    assert.throws(
      () => decodeTensor(w),
      (e: unknown) => e instanceof CodecError && re.test((e as Error).message),
      String(re),
    );
  const data = new Uint8Array(good.data);
  data[2] = 0x80; // -128
  assert.throws(() => decodeTensor({ ...good, data, crc: crc32(data) }), /value 2 is -128/);
});

test("zfp precision (DEFER's codec, the optional addon): an NHWC activation within 5% of its range at 12 bit planes; bad zfp fields refused with a CodecError", () => {
  const shape = [1, 8, 8, 16];
  const x = new Float32Array(8 * 8 * 16).map((_, i) => Math.max(0, Math.sin(i / 7) * 5));
  if (!zfpAvailable()) {
    assert.throws(() => encodeTensor({ dtype: 'float32', shape, data: x }, { precision: 'zfp' }), /precision zfp needs the ZFP addon.*libzfp-dev/);
    return;
  }
  const w = encodeTensor({ dtype: 'float32', shape, data: x }, { precision: 'zfp', codec: 'none' });
  assert.deepEqual([w.precision, w.zfpBits, w.dtype], ['zfp', ZFP_BITS, 'float32']);
  assert.ok(w.size < x.byteLength / 2, `${w.size} bytes for ${x.byteLength} of float32`);
  const y = decodeTensor(w).data as Float32Array;
  let err = 0;
  for (let i = 0; i < x.length; i++) err = Math.max(err, Math.abs(y[i] - x[i]));
  // fixed precision keeps 12 bit planes per 4x4x4 block after its decorrelating transform: within a few percent of the range (5)
  assert.ok(err > 0 && err < 0.05 * 5, `largest error ${err}`);
  assert.throws(() => encodeTensor({ dtype: 'float32', shape, data: new Float32Array(x).fill(Number.NaN, 3, 4) }, { precision: 'zfp' }), /zfp precision carries finite values only: value 3/);
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ ...w, zfpBits: 0 }, /needs zfpBits, an integer in \[1, 32\]/],
    [{ ...w, zfpBits: undefined }, /needs zfpBits/],
    [{ ...w, size: 10 ** 9 }, /not a plausible stream size/],
    [{ ...w, dtype: 'int32' }, /must have dtype float32/],
  ];
  for (const [t, re] of bad)
    assert.throws(
      () => decodeTensor(t),
      (e: unknown) => e instanceof CodecError && re.test((e as Error).message),
      String(re),
    );
  // a truncated stream (its CRC made to match): refused, not read past its end
  const cut = w.data.subarray(0, 16);
  assert.throws(
    () => decodeTensor({ ...w, data: cut, size: cut.byteLength, crc: crc32(cut) }),
    (e: unknown) => e instanceof CodecError && /zfp tensor/.test((e as Error).message),
  );
});

test('LZ4 gate: a stream of frames LZ4 does not shrink goes raw after a few attempts, with a probe now and then; one that shrinks opens it again; the bytes are the same either way', () => {
  const rnd = prng(5);
  const noise = (): RawTensor => ({ dtype: 'uint8', shape: [1, 64, 64, 3], data: Uint8Array.from({ length: 64 * 64 * 3 }, () => Math.floor(256 * rnd())) });
  const flat: RawTensor = { dtype: 'uint8', shape: [1, 64, 64, 3], data: new Uint8Array(64 * 64 * 3).fill(7) };
  const g = new Lz4Gate();
  const send = (t: RawTensor) => {
    const asked = g.codec('lz4');
    const w = encodeTensor(t, { codec: asked });
    g.record(asked, w);
    // lossless whichever codec went: the receiver gets the frame's bytes
    assert.ok(bytesOf(decodeTensor(w)).equals(bytesOf(t)));
    return { asked, sent: w.codec };
  };
  // noise: tried MISSES_BEFORE_SKIP times, then raw without a try, but every PROBE_EVERY-th frame is tried again
  const asked = Array.from({ length: MISSES_BEFORE_SKIP + 2 * PROBE_EVERY }, () => send(noise()).asked);
  assert.deepEqual(asked.slice(0, MISSES_BEFORE_SKIP), Array(MISSES_BEFORE_SKIP).fill('lz4'));
  const skipped = asked.slice(MISSES_BEFORE_SKIP);
  assert.deepEqual(
    skipped.flatMap((c, i) => (c === 'lz4' ? [i + 1] : [])),
    [PROBE_EVERY, 2 * PROBE_EVERY],
  );
  assert.ok(g.skipping);
  // frames that shrink: the next probe compresses, and from then on every frame is tried
  let probe = 0;
  while (send(flat).asked !== 'lz4') probe++;
  assert.ok(probe < PROBE_EVERY && !g.skipping);
  assert.deepEqual(send(flat), { asked: 'lz4', sent: 'lz4' });
  // a stream configured without LZ4 stays without; tensors too small to compress do not count as misses
  assert.equal(new Lz4Gate().codec('none'), 'none');
  const small = new Lz4Gate();
  for (let i = 0; i < 10; i++) small.record('lz4', encodeTensor({ dtype: 'uint8', shape: [8], data: new Uint8Array(8) }, { codec: 'lz4' }));
  assert.ok(!small.skipping);
});
