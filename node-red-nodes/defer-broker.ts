/**
 * defer-broker (config node): the MQTT side of DEFER for the nodes that use
 * it. Either an external broker by URL (with credentials), or "embedded": an
 * Aedes broker started inside the Node-RED process. Nodes register with it;
 * it starts and connects on the first registration, closes when the last one
 * leaves, and tells each user when the connection comes and goes.
 *
 * The dispatcher and status nodes share its one MQTT connection. Each edge
 * node opens its own: a connection has one Last Will, and a node's Will is
 * what tells the dispatcher it went offline.
 */
import type { MqttClient } from 'mqtt';
import { type RunningBroker, startBroker } from '../broker/broker.js';
import { errorMessage } from '../lib/core/errors.js';
import { closeMqtt, connectMqtt } from '../lib/mqtt/connect.js';
import { filterWithin, isName, NAME_RULE } from '../lib/protocol/index.js';
import { type NodeAPI, type RedNode, short } from './red.js';

export interface BrokerState {
  connected: boolean;
  text: string;
}

export interface BrokerUser {
  id: string;
  brokerState(s: BrokerState): void;
}

export interface Endpoint {
  url: string;
  username?: string;
  password?: string;
  pipeline: string;
  clientIdPrefix: string;
}

export interface BrokerConfig {
  name?: string;
  mode?: 'embedded' | 'external';
  url?: string;
  host?: string;
  port?: number | string;
  pipeline?: string;
  clientIdPrefix?: string;
  maxPacketMB?: number | string;
}

export interface DeferBrokerNode extends RedNode {
  /** the configuration error, if any: users show it and do not start */
  problem: string | null;
  pipeline: string;
  register(user: BrokerUser): Promise<Endpoint>;
  deregister(user: BrokerUser): Promise<void>;
  /** the shared connection (after register resolved) */
  client(): MqttClient;
  /**
   * Subscribe `user` to `filter` on the shared connection, as Node-RED's mqtt-broker node does: one
   * MQTT subscription per filter however many nodes want it, messages handed to each user's handler,
   * the subscription dropped when its last user unsubscribes or deregisters.
   */
  subscribe(user: BrokerUser, filter: string, handler: MessageHandler): Promise<void>;
  /** Drop `user`'s subscription to `filter` (all of its subscriptions when no filter is given). */
  unsubscribe(user: BrokerUser, filter?: string): Promise<void>;
}

export type MessageHandler = (topic: string, payload: Buffer) => void;

/**
 * Why the broker node could not start, in two lengths: `status`, short enough for the status line under every node
 * that uses it (Node-RED shows about 60 characters), and `message`, the whole story with what to do, logged once.
 */
export class BrokerStartError extends Error {
  constructor(
    readonly status: string,
    message: string,
  ) {
    super(message);
    this.name = 'BrokerStartError';
  }
}

/** The status a node that uses the broker shows for `err`: the broker's short reason, or the error cut to fit. */
export function statusOf(err: unknown): string {
  return err instanceof BrokerStartError ? err.status : short(`error: ${errorMessage(err)}`);
}

/** The start failure of an embedded broker or of the connection, as a BrokerStartError. */
export function startError(err: unknown, c: BrokerConfig, url: string): BrokerStartError {
  const text = errorMessage(err);
  if ((c.mode ?? 'embedded') === 'embedded' && /already in use/.test(text)) {
    const port = Number(c.port ?? 1883);
    const host = c.host || '127.0.0.1';
    const here = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
    return new BrokerStartError(
      `port ${port} in use: set the DEFER broker to external`,
      // the advice first: the debug sidebar shows a long message's first 80 characters
      `${host}:${port} is taken: set Broker to "external", URL mqtt://${here}:${port} (the broker already there, on most Node-RED hosts Mosquitto), and deploy; ` +
        'or give the embedded broker a free port (docs/node-red.md, "Port 1883 taken")',
    );
  }
  if (/cannot connect to the MQTT broker/.test(text)) return new BrokerStartError(short(`cannot connect to the MQTT broker at ${url}`), text);
  return new BrokerStartError(short(`error: ${text}`), text);
}

/** Check a defer-broker configuration; null when it is good. */
export function brokerProblem(c: BrokerConfig): string | null {
  const mode = c.mode ?? 'embedded';
  if (mode !== 'embedded' && mode !== 'external') return `mode must be embedded or external, not '${String(mode)}'`;
  if (!isName(c.pipeline ?? 'default')) return `pipeline '${c.pipeline}' must be ${NAME_RULE}`;
  if (mode === 'external' && !/^(mqtts?|wss?|tcp|ssl):\/\/[^\s/]+(:\d+)?\/?$/.test(c.url ?? '')) return `broker URL '${c.url ?? ''}' must look like mqtt://host:1883`;
  if (mode === 'embedded') {
    const port = Number(c.port ?? 1883);
    if (!Number.isInteger(port) || port < 0 || port > 65535) return `port '${c.port}' must be an integer from 0 to 65535`;
  }
  if (c.clientIdPrefix && !isName(c.clientIdPrefix)) return `client id prefix '${c.clientIdPrefix}' must be ${NAME_RULE}`;
  return null;
}

export default function (RED: NodeAPI): void {
  function DeferBroker(this: DeferBrokerNode, config: BrokerConfig) {
    RED.nodes.createNode(this, config);
    this.problem = brokerProblem(config);
    this.pipeline = config.pipeline || 'default';
    const users = new Set<BrokerUser>();
    /** filter -> the handler of each user subscribed to it */
    const subs = new Map<string, Map<BrokerUser, MessageHandler>>();
    const route = (topic: string, payload: Buffer) => {
      for (const [filter, handlers] of subs) if (filterWithin(topic, filter)) for (const h of handlers.values()) h(topic, payload);
    };
    let starting: Promise<Endpoint> | undefined;
    let broker: RunningBroker | undefined;
    let shared: MqttClient | undefined;
    let state: BrokerState = { connected: false, text: 'not connected' };
    const push = (s: BrokerState) => {
      state = s;
      for (const u of users) u.brokerState(s);
    };

    const start = async (): Promise<Endpoint> => {
      if (this.problem) throw new Error(this.problem);
      let url = config.url ?? '';
      if ((config.mode ?? 'embedded') === 'embedded') {
        const maxMB = Number(config.maxPacketMB || 64);
        broker = await startBroker({ host: config.host || '127.0.0.1', port: Number(config.port ?? 1883), maxPacketBytes: Math.round(maxMB * 1024 * 1024) });
        url = broker.url;
        this.log(`embedded broker listening at ${url}`);
      }
      const endpoint: Endpoint = {
        url,
        username: this.credentials?.username || undefined,
        password: this.credentials?.password || undefined,
        pipeline: this.pipeline,
        clientIdPrefix: config.clientIdPrefix || 'nodered',
      };
      shared = await connectMqtt({ url, clientIdPrefix: `${endpoint.clientIdPrefix}-shared`, username: endpoint.username, password: endpoint.password });
      shared.on('message', route);
      shared.on('connect', () => push({ connected: true, text: 'connected' }));
      shared.on('offline', () => push({ connected: false, text: 'broker offline: reconnecting' }));
      shared.on('error', (err) => push({ connected: false, text: `broker: ${err.message}` }));
      push({ connected: true, text: `connected to ${url}` });
      return endpoint;
    };

    const stop = async () => {
      starting = undefined;
      const c = shared;
      const b = broker;
      shared = undefined;
      broker = undefined;
      subs.clear();
      await closeMqtt(c);
      await b?.close();
      if (b) this.log('embedded broker closed');
      state = { connected: false, text: 'not connected' };
    };

    this.register = (user) => {
      users.add(user);
      user.brokerState(state);
      starting ??= start().catch(async (err: unknown) => {
        const e = startError(err, config, config.url ?? '');
        this.error(e.message);
        await stop().catch(() => undefined);
        push({ connected: false, text: e.status });
        starting = undefined;
        throw e;
      });
      return starting;
    };

    /** called when the last user has left */
    let allLeft: (() => void) | undefined;
    this.deregister = async (user) => {
      await this.unsubscribe(user).catch(() => undefined);
      users.delete(user);
      if (users.size === 0) {
        await stop();
        allLeft?.();
      }
    };

    this.subscribe = async (user, filter, handler) => {
      if (!users.has(user)) throw new Error('register with the broker node before subscribing');
      const handlers = subs.get(filter) ?? new Map<BrokerUser, MessageHandler>();
      const first = handlers.size === 0;
      handlers.set(user, handler);
      subs.set(filter, handlers);
      if (first) await this.client().subscribeAsync(filter, { qos: 1 });
    };

    this.unsubscribe = async (user, filter) => {
      for (const f of filter === undefined ? [...subs.keys()] : [filter]) {
        const handlers = subs.get(f);
        if (!handlers?.delete(user) || handlers.size > 0) continue;
        subs.delete(f);
        if (shared && !shared.disconnected) await shared.unsubscribeAsync(f);
      }
    };

    this.client = () => {
      if (!shared) throw new Error('the broker connection is not open yet');
      return shared;
    };

    // Node-RED closes every node of a deploy at once, this one too: the embedded broker stays up until the nodes that
    // use it have closed (an edge node says it goes offline, a dispatcher ends its streams), 5 s at most; closed first,
    // each would wait for a broker that is gone, and the deploy with it.
    this.on('close', (_removed, done) => {
      const left = new Promise<void>((resolve) => {
        if (users.size === 0) resolve();
        allLeft = resolve;
        setTimeout(resolve, 5000).unref();
      });
      left
        .then(() => {
          users.clear();
          return stop();
        })
        .then(done, done);
    });
  }

  RED.nodes.registerType('defer-broker', DeferBroker as never, { credentials: { username: { type: 'text' }, password: { type: 'password' } } });
}
