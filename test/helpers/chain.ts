/** Chains for failure tests: edge nodes as real `defer node` processes, and a dispatcher here. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeProcesses } from '../../cli/node-processes.js';
import { Dispatcher, type DispatcherOptions } from '../../dispatcher/dispatcher.js';
import { type DispatcherEvent, describeEvent } from '../../dispatcher/events.js';

/** DEFER_TEST_NODE_LOG=info shows the nodes' and the dispatcher's lines */
export const verbose = Boolean(process.env.DEFER_TEST_NODE_LOG);

/** Start `ids` as `defer node` processes, each slowed `slowdown` x and with its own empty weight cache. */
export function startNodeProcesses(brokerUrl: string, pipeline: string, ids: string[], slowdown: number): NodeProcesses {
  const cache = mkdtempSync(join(tmpdir(), 'defer-chain-cache-'));
  const p = new NodeProcesses({
    ids,
    brokerUrl,
    pipeline,
    backend: 'wasm',
    logLevel: process.env.DEFER_TEST_NODE_LOG || 'error',
    argsFor: (id) => ['--slowdown', String(slowdown), '--weight-cache', join(cache, id)],
    onLine: (id, l) => verbose && process.stderr.write(`[${id}] ${l}\n`),
  });
  p.start();
  return p;
}

/** A dispatcher for the tiny CNN whose events go to `events`. */
export function testDispatcher(brokerUrl: string, pipeline: string, events: DispatcherEvent[], extra: Partial<DispatcherOptions> = {}): Dispatcher {
  const d = new Dispatcher({
    brokerUrl,
    pipeline,
    chunkBytes: 4096,
    readyTimeoutMs: 30_000,
    frameTimeoutMs: 30_000,
    maxInFlight: 6,
    maxMessageBytes: 1 << 24,
    codec: 'lz4',
    qos: 1,
    ...extra,
  });
  d.events.onAny((e) => {
    events.push(e);
    if (verbose) process.stderr.write(`[dispatcher] ${describeEvent(e)}\n`);
  });
  return d;
}

/** The events, one line each, for assertion messages. */
export const eventLines = (events: DispatcherEvent[]) => events.map((e) => JSON.stringify(e)).join('\n');
