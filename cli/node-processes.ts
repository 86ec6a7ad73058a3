/**
 * Edge nodes as real child processes (`defer node ...`), their stderr
 * prefixed with the node id, stopped cleanly together. A child also exits
 * when its parent goes away (its stdin closes).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { constants } from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const CLI_PATH = fileURLToPath(new URL('./defer.js', import.meta.url));

export interface NodeProcessOptions {
  ids: string[];
  brokerUrl: string;
  pipeline: string;
  backend: string;
  logLevel: string;
  /** where child log lines go (default: this process's stderr) */
  onLine?: (id: string, line: string) => void;
  extraArgs?: string[];
  /** arguments for one node only (e.g. its --slowdown) */
  argsFor?: (id: string) => string[];
  /** the broker URL one node uses, when it differs (a node in a network namespace) */
  brokerUrlFor?: (id: string) => string;
  /** a command that runs the node, e.g. ['ip', 'netns', 'exec', 'ns1'] */
  commandPrefix?: (id: string) => string[];
  /** flags for the node processes' V8 (default NODE_V8_FLAGS; LEAN_V8_FLAGS where memory is short) */
  v8Flags?: string[];
}

/**
 * V8 flags for nodes short of memory: a young generation of 1 MB semi-spaces instead of V8's 16 MB. An idle node
 * measured 130 MB resident with them against 152 MB without (peak 135 against 174), but a light model computed
 * on worker threads makes much short-lived garbage, and lost 15-20% of its throughput (the Teachable Machine
 * model on 2 nodes, 3 runs each: 35-37 frames/s against 45-56): `defer up` uses them with --node-memory only.
 */
export const LEAN_V8_FLAGS = ['--max-semi-space-size=1'];

/**
 * V8 flags for every other node: 4 MB semi-spaces. Against V8's 16 MB (docs/memory.md, 2026-11-28, runs
 * alternating): the same throughput within this VM's noise (the Teachable Machine model on 1 node of 2 workers,
 * 5 runs each: 79.7 frames/s on average against 81.2; MobileNet v1, 3 runs: 20.3-22.8 against 17.8-20.3), and
 * less memory: that node's peak 411 MB on average against 450, MobileNet's 312-358 against 373-384, an idle
 * node's 129-139 against 138-146, ResNet50's 4 stages about 5 MB each.
 */
export const NODE_V8_FLAGS = ['--max-semi-space-size=4'];

/**
 * The C library's allocator for every node (glibc reads it; others ignore it): a buffer of 1 MB or more gets a
 * mapping of its own, given back to the system when freed. By default glibc raises that threshold to the largest
 * buffer freed so far (up to 32 MB), so a node's frame buffers of a few MB come from its heap, which keeps what
 * they free. ResNet50 in 4 and 8 stages (`npx defer up --model resnet50 --nodes N --shape chain --frames 20`, 2 runs
 * each, alternating): 5-30 MB less at every node (8 stages: 160 / 186 / 163 / 149 / 147 / 152 / 164 / 197 MB
 * against 171 / 209 / 173 / 166 / 160 / 162 / 179 / 205); the Teachable Machine model on 1 node of 2 workers (5
 * runs each) 82.5 frames/s on average against 76.7, its peak 400 MB against 410: no cost seen. 128 KB cost that
 * model about 9% of its throughput. The user's own setting stands.
 */
export const NODE_MALLOC_ENV: Record<string, string> = { MALLOC_MMAP_THRESHOLD_: String(1 << 20) };

/** The environment to start a node with: this one, with NODE_MALLOC_ENV's settings where it has none of its own. */
export function nodeEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out = { ...env };
  for (const [k, v] of Object.entries(NODE_MALLOC_ENV)) out[k] ??= v;
  return out;
}

/** The flags to start a node with: `flags`, unless `env`'s NODE_OPTIONS already sizes the young generation (the user's choice stands). */
export function nodeV8Flags(flags: string[], env: NodeJS.ProcessEnv = process.env): string[] {
  return /--max-semi-space-size/.test(env.NODE_OPTIONS ?? '') ? [] : flags;
}

export class NodeProcesses {
  readonly children = new Map<string, ChildProcess>();
  private exits = new Map<string, Promise<number | null>>();

  constructor(readonly opts: NodeProcessOptions) {}

  /** Start the nodes `ids` (default: all of them not yet started). */
  start(ids: string[] = this.opts.ids.filter((id) => !this.children.has(id))): void {
    const onLine = this.opts.onLine ?? ((id: string, line: string) => process.stderr.write(`[${id}] ${line}\n`));
    for (const id of ids) {
      const args = [
        ...nodeV8Flags(this.opts.v8Flags ?? NODE_V8_FLAGS),
        CLI_PATH,
        'node',
        '--id',
        id,
        '--broker',
        this.opts.brokerUrlFor?.(id) ?? this.opts.brokerUrl,
        '--pipeline',
        this.opts.pipeline,
        '--backend',
        this.opts.backend,
        '--log-level',
        this.opts.logLevel,
        ...(this.opts.extraArgs ?? []),
        ...(this.opts.argsFor?.(id) ?? []),
      ];
      const prefix = this.opts.commandPrefix?.(id) ?? [];
      const child = spawn(prefix[0] ?? process.execPath, prefix.length ? [...prefix.slice(1), process.execPath, ...args] : args, {
        stdio: ['pipe', 'ignore', 'pipe'],
        env: { ...nodeEnv(), DEFER_EXIT_WITH_PARENT: '1' },
      });
      this.children.set(id, child);
      createInterface({ input: child.stderr! }).on('line', (l) => onLine(id, l));
      // killed by a signal: 128 + its number, as a shell reports it (SIGKILL: 137)
      this.exits.set(id, new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 + (constants.signals[signal] ?? 0) : null)))));
    }
  }

  /** Resolves with the exit code of node `id` when it exits. */
  exitOf(id: string): Promise<number | null> {
    return this.exits.get(id) ?? new Promise(() => undefined);
  }

  /** Resolves with the id and exit code of the first child that exits. */
  firstExit(): Promise<{ id: string; code: number | null }> {
    return Promise.race([...this.exits].map(([id, p]) => p.then((code) => ({ id, code }))));
  }

  /** SIGTERM every child, then SIGKILL those still running after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    for (const c of this.children.values()) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    const all = Promise.all(this.exits.values());
    const timer = setTimeout(() => {
      for (const c of this.children.values()) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }, graceMs);
    await all;
    clearTimeout(timer);
  }
}
