// Builds the optional ZFP addon (native/zfp-addon.c -> native/build/zfp.node) where it can be built: libzfp's
// header (Debian: libzfp-dev), Node's own headers (node_api.h, shipped with Node) and a C compiler (cc). Where it
// cannot, it says why and exits 0: precision zfp is then unavailable and everything else works.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';

const nodeInclude = [join(dirname(dirname(process.execPath)), 'include', 'node'), '/usr/include/node'].find((d) => existsSync(join(d, 'node_api.h')));
const out = join('native', 'build', 'zfp.node');
const skip = (why) => {
  console.log(`zfp addon not built (precision zfp unavailable): ${why}`);
  process.exit(0);
};
if (!existsSync('/usr/include/zfp.h')) skip('libzfp is not installed (Debian: apt-get install libzfp-dev)');
if (!nodeInclude) skip("Node's headers (node_api.h) are not found beside this node binary");
mkdirSync(dirname(out), { recursive: true });
try {
  execFileSync('cc', ['-O2', '-shared', '-fPIC', '-Wall', `-I${nodeInclude}`, '-o', out, join('native', 'zfp-addon.c'), '-lzfp'], { stdio: 'pipe' });
} catch (err) {
  skip(`cc failed: ${String(err.stderr ?? err.message).split('\n')[0]}`);
}
console.log(`zfp addon built: ${out}`);
