// A real death and a cut link on a fleet (docs/fleets.md): three devices of 0.5 cores on 50 Mbit/s links, the MNIST
// CNN as a chain of three, 3000 frames; 3 s after the frames start, n2 is killed (kill -9) or its link cut (its
// veth down). Prints when the dispatcher took n2 for failed and when the chain was mended, ms after the fault, and
// whether every frame was answered once and exact. Root. Usage: node scripts/fleet-faults.mjs kill|link
import { execSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';

const kind = process.argv[2];
if (kind !== 'kill' && kind !== 'link') throw new Error('usage: node scripts/fleet-faults.mjs kill|link');
writeFileSync('/tmp/f3.json', JSON.stringify({ classes: { dev: { cpus: 0.5, memory: '384M', link: { mbit: 50 } } }, devices: [{ class: 'dev', count: 3 }] }));
const up = spawn(
  process.execPath,
  [new URL('../dist/cli/defer.js', import.meta.url).pathname, 'up', '--fleet', '/tmp/f3.json', '--model', 'mnist', '--shape', 'chain', '--frames', '3000', '--port', '0', '--json'],
  { stdio: ['ignore', 'pipe', 'pipe'] },
);
let out = '';
let faultAt = 0;
const ev = [];
up.stdout.on('data', (d) => (out += d));
let buf = '';
up.stderr.on('data', (d) => {
  buf += d;
  const lines = buf.split('\n');
  buf = lines.pop();
  for (const l of lines) {
    if (!l.startsWith('{')) continue;
    const e = JSON.parse(l);
    if (e.type === 'stream-start' && !faultAt)
      setTimeout(() => {
        faultAt = performance.now();
        if (kind === 'kill') execSync(`pkill -9 -f "defer.js node --id [n]2 "`);
        else execSync('ip link set dfbh2 down');
      }, 3000);
    if (['node-failed', 'repair-start', 'repair-done'].includes(e.type) && faultAt) ev.push([e.type, e.kind ?? '', e.cause ?? '', Math.round(performance.now() - faultAt)]);
  }
});
up.on('exit', (code) => {
  const s = JSON.parse(out.trim().split('\n').at(-1) || '{}');
  console.log(kind, 'exit', code, 'returned', s.framesReturned, 'of', s.frames, 'exact', s.maxAbsDiffVsLocal, 'dups', s.duplicates);
  for (const e of ev) console.log('  ', e.join(' | '), 'ms after the fault');
});
