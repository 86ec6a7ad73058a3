/**
 * A node's CPU quota read from its cgroup's files (v1 and v2, written here into a temporary tree laid out as
 * /sys/fs/cgroup is), and the calibration's device name under a quota.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'node:test';
import { readCpuQuota } from '../../lib/core/cpu-quota.js';
import { deviceName } from '../../lib/planning/calibrate.js';

function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'defer-cgroup-'));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(root, path, '..'), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

test('cgroup v2: cpu.max "quota period" gives the cores and the period; "max" is no quota', () => {
  const root = tree({ 'defer-1-n1/cpu.max': '20000 100000\n', 'free/cpu.max': 'max 100000\n' });
  try {
    assert.deepEqual(readCpuQuota('0::/defer-1-n1\n', root), { cores: 0.2, periodMs: 100, cgroup: '/defer-1-n1' });
    assert.equal(readCpuQuota('0::/free\n', root), undefined);
    assert.equal(readCpuQuota('0::/missing\n', root), undefined);
  } finally {
    rmSync(root, { recursive: true });
  }
});

test('cgroup v1: cpu.cfs_quota_us over cpu.cfs_period_us, under cpu/ or cpu,cpuacct/; -1 is no quota', () => {
  const root = tree({
    'cpu/defer-1-n2/cpu.cfs_quota_us': '150000\n',
    'cpu/defer-1-n2/cpu.cfs_period_us': '100000\n',
    'cpu,cpuacct/box/cpu.cfs_quota_us': '50000\n',
    'cpu,cpuacct/box/cpu.cfs_period_us': '50000\n',
    'cpu/cpu.cfs_quota_us': '-1\n',
    'cpu/cpu.cfs_period_us': '100000\n',
  });
  try {
    assert.deepEqual(readCpuQuota('4:memory:/x\n1:cpu:/defer-1-n2\n2:cpuacct:/\n', root), { cores: 1.5, periodMs: 100, cgroup: '/defer-1-n2' });
    assert.deepEqual(readCpuQuota('3:cpu,cpuacct:/box\n', root), { cores: 1, periodMs: 50, cgroup: '/box' });
    assert.equal(readCpuQuota('1:cpu:/\n', root), undefined);
  } finally {
    rmSync(root, { recursive: true });
  }
});

test("a node under a quota names itself a device of its own: the host's name and its cgroup's", () => {
  assert.equal(deviceName({ cores: 0.2, periodMs: 100, cgroup: '/defer-1-n1' }), `${hostname()}/defer-1-n1`);
});
