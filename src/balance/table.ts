/**
 * The balancers that precompute a table from all their endpoints (weighted round robin's cycle,
 * ring hash's ring, Maglev's lookup table) cannot follow one change for less than a rebuild of
 * O(table) (the table depends on every endpoint). So their rebuilds are coalesced, not done per
 * change (issue 11 §6):
 *
 * - a set of up to `TABLE_REBUILD.immediateUpTo` endpoints, or a table with nothing in it yet, is
 *   rebuilt at once on every update, as it always was (cheap at that size, and exact at once);
 * - a larger one is rebuilt lazily, at the first pick that finds changes pending, and at most once
 *   per `TABLE_REBUILD.intervalMs`: a burst of N changes costs one rebuild, and a steady stream of
 *   changes at most one rebuild per interval, however many changes and picks come in between.
 *
 * Between rebuilds the table is served with what changed laid over it: an endpoint that left or
 * was drained is skipped as if the gate refused it (for ring hash, exactly where a rebuild would
 * send its keys), one whose address changed is given as it is now, and one that joined (or whose
 * weight changed) gets its share at the rebuild. If the table has nothing left to give while the
 * set has endpoints (all of them replaced within an interval), the pick rebuilds at once; not when
 * it is the caller's gate that refuses everything (an outage), where a rebuild would not help.
 */
import type { Clock } from '../core/clock.js';
import type { Endpoint, EndpointChanges } from '../discovery/endpoint.js';
import type { Gate, PickContext } from './balancer.js';
import { BaseBalancer, NO_CONTEXT } from './common.js';

/** When tables are rebuilt (see above). */
export const TABLE_REBUILD = Object.freeze({ immediateUpTo: 256, intervalMs: 250 });

export abstract class TableBalancer extends BaseBalancer {
  /** The pickable endpoints (weight > 0) the table was built from, in key order. */
  protected eps: readonly Endpoint[] = [];
  /** What changed since the table was built, by key: the endpoint now, or null (left or drained). */
  private pending: Map<string, Endpoint | null> | null = null;
  private builtAt = -Infinity;
  private outerGate: Gate | undefined = undefined;
  private readonly overlayCtx: { hash: string | Buffer | undefined; available: Gate | undefined } = { hash: undefined, available: undefined };
  private readonly overlayGate: Gate = (e) => {
    const now = this.pending?.get(e.key);
    if (now === null) return false;
    const g = this.outerGate;
    return g === undefined || g(now ?? e);
  };

  constructor(protected readonly clock: Clock) {
    super();
  }

  /** Builds the table from `eps`; `prev` is the previous `eps` (what state to carry over). */
  protected abstract buildTable(prev: readonly Endpoint[]): void;

  /** A pick from the table as built (an endpoint of `eps`). */
  protected abstract pickTable(ctx: PickContext): Endpoint | null;

  /** Changes are waiting for a rebuild (for tests and the admin page). */
  get stale(): boolean {
    return this.pending !== null;
  }

  protected rebuild(): void {
    this.build();
  }

  protected follow(changes: EndpointChanges): void {
    // Nothing built yet (the first snapshot arrives as changes to the empty set): build at once.
    if (this.set.size <= TABLE_REBUILD.immediateUpTo || this.eps.length === 0) {
      this.build();
      return;
    }
    const pending = (this.pending ??= new Map());
    for (const e of changes.removed) pending.set(e.key, null);
    for (const e of changes.upserted) pending.set(e.key, e.weight > 0 ? e : null);
  }

  pick(ctx: PickContext = NO_CONTEXT): Endpoint | null {
    const pending = this.pending;
    if (pending === null) return this.pickTable(ctx);
    if (this.clock.now() - this.builtAt >= TABLE_REBUILD.intervalMs) {
      this.build();
      return this.pickTable(ctx);
    }
    this.outerGate = ctx.available;
    const o = this.overlayCtx;
    o.hash = ctx.hash;
    o.available = this.overlayGate;
    const e = this.pickTable(o);
    if (e !== null) {
      this.outerGate = o.available = undefined;
      return pending.get(e.key) ?? e;
    }
    // Nothing passed. When the caller's gate refused what the overlay left (an outage: every
    // endpoint ejected or behind a breaker), a rebuild would not help: none, or a rebuild per
    // change would be back on the request path. Only a table the overlay emptied is rebuilt.
    this.outerGate = undefined;
    const left = this.pickTable(o);
    o.available = undefined;
    if (left !== null || this.size === 0) return null;
    this.build();
    return this.pickTable(ctx);
  }

  private build(): void {
    const prev = this.eps;
    this.eps = this.set.list().filter((e) => e.weight > 0);
    this.pending = null;
    this.builtAt = this.clock.now();
    this.buildTable(prev);
  }
}
