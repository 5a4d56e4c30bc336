/**
 * The traffic policy's domain form (what the proxy and the resilience classes read: durations in
 * ms, every default filled in) and its defaults, written once: TRAFFIC_DEFAULTS is where each
 * default of the traffic fields lives, and the resilience classes (src/resilience) take theirs
 * from it.
 */
import { DEFAULT_RETRY_CONDITIONS, type RateLimitAlgorithmName, type RetryCondition } from './conditions.js';

export interface RetryPolicy {
  readonly maxRetries: number;
  readonly on: readonly RetryCondition[];
  readonly statuses: readonly number[];
  readonly nonIdempotent: boolean;
  readonly maxBodyBytes: number;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
}

export interface RateLimitPolicy {
  /** Whose limit it is: "service" (shared by every route that does not set its own), or the route's name. */
  readonly scope: string;
  readonly requestsPerSecond: number;
  readonly burst: number;
  readonly algorithm: RateLimitAlgorithmName;
  readonly perCaller: boolean;
}

export interface RateLimits {
  readonly outbound: RateLimitPolicy | null;
  readonly inbound: RateLimitPolicy | null;
}

export interface FaultPolicy {
  readonly delay: { readonly ms: number; readonly percent: number } | null;
  readonly abort: { readonly status: number; readonly percent: number } | null;
}

export interface RouteMatch {
  readonly path: string | null;
  readonly pathPrefix: string | null;
  readonly methods: readonly string[] | null;
  /** Lower-case names. */
  readonly headers: ReadonlyArray<readonly [string, string]>;
}

/** One backend of a split: a subset of the service's instances and its share of the requests. */
export interface BackendPolicy {
  /** The labels an instance must have, sorted by key; "version" is the instance's version. */
  readonly subset: ReadonlyArray<readonly [string, string]>;
  /** Percent of the requests, 0..100 (the backends of a route sum to 100). */
  readonly weight: number;
  /** The subset as text, "version=v2" or "tier=gold,version=v2": in explanations, errors and /debug/endpoints. */
  readonly name: string;
}

/**
 * A route's traffic mirroring (shadowing): a share of its requests copied, fire-and-forget, to
 * another service or another version of its own (src/engine/mirror.ts).
 */
export interface MirrorPolicy {
  /** The service the copies go to; null: the route's own service (then `subset` is another version of it). */
  readonly service: string | null;
  /** The instances of that service the copies go to; null: every instance. */
  readonly subset: BackendPolicy | null;
  /** Percent of the route's requests copied, 0..100. */
  readonly percent: number;
  /** Appended to the copy's Host (before its port): "users" -> "users-shadow". */
  readonly hostSuffix: string;
  /** Copy requests of any method; false: idempotent ones only (GET, HEAD, PUT, DELETE, OPTIONS, TRACE). */
  readonly nonIdempotent: boolean;
  /** Copies in flight at once (per mirror and caller: the routes inheriting the service's share it); more are dropped and counted. */
  readonly maxInFlight: number;
  /** Time a copy gets, to the end of its response; then it is abandoned. */
  readonly timeoutMs: number;
}

export interface RoutePolicy {
  readonly name: string;
  readonly match: RouteMatch;
  /** 0: none. */
  readonly requestTimeoutMs: number;
  /** 0: the request timeout. */
  readonly perTryTimeoutMs: number;
  readonly retries: RetryPolicy;
  readonly rateLimit: RateLimits;
  readonly fault: FaultPolicy | null;
  /** The split of the route's requests between subsets (the service's when the route sets none); empty: every instance. */
  readonly backends: readonly BackendPolicy[];
  /** Copies of a share of the route's requests (the service's when the route sets none); null: none. */
  readonly mirror: MirrorPolicy | null;
}

export interface BreakerPolicy {
  readonly consecutiveFailures: number;
  readonly failureRate: { readonly threshold: number; readonly minRequests: number; readonly windowMs: number } | null;
  readonly backoffMinMs: number;
  readonly backoffMaxMs: number;
}

export interface OutlierPolicy {
  readonly consecutive5xx: number;
  readonly consecutiveGatewayFailure: number;
  readonly consecutiveLocalOriginFailure: number;
  readonly intervalMs: number;
  readonly baseEjectionMs: number;
  readonly maxEjectionMs: number;
  readonly maxEjectionPercent: number;
  readonly successRate: { readonly minimumHosts: number; readonly requestVolume: number; readonly stdevFactor: number } | null;
  readonly failurePercentage: { readonly threshold: number; readonly minimumHosts: number; readonly requestVolume: number } | null;
}

export interface ActiveCheckPolicy {
  readonly type: 'http' | 'tcp';
  readonly path: string;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly unhealthyThreshold: number;
  readonly healthyThreshold: number;
}

/** A service scaled to zero: its callers hold requests while an instance starts (src/engine/cold-start.ts). */
export interface ColdStartPolicy {
  /** Requests held per proxy at once. */
  readonly queue: number;
  /** How long one is held. */
  readonly timeoutMs: number;
}

export interface TrafficPolicy {
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /** An opaque stream (protocol tcp) with no byte either way for this long is closed. */
  readonly tcpIdleTimeoutMs: number;
  readonly budget: { readonly ratio: number; readonly minRetriesPerSecond: number; readonly windowMs: number };
  readonly limits: { readonly maxConnections: number; readonly maxPendingRequests: number; readonly maxRequests: number };
  /** null: off. */
  readonly breaker: BreakerPolicy | null;
  /** null: off. */
  readonly outlier: OutlierPolicy | null;
  /** null: off. */
  readonly activeHealthCheck: ActiveCheckPolicy | null;
  /** Holding requests while a service scaled to zero wakes; null: off (no instance answers SKEIN_E_NO_HEALTHY_ENDPOINT at once). */
  readonly coldStart: ColdStartPolicy | null;
  /** The routes in match order, then the default route (named "default", matching everything). */
  readonly routes: readonly RoutePolicy[];
  /** Percent 0..100: below this share of instances available, ejections and failed active checks are ignored; 0: never. */
  readonly panicThreshold: number;
}

export const TRAFFIC_DEFAULTS = Object.freeze({
  connectTimeoutMs: 3_000,
  requestTimeoutMs: 15_000,
  idleTimeoutMs: 4_000,
  tcpIdleTimeoutMs: 3_600_000,
  retries: Object.freeze({
    maxRetries: 2,
    on: DEFAULT_RETRY_CONDITIONS,
    statuses: Object.freeze([503]),
    nonIdempotent: false,
    maxBodyBytes: 64 * 1024,
    backoffBaseMs: 25,
    backoffMaxMs: 250,
  }) satisfies RetryPolicy,
  budget: Object.freeze({ ratio: 0.2, minRetriesPerSecond: 10, windowMs: 10_000 }),
  limits: Object.freeze({ maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024 }),
  breaker: Object.freeze({ consecutiveFailures: 7, failureRate: null, backoffMinMs: 1_000, backoffMaxMs: 10_000 }) satisfies BreakerPolicy,
  failureRate: Object.freeze({ minRequests: 20, windowMs: 10_000 }),
  outlier: Object.freeze({
    consecutive5xx: 5,
    consecutiveGatewayFailure: 0,
    consecutiveLocalOriginFailure: 5,
    intervalMs: 10_000,
    baseEjectionMs: 30_000,
    maxEjectionMs: 300_000,
    maxEjectionPercent: 10,
    successRate: null,
    failurePercentage: null,
  }) satisfies OutlierPolicy,
  successRate: Object.freeze({ minimumHosts: 5, requestVolume: 100, stdevFactor: 1.9 }),
  failurePercentage: Object.freeze({ threshold: 85, minimumHosts: 5, requestVolume: 50 }),
  panicThreshold: 50,
  rateLimitAlgorithm: 'token-bucket' as RateLimitAlgorithmName,
  /** One bucket per calling workload (true) or one for all. */
  rateLimitPerCaller: false,
  /** Callers a perCaller rate limit keeps a bucket for, per proxy (the least recently seen goes first). */
  rateLimitMaxCallers: 10_000,
  coldStart: Object.freeze({ queue: 100, timeoutMs: 30_000 }) satisfies ColdStartPolicy,
  /** A mirror's defaults (its timeout: the route's request timeout, or requestTimeoutMs when the route has none). */
  mirror: Object.freeze({ percent: 100, hostSuffix: '-shadow', nonIdempotent: false, maxInFlight: 100 }),
  activeHealthCheck: Object.freeze({ path: '/health', intervalMs: 5_000, timeoutMs: 1_000, unhealthyThreshold: 2, healthyThreshold: 1 }),
});

/** A rate limit's burst when it gives none: the rate, rounded up (at least 1). */
export function defaultBurst(requestsPerSecond: number): number {
  return Math.max(1, Math.ceil(requestsPerSecond));
}
