/**
 * A small levelled logger on stderr (stdout is kept for results, e.g. `--json`).
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';
const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 99 };

let level: LogLevel = (process.env.DEFER_LOG_LEVEL as LogLevel) in ORDER ? (process.env.DEFER_LOG_LEVEL as LogLevel) : 'info';
let prefix = '';

export function setLogLevel(l: LogLevel): void {
  level = l;
}
export function setLogPrefix(p: string): void {
  prefix = p ? `[${p}] ` : '';
}

function write(l: LogLevel, msg: string): void {
  if (ORDER[l] < ORDER[level]) return;
  process.stderr.write(`${prefix}${l === 'info' ? '' : l + ': '}${msg}\n`);
}

export const log = {
  debug: (m: string) => write('debug', m),
  info: (m: string) => write('info', m),
  warn: (m: string) => write('warn', m),
  error: (m: string) => write('error', m),
};
