/**
 * Whether a stream's next tensor is worth an LZ4 attempt. encodeTensor tries LZ4 on every tensor (a large one on a
 * sample first) and sends the raw bytes where it saves under 3%. A stream whose tensors are alike, as a camera's
 * frames are, need not pay that attempt on every frame: after MISSES_BEFORE_SKIP attempts in a row that did not
 * pay, the gate sends raw bytes without one and tries LZ4 again on every PROBE_EVERY-th tensor; one that pays opens
 * the gate again. Either way the bytes are lossless: only whether they are compressed changes.
 *
 * Why: 224 x 224 x 3 pixels of the 100 real photos (test data, resized) shrink by 3% or more under LZ4 for 42 of
 * them (median 0.988 of their size); the other frames each cost the dispatcher a whole attempt and an LZ4-sized
 * buffer. Measured on the Teachable Machine model's frames: docs/protocol.md, "Tensor".
 */
import { type Codec, MIN_COMPRESS_BYTES, type WireTensor } from './tensor-codec.js';

/** attempts in a row that did not pay before the gate skips LZ4 */
export const MISSES_BEFORE_SKIP = 4;
/** while skipping, every this many tensors are tried again */
export const PROBE_EVERY = 32;

export class Lz4Gate {
  private misses = 0;
  private skipped = 0;

  /** the codec to ask encodeTensor for, given the one configured */
  codec(configured: Codec): Codec {
    if (configured !== 'lz4' || this.misses < MISSES_BEFORE_SKIP) return configured;
    return ++this.skipped % PROBE_EVERY === 0 ? 'lz4' : 'none';
  }

  /** what encodeTensor made of a tensor it was asked to compress with `asked` */
  record(asked: Codec, sent: WireTensor): void {
    if (asked !== 'lz4' || sent.size < MIN_COMPRESS_BYTES) return;
    if (sent.codec === 'lz4') {
      this.misses = 0;
      this.skipped = 0;
    } else this.misses++;
  }

  /** is it skipping LZ4 now? */
  get skipping(): boolean {
    return this.misses >= MISSES_BEFORE_SKIP;
  }
}
