/**
 * The resilience state one caller keeps for one destination service: its routes, the retry
 * budget, the breakers and the outlier detector, endpoints that fail the caller's own active
 * checks, the limits' counters and the rate limiters. The proxy's forwarder (and later the SDK)
 * asks it which endpoints may get a request (a gate the balancer respects: nothing here touches
 * registry objects) and tells it how each attempt went.
 *
 * A new policy (the Service resource changed) rebuilds only the parts whose settings changed;
 * the others keep their state.
 *
 * What counts against an instance (docs/traffic.md, "What counts against an instance"): the mesh
 * failing to reach it (status 0: connect failure or timeout, reset, per-try timeout, a peer
 * proxy's refusal) is a failure for its breaker and a local-origin failure for outlier detection;
 * an app's 503 (overloaded, unavailable) is a failure for both; an app's other 5xx is a 5xx for
 * outlier detection only (the breaker takes it as a success: the app answered about its request);
 * anything else is a success.
 *
 * Panic (Envoy's healthy_panic_threshold): when fewer than `policy.panicThreshold` percent of the
 * service's endpoints (weight > 0) may take traffic, because the others are ejected or failing this
 * caller's active checks, `pick` ignores those two verdicts and spreads over every endpoint.
 * Breakers and the tried-endpoint exclusion still apply. The state is recomputed only when
 * something it depends on changed (an ejection or return, an active-check change, the endpoints,
 * the policy, an ejection running out while in panic), so a pick with nothing ejected and nothing
 * down costs what it did before: three field reads.
 */
import type { Balancer, Gate, PickContext } from '../balance/balancer.js';
import type { Clock } from '../core/clock.js';
import { EndpointSet, type Endpoint } from '../discovery/endpoint.js';
import type { RateLimitPolicy, RoutePolicy, TrafficPolicy } from '../api/traffic.js';
import { Breakers, type BreakerState } from './breaker.js';
import { OutlierDetector } from './outlier.js';
import { createRateLimiter, KeyedRateLimiter, type RateLimiter } from './rate-limit.js';
import { RetryBudget } from './retry-budget.js';
import { RouteTable } from './routes.js';

export type TrafficEvent =
  | { type: 'eject' | 'return'; service: string; endpoint: string; reason: string; ejections: number; untilMs: number | null }
  | { type: 'breaker'; service: string; endpoint: string; from: BreakerState; to: BreakerState; reason: string }
  | { type: 'active-check'; service: string; endpoint: string; healthy: boolean; reason: string }
  /** A service scaled to zero got a request: the proxy holds it (with `waiting` others) and asks for the service to be woken. */
  | { type: 'cold-start'; service: string; waiting: number }
  | PanicEvent;

/** Entering (`panicking` true) or leaving panic mode, with the counts that decided it. */
export interface PanicEvent extends PanicCounts {
  readonly type: 'panic';
  readonly service: string;
  readonly panicking: boolean;
}

/** The numbers behind a panic decision. */
export interface PanicCounts {
  /** Endpoints with weight > 0. */
  readonly endpoints: number;
  /** Of those, how many may take traffic (neither ejected nor failing active checks). */
  readonly available: number;
  readonly ejected: number;
  readonly failingActiveChecks: number;
  /** The policy's panicThreshold, percent. */
  readonly threshold: number;
}

/**
 * A panic event as one line of text (the `detail` of a /stats event), and back: the proxy writes
 * it, the control plane reads the counts out of it for the mesh event.
 * "entered: 0 of 1 instances may take traffic (1 ejected, 0 failing active checks), below the panic threshold of 50%"
 */
export function panicDetail(e: PanicEvent): string {
  const counts = `${e.available} of ${e.endpoints} instances may take traffic (${e.ejected} ejected, ${e.failingActiveChecks} failing active checks)`;
  return e.panicking ? `entered: ${counts}, below the panic threshold of ${e.threshold}%` : `left: ${counts}, the panic threshold is ${e.threshold}%`;
}

const PANIC_DETAIL = /^(entered|left): (\d+) of (\d+) instances may take traffic \((\d+) ejected, (\d+) failing active checks\), [a-z ]+ (\d+)%$/;

/** The fields of a `panicDetail` line; null for another text. */
export function parsePanicDetail(detail: string): (PanicCounts & { panicking: boolean }) | null {
  const m = PANIC_DETAIL.exec(detail);
  if (m === null) return null;
  const n = (i: number) => Number(m[i]);
  return { panicking: m[1] === 'entered', available: n(2), endpoints: n(3), ejected: n(4), failingActiveChecks: n(5), threshold: n(6) };
}

export interface TrafficStateOptions {
  readonly service: string;
  readonly policy: TrafficPolicy;
  readonly clock: Clock;
  readonly onEvent?: (e: TrafficEvent) => void;
  readonly rng?: () => number;
}

/** Why no endpoint could be picked: how many endpoints are out, and for which reason (one each, in this order). */
export interface NoEndpointReason {
  /** Endpoints with weight > 0. */
  readonly endpoints: number;
  readonly failingActiveChecks: number;
  readonly breakersOpen: number;
  readonly ejected: number;
  /**
   * True when the service is in panic mode: ejections and active checks were ignored, so every
   * endpoint is counted behind its breaker first (the only gate left).
   */
  readonly panic?: boolean;
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

class Limiter {
  private readonly one: RateLimiter | null;
  private readonly keyed: KeyedRateLimiter | null;
  constructor(
    readonly policy: RateLimitPolicy,
    clock: Clock,
  ) {
    const opts = { requestsPerSecond: policy.requestsPerSecond, burst: policy.burst, algorithm: policy.algorithm, clock };
    this.one = policy.perCaller ? null : createRateLimiter(opts);
    this.keyed = policy.perCaller ? new KeyedRateLimiter(opts) : null;
  }
  take(caller: string): number {
    return this.one !== null ? this.one.take() : (this.keyed as KeyedRateLimiter).take(caller);
  }
}

export class TrafficState {
  readonly service: string;
  policy: TrafficPolicy;
  routes: RouteTable;
  budget: RetryBudget;
  breakers: Breakers | null = null;
  outlier: OutlierDetector | null = null;
  /** Endpoint keys failing this caller's active health checks. */
  readonly down = new Set<string>();
  /** Requests in flight to the service / waiting for a connection; connections open. */
  active = 0;
  pending = 0;
  readonly connections = { open: 0 };
  /** Times a request was refused by a limit, by a rate limit. */
  overflows = 0;
  rateLimited = 0;
  /** Whether the last pick was made in panic mode (ejections and failing active checks ignored). */
  panicking = false;
  /** Picks (a request's attempts) made in panic mode since start. */
  panicPicks = 0;

  private readonly clock: Clock;
  private readonly onEvent: ((e: TrafficEvent) => void) | undefined;
  private readonly rng: (() => number) | undefined;
  /** By direction and scope: routes that inherit the service's limit share its bucket. */
  private readonly limiters = new Map<string, Limiter>();
  private excluded: readonly Endpoint[] | null = null;
  private readonly ctx: { hash: string | Buffer | undefined; available: Gate | undefined } = { hash: undefined, available: undefined };
  private readonly gate: Gate;
  /** The gate in panic mode: only the tried set and breakers. */
  private readonly panicGate: Gate;
  /** Something the panic decision depends on changed since it was made. */
  private panicDirty = true;
  /** The set the panic decision was made for (a new balancer snapshot means a new decision). */
  private panicSet: EndpointSet | null = null;
  /** While panicking: when the first ejection runs out (the decision may change then). */
  private panicRecheckAt = Infinity;
  /** The counts of the last decision, for debug(). */
  private panicCounts: PanicCounts | null = null;
  /** The endpoints last given to `setEndpoints`. */
  private endpoints = EndpointSet.empty();

  constructor(opts: TrafficStateOptions) {
    this.service = opts.service;
    this.clock = opts.clock;
    this.onEvent = opts.onEvent;
    this.rng = opts.rng;
    this.policy = opts.policy;
    this.routes = new RouteTable(opts.policy.routes);
    this.budget = this.makeBudget(opts.policy);
    this.breakers = this.makeBreakers(opts.policy);
    this.outlier = this.makeOutlier(opts.policy);
    this.gate = (e) => {
      const x = this.excluded;
      if (x !== null) for (let i = 0; i < x.length; i++) if ((x[i] as Endpoint).key === e.key) return false;
      if (this.down.size > 0 && this.down.has(e.key)) return false;
      if (this.outlier !== null && this.outlier.isEjected(e.key)) return false;
      return this.breakers === null || this.breakers.allows(e.key);
    };
    this.panicGate = (e) => {
      const x = this.excluded;
      if (x !== null) for (let i = 0; i < x.length; i++) if ((x[i] as Endpoint).key === e.key) return false;
      return this.breakers === null || this.breakers.allows(e.key);
    };
  }

  private makeBudget(p: TrafficPolicy): RetryBudget {
    return new RetryBudget({ ratio: p.budget.ratio, minRetriesPerSecond: p.budget.minRetriesPerSecond, windowMs: p.budget.windowMs, clock: this.clock });
  }

  private makeBreakers(p: TrafficPolicy): Breakers | null {
    const b = p.breaker;
    if (b === null) return null;
    return new Breakers({
      consecutiveFailures: b.consecutiveFailures,
      failureRate: b.failureRate,
      backoffMinMs: b.backoffMinMs,
      backoffMaxMs: b.backoffMaxMs,
      clock: this.clock,
      ...(this.rng === undefined ? {} : { rng: this.rng }),
      onChange: (endpoint, from, to, reason) => this.onEvent?.({ type: 'breaker', service: this.service, endpoint, from, to, reason }),
    });
  }

  private makeOutlier(p: TrafficPolicy): OutlierDetector | null {
    const o = p.outlier;
    if (o === null) return null;
    const d = new OutlierDetector({
      consecutive5xx: o.consecutive5xx,
      consecutiveGatewayFailure: o.consecutiveGatewayFailure,
      consecutiveLocalOriginFailure: o.consecutiveLocalOriginFailure,
      intervalMs: o.intervalMs,
      baseEjectionMs: o.baseEjectionMs,
      maxEjectionMs: o.maxEjectionMs,
      maxEjectionPercent: o.maxEjectionPercent,
      successRate: o.successRate,
      failurePercentage: o.failurePercentage,
      clock: this.clock,
      onEvent: (e) => {
        this.panicDirty = true;
        this.onEvent?.({ type: e.type, service: this.service, endpoint: e.key, reason: e.reason, ejections: e.ejections, untilMs: e.untilMs });
      },
    });
    d.setEndpoints(this.endpoints.list().map((e) => e.key));
    return d;
  }

  /** A changed Service resource: parts whose settings are unchanged keep their state. */
  setPolicy(p: TrafficPolicy): void {
    const old = this.policy;
    if (same(old, p)) return;
    this.policy = p;
    this.panicDirty = true;
    this.routes = new RouteTable(p.routes);
    this.limiters.clear();
    if (!same(old.budget, p.budget)) this.budget = this.makeBudget(p);
    if (!same(old.breaker, p.breaker)) this.breakers = this.makeBreakers(p);
    if (!same(old.outlier, p.outlier)) {
      this.outlier?.stop();
      this.outlier = this.makeOutlier(p);
    }
  }

  /**
   * The endpoint set changed: forget the state of endpoints that left. When `set` was made from
   * the last one by one change (the watch stream's way), only what changed is touched, O(changes):
   * the others' breakers, ejections and active-check results stay as they are (issue 11 §6).
   */
  setEndpoints(set: EndpointSet): void {
    const prev = this.endpoints;
    this.endpoints = set;
    this.panicDirty = true;
    const changes = set.changesSince(prev);
    if (changes === null) {
      const keys = set.list().map((e) => e.key);
      const keep = new Set(keys);
      this.outlier?.setEndpoints(keys);
      this.breakers?.retain(keep);
      for (const k of this.down) if (!keep.has(k)) this.down.delete(k);
      return;
    }
    for (const e of changes.removed) {
      this.outlier?.removeEndpoint(e.key);
      this.breakers?.forget(e.key);
      this.down.delete(e.key);
    }
    for (const e of changes.upserted) this.outlier?.addEndpoint(e.key);
  }

  /**
   * An endpoint for a request: none of `tried` when another is available (a retry goes to
   * another endpoint when there is one), never one behind an open breaker, and none ejected or
   * failing the active checks unless the service is in panic mode (see the top of this file).
   */
  pick(balancer: Balancer, hash: string | Buffer | undefined, tried: readonly Endpoint[] | null): Endpoint | null {
    if (this.panicDirty || balancer.set !== this.panicSet || (this.panicking && this.clock.now() >= this.panicRecheckAt)) this.decidePanic(balancer);
    const panic = this.panicking;
    const ctx = this.ctx;
    ctx.hash = hash;
    // Nothing gated (the common case): the balancer's fast path, without a call per candidate.
    const gated = tried !== null || this.breakers?.anyNotClosed === true || (!panic && (this.down.size > 0 || this.outlier?.anyEjected === true));
    ctx.available = gated ? (panic ? this.panicGate : this.gate) : undefined;
    this.excluded = tried;
    let e = balancer.pick(ctx as PickContext);
    if (e === null && tried !== null) {
      this.excluded = null;
      e = balancer.pick(ctx as PickContext);
    }
    this.excluded = null;
    if (panic && e !== null) this.panicPicks++;
    return e;
  }

  /**
   * Whether the service is in panic mode: fewer than panicThreshold percent of its endpoints
   * (weight > 0) may take traffic. O(ejected + failing active checks); emits a 'panic' event when
   * the answer changes.
   */
  private decidePanic(balancer: Balancer): void {
    const threshold = this.policy.panicThreshold;
    const set = balancer.set;
    const endpoints = balancer.size;
    const o = this.outlier;
    let ejected = 0;
    let failingActiveChecks = 0;
    let both = 0;
    let recheckAt = Infinity;
    if (threshold > 0 && endpoints > 0) {
      for (const k of this.down) if ((set.get(k)?.weight ?? 0) > 0) failingActiveChecks++;
      if (o !== null && o.anyEjected) {
        const now = this.clock.now();
        // isEjected ends the ejections that ran out (deleting from the set being walked is safe).
        for (const k of o.ejectedKeys()) {
          if ((set.get(k)?.weight ?? 0) <= 0 || !o.isEjected(k)) continue;
          ejected++;
          if (this.down.has(k)) both++;
          const until = o.ejectedUntil(k) ?? now;
          if (until < recheckAt) recheckAt = until;
        }
      }
    }
    const available = endpoints - failingActiveChecks - ejected + both;
    const panic = threshold > 0 && endpoints > 0 && available * 100 < threshold * endpoints;
    this.panicCounts = { endpoints, available, ejected, failingActiveChecks, threshold };
    this.panicSet = set;
    this.panicRecheckAt = panic ? recheckAt : Infinity;
    // Ejections ended above raised events that set the flag: this decision has seen them.
    this.panicDirty = false;
    if (panic === this.panicking) return;
    this.panicking = panic;
    this.onEvent?.({ type: 'panic', service: this.service, panicking: panic, ...this.panicCounts });
  }

  /** Why `pick` found nothing, for the error. */
  whyNone(balancer: Balancer): NoEndpointReason {
    if (this.panicDirty || balancer.set !== this.panicSet) this.decidePanic(balancer);
    const panic = this.panicking;
    let endpoints = 0;
    let failingActiveChecks = 0;
    let breakersOpen = 0;
    let ejected = 0;
    for (const e of balancer.set.list()) {
      if (e.weight <= 0) continue;
      endpoints++;
      const breakerOpen = this.breakers !== null && !this.breakers.allows(e.key);
      // In panic mode only the breakers gate, so they come first.
      if (panic && breakerOpen) breakersOpen++;
      else if (this.down.has(e.key)) failingActiveChecks++;
      else if (breakerOpen) breakersOpen++;
      else if (this.outlier?.isEjected(e.key) === true) ejected++;
    }
    return panic ? { endpoints, failingActiveChecks, breakersOpen, ejected, panic } : { endpoints, failingActiveChecks, breakersOpen, ejected };
  }

  /** A request was sent to `key`. */
  started(key: string): void {
    this.breakers?.started(key);
  }

  /**
   * How an attempt at `key` went: `status` is the response status, or 0 when the mesh failed
   * (connect failure or timeout, reset or malformed response before the head, per-try timeout, a
   * peer proxy's own refusal: a local-origin failure). See the table at the top of this file.
   */
  record(key: string, status: number): void {
    const b = this.breakers;
    const o = this.outlier;
    if (status === 0) {
      b?.failure(key);
      o?.failure(key, 'local-origin');
    } else if (status === 503) {
      // The app says it is overloaded or unavailable: evidence against the instance.
      b?.failure(key);
      o?.failure(key, 'gateway');
    } else if (status >= 500 && status <= 599) {
      // The app answered about its request (a bad input downstream, a bug): the instance is
      // reachable, so its breaker stays closed; only a streak of these ejects it.
      b?.success(key);
      o?.failure(key, status === 502 || status === 504 ? 'gateway' : 'upstream-5xx');
    } else {
      b?.success(key);
      o?.success(key);
    }
  }

  /**
   * 0 when the request may go; otherwise ms until it would be allowed (rate limited). Routes that
   * inherit the service's limit share its bucket (limiters are kept per limit, not per route).
   */
  rateLimit(route: RoutePolicy, direction: 'inbound' | 'outbound', caller: string): number {
    const p = route.rateLimit[direction];
    if (p === null) return 0;
    const key = direction === 'outbound' ? p.scope : `in:${p.scope}`;
    let l = this.limiters.get(key);
    if (l === undefined) {
      l = new Limiter(p, this.clock);
      this.limiters.set(key, l);
    }
    const wait = l.take(caller);
    if (wait > 0) this.rateLimited++;
    return wait;
  }

  /** Active health check result for an endpoint. */
  setActiveHealth(key: string, healthy: boolean, reason: string): void {
    const was = !this.down.has(key);
    if (was === healthy) return;
    if (healthy) this.down.delete(key);
    else this.down.add(key);
    this.panicDirty = true;
    this.onEvent?.({ type: 'active-check', service: this.service, endpoint: key, healthy, reason });
  }

  /** For error bodies and the explain header. */
  summary(): { breakers: { open: number; halfOpen: number } | null; ejected: number; activeCheckFailing: number; budget: number; panic: boolean } {
    const c = this.breakers?.counts();
    return {
      breakers: c === undefined ? null : { open: c.open, halfOpen: c.halfOpen },
      ejected: this.outlier?.ejectedCount ?? 0,
      activeCheckFailing: this.down.size,
      budget: this.budget.available,
      panic: this.panicking,
    };
  }

  /** For /debug/endpoints. */
  debug(): object {
    return {
      policy: this.policy,
      inFlight: this.active,
      pending: this.pending,
      connections: this.connections.open,
      overflows: this.overflows,
      rateLimited: this.rateLimited,
      budget: { available: this.budget.available, exhausted: this.budget.exhausted },
      breakers: this.breakers?.counts() ?? null,
      outliers: this.outlier?.snapshot() ?? null,
      activeCheckFailing: [...this.down],
      panic: { panicking: this.panicking, threshold: this.policy.panicThreshold, picks: this.panicPicks, lastDecision: this.panicCounts },
    };
  }

  stop(): void {
    this.outlier?.stop();
  }
}
