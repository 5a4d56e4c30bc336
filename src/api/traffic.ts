/**
 * The traffic policy of a service (in the Service resource and in mesh files): timeouts, retries
 * with a budget, connection limits, the failure-accrual breaker, outlier detection, active
 * health checks from the proxy, rate limits and routes (with fault injection). Callers' proxies
 * apply it on their outbound path; the service's own proxy applies the inbound rate limits.
 *
 * The schema here is the raw (file/wire) form; `buildTraffic` checks what the schema cannot and
 * returns the frozen `TrafficPolicy` with every default filled in (durations in ms).
 * docs/resources.md documents each field and default; keep them in step.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { DURATION_PATTERN, parseDuration } from '../core/duration.js';
import { deepFreeze } from '../core/freeze.js';
import { normalizePath } from '../core/path.js';
import { HTTP_TOKEN_PATTERN } from './balancer.js';
import { DNS_LABEL_PATTERN } from './names.js';

const Duration = (description: string) =>
  Type.String({ pattern: DURATION_PATTERN, description: `${description} A duration such as "500ms", "10s", "1m".` });
const Enum = <T extends readonly string[]>(values: T, description: string) => Type.Unsafe<T[number]>({ type: 'string', enum: [...values], description });
const Percent = (description: string) => Type.Number({ minimum: 0, maximum: 100, description: `${description} Percent, 0..100.` });
const Obj = <P extends Record<string, TSchema>>(props: P, description: string) => Type.Object(props, { additionalProperties: false, description });

/** Retry conditions besides status codes. */
export const RETRY_CONDITIONS = ['connect-failure', 'reset', 'refused-stream', 'per-try-timeout'] as const;
export type RetryCondition = (typeof RETRY_CONDITIONS)[number];
export const RATE_LIMIT_ALGORITHMS = ['token-bucket', 'gcra'] as const;
export type RateLimitAlgorithmName = (typeof RATE_LIMIT_ALGORITHMS)[number];
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE'] as const;

export const TimeoutsSchema = Obj(
  {
    connect: Type.Optional(Duration('Time to establish a connection to an instance. Default 3s.')),
    request: Type.Optional(Duration('Time for the whole request, all attempts and backoff included, until the response head. "0s" turns it off. Default 15s.')),
    perTry: Type.Optional(Duration('Time each attempt gets until the response head; a try that runs out may be retried. Default: the request timeout.')),
    idle: Type.Optional(Duration('How long an idle pooled connection to an instance is kept. Default 4s.')),
  },
  'Timeouts of calls to this service.',
);

export const BudgetSchema = Obj(
  {
    ratio: Type.Optional(Type.Number({ minimum: 0, maximum: 1, description: 'Share of requests that may be retried, 0..1. Default 0.2.' })),
    minRetriesPerSecond: Type.Optional(Type.Number({ minimum: 0, maximum: 100_000, description: 'Retries allowed per second whatever the traffic. Default 10.' })),
    window: Type.Optional(Duration('The window requests and retries are counted in. Default 10s.')),
  },
  "The retry budget (Linkerd's defaults): retries never add more than `ratio` of the traffic plus the floor.",
);

export const RetriesSchema = Obj(
  {
    maxRetries: Type.Optional(Type.Integer({ minimum: 0, maximum: 10, description: 'Retries per request after the first attempt; 0 turns retries off. Default 2.' })),
    on: Type.Optional(
      Type.Array(Enum(RETRY_CONDITIONS, 'A failure that may be retried.'), {
        uniqueItems: true,
        maxItems: RETRY_CONDITIONS.length,
        description: 'Failures that are retried. Default all four: connect-failure, reset, refused-stream, per-try-timeout.',
      }),
    ),
    statuses: Type.Optional(
      Type.Array(Type.Integer({ minimum: 500, maximum: 599 }), { uniqueItems: true, maxItems: 100, description: 'Response statuses that are retried (an app\'s own answers: see docs/traffic.md, "What counts against an instance"). Default [503].' }),
    ),
    nonIdempotent: Type.Optional(
      Type.Boolean({ description: 'Also retry POST, PATCH (methods that are not idempotent) after a reset, timeout or status. Connect failures and refused streams are always retried. Default false.' }),
    ),
    maxBodyBytes: Type.Optional(Type.Integer({ minimum: 0, maximum: 16 * 1024 * 1024, description: 'A request body is kept for a retry up to this size; larger requests are not retried once sent. Default 65536.' })),
    backoff: Type.Optional(
      Obj(
        {
          base: Type.Optional(Duration('Ceiling of the first retry delay (full jitter). Default 25ms.')),
          max: Type.Optional(Duration('Largest ceiling. Default 250ms.')),
        },
        'Exponential backoff with full jitter between attempts.',
      ),
    ),
    budget: Type.Optional(BudgetSchema),
  },
  'When and how calls to this service are retried.',
);

export const LimitsSchema = Obj(
  {
    maxConnections: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, description: "Open connections from one proxy to the service's instances. Default 1024." })),
    maxPendingRequests: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, description: 'Requests waiting for a connection to be established. Default 1024.' })),
    maxRequests: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, description: 'Requests in flight from one proxy to the service. Default 1024.' })),
  },
  "Circuit-breaking limits (Envoy's defaults): the excess is refused at once with SKEIN_E_UPSTREAM_OVERFLOW.",
);

export const BreakerSchema = Obj(
  {
    enabled: Type.Optional(Type.Boolean({ description: 'Default true.' })),
    consecutiveFailures: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000, description: 'Open after this many consecutive failures (5xx or no response); 0: this trigger is off. Default 7.' })),
    failureRate: Type.Optional(
      Obj(
        {
          threshold: Type.Number({ exclusiveMinimum: 0, maximum: 1, description: 'Failure share that opens the breaker, 0..1.' }),
          minRequests: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, description: 'Requests in the window before the rate counts. Default 20.' })),
          window: Type.Optional(Duration('Default 10s.')),
        },
        'Open when the failure share over a window reaches the threshold. Default off.',
      ),
    ),
    backoff: Type.Optional(
      Obj(
        {
          min: Type.Optional(Duration('Shortest time open before a probe. Default 1s.')),
          max: Type.Optional(Duration('Longest time open before a probe. Default 10s.')),
        },
        'Time open before one probe request is let through (exponential, full jitter).',
      ),
    ),
  },
  'Failure accrual per instance: open, then a half-open probe after a backoff, then closed.',
);

export const OutlierSchema = Obj(
  {
    enabled: Type.Optional(Type.Boolean({ description: 'Default true.' })),
    consecutive5xx: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000, description: 'Eject after this many 5xx in a row; 0: off. Default 5.' })),
    consecutiveGatewayFailure: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000, description: 'Eject after this many 502/503/504 in a row; 0: off. Default 0 (off, as in Envoy): consecutive5xx counts them too.' })),
    consecutiveLocalOriginFailure: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 10_000, description: 'Eject after this many failures to reach it in a row (connect refused or timed out, reset, per-try timeout); 0: off. Default 5.' }),
    ),
    interval: Type.Optional(Duration('How often success rates are evaluated and ejections end. Default 10s.')),
    baseEjectionTime: Type.Optional(Duration('An instance is ejected for this times the number of its ejections. Default 30s.')),
    maxEjectionTime: Type.Optional(Duration('Default 300s.')),
    maxEjectionPercent: Type.Optional(Percent('Most instances ejected at once (one may always be). Default 10.')),
    successRate: Type.Optional(
      Obj(
        {
          minimumHosts: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, description: 'Default 5.' })),
          requestVolume: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, description: 'Default 100.' })),
          stdevFactor: Type.Optional(Type.Number({ minimum: 0, maximum: 100, description: 'Default 1.9.' })),
        },
        'Eject instances whose success rate over an interval is below the mean minus stdevFactor standard deviations. Default off.',
      ),
    ),
    failurePercentage: Type.Optional(
      Obj(
        {
          threshold: Type.Optional(Percent('Default 85.')),
          minimumHosts: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, description: 'Default 5.' })),
          requestVolume: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, description: 'Default 50.' })),
        },
        'Eject instances whose failure percentage over an interval reaches the threshold. Default off.',
      ),
    ),
  },
  "Passive health (Envoy's outlier detection): each caller's proxy ejects instances that fail.",
);

export const ActiveCheckSchema = Obj(
  {
    type: Enum(['http', 'tcp'] as const, 'http: GET a path and expect 200-399; tcp: connect.'),
    path: Type.Optional(Type.String({ pattern: '^/[\\x21-\\x7e]*$', maxLength: 1024, description: 'Path to GET (http only). Default "/health".' })),
    interval: Type.Optional(Duration('Default 5s; at least 100ms.')),
    timeout: Type.Optional(Duration('Default 1s.')),
    unhealthyThreshold: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, description: 'Failures in a row before the proxy stops sending to it. Default 2.' })),
    healthyThreshold: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, description: 'Passes in a row before it gets traffic again. Default 1.' })),
  },
  "Health checks each caller's proxy runs itself against every instance it may send to. Default off.",
);

export const RateLimitSchema = Obj(
  {
    requestsPerSecond: Type.Number({ exclusiveMinimum: 0, maximum: 10_000_000, description: 'Sustained rate.' }),
    burst: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000_000, description: 'Requests allowed at once above the rate. Default: the rate, rounded up.' })),
    algorithm: Type.Optional(Enum(RATE_LIMIT_ALGORITHMS, 'Default token-bucket.')),
    perCaller: Type.Optional(Type.Boolean({ description: 'One bucket per calling workload instead of one for all. Default false.' })),
  },
  'A local rate limit; the excess gets 429 with Retry-After.',
);

export const RateLimitsSchema = Obj(
  {
    outbound: Type.Optional(RateLimitSchema),
    inbound: Type.Optional(RateLimitSchema),
  },
  "outbound: applied by each caller's proxy to its calls; inbound: applied by the service's own proxy to the calls it receives.",
);

export const FaultSchema = Obj(
  {
    delay: Type.Optional(Obj({ duration: Duration('The added delay.'), percent: Percent('Share of requests delayed.') }, 'Delay requests before they are sent.')),
    abort: Type.Optional(
      Obj(
        { status: Type.Integer({ minimum: 200, maximum: 599, description: 'Status of the injected answer.' }), percent: Percent('Share of requests aborted.') },
        'Answer requests with an error instead of sending them.',
      ),
    ),
  },
  'Fault injection (on the callers\' side), to test how callers cope.',
);

export const RouteMatchSchema = Obj(
  {
    path: Type.Optional(Type.String({ pattern: '^/', maxLength: 1024, description: 'The path (without the query) equals this.' })),
    pathPrefix: Type.Optional(Type.String({ pattern: '^/', maxLength: 1024, description: 'The path starts with this, at a "/" boundary ("/api" matches "/api" and "/api/x", not "/apix").' })),
    methods: Type.Optional(Type.Array(Enum(METHODS, 'An HTTP method.'), { uniqueItems: true, minItems: 1, maxItems: METHODS.length })),
    headers: Type.Optional(
      Type.Record(Type.String({ pattern: HTTP_TOKEN_PATTERN, maxLength: 256 }), Type.String({ maxLength: 1024 }), {
        maxProperties: 16,
        description: 'Headers that must have exactly these values (names are case-insensitive).',
      }),
    ),
  },
  'What a request must look like for the route to apply; every field given must match. Empty: every request.',
);

export const RouteSchema = Obj(
  {
    name: Type.String({ pattern: DNS_LABEL_PATTERN, description: 'Names the route in metrics, logs and errors (a DNS label).' }),
    match: Type.Optional(RouteMatchSchema),
    timeouts: Type.Optional(
      Obj({ request: Type.Optional(TimeoutsSchema.properties.request), perTry: Type.Optional(TimeoutsSchema.properties.perTry) }, 'Overrides the service timeouts for this route.'),
    ),
    retries: Type.Optional(Type.Omit(RetriesSchema, ['budget'], { additionalProperties: false, description: 'Overrides fields of the service retries for this route (the budget is the service\'s).' })),
    rateLimit: Type.Optional(RateLimitsSchema),
    fault: Type.Optional(FaultSchema),
  },
  'A route: requests that match get its timeouts, retries, rate limits and faults.',
);

/** Traffic fields of the Service resource (spread into it and into mesh-file services). */
export const TrafficFields = {
  timeouts: Type.Optional(TimeoutsSchema),
  retries: Type.Optional(RetriesSchema),
  limits: Type.Optional(LimitsSchema),
  breaker: Type.Optional(BreakerSchema),
  outlierDetection: Type.Optional(OutlierSchema),
  activeHealthCheck: Type.Optional(ActiveCheckSchema),
  rateLimit: Type.Optional(RateLimitsSchema),
  routes: Type.Optional(Type.Array(RouteSchema, { maxItems: 256, description: 'Routes, most specific first when they overlap (see docs/traffic.md).' })),
  panicThreshold: Type.Optional(
    Percent(
      "When fewer than this share of the service's instances may take traffic (the others ejected by outlier detection or failing this proxy's active checks), the proxy ignores those two verdicts and spreads requests over every instance (Envoy's healthy_panic_threshold). 0 turns it off. Default 50.",
    ),
  ),
};
export const TRAFFIC_FIELD_NAMES = Object.keys(TrafficFields) as Array<keyof typeof TrafficFields>;

export const TrafficSchema = Type.Object(TrafficFields, { additionalProperties: false });
export type RawTraffic = Static<typeof TrafficSchema>;
type RawRoute = Static<typeof RouteSchema>;
type RawRetries = Static<typeof RetriesSchema>;
type RawRateLimit = Static<typeof RateLimitSchema>;
type RawRateLimits = Static<typeof RateLimitsSchema>;

// ---- the domain form ----

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

export interface TrafficPolicy {
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly budget: { readonly ratio: number; readonly minRetriesPerSecond: number; readonly windowMs: number };
  readonly limits: { readonly maxConnections: number; readonly maxPendingRequests: number; readonly maxRequests: number };
  /** null: off. */
  readonly breaker: BreakerPolicy | null;
  /** null: off. */
  readonly outlier: OutlierPolicy | null;
  /** null: off. */
  readonly activeHealthCheck: ActiveCheckPolicy | null;
  /** The routes in match order, then the default route (named "default", matching everything). */
  readonly routes: readonly RoutePolicy[];
  /** Percent 0..100: below this share of instances available, ejections and failed active checks are ignored; 0: never. */
  readonly panicThreshold: number;
}

export const TRAFFIC_DEFAULTS = Object.freeze({
  connectTimeoutMs: 3_000,
  requestTimeoutMs: 15_000,
  idleTimeoutMs: 4_000,
  retries: Object.freeze({
    maxRetries: 2,
    on: Object.freeze([...RETRY_CONDITIONS]),
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
  activeHealthCheck: Object.freeze({ path: '/health', intervalMs: 5_000, timeoutMs: 1_000, unhealthyThreshold: 2, healthyThreshold: 1 }),
});

const MAX_MS = 24 * 3_600_000;

/**
 * Checks what the schema cannot (durations in range, order of min and max, duplicate route
 * names, a route that can never match) and returns the frozen policy. `push(field, message)`
 * collects problems; fields are relative to the service.
 */
export function buildTraffic(raw: RawTraffic, push: (field: string, message: string) => void): TrafficPolicy {
  const dur = (text: string | undefined, dflt: number, field: string, min = 0): number => {
    if (text === undefined) return dflt;
    const ms = parseDuration(text);
    if (ms === undefined) {
      push(field, 'is not a duration');
      return dflt;
    }
    if (ms < min) push(field, `must be at least ${min}ms`);
    if (ms > MAX_MS) push(field, 'must be at most 24h');
    return ms;
  };
  const D = TRAFFIC_DEFAULTS;
  const t = raw.timeouts ?? {};
  const requestTimeoutMs = dur(t.request, D.requestTimeoutMs, 'timeouts.request');
  const perTryTimeoutMs = dur(t.perTry, 0, 'timeouts.perTry', 1);
  if (requestTimeoutMs > 0 && perTryTimeoutMs > requestTimeoutMs) push('timeouts.perTry', `must not be longer than timeouts.request (${requestTimeoutMs}ms)`);

  const retries = buildRetries(raw.retries, D.retries, 'retries', dur, push);
  const b = raw.retries?.budget ?? {};
  const budget = Object.freeze({
    ratio: b.ratio ?? D.budget.ratio,
    minRetriesPerSecond: b.minRetriesPerSecond ?? D.budget.minRetriesPerSecond,
    windowMs: dur(b.window, D.budget.windowMs, 'retries.budget.window', 1000),
  });

  const l = raw.limits ?? {};
  const limits = Object.freeze({
    maxConnections: l.maxConnections ?? D.limits.maxConnections,
    maxPendingRequests: l.maxPendingRequests ?? D.limits.maxPendingRequests,
    maxRequests: l.maxRequests ?? D.limits.maxRequests,
  });

  let breaker: BreakerPolicy | null = null;
  const br = raw.breaker ?? {};
  if (br.enabled !== false) {
    const fr = br.failureRate;
    const backoffMinMs = dur(br.backoff?.min, D.breaker.backoffMinMs, 'breaker.backoff.min', 1);
    const backoffMaxMs = dur(br.backoff?.max, Math.max(D.breaker.backoffMaxMs, backoffMinMs), 'breaker.backoff.max', 1);
    if (backoffMaxMs < backoffMinMs) push('breaker.backoff.max', `must be at least breaker.backoff.min (${backoffMinMs}ms)`);
    breaker = Object.freeze({
      consecutiveFailures: br.consecutiveFailures ?? D.breaker.consecutiveFailures,
      failureRate:
        fr === undefined
          ? null
          : Object.freeze({ threshold: fr.threshold, minRequests: fr.minRequests ?? D.failureRate.minRequests, windowMs: dur(fr.window, D.failureRate.windowMs, 'breaker.failureRate.window', 100) }),
      backoffMinMs,
      backoffMaxMs,
    });
    if (breaker.consecutiveFailures === 0 && breaker.failureRate === null) breaker = null;
  }

  let outlier: OutlierPolicy | null = null;
  const od = raw.outlierDetection ?? {};
  if (od.enabled !== false) {
    const O = D.outlier;
    const baseEjectionMs = dur(od.baseEjectionTime, O.baseEjectionMs, 'outlierDetection.baseEjectionTime', 1);
    const maxEjectionMs = dur(od.maxEjectionTime, Math.max(O.maxEjectionMs, baseEjectionMs), 'outlierDetection.maxEjectionTime', 1);
    if (maxEjectionMs < baseEjectionMs) push('outlierDetection.maxEjectionTime', `must be at least outlierDetection.baseEjectionTime (${baseEjectionMs}ms)`);
    const sr = od.successRate;
    const fp = od.failurePercentage;
    outlier = Object.freeze({
      consecutive5xx: od.consecutive5xx ?? O.consecutive5xx,
      consecutiveGatewayFailure: od.consecutiveGatewayFailure ?? O.consecutiveGatewayFailure,
      consecutiveLocalOriginFailure: od.consecutiveLocalOriginFailure ?? O.consecutiveLocalOriginFailure,
      intervalMs: dur(od.interval, O.intervalMs, 'outlierDetection.interval', 100),
      baseEjectionMs,
      maxEjectionMs,
      maxEjectionPercent: od.maxEjectionPercent ?? O.maxEjectionPercent,
      successRate: sr === undefined ? null : Object.freeze({ ...D.successRate, ...sr }),
      failurePercentage: fp === undefined ? null : Object.freeze({ ...D.failurePercentage, ...fp }),
    });
  }

  let activeHealthCheck: ActiveCheckPolicy | null = null;
  const ac = raw.activeHealthCheck;
  if (ac !== undefined) {
    const A = D.activeHealthCheck;
    if (ac.type === 'tcp' && ac.path !== undefined) push('activeHealthCheck.path', 'applies to http checks only');
    const intervalMs = dur(ac.interval, A.intervalMs, 'activeHealthCheck.interval', 100);
    const timeoutMs = dur(ac.timeout, Math.min(A.timeoutMs, intervalMs), 'activeHealthCheck.timeout', 1);
    if (timeoutMs > intervalMs) push('activeHealthCheck.timeout', `must not be longer than activeHealthCheck.interval (${intervalMs}ms)`);
    activeHealthCheck = Object.freeze({
      type: ac.type,
      path: ac.path ?? A.path,
      intervalMs,
      timeoutMs,
      unhealthyThreshold: ac.unhealthyThreshold ?? A.unhealthyThreshold,
      healthyThreshold: ac.healthyThreshold ?? A.healthyThreshold,
    });
  }

  const serviceRate = buildRateLimits(raw.rateLimit, Object.freeze({ outbound: null, inbound: null }), 'service');
  const routes: RoutePolicy[] = [];
  const names = new Map<string, number>();
  (raw.routes ?? []).forEach((r, i) => {
    const at = `routes[${i}]`;
    const prev = names.get(r.name);
    if (prev !== undefined) push(`${at}.name`, `duplicates the name of routes[${prev}]`);
    if (r.name === 'default') push(`${at}.name`, '"default" is the name of the implicit route that matches what no other route does');
    names.set(r.name, i);
    routes.push(buildRoute(r, at, { requestTimeoutMs, perTryTimeoutMs, retries, rateLimit: serviceRate }));
  });
  routes.push(
    Object.freeze({
      name: 'default',
      match: Object.freeze({ path: null, pathPrefix: null, methods: null, headers: Object.freeze([]) }),
      requestTimeoutMs,
      perTryTimeoutMs,
      retries,
      rateLimit: serviceRate,
      fault: null,
    }),
  );

  return Object.freeze({
    connectTimeoutMs: dur(t.connect, D.connectTimeoutMs, 'timeouts.connect', 1),
    idleTimeoutMs: dur(t.idle, D.idleTimeoutMs, 'timeouts.idle', 1),
    budget,
    limits,
    breaker,
    outlier,
    activeHealthCheck,
    routes: Object.freeze(routes),
    panicThreshold: raw.panicThreshold ?? D.panicThreshold,
  });

  function buildRateLimits(r: RawRateLimits | undefined, base: RateLimits, scope: string): RateLimits {
    if (r === undefined) return base;
    const one = (x: RawRateLimit | undefined, dflt: RateLimitPolicy | null): RateLimitPolicy | null =>
      x === undefined
        ? dflt
        : Object.freeze({ scope, requestsPerSecond: x.requestsPerSecond, burst: x.burst ?? Math.max(1, Math.ceil(x.requestsPerSecond)), algorithm: x.algorithm ?? 'token-bucket', perCaller: x.perCaller ?? false });
    return Object.freeze({ outbound: one(r.outbound, base.outbound), inbound: one(r.inbound, base.inbound) });
  }

  /** Requests are matched by their normalized path (src/core/path.ts): a route path must be one. */
  function normalized(p: string | undefined, field: string): void {
    if (p === undefined) return;
    const n = normalizePath(p);
    if (typeof n !== 'string') push(field, n.error);
    else if (n !== p) push(field, `requests are matched by their normalized path, which "${p}" never is: write "${n}"`);
  }

  function buildRoute(
    r: RawRoute,
    at: string,
    base: { requestTimeoutMs: number; perTryTimeoutMs: number; retries: RetryPolicy; rateLimit: RateLimits },
  ): RoutePolicy {
    const m = r.match ?? {};
    if (m.path !== undefined && m.pathPrefix !== undefined) push(`${at}.match.pathPrefix`, 'cannot be given with match.path');
    normalized(m.path, `${at}.match.path`);
    normalized(m.pathPrefix, `${at}.match.pathPrefix`);
    let prefix = m.pathPrefix ?? null;
    if (prefix !== null && prefix.length > 1 && prefix.endsWith('/')) prefix = prefix.slice(0, -1);
    const requestTimeoutMs = dur(r.timeouts?.request, base.requestTimeoutMs, `${at}.timeouts.request`);
    const perTryTimeoutMs = dur(r.timeouts?.perTry, base.perTryTimeoutMs, `${at}.timeouts.perTry`, 1);
    if (requestTimeoutMs > 0 && perTryTimeoutMs > requestTimeoutMs) push(`${at}.timeouts.perTry`, `must not be longer than the request timeout (${requestTimeoutMs}ms)`);
    const f = r.fault;
    return Object.freeze({
      name: r.name,
      match: Object.freeze({
        path: m.path ?? null,
        pathPrefix: prefix,
        methods: m.methods === undefined ? null : Object.freeze([...m.methods]),
        headers: Object.freeze(Object.entries(m.headers ?? {}).map(([k, v]) => Object.freeze([k.toLowerCase(), v] as const))),
      }),
      requestTimeoutMs,
      perTryTimeoutMs,
      retries: buildRetries(r.retries, base.retries, `${at}.retries`, dur, push),
      rateLimit: buildRateLimits(r.rateLimit, base.rateLimit, `route:${r.name}`),
      fault:
        f === undefined
          ? null
          : Object.freeze({
              delay: f.delay === undefined ? null : Object.freeze({ ms: dur(f.delay.duration, 0, `${at}.fault.delay.duration`), percent: f.delay.percent }),
              abort: f.abort === undefined ? null : Object.freeze({ status: f.abort.status, percent: f.abort.percent }),
            }),
    });
  }
}

function buildRetries(
  r: Omit<RawRetries, 'budget'> | undefined,
  base: RetryPolicy,
  at: string,
  dur: (text: string | undefined, dflt: number, field: string, min?: number) => number,
  push: (field: string, message: string) => void,
): RetryPolicy {
  if (r === undefined) return base;
  const backoffBaseMs = dur(r.backoff?.base, base.backoffBaseMs, `${at}.backoff.base`, 1);
  const backoffMaxMs = dur(r.backoff?.max, Math.max(base.backoffMaxMs, backoffBaseMs), `${at}.backoff.max`, 1);
  if (backoffMaxMs < backoffBaseMs) push(`${at}.backoff.max`, `must be at least ${at}.backoff.base (${backoffBaseMs}ms)`);
  return Object.freeze({
    maxRetries: r.maxRetries ?? base.maxRetries,
    on: r.on === undefined ? base.on : Object.freeze([...r.on]),
    statuses: r.statuses === undefined ? base.statuses : Object.freeze([...r.statuses]),
    nonIdempotent: r.nonIdempotent ?? base.nonIdempotent,
    maxBodyBytes: r.maxBodyBytes ?? base.maxBodyBytes,
    backoffBaseMs,
    backoffMaxMs,
  });
}

/** A deep copy of a JSON value, deeply frozen. */
export function frozenCopy<T>(v: T): T {
  return deepFreeze(structuredClone(v));
}

/** The traffic fields of a raw service, as given (kept to store and send the service as it was written). */
export function pickTraffic(raw: Record<string, unknown>): RawTraffic {
  const out: Record<string, unknown> = {};
  for (const k of TRAFFIC_FIELD_NAMES) if (raw[k] !== undefined) out[k] = raw[k];
  return out as RawTraffic;
}

/** The policy of a service that sets none of the traffic fields. */
export const DEFAULT_TRAFFIC: TrafficPolicy = buildTraffic({}, (field, message) => {
  throw new Error(`the traffic defaults are invalid: ${field} ${message}`);
});

/** What a service's own (inbound) proxy applies of its policy: routes and rate limits only. */
export function inboundTraffic(p: TrafficPolicy): TrafficPolicy {
  return Object.freeze({ ...p, breaker: null, outlier: null, activeHealthCheck: null });
}
