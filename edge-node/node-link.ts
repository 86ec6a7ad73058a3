/**
 * Where the parts of an edge node meet (edge-node.ts puts them together): its one connection to the broker, and
 * the two things every part may say through it, its status and an error report (status-publisher.ts says them).
 */
import type { MqttClient } from 'mqtt';
import type { NodeState, NodeStatus } from '../lib/protocol/index.js';

/** The node's connection to the broker as its parts see it: none before start; `closed` once the node is closing. */
export interface NodeLink {
  readonly client?: MqttClient;
  readonly closed: boolean;
}

/** Publish the node's status (retained): `state`, with `extra` over the fields the node fills in. */
export type SetStatus = (state: NodeState, extra?: Partial<NodeStatus>) => Promise<void>;

/** Publish what the node could not use; `frame` when the message was a frame it could read that far. */
export type ReportError = (topic: string, reason: string, frame?: { deployment: string; frame: string }) => void;
