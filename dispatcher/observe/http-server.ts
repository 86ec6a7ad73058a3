/**
 * The dispatcher's HTTP endpoint (`--http-port`): `/metrics` for Prometheus,
 * the live page at `/` with its script and style, `/snapshot` (the picture as
 * JSON) and `/events` (server-sent events: the picture again on every change,
 * at most four times a second, and every second). Nothing else: the static
 * files are a fixed map (no path from the URL reaches the file system),
 * other paths are 404, other methods 405, event streams are bounded.
 * Binds 127.0.0.1 unless told otherwise, and warns when bound wider.
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DeferError } from '../../lib/core/errors.js';
import { log } from '../../lib/core/log.js';
import type { ChainMonitor } from './chain-monitor.js';
import type { DeferMetrics } from './prometheus.js';

export interface ObserverServerOptions {
  host: string;
  /** 0: any free port */
  port: number;
  /** concurrent event streams; more are answered 503 (default 16) */
  maxStreams?: number;
}

export interface ObserverServer {
  url: string;
  /** bound to more than this machine (the warning was given) */
  exposed: boolean;
  close(): Promise<void>;
}

const PAGE_FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/page.js': { file: 'page.js', type: 'text/javascript; charset=utf-8' },
  '/page.css': { file: 'page.css', type: 'text/css; charset=utf-8' },
};
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1']);
const PUSH_MIN_MS = 250;
const PUSH_EVERY_MS = 1000;

export async function startObserverServer(monitor: ChainMonitor, metrics: DeferMetrics, opts: ObserverServerOptions): Promise<ObserverServer> {
  const files = new Map(Object.entries(PAGE_FILES).map(([path, f]) => [path, { body: readFileSync(new URL(`./page/${f.file}`, import.meta.url)), type: f.type }]));
  const maxStreams = opts.maxStreams ?? 16;
  const streams = new Set<ServerResponse>();

  const message = () => `data: ${JSON.stringify(monitor.snapshot())}\n\n`;
  let last = 0;
  let queued: NodeJS.Timeout | undefined;
  const pushAll = () => {
    queued = undefined;
    last = performance.now();
    const m = message(); // one snapshot for every stream
    for (const res of streams) res.write(m);
  };
  const offChange = monitor.onChange(() => {
    if (!streams.size || queued) return;
    const wait = Math.max(0, PUSH_MIN_MS - (performance.now() - last));
    queued = setTimeout(pushAll, wait);
  });
  const tick = setInterval(() => streams.size && pushAll(), PUSH_EVERY_MS);
  tick.unref();

  const send = (res: ServerResponse, status: number, type: string, body: string | Buffer) => {
    res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
    res.end(body);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
    }
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (path === '/metrics') return send(res, 200, metrics.registry.contentType, await metrics.registry.metrics());
    if (path === '/snapshot') return send(res, 200, 'application/json', JSON.stringify(monitor.snapshot()));
    if (path === '/events') {
      if (req.method === 'HEAD') return send(res, 200, 'text/event-stream', '');
      if (streams.size >= maxStreams) return send(res, 503, 'text/plain; charset=utf-8', `too many event streams (at most ${maxStreams})\n`);
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
      streams.add(res);
      req.on('close', () => streams.delete(res));
      res.write(message());
      return;
    }
    const f = files.get(path);
    if (f) return send(res, 200, f.type, f.body);
    return send(res, 404, 'text/plain; charset=utf-8', 'not found\n');
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.warn(`http: ${(err as Error).message}`);
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new DeferError(
          'E_CONFIG',
          err.code === 'EADDRINUSE'
            ? `cannot serve the live page and metrics: port ${opts.port} is in use (dispatcher.httpPort)`
            : `cannot serve the live page and metrics on ${opts.host}:${opts.port}: ${err.message}`,
        ),
      ),
    );
    server.listen(opts.port, opts.host, () => resolve());
  });
  const exposed = !LOOPBACK.has(opts.host);
  if (exposed) log.warn(`the live page and /metrics are served on ${opts.host}, not only this machine: anyone who reaches it sees the deployment (no authentication)`);
  const a = server.address() as AddressInfo;
  const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  return {
    url: `http://${host}:${a.port}`,
    exposed,
    async close() {
      offChange();
      clearInterval(tick);
      clearTimeout(queued);
      for (const res of streams) res.end();
      streams.clear();
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections();
      await closed;
    },
  };
}
