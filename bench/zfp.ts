/**
 * DEFER's codec in the codec table: ZFP at a few fixed precisions, through the pipeline's own ZFP
 * (lib/protocol/zfp.ts, the optional addon over libzfp), beside our float16 and int8.
 */
import { ZFP_BITS, zfpAvailable, zfpCompress, zfpDecompress } from '../lib/protocol/index.js';
import type { Codec } from './codecs.js';

/** Bit planes kept per value; ZFP_BITS is what `--precision zfp` sends. */
const BITS = [16, ZFP_BITS, 8];

/** The ZFP codecs, or none and why. */
export function zfpCodecs(): { codecs: Codec[]; note: string } {
  if (!zfpAvailable()) return { codecs: [], note: 'ZFP not measured: its addon is not built here (install libzfp-dev and run npm run build)' };
  const codecs = BITS.map((bits): Codec => {
    let shape: number[] = [];
    return {
      name: `ZFP fixed precision ${bits} bits${bits === ZFP_BITS ? ' (pipeline: --precision zfp)' : ''}`,
      lossy: true,
      encode(x, s) {
        shape = s;
        return zfpCompress(x, s, bits);
      },
      decode: (b, n) => zfpDecompress(b, shape, n, bits),
    };
  });
  return { codecs, note: `ZFP at ${BITS.join(', ')} bit planes: libzfp through the pipeline's addon (lib/protocol/zfp.ts); LZ4 does not shrink its streams` };
}
