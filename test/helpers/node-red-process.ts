/**
 * A real Node-RED, as a user runs it: the `node-red` command as a process with a throwaway user directory, this
 * package installed there with `npm install <this folder>` (a local folder: no network), on a free port.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, ROOT } from './common.js';

const require = createRequire(import.meta.url);

export const PKG = '@defer-mqtt/node-red-defer';
export const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((f) => existsSync(f));
export const MOSQUITTO = '/usr/sbin/mosquitto';

export interface RunningNodeRed {
  /** http://127.0.0.1:<port> (the editor and the admin API) */
  api: string;
  userDir: string;
  /** everything it printed so far */
  log(): string;
  /** replace the deployed flows through the admin API (for clean-up between cases, not for the checks) */
  setFlows(flows: unknown[]): Promise<void>;
  stop(): Promise<void>;
}

export async function startNodeRed(): Promise<RunningNodeRed> {
  const userDir = mkdtempSync(join(tmpdir(), 'defer-nr-editor-'));
  writeFileSync(join(userDir, 'package.json'), JSON.stringify({ name: 'node-red-project', private: true }));
  // no telemetry prompt, no welcome tour: what a user sees once they dismissed them
  writeFileSync(join(userDir, 'settings.js'), "module.exports = { flowFile: 'flows.json', telemetry: { enabled: false }, diagnostics: { enabled: false }, editorTheme: { tours: false } };\n");
  await promisify(execFile)('npm', ['install', ROOT, '--no-audit', '--no-fund', '--offline', '--ignore-scripts'], { cwd: userDir });
  const port = await freePort();
  const api = `http://127.0.0.1:${port}`;
  let log = '';
  const redJs = join(require.resolve('node-red/package.json'), '..', 'red.js');
  const red: ChildProcess = spawn(process.execPath, [redJs, '--userDir', userDir, '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  red.stdout!.on('data', (d) => (log += d));
  red.stderr!.on('data', (d) => (log += d));
  const exited = new Promise<void>((r) => red.once('exit', () => r()));
  const stop = async () => {
    if (red.exitCode === null && red.signalCode === null) {
      red.kill('SIGINT');
      const t = setTimeout(() => red.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    rmSync(userDir, { recursive: true, force: true });
  };
  let up = false;
  for (const end = Date.now() + 120_000; !up && Date.now() < end && red.exitCode === null; ) {
    up = await fetch(`${api}/settings`).then(
      (r) => r.ok,
      () => false,
    );
    if (!up) await new Promise((r) => setTimeout(r, 250));
  }
  if (!up) {
    await stop();
    throw new Error(`Node-RED did not answer on ${api}\n${log}`);
  }
  return {
    api,
    userDir,
    log: () => log,
    async setFlows(flows) {
      const r = await fetch(`${api}/flows`, { method: 'POST', headers: { 'Content-Type': 'application/json', 'Node-RED-Deployment-Type': 'full' }, body: JSON.stringify(flows) });
      if (r.status !== 204) throw new Error(`POST /flows: ${r.status} ${await r.text()}`);
    },
    stop,
  };
}

/** Mosquitto on a free local port, anonymous, without persistence: an MQTT broker that was there before Node-RED. */
export async function startMosquitto(): Promise<{ port: number; stop(): Promise<void> }> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'defer-mosquitto-'));
  writeFileSync(join(dir, 'mosquitto.conf'), `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\n`);
  const mosq = spawn(MOSQUITTO, ['-c', join(dir, 'mosquitto.conf')], { stdio: 'ignore' });
  const exited = new Promise<void>((r) => mosq.once('exit', () => r()));
  return {
    port,
    async stop() {
      if (mosq.exitCode === null && mosq.signalCode === null) {
        mosq.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
