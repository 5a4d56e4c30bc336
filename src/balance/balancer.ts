/**
 * The Balancer interface: the data plane's policy for choosing one endpoint of a service per
 * request. One file per algorithm sits beside this one; `createBalancer` in index.ts makes them.
 *
 * Contract shared by every balancer:
 * - `update(set)` swaps in a new snapshot. State for endpoints that stay (in-flight counts,
 *   latency estimates, round-robin positions) is kept; an endpoint whose address or port changed
 *   under the same key starts afresh (it is a new process). When `set` is the current snapshot
 *   with one change applied (`set.changesSince(current)`, how the watch stream delivers them), only
 *   that change is applied: O(1) or O(log n) per changed endpoint, whatever the service's size.
 *   Precomputed tables (weighted round robin, ring hash, Maglev) are rebuilt on updates only, and
 *   for large sets those rebuilds are coalesced (table.ts). Calling it again with the same snapshot
 *   object does nothing.
 * - `pick(ctx)` returns an endpoint of the current snapshot, or null when there is none to give.
 *   Weight-0 endpoints are never returned. When `ctx.available` is given, no endpoint for which it
 *   returns false is returned; null means no endpoint is available. `pick` allocates nothing on
 *   its common path and never does I/O.
 * - `start(e)` tells a load-aware balancer that a request was sent to `e`; the returned
 *   Completion's `end(outcome)` must be called exactly once when the response (or failure) is
 *   known (later calls are ignored). Balancers that do not use load return a shared no-op.
 */
import type { Endpoint, EndpointSet } from '../discovery/endpoint.js';

export const BALANCER_KINDS = ['round-robin', 'weighted-round-robin', 'random', 'least-request', 'peak-ewma', 'ring-hash', 'maglev'] as const;
export type BalancerKind = (typeof BALANCER_KINDS)[number];
export const DEFAULT_BALANCER_KIND: BalancerKind = 'peak-ewma';

/**
 * A gate: false for endpoints that must not get this request (open breaker, ejected outlier,
 * already tried by this request's earlier attempts).
 */
export type Gate = (e: Endpoint) => boolean;

export interface PickContext {
  /** The request's hash key (see hash-key.ts); used by ring-hash and maglev, ignored by others. */
  readonly hash?: string | Buffer | undefined;
  readonly available?: Gate | undefined;
}

export interface Outcome {
  /** What the proxy measured for this request, e.g. time to response headers. */
  readonly latencyMs: number;
  /** False for failures (connect errors, timeouts, 5xx): see each balancer for what it does. */
  readonly ok: boolean;
}

export interface Completion {
  end(outcome: Outcome): void;
}

/** A random source in [0, 1): Math.random or a seeded generator from rng.ts. */
export type { Rng } from '../core/backoff.js';

export interface Balancer {
  readonly kind: BalancerKind;
  /** The snapshot last given to `update` (the empty set at first). */
  readonly set: EndpointSet;
  /** How many endpoints can be picked (weight > 0), ignoring any gate. */
  readonly size: number;
  update(set: EndpointSet): void;
  pick(ctx?: PickContext): Endpoint | null;
  start(e: Endpoint): Completion;
}

/** The completion of balancers that do not track load. */
export const NOOP_COMPLETION: Completion = Object.freeze({
  end(): void {
    /* nothing to record */
  },
});
