import { brokerAuth } from '../../lib/mqtt/connect.js';
import { numberFlag, parseCommand } from '../args.js';
import type { Command } from '../command.js';
import { waitForSignal } from '../process-input.js';
import { formatStatus, StatusReader } from '../status-table.js';

/** `defer status`. */
export const statusCommand: Command = {
  usage: 'defer status [--broker URL] [--pipeline P] [--watch [--interval S]] [--json]',
  about: "Show the pipeline's nodes (state, stage, frames, queue, memory, host) and serving dispatchers, from what they publish on the broker; --watch refreshes it.",
  flags: {
    watch: { type: 'boolean', help: 'refresh until SIGINT or SIGTERM' },
    interval: { type: 'string', help: 'seconds between refreshes with --watch (default 2)' },
    wait: { type: 'string', help: 'seconds to listen before the first table, so that heartbeats arrive (default 1.5)' },
    json: { type: 'boolean', help: 'print JSON (one object per refresh)' },
  },
  async run(argv) {
    const { config, flags } = parseCommand(argv, this.flags);
    const seconds = (name: string, dflt: number) => numberFlag(flags, name, dflt, 0, 3600, 'seconds') * 1000;
    const waitMs = seconds('wait', 1.5);
    const intervalMs = Math.max(200, seconds('interval', 2));
    const reader = await StatusReader.open(config.broker.url, config.pipeline, brokerAuth(config.broker));
    const show = () => {
      const r = reader.report();
      if (flags.json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else process.stdout.write((flags.watch && process.stdout.isTTY ? '\x1b[2J\x1b[H' : '') + formatStatus(r));
    };
    try {
      await new Promise((r) => setTimeout(r, waitMs));
      show();
      if (flags.watch) {
        const timer = setInterval(show, intervalMs);
        await waitForSignal();
        clearInterval(timer);
      }
    } finally {
      await reader.close();
    }
  },
};
