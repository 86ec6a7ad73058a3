/**
 * Network emulation (like DEFER's CORE runs): each node process in a Linux
 * network namespace of its own, joined to this one by a veth pair whose two
 * ends are shaped with `tc`: netem (bandwidth and delay) where the kernel has
 * it, else tbf (bandwidth only, and the report says so). Used by `defer up
 * --fleet` and the bench. Only its own namespaces (defer-bench-*), veth pairs
 * (dfb*) and 10.77.0.0/16 addresses are ever created, addressed or removed.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);
const sh = async (cmd: string[]) => {
  try {
    await run(cmd[0], cmd.slice(1));
  } catch (err) {
    throw new Error(`${cmd.join(' ')}: ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}`);
  }
};

export interface NetemCheck {
  /** namespaces and veth links can be made */
  available: boolean;
  /** the netem qdisc exists (delay can be emulated); else bandwidth only, with tbf */
  netem: boolean;
  reason: string;
}

export interface Shape {
  label: string;
  mbit: number;
  delayMs: number;
}

export interface Links {
  brokerUrlFor(id: string, port: number): string;
  commandPrefix(id: string): string[];
  /** what was applied: netem, or tbf without the delay */
  applied: string;
  /** shape node `id`'s link anew, both ways (a link that narrows while a deployment runs) */
  change(id: string, shape: Shape): Promise<void>;
  close(): Promise<void>;
}

const nsName = (k: number) => `defer-bench-${k}`;

async function removeLeftovers(max: number): Promise<void> {
  for (let k = 1; k <= max; k++) {
    await run('ip', ['link', 'del', `dfbh${k}`]).catch(() => undefined);
    await run('ip', ['netns', 'del', nsName(k)]).catch(() => undefined);
  }
}

export async function netemCheck(): Promise<NetemCheck> {
  if (process.getuid?.() !== 0) return { available: false, netem: false, reason: 'not running as root: namespaces and tc need it' };
  await removeLeftovers(1);
  try {
    await sh(['ip', 'netns', 'add', nsName(1)]);
    await sh(['ip', 'link', 'add', 'dfbh1', 'type', 'veth', 'peer', 'name', 'dfbn1']);
    await sh(['ip', 'link', 'set', 'dfbn1', 'netns', nsName(1)]);
    const netem = await sh(['tc', 'qdisc', 'add', 'dev', 'dfbh1', 'root', 'netem', 'delay', '5ms', 'rate', '100mbit']).then(
      () => true,
      () => false,
    );
    if (!netem) await sh(['tc', 'qdisc', 'add', 'dev', 'dfbh1', 'root', 'tbf', 'rate', '100mbit', 'burst', '256kb', 'latency', '400ms']);
    return {
      available: true,
      netem,
      reason: netem ? 'root, network namespaces, veth and netem: bandwidth and delay' : 'the kernel has no netem qdisc: bandwidth is shaped with tbf, delay cannot be emulated',
    };
  } catch (err) {
    return { available: false, netem: false, reason: (err as Error).message };
  } finally {
    await removeLeftovers(1);
  }
}

/**
 * Namespaces and shaped links for `ids` (node k gets 10.77.k.2, this side 10.77.k.1): every link shaped as
 * `shape`, or each as `shape(id)` says (undefined: not shaped, the veth's own speed).
 */
export async function createLinks(ids: string[], shape: Shape | ((id: string) => Shape | undefined), netem: boolean): Promise<Links> {
  await removeLeftovers(ids.length);
  const shapeOf = typeof shape === 'function' ? shape : () => shape;
  const qdisc = (verb: 'add' | 'replace', dev: string, s: Shape, ns?: string) => {
    const base = ns ? ['ip', 'netns', 'exec', ns, 'tc'] : ['tc'];
    return netem
      ? [...base, 'qdisc', verb, 'dev', dev, 'root', 'netem', 'delay', `${s.delayMs}ms`, 'rate', `${s.mbit}mbit`, 'limit', '100000']
      : [...base, 'qdisc', verb, 'dev', dev, 'root', 'tbf', 'rate', `${s.mbit}mbit`, 'burst', '256kb', 'latency', '2000ms'];
  };
  try {
    for (let k = 1; k <= ids.length; k++) {
      const ns = nsName(k);
      await sh(['ip', 'netns', 'add', ns]);
      await sh(['ip', 'link', 'add', `dfbh${k}`, 'type', 'veth', 'peer', 'name', `dfbn${k}`]);
      await sh(['ip', 'link', 'set', `dfbn${k}`, 'netns', ns]);
      await sh(['ip', 'addr', 'add', `10.77.${k}.1/24`, 'dev', `dfbh${k}`]);
      await sh(['ip', 'link', 'set', `dfbh${k}`, 'up']);
      await sh(['ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', `10.77.${k}.2/24`, 'dev', `dfbn${k}`]);
      await sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', `dfbn${k}`, 'up']);
      await sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
      // both directions: towards the node, and from it
      const s = shapeOf(ids[k - 1]);
      if (s) {
        await sh(qdisc('add', `dfbh${k}`, s));
        await sh(qdisc('add', `dfbn${k}`, s, ns));
      }
    }
  } catch (err) {
    await removeLeftovers(ids.length);
    throw err;
  }
  const index = (id: string) => ids.indexOf(id) + 1;
  return {
    brokerUrlFor: (id, port) => `mqtt://10.77.${index(id)}.1:${port}`,
    commandPrefix: (id) => ['ip', 'netns', 'exec', nsName(index(id))],
    applied:
      typeof shape === 'function'
        ? netem
          ? "netem: each node's link shaped as its device's, bandwidth and delay each way"
          : "tbf: each node's link shaped to its device's bandwidth each way; no delay (no netem in this kernel)"
        : netem
          ? `netem: ${shape.mbit} Mbit/s and ${shape.delayMs} ms each way on every node's link`
          : `tbf: ${shape.mbit} Mbit/s each way on every node's link; no delay (no netem in this kernel)`,
    change: async (id, s) => {
      const k = index(id);
      await sh(qdisc('replace', `dfbh${k}`, s));
      await sh(qdisc('replace', `dfbn${k}`, s, nsName(k)));
    },
    close: () => removeLeftovers(ids.length),
  };
}
