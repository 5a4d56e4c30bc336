/**
 * What the HTTP/1.1 forwarder needs from the rest of the proxy: its listener (`ListenerContext`:
 * where a request goes, limits, connection pools, metrics, taps, tracer, access and audit logs).
 * Contracts that other protocols share live below the proxy: `Direction` in src/api/stats.ts,
 * tap records in src/api/tap.ts, the tracer and tap sink in src/engine/observe.ts, the hash-key
 * input in src/balance/hash-key.ts.
 */
import type { Direction } from '../../api/stats.js';
import type { Rng } from '../../core/backoff.js';
import type { Clock } from '../../core/clock.js';
import type { ErrorCode } from '../../core/errors.js';
import type { Endpoint } from '../../discovery/endpoint.js';
import type { AdmissionCounters } from '../../engine/admission.js';
import type { CallCounters } from '../../engine/call.js';
import type { Mirrors } from '../../engine/mirror.js';
import type { TapSink, Tracer } from '../../engine/observe.js';
import type { Destination, Refusal } from '../../engine/service-client.js';
import type { TlsRefusal } from '../../api/mtls.js';
import type { AuthzObserver, ServiceAuthz } from '../../engine/authorization.js';
import type { UpstreamTls } from '../../identity/mtls/outbound.js';
import type { ProxyLimits as Limits } from '../../api/proxy-limits.js';
import type { AccessLog } from '../access-log.js';
import type { ProxyAudit } from '../../telemetry/audit-log.js';
import type { Pools } from './upstream.js';
import type { Socket } from 'node:net';
import type { PeerIdentity } from '../tls/inbound.js';

/** A listener, as its client connections see it. */
export interface ListenerContext {
  readonly workload: string;
  /** The workload's service: sent as x-skein-caller on outbound requests. */
  readonly callerService: string;
  readonly direction: Direction;
  readonly limits: Limits;
  readonly pools: Pools;
  readonly counters: ForwarderCounters;
  /** Where a request for this authority (`host[:port]`, or null when there is none) goes. */
  resolve(authority: string | null): Destination | RouteError;
  /** True while the listener drains: responses close their connections. */
  readonly draining: boolean;
  /** One line per finished request, when the access log is on. */
  readonly accessLog: AccessLog | null;
  /** Authorization decisions that are not plain allows, when the audit log is on. */
  readonly audit: ProxyAudit | null;
  /** Per-request metrics of this listener; null: metrics off. */
  readonly metrics: ListenerMetrics | null;
  /** Live request taps (`skein tap`); null: none possible. */
  readonly tap: TapSink | null;
  /** A span per hop and attempt; null: tracing off (trace headers pass through untouched). */
  readonly tracer: Tracer | null;
  /** Copies of requests to their routes' mirrors (src/engine/mirror.ts). */
  readonly mirrors: Mirrors;
  /** Time and timers of calls (deadlines, backoff, latencies). */
  readonly clock: Clock;
  /** Randomness of calls (backoff jitter, fault injection). */
  readonly rng: Rng;
  /**
   * Inbound in mTLS mode off: the caller's proxy's x-skein-caller names the caller in metrics,
   * logs and traces (a claim, never used for authorization). False with mTLS on: only a verified
   * certificate names the caller.
   */
  readonly claimedCallers: boolean;
  /** Inbound: the served service's authorization (null: outbound). */
  readonly authz: ServiceAuthz | null;
  /** How a connection to `e` is made: mTLS, plaintext (null), or refused (strict mode without a certificate). */
  upstreamTls(e: Endpoint): UpstreamTls | Refusal | null;
  /**
   * Outbound: what serves a CONNECT tunnel to the mesh service `dest` once it is answered 200
   * (`rest`: the bytes that came after the CONNECT head); null: CONNECT is refused.
   */
  readonly tunnel: ((socket: Socket, peer: PeerIdentity | null, rest: Buffer, dest: Destination) => void) | null;
}

/** The metrics of one listener: one call per finished request. */
export interface ListenerMetrics {
  /**
   * `source`: the caller's service (null: unknown); `service`, `route`, `instance`: where it went
   * (null: not known, e.g. the proxy answered before an endpoint was picked); `status` 0: no
   * response; `failed`: the failure class (no response, 5xx, or an answer the proxy made itself);
   * `mtls`: the hop between proxies was mTLS (RequestRecord.mtls); `version`: the version of the
   * endpoint that answered (null or "": none).
   */
  record(source: string | null, service: string | null, route: string | null, instance: string | null, status: number, failed: boolean, seconds: number, requestBytes: number, responseBytes: number, mtls?: boolean, version?: string | null): void;
}

export interface RouteError {
  readonly error: ErrorCode;
  readonly message: string;
  /** When the code's own status is not the one to answer with. */
  readonly status?: number;
}

/** The proxy's own limits and their defaults (flags of `skein proxy`), defined in src/api. */
export type { ProxyLimits as Limits } from '../../api/proxy-limits.js';
export { PROXY_LIMITS_DEFAULTS as DEFAULT_LIMITS } from '../../api/proxy-limits.js';

/** Counters of the forwarder that are not per request (with the engine's: retries, budget, rate limits). */
export interface ForwarderCounters extends CallCounters, AdmissionCounters, AuthzObserver {
  /** A proxy-made error response (x-skein-error). */
  proxyError(direction: Direction, code: ErrorCode): void;
  upstreamConnect(ok: boolean): void;
  /**
   * A response's first body bytes came `gapMs` after its head, in a later read (see stall.ts):
   * the Nagle / delayed-ACK stall when it is about 40 ms, again and again.
   */
  bodyGap(direction: Direction, service: string, endpoint: Endpoint, gapMs: number): void;
  /** An mTLS connection was refused (`endpoint`: the peer, outbound; null inbound). */
  tlsRefused(direction: Direction, reason: TlsRefusal, detail: string, endpoint: Endpoint | null): void;
}
