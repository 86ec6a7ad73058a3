/**
 * One way to open an MQTT connection for every role, with a clear error when
 * the broker cannot be reached.
 */

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { DeferError, errorMessage } from '../core/errors.js';

/** Credentials and trust for a client (from broker.username, broker.password, broker.ca). */
export interface BrokerAuth {
  username?: string;
  password?: string;
  ca?: string;
}

/** BrokerAuth from the configuration: empty strings mean unset. */
export function brokerAuth(b: { username: string; password: string; ca: string }): BrokerAuth {
  return { username: b.username || undefined, password: b.password || undefined, ca: b.ca || undefined };
}

export interface ConnectOptions {
  url: string;
  /** prefix of the client id; a short random suffix keeps ids unique */
  clientIdPrefix: string;
  will?: IClientOptions['will'];
  connectTimeoutMs?: number;
  username?: string;
  password?: string;
  /** CA certificate file (PEM) that the broker's TLS certificate must chain to (mqtts://) */
  ca?: string;
}

function readCa(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new DeferError('E_CONFIG', `cannot read the CA certificate ${file} (broker.ca): ${errorMessage(err)}`);
  }
}

export async function connectMqtt(opts: ConnectOptions): Promise<MqttClient> {
  const clientId = `${opts.clientIdPrefix}-${randomBytes(3).toString('hex')}`;
  let client: MqttClient;
  try {
    client = await mqtt.connectAsync(
      opts.url,
      {
        clientId,
        protocolVersion: 4,
        clean: true,
        reconnectPeriod: RECONNECT_MIN_MS,
        connectTimeout: opts.connectTimeoutMs ?? 10_000,
        will: opts.will,
        ...(opts.username ? { username: opts.username, password: opts.password ?? '' } : {}),
        ...(opts.ca ? { ca: readCa(opts.ca) } : {}),
      },
      false,
    );
  } catch (err) {
    const msg = errorMessage(err);
    const hint = /Not authorized|Bad username or password/i.test(msg)
      ? 'Check broker.username and broker.password (DEFER_BROKER_USERNAME, DEFER_BROKER_PASSWORD)'
      : /certificate|self.signed|SSL|TLS/i.test(msg)
        ? "Give the CA that signed the broker's certificate: broker.ca (--ca)"
        : "Is a broker running there? ('defer broker' starts one)";
    throw new DeferError('E_CONFIG', `cannot connect to the MQTT broker at ${opts.url}: ${msg}. ${hint}`);
  }
  // Small activations and acknowledgements must not wait for Nagle's algorithm.
  const noDelay = () => (client.stream as Partial<Socket> | undefined)?.setNoDelay?.(true);
  noDelay();
  client.on('connect', noDelay);
  withBackoff(client);
  return client;
}

export const RECONNECT_MIN_MS = 500;
export const RECONNECT_MAX_MS = 8000;

/**
 * Reconnect with exponential backoff: mqtt.js retries at a fixed period; this
 * doubles the period after every failed attempt (with up to 20% jitter, so
 * nodes that lost the same broker do not return in lockstep) up to
 * RECONNECT_MAX_MS, and starts again from RECONNECT_MIN_MS once connected.
 * mqtt.js subscribes again to what it had (resubscribe) and re-sends
 * unacknowledged QoS 1 messages.
 */
export function withBackoff(client: MqttClient): void {
  if (!client.options.reconnectPeriod) return;
  client.on('reconnect', () => {
    const next = Math.min(RECONNECT_MAX_MS, (client.options.reconnectPeriod ?? RECONNECT_MIN_MS) * 2);
    client.options.reconnectPeriod = Math.round(next * (1 + Math.random() * 0.2));
  });
  client.on('connect', () => {
    client.options.reconnectPeriod = RECONNECT_MIN_MS;
  });
}

/** Publish and wait for the broker's acknowledgement (QoS 1) or the write (QoS 0). */
export function publish(client: MqttClient, topic: string, payload: Buffer, opts: { qos: 0 | 1; retain?: boolean }): Promise<void> {
  return new Promise((resolve, reject) => {
    client.publish(topic, payload, { qos: opts.qos, retain: opts.retain ?? false }, (err) => (err ? reject(err) : resolve()));
  });
}

/**
 * Close a connection: let queued messages go out for up to `graceMs`, then
 * drop it. Without the bound, ending a client whose broker has gone waits
 * forever for acknowledgements that cannot come.
 */
export async function closeMqtt(client: MqttClient | undefined, graceMs = 2000): Promise<void> {
  if (!client) return;
  let timer: NodeJS.Timeout | undefined;
  const graceful = client.endAsync().then(
    () => true,
    () => true,
  );
  const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), graceMs)));
  const done = await Promise.race([graceful, late]);
  clearTimeout(timer);
  if (!done) await client.endAsync(true).catch(() => undefined);
}
