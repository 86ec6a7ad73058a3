#!/usr/bin/env node
/**
 * The `defer` command: one subcommand per file in cli/commands/.
 */
import { DeferError, errorMessage } from '../lib/core/errors.js';
import { log } from '../lib/core/log.js';
import { helpText } from './args.js';
import type { Command } from './command.js';
import { brokerCommand } from './commands/broker.js';
import { configCommand } from './commands/config.js';
import { dispatchCommand } from './commands/dispatch.js';
import { modelCommand } from './commands/model.js';
import { nodeCommand } from './commands/node.js';
import { planCommand } from './commands/plan.js';
import { sensorCommand } from './commands/sensor.js';
import { statusCommand } from './commands/status.js';
import { upCommand } from './commands/up.js';
import { userCommand } from './commands/user.js';

const commands: Record<string, Command> = {
  up: upCommand,
  sensor: sensorCommand,
  status: statusCommand,
  user: userCommand,
  broker: brokerCommand,
  node: nodeCommand,
  dispatch: dispatchCommand,
  plan: planCommand,
  model: modelCommand,
  config: configCommand,
};

function usage(): string {
  return [
    'usage: defer <command> [options]',
    '',
    ...Object.entries(commands).map(([name, c]) => `  ${name.padEnd(9)} ${c.about}`),
    '',
    "'defer <command> --help' lists a command's options. Configuration: docs/configuration.md.",
    '',
  ].join('\n');
}

async function main(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return;
  }
  const cmd = commands[name];
  if (!cmd) throw new DeferError('E_CONFIG', `unknown command '${name}'\n\n${usage()}`);
  if (rest.includes('--help')) {
    process.stdout.write(helpText(cmd.usage, cmd.about, cmd.flags));
    return;
  }
  await cmd.run(rest);
}

main(process.argv.slice(2)).then(
  () => {
    // tfjs and mqtt can hold handles open; the work is done
    setImmediate(() => process.exit(process.exitCode ?? 0));
  },
  (err: unknown) => {
    log.error(err instanceof DeferError ? err.message : ((err as Error)?.stack ?? errorMessage(err)));
    process.exit(err instanceof DeferError && err.code === 'E_CONFIG' ? 2 : 1);
  },
);
