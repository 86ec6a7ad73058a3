/**
 * DEFER's codec in the codec table: ZFP (the C library, Debian's libzfp-dev),
 * through a small helper compiled at bench time (bench/zfp/zfp-roundtrip.c).
 * There is no ZFP package on npm; a node would need this native library and a
 * binding, so ZFP is measured here, not offered in the pipeline (see
 * docs/benchmarks.md for the comparison). Encode and decode times are the
 * library's own (timed inside the helper), not the process round trip.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Codec } from './codecs.js';

const SOURCE = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'zfp', 'zfp-roundtrip.c');

/** ZFP modes compared: fixed precision (bits kept per value) and fixed accuracy (absolute error bound). */
const MODES: { mode: 'precision' | 'accuracy'; param: number; label: string }[] = [
  { mode: 'precision', param: 16, label: 'ZFP fixed precision 16 bits' },
  { mode: 'precision', param: 12, label: 'ZFP fixed precision 12 bits' },
  { mode: 'precision', param: 8, label: 'ZFP fixed precision 8 bits' },
  { mode: 'accuracy', param: 1e-2, label: 'ZFP fixed accuracy 1e-2' },
  { mode: 'accuracy', param: 1e-3, label: 'ZFP fixed accuracy 1e-3' },
];

/** The ZFP codecs, or none and why. `lz4Pack` is applied to ZFP's stream where it makes it smaller (DEFER sent ZFP + LZ4). */
export function zfpCodecs(lz4Pack: (b: Uint8Array) => Uint8Array, reps: number): { codecs: Codec[]; note: string } {
  if (!existsSync('/usr/include/zfp.h')) return { codecs: [], note: 'ZFP not measured: libzfp-dev is not installed (apt-get install libzfp-dev)' };
  const dir = mkdtempSync(join(tmpdir(), 'defer-zfp-'));
  const helper = join(dir, 'zfp-roundtrip');
  try {
    execFileSync('cc', ['-O2', '-o', helper, SOURCE, '-lzfp'], { stdio: 'pipe' });
  } catch (err) {
    return { codecs: [], note: `ZFP not measured: cannot build the helper with cc: ${(err as Error).message.split('\n')[0]}` };
  }
  const codecs = MODES.map((m): Codec => {
    let last: { decoded: Float32Array; encodeMs: number; decodeMs: number } | undefined;
    return {
      name: `${m.label} + LZ4 (bench only)`,
      lossy: true,
      encode(x, shape) {
        if (shape.length !== 4 || shape[0] !== 1) throw new Error(`the ZFP helper takes [1,H,W,C] activations, not [${shape}]`);
        const streamPath = join(dir, 'stream.bin');
        const r = spawnSync(helper, [m.mode, String(m.param), String(shape[1]), String(shape[2]), String(shape[3]), String(reps), streamPath], {
          input: Buffer.from(x.buffer, x.byteOffset, x.byteLength),
          maxBuffer: x.byteLength * 2 + 1024,
        });
        if (r.status !== 0) throw new Error(`ZFP helper failed: ${r.stderr.toString()}`);
        const t = JSON.parse(r.stderr.toString()) as { encodeMs: number; decodeMs: number };
        const out = r.stdout;
        last = { decoded: new Float32Array(out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength)), encodeMs: t.encodeMs, decodeMs: t.decodeMs };
        const stream = readFileSync(streamPath);
        const packed = lz4Pack(stream);
        return packed.byteLength < stream.byteLength ? packed : stream;
      },
      decode() {
        if (!last) throw new Error('ZFP: decode before encode');
        return last.decoded;
      },
      timing: () => (last ? { encodeMs: last.encodeMs, decodeMs: last.decodeMs } : undefined),
    };
  });
  return { codecs, note: `ZFP in ${MODES.length} modes: libzfp through bench/zfp/zfp-roundtrip.c, times measured inside the library (best of ${reps}), then LZ4 where it helps` };
}
