/**
 * Choosing, for each frame, which replica of each stage serves it: the node with the least expected wait,
 * (frames it holds + 1) x its measured ms per frame / its engines. Each replica thus gets frames in proportion to
 * its measured speed. The router only counts: the frame stream tells it what each node took (`measured`) and
 * when a frame no longer holds its route (`release`).
 */

/** routes after which a replica that was not chosen, and holds no frame, is sent one to be measured again */
export const PROBE_EVERY = 16;

/** weight of the newest figure in a node's moving average of ms per frame */
const NEWEST = 0.2;

/** One node serving a stage, where it reads, and its engines. */
export interface ReplicaTarget {
  node: string;
  topic: string;
  workers: number;
}

export class ReplicaRouter {
  /** frames each node holds now (routed through it, not released) */
  private readonly held = new Map<string, number>();
  /** each node's ms per frame on one engine, a moving average */
  private readonly serviceMs = new Map<string, number>();
  /** per replica, the route (turn) it was last chosen in */
  private readonly lastRouted = new Map<string, number>();
  private turn = 0;

  /**
   * A route for one frame, held until `release`: for each stage, the node with the least expected wait. Unknown
   * speeds count as the stage's fastest known (all unknown: equal); ties go round in turn. A replica not chosen
   * for PROBE_EVERY routes and holding no frame gets the next one, so that its speed is measured again: a slow
   * first frame (a cold engine) would otherwise keep it out for good once its estimate exceeds the frames in
   * flight times its twin's (seen in a CI run: 2 frames of 100 at an estimate of 239 ms against 25).
   */
  route(replicas: ReplicaTarget[][]): ReplicaTarget[] {
    const turn = this.turn++;
    const chosen = replicas.map((stage) => {
      if (stage.length === 1) return stage[0];
      const starved = stage.find((r) => this.holds(r.node) === 0 && turn - (this.lastRouted.get(r.node) ?? turn) >= PROBE_EVERY);
      const pick = starved ?? this.leastWait(stage, turn);
      for (const r of stage) if (!this.lastRouted.has(r.node)) this.lastRouted.set(r.node, turn);
      this.lastRouted.set(pick.node, turn);
      return pick;
    });
    for (const r of chosen) this.held.set(r.node, this.holds(r.node) + 1);
    return chosen;
  }

  /** The frame routed through these nodes no longer holds them (answered, failed, or about to be sent again). */
  release(nodes: readonly string[]): void {
    for (const n of nodes) this.held.set(n, Math.max(0, this.holds(n) - 1));
  }

  /** A node took `busyMs` for a frame (decode + compute + encode, from its hop record). */
  measured(node: string, busyMs: number): void {
    const avg = this.serviceMs.get(node);
    this.serviceMs.set(node, avg === undefined ? busyMs : (1 - NEWEST) * avg + NEWEST * busyMs);
  }

  /** frames routed through `node` that it holds now */
  holds(node: string): number {
    return this.held.get(node) ?? 0;
  }

  /** The replica of a stage with the least expected wait: (frames it holds + 1) x its measured ms per frame / its engines. */
  private leastWait(stage: ReplicaTarget[], turn: number): ReplicaTarget {
    const known = stage.map((r) => this.serviceMs.get(r.node)).filter((x): x is number => x !== undefined);
    const fallback = known.length ? Math.min(...known) : 1;
    let best = stage[0];
    let bestWait = Infinity;
    for (let i = 0; i < stage.length; i++) {
      const r = stage[(i + turn) % stage.length];
      const wait = ((this.holds(r.node) + 1) * (this.serviceMs.get(r.node) ?? fallback)) / r.workers;
      if (wait < bestWait) {
        best = r;
        bestWait = wait;
      }
    }
    return best;
  }
}
