/** A `defer` subcommand: its usage line, what it does, its flags, and what it runs. */
import type { FlagSpec } from './args.js';

export interface Command {
  usage: string;
  about: string;
  flags: Record<string, FlagSpec>;
  run(argv: string[]): Promise<void>;
}
