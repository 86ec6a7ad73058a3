/**
 * This process's memory as the kernel counts it: its own peak resident set, and its memory cgroup (a container,
 * or `defer up --node-memory`): its limit, what it charges now, and the most it has charged. cgroup v2
 * (memory.max, memory.current, memory.peak) or v1 (memory.limit_in_bytes, memory.usage_in_bytes,
 * memory.max_usage_in_bytes). Where there is none, or the files cannot be read, each is undefined.
 */
import { existsSync, readFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import { join } from 'node:path';

type Figure = 'limit' | 'usage' | 'peak';
const FILES: Record<'v1' | 'v2', Record<Figure, string>> = {
  v2: { limit: 'memory.max', usage: 'memory.current', peak: 'memory.peak' },
  v1: { limit: 'memory.limit_in_bytes', usage: 'memory.usage_in_bytes', peak: 'memory.max_usage_in_bytes' },
};

let dir: { path: string; v: 'v1' | 'v2' } | null | undefined;

function cgroupDir(): { path: string; v: 'v1' | 'v2' } | null {
  if (dir !== undefined) return dir;
  dir = null;
  try {
    for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
      const [, controllers, path] = line.split(':');
      if (path === undefined) continue;
      if (controllers === '' && existsSync(join('/sys/fs/cgroup', path, 'memory.current'))) dir = { path: join('/sys/fs/cgroup', path), v: 'v2' };
      else if (controllers.split(',').includes('memory')) dir = { path: join('/sys/fs/cgroup/memory', path), v: 'v1' };
      if (dir) break;
    }
  } catch {
    // not Linux, or no cgroups
  }
  return dir;
}

function read(f: Figure): number | undefined {
  const d = cgroupDir();
  if (!d) return undefined;
  try {
    const text = readFileSync(join(d.path, FILES[d.v][f]), 'utf8').trim();
    const n = Number(text);
    return Number.isFinite(n) ? n : undefined; // v2 writes 'max' for no limit
  } catch {
    return undefined;
  }
}

/**
 * The largest resident set this process has had: the kernel's high-water mark of its own memory (VmHWM).
 * Not getrusage's maxrss: Linux carries that across exec from the parent at fork, so a node started by a
 * dispatcher holding ResNet50 would report the dispatcher's 220 MB as its own peak.
 */
export function peakRssBytes(): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS * 1024;
}

/** The memory limit of this process's cgroup, or undefined where there is none below the host's memory. */
export function cgroupLimitBytes(): number | undefined {
  const limit = typeof process.constrainedMemory === 'function' ? process.constrainedMemory() : read('limit');
  return limit !== undefined && limit > 0 && limit < totalmem() ? limit : undefined;
}

/** What the kernel charges this process's cgroup now (code pages shared with other processes count for whoever read them first). */
export function cgroupUsageBytes(): number | undefined {
  return cgroupLimitBytes() === undefined ? undefined : read('usage');
}

/** The most it has charged the cgroup (v2 kernels before 5.19 have no memory.peak: undefined). */
export function cgroupPeakBytes(): number | undefined {
  return cgroupLimitBytes() === undefined ? undefined : read('peak');
}
