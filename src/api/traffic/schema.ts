/**
 * The traffic policy's raw (file and wire) form: the schema of the traffic fields a Service
 * resource and a mesh-file service carry. Every field's description states its default; the
 * values themselves are TRAFFIC_DEFAULTS (policy.ts), and docs/resources.md documents both.
 */
import { Type, type Static } from '@sinclair/typebox';
import { formatDuration as ms } from '../../core/duration.js';
import { Duration, Enum, Obj, Percent } from '../fields.js';
import { DNS_LABEL_PATTERN, HTTP_TOKEN_PATTERN, LABEL_KEY_PATTERN } from '../names.js';

import { RATE_LIMIT_ALGORITHMS, RETRY_CONDITIONS } from './conditions.js';
import { TRAFFIC_DEFAULTS } from './policy.js';

export { DEFAULT_RETRY_CONDITIONS, GRPC_RETRY_CONDITIONS, RATE_LIMIT_ALGORITHMS, RETRY_CONDITIONS, type RateLimitAlgorithmName, type RetryCondition } from './conditions.js';
const D = TRAFFIC_DEFAULTS;
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE'] as const;

export const TimeoutsSchema = Obj(
  {
    connect: Type.Optional(Duration(`Time to establish a connection to an instance. Default ${ms(D.connectTimeoutMs)}.`)),
    request: Type.Optional(Duration(`Time for the whole request, all attempts and backoff included, until the response head. "0s" turns it off. Default ${ms(D.requestTimeoutMs)}.`)),
    perTry: Type.Optional(Duration('Time each attempt gets until the response head; a try that runs out may be retried. Default: the request timeout.')),
    idle: Type.Optional(Duration(`How long an idle pooled connection to an instance is kept. Default ${ms(D.idleTimeoutMs)}.`)),
    tcpIdle: Type.Optional(Duration(`A connection of a service with protocol tcp (an opaque stream) with no byte either way for this long is closed, by the caller's proxy and by the service's own. Default ${ms(D.tcpIdleTimeoutMs)}.`)),
  },
  'Timeouts of calls to this service.',
);

export const BudgetSchema = Obj(
  {
    ratio: Type.Optional(Type.Number({ minimum: 0, maximum: 1, description: `Share of requests that may be retried, 0..1. Default ${D.budget.ratio}.` })),
    minRetriesPerSecond: Type.Optional(Type.Number({ minimum: 0, maximum: 100_000, description: `Retries allowed per second whatever the traffic. Default ${D.budget.minRetriesPerSecond}.` })),
    window: Type.Optional(Duration(`The window requests and retries are counted in. Default ${ms(D.budget.windowMs)}.`)),
  },
  "The retry budget (Linkerd's defaults): retries never add more than `ratio` of the traffic plus the floor.",
);

export const RetriesSchema = Obj(
  {
    maxRetries: Type.Optional(Type.Integer({ minimum: 0, maximum: 10, description: `Retries per request after the first attempt; 0 turns retries off. Default ${D.retries.maxRetries}.` })),
    on: Type.Optional(
      Type.Array(Enum(RETRY_CONDITIONS, 'A failure that may be retried.'), {
        uniqueItems: true,
        maxItems: RETRY_CONDITIONS.length,
        description: 'Failures that are retried. Default: connect-failure, reset, refused-stream, per-try-timeout and unavailable (gRPC). The gRPC ones (cancelled, deadline-exceeded, internal, resource-exhausted, unavailable) match a grpc-status in a Trailers-Only response, whatever the method.',
      }),
    ),
    statuses: Type.Optional(
      Type.Array(Type.Integer({ minimum: 500, maximum: 599 }), { uniqueItems: true, maxItems: 100, description: `Response statuses that are retried (an app's own answers: see docs/traffic.md, "What counts against an instance"). Default ${JSON.stringify(D.retries.statuses)}.` }),
    ),
    nonIdempotent: Type.Optional(
      Type.Boolean({ description: `Also retry POST, PATCH (methods that are not idempotent) after a reset, timeout or status. Connect failures and refused streams are always retried. Default ${D.retries.nonIdempotent}.` }),
    ),
    maxBodyBytes: Type.Optional(Type.Integer({ minimum: 0, maximum: 16 * 1024 * 1024, description: `A request body is kept for a retry up to this size; larger requests are not retried once sent. Default ${D.retries.maxBodyBytes}.` })),
    backoff: Type.Optional(
      Obj(
        {
          base: Type.Optional(Duration(`Ceiling of the first retry delay (full jitter). Default ${ms(D.retries.backoffBaseMs)}.`)),
          max: Type.Optional(Duration(`Largest ceiling. Default ${ms(D.retries.backoffMaxMs)}.`)),
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
    maxConnections: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, description: `Open connections from one proxy to the service's instances. Default ${D.limits.maxConnections}.` })),
    maxPendingRequests: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, description: `Requests waiting for a connection to be established. Default ${D.limits.maxPendingRequests}.` })),
    maxRequests: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, description: `Requests in flight from one proxy to the service. Default ${D.limits.maxRequests}.` })),
  },
  "Circuit-breaking limits (Envoy's defaults): the excess is refused at once with SKEIN_E_UPSTREAM_OVERFLOW.",
);

export const BreakerSchema = Obj(
  {
    enabled: Type.Optional(Type.Boolean({ description: `Default ${D.breaker !== null}.` })),
    consecutiveFailures: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000, description: `Open after this many consecutive failures (5xx or no response); 0: this trigger is off. Default ${D.breaker.consecutiveFailures}.` })),
    failureRate: Type.Optional(
      Obj(
        {
          threshold: Type.Number({ exclusiveMinimum: 0, maximum: 1, description: 'Failure share that opens the breaker, 0..1.' }),
          minRequests: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, description: `Requests in the window before the rate counts. Default ${D.failureRate.minRequests}.` })),
          window: Type.Optional(Duration(`Default ${ms(D.failureRate.windowMs)}.`)),
        },
        'Open when the failure share over a window reaches the threshold. Default off.',
      ),
    ),
    backoff: Type.Optional(
      Obj(
        {
          min: Type.Optional(Duration(`Shortest time open before a probe. Default ${ms(D.breaker.backoffMinMs)}.`)),
          max: Type.Optional(Duration(`Longest time open before a probe. Default ${ms(D.breaker.backoffMaxMs)}.`)),
        },
        'Time open before one probe request is let through (exponential, full jitter).',
      ),
    ),
  },
  'Failure accrual per instance: open, then a half-open probe after a backoff, then closed.',
);

export const OutlierSchema = Obj(
  {
    enabled: Type.Optional(Type.Boolean({ description: `Default ${D.outlier !== null}.` })),
    consecutive5xx: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000, description: `Eject after this many 5xx in a row; 0: off. Default ${D.outlier.consecutive5xx}.` })),
    consecutiveGatewayFailure: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000, description: `Eject after this many 502/503/504 in a row; 0: off. Default ${D.outlier.consecutiveGatewayFailure} (off, as in Envoy): consecutive5xx counts them too.` })),
    consecutiveLocalOriginFailure: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 10_000, description: `Eject after this many failures to reach it in a row (connect refused or timed out, reset, per-try timeout); 0: off. Default ${D.outlier.consecutiveLocalOriginFailure}.` }),
    ),
    interval: Type.Optional(Duration(`How often success rates are evaluated and ejections end. Default ${ms(D.outlier.intervalMs)}.`)),
    baseEjectionTime: Type.Optional(Duration(`An instance is ejected for this times the number of its ejections. Default ${ms(D.outlier.baseEjectionMs)}.`)),
    maxEjectionTime: Type.Optional(Duration(`Default ${ms(D.outlier.maxEjectionMs)}.`)),
    maxEjectionPercent: Type.Optional(Percent(`Most instances ejected at once (one may always be). Default ${D.outlier.maxEjectionPercent}.`)),
    successRate: Type.Optional(
      Obj(
        {
          minimumHosts: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, description: `Default ${D.successRate.minimumHosts}.` })),
          requestVolume: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, description: `Default ${D.successRate.requestVolume}.` })),
          stdevFactor: Type.Optional(Type.Number({ minimum: 0, maximum: 100, description: `Default ${D.successRate.stdevFactor}.` })),
        },
        'Eject instances whose success rate over an interval is below the mean minus stdevFactor standard deviations. Default off.',
      ),
    ),
    failurePercentage: Type.Optional(
      Obj(
        {
          threshold: Type.Optional(Percent(`Default ${D.failurePercentage.threshold}.`)),
          minimumHosts: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, description: `Default ${D.failurePercentage.minimumHosts}.` })),
          requestVolume: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, description: `Default ${D.failurePercentage.requestVolume}.` })),
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
    path: Type.Optional(Type.String({ pattern: '^/[\\x21-\\x7e]*$', maxLength: 1024, description: `Path to GET (http only). Default ${JSON.stringify(D.activeHealthCheck.path)}.` })),
    interval: Type.Optional(Duration(`Default ${ms(D.activeHealthCheck.intervalMs)}; at least 100ms.`)),
    timeout: Type.Optional(Duration(`Default ${ms(D.activeHealthCheck.timeoutMs)}.`)),
    unhealthyThreshold: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, description: `Failures in a row before the proxy stops sending to it. Default ${D.activeHealthCheck.unhealthyThreshold}.` })),
    healthyThreshold: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, description: `Passes in a row before it gets traffic again. Default ${D.activeHealthCheck.healthyThreshold}.` })),
  },
  "Health checks each caller's proxy runs itself against every instance it may send to. Default off.",
);

export const ColdStartSchema = Obj(
  {
    enabled: Type.Optional(Type.Boolean({ description: 'false turns it off; giving the field turns it on (a mesh-file service with autoscale.min 0 gets it on by itself).' })),
    queue: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000, description: `Requests one proxy holds for the service at once; the next gets 503 SKEIN_E_COLD_START_QUEUE_FULL. Default ${D.coldStart.queue}.` })),
    timeout: Type.Optional(Duration(`How long a request is held for an instance to start; then 503 SKEIN_E_COLD_START_TIMEOUT (the request timeout, when shorter, ends it first). Default ${ms(D.coldStart.timeoutMs)}.`)),
  },
  'When the service has no instance at all (scaled to zero), callers\' proxies hold its requests while one starts, and ask the control plane to wake it (docs/deployments.md#scale-to-zero). Default off.',
);

export const RateLimitSchema = Obj(
  {
    requestsPerSecond: Type.Number({ exclusiveMinimum: 0, maximum: 10_000_000, description: 'Sustained rate.' }),
    burst: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000_000, description: 'Requests allowed at once above the rate. Default: the rate, rounded up.' })),
    algorithm: Type.Optional(Enum(RATE_LIMIT_ALGORITHMS, `Default ${D.rateLimitAlgorithm}.`)),
    perCaller: Type.Optional(Type.Boolean({ description: `One bucket per calling workload instead of one for all. Default ${D.rateLimitPerCaller}.` })),
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

/** The largest number of backends a split may name (a bit each in the splitter's masks). */
export const MAX_BACKENDS = 16;

export const BackendSchema = Obj(
  {
    subset: Type.Record(Type.String({ pattern: LABEL_KEY_PATTERN }), Type.String({ maxLength: 256 }), {
      minProperties: 1,
      maxProperties: 8,
      additionalProperties: false,
      description: 'The instances of this backend: those whose labels have all these values. The key "version" is the instance\'s version (an instance without one has version "").',
    }),
    weight: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 100, description: 'Percent of the requests, 0..100; the weights of a split sum to 100. Required when there are two backends or more; a single backend takes 100.' }),
    ),
  },
  'A subset of the service\'s instances and its share of the requests.',
);

export const BackendsSchema = Type.Array(BackendSchema, {
  minItems: 1,
  maxItems: MAX_BACKENDS,
  description:
    'Split the requests between subsets of the service\'s instances by weight (weights sum to 100), each subset balanced on its own. When the subset chosen has no instance that may take a request, the others take it, by their weights. Default: no split (every instance).',
});

const M = D.mirror;

export const MirrorSchema = Obj(
  {
    service: Type.Optional(Type.String({ pattern: DNS_LABEL_PATTERN, description: "The service the copies go to. Default: the route's own service, and then `subset` is required (another version of it)." })),
    subset: Type.Optional(BackendSchema.properties.subset),
    percent: Type.Optional(Percent(`Share of the route's requests copied. Default ${M.percent}.`)),
    hostSuffix: Type.Optional(
      Type.String({ pattern: '^[A-Za-z0-9._-]{0,63}$', description: `Appended to the copy's Host, before its port ("users:8080" -> "users${M.hostSuffix}:8080"), so the shadow can tell copies apart. Default "${M.hostSuffix}"; "" keeps the Host.` }),
    ),
    nonIdempotent: Type.Optional(Type.Boolean({ description: `Copy requests of every method; false copies GET, HEAD, PUT, DELETE, OPTIONS and TRACE only (a copied POST would do its work twice). Default ${M.nonIdempotent}.` })),
    maxInFlight: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000, description: `Copies in flight at once, per mirror (the routes that inherit the service's share it) and caller proxy; a request that would exceed it is not copied (counted in skein_proxy_mirror_dropped_total{reason="limit"}). Default ${M.maxInFlight}.` })),
    timeout: Type.Optional(Duration(`Time a copy gets to the end of its response; then it is abandoned. Default: the request timeout of the route (of the service, for the service's mirror; ${ms(D.requestTimeoutMs)} when it has none).`)),
  },
  "Mirroring (shadowing): copies of a share of the route's requests go to another service or version, fire-and-forget: the copies' answers are read and dropped, never retried, and kept out of the primary's breakers, outlier detection, retry budget and golden signals (they have their own series, skein_proxy_mirror_*). A request body is copied only when it fits retries.maxBodyBytes. Upgrades (WebSocket) are never copied.",
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
    backends: Type.Optional(BackendsSchema),
    mirror: Type.Optional(MirrorSchema),
  },
  'A route: requests that match get its timeouts, retries, rate limits, faults, backends (a split) and mirror (the service\'s, when it sets none).',
);

/** Traffic fields of the Service resource (spread into it and into mesh-file services). */
export const TrafficFields = {
  timeouts: Type.Optional(TimeoutsSchema),
  retries: Type.Optional(RetriesSchema),
  limits: Type.Optional(LimitsSchema),
  breaker: Type.Optional(BreakerSchema),
  outlierDetection: Type.Optional(OutlierSchema),
  activeHealthCheck: Type.Optional(ActiveCheckSchema),
  coldStart: Type.Optional(ColdStartSchema),
  rateLimit: Type.Optional(RateLimitsSchema),
  backends: Type.Optional(BackendsSchema),
  mirror: Type.Optional(MirrorSchema),
  routes: Type.Optional(Type.Array(RouteSchema, { maxItems: 256, description: 'Routes, most specific first when they overlap (see docs/traffic.md).' })),
  panicThreshold: Type.Optional(
    Percent(
      `When fewer than this share of the service's instances may take traffic (the others ejected by outlier detection or failing this proxy's active checks), the proxy ignores those two verdicts and spreads requests over every instance (Envoy's healthy_panic_threshold). 0 turns it off. Default ${D.panicThreshold}.`,
    ),
  ),
};
export const TRAFFIC_FIELD_NAMES = Object.keys(TrafficFields) as Array<keyof typeof TrafficFields>;

export const TrafficSchema = Type.Object(TrafficFields, { additionalProperties: false });
export type RawTraffic = Static<typeof TrafficSchema>;
export type RawRoute = Static<typeof RouteSchema>;
export type RawRetries = Static<typeof RetriesSchema>;
export type RawBackend = Static<typeof BackendSchema>;
export type RawMirror = Static<typeof MirrorSchema>;
export type RawRateLimit = Static<typeof RateLimitSchema>;
export type RawRateLimits = Static<typeof RateLimitsSchema>;
