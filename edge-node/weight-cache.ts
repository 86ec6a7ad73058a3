/**
 * Stage weights on the node's disk, by the sha256 of the blob: a restarted
 * node (or one given a stage it had before) builds it without a transfer.
 * Files are written atomically and checked against their hash when read; the
 * newest `keep` blobs stay, older ones are removed.
 */
import { mkdir, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../lib/core/errors.js';
import { log } from '../lib/core/log.js';
import { sha256 } from '../lib/model/partition.js';

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

  /** The blob with this hash and size, or null (a damaged file is removed). */
  async get(hash: string, size: number): Promise<Buffer | null> {
    let blob: Buffer;
    try {
      blob = await readFile(this.file(hash));
    } catch {
      return null;
    }
    if (blob.byteLength !== size || sha256(blob) !== hash) {
      log.warn(`weight cache: ${this.file(hash)} does not match its hash; removed`);
      await unlink(this.file(hash)).catch(() => undefined);
      return null;
    }
    return blob;
  }

  /** Whether a file of this hash and size is there (not read: `get` checks it when it is used). */
  async has(hash: string, size: number): Promise<boolean> {
    try {
      return (await stat(this.file(hash))).size === size;
    } catch {
      return false;
    }
  }

  async put(hash: string, blob: Uint8Array): Promise<void> {
    try {
      await mkdir(this.dir, { recursive: true });
      const tmp = `${this.file(hash)}.${process.pid}.${Date.now()}.tmp`;
      await writeFile(tmp, blob);
      await rename(tmp, this.file(hash));
      await this.prune();
    } catch (err) {
      log.warn(`weight cache: cannot write ${this.dir}: ${errorMessage(err)} (the node works without it)`);
    }
  }

  private async prune(): Promise<void> {
    const files = (await readdir(this.dir)).filter((f) => /^[0-9a-f]{64}\.bin$/.test(f));
    if (files.length <= this.keep) return;
    const dated = await Promise.all(files.map(async (f) => ({ f, t: (await stat(join(this.dir, f))).mtimeMs })));
    dated.sort((a, b) => b.t - a.t);
    for (const { f } of dated.slice(this.keep)) await unlink(join(this.dir, f)).catch(() => undefined);
  }
}
