/**
 * What the dispatcher and its supervisor tell the world, as typed events:
 * deployment progress, nodes failing and coming back, repairs, the broker
 * going and coming back. The CLI prints them (`describeEvent`, or JSON lines
 * with --json), the Node-RED dispatcher shows them as its status, and tests
 * wait on them. No one reads log text.
 */

import { count } from '../lib/core/words.js';
import type { HopChoice } from '../lib/planning/precision-choice.js';
import type { Precision } from '../lib/protocol/index.js';

export const REPAIR_KINDS = ['standby', 'merge', 'replan', 'reassign', 'restore', 'reconnect', 'replica', 'rejoin'] as const;
export type RepairKind = (typeof REPAIR_KINDS)[number];

/** A repair that worked: the chain runs again. */
export interface RepairEvent {
  /** replica: a stage's other nodes took the frames of its failed replica; rejoin: that replica, up and idle again, serves its stage again; standby: stage moved to a standby; merge / replan: new deployment over the nodes left; reassign: a node that dropped its stage got it again; restore: back to the first split; reconnect: broker connection back */
  kind: RepairKind;
  /** epoch ms when the failure was noticed */
  at: number;
  /** the failed node (not for restore and reconnect) */
  node?: string;
  stage?: number;
  /** what it was: 'offline' (Last Will or clean stop), 'no heartbeat for N ms', 'failed: ...', ... */
  cause: string;
  /** the standby that took the stage */
  replacement?: string;
  /** the deployment running now */
  deployment: string;
  /** the deployment it replaced, when the repair made a new one (merge, replan, restore) */
  previous?: string;
  /** node ids of the chain now, in order */
  chain: string[];
  /** ms from noticing the failure to the chain working again */
  repairMs: number;
  /** frames sent again */
  resent: number;
  /** the retained deployment was republished (the broker had lost it) */
  republished?: boolean;
}

export type DispatcherEvent =
  | { type: 'precision-chosen'; chain: string[]; precision: Precision[]; hops: HopChoice[]; calibration: string }
  | { type: 'deploy-start'; deployment: string; nodes: string[]; stages: number; totalBytes: number }
  | { type: 'weights-sent'; deployment: string; sentBytes: number; totalBytes: number; pct: number }
  | { type: 'nodes-ready'; deployment: string; ready: string[]; total: number }
  | { type: 'deploy-done'; deployment: string; ms: number }
  | { type: 'adopted'; deployment: string; chain: string[]; replaced: { node: string; by: string }[]; missing?: string[] }
  | { type: 'node-failed'; deployment: string; node: string; stage: number; stageCount: number; cause: string; held: number }
  | { type: 'node-left'; deployment: string; node: string; stage: number; stageCount: number; cause: string }
  | { type: 'repair-start'; kind: 'standby'; deployment: string; stage: number; stageCount: number; standby: string; weightsNode: string }
  | { type: 'repair-start'; kind: 'merge' | 'replan'; deployment: string; how: string; cuts: string[]; chain: string[]; mergedInto?: { stage: number; node: string } }
  | { type: 'repair-start'; kind: 'restore'; deployment: string; cuts: string[]; chain: string[]; was: string[] }
  | { type: 'standby-refused'; deployment: string; standby: string; reason: string }
  | ({ type: 'repair-done' } & RepairEvent)
  | { type: 'repair-failed'; deployment: string; reason: string }
  | { type: 'broker-lost'; deployment: string; held: number }
  | { type: 'broker-back'; deployment: string; afterMs: number; waitingFor: string[] }
  | { type: 'unsupervised'; deployment: string; node: string; other: string }
  | { type: 'frame-failed'; deployment: string; frame: string; device: string; reason: string }
  | { type: 'stream-start'; deployment: string; frames: number; nodes: string[]; replanned: boolean }
  | { type: 'serving'; deployment: string; broker: string; frames: string; results: string; metrics: string }
  /** an emulated device changed while frames flow (defer up --fleet): its CPU quota, its link, or both; `was`: before */
  | { type: 'device-changed'; node: string; atMs: number; cpus?: number; mbit?: number; was: { cpus?: number; mbit?: number } };

export type DispatcherEventType = DispatcherEvent['type'];

const mb = (b: number) => (b / 1e6).toFixed(1);
const s2 = (ms: number) => (ms / 1000).toFixed(2);

/** The event as one line for people (indented lines belong to the event above them). */
export function describeEvent(e: DispatcherEvent): string {
  switch (e.type) {
    case 'precision-chosen':
      return [
        `precision auto: ${e.precision.join(', ')} (agreement measured on ${e.calibration})`,
        ...e.hops.map((h) => `  hop ${h.hop} (${h.hop === 0 ? 'dispatcher' : e.chain[h.hop - 1]} -> ${e.chain[h.hop]}): ${h.precision}: ${h.reason}`),
      ].join('\n');
    case 'deploy-start':
      return `deploying ${e.deployment}: ${count(e.stages, 'stage')} on ${e.nodes.join(', ')}, ${mb(e.totalBytes)} MB of weights`;
    case 'weights-sent':
      return `  weights sent: ${mb(e.sentBytes)}/${mb(e.totalBytes)} MB (${e.pct}%)`;
    case 'nodes-ready':
      return `  ready: ${e.ready.length}/${e.total} (${e.ready.join(', ')})`;
    case 'deploy-done':
      return `deployment ${e.deployment} ready in ${(e.ms / 1000).toFixed(1)} s`;
    case 'adopted': {
      const swapped = e.replaced.map((r) => `${r.by} in place of ${r.node}`);
      const missing = e.missing?.length ? `; ${e.missing.join(', ')} not running (${e.missing.length > 1 ? 'they rejoin' : 'it rejoins'} once up and idle)` : '';
      return `adopted deployment ${e.deployment}, already running on ${e.chain.join(', ')}${swapped.length ? ` (${swapped.join(', ')})` : ''}: no weights sent${missing}`;
    }
    case 'node-failed':
      return `node ${e.node} (stage ${e.stage + 1}/${e.stageCount} of ${e.deployment}) is down (${e.cause}); ${count(e.held, 'frame')} in flight ${e.held === 1 ? 'is' : 'are'} held`;
    case 'node-left':
      return `node ${e.node} (stage ${e.stage + 1}/${e.stageCount} of ${e.deployment}) ${e.cause}: assigning it again`;
    case 'repair-start':
      if (e.kind === 'standby') return `  stage ${e.stage + 1}/${e.stageCount} goes to standby ${e.standby} (weights retained under ${e.weightsNode})`;
      if (e.kind === 'restore') return `back to ${count(e.chain.length, 'stage')}: cuts ${e.cuts.join(', ')} on ${e.chain.join(' -> ')} (was ${e.was.join(' -> ')})`;
      return `  no standby is up: ${e.how}; cuts ${e.cuts.join(', ') || '(none)'} on ${e.chain.join(' -> ')}`;
    case 'standby-refused':
      return `  standby ${e.standby} did not take the stage: ${e.reason}`;
    case 'repair-done':
      switch (e.kind) {
        case 'standby':
          return `  chain mended in ${s2(e.repairMs)} s: ${e.chain.join(' -> ')}; ${count(e.resent, 'frame')} sent again`;
        case 'replica':
          return `  stage ${(e.stage ?? 0) + 1} goes on without ${e.node} (${s2(e.repairMs)} s); ${count(e.resent, 'frame')} it held sent again through the others`;
        case 'rejoin':
          return `  ${e.node} serves stage ${(e.stage ?? 0) + 1} again as a replica (${e.cause}; ready in ${s2(e.repairMs)} s)`;
        case 'reassign':
          return `  ${e.node} runs stage ${(e.stage ?? 0) + 1} again after ${s2(e.repairMs)} s; ${count(e.resent, 'frame')} sent again`;
        case 'restore':
          return `  restored in ${s2(e.repairMs)} s as deployment ${e.deployment} (was ${e.previous}); ${count(e.resent, 'frame')} sent again`;
        case 'reconnect':
          return `  chain back after ${s2(e.repairMs)} s${e.republished ? ' (the broker had lost the retained deployment: republished)' : ''}; ${count(e.resent, 'frame')} sent again`;
        default:
          return `  chain mended in ${s2(e.repairMs)} s as deployment ${e.deployment} (was ${e.previous}); ${count(e.resent, 'frame')} sent again`;
      }
    case 'repair-failed':
      return `could not mend the chain: ${e.reason}`;
    case 'broker-lost':
      return `lost the broker; ${count(e.held, 'frame')} in flight ${e.held === 1 ? 'is' : 'are'} held, new frames wait; reconnecting`;
    case 'broker-back':
      return `reconnected to the broker after ${(e.afterMs / 1000).toFixed(1)} s; waiting for ${e.waitingFor.join(', ')}`;
    case 'frame-failed':
      return `frame ${e.frame} from ${e.device} failed: ${e.reason}`;
    case 'stream-start':
      return `streaming ${count(e.frames, 'frame')} through ${count(e.nodes.length, 'node')}${e.replanned ? ' (replanned)' : ''}`;
    case 'device-changed':
      return `fleet: ${e.node} ${[e.cpus !== undefined ? `now has ${e.cpus} cores (was ${e.was.cpus})` : '', e.mbit !== undefined ? `its link now ${e.mbit} Mbit/s (was ${e.was.mbit})` : ''].filter(Boolean).join(', ')}, ${(e.atMs / 1000).toFixed(1)} s after frames started`;
    case 'serving':
      return `serving devices: frames on ${e.frames}, results on ${e.results}`;
    case 'unsupervised':
      return `node ${e.node} now runs deployment ${e.other}, not ${e.deployment}: deployment ${e.deployment} is no longer supervised`;
  }
}
