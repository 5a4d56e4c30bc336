/**
 * A service client: what a caller keeps per destination service, whatever the protocol. Its
 * balancer (fed by the watch stream's endpoint sets), its traffic state (routes, retry budget,
 * breakers, outlier detection, limits, rate limits), the request hash key of a hashing balancer,
 * and the caller's own active health checks. The proxy's drivers (HTTP/1 today) and later the SDK
 * ask it for an endpoint per attempt; nothing here does I/O (the active checker is given by the
 * caller: it probes over the network).
 *
 * A `Destination` is what a call needs of a service: a `ServiceClient` outbound, or the one local
 * app behind an inbound listener (`localDestination`).
 */
import { DEFAULT_BALANCER_POLICY, type BalancerPolicy } from '../api/balancer.js';
import type { ActiveCheckPolicy, BackendPolicy, RoutePolicy } from '../api/traffic.js';
import { DEFAULT_TRAFFIC } from '../api/traffic.js';
import type { Service } from '../api/types.js';
import { compileHashKey, createBalancer, NOOP_COMPLETION, type Balancer, type Completion, type HashKeyExtractor } from '../balance/index.js';
import type { HashInput } from '../balance/hash-key.js';
import type { Clock } from '../core/clock.js';
import type { ErrorCode } from '../core/errors.js';
import type { Endpoint, EndpointSet } from '../discovery/endpoint.js';
import { TrafficState, type NoEndpointReason, type TrafficEvent } from '../resilience/traffic-state.js';
import { Splitter, type BackendChoice, type Split, type SplitDebug } from './split.js';
import { ColdStartQueue, type Hold } from './cold-start.js';

/** Why a request or an attempt was refused before anything was sent: answered as a proxy error. */
export interface Refusal {
  readonly code: ErrorCode;
  readonly message: string;
  /** When the code's own status is not the one to answer with. */
  readonly status?: number;
  /** For the error body, beside what the call adds. */
  readonly details?: Record<string, unknown>;
  /** A rate limit's wait: the answer says when to come back (`retry-after`). */
  readonly retryAfterMs?: number;
}

/** Where a call goes. */
export interface Destination {
  readonly service: string;
  /** Routes, retry budget, breakers, outlier detection, limits and rate limits of the service. */
  readonly traffic: TrafficState;
  /**
   * An endpoint for this request, none of `tried` when another is available; null when none is
   * left. `route`: the request's route (its `backends` split the service: see split.ts); `prior`:
   * the backend of the request's earlier attempts, which a retry stays in while it can.
   */
  pick(req: HashInput, tried: readonly Endpoint[] | null, route?: RoutePolicy, prior?: BackendChoice | null): Endpoint | null;
  /** An endpoint of the subset `b` of the service (a mirror's: src/engine/mirror.ts); null when none is left; absent: no subsets. */
  pickIn?(b: BackendPolicy, req: HashInput): Endpoint | null;
  /** The backend of the last `pick` (read right after it); null or absent: the route splits nothing. */
  readonly chosen?: BackendChoice | null;
  /** After a `pick` that found nothing in a split: the split (for the error). */
  emptySplit?(): Split | null;
  /** A request goes to `e` (load-aware balancers count it); end the Completion once. */
  start(e: Endpoint): Completion;
  /** Why `pick` found no endpoint (for the error). */
  whyNone(): NoEndpointReason;
  /**
   * A call that found no endpoint waits for the service to wake (cold-start.ts): a Hold until
   * `resume` runs, a refusal (the queue is full), or null: the service does not hold (no
   * `coldStart` policy, or it has instances, just none to pick).
   */
  hold?(resume: () => void): Hold | Refusal | null;
}

/** The caller's own health checks of a service's endpoints (they probe: the caller provides them). */
export interface HealthChecker {
  readonly policy: ActiveCheckPolicy;
  update(set: EndpointSet): void;
  stop(): void;
}
export type HealthCheckerFactory = (traffic: TrafficState, policy: ActiveCheckPolicy, clock: Clock) => HealthChecker;

const sameJson = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

export class ServiceClient implements Destination {
  balancer: Balancer;
  policy: BalancerPolicy;
  readonly traffic: TrafficState;
  /** The splits of the service's routes and their subsets (split.ts). */
  readonly splitter: Splitter;
  private hashKey: HashKeyExtractor | null;
  private checker: HealthChecker | null = null;
  private readonly coldStart: ColdStartQueue;

  constructor(
    readonly service: string,
    def: Service | null,
    set: EndpointSet,
    private readonly clock: Clock,
    onEvent: (e: TrafficEvent) => void,
    private readonly checks: HealthCheckerFactory | null,
  ) {
    this.policy = def?.balancer ?? DEFAULT_BALANCER_POLICY;
    this.balancer = createBalancer(this.policy.kind, { clock });
    this.balancer.update(set);
    this.hashKey = hashing(this.policy);
    this.traffic = new TrafficState({ service, policy: def?.traffic ?? DEFAULT_TRAFFIC, clock, onEvent });
    this.traffic.setEndpoints(set);
    this.splitter = new Splitter(
      () => createBalancer(this.policy.kind, { clock }),
      () => this.balancer,
    );
    this.splitter.update(set);
    this.splitter.setRoutes(this.traffic.policy.routes);
    this.coldStart = new ColdStartQueue(service, clock, (waiting) => onEvent({ type: 'cold-start', service, waiting }));
    this.followChecks();
  }

  /** The Service resource changed (or went away: the defaults apply). */
  setDefinition(def: Service | null): void {
    this.traffic.setPolicy(def?.traffic ?? DEFAULT_TRAFFIC);
    this.splitter.setRoutes(this.traffic.policy.routes);
    this.followChecks();
    // Held calls do not outlive the policy that held them: they go ahead (and fail without an instance).
    if (this.traffic.policy.coldStart === null) this.coldStart.release();
    const p = def?.balancer ?? DEFAULT_BALANCER_POLICY;
    if (p.kind === this.policy.kind && sameJson(p.hashKey, this.policy.hashKey)) return;
    const set = this.balancer.set;
    this.policy = p;
    this.balancer = createBalancer(p.kind, { clock: this.clock });
    this.balancer.update(set);
    this.hashKey = hashing(p);
    this.splitter.rebalance();
  }

  /**
   * The watch stream's next set. Each part applies only what changed since the set it had
   * (`EndpointSet.changesSince`): O(log n) per changed endpoint, not a rebuild per change.
   */
  update(set: EndpointSet): void {
    this.balancer.update(set);
    this.traffic.setEndpoints(set);
    this.splitter.update(set);
    this.checker?.update(set);
    if (set.pickable > 0) this.coldStart.release();
  }

  hold(resume: () => void): Hold | Refusal | null {
    const p = this.traffic.policy.coldStart;
    if (p === null || this.balancer.set.pickable > 0) return null;
    return this.coldStart.hold(p, resume);
  }

  /** Calls held for a cold start now. */
  get held(): number {
    return this.coldStart.size;
  }

  /** Starts, restarts or stops the caller's own health checks as the policy says. */
  private followChecks(): void {
    const p = this.traffic.policy.activeHealthCheck;
    if (this.checker !== null && sameJson(this.checker.policy, p)) return;
    this.checker?.stop();
    this.checker = null;
    for (const k of [...this.traffic.down]) this.traffic.setActiveHealth(k, true, 'active health check turned off');
    if (p === null || this.checks === null) return;
    this.checker = this.checks(this.traffic, p, this.clock);
    this.checker.update(this.balancer.set);
  }

  pick(req: HashInput, tried: readonly Endpoint[] | null, route?: RoutePolicy, prior: BackendChoice | null = null): Endpoint | null {
    const hash = this.hashKey === null ? undefined : this.hashKey(req);
    const split = route === undefined ? null : this.splitter.splitOf(route);
    if (split === null) {
      this.splitter.chosen = null;
      this.splitter.lastEmpty = null;
      return this.traffic.pick(this.balancer, hash, tried);
    }
    return this.splitter.pick(split, this.traffic, hash, tried, prior);
  }

  pickIn(b: BackendPolicy, req: HashInput): Endpoint | null {
    return this.splitter.pickIn(b, this.traffic, this.hashKey === null ? undefined : this.hashKey(req));
  }

  get chosen(): BackendChoice | null {
    return this.splitter.chosen;
  }

  emptySplit(): Split | null {
    return this.splitter.lastEmpty;
  }

  start(e: Endpoint): Completion {
    const c = this.balancer.start(e);
    return this.splitter.active ? this.splitter.starts(e, c) : c;
  }

  /** The splits of the service's routes, for /debug/endpoints: a subset no instance is in is `unknown`. */
  debugSplits(): SplitDebug[] {
    return this.splitter.debug();
  }

  whyNone(): NoEndpointReason {
    return this.traffic.whyNone(this.balancer);
  }

  stop(): void {
    this.checker?.stop();
    this.traffic.stop();
  }
}

function hashing(p: BalancerPolicy): HashKeyExtractor | null {
  return p.hashKey === null ? null : compileHashKey(p.hashKey);
}

/** The refusal when `dest` has no endpoint to give: which instances are out, and why. */
export function noEndpoint(dest: Destination): Refusal {
  const r = serviceNoEndpoint(dest);
  const split = dest.emptySplit?.() ?? null;
  if (split === null) return r;
  const backends = split.backends.map((b, i) => ({ subset: Object.fromEntries(b.subset), weight: b.weight, endpoints: split.subsets[i]?.set.size ?? 0 }));
  const text = split.backends.map((b, i) => `${b.name} (weight ${b.weight}, ${backends[i]?.endpoints ?? 0} instances)`).join(', ');
  const unknown = backends.every((b) => b.endpoints === 0);
  const message = unknown ? `no instance of "${dest.service}" is in the route's backends: ${text}` : `${r.message}; the route's backends: ${text}`;
  return { ...r, code: unknown ? 'SKEIN_E_NO_HEALTHY_ENDPOINT' : r.code, message, details: { ...r.details, backends } };
}

function serviceNoEndpoint(dest: Destination): Refusal {
  const service = dest.service;
  const w = dest.whyNone();
  if (w.endpoints === 0) return { code: 'SKEIN_E_NO_HEALTHY_ENDPOINT', message: `service "${service}" has no healthy endpoint` };
  const out: string[] = [];
  if (w.breakersOpen > 0) out.push(`${w.breakersOpen} behind an open circuit breaker`);
  if (w.ejected > 0) out.push(`${w.ejected} ejected by outlier detection`);
  if (w.failingActiveChecks > 0) out.push(`${w.failingActiveChecks} failing this proxy's active health check`);
  if (out.length === 0) return { code: 'SKEIN_E_NO_HEALTHY_ENDPOINT', message: `no endpoint of "${service}" is left to try` };
  const panic = w.panic === true ? ' (in panic mode: ejections and failing active checks were ignored, breakers were not)' : '';
  const message = `none of the ${w.endpoints} instances of "${service}" may take requests now: ${out.join(', ')}${panic}`;
  return { code: w.breakersOpen > 0 ? 'SKEIN_E_BREAKER_OPEN' : 'SKEIN_E_NO_HEALTHY_ENDPOINT', message };
}

const NONE: NoEndpointReason = Object.freeze({ endpoints: 0, failingActiveChecks: 0, breakersOpen: 0, ejected: 0 });

/** The one local app behind an inbound listener: one endpoint, tried once. */
export function localDestination(service: string, app: Endpoint, traffic: TrafficState): Destination {
  return {
    service,
    traffic,
    whyNone: () => NONE,
    pick: (_req, tried) => (tried === null ? app : null),
    start: () => NOOP_COMPLETION,
  };
}
