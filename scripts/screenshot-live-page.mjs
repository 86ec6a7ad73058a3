// Draws docs/images/live-page.png: `defer up --serve` with the Keras MNIST CNN on 2 nodes and a standby,
// the live page on a free port, two `defer sensor --mnist` devices, a screenshot by headless Chromium
// (Debian's chromium, driven by puppeteer-core). Run after `npm run build`: node scripts/screenshot-live-page.mjs [out.png]
import { spawn } from 'node:child_process';
import puppeteer from 'puppeteer-core';

const out = process.argv[2] ?? 'docs/images/live-page.png';
const cli = ['dist/cli/defer.js'];
const up = spawn(process.execPath, [...cli, 'up', '--serve', '--model', 'test/fixtures/models/mnist-keras', '--nodes', '2', '--standby', '1', '--port', '0', '--http-port', '0', '--policy', 'queue'], {
  stdio: ['ignore', 'pipe', 'pipe'],
});
let log = '';
up.stdout.on('data', (d) => (log += d));
up.stderr.on('data', (d) => (log += d));
const until = async (re, ms = 120_000) => {
  for (let t = 0; t < ms; t += 200) {
    const m = re.exec(log);
    if (m) return m;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${re}:\n${log}`);
};
try {
  const [, page] = await until(/live page: (http:\/\/\S+)\//);
  const [, broker] = await until(/broker: +(mqtt:\/\/\S+)/);
  const sensors = ['cam1', 'cam2'].map((device, i) =>
    spawn(process.execPath, [...cli, 'sensor', '--device', device, '--mnist', '--fps', String(30 - 10 * i), '--count', '400', '--broker', broker], { stdio: 'ignore' }),
  );
  const browser = await puppeteer.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--disable-gpu'] });
  const tab = await browser.newPage();
  await tab.setViewport({ width: 1280, height: 820 });
  await tab.goto(`${page}/`, { waitUntil: 'domcontentloaded' });
  await new Promise((r) => setTimeout(r, 6000));
  await tab.screenshot({ path: out });
  await browser.close();
  for (const s of sensors) s.kill();
  console.log(`wrote ${out}`);
} finally {
  up.kill('SIGTERM');
}
