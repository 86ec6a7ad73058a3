// The cost of watching: `defer up` with ResNet50 on 2 nodes, alternately without the HTTP endpoint and with it,
// /metrics scraped every second and the live page's event stream open, in the same session. Prints each run's
// throughput and the ratio of the medians. Run after `npm run build`: node scripts/metrics-overhead.mjs [pairs] [model]
import { spawn } from 'node:child_process';
import { get } from 'node:http';

const pairs = Number(process.argv[2] ?? 3);
const model = process.argv[3] ?? 'resnet50';

function up(withHttp) {
  return new Promise((resolve, reject) => {
    const args = ['dist/cli/defer.js', 'up', '--model', model, '--nodes', '2', '--frames', '30', '--port', '0', '--json', '--no-baseline', ...(withHttp ? ['--http-port', '0'] : [])];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let scraper;
    let scrapes = 0;
    let stream;
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => {
      err += d;
      const m = /live page: (http:\/\/\S+)\//.exec(err);
      if (m && !scraper) {
        scraper = setInterval(() => get(`${m[1]}/metrics`, (res) => res.resume().on('end', () => scrapes++)).on('error', () => undefined), 1000);
        stream = get(`${m[1]}/events`, (res) => res.resume());
        stream.on('error', () => undefined);
      }
    });
    child.on('exit', (code) => {
      clearInterval(scraper);
      stream?.destroy();
      if (code !== 0) return reject(new Error(`defer up exited ${code}:\n${err}`));
      const s = JSON.parse(out.trim().split('\n').at(-1));
      resolve({ fps: s.throughputFps, scrapes, diff: s.maxAbsDiffVsLocal });
    });
  });
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const without = [];
const withHttp = [];
for (let i = 0; i < pairs; i++) {
  const a = await up(false);
  const b = await up(true);
  without.push(a.fps);
  withHttp.push(b.fps);
  console.log(`pair ${i + 1}: without ${a.fps} frames/s, with /metrics scraped every second (${b.scrapes} scrapes) and the page's stream open ${b.fps} frames/s`);
}
console.log(`median: without ${median(without)}, with ${median(withHttp)}; ratio ${(median(withHttp) / median(without)).toFixed(3)}`);
