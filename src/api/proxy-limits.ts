/**
 * The proxy's own limits (flags of `skein proxy`, not per service) and their defaults, written
 * once: the proxy and its CLI read them from here. The two that a service can also set
 * (timeouts.idle and timeouts.connect) default to the traffic policy's values.
 */
import { TRAFFIC_DEFAULTS } from './traffic.js';

export interface ProxyLimits {
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

export const PROXY_LIMITS_DEFAULTS: ProxyLimits = Object.freeze({
  maxHeadBytes: 64 * 1024,
  headersTimeoutMs: 10_000,
  idleTimeoutMs: 60_000,
  upstreamIdleTimeoutMs: TRAFFIC_DEFAULTS.idleTimeoutMs,
  connectTimeoutMs: TRAFFIC_DEFAULTS.connectTimeoutMs,
  maxIdlePerEndpoint: 256,
  maxConnections: 10_000,
});
