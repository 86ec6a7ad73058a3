/**
 * Where a node puts its stage's weights as they arrive, chunk by chunk, from the broker or its disk cache.
 * `EngineWeights` writes them straight into the engine's own tensors (wasm: its heap), one tensor per weight
 * allocated with the first chunk, so that the stage is built from those tensors and no copy of the weights is
 * ever held outside the engine. `BlobWeights` assembles one buffer (graph models, whose converter reads a
 * buffer; stages run on worker threads, each of which builds its own copy; engines whose memory cannot be
 * written in place). Both check the bytes against the manifest's sha256 the same way.
 */
import { createHash } from 'node:crypto';
import { DeferError } from '../core/errors.js';
import { bytesPerElement, elementCount, type WeightSpec } from '../protocol/index.js';
import { tf } from './engine.js';

const PIECE_BYTES = 1 << 20;

export interface WeightSink {
  readonly totalBytes: number;
  /** copy `data` to byte `at` of the stage's weights (the manifest's blob layout) */
  write(at: number, data: Uint8Array): void;
  /** sha256 of all the bytes, in order */
  sha256(): string;
  /** the bytes in order, in pieces of at most 1 MB; each piece is valid until the next is taken (one buffer is reused) */
  pieces(): Iterable<Uint8Array>;
  /** free what was allocated (a failed or replaced load) */
  dispose(): void;
}

/** One buffer, allocated with the first write. */
export class BlobWeights implements WeightSink {
  private buf: Buffer | undefined;
  private digest: string | undefined;
  /** `shared`: the bytes in a SharedArrayBuffer, for worker threads to read without a copy each */
  constructor(
    readonly totalBytes: number,
    private readonly shared = false,
  ) {}

  /** A sink around bytes already assembled. */
  static of(blob: Buffer): BlobWeights {
    const b = new BlobWeights(blob.byteLength);
    b.buf = blob;
    return b;
  }

  get blob(): Buffer {
    this.buf ??= this.shared ? Buffer.from(new SharedArrayBuffer(this.totalBytes)) : Buffer.allocUnsafe(this.totalBytes);
    return this.buf;
  }

  write(at: number, data: Uint8Array): void {
    this.digest = undefined;
    this.blob.set(data, at);
  }

  sha256(): string {
    this.digest ??= createHash('sha256').update(this.blob).digest('hex');
    return this.digest;
  }

  *pieces(): Iterable<Uint8Array> {
    for (let at = 0; at < this.totalBytes; at += PIECE_BYTES) yield this.blob.subarray(at, Math.min(this.totalBytes, at + PIECE_BYTES));
  }

  dispose(): void {
    this.buf = undefined;
  }
}

interface WasmBackend {
  write(values: null, shape: number[], dtype: string): object;
  dataIdMap: { get(id: object): { memoryOffset: number } | undefined };
  wasm: { HEAPU8: Uint8Array };
}

/** Each weight as a tensor of the wasm engine, written in place. */
export class EngineWeights implements WeightSink {
  readonly totalBytes: number;
  private tensors: tf.Tensor[] | undefined;
  private readonly ends: number[];
  private digest: string | undefined;

  private constructor(private readonly specs: WeightSpec[]) {
    this.totalBytes = specs.reduce((s, w) => s + w.bytes, 0);
    this.ends = specs.map((s) => s.offset + s.bytes);
  }

  /** An engine sink for these weights, or undefined where the engine or the layout does not allow one (then use a blob). */
  static tryFor(specs: WeightSpec[]): EngineWeights | undefined {
    if (tf.getBackend() !== 'wasm' || specs.length === 0) return undefined;
    let offset = 0;
    for (const s of specs) {
      const plain = (s.dtype === 'float32' || s.dtype === 'int32') && !s.quantization;
      if (!plain || s.offset !== offset || s.bytes !== elementCount(s.shape) * bytesPerElement(s.dtype)) return undefined;
      offset += s.bytes;
    }
    return new EngineWeights(specs);
  }

  private get backend(): WasmBackend {
    return tf.backend() as unknown as WasmBackend;
  }

  /** Allocated with the first write: an assignment alone costs no memory. */
  private allocated(): tf.Tensor[] {
    if (!this.tensors) {
      const b = this.backend;
      this.tensors = this.specs.map((s) => {
        const dtype = s.dtype === 'int32' ? 'int32' : 'float32';
        // as tf.tensor makes one, without values to copy: the chunks fill it
        return tf.engine().makeTensorFromDataId(b.write(null, s.shape, dtype), s.shape, dtype, b as never);
      });
    }
    return this.tensors;
  }

  /** The heap bytes of weight `i` (a fresh view: the heap's buffer changes when it grows). */
  private view(i: number): Uint8Array {
    const b = this.backend;
    const at = b.dataIdMap.get(this.allocated()[i].dataId)!.memoryOffset;
    return b.wasm.HEAPU8.subarray(at, at + this.specs[i].bytes);
  }

  write(at: number, data: Uint8Array): void {
    this.digest = undefined;
    if (at < 0 || at + data.byteLength > this.totalBytes) throw new DeferError('E_WEIGHTS', `bytes ${at}..${at + data.byteLength} lie outside the stage's ${this.totalBytes} bytes of weights`);
    // the first weight that ends after `at`
    let lo = 0;
    let hi = this.ends.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.ends[mid] > at) hi = mid;
      else lo = mid + 1;
    }
    let done = 0;
    for (let i = lo; done < data.byteLength; i++) {
      const s = this.specs[i];
      const from = at + done - s.offset;
      const n = Math.min(s.bytes - from, data.byteLength - done);
      this.view(i).set(data.subarray(done, done + n), from);
      done += n;
    }
  }

  sha256(): string {
    if (!this.digest) {
      const h = createHash('sha256');
      for (let i = 0; i < this.specs.length; i++) h.update(this.view(i));
      this.digest = h.digest('hex');
    }
    return this.digest;
  }

  *pieces(): Iterable<Uint8Array> {
    // copied out a piece at a time into one buffer: the heap's views go stale when it grows, and copies of
    // whole weights would pile up as garbage outside V8's heap
    const buf = Buffer.allocUnsafe(Math.min(PIECE_BYTES, this.totalBytes));
    for (let i = 0; i < this.specs.length; i++) {
      for (let from = 0; from < this.specs[i].bytes; from += buf.byteLength) {
        const v = this.view(i);
        const n = Math.min(buf.byteLength, v.byteLength - from);
        buf.set(v.subarray(from, from + n));
        yield buf.subarray(0, n);
      }
    }
  }

  /** The tensors, handed over (the caller owns them now). */
  take(): tf.Tensor[] {
    const t = this.allocated();
    this.tensors = undefined;
    return t;
  }

  dispose(): void {
    if (this.tensors) tf.dispose(this.tensors);
    this.tensors = undefined;
  }
}
