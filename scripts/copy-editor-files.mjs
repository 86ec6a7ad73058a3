// Files the build does not compile but the code loads from beside its .js files: Node-RED's editor files
// (node-red-nodes/*.html) and the live page (dispatcher/observe/page/*).
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

for (const [from, keep] of [
  ['node-red-nodes', (f) => f.endsWith('.html')],
  [join('dispatcher', 'observe', 'page'), () => true],
]) {
  const to = join('dist', from);
  mkdirSync(to, { recursive: true });
  for (const f of readdirSync(from)) if (keep(f)) copyFileSync(join(from, f), join(to, f));
}
