/** `defer plan --auto` as a process: speeds from the command line, the table and JSON, bad input. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { before, test } from 'node:test';
import { promisify } from 'node:util';
import { setLogLevel } from '../../lib/core/log.js';
import { initEngine } from '../../lib/model/engine.js';
import { CLI, ROOT } from '../helpers/common.js';

const run = promisify(execFile);

before(async () => {
  setLogLevel('warn');
  await initEngine('wasm');
});

test('defer plan --auto: speeds from the command line, a table and JSON; bad input exits 2 with the reason', { timeout: 120_000 }, async () => {
  const cache = mkdtempSync(join(tmpdir(), 'defer-plan-'));
  const env = { ...process.env, DEFER_PLANNER_CACHE_DIR: cache };
  const { stdout } = await run(process.execPath, [CLI, 'plan', '--model', 'tiny', '--auto', '--shape', 'chain', '--nodes', 'fast,slow', '--speeds', '1,0.25', '--json', '--log-level', 'warn'], {
    cwd: ROOT,
    env,
  });
  const r = JSON.parse(stdout) as { cuts: string[]; stages: { node: string; computeMs: number; layerCount: number }[]; predictedThroughputFps: number; nodes: { id: string; speed: number }[] };
  assert.equal(r.stages.length, 2);
  assert.deepEqual(
    r.nodes.map((n) => n.speed),
    [1, 0.25],
  );
  assert.ok(r.predictedThroughputFps > 0);
  const slow = r.stages.find((s) => s.node === 'slow')!;
  const fast = r.stages.find((s) => s.node === 'fast')!;
  assert.ok(slow.computeMs / 4 < fast.computeMs, 'the slow node has less of the model');
  const table = await run(process.execPath, [CLI, 'plan', '--model', 'tiny', '--auto', '--shape', 'chain', '--speeds', '1,1', '--bandwidth', '100', '--latency', '2', '--log-level', 'warn'], {
    cwd: ROOT,
    env,
  });
  assert.match(table.stdout, /profile from cache/);
  assert.match(table.stdout, /stage\s+node\s+layers\s+count\s+params\s+weight MB\s+predicted ms\s+output KiB\s+transfer ms/);
  assert.match(table.stdout, /predicted throughput: [\d.]+ frames\/s \(bottleneck: /);
  for (const [args, re] of [
    [['--auto'], /needs the nodes: --nodes n1,n2/],
    [['--auto', '--speeds', '1,x'], /planner.speeds.*must be a list of numbers/],
    [['--auto', '--nodes', 'a,b', '--speeds', '1,1,1'], /planner.speeds has 3 values for 2 nodes/],
  ] as [string[], RegExp][]) {
    const err = await run(process.execPath, [CLI, 'plan', '--model', 'tiny', ...args], { cwd: ROOT, env }).then(
      () => assert.fail(`${args.join(' ')} should fail`),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(err.code, 2, args.join(' '));
    assert.match(err.stderr, re);
  }
});

/** The project's files `file` loads through static imports, itself included, and the packages they import. */
function staticClosure(file: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const visit = (f: string) => {
    if (files.has(f)) return;
    files.add(f);
    for (const m of readFileSync(f, 'utf8').matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+'([^']+)'|^\s*import\s+'([^']+)'/gm)) {
      const spec = m[1] ?? m[2];
      if (spec.startsWith('.')) visit(resolve(dirname(f), spec));
      else packages.add(spec);
    }
  };
  visit(file);
  return { files, packages };
}

test('defer loads only the command it runs: the command list, an unknown command, and an edge node that never imports the broker (Aedes), the dispatcher or Node-RED', {
  timeout: 60_000,
}, async () => {
  const { stdout } = await run(process.execPath, [CLI], { cwd: ROOT });
  for (const name of ['up', 'sensor', 'status', 'user', 'broker', 'node', 'dispatch', 'plan', 'model', 'config']) assert.match(stdout, new RegExp(`^  ${name} +\\S`, 'm'), stdout);
  const bad = await run(process.execPath, [CLI, 'bogus'], { cwd: ROOT }).then(
    () => assert.fail('an unknown command must fail'),
    (err: { code: number; stderr: string }) => err,
  );
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /unknown command 'bogus'[\s\S]*usage: defer <command>/);
  // the CLI itself imports no command; `defer node` reaches none of the broker's, dispatcher's or bench's files
  const dist = join(ROOT, 'dist');
  assert.deepEqual(
    [...staticClosure(CLI).files].filter((f) => f.includes(join('cli', 'commands'))),
    [],
  );
  const node = staticClosure(join(dist, 'cli', 'commands', 'node.js'));
  const files = [...node.files].map((f) => relative(dist, f));
  assert.ok(files.some((f) => f.startsWith('edge-node')) && node.packages.has('mqtt'), files.join(' '));
  const foreign = files.filter((f) => /^(dispatcher|bench|node-red-nodes)[/\\]|^broker[/\\](?!topic-limits)/.test(f));
  assert.deepEqual(foreign, [], `defer node imports ${foreign.join(', ')}`);
  const packages = [...node.packages].filter((p) => /^(aedes|level|node-red|sharp)/.test(p));
  assert.deepEqual(packages, [], `defer node imports ${packages.join(', ')}`);
});
