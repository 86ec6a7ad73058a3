/** The `defer` command as a child process: its output, summary and events; waiting for an event; a node's pid. */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import mqtt from 'mqtt';
import type { DispatcherEvent } from '../../dispatcher/events.js';
import { decodeStatus } from '../../lib/protocol/index.js';
import { CLI, ROOT } from './common.js';

export interface Proc {
  child: ChildProcess;
  /** stdout and stderr together */
  log: () => string;
  /** the last JSON object the process wrote on stdout (its summary) */
  summary: () => ReturnType<typeof JSON.parse>;
  /** the dispatcher's events, as the CLI writes them with --json (one JSON object per line on stderr) */
  events: () => DispatcherEvent[];
}

export function startProcess(args: string[]): Proc {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT });
  let out = '';
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => {
    out += d;
    stdout += d;
  });
  child.stderr!.on('data', (d) => {
    out += d;
    stderr += d;
  });
  const jsonLines = (text: string) =>
    text
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l));
  return { child, log: () => out, summary: () => jsonLines(stdout).at(-1), events: () => jsonLines(stderr).filter((e) => typeof e.type === 'string') };
}

/** Wait (up to `ms`) until the process has written an event of `type`; returns it. */
export async function waitEvent<T extends DispatcherEvent['type']>(p: Proc, type: T, ms = 60_000): Promise<Extract<DispatcherEvent, { type: T }>> {
  for (let t = 0; t < ms; t += 50) {
    const e = p.events().find((x) => x.type === type);
    if (e) return e as Extract<DispatcherEvent, { type: T }>;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no '${type}' event in ${ms} ms:\n${p.log()}`);
}

export const exited = (c: ChildProcess) => new Promise<number | null>((r) => (c.exitCode !== null ? r(c.exitCode) : c.once('exit', (code) => r(code))));

/** A node's process id, from its retained status (defer up's nodes are its children). */
export async function nodePid(url: string, node: string): Promise<number> {
  const c = await mqtt.connectAsync(url, { reconnectPeriod: 0 });
  let pid = 0;
  c.on('message', (_t, p) => (pid = decodeStatus(p).pid ?? 0));
  await c.subscribeAsync(`defer/default/node/${node}/status`);
  for (let i = 0; i < 40 && !pid; i++) await new Promise((r) => setTimeout(r, 50));
  await c.endAsync();
  assert.ok(pid > 0, `${node} has a pid in its status`);
  return pid;
}
