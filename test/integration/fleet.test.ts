/**
 * `defer up --fleet`: every device of a fleet file a node process in a cgroup of its own (its class's cores and
 * memory) and a network namespace of its own (its class's link, shaped with tc), the fleet's changes applied while
 * frames flow (typed events, and the kernel's files), everything removed after. Needs root (cgroups, namespaces):
 * elsewhere the refusal is checked instead.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import { decodeStatus } from '../../lib/protocol/index.js';
import { CLI, freePort, ROOT, waitUntil } from '../helpers/common.js';

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;
/** cgroup v1's cpu controller, else the unified hierarchy */
const V1 = existsSync('/sys/fs/cgroup/cpu/cpu.cfs_quota_us');
const CPU_ROOT = V1 ? '/sys/fs/cgroup/cpu' : '/sys/fs/cgroup';

function fleetFile(json: unknown): string {
  const f = join(mkdtempSync(join(tmpdir(), 'defer-fleet-')), 'fleet.json');
  writeFileSync(f, JSON.stringify(json));
  return f;
}

test('defer up --fleet: each device its own cgroup and shaped link (which its node measures), a change mid-run applied and told as an event, outputs exact, nothing left after', {
  timeout: 180_000,
  skip: isRoot ? false : 'needs root (cgroups, network namespaces)',
}, async () => {
  const file = fleetFile({
    classes: { dev: { cpus: 0.5, memory: '256M', link: { mbit: 50 } } },
    devices: [{ class: 'dev', count: 2 }],
    changes: [
      { atS: 0.2, device: 'n2', cpus: 0.25 },
      { atS: 0.4, device: 'n1', link: { mbit: 20 } },
    ],
  });
  const quota = new Map<string, string>();
  const port = await freePort();
  const up = spawn(process.execPath, [CLI, 'up', '--fleet', file, '--model', 'test/fixtures/models/mnist-keras', '--shape', 'chain', '--frames', '400', '--port', String(port), '--json'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const events: { type: string; node?: string; cpus?: number; mbit?: number; was?: { cpus?: number; mbit?: number } }[] = [];
  up.stdout!.on('data', (d) => (stdout += d));
  // each node's measured link, from its status (the broker listens on every address: a fleet's nodes reach it over their veth)
  const links = new Map<string, number>();
  const watch = (async () => {
    await waitUntil(() => stderr.includes('broker listening'), 60_000);
    const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0 });
    c.on('message', (_t, p) => {
      const st = decodeStatus(p);
      if (st.capabilities?.linkMbps) links.set(st.node, st.capabilities.linkMbps);
    });
    await c.subscribeAsync('defer/default/node/+/status');
    await waitUntil(() => links.size >= 2, 90_000);
    await c.endAsync();
  })();
  up.stderr!.on('data', (d) => {
    stderr += d;
    for (const line of String(d).split('\n')) {
      if (!line.startsWith('{')) continue;
      const e = JSON.parse(line);
      events.push(e);
      // the kernel's own figure, read as the change is told
      if (e.type === 'device-changed' && e.cpus !== undefined) {
        const dir = readdirSync(CPU_ROOT).find((d2) => d2 === `defer-${up.pid}-${e.node}`);
        if (dir) quota.set(e.node, readFileSync(join(CPU_ROOT, dir, V1 ? 'cpu.cfs_quota_us' : 'cpu.max'), 'utf8').trim());
      }
    }
  });
  const code = await new Promise<number | null>((r) => up.once('exit', r));
  assert.equal(code, 0, stderr.slice(-3000));
  await watch;
  // each node measured its own 50 Mbit/s link (tbf), within a fifth
  for (const n of ['n1', 'n2']) assert.ok(Math.abs((links.get(n) ?? 0) - 50) <= 10, `${n} measured ${links.get(n)} Mbit/s on a 50 Mbit/s link`);
  const s = JSON.parse(stdout) as { framesReturned: number; frames: number; maxAbsDiffVsLocal: number; stages: unknown[] };
  assert.equal(s.framesReturned, 400);
  assert.equal(s.maxAbsDiffVsLocal, 0, "the fleet's chain gives the whole model's outputs bit for bit");
  assert.equal(s.stages.length, 2);
  const changed = events.filter((e) => e.type === 'device-changed');
  assert.deepEqual(
    changed.map((e) => [e.node, e.cpus, e.mbit, e.was]),
    [
      ['n2', 0.25, undefined, { cpus: 0.5, mbit: 50 }],
      ['n1', undefined, 20, { cpus: 0.5, mbit: 50 }],
    ],
  );
  assert.equal(quota.get('n2'), V1 ? '25000' : '25000 100000', "n2's cgroup quota after the change");
  // nothing left behind: no cgroup, no namespace of the run
  assert.deepEqual(
    readdirSync(CPU_ROOT).filter((d) => d.startsWith(`defer-${up.pid}-`)),
    [],
  );
  const { stdout: ns } = await run('ip', ['netns', 'list']);
  assert.doesNotMatch(ns, /defer-bench-/);
});

test('defer up --fleet: a bad fleet file and --fleet with --node-cpus are clear errors before anything starts', { timeout: 60_000 }, async () => {
  const fails = async (args: string[], re: RegExp) =>
    assert.rejects(run(process.execPath, [CLI, 'up', '--model', 'tiny', '--frames', '1', '--port', '0', ...args], { cwd: ROOT }), (e: { stderr: string }) => re.test(e.stderr));
  await fails(['--fleet', fleetFile({ classes: { a: { cpus: 1 } }, devices: [{ class: 'b' }] })], /fleet file .*: devices\[0\]\.class is "b", not one of the classes \(a\)/);
  await fails(['--fleet', '/nonexistent/fleet.json'], /cannot read the fleet file \/nonexistent\/fleet\.json/);
  await fails(['--fleet', join(ROOT, 'config', 'fleets', 'raspberry-pi.json'), '--node-cpus', '0.5'], /--fleet gives each device its own memory and cores: leave out --node-memory and --node-cpus/);
});
