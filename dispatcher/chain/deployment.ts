/**
 * A running deployment, as the dispatcher hands it out: its package (stages,
 * nodes, assignments), the stream into it, and what watches over it. `id` and
 * `package` change when the supervisor mends the chain with a new deployment.
 */
import type { FlatModel } from '../../lib/model/flat-model.js';
import type { DeploymentPackage } from '../deploy/deployment-package.js';
import type { RepairEvent } from '../events.js';
import type { FrameStream } from './frame-stream.js';

export interface Deployment {
  id: string;
  package: DeploymentPackage;
  stream: FrameStream;
  deployMs: number;
  flat: FlatModel;
  /** watches the chain and mends it (absent with supervise: false) */
  supervisor?: { readonly events: RepairEvent[]; readonly standbys: string[]; stop(): void };
}
