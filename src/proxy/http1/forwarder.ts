/**
 * The HTTP/1.1 forwarder: one `Downstream` per client connection, one `Exchange` per request.
 *
 * The hot path keeps bytes as bytes. llhttp (strict) finds where a head ends and where a body
 * ends; the head is rewritten by copying its header lines through and leaving out the hop-by-hop
 * ones; body bytes (chunked framing included: llhttp has validated it) are forwarded as they
 * came, without decoding, in both directions. A request that llhttp refuses is answered with 400
 * and the connection is closed before a single byte of it reaches an upstream.
 *
 *   client --> Downstream: parse head -> resolve (Destination) -> Exchange
 *   Exchange: pick an endpoint -> pooled or new Upstream -> head + body bytes ->
 *             response head (rewritten) + body bytes back -> connection back to the pool
 *
 * One request at a time per client connection: pipelined requests wait (the socket is paused)
 * until the response before them is complete, as HTTP/1.1 requires responses in order.
 */
import { randomUUID } from 'node:crypto';
import { coarseNow } from './coarse-clock.js';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { NOOP_COMPLETION, type Completion } from '../../balance/balancer.js';
import { ERROR_CODES, SkeinError, type ErrorCode } from '../../core/errors.js';
import { INBOUND_PROXY_LABEL } from '../../api/names.js';
import type { RoutePolicy } from '../../api/traffic.js';
import { retryDelay, type RetryReason } from '../../resilience/retry.js';
import type { RouteInput } from '../../resilience/routes.js';
import type { TrafficState } from '../../resilience/traffic-state.js';
import { pathOnly, type AccessLog } from '../access-log.js';
import type { Endpoint } from '../../discovery/endpoint.js';
import { classify, connectionNames, errorResponse, forbiddenConnectionOption, H, HeadCallbacks, MAX_HEADERS, rewriteHead, upgradeAllowed, type HeadCollector } from './head.js';
import { normalizeTarget } from '../../core/path.js';
import { isSecretHeader, REDACTED } from '../../api/tap.js';
import type { Direction } from '../../api/stats.js';
import type { HashInput } from '../../balance/hash-key.js';
import { TAP_BODIES, TAP_BODY_BYTES, TAP_HEADERS, type AttemptTrace, type HopTrace, type TapSink, type Tracer, type TraceHeaders } from '../../engine/observe.js';
import { ERR, HttpParser, METHOD_CONNECT, METHOD_HEAD, ParserType } from './llhttp.js';
import type { Destination, ForwarderCounters, Limits, ListenerMetrics, RouteError } from './types.js';
import { Upstream, type Pool, type Pools, type UpstreamHandler } from './upstream.js';

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
  /** Per-request metrics of this listener; null: metrics off. */
  readonly metrics: ListenerMetrics | null;
  /** Live request taps (`skein tap`); null: none possible. */
  readonly tap: TapSink | null;
  /** A span per hop and attempt; null: tracing off (trace headers pass through untouched). */
  readonly tracer: Tracer | null;
}

/** A second value of a single-valued trace header is joined with ",", which no parser accepts: a request with two traceparents starts a new trace. */
const join2 = (a: string | undefined, b: string) => (a === undefined ? b : `${a},${b}`);

/** Keeps a trace context header of the request for the hop's span. */
function traceHeader(t: TraceHeaders, h: H, value: string): void {
  if (h === H.Traceparent) t.traceparent = join2(t.traceparent, value);
  else if (h === H.Tracestate) t.tracestate = join2(t.tracestate, value);
  else if (h === H.B3) t.b3 = join2(t.b3, value);
  else if (h === H.XB3TraceId) t.xB3TraceId = value;
  else if (h === H.XB3SpanId) t.xB3SpanId = value;
  else if (h === H.XB3ParentSpanId) t.xB3ParentSpanId = value;
  else if (h === H.XB3Sampled) t.xB3Sampled = value;
  else if (h === H.XB3Flags) t.xB3Flags = value;
}

/** The headers of a head, for a tap: names in lower case, secrets redacted. */
function tapHeaders(buf: Buffer, head: HeadCollector, n: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < n; i++) {
    const name = head.nameOf(buf, i).toLowerCase();
    const value = isSecretHeader(name) ? REDACTED : head.valueOf(buf, i);
    out[name] = out[name] === undefined ? value : `${out[name]}, ${value}`;
  }
  return out;
}

/** Appends body bytes to a tap's capture, up to TAP_BODY_BYTES; returns the new length. */
function capture(into: Buffer[], have: number, data: Buffer): number {
  if (have >= TAP_BODY_BYTES) return have;
  const take = data.subarray(0, TAP_BODY_BYTES - have);
  into.push(Buffer.from(take));
  return have + take.length;
}

const enum S {
  Idle,
  Head,
  Body,
  Tunnel,
  Closed,
}

const EMPTY = Buffer.alloc(0);
const MAX_QUEUED_BODY = 1024 * 1024;
const lowerBytes = new Map<string, Uint8Array>();
/** Scratch of onResponseHead (synchronous, so one for all). */
const responseDrop = new Uint8Array(MAX_HEADERS);

/** The longest delay a Node timer takes (2^31 - 1 ms). */
const MAX_TIMER_MS = 2_147_483_647;

/** llhttp's numbers of DELETE, GET, HEAD, PUT, OPTIONS, TRACE. */
const IDEMPOTENT = new Set([0, 1, 2, 4, 6, 7]);

/** RFC 3986 host (reg-name or IP literal) with an optional port; no userinfo. */
const AUTHORITY = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?$/;

/** Authorities seen valid (a few names over and over: the regular expression runs once each). */
const validAuthorities = new Set<string>();

function validAuthority(a: string): boolean {
  if (validAuthorities.has(a)) return true;
  if (!AUTHORITY.test(a)) return false;
  if (validAuthorities.size >= 1024) validAuthorities.clear();
  validAuthorities.add(a);
  return true;
}

function isRouteError(r: Destination | RouteError): r is RouteError {
  return (r as RouteError).error !== undefined;
}

/** `http://authority/path`: [authority, path], or null when the target is not absolute http. */
function absoluteTarget(url: string): [string, string] | null {
  if (url.length < 8 || url.charCodeAt(0) === 0x2f) return null;
  if (url.slice(0, 7).toLowerCase() !== 'http://') return null;
  let end = 7;
  while (end < url.length) {
    const c = url.charCodeAt(end);
    if (c === 0x2f || c === 0x3f || c === 0x23) break;
    end++;
  }
  const authority = url.slice(7, end);
  let path = url.slice(end);
  if (path === '' || path.charCodeAt(0) !== 0x2f) path = `/${path}`;
  return [authority, path];
}

/** An x-skein-timeout-ms value in ms (capped at what a timer holds, about 24.8 days), or the text when it is not a number. */
function deadlineMs(text: string): number | string {
  return /^\d{1,20}$/.test(text) ? Math.min(Number(text), MAX_TIMER_MS) : text;
}

/** Where the request line starts: llhttp lets empty lines come before it (RFC 9112 §2.2). */
function requestLineStart(buf: Buffer): number {
  let i = 0;
  while (buf[i] === 0x0d || buf[i] === 0x0a) i++;
  return i;
}

/**
 * llhttp accepts runs of spaces between the parts of the request line; the parts must be split by
 * exactly one SP (RFC 9112 §3), or "POST  /x" would be read as the method "POST " and pass every
 * rule about POST.
 */
function strictRequestLine(buf: Buffer, methodStart: number, urlStart: number, urlEnd: number): boolean {
  return urlStart - methodStart >= 2 && buf[urlStart - 1] === 0x20 && buf[urlStart - 2] !== 0x20 && buf[urlEnd] === 0x20 && buf[urlEnd + 1] === 0x48;
}

function uncork(s: Socket): void {
  s.uncork();
}

/** Corks a socket until the end of this tick, so that the writes made meanwhile go out as one. */
function corkForTick(s: Socket): void {
  s.cork();
  process.nextTick(uncork, s);
}

function plainAddress(a: string | undefined): string {
  if (a === undefined) return 'unknown';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}

export class Downstream extends HeadCallbacks implements HashInput, RouteInput {
  readonly parser = new HttpParser(ParserType.Request, this);
  readonly peer: string;
  private state = S.Idle;
  /** coarseNow() when the current head started, or when the connection went idle. */
  since: number;
  private headDone = false;
  private msgDone = false;
  private upgrade = false;
  private keepAlive = true;
  private headBuf: Buffer = EMPTY;
  private pending: Buffer | null = null;
  private exchange: Exchange | null = null;
  /** The client half-closed: finish the current response, then close. */
  private clientEnded = false;
  /** The request is answered locally; its body (if any) is discarded. */
  private local = false;
  private readonly drop = new Uint8Array(MAX_HEADERS);
  /** The current request's method and target path (for route matching). */
  method = '';
  path = '';
  /** For the access log: what is known of the current request. */
  private reqService: string | null = null;
  private reqRoute: string | null = null;
  private reqCaller: string | null = null;
  private reqId: string | null = null;
  /** performance.now() when the current head was complete. */
  private headAt = 0;
  /** The current request asked for x-skein-explain (a local answer summarises route and service). */
  private explain = false;
  /** Request body bytes received of the current request. */
  private reqBytes = 0;
  /** What taps want of the current request (TAP_* bits), and what they get of it. */
  tapWants = 0;
  private tapReqHeaders: Record<string, string> | null = null;
  private tapReqBody: Buffer[] | null = null;
  private tapReqBodyLen = 0;
  /** The current request's trace span (tracing on). */
  hop: HopTrace | null = null;

  constructor(
    readonly socket: Socket,
    readonly ctx: ListenerContext,
    private readonly onClose: (d: Downstream) => void,
  ) {
    super();
    this.peer = plainAddress(socket.remoteAddress);
    this.since = coarseNow();
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.onEnd());
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.onSocketClose());
  }

  get sourceAddress(): string {
    return this.peer;
  }

  header(lowerName: string): string | undefined {
    let bytes = lowerBytes.get(lowerName);
    if (bytes === undefined) {
      bytes = Buffer.from(lowerName, 'latin1');
      lowerBytes.set(lowerName, bytes);
    }
    return this.head.find(this.headBuf, bytes);
  }

  /** A request head has started and is not complete yet (the header timeout runs). */
  get readingHead(): boolean {
    return this.state === S.Head;
  }

  /** Whether the connection is between requests (safe to close while draining). */
  get idle(): boolean {
    return this.state === S.Idle && this.pending === null;
  }

  // ---- parser callbacks (the span ones are HeadCallbacks') ----

  onHeadersComplete(_status: number, upgrade: boolean, keepAlive: boolean): number {
    this.headDone = true;
    this.upgrade = upgrade;
    this.keepAlive = keepAlive;
    return ERR.PAUSED;
  }
  onBody(): number {
    return 0;
  }
  onMessageComplete(): number {
    this.msgDone = true;
    return ERR.PAUSED;
  }

  // ---- input ----

  private onData(chunk: Buffer): void {
    switch (this.state) {
      case S.Closed:
        return;
      case S.Tunnel:
        this.exchange?.tunnelUp(chunk);
        return;
      default:
        break;
    }
    if (this.msgDone || this.pending !== null) {
      // Pipelined: the next request waits for the current response.
      this.pending = this.pending === null ? chunk : Buffer.concat([this.pending, chunk]);
      this.socket.pause();
      return;
    }
    this.feed(chunk);
  }

  private feed(data: Buffer): void {
    if (!this.headDone) {
      if (this.state === S.Idle) {
        this.state = S.Head;
        this.method = '';
        this.path = '';
        this.reqService = this.reqRoute = this.reqCaller = this.reqId = null;
        this.reqBytes = 0;
        this.tapWants = 0;
        this.hop = null;
        this.since = coarseNow();
      }
      const ret = this.parser.execute(data);
      if (ret === ERR.OK) {
        this.head.consumed(data);
        if (this.head.overflow || this.head.base > this.ctx.limits.maxHeadBytes) this.tooLarge();
        return;
      }
      if (ret !== ERR.PAUSED || !this.headDone) {
        if (this.head.overflow || this.head.base + this.parser.errorOffset > this.ctx.limits.maxHeadBytes) this.tooLarge();
        else this.reject('SKEIN_E_BAD_REQUEST', `malformed request: ${this.parser.reason()}`);
        return;
      }
      const end = this.parser.errorOffset;
      if (this.head.overflow || this.head.base + end > this.ctx.limits.maxHeadBytes) {
        this.tooLarge();
        return;
      }
      this.headBuf = this.head.complete(data, end);
      data = data.subarray(end);
      this.parser.resume();
      this.state = S.Body;
      this.onHead();
      if ((this.state as S) === S.Closed) return;
    }
    const ret = this.parser.execute(data);
    if (ret === ERR.OK) {
      if (data.length > 0) this.body(data);
      return;
    }
    if ((ret === ERR.PAUSED || ret === ERR.PAUSED_UPGRADE) && this.msgDone) {
      const off = this.parser.errorOffset;
      if (off > 0) this.body(data.subarray(0, off));
      if (off < data.length) {
        this.pending = data.subarray(off);
        this.socket.pause();
      }
      if (this.exchange !== null) this.exchange.requestDone();
      else if (this.local) this.next();
      return;
    }
    // Malformed body framing (a bad chunk size, ...): part of the request may be upstream already.
    const reason = this.parser.reason();
    const ex = this.exchange;
    if (ex !== null) ex.abort();
    if (ex === null || !ex.responseStarted) this.reject('SKEIN_E_BAD_REQUEST', `malformed request body: ${reason}`);
    else this.destroy();
  }

  /** Request body bytes: counted, shown to a tap that asked for bodies, and forwarded. */
  private body(data: Buffer): void {
    this.reqBytes += data.length;
    if ((this.tapWants & TAP_BODIES) !== 0) this.tapReqBodyLen = capture((this.tapReqBody ??= []), this.tapReqBodyLen, data);
    this.exchange?.requestBody(data);
  }

  private onEnd(): void {
    this.clientEnded = true;
    if (this.state === S.Tunnel) {
      this.exchange?.tunnelUpEnd();
      return;
    }
    if (this.exchange === null && !this.msgDone) this.close();
  }

  private onSocketClose(): void {
    const ex = this.exchange;
    this.exchange = null;
    this.state = S.Closed;
    if (ex !== null) ex.abort();
    this.parser.destroy();
    this.onClose(this);
  }

  // ---- a request head ----

  private onHead(): void {
    const head = this.head;
    const buf = this.headBuf;
    const f = head.fields;
    const n = head.count;
    const method = this.parser.method;
    if (method === METHOD_CONNECT) {
      this.reject('SKEIN_E_BAD_REQUEST', 'CONNECT is not supported: send plain http:// requests (the mesh encrypts between proxies)');
      return;
    }
    const drop = this.drop;
    let host = -1;
    let hosts = 0;
    let xfp = false;
    let rid = -1;
    let xff: string | undefined;
    let hasBody = false;
    let transferEncoding = false;
    let extra: string[] | null = null;
    let upgradeAt = -1;
    /** The smallest x-skein-timeout-ms (several: the caller's tightest deadline wins), or its bad text. */
    let deadlineLeft = -1;
    let badDeadline: string | null = null;
    let callerAt = -1;
    let explain = false;
    const outbound = this.ctx.direction === 'outbound';
    const tracing = this.ctx.tracer !== null;
    let trace: TraceHeaders | null = null;
    for (let i = 0; i < n; i++) {
      const o = i * 4;
      drop[i] = 0;
      const h = classify(buf, f[o]!, f[o + 1]!);
      switch (h) {
        case H.Host:
          hosts++;
          host = i;
          break;
        case H.Connection:
          drop[i] = 1;
          extra = connectionNames(buf, head, i, extra);
          break;
        case H.KeepAlive:
        case H.ProxyConnection:
        case H.ProxyAuthorization:
        case H.TE:
          drop[i] = 1;
          break;
        case H.Upgrade:
          if (!this.upgrade) drop[i] = 1;
          else upgradeAt = i;
          break;
        case H.XForwardedFor:
          drop[i] = 1;
          xff = xff === undefined ? head.valueOf(buf, i) : `${xff}, ${head.valueOf(buf, i)}`;
          break;
        case H.XForwardedProto:
          xfp = true;
          break;
        case H.XRequestId:
          rid = i;
          break;
        case H.TransferEncoding:
          hasBody = true;
          transferEncoding = true;
          break;
        case H.ContentLength:
          if (f[o + 3]! - f[o + 2]! !== 1 || buf[f[o + 2]!] !== 0x30) hasBody = true;
          break;
        case H.XSkeinTimeout:
          // The caller's remaining deadline: the proxy sends its own (what is left) on.
          drop[i] = 1;
          if (badDeadline === null) {
            const left = deadlineMs(head.valueOf(buf, i));
            if (typeof left === 'string') badDeadline = left;
            else if (deadlineLeft < 0 || left < deadlineLeft) deadlineLeft = left;
          }
          break;
        case H.XSkeinExplain:
          if (outbound) {
            drop[i] = 1;
            explain = head.valueOf(buf, i) === '1';
          }
          break;
        case H.XSkeinCaller:
          // Outbound, the proxy names the caller itself; inbound, it is the caller's proxy's word.
          if (outbound) drop[i] = 1;
          else callerAt = i;
          break;
        case H.Traceparent:
        case H.Tracestate:
        case H.B3:
        case H.XB3TraceId:
        case H.XB3SpanId:
        case H.XB3ParentSpanId:
        case H.XB3Sampled:
        case H.XB3Flags:
          // Tracing on: each attempt sends its own context (see Exchange.requestHead).
          if (tracing) {
            drop[i] = 1;
            traceHeader((trace ??= {}), h, head.valueOf(buf, i));
          }
          break;
        default:
          break;
      }
    }
    this.explain = explain;
    const framing = forbiddenConnectionOption(extra);
    if (framing !== null) {
      this.reject('SKEIN_E_BAD_REQUEST', `the Connection header names ${framing}, which is never hop-by-hop (RFC 9110 §7.6.1): removing it would unframe or misroute the request`);
      return;
    }
    if (extra !== null) {
      // Headers the client named in Connection are hop-by-hop, even the ones the proxy manages.
      for (let i = 0; i < n; i++) {
        if (!extra.includes(head.nameOf(buf, i).toLowerCase())) continue;
        drop[i] = 1;
        const h = classify(buf, f[i * 4]!, f[i * 4 + 1]!);
        if (h === H.XForwardedFor) xff = undefined;
        else if (h === H.XForwardedProto) xfp = false;
        else if (h === H.XRequestId) rid = -1;
      }
    }
    if (this.parser.httpMajor !== 1) {
      this.reject('SKEIN_E_BAD_REQUEST', `HTTP/${this.parser.httpMajor}.${this.parser.httpMinor} is not supported (HTTP/1.0 and 1.1 are)`);
      return;
    }
    const http11 = this.parser.httpMinor >= 1;
    if (!http11 && transferEncoding) {
      // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
      this.reject('SKEIN_E_BAD_REQUEST', 'an HTTP/1.0 request may not have Transfer-Encoding (RFC 9112 §6.1)');
      return;
    }
    const methodStart = requestLineStart(buf);
    if (!strictRequestLine(buf, methodStart, head.urlStart, head.urlEnd)) {
      this.reject('SKEIN_E_BAD_REQUEST', 'the request line must be METHOD SP target SP HTTP/1.x, with single spaces (RFC 9112 §3)');
      return;
    }
    const url = buf.toString('latin1', head.urlStart, head.urlEnd);
    const abs = absoluteTarget(url);
    let authority: string | null;
    let target: string;
    if (abs !== null) {
      [authority, target] = abs;
      if (host >= 0) drop[host] = 1;
    } else if (url.charCodeAt(0) === 0x2f || url === '*') {
      authority = host >= 0 ? head.valueOf(buf, host) : null;
      target = url;
    } else {
      this.reject('SKEIN_E_BAD_REQUEST', `request target "${url.slice(0, 100)}" is neither a path nor an http:// URL`);
      return;
    }
    let path = target;
    if (target !== '*') {
      // Routes (and the app) see the normalized path: what a policy matched is what the app gets.
      const n = normalizeTarget(target);
      if (typeof n !== 'string') {
        this.reject('SKEIN_E_BAD_REQUEST', `request target "${target.slice(0, 100)}": ${n.error}`);
        return;
      }
      path = n;
    }
    if (hosts > 1 || (http11 && hosts === 0)) {
      this.reject('SKEIN_E_BAD_REQUEST', hosts > 1 ? 'more than one Host header' : 'an HTTP/1.1 request must have a Host header');
      return;
    }
    if (authority !== null && !validAuthority(authority)) {
      this.reject('SKEIN_E_BAD_REQUEST', `"${authority.slice(0, 100)}" is not a valid host[:port]`);
      return;
    }
    const requestId = rid >= 0 ? head.valueOf(buf, rid) : randomUUID();
    this.method = buf.toString('latin1', methodStart, head.urlStart - 1);
    this.path = path;
    this.reqId = requestId;
    this.headAt = performance.now();
    // Known before anything can refuse the request: a refusal is counted against its caller too.
    this.reqCaller = outbound ? this.ctx.callerService : callerAt >= 0 ? head.valueOf(buf, callerAt) : null;
    if (this.ctx.draining) {
      this.localError('SKEIN_E_PROXY_DRAINING', 'the proxy is shutting down', hasBody, requestId);
      return;
    }
    const dest = this.ctx.resolve(authority);
    if (isRouteError(dest)) {
      this.localError(dest.error, dest.message, hasBody, requestId, dest.status);
      return;
    }
    const traffic = dest.traffic;
    const route = traffic.routes.match(this);
    this.reqService = dest.service;
    this.reqRoute = route.name;
    let timeoutMs = outbound ? route.requestTimeoutMs : 0;
    if (badDeadline !== null) {
      this.localError('SKEIN_E_BAD_REQUEST', `x-skein-timeout-ms must be a whole number of milliseconds, not "${badDeadline.slice(0, 40)}"`, hasBody, requestId);
      return;
    }
    if (deadlineLeft === 0) {
      this.localError('SKEIN_E_DEADLINE_EXCEEDED', `the request's deadline was spent before it reached the ${this.ctx.direction} proxy of "${dest.service}"`, hasBody, requestId);
      return;
    }
    if (deadlineLeft > 0) timeoutMs = timeoutMs === 0 ? deadlineLeft : Math.min(timeoutMs, deadlineLeft);
    // An upgrade the mesh does not carry (h2c: a tunnel past every rule) is declined: the request
    // is served as plain HTTP/1.1 without it (RFC 9110 §7.8), and the connection closes after.
    let declined = false;
    if (upgradeAt >= 0 && !upgradeAllowed(head.valueOf(buf, upgradeAt))) {
      drop[upgradeAt] = 1;
      this.upgrade = false;
      declined = true;
    }
    const caller = outbound ? this.ctx.workload : callerAt >= 0 ? (this.reqCaller as string) : this.peer;
    const tap = this.ctx.tap;
    if (tap !== null) {
      const wants = tap.wants(this.reqCaller, dest.service);
      this.tapWants = wants;
      this.tapReqHeaders = (wants & TAP_HEADERS) !== 0 ? tapHeaders(buf, head, n) : null;
      this.tapReqBody = null;
      this.tapReqBodyLen = 0;
    }
    const tracer = this.ctx.tracer;
    if (tracer !== null) {
      this.hop = tracer.hop(this.ctx.direction, trace ?? {}, { workload: this.ctx.workload, service: dest.service, route: route.name, method: this.method, path: pathOnly(path), ...(this.reqCaller === null ? {} : { caller: this.reqCaller }) });
    }
    const wait = traffic.rateLimit(route, this.ctx.direction, caller);
    if (wait > 0) {
      this.ctx.counters.rateLimited(this.ctx.direction, dest.service, route.name);
      const rl = route.rateLimit[this.ctx.direction];
      const per = rl?.perCaller === true ? ` per caller (${caller})` : '';
      this.localError('SKEIN_E_RATE_LIMITED', `route "${route.name}" of "${dest.service}" allows ${rl?.requestsPerSecond ?? 0} requests/s${per} (${this.ctx.direction})`, hasBody, requestId, undefined, {
        details: { service: dest.service, route: route.name, direction: this.ctx.direction, requestsPerSecond: rl?.requestsPerSecond, burst: rl?.burst, retryAfterMs: wait },
        headers: `retry-after: ${Math.ceil(wait / 1000)}\r\n`,
      });
      return;
    }
    let delayMs = 0;
    const fault = outbound ? route.fault : null;
    if (fault !== null) {
      if (fault.abort !== null && Math.random() * 100 < fault.abort.percent) {
        this.localError('SKEIN_E_FAULT_INJECTED', `route "${route.name}" of "${dest.service}" injects an abort (status ${fault.abort.status}) into ${fault.abort.percent}% of requests`, hasBody, requestId, fault.abort.status, {
          details: { service: dest.service, route: route.name },
        });
        return;
      }
      if (fault.delay !== null && Math.random() * 100 < fault.delay.percent) delayMs = fault.delay.ms;
    }
    if (outbound && traffic.active >= traffic.policy.limits.maxRequests) {
      traffic.overflows++;
      this.localError('SKEIN_E_UPSTREAM_OVERFLOW', `"${dest.service}" has ${traffic.active} requests in flight (limits.maxRequests ${traffic.policy.limits.maxRequests})`, hasBody, requestId, undefined, {
        details: { service: dest.service, route: route.name, inFlight: traffic.active, limit: traffic.policy.limits.maxRequests },
      });
      return;
    }

    // The head for the upstream: request line in origin form, the client's header lines minus
    // the hop-by-hop ones, then what the proxy adds. Its final CRLF is the exchange's (after
    // the deadline it sends on).
    let tail = abs !== null ? `host: ${authority}\r\n` : '';
    tail += `x-forwarded-for: ${xff === undefined ? this.peer : `${xff}, ${this.peer}`}\r\n`;
    if (!xfp) tail += 'x-forwarded-proto: http\r\n';
    if (rid < 0) tail += `x-request-id: ${requestId}\r\n`;
    if (outbound) tail += `x-skein-caller: ${this.ctx.callerService}\r\n`;
    if (this.upgrade) tail += 'connection: upgrade\r\n';
    // Left open for what each attempt adds (its deadline, its trace context).
    const openHead = timeoutMs > 0 || this.hop !== null;
    if (!openHead) tail += '\r\n';
    const out = rewriteHead(buf, head, drop, head.lineStart(buf, 0), `${this.method} ${path} HTTP/1.1\r\n`, tail);

    const ex = new Exchange(this, dest, out, {
      isHead: method === METHOD_HEAD,
      hasBody,
      idempotent: IDEMPOTENT.has(method),
      upgrade: this.upgrade,
      keepAlive: this.keepAlive && !this.clientEnded && !declined,
      http10: !http11,
      requestId,
      route,
      timeoutMs,
      delayMs,
      explain,
      openHead,
    });
    this.exchange = ex;
    this.local = false;
    const refused = ex.begin();
    if (refused !== null) {
      this.exchange = null;
      this.localError(refused.code, refused.message, hasBody, requestId, undefined, { details: { service: dest.service, route: route.name, ...(outbound ? traffic.summary() : {}) } });
    }
  }

  // ---- answers ----

  /**
   * The current request is over (answered by an app or the proxy, or cut short): its metrics, its
   * trace span, taps and the access log. `ex`: the exchange, for what a tap wants of the response.
   */
  done(status: number, error: string | null, upstream: Endpoint | null, attempts: number, ex: Exchange | null): void {
    const now = performance.now();
    const ms = this.headAt === 0 ? 0 : now - this.headAt;
    const responseBytes = ex === null ? 0 : ex.responseBytes;
    this.ctx.metrics?.record(this.reqCaller, this.reqService, this.reqRoute, upstream === null ? null : upstream.id, status, status === 0 || status >= 500 || error !== null, ms / 1000, this.reqBytes, responseBytes);
    const hop = this.hop;
    if (hop !== null) {
      this.hop = null;
      hop.end(status, error);
    }
    if (this.tapWants !== 0) this.publishTap(status, error, upstream, ms, ex);
    const log = this.ctx.accessLog;
    if (log === null) return;
    log.write({
      workload: this.ctx.workload,
      direction: this.ctx.direction,
      client: this.peer,
      caller: this.reqCaller,
      method: this.method,
      path: pathOnly(this.path),
      service: this.reqService,
      route: this.reqRoute,
      status,
      durationMs: Math.round(ms * 100) / 100,
      upstream: upstream === null ? null : `${upstream.id} ${upstream.address}:${upstream.port}`,
      attempts,
      error,
      requestId: this.reqId,
    });
  }

  private publishTap(status: number, error: string | null, upstream: Endpoint | null, ms: number, ex: Exchange | null): void {
    const wants = this.tapWants;
    this.tapWants = 0;
    const body = (b: Buffer[] | null) => (b === null ? '' : Buffer.concat(b).toString('utf8'));
    this.ctx.tap?.publish({
      time: Date.now(),
      direction: this.ctx.direction,
      workload: this.ctx.workload,
      source: this.reqCaller,
      destination: this.reqService,
      route: this.reqRoute,
      method: this.method,
      path: pathOnly(this.path),
      status,
      latencyMs: Math.round(ms * 1000) / 1000,
      instance: upstream === null ? null : upstream.id,
      requestId: this.reqId,
      error,
      ...((wants & TAP_HEADERS) !== 0 ? { requestHeaders: this.tapReqHeaders ?? {}, responseHeaders: ex?.tapHeaders ?? {} } : {}),
      ...((wants & TAP_BODIES) !== 0 ? { requestBody: body(this.tapReqBody), responseBody: body(ex?.tapBody ?? null) } : {}),
    });
    this.tapReqHeaders = null;
    this.tapReqBody = null;
  }

  localError(code: ErrorCode, message: string, hasBody: boolean, requestId: string | undefined, status?: number, extra?: { details?: unknown; headers?: string }): void {
    this.ctx.counters.proxyError(this.ctx.direction, code);
    this.done(status ?? ERROR_CODES[code].status, code, null, 0, null);
    const close = hasBody || !this.keepAlive || this.clientEnded || this.ctx.draining;
    let headers = extra?.headers ?? '';
    if (this.explain) headers += `x-skein-explain: route=${this.reqRoute ?? '-'}; service=${this.reqService ?? '-'}; attempts=0; answered by the proxy: ${code}\r\n`;
    this.socket.write(errorResponse(code, message, { close, requestId, status, head: this.parser.method === METHOD_HEAD, details: extra?.details, headers, origin: this.ctx.direction }), 'latin1');
    if (close) {
      this.close();
      return;
    }
    this.local = true;
    this.exchange = null;
  }

  /** Refuses the connection's input: an error answer, then close. Nothing is forwarded. */
  reject(code: ErrorCode, message: string, status?: number): void {
    if (this.state === S.Closed) return;
    this.ctx.counters.proxyError(this.ctx.direction, code);
    this.done(status ?? ERROR_CODES[code].status, code, null, 0, null);
    this.socket.write(errorResponse(code, message, { close: true, status, origin: this.ctx.direction }), 'latin1');
    this.close();
  }

  private tooLarge(): void {
    this.reject('SKEIN_E_HEADERS_TOO_LARGE', `the request head is larger than ${this.ctx.limits.maxHeadBytes} bytes or has more than ${MAX_HEADERS} header lines`);
  }

  /** Header timeout (slowloris): called by the listener's sweep. */
  headTimeout(): void {
    this.reject('SKEIN_E_REQUEST_TIMEOUT', `no complete request head within ${this.ctx.limits.headersTimeoutMs} ms`);
  }

  close(): void {
    if (this.state === S.Closed) return;
    this.state = S.Closed;
    this.socket.end();
    // A client that never reads must not hold the socket: destroy after a grace period.
    const t = setTimeout(() => this.socket.destroy(), 5000);
    t.unref();
  }

  destroy(): void {
    this.state = S.Closed;
    this.socket.destroy();
  }

  /** The exchange is over: next request, or close. */
  exchangeDone(close: boolean): void {
    this.exchange = null;
    if (close || this.clientEnded || this.ctx.draining) {
      this.close();
      return;
    }
    this.next();
  }

  private next(): void {
    this.state = S.Idle;
    this.headDone = false;
    this.msgDone = false;
    this.local = false;
    this.headBuf = EMPTY;
    this.since = coarseNow();
    this.parser.resume();
    const p = this.pending;
    if (p !== null) {
      this.pending = null;
      this.socket.resume();
      this.feed(p);
    } else if (this.socket.isPaused()) this.socket.resume();
  }

  /** A 101 response: from now on bytes flow both ways as they are. */
  startTunnel(ex: Exchange): void {
    this.state = S.Tunnel;
    const p = this.pending;
    this.pending = null;
    if (p !== null) ex.tunnelUp(p);
    this.socket.resume();
    if (this.clientEnded) ex.tunnelUpEnd();
  }
}

interface ExchangeOptions {
  readonly isHead: boolean;
  readonly hasBody: boolean;
  /** GET, HEAD, PUT, DELETE, OPTIONS, TRACE (RFC 9110 9.2.2): may be sent again. */
  readonly idempotent: boolean;
  readonly upgrade: boolean;
  readonly keepAlive: boolean;
  readonly http10: boolean;
  readonly requestId: string;
  readonly route: RoutePolicy;
  /** Time until the response head, all attempts included; 0: none. */
  readonly timeoutMs: number;
  /** A fault-injection delay before the first attempt. */
  readonly delayMs: number;
  /** The client asked for x-skein-explain. */
  readonly explain: boolean;
  /** The head has no final CRLF: each attempt adds its deadline and trace context, then ends it. */
  readonly openHead: boolean;
}

/** Why no attempt could be made: answered as a proxy error. */
interface Refusal {
  readonly code: ErrorCode;
  readonly message: string;
}

const enum T {
  None,
  /** The attempt's deadline: per try or overall, whichever comes first. */
  Attempt,
  /** Backoff before a retry. */
  Backoff,
  /** A fault-injection delay. */
  Delay,
}

/** The pools a service's connections were opened in, by its connection counter (to evict idle ones at the limit). */
const servicePools = new WeakMap<object, Set<Pool>>();

function fireTimer(ex: Exchange): void {
  ex.onTimer();
}

/**
 * Peer-proxy errors that say the request never reached an app: safe to send elsewhere. Only a
 * Skein inbound listener's own answers count: the endpoint must be registered as one
 * (INBOUND_PROXY_LABEL), and the answer must say it is its own (`x-skein-error-origin: inbound`,
 * which an inbound listener removes from its app's responses). An app registered without an
 * inbound proxy, or one that relays such an error, did see the request.
 */
function refusedByPeer(e: Endpoint | null, code: string | undefined, origin: string | undefined): boolean {
  return origin === 'inbound' && (code === 'SKEIN_E_UPSTREAM_CONNECT' || code === 'SKEIN_E_PROXY_DRAINING') && e !== null && e.labels[INBOUND_PROXY_LABEL] === 'true';
}

/**
 * One request and its response, over one or more attempts. Outbound, a failed attempt (connect
 * failure, reset, per-try timeout, a retryable status, a peer proxy that refused it) is retried
 * when the route's retry policy, the method, the kept body, the deadline and the service's retry
 * budget all allow it, on another endpoint when there is one, after a backoff with full jitter.
 * Every attempt's outcome goes to the service's breakers and outlier detector.
 */
class Exchange implements UpstreamHandler {
  private up: Upstream | null = null;
  /** A connection being established for this exchange (counted as pending). */
  private connecting: Upstream | null = null;
  private queue: Buffer[] | null = [];
  private queued = 0;
  private reqDone = false;
  responseStarted = false;
  private finished = false;
  /** Endpoints of failed attempts, and what happened at each. */
  private tried: Endpoint[] | null = null;
  private outcomes: string[] | null = null;
  private endpoint: Endpoint | null = null;
  private staleRetried = false;
  private completion: Completion = NOOP_COMPLETION;
  /** Response body bytes sent to the client. */
  responseBytes = 0;
  /** What a tap gets of the response (when it asked). */
  tapHeaders: Record<string, string> | null = null;
  tapBody: Buffer[] | null = null;
  private tapBodyLen = 0;
  /** The current attempt's trace span (tracing on). */
  private attemptTrace: AttemptTrace | null = null;
  private readonly t0 = performance.now();
  private attemptT0 = 0;
  private latencyMs = 0;
  /** performance.now() of a response head whose body has not started yet; 0: none expected, or started. */
  private bodyAwaitedSince = 0;
  private status = 0;
  private closeAfter = false;
  private responseDone = false;
  /** The current response is read to its end and dropped: a retry follows (after `retryDelay`). */
  private discard = false;
  private retryDelay = 0;
  /** The rewritten response head, until it is written (with the first body bytes). */
  private pendingHead: Buffer | null = null;
  /** Waiting for a 'drain' of the upstream (client reads paused) / of the client (upstream reads paused). */
  private upDrain = false;
  private dsDrain = false;
  private readonly outbound: boolean;
  private readonly traffic: TrafficState;
  /** performance.now() by which the response head must have come; 0: no deadline. */
  private deadline = 0;
  private timer: NodeJS.Timeout | null = null;
  private timerKind = T.None;
  /** The current attempt's timer is its per-try timeout (not the overall deadline). */
  private perTry = false;
  private retries = 0;
  /** The request body as sent so far, kept for a retry while it is small enough; null: not kept. */
  private kept: Buffer[] | null;
  private keptBytes = 0;
  /** In traffic.active (outbound). */
  private counted = false;
  /** The current attempt went out and its outcome is not recorded yet (a breaker may wait for it). */
  private owed = false;
  /** The request was counted in the retry budget (once, when its first attempt left). */
  private deposited = false;
  private budgetRefused = false;

  constructor(
    private readonly ds: Downstream,
    private readonly dest: Destination,
    /** The request head; without its final CRLF when there is a deadline (its header goes after it). */
    private readonly headBytes: Buffer,
    private readonly o: ExchangeOptions,
  ) {
    this.outbound = ds.ctx.direction === 'outbound';
    this.traffic = dest.traffic;
    this.kept = o.hasBody && this.outbound && o.route.retries.maxRetries > 0 ? [] : null;
  }

  /**
   * Starts the exchange: the first attempt (or the fault delay before it). A refusal comes back
   * (no endpoint, a limit): the caller answers it; nothing has been sent.
   */
  begin(): Refusal | null {
    const t = this.traffic;
    if (this.outbound) {
      t.active++;
      this.counted = true;
    }
    if (this.o.timeoutMs > 0) this.deadline = this.t0 + this.o.timeoutMs;
    if (this.o.delayMs > 0) {
      this.setTimer(T.Delay, this.o.delayMs);
      return null;
    }
    const r = this.attempt();
    if (r !== null) this.release();
    return r;
  }

  /** One attempt: pick an endpoint (another one than those tried, when there is one) and send. */
  private attempt(): Refusal | null {
    const e = this.dest.pick(this.ds, this.tried);
    if (e === null) return this.noEndpoint();
    this.endpoint = e;
    const hop = this.ds.hop;
    if (hop !== null) this.attemptTrace = hop.attempt((this.tried?.length ?? 0) + 1, e);
    this.status = 0;
    this.attemptT0 = performance.now();
    this.armAttemptTimer();
    const refused = this.connect(e, true);
    // Only an attempt that goes out may be a breaker's probe (a refused one would hold it half-open).
    if (refused === null && this.outbound) {
      this.traffic.started(e.key);
      this.owed = true;
      if (!this.deposited) {
        // Only requests that are sent earn retries: refusals (breakers, limits) do not.
        this.deposited = true;
        this.traffic.budget.deposit();
      }
    }
    return refused;
  }

  private noEndpoint(): Refusal {
    const service = this.dest.service;
    const w = this.dest.whyNone();
    if (w.endpoints === 0) return { code: 'SKEIN_E_NO_HEALTHY_ENDPOINT', message: `service "${service}" has no healthy endpoint` };
    const out: string[] = [];
    if (w.breakersOpen > 0) out.push(`${w.breakersOpen} behind an open circuit breaker`);
    if (w.ejected > 0) out.push(`${w.ejected} ejected by outlier detection`);
    if (w.failingActiveChecks > 0) out.push(`${w.failingActiveChecks} failing this proxy's active health check`);
    if (out.length === 0) return { code: 'SKEIN_E_NO_HEALTHY_ENDPOINT', message: `no endpoint of "${service}" is left to try` };
    const message = `none of the ${w.endpoints} instances of "${service}" may take requests now: ${out.join(', ')}`;
    return { code: w.breakersOpen > 0 ? 'SKEIN_E_BREAKER_OPEN' : 'SKEIN_E_NO_HEALTHY_ENDPOINT', message };
  }

  private connect(e: Endpoint, mayReuse: boolean): Refusal | null {
    const ctx = this.ds.ctx;
    const pool = ctx.pools.get(e);
    const idle = mayReuse ? pool.take(coarseNow()) : null;
    if (idle !== null) {
      idle.handler = this;
      this.onUpstreamReady(idle);
      return null;
    }
    const t = this.traffic;
    let timeoutMs = ctx.limits.connectTimeoutMs;
    if (this.outbound) {
      const l = t.policy.limits;
      let used = servicePools.get(t.connections);
      if (used === undefined) servicePools.set(t.connections, (used = new Set()));
      used.add(pool);
      // At the connection limit, an idle connection to another endpoint of the service makes room.
      if (t.connections.open >= l.maxConnections) {
        for (const p of used) {
          if (!ctx.pools.isLive(p)) used.delete(p);
          else if (p !== pool && p.evictOne()) break;
        }
      }
      if (t.connections.open >= l.maxConnections || t.pending >= l.maxPendingRequests) {
        t.overflows++;
        const what = t.connections.open >= l.maxConnections ? `${t.connections.open} connections (limits.maxConnections ${l.maxConnections})` : `${t.pending} requests waiting for a connection (limits.maxPendingRequests ${l.maxPendingRequests})`;
        return { code: 'SKEIN_E_UPSTREAM_OVERFLOW', message: `"${this.dest.service}" has ${what}` };
      }
      t.pending++;
      timeoutMs = t.policy.connectTimeoutMs;
      pool.idleMs = t.policy.idleTimeoutMs;
    }
    this.connecting = new Upstream(e, pool, timeoutMs, this, this.outbound ? t.connections : null);
    return null;
  }

  private doneConnecting(): void {
    if (this.connecting === null) return;
    this.connecting = null;
    if (this.outbound) this.traffic.pending--;
  }

  onUpstreamReady(up: Upstream): void {
    if (this.connecting === up) this.doneConnecting();
    if (this.finished) {
      up.pool.release(up, coarseNow());
      return;
    }
    if (!up.reused) this.ds.ctx.counters.upstreamConnect(true);
    this.up = up;
    up.expect(this.o.isHead);
    this.completion = this.dest.start(up.endpoint);
    const s = up.socket;
    const q = this.queue;
    this.queue = null;
    const head = this.requestHead();
    if (this.o.hasBody || this.o.upgrade) {
      // Head and the body bytes that follow in this tick leave in one write.
      corkForTick(s);
      s.write(head);
      if (q !== null) for (const b of q) s.write(b);
    } else s.write(head);
    if (this.queued > MAX_QUEUED_BODY) this.ds.socket.resume();
    this.queued = 0;
  }

  /** The request head for this attempt: with the time left (a deadline) and its trace context (tracing on). */
  private requestHead(): Buffer {
    const base = this.headBytes;
    // Without either the head was made complete (see onHead).
    if (!this.o.openHead) return base;
    let end = this.deadline === 0 ? '' : `x-skein-timeout-ms: ${Math.max(1, Math.floor(this.deadline - performance.now()))}\r\n`;
    const trace = this.attemptTrace;
    if (trace !== null) {
      const pairs = trace.headers;
      for (let i = 0; i < pairs.length; i++) end += `${pairs[i]![0]}: ${pairs[i]![1]}\r\n`;
    }
    end += '\r\n';
    const out = Buffer.allocUnsafe(base.length + end.length);
    base.copy(out, 0);
    out.write(end, base.length, 'latin1');
    return out;
  }

  requestBody(data: Buffer): void {
    const k = this.kept;
    if (k !== null) {
      this.keptBytes += data.length;
      if (this.keptBytes > this.o.route.retries.maxBodyBytes) this.kept = null;
      else k.push(data);
    }
    const up = this.up;
    if (up === null) {
      if (this.queue === null) return;
      this.queue.push(data);
      this.queued += data.length;
      if (this.queued > MAX_QUEUED_BODY) this.ds.socket.pause();
      return;
    }
    if (!up.socket.write(data)) this.waitUpDrain(up);
  }

  /** The upstream's buffer is full: stop reading the client until it drains. */
  private waitUpDrain(up: Upstream): void {
    this.ds.socket.pause();
    if (this.upDrain) return;
    this.upDrain = true;
    up.socket.once('drain', () => {
      this.upDrain = false;
      if (!this.finished || this.status === 101) this.ds.socket.resume();
    });
  }

  /** The client's buffer is full: stop reading the upstream until it drains. */
  private waitDsDrain(up: Upstream): void {
    up.socket.pause();
    if (this.dsDrain) return;
    this.dsDrain = true;
    this.ds.socket.once('drain', () => {
      this.dsDrain = false;
      up.socket.resume();
    });
  }

  requestDone(): void {
    this.reqDone = true;
    if (this.responseDone) this.finish();
  }

  // ---- timers ----

  private setTimer(kind: T, ms: number): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timerKind = kind;
    this.timer = setTimeout(fireTimer, Math.min(Math.max(0, ms), MAX_TIMER_MS), this);
  }

  private clearTimer(): void {
    if (this.timer === null) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.timerKind = T.None;
  }

  /** The attempt's timer: its per-try timeout or the overall deadline, whichever is first. */
  private armAttemptTimer(): void {
    const now = performance.now();
    let at = this.deadline;
    const pt = this.outbound ? this.o.route.perTryTimeoutMs : 0;
    this.perTry = pt > 0 && (at === 0 || now + pt < at);
    if (this.perTry) at = now + pt;
    if (at === 0) this.clearTimer();
    else this.setTimer(T.Attempt, at - now);
  }

  onTimer(): void {
    const kind = this.timerKind;
    this.timer = null;
    this.timerKind = T.None;
    if (this.finished) return;
    if (kind === T.Delay || kind === T.Backoff) {
      if (this.deadline > 0 && performance.now() >= this.deadline) {
        this.fail('SKEIN_E_UPSTREAM_TIMEOUT', `no response from "${this.dest.service}" within ${this.o.timeoutMs} ms`);
        return;
      }
      const r = this.attempt();
      if (r !== null) this.fail(r.code, r.message);
      return;
    }
    if (kind !== T.Attempt || this.responseStarted) return;
    if (this.discard) {
      // The dropped response's body did not end in time: give up on it, and retry if time is left.
      this.discard = false;
      const up = this.up;
      this.up = null;
      up?.close();
      this.endAttempt(this.status, `HTTP ${this.status} (its body did not end in time)`);
      this.scheduleRetry(this.retryDelay);
      return;
    }
    // No response head in time: give up this attempt.
    const perTry = this.perTry;
    const up = this.up ?? this.connecting;
    this.doneConnecting();
    this.up = null;
    up?.close();
    const ms = perTry ? this.o.route.perTryTimeoutMs : this.o.timeoutMs;
    this.endAttempt(0, `no response within ${ms} ms`);
    if (perTry && this.retry('per-try-timeout', 0)) return;
    const e = this.endpoint;
    const at = e === null ? '' : ` (last: ${e.id} at ${e.address}:${e.port})`;
    this.fail('SKEIN_E_UPSTREAM_TIMEOUT', perTry ? `no response from "${this.dest.service}" within the per-try timeout of ${ms} ms${at}` : `no response from "${this.dest.service}" within ${ms} ms${at}`);
  }

  // ---- attempts and retries ----

  /** Records the current attempt's outcome for the breakers and outlier detection (once). */
  private settle(status: number): void {
    const e = this.endpoint;
    if (!this.owed || e === null) return;
    this.owed = false;
    this.traffic.record(e.key, status);
  }

  /** An attempt failed (`status` 0: no response) or its response is dropped for a retry. */
  private endAttempt(status: number, outcome: string): void {
    this.completion.end({ latencyMs: performance.now() - this.attemptT0, ok: false });
    this.completion = NOOP_COMPLETION;
    this.endTrace(status, outcome);
    const e = this.endpoint;
    if (e === null) return;
    this.settle(status);
    (this.tried ??= []).push(e);
    (this.outcomes ??= []).push(outcome);
  }

  /** Ends the current attempt's trace span (once). */
  private endTrace(status: number, error: string | null): void {
    const t = this.attemptTrace;
    if (t === null) return;
    this.attemptTrace = null;
    t.end(status, error);
  }

  /** The exchange is over: the attempt's span ends, then the request's (Downstream.done). */
  private done(status: number, error: string | null): void {
    this.endTrace(status, error);
    this.ds.done(status, error, this.endpoint, this.attempts(), this);
  }

  /** The delay before a retry, or -1 when this failure may not be retried. */
  private retryDelayFor(cond: RetryReason, status: number): number {
    if (!this.outbound || this.finished || this.responseStarted || this.o.upgrade) return -1;
    const d = retryDelay(
      this.o.route.retries,
      cond,
      status,
      {
        retries: this.retries,
        idempotent: this.o.idempotent,
        hasBody: this.o.hasBody,
        bodyKept: this.kept !== null,
        timeLeftMs: this.deadline === 0 ? Number.POSITIVE_INFINITY : this.deadline - performance.now(),
      },
      this.traffic.budget,
    );
    if (typeof d === 'string') {
      if (d === 'budget') {
        this.budgetRefused = true;
        this.ds.ctx.counters.retryBudgetExhausted(this.dest.service);
      }
      return -1;
    }
    this.retries++;
    this.ds.ctx.counters.retry(this.dest.service, cond);
    return d;
  }

  /** Retries when allowed: true when a retry is under way. */
  private retry(cond: RetryReason, status: number): boolean {
    const delay = this.retryDelayFor(cond, status);
    if (delay < 0) return false;
    this.scheduleRetry(delay);
    return true;
  }

  private scheduleRetry(delay: number): void {
    this.up = null;
    this.status = 0;
    if (this.upDrain) {
      // The old upstream's back-pressure paused the client: the new attempt reads it again.
      this.upDrain = false;
      this.ds.socket.resume();
    }
    if (this.o.hasBody && this.kept === null) {
      // Not reachable (a retry is decided only with the whole body kept); never send a partial body.
      this.fail('SKEIN_E_UPSTREAM_RESET', `the request to "${this.dest.service}" could not be sent again: its body was not kept`);
      return;
    }
    if (this.deadline > 0 && performance.now() + delay >= this.deadline) {
      this.fail('SKEIN_E_UPSTREAM_TIMEOUT', `no response from "${this.dest.service}" within ${this.o.timeoutMs} ms`);
      return;
    }
    this.queue = this.kept === null ? [] : this.kept.slice();
    this.queued = 0;
    if (delay > 0) {
      this.setTimer(T.Backoff, delay);
      return;
    }
    this.clearTimer();
    const r = this.attempt();
    if (r !== null) this.fail(r.code, r.message);
  }

  // ---- the response ----

  onResponseHead(up: Upstream, head: Buffer, status: number): void {
    const ds = this.ds;
    if (status >= 100 && status < 200 && status !== 101) {
      // Interim responses go to the client as they are (HTTP/1.0 clients do not get them).
      if (!this.o.http10) ds.socket.write(head);
      return;
    }
    const h = up.head;
    const f = h.fields;
    const n = h.count;
    let chunked = false;
    let extra: string[] | null = null;
    let peerError: string | undefined;
    let peerOrigin: string | undefined;
    const drop = responseDrop;
    for (let i = 0; i < n; i++) {
      const o = i * 4;
      drop[i] = 0;
      switch (classify(head, f[o]!, f[o + 1]!)) {
        case H.Connection:
          drop[i] = 1;
          extra = connectionNames(head, h, i, extra);
          break;
        case H.KeepAlive:
        case H.ProxyConnection:
          drop[i] = 1;
          break;
        case H.Upgrade:
          if (status !== 101) drop[i] = 1;
          break;
        case H.TransferEncoding:
          chunked = true;
          if (this.o.http10) drop[i] = 1;
          break;
        case H.XSkeinError:
          peerError = h.valueOf(head, i);
          break;
        case H.XSkeinErrorOrigin:
          // Inbound, it can only be the app's, which must not pass for the proxy's own.
          if (this.outbound) peerOrigin = h.valueOf(head, i);
          else drop[i] = 1;
          break;
        default:
          break;
      }
    }
    const framing = forbiddenConnectionOption(extra);
    if (framing !== null || (chunked && up.parser.httpMinor === 0)) {
      // The same rules as for requests (see Downstream.onHead): such a response is not forwarded.
      const why = framing !== null ? `its Connection header names ${framing}, which is never hop-by-hop (RFC 9110 §7.6.1)` : 'an HTTP/1.0 response may not have Transfer-Encoding (RFC 9112 §6.1)';
      up.close();
      this.onUpstreamError(up, 'exchange', new Error(`refused response: ${why}`), 'protocol');
      return;
    }
    this.status = status;
    this.latencyMs = performance.now() - this.t0;
    if (status >= 500 && this.outbound) {
      // A peer proxy that refused the request (its app is down, it drains): nothing reached an
      // app, so another endpoint may take it whatever the method. Otherwise a retryable status.
      // Only once the whole request is in: its kept body cannot change while the response is dropped.
      const delay = this.reqDone || !this.o.hasBody ? this.retryDelayFor(refusedByPeer(this.endpoint, peerError, peerOrigin) ? 'refused-stream' : 'status', status) : -1;
      if (delay >= 0) {
        // This response is read to its end and dropped (see onResponseComplete); the attempt's
        // timer keeps running meanwhile.
        this.discard = true;
        this.retryDelay = delay;
        return;
      }
    }
    this.clearTimer();
    this.settle(status);
    if ((ds.tapWants & TAP_HEADERS) !== 0) this.tapHeaders = tapHeaders(head, h, n);
    if (extra !== null) {
      for (let i = 0; i < n; i++) if (extra.includes(h.nameOf(head, i).toLowerCase())) drop[i] = 1;
    }
    const decode = this.o.http10 && chunked && !this.o.isHead;
    if (decode) up.decodeBody = true;
    const close = !this.o.keepAlive || up.needsEof || decode || ds.ctx.draining || (this.o.upgrade && status !== 101);
    this.closeAfter = close;
    let tail = status === 101 ? 'connection: upgrade\r\n\r\n' : close ? 'connection: close\r\n\r\n' : this.o.http10 ? 'connection: keep-alive\r\n\r\n' : '\r\n';
    if (this.o.explain) tail = `x-skein-explain: ${this.explanation()}\r\n${tail}`;
    this.responseStarted = true;
    if (!this.o.isHead && status !== 101 && status !== 204 && status !== 304) this.bodyAwaitedSince = this.t0 + this.latencyMs;
    // Held until the first body bytes (usually in the same chunk): both leave in one write.
    this.pendingHead = rewriteHead(head, h, drop, 0, '', tail);
  }

  /** Writes the response head if it is still held. */
  flushHead(): void {
    const head = this.pendingHead;
    if (head === null) return;
    this.pendingHead = null;
    this.ds.socket.write(head);
  }

  onResponseBody(up: Upstream, data: Buffer): void {
    if (this.discard) return;
    if (this.bodyAwaitedSince !== 0) this.bodyStarted(up);
    this.responseBytes += data.length;
    if ((this.ds.tapWants & TAP_BODIES) !== 0) this.tapBodyLen = capture((this.tapBody ??= []), this.tapBodyLen, data);
    const head = this.pendingHead;
    let out = data;
    if (head !== null) {
      this.pendingHead = null;
      out = Buffer.allocUnsafe(head.length + data.length);
      head.copy(out, 0);
      data.copy(out, head.length);
    }
    if (!this.ds.socket.write(out)) this.waitDsDrain(up);
  }

  onChunkDone(): void {
    this.flushHead();
  }

  /** The first body bytes of the response: how long after its head, when they came in a later read (see stall.ts). */
  private bodyStarted(up: Upstream): void {
    const gap = performance.now() - this.bodyAwaitedSince;
    this.bodyAwaitedSince = 0;
    if (this.pendingHead === null) this.ds.ctx.counters.bodyGap(this.ds.ctx.direction, this.dest.service, up.endpoint, gap);
  }

  onResponseComplete(up: Upstream, rest: Buffer): void {
    if (this.discard) {
      this.discard = false;
      const status = this.status;
      this.up = null;
      if (this.reqDone && rest.length === 0 && up.reusable) up.pool.release(up, coarseNow());
      else up.close();
      this.endAttempt(status, `HTTP ${status}`);
      this.scheduleRetry(this.retryDelay);
      return;
    }
    this.flushHead();
    if (this.status === 101) {
      this.ds.startTunnel(this);
      if (rest.length > 0) this.tunnelDown(rest);
      return;
    }
    this.responseDone = true;
    this.up = null;
    if (this.reqDone && rest.length === 0 && up.reusable) up.pool.release(up, coarseNow());
    else {
      up.close();
      if (!this.reqDone) this.closeAfter = true;
    }
    this.finish();
  }

  onUpstreamError(up: Upstream, phase: 'connect' | 'exchange', err: Error, code: 'reset' | 'protocol' | 'timeout' | 'connect'): void {
    if (this.connecting === up) this.doneConnecting();
    this.up = null;
    if (this.finished) return;
    const e = up.endpoint;
    if (this.discard) {
      // The dropped response was cut short: the retry goes ahead all the same.
      this.discard = false;
      this.endAttempt(this.status, `HTTP ${this.status}`);
      this.scheduleRetry(this.retryDelay);
      return;
    }
    if (phase === 'connect') {
      this.ds.ctx.counters.upstreamConnect(false);
      this.endAttempt(0, `connect failed: ${err.message}`);
      if (this.retry('connect-failure', 0)) return;
      this.fail('SKEIN_E_UPSTREAM_CONNECT', `could not connect to ${this.triedText()}`);
      return;
    }
    if (this.status === 101) {
      // The tunnel's upstream side is gone: let the client side finish what it has.
      this.tunnelClosed();
      this.ds.socket.end();
      return;
    }
    if (this.pendingHead !== null) {
      // The head never left: the client can still get a proper error.
      this.pendingHead = null;
      this.responseStarted = false;
    }
    if (code === 'reset' && this.status === 0 && up.reused && !this.o.hasBody && this.o.idempotent && !this.staleRetried) {
      // A pooled connection the server had closed as we sent: the request did not get a byte of
      // answer and has no body, so sending it again on a fresh connection is safe (and is not a
      // failure of the endpoint).
      this.completion.end({ latencyMs: performance.now() - this.attemptT0, ok: false });
      this.completion = NOOP_COMPLETION;
      this.staleRetried = true;
      this.queue = [];
      const r = this.connect(e, false);
      if (r !== null) this.fail(r.code, r.message);
      return;
    }
    if (!this.responseStarted) {
      this.clearTimer();
      this.endAttempt(0, code === 'protocol' ? `malformed response: ${err.message}` : `connection closed before a complete response (${err.message})`);
      if (code !== 'protocol' && this.retry('reset', 0)) return;
      if (code === 'protocol') this.fail('SKEIN_E_UPSTREAM_PROTOCOL', `${e.key} at ${e.address}:${e.port}: ${err.message}`);
      else this.fail('SKEIN_E_UPSTREAM_RESET', `${e.key} at ${e.address}:${e.port} closed the connection before a complete response (${err.message})`);
      return;
    }
    // Part of the response went out: the client must see the cut.
    this.finished = true;
    this.completion.end({ latencyMs: performance.now() - this.t0, ok: false });
    this.completion = NOOP_COMPLETION;
    this.release();
    this.done(this.status, 'SKEIN_E_UPSTREAM_RESET');
    this.ds.destroy();
  }

  private triedText(): string {
    const t = this.tried ?? [];
    return t.map((e, i) => `${e.id} at ${e.address}:${e.port} (${this.outcomes?.[i] ?? ''})`).join(', ');
  }

  /** Attempts made: the failed ones, and the current one if it got an answer. */
  private attempts(): number {
    return (this.tried?.length ?? 0) + (this.status > 0 && !this.discard ? 1 : 0);
  }

  /** What the proxy decided, for x-skein-explain: route, endpoint, attempts, budget. */
  private explanation(): string {
    const e = this.endpoint;
    let s = `route=${this.o.route.name}; service=${this.dest.service}; endpoint=${e === null ? '-' : `${e.id} (${e.address}:${e.port})`}; attempts=${this.attempts()}`;
    if (this.tried !== null) s += `; failed=${this.tried.map((t, i) => `${t.id}: ${this.outcomes?.[i] ?? ''}`).join(', ')}`;
    if (this.outbound) {
      s += `; budget=${this.traffic.budget.available}`;
      if (this.budgetRefused) s += ' (a retry was refused by the budget)';
    }
    if (this.deadline > 0) s += `; timeout=${this.o.timeoutMs}ms`;
    return s.replace(/[^\x20-\x7e]/g, '?');
  }

  /** The state behind a proxy error, for its JSON body. */
  private details(): object {
    const sum = this.outbound ? this.traffic.summary() : null;
    return {
      service: this.dest.service,
      route: this.o.route.name,
      tried: (this.tried ?? []).map((e, i) => ({ endpoint: e.id, address: `${e.address}:${e.port}`, outcome: this.outcomes?.[i] ?? '' })),
      retries: this.retries,
      ...(sum === null
        ? {}
        : { budget: { available: sum.budget, refusedARetry: this.budgetRefused }, breakers: sum.breakers, ejected: sum.ejected, failingActiveChecks: sum.activeCheckFailing }),
      ...(this.deadline > 0 ? { timeoutMs: this.o.timeoutMs } : {}),
    };
  }

  /**
   * The exchange ends with its attempt's outcome still owed. A known status is the outcome; with
   * none, an attempt cut short says nothing about the endpoint, except that a breaker probe got no
   * answer, and its breaker must not wait for one forever.
   */
  private settleAbandoned(): void {
    const e = this.endpoint;
    if (!this.owed || e === null) return;
    if (this.status > 0) this.settle(this.status);
    else if (this.traffic.breakers?.state(e.key) === 'half-open') this.settle(0);
    this.owed = false;
  }

  /** Leaves the service's in-flight count and stops the timer (once). */
  private release(): void {
    this.clearTimer();
    if (this.connecting !== null) {
      const c = this.connecting;
      this.doneConnecting();
      c.close();
    }
    if (this.counted) {
      this.counted = false;
      this.traffic.active--;
    }
  }

  /** A local error: 5xx with x-skein-error, counted against the endpoint when there is one. */
  private fail(code: ErrorCode, message: string): void {
    this.finished = true;
    this.queue = null;
    this.settleAbandoned();
    this.release();
    this.completion.end({ latencyMs: performance.now() - this.t0, ok: false });
    this.completion = NOOP_COMPLETION;
    const ds = this.ds;
    ds.ctx.counters.proxyError(ds.ctx.direction, code);
    const status = new SkeinError(code, message).status;
    this.done(status, code);
    const close = !this.reqDone || !this.o.keepAlive || ds.ctx.draining;
    const headers = this.o.explain ? `x-skein-explain: ${this.explanation()}\r\n` : '';
    ds.socket.write(errorResponse(code, message, { close, requestId: this.o.requestId, head: this.o.isHead, details: this.details(), headers, origin: ds.ctx.direction }), 'latin1');
    ds.exchangeDone(close);
  }

  private finish(): void {
    if (this.finished) return;
    if (!this.reqDone && !this.closeAfter) return;
    this.finished = true;
    this.release();
    this.completion.end({ latencyMs: this.latencyMs, ok: this.status < 500 });
    this.completion = NOOP_COMPLETION;
    this.done(this.status, null);
    this.ds.exchangeDone(this.closeAfter);
  }

  /** The client went away (or sent garbage) mid-exchange. */
  abort(): void {
    if (this.finished) return;
    this.finished = true;
    this.queue = null;
    this.settleAbandoned();
    this.release();
    this.completion.end({ latencyMs: performance.now() - this.t0, ok: true });
    this.completion = NOOP_COMPLETION;
    this.done(0, null);
    const up = this.up;
    this.up = null;
    if (up !== null) up.close();
  }

  // ---- tunnel (after 101) ----

  tunnelUp(data: Buffer): void {
    const up = this.up;
    if (up === null) return;
    if (!up.socket.write(data)) this.waitUpDrain(up);
  }

  tunnelUpEnd(): void {
    this.up?.socket.end();
  }

  onTunnelData(up: Upstream, data: Buffer): void {
    if (data.length === 0) {
      this.ds.socket.end();
      return;
    }
    this.tunnelDown(data);
  }

  private tunnelDown(data: Buffer): void {
    this.responseBytes += data.length;
    const up = this.up;
    if (!this.ds.socket.write(data) && up !== null) this.waitDsDrain(up);
  }

  /** The tunnel is over (either side closed). */
  tunnelClosed(): void {
    if (this.finished) return;
    this.finished = true;
    this.release();
    this.completion.end({ latencyMs: this.latencyMs, ok: true });
    this.completion = NOOP_COMPLETION;
    this.done(101, null);
    this.up?.close();
    this.up = null;
  }
}
