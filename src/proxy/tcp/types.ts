/**
 * What the TCP driver (stream.ts) needs from the rest of the proxy: a listener of a tcp service
 * (`TcpContext`), and the counters of opaque streams (`TcpCounters`, implemented by the proxy's
 * metrics). The listener of `skein proxy` implements it (src/proxy/proxy.ts), and so can any
 * driver that hands a connection over (CONNECT in the HTTP/1 driver: `handOff` in stream.ts).
 */
import type { Logger } from 'pino';
import type { Direction } from '../../api/stats.js';
import type { Rng } from '../../core/backoff.js';
import type { Clock } from '../../core/clock.js';
import type { ErrorCode } from '../../core/errors.js';
import type { Endpoint } from '../../discovery/endpoint.js';
import type { ServiceAuthz } from '../../engine/authorization.js';
import type { Refusal } from '../../engine/service-client.js';
import type { ProxyAudit } from '../../telemetry/audit-log.js';
import type { TapSink } from '../../engine/observe.js';
import type { AccessLog } from '../access-log.js';
import type { ForwarderCounters, Limits, ListenerMetrics } from '../http1/types.js';
import type { UpstreamTls } from '../../identity/mtls/outbound.js';

/** The numbers of one stream's series (workload, direction, service): added to as bytes flow. */
export interface TcpSeries {
  /** Bytes received from the client (and sent on to the upstream). */
  received(n: number): void;
  /** Bytes sent to the client (received from the upstream). */
  sent(n: number): void;
  /** The stream closed: `result` is "established" or the SKEIN_E_* code it ended with, `seconds` its life from accept. */
  closed(result: 'established' | ErrorCode, seconds: number): void;
}

/** The proxy's counters of opaque streams (src/proxy/metrics.ts). */
export interface TcpCounters {
  /** A stream of `workload`'s `direction` listener to `service` opened: its series (counted open until `closed`). */
  tcpOpened(workload: string, direction: Direction, service: string): TcpSeries;
}

/** A listener of a tcp service, as its streams see it. */
export interface TcpContext {
  readonly workload: string;
  /** The workload's service (outbound: whom the streams count against). */
  readonly callerService: string;
  readonly direction: Direction;
  /** connectTimeoutMs (inbound: to the local app), maxConnections. */
  readonly limits: Limits;
  readonly counters: ForwarderCounters;
  readonly tcp: TcpCounters;
  readonly draining: boolean;
  readonly clock: Clock;
  readonly rng: Rng;
  /** Inbound: the served service's authorization (null: outbound). */
  readonly authz: ServiceAuthz | null;
  readonly audit: ProxyAudit | null;
  /** The listener's golden-signal series (a stream counts as a request: see stream.ts); null: off. */
  readonly metrics: ListenerMetrics | null;
  /** Taps (`skein tap`): a stream is published when it closes. */
  readonly tap: TapSink | null;
  /** One line per stream, when it closes. */
  readonly accessLog: AccessLog | null;
  /** Where a failed stream is logged (there is no response to carry its error). */
  readonly logger: Logger | undefined;
  /** How a connection to `e` is made: mTLS, plaintext (null), or refused (strict mode without a certificate). */
  upstreamTls(e: Endpoint): UpstreamTls | Refusal | null;
}
