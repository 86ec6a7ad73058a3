// Builds the optional ZFP addon (native/zfp-addon.c -> native/build/zfp.node) where it can be built: libzfp's
// header and library (Debian: libzfp-dev), Node's own headers (node_api.h: beside the node binary in Node's own
// builds, /usr/include/node from Debian's libnode-dev, or node-gyp's download cache) and a C compiler (cc).
// Paths are the package's own (this file's folder's parent), so it works from a clone (`npm run build` runs it)
// and from an install (`npx defer build-zfp` runs it). Where it cannot build, it says why and exits 0 (precision
// zfp is then unavailable and everything else works), or 1 with --required.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const required = process.argv.includes('--required');
const nodeInclude = [join(dirname(dirname(process.execPath)), 'include', 'node'), '/usr/include/node', join(homedir(), '.cache', 'node-gyp', process.versions.node, 'include', 'node')].find((d) =>
  existsSync(join(d, 'node_api.h')),
);
const source = join(root, 'native', 'zfp-addon.c');
const out = join(root, 'native', 'build', 'zfp.node');
const skip = (why) => {
  console.log(`zfp addon not built (precision zfp unavailable): ${why}`);
  process.exit(required ? 1 : 0);
};
if (!existsSync(source)) skip(`${source} is missing`);
if (!existsSync('/usr/include/zfp.h')) skip('libzfp is not installed (Debian, Ubuntu: apt-get install libzfp-dev)');
if (!nodeInclude) skip("Node's headers (node_api.h) are not found beside this node binary, in /usr/include/node (Debian: apt-get install libnode-dev) or in node-gyp's cache (npx node-gyp install)");
try {
  mkdirSync(dirname(out), { recursive: true });
} catch (err) {
  skip(`cannot write ${dirname(out)}: ${err.message} (a global install: run it as the user that installed the package)`);
}
try {
  execFileSync('cc', ['-O2', '-shared', '-fPIC', '-Wall', `-I${nodeInclude}`, '-o', out, source, '-lzfp'], { stdio: 'pipe' });
} catch (err) {
  skip(`cc failed: ${String(err.stderr ?? err.message).split('\n')[0]} (a C compiler is needed: apt-get install gcc)`);
}
console.log(`zfp addon built: ${out}`);
