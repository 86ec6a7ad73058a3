/**
 * The embedded MQTT broker: Aedes on a TCP port (or TLS, with a certificate),
 * with a maximum packet size (Aedes itself sets none), optional users and
 * per-role topic ACLs (broker/auth.ts), and a clean, awaitable shutdown.
 */
import { readFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { Aedes } from 'aedes';
import { type Principal, type UserRecord, authenticateUser, mayPublish, maySubscribe } from './auth.js';
import { DeferError } from '../lib/errors.js';
import { log } from '../lib/log.js';

export interface BrokerOptions {
  host: string;
  /** 0 picks a free port */
  port: number;
  /** largest MQTT packet accepted, in bytes; a client that sends a larger one is disconnected */
  maxPacketBytes: number;
  /** users allowed to connect (then anonymous clients are refused, and ACLs apply) */
  users?: UserRecord[];
  /** TLS certificate and key files (PEM): the broker then speaks mqtts */
  tlsCert?: string;
  tlsKey?: string;
}

export interface RunningBroker {
  url: string;
  host: string;
  port: number;
  aedes: Aedes;
  /** how many connections were closed for sending an oversized packet */
  readonly oversized: number;
  close(): Promise<void>;
}

interface ParserInternals {
  packet: { length: number };
  _parseLength(): boolean;
  emit(event: 'error', err: Error): boolean;
}

/**
 * Cap the packet size of one client. mqtt-packet's parser reads the fixed
 * header's remaining length in `_parseLength`; we check it there, before the
 * body is buffered, and drop the connection when it is over the limit.
 */
function guardPacketSize(client: unknown, socket: Socket, max: number, onOversize: (len: number) => void): void {
  const parser = (client as { _parser?: ParserInternals })._parser;
  if (!parser || typeof parser._parseLength !== 'function') {
    log.warn('broker: cannot enforce the maximum packet size with this Aedes version');
    return;
  }
  const parseLength = parser._parseLength.bind(parser);
  parser._parseLength = () => {
    const done = parseLength();
    if (done && parser.packet.length > max) {
      onOversize(parser.packet.length);
      socket.destroy();
      return false;
    }
    return done;
  };
}

export async function startBroker(opts: BrokerOptions): Promise<RunningBroker> {
  if (!Number.isInteger(opts.maxPacketBytes) || opts.maxPacketBytes < 1024 || opts.maxPacketBytes > 268_435_455) {
    throw new DeferError('E_CONFIG', `broker.maxPacketBytes must be an integer from 1024 to 268435455 (MQTT's limit), got ${opts.maxPacketBytes}`);
  }
  const principals = new WeakMap<object, Principal>();
  const users = opts.users;
  const security = users
    ? {
        authenticate: (client: object, username: string | undefined, password: Buffer | undefined, done: (err: (Error & { returnCode?: number }) | null, ok: boolean | null) => void) => {
          const p = authenticateUser(users, username, password);
          if (!p) {
            log.warn(`broker: refused a connection: bad username or password (user '${username ?? ''}')`);
            const err = Object.assign(new Error('bad username or password'), { returnCode: 4 });
            return done(err, null);
          }
          principals.set(client, p);
          done(null, true);
        },
        authorizePublish: (client: object | null, packet: { topic: string }, done: (err?: Error | null) => void) => {
          const p = client ? principals.get(client) : undefined;
          if (!client) return done(null); // the broker's own messages ($SYS, wills are checked at connect)
          if (!p || !mayPublish(p, packet.topic)) {
            log.warn(`broker: refused a publish to ${packet.topic} by ${p ? `${p.role} ${p.id}` : 'an unknown client'}`);
            return done(new Error(`not allowed to publish to ${packet.topic}`));
          }
          done(null);
        },
        authorizeSubscribe: (client: object, sub: { topic: string }, done: (err: Error | null, sub?: unknown) => void) => {
          const p = principals.get(client);
          if (!p || !maySubscribe(p, sub.topic)) {
            log.warn(`broker: refused a subscription to ${sub.topic} by ${p ? `${p.role} ${p.id}` : 'an unknown client'}`);
            return done(null, null); // SUBACK 0x80: refused
          }
          done(null, sub);
        },
      }
    : {};
  const aedes = await Aedes.createBroker({ maxClientsIdLength: 128, concurrency: 1000, ...(security as object) });
  let oversized = 0;
  const sockets = new Set<Socket>();
  const tls = opts.tlsCert || opts.tlsKey;
  if (tls && !(opts.tlsCert && opts.tlsKey)) throw new DeferError('E_CONFIG', 'TLS needs both broker.tlsCert and broker.tlsKey');
  const onSocket = (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.setNoDelay(true);
    const client = aedes.handle(socket);
    guardPacketSize(client, socket, opts.maxPacketBytes, (len) => {
      oversized++;
      log.warn(`broker: closed a connection that sent a ${len}-byte packet (limit broker.maxPacketBytes = ${opts.maxPacketBytes})`);
    });
  };
  let server: Server;
  if (tls) {
    let cert: Buffer;
    let key: Buffer;
    try {
      cert = readFileSync(opts.tlsCert!);
      key = readFileSync(opts.tlsKey!);
    } catch (err) {
      throw new DeferError('E_CONFIG', `cannot read the broker's TLS certificate or key: ${(err as Error).message}`);
    }
    server = createTlsServer({ cert, key }, onSocket);
  } else server = createServer(onSocket);
  aedes.on('clientError', (client, err) => log.debug(`broker: client ${client?.id}: ${err.message}`));
  aedes.on('connectionError', (_client, err) => log.debug(`broker: connection: ${err.message}`));

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      aedes.close();
      reject(
        new DeferError(
          'E_CONFIG',
          err.code === 'EADDRINUSE'
            ? `cannot start the broker: ${opts.host}:${opts.port} is already in use; stop what holds it, or set broker.port (--port) to another port, or 0 for a free one`
            : `cannot start the broker on ${opts.host}:${opts.port}: ${err.message}`,
        ),
      );
    };
    server.once('error', onError);
    server.listen(opts.port, opts.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : opts.port;
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  let closing: Promise<void> | undefined;
  return {
    url: `${tls ? 'mqtts' : 'mqtt'}://${host}:${port}`,
    host: opts.host,
    port,
    aedes,
    get oversized() {
      return oversized;
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        aedes.close(() => {
          for (const s of sockets) s.destroy();
        });
      });
      return closing;
    },
  };
}
