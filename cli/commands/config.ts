import { writeFile } from 'node:fs/promises';
import { configurationDoc } from '../../config/schema.js';
import { DeferError } from '../../lib/core/errors.js';
import { parseCommand } from '../args.js';
import type { Command } from '../command.js';

/** `defer config`. */
export const configCommand: Command = {
  usage: 'defer config (show | docs [--out FILE])',
  about: 'Show the effective configuration, or write docs/configuration.md from the schema.',
  flags: { out: { type: 'string', help: 'file to write the docs to (default: stdout)' } },
  async run(argv) {
    const { config, flags, positionals } = parseCommand(argv, this.flags);
    if (positionals[0] === 'docs') {
      if (typeof flags.out === 'string') await writeFile(flags.out, configurationDoc());
      else process.stdout.write(configurationDoc());
    } else if (positionals[0] === 'show' || positionals.length === 0) {
      const shown = { ...config, broker: { ...config.broker, password: config.broker.password ? '(set)' : '' } };
      process.stdout.write(JSON.stringify(shown, null, 2) + '\n');
    } else throw new DeferError('E_CONFIG', `usage: ${this.usage}`);
  },
};
