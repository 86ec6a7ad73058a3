// Node-RED loads a node's editor file from beside its .js file: copy node-red-nodes/*.html into dist/.
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const from = 'node-red-nodes';
const to = join('dist', 'node-red-nodes');
mkdirSync(to, { recursive: true });
for (const f of readdirSync(from)) if (f.endsWith('.html')) copyFileSync(join(from, f), join(to, f));
