/**
 * Emulated small devices: `defer up --node-memory/--node-cpus` puts each node
 * process in a cgroup of its own with those limits (checked in the kernel's own
 * files while it serves), removes them after; a node killed by the kernel for
 * memory stops the run with "out of memory" named; bad limits are clear errors.
 * These machines let root manage cgroups; where the test does not run as root,
 * it checks the refusal instead.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import { decodeStatus } from '../../lib/protocol/index.js';
import { CLI, freePort, ROOT, waitUntil } from '../helpers/common.js';

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;

async function fails(args: string[], re: RegExp): Promise<void> {
  await assert.rejects(run(process.execPath, [CLI, ...args], { cwd: ROOT }), (e: { code: number; stderr: string }) => {
    assert.notEqual(e.code, 0);
    assert.match(e.stderr, re);
    return true;
  });
}

test('bad --node-memory, --node-cpus and --memory-limit are clear errors before anything starts', { timeout: 60_000 }, async () => {
  await fails(['up', '--model', 'tiny', '--nodes', '1', '--frames', '1', '--port', '0', '--node-memory', 'lots'], /up.nodeMemory \(--node-memory\) must be a size such as 256M/);
  await fails(['up', '--model', 'tiny', '--nodes', '1', '--frames', '1', '--port', '0', '--node-cpus=-1'], /--node-cpus\) must be a positive number of cores/);
  await fails(['node', '--id', 'n1', '--memory-limit', 'lots'], /node.memoryLimit \(--memory-limit\) must be a size such as 256M/);
  if (isRoot) await fails(['up', '--model', 'tiny', '--nodes', '1', '--frames', '1', '--port', '0', '--node-memory', '64M'], /--node-memory 64 MiB is below what an idle node needs \(about 128 MiB/);
  else await fails(['up', '--model', 'tiny', '--nodes', '1', '--frames', '1', '--port', '0', '--node-memory', '256M'], /needs root/);
  if (isRoot && existsSync('/usr/bin/setpriv')) {
    // the same command as an ordinary user
    const asNobody = run(
      '/usr/bin/setpriv',
      ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, CLI, 'up', '--model', 'tiny', '--nodes', '1', '--frames', '1', '--port', '0', '--node-memory', '256M'],
      { cwd: '/tmp' },
    );
    await assert.rejects(asNobody, (e: { stderr: string }) => /cgroup of its own, which needs root/.test(e.stderr));
  }
});

/** The cgroup paths of a process, by controller (v1: memory, cpu; v2: ''), from /proc/<pid>/cgroup. */
function cgroupsOf(pid: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n')) {
    const [, controllers, path] = line.split(':');
    for (const c of controllers.split(',')) out.set(c, path);
  }
  return out;
}

test('defer up --serve --node-memory 384M --node-cpus 0.5: every node process runs in its own cgroup with those limits, reports the quota as its cores and itself as a device of its own; the cgroups are removed after', {
  timeout: 120_000,
  skip: isRoot ? false : 'needs root (cgroups)',
}, async () => {
  const port = await freePort();
  const up = spawn(process.execPath, [CLI, 'up', '--serve', '--model', 'tiny', '--nodes', '2', '--port', String(port), '--node-memory', '384M', '--node-cpus', '0.5', '--json'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  up.stdout!.on('data', (d) => (log += d));
  up.stderr!.on('data', (d) => (log += d));
  const dirs: string[] = [];
  try {
    await waitUntil(() => log.includes('"type":"serving"'), 90_000, 100);
    assert.match(log, /"type":"serving"/, log);
    const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0 });
    const pids = new Map<string, number>();
    const caps = new Map<string, { cores: number; host: string }>();
    c.on('message', (_t, p) => {
      const s = decodeStatus(p);
      if (s.pid) pids.set(s.node, s.pid);
      if (s.capabilities) caps.set(s.node, s.capabilities);
    });
    await c.subscribeAsync('defer/default/node/+/status');
    await waitUntil(() => pids.size >= 2, 30_000);
    await c.endAsync();
    assert.equal(pids.size, 2, 'both nodes have a pid in their status');
    for (const [node, pid] of pids) {
      const cg = cgroupsOf(pid);
      const v2 = cg.has('') && !cg.has('memory');
      const mem = v2 ? join('/sys/fs/cgroup', cg.get('')!) : join('/sys/fs/cgroup/memory', cg.get('memory')!);
      const cpu = v2 ? mem : join('/sys/fs/cgroup/cpu', cg.get('cpu') ?? cg.get('cpu,cpuacct')!);
      assert.match(mem, new RegExp(`defer-\\d+-${node}$`), `${node} is in a cgroup of its own: ${mem}`);
      assert.equal(readFileSync(join(mem, v2 ? 'memory.max' : 'memory.limit_in_bytes'), 'utf8').trim(), String(384 * 2 ** 20));
      if (v2) assert.equal(readFileSync(join(cpu, 'cpu.max'), 'utf8').trim(), '50000 100000');
      else assert.equal(readFileSync(join(cpu, 'cpu.cfs_quota_us'), 'utf8').trim(), '50000');
      dirs.push(mem, cpu);
      // the node knows its quota: half a core, and a device of its own (not one of the host's nodes sharing its cores)
      assert.equal(caps.get(node)?.cores, 0.5, `${node} reports its quota as its cores`);
      assert.match(caps.get(node)?.host ?? '', new RegExp(`^[^/]+/(defer-\\d+-)?${node}$`), `${node} names itself a device of its own`);
      // short of memory: V8's young generation at 1 MB semi-spaces
      assert.ok(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('--max-semi-space-size=1'), `${node}'s command line`);
    }
  } finally {
    up.kill('SIGTERM');
    await new Promise((r) => (up.exitCode !== null ? r(null) : up.once('exit', r)));
  }
  for (const d of dirs) assert.equal(existsSync(d), false, `${d} removed after the run`);
});

test('ResNet50 (102.5 MB of weights) on 4 nodes of 256 MB each: the planner cuts it to fit, 30 frames bit for bit; on 1 node of 160 MB it is refused with the figures; forced with --cut, the node is killed and "out of memory" named', {
  timeout: 300_000,
  skip: isRoot ? false : 'needs root (cgroups)',
}, async () => {
  // four small devices: every node gets a stage (a chain), cuts that fit each node's memory
  const { stdout } = await run(process.execPath, [CLI, 'up', '--model', 'resnet50', '--nodes', '4', '--node-memory', '256M', '--shape', 'chain', '--auto', '--frames', '30', '--port', '0', '--json'], {
    cwd: ROOT,
    maxBuffer: 1 << 24,
  });
  const s = JSON.parse(stdout) as {
    framesReturned: number;
    maxAbsDiffVsLocal: number;
    stages: { weightBytes: number; predictedMemoryBytes: number; memoryLimitBytes: number | null }[];
  };
  assert.equal(s.framesReturned, 30);
  assert.equal(s.maxAbsDiffVsLocal, 0, "the chain gives the whole model's outputs bit for bit");
  assert.equal(s.stages.length, 4);
  const limit = 256 * 2 ** 20;
  for (const st of s.stages) {
    assert.equal(st.memoryLimitBytes, limit, 'each node reports its limit');
    // no stage planned that could not fit beside an idle node (its cgroup is charged 90-odd MB; 64 MiB at the least)
    assert.ok(st.predictedMemoryBytes + 64 * 2 ** 20 <= limit, `stages of ${s.stages.map((x) => (x.weightBytes / 1e6).toFixed(1)).join(', ')} MB`);
  }

  // a node of 160 MB: the planner refuses before deploying, saying what the model needs and what the node offers
  // (since convolutions are computed as matrix products, the whole model runs on one node of 256 MB: docs/memory.md)
  await fails(
    ['up', '--model', 'resnet50', '--nodes', '1', '--frames', '2', '--port', '0', '--node-memory', '160M'],
    /no shape of the model fits the nodes' memory: the whole model needs about \d+ MB on one node \(the most a node offers: \d+ MB on n1\)/,
  );

  // forced: a cut that leaves nearly the whole model in the second stage is deployed as given, and its node is killed
  const t0 = Date.now();
  await fails(
    ['up', '--model', 'resnet50', '--nodes', '2', '--cut', 'conv2_block1_out', '--frames', '2', '--port', '0', '--node-memory', '160M'],
    /edge node n2 exited \(code 137\): killed by the kernel: out of memory \(its cgroup's limit is 160 MiB; peak \d+ MiB\).*does not fit --node-memory/,
  );
  assert.ok(Date.now() - t0 < 120_000, 'it stops at once, not after the ready timeout');
});

test('a slow device is not a dead one: ResNet50 on one node of 0.15 cores (seconds a frame, on its main thread) keeps its heartbeat from a thread of its own, and a dispatcher that takes 1.5 s of silence for death repairs nothing', {
  timeout: 300_000,
  skip: isRoot ? false : 'needs root (cgroups)',
}, async () => {
  const { stdout, stderr } = await run(process.execPath, [CLI, 'up', '--model', 'resnet50', '--nodes', '1', '--node-cpus', '0.15', '--frames', '3', '--port', '0', '--json'], {
    cwd: ROOT,
    maxBuffer: 1 << 24,
    env: { ...process.env, DEFER_HEARTBEAT_TIMEOUT_MS: '1500' },
  });
  const s = JSON.parse(stdout) as { framesReturned: number; maxAbsDiffVsLocal: number; repairs: unknown[]; stages: { meanBusyMs: number }[] };
  assert.equal(s.framesReturned, 3);
  assert.equal(s.maxAbsDiffVsLocal, 0);
  // each frame kept the node's main thread busy for longer than the dispatcher's heartbeat timeout
  assert.ok(s.stages[0].meanBusyMs > 1500, `a frame took ${s.stages[0].meanBusyMs} ms`);
  const failed = stderr.split('\n').filter((l) => l.startsWith('{') && JSON.parse(l).type === 'node-failed');
  assert.deepEqual(failed, [], 'no node taken for failed');
  assert.deepEqual(s.repairs, []);
});
