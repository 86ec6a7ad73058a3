/**
 * Standbys keep the running deployment's stages in their weight caches, so that
 * a takeover builds from disk: each standby is sent the deployment's prefetch
 * list (retained on node/<id>/prefetch, so one that starts later gets it too),
 * and a node that joins the chain has its list cleared.
 */
import type { MqttClient } from 'mqtt';
import { errorMessage } from '../../lib/core/errors.js';
import { log } from '../../lib/core/log.js';
import { publish } from '../../lib/mqtt/connect.js';
import { encodePrefetchList, type Topics } from '../../lib/protocol/index.js';
import type { DeploymentPackage } from '../deploy/deployment-package.js';

export class StandbyPrefetch {
  /** nodes that were sent a prefetch list (cleared when they join the chain) */
  private readonly prefetching = new Set<string>();
  /** the deployment whose stages the standbys were last told to prefetch */
  private prefetchedFor = '';

  constructor(
    private readonly client: () => MqttClient,
    private readonly topics: Topics,
  ) {}

  /** Bring the lists up to date with deployment `d` and these standbys; called after every change of the chain. */
  async update(d: DeploymentPackage, standbys: string[]): Promise<void> {
    const client = this.client();
    try {
      const inChain = d.stages.map((s) => s.nodeId);
      for (const n of inChain.filter((x) => this.prefetching.has(x))) {
        await publish(client, this.topics.nodePrefetch(n), Buffer.alloc(0), { qos: 1, retain: true });
        this.prefetching.delete(n);
      }
      const toSend = standbys.filter((n) => this.prefetchedFor !== d.id || !this.prefetching.has(n));
      if (!toSend.length) return;
      const list = encodePrefetchList({ deployment: d.id, stages: d.stages.map((s) => ({ weightsNode: s.assignment.weightsNode ?? s.nodeId, manifest: s.assignment.manifest })) });
      for (const n of toSend) {
        await publish(client, this.topics.nodePrefetch(n), list, { qos: 1, retain: true });
        this.prefetching.add(n);
      }
      this.prefetchedFor = d.id;
    } catch (err) {
      log.warn(`supervisor: cannot send the standbys their prefetch list: ${errorMessage(err)}`);
    }
  }
}
