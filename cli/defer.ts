#!/usr/bin/env node
/**
 * The `defer` command: one subcommand per file in cli/commands/.
 */
import { DeferError, errorMessage } from '../lib/core/errors.js';
import { log } from '../lib/core/log.js';
import { helpText } from './args.js';
import type { Command } from './command.js';

/**
 * Each command's module is imported only when that command runs: an edge node (`defer node`) then never loads the
 * broker, the dispatcher or the bench (an idle node: about 135 MB RSS instead of 150; docs/memory.md).
 */
const commands: Record<string, () => Promise<Command>> = {
  up: async () => (await import('./commands/up.js')).upCommand,
  sensor: async () => (await import('./commands/sensor.js')).sensorCommand,
  status: async () => (await import('./commands/status.js')).statusCommand,
  user: async () => (await import('./commands/user.js')).userCommand,
  broker: async () => (await import('./commands/broker.js')).brokerCommand,
  node: async () => (await import('./commands/node.js')).nodeCommand,
  dispatch: async () => (await import('./commands/dispatch.js')).dispatchCommand,
  plan: async () => (await import('./commands/plan.js')).planCommand,
  model: async () => (await import('./commands/model.js')).modelCommand,
  config: async () => (await import('./commands/config.js')).configCommand,
  'build-zfp': async () => (await import('./commands/build-zfp.js')).buildZfpCommand,
};

async function usage(): Promise<string> {
  const abouts = await Promise.all(Object.entries(commands).map(async ([name, load]) => `  ${name.padEnd(9)} ${(await load()).about}`));
  return ['usage: defer <command> [options]', '', ...abouts, '', "'defer <command> --help' lists a command's options. Configuration: docs/configuration.md.", ''].join('\n');
}

async function main(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(await usage());
    return;
  }
  const load = Object.hasOwn(commands, name) ? commands[name] : undefined;
  if (!load) throw new DeferError('E_CONFIG', `unknown command '${name}'\n\n${await usage()}`);
  const cmd = await load();
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
