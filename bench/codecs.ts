/**
 * Payload per inference by codec, on real ResNet50 activations at the cuts a
 * pipeline uses: DEFER's JSON lists of numbers, our CBOR envelope raw and
 * with LZ4 (the default), byte-shuffled float32 + LZ4, and the pipeline's lossy
 * precisions (float16, int8 per channel) + LZ4, and float16 byte-shuffled. Bytes,
 * encode and decode MB/s (of the float32 tensor), and for lossy codecs the
 * model's output difference and top-1 agreement against the lossless run
 * (the rest of the model run on the decoded activation).
 */
import { createRequire } from 'node:module';
import { round } from '../lib/core/stats.js';
import { tf } from '../lib/model/engine.js';
import type { FlatModel, StageModel } from '../lib/model/flat-model.js';
import { buildStageModel } from '../lib/model/stage-model.js';
import { fromHalf, toHalf } from '../lib/protocol/float16.js';
import { decodeActivation, decodeTensor, encodeActivation, encodeTensor } from '../lib/protocol/index.js';

const require = createRequire(import.meta.url);
const lz4 = require('lz4') as { encodeBound(n: number): number; encodeBlock(s: Uint8Array, d: Uint8Array): number; decodeBlock(s: Uint8Array, d: Uint8Array): number };

export interface CodecRow {
  cut: string;
  shape: number[];
  codec: string;
  lossy: boolean;
  bytes: number;
  /** how many times smaller than DEFER's JSON */
  vsJson: number;
  /** how many times smaller than the raw float32 bytes */
  vsRaw: number;
  encodeMBps: number;
  decodeMBps: number;
  /** lossy only: largest |output - lossless output| over the frames */
  maxOutputDiff: number | null;
  /** lossy only: share of frames whose top-1 class is the lossless one */
  top1Agreement: number | null;
}

export interface Codec {
  name: string;
  lossy: boolean;
  encode(x: Float32Array, shape: number[]): Uint8Array;
  decode(b: Uint8Array, n: number): Float32Array;
}

function lz4Pack(raw: Uint8Array): Uint8Array {
  const out = Buffer.allocUnsafe(lz4.encodeBound(raw.byteLength));
  const n = lz4.encodeBlock(raw, out);
  return n > 0 ? out.subarray(0, n) : raw;
}
function lz4Unpack(b: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size);
  const n = lz4.decodeBlock(b, out);
  if (n !== size) throw new Error(`lz4: ${n} of ${size} bytes`);
  return out;
}
/** Group byte k of every element together: similar bytes (exponents, high bytes) then sit side by side. */
function shuffle(bytes: Uint8Array, width: number): Uint8Array {
  const n = bytes.length / width;
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < n; i++) for (let k = 0; k < width; k++) out[k * n + i] = bytes[i * width + k];
  return out;
}
function unshuffle(bytes: Uint8Array, width: number): Uint8Array {
  const n = bytes.length / width;
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < n; i++) for (let k = 0; k < width; k++) out[i * width + k] = bytes[k * n + i];
  return out;
}

const bytesOf = (x: Float32Array | Uint16Array | Int8Array) => new Uint8Array(x.buffer, x.byteOffset, x.byteLength);

/** float16 with its bytes shuffled (high bytes together) before LZ4: an experiment, not in the pipeline. */
function f16Codec(shuffled: boolean): Codec {
  return {
    name: shuffled ? 'float16 + shuffle + LZ4' : 'float16 + LZ4',
    lossy: true,
    encode(x) {
      const h = new Uint16Array(x.length);
      for (let i = 0; i < x.length; i++) h[i] = toHalf(x[i]);
      return lz4Pack(shuffled ? shuffle(bytesOf(h), 2) : bytesOf(h));
    },
    decode(b, n) {
      let raw = lz4Unpack(b, n * 2);
      if (shuffled) raw = unshuffle(raw, 2);
      const h = new Uint16Array(raw.buffer, raw.byteOffset, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = fromHalf(h[i]);
      return out;
    },
  };
}

const envelope = (_shape: number[], tensor: ReturnType<typeof encodeTensor>) => encodeActivation({ deployment: 'bench', frame: 'f', device: 'd', stage: 1, sentAt: 0, hops: [], tensor });

const CODECS: Codec[] = [
  {
    name: 'JSON list (DEFER)',
    lossy: false,
    encode: (x, shape) => Buffer.from(JSON.stringify({ shape, data: Array.from(x) })),
    decode: (b) => Float32Array.from((JSON.parse(Buffer.from(b).toString('utf8')) as { data: number[] }).data),
  },
  {
    name: 'CBOR, raw float32',
    lossy: false,
    encode: (x, shape) => envelope(shape, encodeTensor({ dtype: 'float32', shape, data: x }, { codec: 'none' })),
    decode: (b) => decodeTensor(decodeActivation(b, 1 << 30).tensor, 1 << 30).data as Float32Array,
  },
  {
    name: 'CBOR + LZ4 (default)',
    lossy: false,
    encode: (x, shape) => envelope(shape, encodeTensor({ dtype: 'float32', shape, data: x }, { codec: 'lz4' })),
    decode: (b) => decodeTensor(decodeActivation(b, 1 << 30).tensor, 1 << 30).data as Float32Array,
  },
  {
    name: 'float32 + shuffle + LZ4',
    lossy: false,
    encode: (x) => lz4Pack(shuffle(bytesOf(x), 4)),
    decode: (b, n) => {
      const raw = unshuffle(lz4Unpack(b, n * 4), 4);
      return new Float32Array(raw.buffer, raw.byteOffset, n);
    },
  },
  {
    name: 'float16 + LZ4 (pipeline: --precision float16)',
    lossy: true,
    encode: (x, shape) => envelope(shape, encodeTensor({ dtype: 'float32', shape, data: x }, { precision: 'float16' })),
    decode: (b) => decodeTensor(decodeActivation(b, 1 << 30).tensor, 1 << 30).data as Float32Array,
  },
  f16Codec(true),
  {
    name: 'int8 per channel + LZ4 (pipeline: --precision int8)',
    lossy: true,
    encode: (x, shape) => envelope(shape, encodeTensor({ dtype: 'float32', shape, data: x }, { precision: 'int8' })),
    decode: (b) => decodeTensor(decodeActivation(b, 1 << 30).tensor, 1 << 30).data as Float32Array,
  },
];

function timeIt(reps: number, f: () => void): number {
  f(); // warm-up
  const t0 = performance.now();
  for (let r = 0; r < reps; r++) f();
  return (performance.now() - t0) / reps;
}

/** Rows for each cut and codec; lossy quality from `frames` random frames through the rest of the model. */
export async function codecBench(flat: FlatModel, cuts: string[], frames: number, reps: number, extra: Codec[] = []): Promise<CodecRow[]> {
  const rows: CodecRow[] = [];
  const plans = flat.spans(cuts);
  const stages: StageModel[] = [];
  for (const p of plans) {
    const { specs, blob } = flat.stageWeights(p);
    stages.push(await buildStageModel(flat.format, flat.stageTopology(p), specs, blob));
  }
  const run = async (from: number, x: tf.Tensor): Promise<Float32Array> => {
    let t = x;
    for (let k = from; k < stages.length; k++) {
      const y = stages[k].run(t);
      if (t !== x) t.dispose();
      t = y;
    }
    const out = (await t.data()) as Float32Array;
    if (t !== x) t.dispose();
    return out;
  };
  try {
    // the activations at every cut, for every frame
    const acts: { data: Float32Array; shape: number[] }[][] = cuts.map(() => []);
    const lossless: Float32Array[] = [];
    for (let f = 0; f < frames; f++) {
      let x: tf.Tensor = tf.randomUniform([1, ...flat.inputShape], 0, 1, 'float32', 100 + f);
      for (let k = 0; k < stages.length; k++) {
        const y = stages[k].run(x);
        x.dispose();
        x = y;
        if (k < cuts.length) acts[k].push({ data: (await y.data()) as Float32Array, shape: [...y.shape] });
      }
      lossless.push((await x.data()) as Float32Array);
      x.dispose();
    }
    for (let c = 0; c < cuts.length; c++) {
      const { data, shape } = acts[c][0];
      const rawBytes = data.byteLength;
      let jsonBytes = 0;
      for (const codec of [...CODECS, ...extra]) {
        const enc = codec.encode(data, shape);
        const encMs = timeIt(reps, () => codec.encode(data, shape));
        const decMs = timeIt(reps, () => codec.decode(enc, data.length));
        if (codec.name.startsWith('JSON')) jsonBytes = enc.byteLength;
        let maxDiff: number | null = null;
        let agree: number | null = null;
        if (codec.lossy) {
          maxDiff = 0;
          let same = 0;
          for (let f = 0; f < frames; f++) {
            const a = acts[c][f];
            const back = codec.decode(codec.encode(a.data, a.shape), a.data.length);
            const x = tf.tensor(back, a.shape);
            const out = await run(c + 1, x);
            x.dispose();
            const ref = lossless[f];
            for (let i = 0; i < out.length; i++) maxDiff = Math.max(maxDiff, Math.abs(out[i] - ref[i]));
            if (out.indexOf(Math.max(...out)) === ref.indexOf(Math.max(...ref))) same++;
          }
          agree = same / frames;
        }
        rows.push({
          cut: cuts[c],
          shape: shape.slice(1),
          codec: codec.name,
          lossy: codec.lossy,
          bytes: enc.byteLength,
          vsJson: round(jsonBytes / enc.byteLength, 2),
          vsRaw: round(rawBytes / enc.byteLength, 2),
          encodeMBps: round(rawBytes / 1e6 / (encMs / 1000), 0),
          decodeMBps: round(rawBytes / 1e6 / (decMs / 1000), 0),
          maxOutputDiff: maxDiff === null ? null : Number(maxDiff.toPrecision(3)),
          top1Agreement: agree,
        });
      }
    }
  } finally {
    for (const s of stages) s.dispose();
  }
  return rows;
}
