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

/** Progress lines for a wait on the nodes' calibration: which nodes are missing, why, and for how long so far. */
export function waitingFor(nodes: string[], timeoutMs: number, progress: (line: string) => void): (missing: string[], waitedMs: number) => void {
  return (missing, waitedMs) =>
    progress(`waiting for ${missing.length} of ${nodes.length} nodes to report their calibration (${Math.round(waitedMs / 1000)} s of ${timeoutMs / 1000} s): ${missing.join('; ')}`);
}
