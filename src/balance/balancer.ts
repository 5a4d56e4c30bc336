/**
 * The Balancer interface: the data plane's policy for choosing one endpoint of a service per
 * request. One file per algorithm sits beside this one and exports its registration
 * (`{kind, schema, factory}`); `createBalancer` in index.ts makes them by kind.
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
import { Type, type TObject, type TSchema } from '@sinclair/typebox';
import type { Clock } from '../core/clock.js';
import type { Rng } from '../core/backoff.js';
import type { Endpoint, EndpointSet } from '../discovery/endpoint.js';
import type { BalancerKind } from '../api/balancer.js';

// The kinds are listed once, with the resource schema (src/api/balancer.ts).
export { BALANCER_KINDS, DEFAULT_BALANCER as DEFAULT_BALANCER_KIND, isBalancerKind, type BalancerKind } from '../api/balancer.js';

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

/** What every balancer may be given besides its own options. */
export interface BalancerDeps {
  /** Time for peak-ewma's decay and the paced table rebuilds (table.ts). Default: the system clock. */
  readonly clock?: Clock | undefined;
  /** First positions, draws, and requests without a hash key. Default Math.random. */
  readonly rng?: Rng | undefined;
}

/**
 * One balancer algorithm, as each algorithm's file registers it: its kind, the schema of its own
 * options (unknown options are refused; the constructor checks the values), and the factory.
 */
export interface BalancerRegistration<K extends BalancerKind = BalancerKind, O extends object = object> {
  readonly kind: K;
  readonly schema: TObject;
  readonly factory: (options: O, deps: BalancerDeps) => Balancer;
}

/** The schema of a kind's own options: these fields, nothing else. */
export function optionsSchema(kind: BalancerKind, props: Record<string, TSchema> = {}): TObject {
  return Type.Object(props, { additionalProperties: false, description: `Options of the ${kind} balancer.` });
}

/** The completion of balancers that do not track load. */
export const NOOP_COMPLETION: Completion = Object.freeze({
  end(): void {
    /* nothing to record */
  },
});
