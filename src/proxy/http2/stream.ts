/**
 * One HTTP/2 stream: one request, one engine Call (src/engine/call.ts), which decides every
 * attempt, retry, deadline and error; this moves the bytes. Each attempt is a stream on a pooled
 * upstream session of the endpoint the call picked (pool.ts), so the streams of one client
 * connection spread over every instance (per-request balancing).
 *
 *   client stream ──headers──► H2Exchange ◄──decisions── Call (engine)
 *                                  │  ▲
 *                             send ▼  │ outcomes (connected, head, reset, ...)
 *                          upstream stream (UpSession, pool.ts)
 *
 * What it keeps of HTTP/2 and gRPC (docs/protocols.md):
 * - Trailers always pass: both directions use `waitForTrailers` and send the trailers that came,
 *   or none (an empty DATA frame with END_STREAM: Node's sendTrailers({})).
 * - A response whose HEADERS frame ends the stream (a gRPC Trailers-Only answer, a 204) is
 *   answered the same way: the END_STREAM flag of the frame decides, not `endAfterHeaders`.
 * - `te: trailers` passes (Node refuses any other te value in HTTP/2).
 * - Interim responses (100 Continue, 103 Early Hints) of the upstream reach the client before the
 *   final one (`additionalHeaders`).
 * - A gRPC request's grpc-status goes to the call (Trailers-Only: with the head, where it can be
 *   retried; otherwise with the trailers), and its deadline is the shorter of the route's and
 *   `grpc-timeout`, which each attempt sends again with the time left (and x-skein-timeout-ms).
 * - The proxy's own answers carry x-skein-error; on a gRPC request they are gRPC errors
 *   (Trailers-Only, grpc-status + grpc-message), a deadline the proxy enforced being
 *   DEADLINE_EXCEEDED (4), never an HTTP 504. Nothing here closes the session.
 *
 * Why one file of ~500 lines: the request side, the response side and the call's decisions of one
 * stream share its state (the attempt, what was delivered, the trailers), as in http1/exchange.ts.
 */
import { IDEMPOTENT_METHODS } from '../../resilience/retry.js';
import { MAX_QUEUED_BODY } from '../http1/exchange.js';
import http2, { type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { CLIENT_ID_HEADER } from '../../api/mtls.js';
import { isSecretHeader, REDACTED } from '../../api/tap.js';
import type { HashInput } from '../../balance/hash-key.js';
import { ERROR_CODES, type ErrorCode } from '../../core/errors.js';
import { normalizePath } from '../../authz/normalize.js';
import { admit, badDeadline, callerOf, connectionRefusal, deadlineMs, deadlineOf, isRefusal } from '../../engine/admission.js';
import { authorize } from '../../engine/authorization.js';
import { Call, localExplanation, type Attempt, type CallDriver, type CallFailure, type CallRequest } from '../../engine/call.js';
import type { AttemptTrace, TraceHeaders } from '../../engine/observe.js';
import type { Destination, Refusal } from '../../engine/service-client.js';
import type { RouteInput } from '../../resilience/routes.js';
import { pathOnly } from '../access-log.js';
import { errorBody, errorHead } from '../../engine/answer.js';
import { RequestRecord } from '../http1/record.js';
import { requestIds } from '../http1/request-head.js';
import { refusedByPeer } from '../../engine/answer.js';
import { TlsRefused } from '../http1/upstream.js';
import type { RouteError } from '../http1/types.js';
import { formatGrpcTimeout, grpcMessage, grpcStatusOf, isGrpc, parseGrpcTimeout } from './grpc.js';
import type { UpSession } from './pool.js';
import type { H2Downstream } from './session.js';
import type { Shadow } from '../../engine/mirror.js';
import { H2Shadow } from './shadow.js';

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_NO_ERROR } = http2.constants;
/** The END_STREAM flag of a HEADERS frame. */
const END_STREAM = 0x1;

/** Never forwarded: connection-specific (RFC 9113 §8.2.2) or the proxy's own. */
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings', 'host']);
/** Dropped from requests: the proxy writes its own. */
const REQUEST_OWN = new Set(['x-skein-timeout-ms', 'x-skein-caller', CLIENT_ID_HEADER, 'grpc-timeout', 'x-forwarded-for', 'x-skein-error-origin']);
const TRACE = new Map<string, keyof TraceHeaders>([
  ['traceparent', 'traceparent'],
  ['tracestate', 'tracestate'],
  ['b3', 'b3'],
  ['x-b3-traceid', 'xB3TraceId'],
  ['x-b3-spanid', 'xB3SpanId'],
  ['x-b3-parentspanid', 'xB3ParentSpanId'],
  ['x-b3-sampled', 'xB3Sampled'],
  ['x-b3-flags', 'xB3Flags'],
]);

const one = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v.join(', ') : v);

function isRouteError(r: Destination | RouteError): r is RouteError {
  return (r as RouteError).error !== undefined;
}

/** Headers as a tap shows them: pseudo-headers too, secrets redacted (as the HTTP/1 record does). */
function plainHeaders(h: IncomingHttpHeaders | OutgoingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of Object.keys(h)) {
    const v = h[k];
    if (v !== undefined) out[k] = isSecretHeader(k) ? REDACTED : Array.isArray(v) ? v.join(', ') : String(v);
  }
  return out;
}

export class H2Exchange implements CallDriver, RouteInput, HashInput {
  private call: Call | null = null;
  /** The request's copy for a mirror, while its body comes in. */
  private shadow: Shadow | null = null;
  private shadowDriver: H2Shadow | null = null;
  private dest: Destination | null = null;
  readonly record: RequestRecord;
  readonly method: string;
  path = '';
  private readonly grpc: boolean;
  private readonly hasBody: boolean;
  private requestId = '';
  private explain = false;
  /** The request headers for the upstream, without what each attempt adds. */
  private upHeaders: OutgoingHttpHeaders = {};
  /** The current attempt: its stream and session, and a number that tells its events from an earlier attempt's. */
  private up: ClientHttp2Stream | null = null;
  private upSession: UpSession | null = null;
  private gen = 0;
  private trace: AttemptTrace | null = null;
  /** Request body bytes that came before the attempt's stream was open. */
  private queue: Buffer[] | null = [];
  /** Bytes in `queue`. */
  private queued = 0;
  private reqDone = false;
  private reqTrailers: OutgoingHttpHeaders | null = null;
  private resTrailers: OutgoingHttpHeaders | null = null;
  /** The response status delivered (0: none yet). */
  private status = 0;
  /** grpc-status of a Trailers-Only response delivered; -1: none. */
  private headGrpc = -1;
  private delivered = false;
  private discard = false;
  private finished = false;
  private readonly outbound: boolean;

  constructor(
    private readonly ds: H2Downstream,
    private readonly stream: ServerHttp2Stream,
    private readonly headers: IncomingHttpHeaders,
    flags: number,
  ) {
    this.record = new RequestRecord(ds.ctx, ds.peer);
    this.record.connectionMtls = ds.peerId !== null;
    this.method = one(headers[':method']) ?? '';
    this.grpc = isGrpc(one(headers['content-type']));
    this.hasBody = (flags & END_STREAM) === 0;
    this.reqDone = !this.hasBody;
    this.outbound = ds.ctx.direction === 'outbound';
    stream.on('data', (d: Buffer) => this.requestBody(d));
    stream.on('trailers', (t: IncomingHttpHeaders) => (this.reqTrailers = this.forwardable(t, false)));
    stream.on('end', () => this.requestDone());
    stream.on('wantTrailers', () => stream.sendTrailers(this.resTrailers ?? {}));
    stream.on('error', () => undefined);
    // Emitted as the client's RST_STREAM is read (the 'close' that follows may come a read later):
    // the rapid-reset count sees every reset of a read before nghttp2's own limit does. Not the
    // proxy's own reset of a stream it finished (an upstream cut mid-response): Node emits
    // 'aborted' for that too, and a dying instance would get its healthy callers GOAWAY.
    stream.on('aborted', () => {
      if (!this.finished) ds.clientReset(stream.rstCode ?? http2.constants.NGHTTP2_CANCEL);
    });
    stream.on('close', () => this.streamClosed());
  }

  // ---- what routes and balancers read ----

  header(lowerName: string): string | undefined {
    return one(this.headers[lowerName]);
  }
  get sourceAddress(): string {
    return this.ds.peer;
  }

  // ---- the request ----

  /** Routes and admits the request, then starts its call (or answers it). */
  start(): void {
    const ds = this.ds;
    const ctx = ds.ctx;
    const h = this.headers;
    const rec = this.record;
    const rid = one(h['x-request-id']);
    this.requestId = rid ?? requestIds.next();
    rec.requestId = this.requestId;
    rec.method = this.method;
    rec.headComplete();
    rec.caller = this.outbound ? ctx.callerService : (ds.peerId?.service ?? (ctx.claimedCallers ? (one(h['x-skein-caller']) ?? null) : null));
    if (this.method === 'CONNECT') {
      this.answer('SKEIN_E_BAD_REQUEST', 'CONNECT is not supported over HTTP/2: send plain requests (the mesh encrypts between proxies)');
      return;
    }
    const target = one(h[':path']) ?? '';
    const p = target === '*' ? { path: '*', query: '' } : normalizePath(target);
    if ('error' in p) {
      this.answer('SKEIN_E_BAD_PATH', `request target "${target.slice(0, 100)}": ${p.error}`);
      return;
    }
    this.path = p.query === '' ? p.path : p.path + p.query;
    rec.path = this.path;
    if (ctx.draining) {
      this.answer('SKEIN_E_PROXY_DRAINING', 'the proxy is shutting down');
      return;
    }
    const dest = ctx.resolve(one(h[':authority']) ?? one(h['host']) ?? null);
    if (isRouteError(dest)) {
      this.answer(dest.error, dest.message, { status: dest.status });
      return;
    }
    this.dest = dest;
    const route = dest.traffic.routes.match(this);
    rec.service = dest.service;
    rec.route = route.name;
    if (ctx.authz !== null) {
      const peer = ds.peerId;
      const audit = ctx.audit;
      const port = ds.socket.localPort ?? 0;
      const refusal = authorize(
        ctx.authz,
        dest.service,
        () => ({ identity: peer?.identity ?? null, namespace: peer?.namespace ?? null, service: peer?.service ?? null, sourceAddress: ds.peer, method: this.method, path: p.path, port, header: (n) => this.header(n) ?? null }),
        ctx.counters,
        audit === null
          ? null
          : (d) => audit.authz(d, () => ({ service: dest.service, sourceIdentity: peer?.identity ?? null, sourceAddress: ds.peer, tls: peer === null ? 'plaintext' : 'mtls', port, method: this.method, rawPath: target.split('?')[0] ?? '', path: p.path, requestId: this.requestId })),
      );
      if (refusal !== null) {
        this.refused(refusal);
        return;
      }
    }
    // The caller's deadline: x-skein-timeout-ms (a peer proxy's) and grpc-timeout, the smaller.
    let callerMs = -1;
    const xt = one(h['x-skein-timeout-ms']);
    if (xt !== undefined) {
      const ms = deadlineMs(xt);
      if (typeof ms === 'string') {
        this.refused(badDeadline(ms));
        return;
      }
      callerMs = ms;
    }
    const gt = one(h['grpc-timeout']);
    if (gt !== undefined) {
      const ms = parseGrpcTimeout(gt);
      if (ms === null) {
        this.answer('SKEIN_E_BAD_REQUEST', `grpc-timeout must be 1 to 8 digits and a unit (H, M, S, m, u, n), not "${gt.slice(0, 40)}"`);
        return;
      }
      if (callerMs < 0 || ms < callerMs) callerMs = ms;
    }
    const timeoutMs = deadlineOf(route, ctx.direction, dest.service, callerMs);
    if (typeof timeoutMs !== 'number') {
      this.refused(timeoutMs);
      return;
    }
    this.explain = this.outbound && one(h['x-skein-explain']) === '1';
    rec.tapHeaders(() => plainHeaders(h));
    let trace: TraceHeaders | null = null;
    if (ctx.tracer !== null) {
      for (const [name, key] of TRACE) {
        const v = one(h[name]);
        if (v !== undefined) (trace ??= {})[key] = v;
      }
      rec.hop = ctx.tracer.hop(ctx.direction, trace ?? {}, { workload: ctx.workload, service: dest.service, route: route.name, method: this.method, path: pathOnly(this.path), ...(rec.caller === null ? {} : { caller: rec.caller }) });
    }
    const admitted = admit(dest.traffic, route, ctx.direction, callerOf(ctx.direction, ctx.workload, rec.caller, ds.peer), ctx.rng, ctx.counters);
    if (isRefusal(admitted)) {
      this.refused(admitted);
      return;
    }
    this.upHeaders = this.requestHeaders(rid === undefined, trace !== null);
    const shadow = ctx.mirrors.shadow(ctx.direction, dest, route, IDEMPOTENT_METHODS.has(this.method), false);
    if (shadow !== null) this.mirror(shadow);
    const req: CallRequest = {
      direction: ctx.direction,
      route,
      idempotent: IDEMPOTENT_METHODS.has(this.method),
      hasBody: this.hasBody,
      upgrade: false,
      timeoutMs,
      delayMs: admitted.delayMs,
      hash: this,
      hop: rec.hop,
      grpc: this.grpc,
    };
    this.call = new Call(dest, req, this, ctx.clock, ctx.counters, ctx.rng);
    if (this.reqDone) this.call.requestComplete();
    this.call.start();
    // A copy of a request already complete leaves once the request itself is on its way.
    if (this.reqDone) this.shadowSend();
  }

  /** A copy of the request for its route's mirror: sent after the request's call starts, or when its body is in (`requestDone`). */
  private mirror(shadow: Shadow): void {
    this.shadowDriver = new H2Shadow(this.ds.ctx, this.upHeaders, this.grpc);
    this.shadow = shadow;
  }

  private shadowSend(): void {
    const s = this.shadow;
    if (s === null) return;
    this.shadow = null;
    s.send(this.shadowDriver as H2Shadow, this);
    this.shadowDriver = null;
  }

  /** The request headers for the upstream: the client's minus the hop's and the proxy's own, plus the proxy's. */
  private requestHeaders(needId: boolean, tracing: boolean): OutgoingHttpHeaders {
    const h = this.headers;
    const ds = this.ds;
    const out = this.forwardable(h, tracing);
    out[':method'] = this.method;
    out[':path'] = this.path;
    out[':scheme'] = 'http';
    out[':authority'] = one(h[':authority']) ?? one(h['host']) ?? '';
    if (this.outbound) delete out['x-skein-explain'];
    const xff = one(h['x-forwarded-for']);
    out['x-forwarded-for'] = xff === undefined ? ds.peer : `${xff}, ${ds.peer}`;
    if (out['x-forwarded-proto'] === undefined) out['x-forwarded-proto'] = 'http';
    if (needId) out['x-request-id'] = this.requestId;
    if (this.record.caller !== null) out['x-skein-caller'] = this.record.caller;
    if (!this.outbound && ds.peerId !== null) out[CLIENT_ID_HEADER] = ds.peerId.identity;
    return out;
  }

  /** The headers (or trailers) that go on: no pseudo-headers, nothing connection-specific, none of the proxy's own. */
  private forwardable(h: IncomingHttpHeaders, tracing: boolean): OutgoingHttpHeaders {
    const out: OutgoingHttpHeaders = {};
    for (const k of Object.keys(h)) {
      if (k.charCodeAt(0) === 0x3a || HOP.has(k) || REQUEST_OWN.has(k) || (tracing && TRACE.has(k))) continue;
      const v = h[k];
      if (v === undefined) continue;
      // TE is hop-by-hop, but "trailers" is what gRPC needs the server to know (and all HTTP/2 allows).
      if (k === 'te') {
        if (one(v)?.trim().toLowerCase() === 'trailers') out[k] = 'trailers';
        continue;
      }
      out[k] = v;
    }
    return out;
  }

  private requestBody(d: Buffer): void {
    this.record.requestBody(d);
    this.shadow?.requestBody(d);
    this.call?.requestBody(d);
    const up = this.up;
    if (up === null || this.queue !== null) {
      const q = this.queue;
      if (q !== null) {
        q.push(d);
        this.queued += d.length;
        // Until an attempt takes it (a session connecting, a fault delay, a cold-start hold): at
        // most MAX_QUEUED_BODY, then the client's stream waits (its flow-control window closes).
        if (this.queued > MAX_QUEUED_BODY) this.stream.pause();
      }
      return;
    }
    if (!up.write(d)) {
      this.stream.pause();
      up.once('drain', () => this.stream.resume());
    }
  }

  private requestDone(): void {
    if (this.reqDone) return;
    this.reqDone = true;
    if (this.shadow !== null) this.shadowSend();
    this.call?.requestComplete();
    const up = this.up;
    if (up !== null && this.queue === null) up.end();
  }

  // ---- the call's decisions ----

  send(a: Attempt): Refusal | null {
    this.detach();
    this.trace = a.trace;
    const ctx = this.ds.ctx;
    const dest = this.dest!;
    const e = a.endpoint;
    const tls = ctx.upstreamTls(e);
    if (tls !== null && 'code' in tls) return tls;
    const t = dest.traffic;
    const outbound = this.outbound;
    let refusal: Refusal | null = null;
    const s = ctx.h2Pools.session(
      e,
      tls,
      () => (refusal = outbound ? connectionRefusal(t) : null) === null,
      outbound ? t.policy.connectTimeoutMs : ctx.limits.connectTimeoutMs,
      outbound ? t.connections : null,
      outbound ? t.policy.idleTimeoutMs : ctx.limits.upstreamIdleTimeoutMs,
    );
    if (s === null) return refusal;
    // A retry sends the body the call kept.
    if (a.n > 1 || a.fresh) {
      this.queue = [...(a.body as Buffer[])];
      this.queued = this.queue.reduce((n, b) => n + b.length, 0);
    }
    this.upSession = s;
    s.active++;
    const gen = this.gen;
    if (s.ready) this.open(s);
    else {
      if (outbound) t.pending++;
      s.whenReady((err) => {
        if (outbound) t.pending--;
        if (gen !== this.gen) return;
        if (err === null) this.open(s);
        else this.connectFailed(s, err);
      });
    }
    return null;
  }

  private connectFailed(s: UpSession, err: Error): void {
    this.releaseSession(s);
    const ctx = this.ds.ctx;
    ctx.counters.upstreamConnect(false);
    if (err instanceof TlsRefused) {
      const e = s.endpoint;
      ctx.counters.tlsRefused('outbound', err.reason, err.message, e);
      ctx.audit?.tlsRefused('outbound', err.reason, err.message, `${e.address}:${e.port}`, e.service, e.port);
    }
    this.call?.connectFailed(err.message, err instanceof TlsRefused);
  }

  /** The attempt's stream: opened on a ready session. */
  private open(s: UpSession): void {
    const call = this.call!;
    if (this.finished || !call.connected()) {
      this.releaseSession(s);
      return;
    }
    if (!s.used) this.ds.ctx.counters.upstreamConnect(true);
    const reused = s.used;
    s.used = true;
    if (this.outbound) this.record.mtls = s.secure;
    const headers: OutgoingHttpHeaders = { ...this.upHeaders };
    const left = call.timeLeftMs();
    if (left > 0) {
      headers['x-skein-timeout-ms'] = String(left);
      if (this.grpc) headers['grpc-timeout'] = formatGrpcTimeout(left);
    }
    const t = this.trace;
    if (t !== null) for (const [name, value] of t.headers) headers[name] = value;
    const q = this.queue ?? [];
    const endStream = this.reqDone && q.length === 0 && this.reqTrailers === null;
    let up: ClientHttp2Stream;
    try {
      up = s.session.request(headers, { endStream, waitForTrailers: !endStream });
    } catch (err) {
      // The session went away between its check and the request (GOAWAY, closed).
      this.releaseSession(s);
      call.connectFailed((err as Error).message);
      return;
    }
    this.up = up;
    const gen = this.gen;
    up.on('response', (h: IncomingHttpHeaders, flags: number) => {
      if (gen === this.gen) this.onResponse(h, flags);
    });
    // Interim responses (100 Continue, 103 Early Hints): Node emits each 1xx block as 'headers'.
    up.on('headers', (h: IncomingHttpHeaders) => {
      if (gen === this.gen) this.onInterim(h);
    });
    up.on('data', (d: Buffer) => {
      if (gen === this.gen) this.onResponseBody(up, d);
    });
    up.on('trailers', (tr: IncomingHttpHeaders) => {
      if (gen === this.gen) this.resTrailers = this.responseTrailers(tr);
    });
    up.on('end', () => {
      if (gen === this.gen) this.onResponseEnd();
    });
    up.on('wantTrailers', () => up.sendTrailers(this.reqTrailers ?? {}));
    up.on('error', () => undefined);
    up.on('close', () => {
      s.active--;
      if (gen === this.gen) this.onUpstreamClosed(up, reused);
    });
    this.queue = null;
    this.queued = 0;
    if (!endStream) {
      for (const b of q) up.write(b);
      if (this.reqDone) up.end();
    }
    // Paused for a full queue, or for the drain of an attempt since let go: this attempt reads on.
    if (this.stream.isPaused()) this.stream.resume();
  }

  abandon(): void {
    this.detach();
  }

  /** Lets go of the current attempt (its stream cancelled): later events of it are ignored. */
  private detach(): void {
    this.gen++;
    this.discard = false;
    const up = this.up;
    this.up = null;
    if (up !== null && !up.closed) up.close(NGHTTP2_CANCEL);
    if (up === null && this.upSession !== null) this.releaseSession(this.upSession);
    this.upSession = null;
  }

  private releaseSession(s: UpSession): void {
    if (this.upSession === s && this.up === null) {
      s.active--;
      this.upSession = null;
    }
  }

  fail(f: CallFailure): void {
    this.detach();
    this.answer(f.code, f.message, { status: f.status, details: f.details, explanation: f.explanation, ...(f.retryAfterMs === undefined ? {} : { retryAfterMs: f.retryAfterMs }) });
  }

  // ---- the response ----

  private onResponse(h: IncomingHttpHeaders, flags: number): void {
    const call = this.call!;
    const status = Number(h[':status']);
    const endStream = (flags & END_STREAM) !== 0;
    const gs = one(h['grpc-status']);
    // Trailers-Only: the status is in the HEADERS frame that ends the stream.
    const grpcStatus = this.grpc && endStream && gs !== undefined && /^\d{1,2}$/.test(gs) ? Number(gs) : -1;
    const peerRefused = this.outbound && refusedByPeer(call.endpoint, one(h['x-skein-error-origin']), one(h['x-skein-error']));
    if (call.responseHead(status, peerRefused, grpcStatus) === 'discard') {
      this.discard = true;
      if (endStream) this.discarded();
      return;
    }
    this.status = status;
    this.headGrpc = grpcStatus;
    const out = this.responseHeadersOut(h);
    out[':status'] = status;
    if (this.explain) out['x-skein-explain'] = call.explanation();
    this.record.responseHeaders(() => plainHeaders(out));
    this.delivered = true;
    if (this.stream.closed || this.stream.destroyed) return;
    this.stream.respond(out, endStream ? { endStream: true } : { waitForTrailers: true });
    if (endStream) this.responseOver();
  }

  /**
   * An interim (1xx) response of the attempt goes to the client as it comes, before the final one
   * (RFC 9113 §8.1: one or more 1xx HEADERS frames, then the response): a 100 lets a client that
   * sent `expect: 100-continue` send its body, a 103 lets it fetch the hinted links early.
   */
  private onInterim(h: IncomingHttpHeaders): void {
    const status = Number(h[':status']);
    // 101 has no place in HTTP/2 (RFC 9113 §8.6); after the final response nothing is interim.
    if (!(status >= 100 && status < 200) || status === 101 || this.delivered || this.finished) return;
    const s = this.stream;
    if (s.closed || s.destroyed || s.headersSent) return;
    const out = this.responseHeadersOut(h);
    out[':status'] = status;
    s.additionalHeaders(out);
  }

  private responseHeadersOut(h: IncomingHttpHeaders): OutgoingHttpHeaders {
    const out: OutgoingHttpHeaders = {};
    for (const k of Object.keys(h)) {
      if (k.charCodeAt(0) === 0x3a || HOP.has(k) || k === 'te') continue;
      // Inbound, an app's x-skein-error-origin must not pass for the proxy's own.
      if (!this.outbound && k === 'x-skein-error-origin') continue;
      const v = h[k];
      if (v !== undefined) out[k] = v;
    }
    return out;
  }

  private responseTrailers(t: IncomingHttpHeaders): OutgoingHttpHeaders {
    const out: OutgoingHttpHeaders = {};
    for (const k of Object.keys(t)) {
      if (k.charCodeAt(0) === 0x3a || HOP.has(k)) continue;
      const v = t[k];
      if (v !== undefined) out[k] = v;
    }
    return out;
  }

  private onResponseBody(up: ClientHttp2Stream, d: Buffer): void {
    if (this.discard) return;
    this.record.responseBody(d);
    if (!this.stream.write(d)) {
      up.pause();
      this.stream.once('drain', () => up.resume());
    }
  }

  private onResponseEnd(): void {
    if (this.discard) {
      this.discarded();
      return;
    }
    if (!this.delivered || this.finished) return;
    this.up = null;
    this.upSession = null;
    if (!this.stream.closed && !this.stream.destroyed) this.stream.end();
    this.responseOver();
  }

  private discarded(): void {
    this.discard = false;
    const up = this.up;
    this.up = null;
    this.upSession = null;
    this.gen++;
    if (up !== null && !up.closed) up.close(NGHTTP2_CANCEL);
    this.call?.discarded();
  }

  /** The response is complete: the call learns its outcome (a gRPC one from the trailers). */
  private responseOver(): void {
    if (this.finished) return;
    this.finished = true;
    const call = this.call!;
    let gs = this.headGrpc;
    if (this.grpc && gs < 0) {
      const v = one(this.resTrailers?.['grpc-status'] as string | string[] | undefined);
      gs = v !== undefined && /^\d{1,2}$/.test(v) ? Number(v) : -1;
    }
    call.responseComplete(this.grpc ? gs : undefined);
    this.record.finish(this.status, null, call.endpoint, call.attempts, call.outcomeStatus);
    this.over();
  }

  /** The attempt's upstream stream closed: before its response ended, a reset. */
  private onUpstreamClosed(up: ClientHttp2Stream, reused: boolean): void {
    if (this.up !== up) return;
    this.up = null;
    this.upSession = null;
    if (this.finished) return;
    const call = this.call!;
    if (this.discard) {
      this.discarded();
      return;
    }
    const code = up.rstCode ?? NGHTTP2_NO_ERROR;
    if (code === NGHTTP2_REFUSED_STREAM && !this.delivered) {
      // The peer took none of the stream (RFC 9113 §8.7): safe to send elsewhere.
      this.gen++;
      call.connectFailed(`the upstream refused the stream (REFUSED_STREAM)`);
      return;
    }
    this.gen++;
    const answered = this.delivered;
    if (!call.reset('reset', `the upstream stream closed (code ${code})`, reused, answered)) return;
    // Part of the response went out: the client sees the cut.
    this.finished = true;
    this.record.finish(this.status, 'SKEIN_E_UPSTREAM_RESET', call.endpoint, call.attempts);
    if (!this.stream.closed) this.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    this.over();
  }

  /** The stream is over for the proxy: the call's lazily re-armed deadline timer is cancelled (it would hold the stream's state until it fires). */
  private over(): void {
    this.call?.dispose();
    this.ds.streamDone();
  }

  /** The client's stream closed: over (ended cleanly) or reset by the client. */
  private streamClosed(): void {
    // A copy still waiting for the body will not get it.
    this.shadow?.cancel();
    this.shadow = null;
    if (this.finished) return;
    this.finished = true;
    const call = this.call;
    this.detach();
    this.queue = null;
    if (call !== null) {
      call.clientGone();
      this.record.finish(0, null, call.endpoint, call.attempts);
    } else this.record.finish(0, null, null, 0);
    this.over();
  }

  // ---- the proxy's own answers ----

  private refused(r: Refusal): void {
    this.answer(r.code, r.message, { status: r.status, details: r.details, ...(r.retryAfterMs === undefined ? {} : { retryAfterMs: r.retryAfterMs }) });
  }

  /**
   * The proxy answers the stream itself (nothing of an app's response went out): x-skein-error and
   * the JSON body, or on a gRPC request a Trailers-Only gRPC error that carries x-skein-error too.
   */
  private answer(code: ErrorCode, message: string, a: { status?: number | undefined; details?: unknown; explanation?: string; retryAfterMs?: number } = {}): void {
    if (this.finished) return;
    this.finished = true;
    const ctx = this.ds.ctx;
    const status = a.status ?? ERROR_CODES[code].status;
    ctx.counters.proxyError(ctx.direction, code);
    const call = this.call;
    this.record.finish(status, code, call?.endpoint ?? null, call?.attempts ?? 0);
    const s = this.stream;
    if (s.closed || s.destroyed) {
      this.over();
      return;
    }
    const head = errorHead(code, ctx.direction, { status, requestId: this.requestId, retryAfterMs: a.retryAfterMs, explanation: this.explain ? (a.explanation ?? localExplanation(this.record.route, this.record.service, code)) : null });
    const h: OutgoingHttpHeaders = {};
    for (const [name, value] of head.headers) h[name] = value;
    if (this.grpc) {
      h[':status'] = 200;
      h['content-type'] = 'application/grpc';
      h['grpc-status'] = String(grpcStatusOf(code, status));
      h['grpc-message'] = grpcMessage(`${code}: ${message}`);
      s.respond(h, { endStream: true });
    } else {
      const body = errorBody(code, message, this.requestId, a.details);
      h[':status'] = status;
      h['content-type'] = 'application/json';
      h['content-length'] = body.length;
      s.respond(h);
      s.end(this.method === 'HEAD' ? undefined : body);
    }
    // The rest of the request body is not wanted.
    if (!this.reqDone) s.resume();
    this.over();
  }
}
