/**
 * What the HTTP/1.1 forwarder needs from the rest of the proxy: where a request goes
 * (`Destination`, from the listener's `resolve`), limits, connection pools and metrics.
 * Contracts that other protocols share live below the proxy: `Direction` in src/api/stats.ts,
 * tap records in src/api/tap.ts, the tracer and tap sink in src/engine/observe.ts, the hash-key
 * input in src/balance/hash-key.ts.
 */
import type { Direction } from '../../api/stats.js';
import type { Completion } from '../../balance/balancer.js';
import type { HashInput } from '../../balance/hash-key.js';
import type { ErrorCode } from '../../core/errors.js';
import type { Endpoint } from '../../discovery/endpoint.js';
import type { NoEndpointReason, TrafficState } from '../../resilience/traffic-state.js';

/** The metrics of one listener: one call per finished request. */
export interface ListenerMetrics {
  /**
   * `source`: the caller's service (null: unknown); `service`, `route`, `instance`: where it went
   * (null: not known, e.g. the proxy answered before an endpoint was picked); `status` 0: no
   * response; `failed`: the failure class (no response, 5xx, or an answer the proxy made itself).
   */
  record(source: string | null, service: string | null, route: string | null, instance: string | null, status: number, failed: boolean, seconds: number, requestBytes: number, responseBytes: number): void;
}

export interface Destination {
  readonly service: string;
  /** Routes, retry budget, breakers, outlier detection, limits and rate limits of the service. */
  readonly traffic: TrafficState;
  /**
   * An endpoint for this request, none of `tried` (endpoints that already failed to connect),
   * or null when none is left.
   */
  pick(req: HashInput, tried: readonly Endpoint[] | null): Endpoint | null;
  start(e: Endpoint): Completion;
  /** Why `pick` found no endpoint (for the error). */
  whyNone(): NoEndpointReason;
}

export interface RouteError {
  readonly error: ErrorCode;
  readonly message: string;
  /** When the code's own status is not the one to answer with. */
  readonly status?: number;
}

export interface Limits {
  /** Largest request (and response) head, in bytes. */
  readonly maxHeadBytes: number;
  /** Time a client has to send a complete request head, from its first byte. */
  readonly headersTimeoutMs: number;
  /** A client connection with no request in flight is closed after this long. */
  readonly idleTimeoutMs: number;
  /** An idle pooled upstream connection is closed after this long. */
  readonly upstreamIdleTimeoutMs: number;
  /** Time to establish a connection to the local app (inbound); outbound, the service's `timeouts.connect` applies. */
  readonly connectTimeoutMs: number;
  /** Most idle connections kept per endpoint. */
  readonly maxIdlePerEndpoint: number;
  /** Most client connections per listener. */
  readonly maxConnections: number;
}

export const DEFAULT_LIMITS: Limits = Object.freeze({
  maxHeadBytes: 64 * 1024,
  headersTimeoutMs: 10_000,
  idleTimeoutMs: 60_000,
  upstreamIdleTimeoutMs: 4_000,
  connectTimeoutMs: 3_000,
  maxIdlePerEndpoint: 256,
  maxConnections: 10_000,
});

/** Counters of the forwarder that are not per request. */
export interface ForwarderCounters {
  /** A proxy-made error response (x-skein-error). */
  proxyError(direction: Direction, code: ErrorCode): void;
  upstreamConnect(ok: boolean): void;
  /** A retry was sent (`reason`: a retry condition or "status"). */
  retry(service: string, reason: string): void;
  /** The retry budget refused a retry. */
  retryBudgetExhausted(service: string): void;
  /** A rate limit refused a request. */
  rateLimited(direction: Direction, service: string, route: string): void;
  /**
   * A response's first body bytes came `gapMs` after its head, in a later read (see stall.ts):
   * the Nagle / delayed-ACK stall when it is about 40 ms, again and again.
   */
  bodyGap(direction: Direction, service: string, endpoint: Endpoint, gapMs: number): void;
}
