/**
 * Command-line flags: each command declares its flags and the configuration
 * key each one sets; parsing is strict (an unknown flag is an error).
 */
import { parseArgs } from 'node:util';
import { type DeferConfig, loadConfig } from '../config/schema.js';
import { DeferError } from '../lib/core/errors.js';
import { setLogLevel } from '../lib/core/log.js';

export interface FlagSpec {
  /** configuration key the flag sets, e.g. 'dispatcher.model'; omitted for command-local flags */
  key?: string;
  type: 'string' | 'boolean';
  /** convert the string to a number before validation */
  number?: boolean;
  /** list value, comma separated */
  list?: boolean;
  /** the flag sets the key to false (e.g. --no-baseline) */
  negate?: boolean;
  help: string;
}

export const COMMON_FLAGS: Record<string, FlagSpec> = {
  config: { type: 'string', help: 'JSON config file (see config/*.json)' },
  pipeline: { key: 'pipeline', type: 'string', help: 'pipeline name (topic root defer/<pipeline>/)' },
  backend: { key: 'backend', type: 'string', help: 'auto | tensorflow | wasm | cpu' },
  broker: { key: 'broker.url', type: 'string', help: 'broker URL, e.g. mqtt://127.0.0.1:1883' },
  'log-level': { key: 'logLevel', type: 'string', help: 'debug | info | warn | error | silent' },
  help: { type: 'boolean', help: 'show this help' },
};

export interface Parsed {
  config: DeferConfig;
  /** every flag's raw value, including command-local ones */
  flags: Record<string, string | boolean | undefined>;
  positionals: string[];
}

export function parseCommand(argv: string[], specs: Record<string, FlagSpec>, env: NodeJS.ProcessEnv = process.env): Parsed {
  const all = { ...COMMON_FLAGS, ...specs };
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      options: Object.fromEntries(Object.entries(all).map(([k, s]) => [k, { type: s.type }])),
      allowPositionals: true,
      strict: true,
    }) as { values: Record<string, string | boolean | undefined>; positionals: string[] });
  } catch (err) {
    throw new DeferError('E_CONFIG', `${(err as Error).message.replace(/\. To specify a positional argument.*$/s, '')} (see --help)`);
  }
  const overrides: Record<string, unknown> = {};
  for (const [flag, spec] of Object.entries(all)) {
    const v = values[flag];
    if (v === undefined || !spec.key) continue;
    if (spec.negate) overrides[spec.key] = !v;
    else if (spec.number) overrides[spec.key] = Number(v);
    else if (spec.list)
      overrides[spec.key] = String(v)
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
    else overrides[spec.key] = v;
  }
  const config = values.help ? loadConfig(undefined, {}, {}) : loadConfig(values.config as string | undefined, overrides, env);
  setLogLevel(config.logLevel);
  return { config, flags: values, positionals };
}

export function helpText(usage: string, about: string, specs: Record<string, FlagSpec>): string {
  const all = { ...specs, ...COMMON_FLAGS };
  const rows = Object.entries(all).map(([k, s]) => `  --${k}${s.type === 'string' ? ' <value>' : ''}`.padEnd(30) + s.help + (s.key ? ` [${s.key}]` : ''));
  return `usage: ${usage}\n\n${about}\n\noptions:\n${rows.join('\n')}\n`;
}

/** A numeric flag: its value, or `dflt` when it is not given; a clear error when it is not a number in [min, max]. */
export function numberFlag(flags: Parsed['flags'], name: string, dflt: number, min: number, max = Number.POSITIVE_INFINITY, unit = ''): number {
  const v = flags[name] === undefined ? dflt : Number(flags[name]);
  if (!(Number.isFinite(v) && v >= min && v <= max)) {
    throw new DeferError(
      'E_CONFIG',
      `--${name} must be a number${unit ? ` of ${unit}` : ''} ${max === Number.POSITIVE_INFINITY ? `>= ${min}` : `from ${min} to ${max}`}, got '${String(flags[name])}'`,
    );
  }
  return v;
}
