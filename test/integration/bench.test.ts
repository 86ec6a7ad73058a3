/**
 * `npm run bench` in quick mode, as CI can afford: it runs, writes its JSON,
 * markdown and charts, and every figure it writes is a number. No timing
 * thresholds: speed is what the bench reports, not what a test asserts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import type { PipelineRow } from '../../bench/pipeline.js';
import { ROOT } from '../helpers/common.js';

/** Every leaf of `x` that is not a string, boolean or allowed null must be a finite number. */
function badFigures(x: unknown, path: string, allowNull: RegExp): string[] {
  if (x === null) return allowNull.test(path) ? [] : [`${path}: null`];
  if (typeof x === 'number') return Number.isFinite(x) ? [] : [`${path}: ${x}`];
  if (typeof x === 'string' || typeof x === 'boolean') return [];
  if (Array.isArray(x)) return x.flatMap((v, i) => badFigures(v, `${path}[${i}]`, allowNull));
  if (typeof x === 'object') return Object.entries(x as Record<string, unknown>).flatMap(([k, v]) => badFigures(v, `${path}.${k}`, allowNull));
  return [`${path}: ${typeof x}`];
}

test('npm run bench (quick): writes JSON, markdown and PNG charts; every figure is a number', { timeout: 300_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'defer-bench-'));
  const { stdout } = await promisify(execFile)(process.execPath, [join(ROOT, 'dist', 'bench', 'run.js'), '--out', out], { cwd: ROOT, maxBuffer: 1 << 24 });
  const files = readdirSync(out);
  const json = files.find((f) => f.endsWith('-quick.json'));
  assert.ok(json, files.join(', '));
  const r = JSON.parse(readFileSync(join(out, json), 'utf8'));
  assert.equal(r.mode, 'quick');
  assert.ok(r.pipeline.length >= 4 && r.codecs.length >= 7 && r.broker.length >= 2);
  // lossless codecs have no quality figures; energy is null where the machine has no RAPL counters
  // nodes outside a memory cgroup have no cgroup figures, and runs without a redeployment no time for one
  const bad = badFigures(r, 'result', /\.(maxOutputDiff|top1Agreement|joulesPerFrame|memoryLimitBytes|memoryPeakBytes|redeployMs)$/);
  assert.deepEqual(bad, []);
  for (const p of r.pipeline) assert.equal(p.maxAbsDiffVsLocal, 0, `${p.model} on ${p.nodes}: chained = local`);
  for (const c of r.codecs.filter((c: { lossy: boolean }) => !c.lossy)) assert.equal(c.maxOutputDiff, null);
  assert.equal(typeof r.netem.reason, 'string');
  for (const png of r.charts) assert.deepEqual([...readFileSync(png).subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47], `${png} is a PNG`);
  assert.match(stdout, /## Payload per inference by codec/);
  // memory: an idle node's peak, and per stage the weights, the prediction and the measured peak
  assert.ok(r.memoryIdleRssBytes > 0 && r.memory.length >= 1);
  for (const x of r.memory) assert.ok(x.idleRssBytes > 0, `${x.label}: the idle node its prediction adds to`);
  for (const m of r.memory.flatMap((x: { row: PipelineRow }) => x.row.memory)) assert.ok(m.predictedBytes > 0 && m.peakRssBytes > 0, JSON.stringify(m));
  assert.match(stdout, /## Memory per node[\s\S]*predicted \/ measured/);
  assert.equal(readFileSync(join(out, json.replace('.json', '.md')), 'utf8'), stdout);
});
