/**
 * This process's CPU quota, as the kernel enforces it: its cgroup's CFS bandwidth limit (a container's `--cpus`,
 * `defer up --node-cpus`, a device emulated on a larger host). cgroup v2 (`cpu.max`: "quota period", or "max
 * period" for none) or v1 (`cpu.cfs_quota_us`, -1 for none, and `cpu.cfs_period_us`). Undefined where there is
 * none, or it cannot be read.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface CpuQuota {
  /** the cores the quota gives (quota over period; 0.2: a fifth of one core) */
  cores: number;
  /** the CFS period, ms: the kernel lets a burst run at full speed until the period's quota is spent */
  periodMs: number;
  /** the cgroup that holds the quota, as /proc/self/cgroup names it */
  cgroup: string;
}

const ROOT = '/sys/fs/cgroup';

/** Read a quota from `root` for the cgroups `/proc/self/cgroup` lists in `procCgroup` (the tests give both). */
export function readCpuQuota(procCgroup: string, root = ROOT): CpuQuota | undefined {
  for (const line of procCgroup.split('\n')) {
    const [, controllers, path] = line.split(':');
    if (path === undefined) continue;
    try {
      if (controllers === '' && existsSync(join(root, path, 'cpu.max'))) {
        const [quota, period] = readFileSync(join(root, path, 'cpu.max'), 'utf8')
          .trim()
          .split(/\s+/);
        if (quota === 'max') return undefined;
        return quotaOf(Number(quota), Number(period), path);
      }
      if (controllers.split(',').includes('cpu')) {
        const dir = [join(root, 'cpu', path), join(root, 'cpu,cpuacct', path)].find((d) => existsSync(join(d, 'cpu.cfs_quota_us')));
        if (!dir) continue;
        const quota = Number(readFileSync(join(dir, 'cpu.cfs_quota_us'), 'utf8').trim());
        const period = Number(readFileSync(join(dir, 'cpu.cfs_period_us'), 'utf8').trim());
        return quota > 0 ? quotaOf(quota, period, path) : undefined;
      }
    } catch {
      // unreadable: as if there were none
    }
  }
  return undefined;
}

function quotaOf(quotaUs: number, periodUs: number, cgroup: string): CpuQuota | undefined {
  if (!(quotaUs > 0 && periodUs > 0)) return undefined;
  return { cores: quotaUs / periodUs, periodMs: periodUs / 1000, cgroup };
}

/** This process's quota now (read each time: a quota may change while the process runs). */
export function cpuQuota(): CpuQuota | undefined {
  try {
    return readCpuQuota(readFileSync('/proc/self/cgroup', 'utf8'));
  } catch {
    return undefined; // not Linux
  }
}
