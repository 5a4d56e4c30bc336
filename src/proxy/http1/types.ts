/**
 * What the HTTP/1.1 forwarder needs from the rest of the proxy: where a request goes
 * (`Destination`, from the listener's `resolve`), limits, connection pools and metrics.
 */
import type { Completion } from '../../balance/balancer.js';
import type { ErrorCode } from '../../core/errors.js';
import type { Endpoint } from '../../discovery/endpoint.js';
import type { NoEndpointReason, TrafficState } from '../../resilience/traffic-state.js';

export type Direction = 'inbound' | 'outbound';

/** Per-endpoint counters, resolved once per (listener, service, endpoint) and cached. */
export interface EndpointStats {
  /** A request got a response (status) after `seconds`; status 0: no response. */
  record(status: number, seconds: number): void;
}

/** What a hashing balancer needs of a request. */
export interface HashInput {
  /** The value of a request header (lowercase name), several joined with ", ". */
  header(lowerName: string): string | undefined;
  readonly sourceAddress: string | undefined;
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
  stats(e: Endpoint): EndpointStats;
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
}
