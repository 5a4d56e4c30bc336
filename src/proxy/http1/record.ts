/**
 * One request's record: what is known of it as it goes (caller, service, route, request id, the
 * bytes each way, what the taps asked to see), finished once into the listener's metrics, its
 * trace span, the taps and the access log. A client connection keeps one and reuses it for each
 * of its requests.
 */
import { performance } from 'node:perf_hooks';
import type { Direction } from '../../api/stats.js';
import { isSecretHeader, REDACTED } from '../../api/tap.js';
import type { Endpoint } from '../../discovery/endpoint.js';
import { TAP_BODIES, TAP_HEADERS, type HopTrace } from '../../engine/observe.js';
import { TapCapture } from '../../telemetry/tap.js';
import { pathOnly } from '../access-log.js';
import type { HeadCollector } from './head.js';
import type { ListenerContext } from './types.js';

/** The headers of a head, for a tap: names in lower case, secrets redacted. */
function tapHeaders(buf: Buffer, head: HeadCollector): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < head.count; i++) {
    const name = head.nameOf(buf, i).toLowerCase();
    const value = isSecretHeader(name) ? REDACTED : head.valueOf(buf, i);
    out[name] = out[name] === undefined ? value : `${out[name]}, ${value}`;
  }
  return out;
}

export class RequestRecord {
  method = '';
  /** The normalized target (query included). */
  path = '';
  caller: string | null = null;
  service: string | null = null;
  route: string | null = null;
  requestId: string | null = null;
  /** performance.now() when the head was complete; 0: not yet. */
  private headAt = 0;
  requestBytes = 0;
  responseBytes = 0;
  /** The hop between proxies was mTLS: inbound, the client's connection; outbound, the attempt's upstream connection. */
  mtls = false;
  /** Inbound over mTLS: every request of the connection is (set once by the driver). */
  connectionMtls = false;
  /** The hop's trace span (tracing on). */
  hop: HopTrace | null = null;
  /** What taps want of this request (TAP_* bits), and what they get of it. */
  tapWants = 0;
  private reqHeaders: Record<string, string> | null = null;
  private resHeaders: Record<string, string> | null = null;
  private reqBody: TapCapture | null = null;
  private resBody: TapCapture | null = null;

  constructor(
    private readonly ctx: ListenerContext,
    /** The client's address. */
    readonly client: string,
  ) {}

  /** A new request on the connection. */
  reset(): void {
    this.method = this.path = '';
    this.caller = this.service = this.route = this.requestId = null;
    this.headAt = 0;
    this.requestBytes = this.responseBytes = 0;
    this.hop = null;
    this.tapWants = 0;
    this.reqHeaders = this.resHeaders = null;
    this.reqBody = this.resBody = null;
  }

  headComplete(): void {
    this.headAt = performance.now();
    this.mtls = this.connectionMtls;
  }

  /** Asks the taps whether they want this request, and keeps its headers if they do. */
  tap(buf: Buffer, head: HeadCollector): void {
    const sink = this.ctx.tap;
    if (sink === null) return;
    const wants = sink.wants(this.caller, this.service);
    this.tapWants = wants;
    if ((wants & TAP_HEADERS) !== 0) this.reqHeaders = tapHeaders(buf, head);
  }

  /** As `tap`, for a protocol whose headers come as an object (HTTP/2): `headers` is read only when a tap wants them. */
  tapHeaders(headers: () => Record<string, string>): void {
    const sink = this.ctx.tap;
    if (sink === null) return;
    const wants = sink.wants(this.caller, this.service);
    this.tapWants = wants;
    if ((wants & TAP_HEADERS) !== 0) this.reqHeaders = headers();
  }

  /** As `responseHead`, with the headers as an object (HTTP/2). */
  responseHeaders(headers: () => Record<string, string>): void {
    if ((this.tapWants & TAP_HEADERS) !== 0) this.resHeaders = headers();
  }

  requestBody(data: Buffer): void {
    this.requestBytes += data.length;
    if ((this.tapWants & TAP_BODIES) !== 0) (this.reqBody ??= new TapCapture()).add(data);
  }

  responseHead(buf: Buffer, head: HeadCollector): void {
    if ((this.tapWants & TAP_HEADERS) !== 0) this.resHeaders = tapHeaders(buf, head);
  }

  responseBody(data: Buffer): void {
    this.responseBytes += data.length;
    if ((this.tapWants & TAP_BODIES) !== 0) (this.resBody ??= new TapCapture()).add(data);
  }

  /**
   * The request is over (answered by an app or the proxy, or cut short): metrics, trace span,
   * taps and access log, once. `status` 0: no response; `error`: the proxy's error code;
   * `outcome`: the status the outcome counts as when it is not `status` (a gRPC status: the
   * engine's Call.outcomeStatus), for the failure class.
   */
  finish(status: number, error: string | null, upstream: Endpoint | null, attempts: number, outcome = status): void {
    const ctx = this.ctx;
    const ms = this.headAt === 0 ? 0 : performance.now() - this.headAt;
    ctx.metrics?.record(this.caller, this.service, this.route, upstream === null ? null : upstream.id, status, outcome === 0 || outcome >= 500 || error !== null, ms / 1000, this.requestBytes, this.responseBytes, this.mtls, upstream === null ? null : upstream.version);
    const hop = this.hop;
    if (hop !== null) {
      this.hop = null;
      hop.end(status, error);
    }
    if (this.tapWants !== 0) this.publishTap(ctx.direction, status, error, upstream, ms);
    const log = ctx.accessLog;
    if (log === null) return;
    log.write({
      workload: ctx.workload,
      direction: ctx.direction,
      client: this.client,
      caller: this.caller,
      method: this.method,
      path: pathOnly(this.path),
      service: this.service,
      route: this.route,
      status,
      durationMs: Math.round(ms * 100) / 100,
      upstream: upstream === null ? null : `${upstream.id} ${upstream.address}:${upstream.port}`,
      attempts,
      error,
      requestId: this.requestId,
    });
  }

  private publishTap(direction: Direction, status: number, error: string | null, upstream: Endpoint | null, ms: number): void {
    const wants = this.tapWants;
    this.tapWants = 0;
    this.ctx.tap?.publish({
      time: Date.now(),
      direction,
      workload: this.ctx.workload,
      source: this.caller,
      destination: this.service,
      route: this.route,
      method: this.method,
      path: pathOnly(this.path),
      status,
      latencyMs: Math.round(ms * 1000) / 1000,
      instance: upstream === null ? null : upstream.id,
      requestId: this.requestId,
      error,
      ...((wants & TAP_HEADERS) !== 0 ? { requestHeaders: this.reqHeaders ?? {}, responseHeaders: this.resHeaders ?? {} } : {}),
      ...((wants & TAP_BODIES) !== 0 ? { requestBody: this.reqBody?.text() ?? '', responseBody: this.resBody?.text() ?? '' } : {}),
    });
    this.reqHeaders = this.resHeaders = null;
    this.reqBody = this.resBody = null;
  }
}
