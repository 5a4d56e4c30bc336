/**
 * The downstream connection: one per client connection of a listener. It reads requests with
 * llhttp (strict), one at a time: pipelined requests wait (the socket is paused) until the
 * response before them is complete, as HTTP/1.1 requires responses in order. Per request:
 *
 *   head (request-head.ts: checked, or 400 and close) -> where it goes (the listener's resolve)
 *   -> its route -> admission (src/engine/admission.ts: rate limit, fault, maxRequests)
 *   -> an Exchange (exchange.ts: the I/O) driven by a Call (src/engine/call.ts: the decisions)
 *
 * Answers the proxy makes itself (local-reply.ts) go out here, and the request's record
 * (record.ts) is kept here. The hot path keeps bytes as bytes: the head is rewritten by copying
 * its header lines through, and body bytes (chunked framing included: llhttp has validated it)
 * are forwarded as they came.
 */
import { plainAddress } from '../../core/address.js';
import type { Socket } from 'node:net';
import { ERROR_CODES, type ErrorCode } from '../../core/errors.js';
import { admit, badDeadline, callerOf, deadlineOf, isRefusal } from '../../engine/admission.js';
import { authorize, type ServiceAuthz } from '../../engine/authorization.js';
import { Call, localExplanation } from '../../engine/call.js';
import type { Destination, Refusal } from '../../engine/service-client.js';
import type { RouteInput } from '../../resilience/routes.js';
import type { HashInput } from '../../balance/hash-key.js';
import type { Endpoint } from '../../discovery/endpoint.js';
import { pathOnly } from '../access-log.js';
import { coarseNow } from './coarse-clock.js';
import { Exchange } from './exchange.js';
import type { Shadow } from '../../engine/mirror.js';
import { ShadowExchange, shadowHead } from './shadow.js';
import { HeadCallbacks, HeadWriter, MAX_HEADERS, upgradeAllowed } from './head.js';
import { ERR, HttpParser, METHOD_CONNECT, METHOD_HEAD, ParserType } from './llhttp.js';
import { errorResponse } from './local-reply.js';
import { RequestRecord } from './record.js';
import { readRequestHead, RequestHeadState, requestIds, upstreamHead, type Forwarding, type RequestHead } from './request-head.js';
import type { Tunnel } from './tunnel.js';
import type { ListenerContext, RouteError } from './types.js';
import type { PeerIdentity } from '../tls/inbound.js';

const enum S {
  Idle,
  Head,
  Body,
  Tunnel,
  Closed,
}

const EMPTY = Buffer.alloc(0);
const lowerBytes = new Map<string, Uint8Array>();

/** llhttp's numbers of DELETE, GET, HEAD, PUT, OPTIONS, TRACE: IDEMPOTENT_METHODS (src/resilience/retry.ts) as the parser reports them. */
const IDEMPOTENT = new Set([0, 1, 2, 4, 6, 7]);

function isRouteError(r: Destination | RouteError): r is RouteError {
  return (r as RouteError).error !== undefined;
}


/** How the proxy answers a request itself. */
export interface ErrorAnswer {
  readonly status?: number;
  readonly details?: unknown;
  /** The x-skein-explain value, sent when the client asked for it. */
  readonly explanation?: string;
  /** The request has a body (not read to its end yet: the connection closes). */
  readonly hasBody: boolean;
  readonly retryAfterMs?: number;
  readonly endpoint?: Endpoint | null;
  readonly attempts?: number;
}

export class Downstream extends HeadCallbacks implements HashInput, RouteInput {
  readonly parser = new HttpParser(ParserType.Request, this);
  readonly peer: string;
  readonly record: RequestRecord;
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
  /** The last exchange, ended cleanly: the next request's (see Exchange.reusable). */
  private spare: Exchange | null = null;
  private tunnel: Tunnel | null = null;
  /** The client half-closed: finish the current response, then close. */
  private clientEnded = false;
  /** The request is answered locally; its body (if any) is discarded. */
  private local = false;
  /** The current request asked for x-skein-explain. */
  private explain = false;
  private requestId: string | undefined;
  private readonly drop = new Uint8Array(MAX_HEADERS);
  /** Where the heads this connection's requests send upstream are written (see HeadWriter). */
  readonly writer = new HeadWriter();
  /** The current request's head, read (filled in per request). */
  private readonly requestHead = new RequestHeadState();
  /** The current request's copy for a mirror, while its body comes in. */
  private shadow: Shadow | null = null;
  private shadowDriver: ShadowExchange | null = null;
  /** What the proxy adds to each request head (filled in per request). */
  private readonly forwarding: Forwarding;

  constructor(
    readonly socket: Socket,
    readonly ctx: ListenerContext,
    private readonly onClose: (d: Downstream) => void,
    /** Inbound over mTLS: the caller's verified identity; null: plaintext (or outbound). */
    readonly peerId: PeerIdentity | null = null,
    /**
     * Sees the connection's first chunk before it is read as HTTP/1; true: it took the connection
     * (another protocol: it calls `release`) and the chunk is its own. Null: HTTP/1 only.
     */
    sniff: ((d: Downstream, first: Buffer) => boolean) | null = null,
  ) {
    super();
    this.peer = plainAddress(socket.remoteAddress);
    this.record = new RequestRecord(ctx, this.peer);
    this.record.connectionMtls = peerId !== null;
    this.forwarding = { client: this.peer, requestId: '', caller: null, clientId: ctx.direction === 'outbound' ? null : (peerId?.identity ?? null), upgrade: false, open: false };
    this.since = coarseNow();
    socket.setNoDelay(true);
    if (sniff === null) socket.on('data', (chunk: Buffer) => this.onData(chunk));
    else {
      socket.once('data', (first: Buffer) => {
        if (sniff(this, first)) return;
        socket.on('data', (chunk: Buffer) => this.onData(chunk));
        this.onData(first);
      });
    }
    socket.on('end', () => this.onEnd());
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.onSocketClose());
  }

  // ---- what routes and balancers read of the current request ----

  get method(): string {
    return this.record.method;
  }
  get path(): string {
    return this.record.path;
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
        this.tunnel?.fromClient(chunk);
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
        this.record.reset();
        this.explain = false;
        this.requestId = undefined;
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
      // CONNECT's 'C' seven bytes before the target: a JS compare, the parser asked only then.
      if (this.head.urlStart >= 8 && this.headBuf[this.head.urlStart - 8] === 0x43 && this.ctx.tunnel !== null && this.parser.method === METHOD_CONNECT && this.connect(this.ctx.tunnel, data)) return;
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
      if (this.shadow !== null) this.shadowSend();
      if (this.exchange !== null) this.exchange.requestDone();
      else if (this.local) this.next();
      return;
    }
    // Malformed body framing (a bad chunk size, ...): part of the request may be upstream already.
    this.shadowCancel();
    const reason = this.parser.reason();
    const ex = this.exchange;
    if (ex !== null) ex.abort();
    if (ex === null || !ex.responseStarted) this.reject('SKEIN_E_BAD_REQUEST', `malformed request body: ${reason}`);
    else this.destroy();
  }

  /** Request body bytes: counted, shown to a tap that asked for bodies, and forwarded. */
  private body(data: Buffer): void {
    this.record.requestBody(data);
    this.shadow?.requestBody(data);
    this.exchange?.requestBody(data);
  }

  private onEnd(): void {
    this.clientEnded = true;
    if (this.state === S.Tunnel) {
      this.tunnel?.clientEnded();
      return;
    }
    if (this.exchange === null && !this.msgDone) this.close();
  }

  private onSocketClose(): void {
    this.shadowCancel();
    const ex = this.exchange;
    this.exchange = null;
    this.state = S.Closed;
    if (ex !== null) {
      ex.abort();
      ex.dispose();
    }
    this.spare?.dispose();
    this.spare = null;
    this.parser.destroy();
    this.onClose(this);
  }

  // ---- a request head ----

  private onHead(): void {
    const ctx = this.ctx;
    const buf = this.headBuf;
    const head = this.head;
    const drop = this.drop;
    const outbound = ctx.direction === 'outbound';
    const r = readRequestHead(buf, head, this.parser, this.upgrade, outbound, ctx.tracer !== null, drop, ctx.claimedCallers, this.requestHead);
    if (typeof r === 'string') {
      this.reject('SKEIN_E_BAD_REQUEST', r);
      return;
    }
    if ('pathError' in r) {
      this.reject('SKEIN_E_BAD_PATH', r.pathError);
      return;
    }
    const rec = this.record;
    this.explain = r.explain;
    const requestId = r.requestIdAt >= 0 ? head.valueOf(buf, r.requestIdAt) : requestIds.next();
    this.requestId = requestId;
    rec.method = r.method;
    rec.path = r.path;
    rec.requestId = requestId;
    rec.headComplete();
    // Known before anything can refuse the request: a refusal is counted against its caller too.
    rec.caller = outbound ? ctx.callerService : (this.peerId?.service ?? (r.callerAt >= 0 ? head.valueOf(buf, r.callerAt) : null));
    const hasBody = r.hasBody;
    if (ctx.draining) {
      this.answerError('SKEIN_E_PROXY_DRAINING', 'the proxy is shutting down', { hasBody });
      return;
    }
    const dest = ctx.resolve(r.authority);
    if (isRouteError(dest)) {
      this.answerError(dest.error, dest.message, { hasBody, status: dest.status });
      return;
    }
    const traffic = dest.traffic;
    const route = traffic.routes.match(this);
    rec.service = dest.service;
    rec.route = route.name;
    if (ctx.authz !== null) {
      const refusal = this.authorize(ctx.authz, dest.service, r, requestId);
      if (refusal !== null) {
        this.refused(refusal, hasBody);
        return;
      }
    }
    if (r.badDeadline !== null) {
      this.refused(badDeadline(r.badDeadline), hasBody);
      return;
    }
    const timeoutMs = deadlineOf(route, ctx.direction, dest.service, r.deadlineMs);
    if (typeof timeoutMs !== 'number') {
      this.refused(timeoutMs, hasBody);
      return;
    }
    // An upgrade the mesh does not carry (h2c: a tunnel past every rule) is declined: the request
    // is served as plain HTTP/1.1 without it (RFC 9110 §7.8), and the connection closes after.
    let declined = false;
    if (r.upgradeAt >= 0 && !upgradeAllowed(head.valueOf(buf, r.upgradeAt))) {
      drop[r.upgradeAt] = 1;
      this.upgrade = false;
      declined = true;
    }
    rec.tap(buf, head);
    const tracer = ctx.tracer;
    if (tracer !== null) {
      rec.hop = tracer.hop(ctx.direction, r.trace ?? {}, { workload: ctx.workload, service: dest.service, route: route.name, method: r.method, path: pathOnly(r.path), ...(rec.caller === null ? {} : { caller: rec.caller }) });
    }
    const admitted = admit(traffic, route, ctx.direction, callerOf(ctx.direction, ctx.workload, rec.caller, this.peer), ctx.rng, ctx.counters);
    if (isRefusal(admitted)) {
      this.refused(admitted, hasBody);
      return;
    }
    // Left open for what each attempt adds (its deadline, its trace context).
    const openHead = timeoutMs > 0 || rec.hop !== null;
    const fw = this.forwarding;
    fw.requestId = requestId;
    fw.caller = rec.caller;
    fw.upgrade = this.upgrade;
    fw.open = openHead;
    const out = upstreamHead(buf, head, drop, r, fw, this.writer);
    const method = this.parser.method;
    // (The hot path of a route without a mirror asks nothing more.)
    const shadow = route.mirror === null ? null : ctx.mirrors.shadow(ctx.direction, dest, route, IDEMPOTENT.has(method), this.upgrade);
    // The copy's head now (the head writer's buffer is the next request's later); a copy without
    // a body leaves once the request itself is on its way, one with a body when the body is in.
    const copy = shadow === null ? null : this.mirror(shadow, out, openHead, method === METHOD_HEAD, hasBody);
    let ex = this.spare;
    this.spare = null;
    ex ??= new Exchange(this);
    const o = ex.o;
    o.isHead = method === METHOD_HEAD;
    o.hasBody = hasBody;
    o.upgrade = this.upgrade;
    o.keepAlive = this.keepAlive && !this.clientEnded && !declined;
    o.http10 = !r.http11;
    o.explain = r.explain;
    o.openHead = openHead;
    ex.begin(dest, out);
    const req = (ex.callRequest ??= { direction: ctx.direction, route, idempotent: false, hasBody: false, upgrade: false, timeoutMs: 0, delayMs: 0, hash: this, hop: null });
    req.route = route;
    req.idempotent = IDEMPOTENT.has(method);
    req.hasBody = hasBody;
    req.upgrade = this.upgrade;
    req.timeoutMs = timeoutMs;
    req.delayMs = admitted.delayMs;
    req.hop = rec.hop;
    if (ex.call === undefined || !ex.call.reuse(dest, req)) ex.call = new Call(dest, req, ex, ctx.clock, ctx.counters, ctx.rng);
    this.exchange = ex;
    this.local = false;
    ex.call.start();
    if (copy !== null) (shadow as Shadow).send(copy, this);
  }

  /**
   * A copy of the request for its route's mirror: its driver, to send at once when the request has
   * no body (returned), or kept until the body is in (`shadowSend`; null returned).
   */
  private mirror(shadow: Shadow, out: Buffer, open: boolean, isHead: boolean, hasBody: boolean): ShadowExchange | null {
    const driver = new ShadowExchange(this.ctx, shadowHead(out, open, shadow), isHead);
    if (!hasBody) return driver;
    this.shadow = shadow;
    this.shadowDriver = driver;
    return null;
  }

  /** The request is complete: its copy (if any) goes. */
  private shadowSend(): void {
    const s = this.shadow;
    if (s === null) return;
    this.shadow = null;
    s.send(this.shadowDriver as ShadowExchange, this);
    this.shadowDriver = null;
  }

  /** The request will not be complete: its copy (if any) is not sent. */
  private shadowCancel(): void {
    this.shadow?.cancel();
    this.shadow = null;
    this.shadowDriver = null;
  }

  /**
   * CONNECT host:port to a mesh service (outbound): answered 200, then the connection is the
   * tunnel's, served again from its next bytes by `tunnel` (HTTP/1 or HTTP/2, as a new connection).
   * False: not a mesh authority (the request is refused as any CONNECT is).
   */
  private connect(tunnel: NonNullable<ListenerContext['tunnel']>, rest: Buffer): boolean {
    const target = this.headBuf.toString('latin1', this.head.urlStart, this.head.urlEnd);
    const dest = this.ctx.resolve(target);
    if (isRouteError(dest)) return false;
    this.state = S.Closed;
    // The listener counts the tunnel's connection, not this one.
    this.onClose(this);
    this.socket.write('HTTP/1.1 200 Connection Established\r\n\r\n', 'latin1');
    tunnel(this.socket, this.peerId, rest, dest);
    return true;
  }

  /** Drops the current exchange: kept for the next request when it ended cleanly, else disposed. */
  private dropExchange(): void {
    const ex = this.exchange;
    if (ex === null) return;
    this.exchange = null;
    if (ex.reusable && this.spare === null && this.state !== S.Closed) this.spare = ex;
    else ex.dispose();
  }

  /**
   * The served service's authorization of the current request (inbound). A method of its own: the
   * closures it passes would otherwise make every request allocate their context in onHead.
   */
  private authorize(authz: ServiceAuthz, service: string, r: RequestHead, requestId: string): Refusal | null {
    const ctx = this.ctx;
    const peer = this.peerId;
    const audit = ctx.audit;
    return authorize(
      authz,
      service,
      () => ({ identity: peer?.identity ?? null, namespace: peer?.namespace ?? null, service: peer?.service ?? null, sourceAddress: this.peer, method: r.method, path: r.pathOnly, port: this.socket.localPort ?? 0, header: (n) => this.header(n) ?? null }),
      ctx.counters,
      audit === null
        ? null
        : (d) => audit.authz(d, () => ({ service, sourceIdentity: peer?.identity ?? null, sourceAddress: this.peer, tls: peer === null ? 'plaintext' : 'mtls', port: this.socket.localPort ?? 0, method: r.method, rawPath: this.rawPath(), path: r.pathOnly, requestId })),
    );
  }

  /** The current request's target as it came, without its query (for the audit log). */
  private rawPath(): string {
    const head = this.head;
    const target = this.headBuf.toString('latin1', head.urlStart, head.urlEnd);
    const q = target.indexOf('?');
    return q < 0 ? target : target.slice(0, q);
  }

  // ---- answers ----

  /** A refusal before any attempt (admission). */
  private refused(r: Refusal, hasBody: boolean): void {
    this.answerError(r.code, r.message, { hasBody, status: r.status, details: r.details, ...(r.retryAfterMs === undefined ? {} : { retryAfterMs: r.retryAfterMs }) });
  }

  /**
   * The proxy answers the current request itself (nothing of an app's response has gone out):
   * recorded, then the error response. The connection closes when the rest of the request cannot
   * be read past (a body not read to its end), or is not to be kept; otherwise the rest of the
   * request is read and dropped, and the next one follows.
   */
  answerError(code: ErrorCode, message: string, a: ErrorAnswer): void {
    const ctx = this.ctx;
    const status = a.status ?? ERROR_CODES[code].status;
    ctx.counters.proxyError(ctx.direction, code);
    this.record.finish(status, code, a.endpoint ?? null, a.attempts ?? 0);
    const close = (a.hasBody && !this.msgDone) || !this.keepAlive || this.clientEnded || ctx.draining;
    const explanation = this.explain ? (a.explanation ?? localExplanation(this.record.route, this.record.service, code)) : null;
    this.socket.write(errorResponse(code, message, { close, requestId: this.requestId, status, head: this.parser.method === METHOD_HEAD, details: a.details, retryAfterMs: a.retryAfterMs, explanation, origin: ctx.direction }), 'latin1');
    this.dropExchange();
    if (close) {
      this.close();
      return;
    }
    if (this.msgDone) this.next();
    else this.local = true;
  }

  /** Refuses the connection's input: an error answer, then close. Nothing is forwarded. */
  reject(code: ErrorCode, message: string, status?: number): void {
    if (this.state === S.Closed) return;
    this.ctx.counters.proxyError(this.ctx.direction, code);
    this.record.finish(status ?? ERROR_CODES[code].status, code, null, 0);
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

  /** The connection is not HTTP/1 (`sniff` took it): this lets go of it without closing it. */
  release(): void {
    this.state = S.Closed;
  }

  /** The exchange is over: next request, or close. */
  exchangeDone(close: boolean): void {
    if (close || this.clientEnded || this.ctx.draining) {
      this.close();
      this.dropExchange();
      return;
    }
    this.dropExchange();
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
  startTunnel(t: Tunnel): void {
    this.state = S.Tunnel;
    this.tunnel = t;
    const p = this.pending;
    this.pending = null;
    if (p !== null) t.fromClient(p);
    this.socket.resume();
    if (this.clientEnded) t.clientEnded();
  }
}
