import { loadAuthHook, readUsers } from '../../broker/auth.js';
import { startBroker } from '../../broker/broker.js';
import { DEFAULT_TOPIC_LIMITS } from '../../broker/topic-limits.js';
import { log } from '../../lib/core/log.js';
import { parseCommand } from '../args.js';
import type { Command } from '../command.js';
import { waitForSignal } from '../process-input.js';

/** `defer broker`. */
export const brokerCommand: Command = {
  usage: 'defer broker [--host H] [--port P]',
  about: 'Run the embedded Aedes MQTT broker until SIGINT or SIGTERM.',
  flags: {
    host: { key: 'broker.host', type: 'string', help: 'address to listen on' },
    port: { key: 'broker.port', type: 'string', number: true, help: 'port (0: a free one)' },
    'max-packet-bytes': { key: 'broker.maxPacketBytes', type: 'string', number: true, help: 'largest packet accepted' },
    users: { key: 'broker.users', type: 'string', help: 'users file (defer user add): clients must log in, per-role ACLs apply' },
    'tls-cert': { key: 'broker.tlsCert', type: 'string', help: 'TLS certificate (PEM): speak mqtts' },
    'tls-key': { key: 'broker.tlsKey', type: 'string', help: 'TLS private key (PEM)' },
    'auth-module': { key: 'broker.authModule', type: 'string', help: 'ES module that checks credentials the users file does not know' },
    persistence: { key: 'broker.persistence', type: 'string', help: 'folder that keeps retained messages and sessions across restarts' },
  },
  async run(argv) {
    const { config } = parseCommand(argv, this.flags);
    const users = config.broker.users ? await readUsers(config.broker.users) : undefined;
    const authHook = config.broker.authModule ? await loadAuthHook(config.broker.authModule) : undefined;
    const b = config.broker;
    const broker = await startBroker({
      host: b.host,
      port: b.port,
      maxPacketBytes: b.maxPacketBytes,
      users,
      authHook,
      topicLimits: { ...DEFAULT_TOPIC_LIMITS, ...b.topicLimits }, // a map given adds to the defaults or overrides them
      persistence: b.persistence || undefined,
      tlsCert: b.tlsCert || undefined,
      tlsKey: b.tlsKey || undefined,
    });
    const auth = [users && `${users.length} users`, authHook && `auth module ${b.authModule}`].filter(Boolean).join(' and ');
    log.info(
      `broker listening at ${broker.url} (max packet ${b.maxPacketBytes} bytes; ${auth ? `${auth}, per-role ACLs` : 'anonymous clients, no ACLs'}${broker.url.startsWith('mqtts') ? ', TLS' : ''}; ${b.persistence ? `persistent store ${b.persistence}` : 'retained messages in memory only'})`,
    );
    if (!auth && !['127.0.0.1', 'localhost', '::1'].includes(config.broker.host))
      log.warn(`broker: listening on ${config.broker.host} without users: anyone who reaches this port can deploy models and read every frame; set broker.users (defer user add)`);
    await waitForSignal();
    await broker.close();
    log.info('broker closed');
  },
};
