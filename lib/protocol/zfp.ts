/**
 * ZFP, DEFER's activation codec, as the tensor codec's `zfp` precision: the
 * optional native addon (native/zfp-addon.c, built by `npm run build` in a clone
 * or `defer build-zfp` in an install, where libzfp-dev and a C compiler exist). Fixed precision (ZFP_BITS bit planes
 * kept per value); an NHWC activation is one 3-D field (x = width, y =
 * height, z = channels), other shapes a 1-D field.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CodecError } from '../core/errors.js';

interface ZfpAddon {
  compress(data: Float32Array, nx: number, ny: number, nz: number, bits: number): Uint8Array;
  decompress(stream: Uint8Array, nx: number, ny: number, nz: number, bits: number, out: Float32Array): number;
}

/** Bit planes kept per value: at 12, ZFP was smaller than int8 + LZ4 at two of the three ResNet50 cuts the bench measures, at the same measured agreement (docs/benchmarks.md). */
export const ZFP_BITS = 12;

// dist/lib/protocol/zfp.js (or lib/protocol/zfp.ts) -> the package root
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const ADDON_PATH = join(ROOT, 'native', 'build', 'zfp.node');

let addon: ZfpAddon | null | undefined;

/** The addon, or null where it was not built. */
function zfp(): ZfpAddon | null {
  if (addon === undefined) {
    try {
      addon = existsSync(ADDON_PATH) ? (createRequire(import.meta.url)(ADDON_PATH) as ZfpAddon) : null;
    } catch {
      addon = null;
    }
  }
  return addon;
}

export function zfpAvailable(): boolean {
  return zfp() !== null;
}

function need(): ZfpAddon {
  const z = zfp();
  if (!z) throw new CodecError('precision zfp needs the ZFP addon, which this install lacks: install libzfp-dev (Debian) and run npx defer build-zfp (in a clone of the repository: npm run build)');
  return z;
}

/** The field's extents for a shape: [w, h, c] for [1, h, w, c], else [n, 0, 0]. */
function extents(shape: readonly number[], n: number): [number, number, number] {
  return shape.length === 4 && shape[0] === 1 && shape[1] > 0 && shape[2] > 0 && shape[3] > 0 ? [shape[2], shape[1], shape[3]] : [n, 0, 0];
}

export function zfpCompress(x: Float32Array, shape: readonly number[], bits = ZFP_BITS): Uint8Array {
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) throw new CodecError(`zfp precision carries finite values only: value ${i} is ${x[i]}`);
  const [nx, ny, nz] = extents(shape, x.length);
  return need().compress(x, nx, ny, nz, bits);
}

export function zfpDecompress(stream: Uint8Array, shape: readonly number[], n: number, bits: number): Float32Array {
  const out = new Float32Array(n);
  const [nx, ny, nz] = extents(shape, n);
  try {
    need().decompress(stream, nx, ny, nz, bits, out);
  } catch (err) {
    if (err instanceof CodecError) throw err;
    throw new CodecError(`zfp tensor: ${(err as Error).message}`);
  }
  for (let i = 0; i < n; i++) if (!Number.isFinite(out[i])) throw new CodecError(`zfp tensor: value ${i} decoded to ${out[i]} (a corrupt stream)`);
  return out;
}
