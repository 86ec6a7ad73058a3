/**
 * The embedded MQTT broker: Aedes on a TCP port (or TLS, with a certificate),
 * with a maximum packet size (Aedes itself sets none) and per-topic size
 * limits, optional users or an external auth hook with per-role topic ACLs
 * (broker/auth.ts), optional persistence on disk (retained messages and
 * sessions survive a restart), and a clean, awaitable shutdown.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { Aedes } from 'aedes';
import { DeferError } from '../lib/core/errors.js';
import { log } from '../lib/core/log.js';
import { encodeErrorReport, parseTopic, topicsFor } from '../lib/protocol/index.js';
import { type AuthHook, authenticateUser, mayPublish, maySubscribe, type Principal, type UserRecord } from './auth.js';
import { DEFAULT_TOPIC_LIMITS, limitFor, type TopicLimits } from './topic-limits.js';

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
  /** an external check of username and password (loaded from broker.authModule); asked when the users file does not know the user */
  authHook?: AuthHook;
  /** largest payload per topic pattern under defer/<pipeline>/ (default DEFAULT_TOPIC_LIMITS); a client publishing more is disconnected, and the refusal reported on the pipeline's errors topic */
  topicLimits?: TopicLimits;
  /** folder of a LevelDB store: retained messages (deployments, statuses) and sessions survive a broker restart; unset: memory only */
  persistence?: string;
}

export interface RunningBroker {
  url: string;
  host: string;
  port: number;
  aedes: Aedes;
  /** how many connections were closed for sending an oversized packet */
  readonly oversized: number;
  /** how many publishes were refused for exceeding their topic's size limit */
  readonly overLimit: number;
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
  const hook = opts.authHook;
  const secured = Boolean(users || hook);
  let overLimit = 0;
  const refuse = (client: object | null, topic: string, why: string): Error => {
    log.warn(`broker: refused a publish to ${topic} by ${describe(client)}: ${why}`);
    return new Error(`publish to ${topic} refused: ${why}`);
  };
  const describe = (client: object | null) => {
    const p = client ? principals.get(client) : undefined;
    return p ? `${p.role} ${p.id}` : `client ${(client as { id?: string } | null)?.id ?? '(unknown)'}`;
  };
  const authenticate = async (client: object, username: string | undefined, password: Buffer | undefined): Promise<Principal | null> => {
    const known = users ? authenticateUser(users, username, password) : null;
    if (known || !hook) return known;
    const r = await hook({ username: username ?? '', password: password?.toString('utf8') ?? '', clientId: (client as { id?: string }).id ?? '' });
    return r ? { username: username ?? '', role: r.role, id: r.id ?? username ?? '' } : null;
  };
  const security = {
    ...(secured
      ? {
          authenticate: (client: object, username: string | undefined, password: Buffer | undefined, done: (err: (Error & { returnCode?: number }) | null, ok: boolean | null) => void) => {
            authenticate(client, username, password).then(
              (p) => {
                if (!p) {
                  log.warn(`broker: refused a connection: bad username or password (user '${username ?? ''}')`);
                  return done(Object.assign(new Error('bad username or password'), { returnCode: 4 }), null);
                }
                principals.set(client, p);
                done(null, true);
              },
              (err: unknown) => {
                log.error(`broker: the auth hook failed (${(err as Error)?.message ?? String(err)}): connection refused`);
                done(Object.assign(new Error('authentication unavailable'), { returnCode: 3 }), null);
              },
            );
          },
          authorizeSubscribe: (client: object, sub: { topic: string }, done: (err: Error | null, sub?: unknown) => void) => {
            const p = principals.get(client);
            if (!p || !maySubscribe(p, sub.topic)) {
              log.warn(`broker: refused a subscription to ${sub.topic} by ${describe(client)}`);
              return done(null, null); // SUBACK 0x80: refused
            }
            done(null, sub);
          },
        }
      : {}),
    authorizePublish: (client: object | null, packet: { topic: string; payload: Buffer | string }, done: (err?: Error | null) => void) => {
      if (!client) return done(null); // the broker's own messages ($SYS, wills are checked at connect)
      if (packet.topic.startsWith('$SYS/')) return done(refuse(client, packet.topic, '$SYS/ is reserved'));
      if (secured) {
        const p = principals.get(client);
        if (!p || !mayPublish(p, packet.topic)) return done(refuse(client, packet.topic, 'not allowed for this role'));
      }
      const limit = limitFor(opts.topicLimits ?? DEFAULT_TOPIC_LIMITS, packet.topic);
      const size = typeof packet.payload === 'string' ? Buffer.byteLength(packet.payload) : packet.payload.length;
      if (limit !== undefined && size > limit) {
        overLimit++;
        const err = refuse(client, packet.topic, `${size} bytes, over the topic's limit of ${limit} (broker.topicLimits)`);
        reportOverLimit(packet.topic, size, limit, describe(client));
        return done(err);
      }
      done(null);
    },
  };
  let reportOverLimit = (_topic: string, _size: number, _limit: number, _who: string): void => undefined;
  let db: { close(): Promise<void> } | undefined;
  let persistence: unknown;
  if (opts.persistence) {
    try {
      mkdirSync(opts.persistence, { recursive: true });
      const { Level } = await import('level');
      const { default: levelPersistence } = (await import('aedes-persistence-level')) as { default: (db: unknown) => unknown };
      const level = new Level(opts.persistence);
      await level.open();
      db = level;
      persistence = levelPersistence(level);
    } catch (err) {
      throw new DeferError('E_CONFIG', `cannot open the broker's persistence store at ${opts.persistence} (broker.persistence): ${(err as Error).message}. Is another broker using it?`);
    }
  }
  const aedes = await Aedes.createBroker({ maxClientsIdLength: 128, concurrency: 1000, ...(persistence ? { persistence } : {}), ...(security as object) } as Parameters<typeof Aedes.createBroker>[0]);
  reportOverLimit = (topic, size, limit, who) => {
    const at = parseTopic(topic);
    if (!at) return;
    const reason = `${size} bytes from ${who}, over the topic's limit of ${limit} bytes (broker.topicLimits): connection closed`;
    aedes.publish(
      { cmd: 'publish', topic: topicsFor(at.pipeline).errors, payload: encodeErrorReport({ broker: true, topic, reason }), qos: 0, retain: false, dup: false } as Parameters<typeof aedes.publish>[0],
      () => undefined,
    );
  };
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
    get overLimit() {
      return overLimit;
    },
    close() {
      closing ??= Promise.all([
        new Promise<void>((resolve) => server.close(() => resolve())),
        new Promise<void>((resolve) =>
          aedes.close(() => {
            for (const s of sockets) s.destroy();
            resolve();
          }),
        ).then(() => db?.close().catch((err: Error) => log.warn(`broker: closing the persistence store: ${err.message}`))),
      ]).then(() => undefined);
      return closing;
    },
  };
}
