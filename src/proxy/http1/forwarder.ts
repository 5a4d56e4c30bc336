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
import type { ErrorCode } from '../../core/errors.js';
import type { Endpoint } from '../../discovery/endpoint.js';
import { classify, connectionNames, errorResponse, H, HeadCallbacks, MAX_HEADERS, rewriteHead } from './head.js';
import { ERR, HttpParser, METHOD_CONNECT, METHOD_HEAD, ParserType } from './llhttp.js';
import type { Destination, Direction, EndpointStats, ForwarderCounters, HashInput, Limits, RouteError } from './types.js';
import { Upstream, type Pools, type UpstreamHandler } from './upstream.js';

export interface ListenerContext {
  readonly workload: string;
  readonly direction: Direction;
  readonly limits: Limits;
  readonly pools: Pools;
  readonly counters: ForwarderCounters;
  /** Where a request for this authority (`host[:port]`, or null when there is none) goes. */
  resolve(authority: string | null): Destination | RouteError;
  /** True while the listener drains: responses close their connections. */
  readonly draining: boolean;
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

export class Downstream extends HeadCallbacks implements HashInput {
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
      if (data.length > 0) this.exchange?.requestBody(data);
      return;
    }
    if ((ret === ERR.PAUSED || ret === ERR.PAUSED_UPGRADE) && this.msgDone) {
      const off = this.parser.errorOffset;
      if (off > 0) this.exchange?.requestBody(data.subarray(0, off));
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
    let extra: string[] | null = null;
    for (let i = 0; i < n; i++) {
      const o = i * 4;
      drop[i] = 0;
      switch (classify(buf, f[o]!, f[o + 1]!)) {
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
          break;
        case H.ContentLength:
          if (f[o + 3]! - f[o + 2]! !== 1 || buf[f[o + 2]!] !== 0x30) hasBody = true;
          break;
        default:
          break;
      }
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
        else if (h === H.Host && host === i) host = -1;
      }
    }
    if (this.parser.httpMajor !== 1) {
      this.reject('SKEIN_E_BAD_REQUEST', `HTTP/${this.parser.httpMajor}.${this.parser.httpMinor} is not supported (HTTP/1.0 and 1.1 are)`);
      return;
    }
    const http11 = this.parser.httpMinor >= 1;
    const url = buf.toString('latin1', head.urlStart, head.urlEnd);
    const abs = absoluteTarget(url);
    let authority: string | null;
    let path: string;
    if (abs !== null) {
      [authority, path] = abs;
      if (host >= 0) drop[host] = 1;
    } else if (url.charCodeAt(0) === 0x2f || url === '*') {
      authority = host >= 0 ? head.valueOf(buf, host) : null;
      path = url;
    } else {
      this.reject('SKEIN_E_BAD_REQUEST', `request target "${url.slice(0, 100)}" is neither a path nor an http:// URL`);
      return;
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
    if (this.ctx.draining) {
      this.localError('SKEIN_E_PROXY_DRAINING', 'the proxy is shutting down', hasBody, requestId);
      return;
    }
    const dest = this.ctx.resolve(authority);
    if (isRouteError(dest)) {
      this.localError(dest.error, dest.message, hasBody, requestId, dest.status);
      return;
    }

    // The head for the upstream: request line in origin form, the client's header lines minus
    // the hop-by-hop ones, then what the proxy adds.
    const methodEnd = head.urlStart - 1;
    let tail = abs !== null ? `host: ${authority}\r\n` : '';
    tail += `x-forwarded-for: ${xff === undefined ? this.peer : `${xff}, ${this.peer}`}\r\n`;
    if (!xfp) tail += 'x-forwarded-proto: http\r\n';
    if (rid < 0) tail += `x-request-id: ${requestId}\r\n`;
    if (this.upgrade) tail += 'connection: upgrade\r\n';
    tail += '\r\n';
    const out = rewriteHead(buf, head, drop, head.lineStart(buf, 0), `${buf.toString('latin1', 0, methodEnd)} ${path} HTTP/1.1\r\n`, tail);

    const ex = new Exchange(this, dest, out, {
      isHead: method === METHOD_HEAD,
      hasBody,
      idempotent: IDEMPOTENT.has(method),
      upgrade: this.upgrade,
      keepAlive: this.keepAlive && !this.clientEnded,
      http10: !http11,
      requestId,
    });
    if (!ex.begin()) {
      this.localError('SKEIN_E_NO_HEALTHY_ENDPOINT', `service "${dest.service}" has no healthy endpoint`, hasBody, requestId);
      return;
    }
    this.exchange = ex;
    this.local = false;
  }

  // ---- answers ----

  /** A local error answer to a well-formed request; keeps the connection when it can. */
  localError(code: ErrorCode, message: string, hasBody: boolean, requestId: string | undefined, status?: number): void {
    this.ctx.counters.proxyError(this.ctx.direction, code);
    const close = hasBody || !this.keepAlive || this.clientEnded || this.ctx.draining;
    this.socket.write(errorResponse(code, message, { close, requestId, status, head: this.parser.method === METHOD_HEAD }), 'latin1');
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
    this.socket.write(errorResponse(code, message, { close: true, status }), 'latin1');
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
}

/** One request and its response. */
class Exchange implements UpstreamHandler {
  private up: Upstream | null = null;
  private queue: Buffer[] | null = [];
  private queued = 0;
  private reqDone = false;
  responseStarted = false;
  private finished = false;
  private tried: Endpoint[] | null = null;
  private staleRetried = false;
  private completion: Completion = NOOP_COMPLETION;
  private stats: EndpointStats | null = null;
  private readonly t0 = performance.now();
  private latencyMs = 0;
  private status = 0;
  private closeAfter = false;
  private responseDone = false;
  /** The response is a peer proxy's connect failure, to drop; the request goes elsewhere. */
  private retryElsewhere = false;
  /** The rewritten response head, until it is written (with the first body bytes). */
  private pendingHead: Buffer | null = null;
  /** Waiting for a 'drain' of the upstream (client reads paused) / of the client (upstream reads paused). */
  private upDrain = false;
  private dsDrain = false;

  constructor(
    private readonly ds: Downstream,
    private readonly dest: Destination,
    private readonly headBytes: Buffer,
    private readonly o: ExchangeOptions,
  ) {}

  /** Picks an endpoint and connects (or takes a pooled connection); false when there is none. */
  begin(): boolean {
    const e = this.dest.pick(this.ds, this.tried);
    if (e === null) return false;
    this.stats = this.dest.stats(e);
    this.connect(e, true);
    return true;
  }

  private connect(e: Endpoint, mayReuse: boolean): void {
    const ctx = this.ds.ctx;
    const pool = ctx.pools.get(e);
    const idle = mayReuse ? pool.take(coarseNow()) : null;
    if (idle !== null) {
      idle.handler = this;
      this.onUpstreamReady(idle);
      return;
    }
    new Upstream(e, pool, ctx.limits.connectTimeoutMs, this);
  }

  onUpstreamReady(up: Upstream): void {
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
    if (this.o.hasBody || this.o.upgrade) {
      // Head and the body bytes that follow in this tick leave in one write.
      corkForTick(s);
      s.write(this.headBytes);
      if (q !== null) for (const b of q) s.write(b);
    } else s.write(this.headBytes);
    if (this.queued > MAX_QUEUED_BODY) this.ds.socket.resume();
    this.queued = 0;
  }

  requestBody(data: Buffer): void {
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

  onResponseHead(up: Upstream, head: Buffer, status: number): void {
    const ds = this.ds;
    if (status >= 100 && status < 200 && status !== 101) {
      // Interim responses go to the client as they are (HTTP/1.0 clients do not get them).
      if (!this.o.http10) ds.socket.write(head);
      return;
    }
    this.status = status;
    this.latencyMs = performance.now() - this.t0;
    const h = up.head;
    const f = h.fields;
    const n = h.count;
    let chunked = false;
    let extra: string[] | null = null;
    let peerError: string | undefined;
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
        default:
          break;
      }
    }
    if (status === 502 && peerError === 'SKEIN_E_UPSTREAM_CONNECT' && ds.ctx.direction === 'outbound' && !this.o.hasBody && (this.tried?.length ?? 0) < ds.ctx.limits.connectRetries) {
      // The endpoint is another proxy's inbound listener whose app refused the connection (it
      // just crashed, say): nothing reached an app, so another endpoint may take the request.
      // This response is read to its end and dropped (see onResponseComplete).
      this.retryElsewhere = true;
      return;
    }
    if (extra !== null) {
      for (let i = 0; i < n; i++) if (extra.includes(h.nameOf(head, i).toLowerCase())) drop[i] = 1;
    }
    const decode = this.o.http10 && chunked && !this.o.isHead;
    if (decode) up.decodeBody = true;
    const close = !this.o.keepAlive || up.needsEof || decode || ds.ctx.draining || (this.o.upgrade && status !== 101);
    this.closeAfter = close;
    const tail = status === 101 ? 'connection: upgrade\r\n\r\n' : close ? 'connection: close\r\n\r\n' : this.o.http10 ? 'connection: keep-alive\r\n\r\n' : '\r\n';
    this.responseStarted = true;
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
    if (this.retryElsewhere) return;
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

  onResponseComplete(up: Upstream, rest: Buffer): void {
    if (this.retryElsewhere) {
      this.retryElsewhere = false;
      this.status = 0;
      this.up = null;
      if (rest.length === 0 && up.reusable) up.pool.release(up, coarseNow());
      else up.close();
      this.completion.end({ latencyMs: performance.now() - this.t0, ok: false });
      this.completion = NOOP_COMPLETION;
      (this.tried ??= []).push(up.endpoint);
      this.queue = [];
      if (!this.begin()) this.fail('SKEIN_E_UPSTREAM_CONNECT', `no endpoint of "${this.dest.service}" could take the request (tried ${this.tried.map((t) => t.key).join(', ')})`);
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
    this.up = null;
    if (this.finished) return;
    const e = up.endpoint;
    if (phase === 'connect') {
      this.ds.ctx.counters.upstreamConnect(false);
      (this.tried ??= []).push(e);
      if (this.tried.length <= this.ds.ctx.limits.connectRetries && this.begin()) return;
      const tried = this.tried.map((t) => `${t.key} at ${t.address}:${t.port}`).join(', ');
      this.fail('SKEIN_E_UPSTREAM_CONNECT', `could not connect to ${tried} (last: ${err.message})`);
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
    this.completion.end({ latencyMs: performance.now() - this.t0, ok: false });
    this.completion = NOOP_COMPLETION;
    if (this.status === 0 && up.reused && !this.o.hasBody && this.o.idempotent && !this.staleRetried) {
      // A pooled connection the server had closed as we sent: the request did not get a byte of
      // answer and has no body, so sending it again on a fresh connection is safe.
      this.staleRetried = true;
      this.queue = [];
      this.connect(e, false);
      return;
    }
    if (!this.responseStarted) {
      if (code === 'protocol') this.fail('SKEIN_E_UPSTREAM_PROTOCOL', `${e.key} at ${e.address}:${e.port}: ${err.message}`);
      else this.fail('SKEIN_E_UPSTREAM_RESET', `${e.key} at ${e.address}:${e.port} closed the connection before a complete response (${err.message})`);
      return;
    }
    // Part of the response went out: the client must see the cut.
    this.finished = true;
    this.stats?.record(this.status, (performance.now() - this.t0) / 1000);
    this.ds.destroy();
  }

  /** A local error: 5xx with x-skein-error, counted against the endpoint when there is one. */
  private fail(code: ErrorCode, message: string): void {
    this.finished = true;
    this.queue = null;
    this.completion.end({ latencyMs: performance.now() - this.t0, ok: false });
    this.completion = NOOP_COMPLETION;
    const ds = this.ds;
    ds.ctx.counters.proxyError(ds.ctx.direction, code);
    const status = code === 'SKEIN_E_NO_HEALTHY_ENDPOINT' ? 503 : 502;
    this.stats?.record(status, (performance.now() - this.t0) / 1000);
    const close = !this.reqDone || !this.o.keepAlive || ds.ctx.draining;
    ds.socket.write(errorResponse(code, message, { close, requestId: this.o.requestId, head: this.o.isHead }), 'latin1');
    ds.exchangeDone(close);
  }

  private finish(): void {
    if (this.finished) return;
    if (!this.reqDone && !this.closeAfter) return;
    this.finished = true;
    this.completion.end({ latencyMs: this.latencyMs, ok: this.status < 500 });
    this.completion = NOOP_COMPLETION;
    this.stats?.record(this.status, (performance.now() - this.t0) / 1000);
    this.ds.exchangeDone(this.closeAfter);
  }

  /** The client went away (or sent garbage) mid-exchange. */
  abort(): void {
    if (this.finished) return;
    this.finished = true;
    this.queue = null;
    this.completion.end({ latencyMs: performance.now() - this.t0, ok: true });
    this.completion = NOOP_COMPLETION;
    this.stats?.record(this.status, (performance.now() - this.t0) / 1000);
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
    const up = this.up;
    if (!this.ds.socket.write(data) && up !== null) this.waitDsDrain(up);
  }

  /** The tunnel is over (either side closed). */
  tunnelClosed(): void {
    if (this.finished) return;
    this.finished = true;
    this.stats?.record(101, (performance.now() - this.t0) / 1000);
    this.up?.close();
    this.up = null;
  }
}
