import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { DeferError } from '../../lib/core/errors.js';
import { PACKAGE_ROOT } from '../../lib/model/shipped.js';
import { parseCommand } from '../args.js';
import type { Command } from '../command.js';

/**
 * `defer build-zfp`: build the ZFP addon (precision zfp) where the package is installed, as the repository's
 * `npm run build` does in a clone: scripts/build-zfp.mjs compiles native/zfp-addon.c against libzfp (Debian:
 * libzfp-dev) into native/build/zfp.node. Then the addon is loaded and a tensor round-tripped through it.
 */
export const buildZfpCommand: Command = {
  usage: 'defer build-zfp',
  about: "Build the ZFP codec's native addon (precision zfp) in this install: needs libzfp-dev and a C compiler.",
  flags: {},
  async run(argv) {
    parseCommand(argv, this.flags);
    const script = join(PACKAGE_ROOT, 'scripts', 'build-zfp.mjs');
    const r = spawnSync(process.execPath, [script, '--required'], { stdio: 'inherit' });
    if (r.status !== 0) throw new DeferError('E_CONFIG', 'the ZFP addon was not built (above: why); precision zfp stays unavailable, everything else works');
    const { ZFP_BITS, zfpAvailable, zfpCompress, zfpDecompress } = await import('../../lib/protocol/zfp.js');
    if (!zfpAvailable()) throw new DeferError('E_CONFIG', 'the ZFP addon was built but does not load');
    const x = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i));
    const back = zfpDecompress(zfpCompress(x, [64]), [64], 64, ZFP_BITS);
    const err = Math.max(...x.map((v, i) => Math.abs(v - back[i])));
    process.stdout.write(`zfp addon loads: 64 values round-trip within ${err.toExponential(1)}; --precision zfp is available\n`);
  },
};
