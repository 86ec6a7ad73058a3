/**
 * Stage weights on the node's disk, by the sha256 of the blob: a restarted
 * node (or one given a stage it had before) builds it without a transfer.
 * Files are written atomically and checked against their hash when read; the
 * newest `keep` blobs stay, older ones are removed.
 */
import { type FileHandle, mkdir, open, readdir, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../lib/core/errors.js';
import { log } from '../lib/core/log.js';
import type { WeightSink } from '../lib/model/weight-sink.js';

/** the cache reads a blob into a stage's weights this much at a time */
const READ_PIECE_BYTES = 1 << 20;
/** bytes written to a cache file between two flushes to disk */
const SYNC_BYTES = 8 << 20;

const SHA = /^[0-9a-f]{64}$/;

export class WeightCache {
  constructor(
    readonly dir: string,
    readonly keep = 8,
  ) {}

  private file(hash: string): string {
    if (!SHA.test(hash)) throw new Error(`not a sha256: ${hash}`);
    return join(this.dir, `${hash}.bin`);
  }

  /**
   * Read the blob with this hash into `sink` a piece at a time (no copy of it all is held), and check it: true
   * when it is there and matches (a damaged file is removed, and the sink must then be filled otherwise).
   */
  async readInto(hash: string, sink: WeightSink): Promise<boolean> {
    let fh: FileHandle;
    try {
      fh = await open(this.file(hash), 'r');
    } catch {
      return false;
    }
    try {
      if ((await fh.stat()).size !== sink.totalBytes) throw new Error('size');
      const piece = Buffer.allocUnsafe(Math.min(READ_PIECE_BYTES, sink.totalBytes));
      for (let at = 0; at < sink.totalBytes; ) {
        const { bytesRead } = await fh.read(piece, 0, Math.min(piece.byteLength, sink.totalBytes - at), at);
        if (bytesRead === 0) throw new Error('short');
        sink.write(at, piece.subarray(0, bytesRead));
        at += bytesRead;
      }
      if (sink.sha256() !== hash) throw new Error('hash');
      return true;
    } catch {
      log.warn(`weight cache: ${this.file(hash)} does not match its hash; removed`);
      await unlink(this.file(hash)).catch(() => undefined);
      return false;
    } finally {
      await fh.close();
    }
  }

  /** Whether a file of this hash and size is there (not read: `get` checks it when it is used). */
  async has(hash: string, size: number): Promise<boolean> {
    try {
      return (await stat(this.file(hash))).size === size;
    } catch {
      return false;
    }
  }

  /** Keep the blob with this hash: its bytes, or its pieces in order (each written before the next is taken). */
  async put(hash: string, blob: Uint8Array | Iterable<Uint8Array>): Promise<void> {
    try {
      await mkdir(this.dir, { recursive: true });
      const tmp = `${this.file(hash)}.${process.pid}.${Date.now()}.tmp`;
      const fh = await open(tmp, 'w');
      try {
        // written out every few MB: dirty pages count against a memory cgroup until they are written, and a node
        // whose stage nearly fills its limit was killed while the kernel still held its cache file's pages dirty
        let dirty = 0;
        for (const part of blob instanceof Uint8Array ? [blob] : blob) {
          for (let at = 0; at < part.byteLength; at += SYNC_BYTES) {
            const piece = part.subarray(at, Math.min(part.byteLength, at + SYNC_BYTES));
            await fh.write(piece);
            dirty += piece.byteLength;
            if (dirty >= SYNC_BYTES) {
              await fh.datasync();
              dirty = 0;
            }
          }
        }
        await fh.datasync();
      } finally {
        await fh.close();
      }
      await rename(tmp, this.file(hash));
      await this.prune();
    } catch (err) {
      log.warn(`weight cache: cannot write ${this.dir}: ${errorMessage(err)} (the node works without it)`);
    }
  }

  private async prune(): Promise<void> {
    const files = (await readdir(this.dir)).filter((f) => /^[0-9a-f]{64}\.bin$/.test(f));
    if (files.length <= this.keep) return;
    // nodes on one machine share the folder: a file another node's prune removed meanwhile is simply gone
    const dated = (await Promise.all(files.map(async (f) => ({ f, t: (await stat(join(this.dir, f)).catch(() => null))?.mtimeMs })))).filter((x): x is { f: string; t: number } => x.t !== undefined);
    dated.sort((a, b) => b.t - a.t);
    for (const { f } of dated.slice(this.keep)) await unlink(join(this.dir, f)).catch(() => undefined);
  }
}
