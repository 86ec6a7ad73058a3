/**
 * The embedded MQTT broker: Aedes on a TCP port, with a maximum packet size
 * (Aedes itself sets none) and a clean, awaitable shutdown.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { Aedes } from 'aedes';
import { DeferError } from '../lib/errors.js';
import { log } from '../lib/log.js';

export interface BrokerOptions {
  host: string;
  /** 0 picks a free port */
  port: number;
  /** largest MQTT packet accepted, in bytes; a client that sends a larger one is disconnected */
  maxPacketBytes: number;
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
  const aedes = await Aedes.createBroker({ maxClientsIdLength: 128, concurrency: 1000 });
  let oversized = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.setNoDelay(true);
    const client = aedes.handle(socket);
    guardPacketSize(client, socket, opts.maxPacketBytes, (len) => {
      oversized++;
      log.warn(`broker: closed a connection that sent a ${len}-byte packet (limit broker.maxPacketBytes = ${opts.maxPacketBytes})`);
    });
  });
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
    url: `mqtt://${host}:${port}`,
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
