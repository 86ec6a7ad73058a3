/**
 * Names that become MQTT topic levels: pipelines, nodes, devices, dispatcher
 * ids, user ids. One pattern for all of them, checked wherever a name comes in.
 */
import { DeferError } from '../core/errors.js';

/** 1-64 letters, digits, '_', '.' or '-': a topic level with no wildcard or separator in it. */
export const NAME_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;

export const NAME_RULE = "1-64 letters, digits, '_', '.' or '-'";

export function isName(x: unknown): x is string {
  return typeof x === 'string' && NAME_PATTERN.test(x);
}

/** Throws E_CONFIG when `name` cannot be a topic level; `kind` says what it names (node id, device, ...). */
export function assertTopicName(kind: string, name: string): void {
  if (!isName(name)) {
    throw new DeferError('E_CONFIG', `${kind} '${name}' is not a valid name: use ${NAME_RULE} (it becomes an MQTT topic level)`);
  }
}
