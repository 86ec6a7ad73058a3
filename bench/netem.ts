/**
 * Network emulation (DEFER's CORE runs): nodes in Linux network namespaces
 * joined by veth links shaped with `tc netem`. This checks, without touching
 * anything but a namespace and a veth pair of its own (named defer-bench*),
 * whether the machine can do it: root, ip netns, veth, and the netem qdisc.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface NetemCheck {
  available: boolean;
  reason: string;
}

export async function netemCheck(): Promise<NetemCheck> {
  if (process.getuid?.() !== 0) return { available: false, reason: 'not running as root: namespaces and tc need it' };
  const ns = `defer-bench${process.pid}`;
  const a = `dfb${process.pid % 100000}a`;
  const b = `dfb${process.pid % 100000}b`;
  try {
    await run('ip', ['netns', 'add', ns]);
  } catch (err) {
    return { available: false, reason: `ip netns add failed: ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}` };
  }
  try {
    await run('ip', ['link', 'add', a, 'type', 'veth', 'peer', 'name', b]);
    await run('ip', ['link', 'set', b, 'netns', ns]);
    try {
      await run('tc', ['qdisc', 'add', 'dev', a, 'root', 'netem', 'delay', '5ms', 'rate', '100mbit']);
    } catch (err) {
      return { available: false, reason: `the kernel has no netem qdisc (tc: ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}); delay and bandwidth cannot be emulated here` };
    }
    return { available: true, reason: 'root, network namespaces, veth and netem are available' };
  } catch (err) {
    return { available: false, reason: `veth links failed: ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}` };
  } finally {
    await run('ip', ['link', 'del', a]).catch(() => undefined);
    await run('ip', ['netns', 'del', ns]).catch(() => undefined);
  }
}
