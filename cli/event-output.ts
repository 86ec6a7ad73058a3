/**
 * How the CLI shows the dispatcher's events: a line for people on stderr, or,
 * with --json, one JSON object per event on stderr (stdout keeps the summary).
 */

import type { Dispatcher } from '../dispatcher/dispatcher.js';
import { describeEvent } from '../dispatcher/events.js';
import { log } from '../lib/core/log.js';

export function printEvents(d: Dispatcher, json: boolean): () => void {
  return d.events.onAny((e) => {
    if (json) process.stderr.write(JSON.stringify(e) + '\n');
    else log.info(describeEvent(e));
  });
}
