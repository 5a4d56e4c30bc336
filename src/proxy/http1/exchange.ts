/**
 * The exchange: one request's I/O with upstreams over HTTP/1.1, driven by the engine's `Call`
 * (src/engine/call.ts), which decides every attempt, retry, deadline and error. The exchange
 * connects (a pooled connection or a new one, within the service's connection limits), sends the
 * head and the body bytes as they came (a retry sends the body the call kept), forwards the
 * response head (rewritten: response-head.ts) and body bytes back with back-pressure both ways,
 * reads and drops a response the call discards, hands a 101 over to a `Tunnel`, and returns the
 * connection to its pool when both messages are complete.
 *
 *   Downstream ──head──► Exchange ◄──decisions── Call (engine)
 *                         │  ▲
 *                    send ▼  │ outcomes (connected, head, reset, ...)
 *                        Upstream (pooled connection, its own llhttp parser)
 */
import { atConnectionLimit, connectSettled, reserveConnection } from '../../engine/admission.js';
import type { Attempt, Call, CallDriver, CallFailure, CallRequest } from '../../engine/call.js';
import type { Destination, Refusal } from '../../engine/service-client.js';
import type { AttemptTrace } from '../../engine/observe.js';
import { coarseNow } from './coarse-clock.js';
import type { Downstream } from './downstream.js';
import { clientHead, readResponseHead, refusedByPeer } from './response-head.js';
import { Backpressure, Tunnel } from './tunnel.js';
import { TlsRefused, Upstream, type Pool, type UpstreamFailure, type UpstreamHandler } from './upstream.js';

/** What an exchange knows of its request: one object per Exchange, filled in for each request it serves. */
export class ExchangeRequest {
  isHead = false;
  hasBody = false;
  upgrade = false;
  /** The client connection may be kept after this exchange. */
  keepAlive = true;
  http10 = false;
  /** The client asked for x-skein-explain. */
  explain = false;
  /** The head has no final CRLF: each attempt adds its deadline and trace context, then ends it. */
  openHead = false;
}

/** A CallRequest the driver fills in for each request (one per Exchange, like its Call). */
export type MutableCallRequest = { -readonly [K in keyof CallRequest]: CallRequest[K] };

/** Request body bytes held while no attempt takes them (connecting, a fault delay, a hold), before the client waits; HTTP/2's too. */
export const MAX_QUEUED_BODY = 1024 * 1024;
const EMPTY = Buffer.alloc(0);
const TIMEOUT = Buffer.from('x-skein-timeout-ms: ', 'latin1');
const COLON = Buffer.from(': ', 'latin1');
const CRLF = Buffer.from('\r\n', 'latin1');

/** The pools a service's connections were opened in, by its connection counter (to evict idle ones at the limit). */
const servicePools = new WeakMap<object, Set<Pool>>();

/** Header lines of an attempt's trace context. */
function traceLines(t: AttemptTrace): string {
  let s = '';
  for (const [name, value] of t.headers) s += `${name}: ${value}\r\n`;
  return s;
}

/**
 * One request's exchange. A client connection keeps the exchange of a request that ended cleanly
 * and uses it again, with its Call, for its next request (`begin`): a request on a kept-alive
 * connection allocates neither.
 */
export class Exchange implements UpstreamHandler, CallDriver {
  /** The request's call: set by the driver before `begin` returns to it (undefined until its first request). */
  call!: Call;
  /** What this exchange's request is; the driver fills it in before `begin`. */
  readonly o = new ExchangeRequest();
  /** The Call's request, kept with the exchange for the next request (made at the first). */
  callRequest: MutableCallRequest | null = null;
  private dest!: Destination;
  /** The request head; without its final CRLF when `o.openHead`. */
  private headBytes: Buffer = EMPTY;
  private up: Upstream | null = null;
  /** A connection being established for this exchange (counted as pending). */
  private connecting: Upstream | null = null;
  /** Body bytes waiting for the attempt's connection. */
  private queue: Buffer[] | null = null;
  /** The array `queue` starts as, kept for the next request. */
  private readonly firstQueue: Buffer[] = [];
  private queued = 0;
  private reqDone = false;
  private finished = false;
  private responseDone = false;
  private closeAfter = false;
  /** The current response is read to its end and dropped: the call retries. */
  private discard = false;
  /** The final response's status (0: none yet). */
  private status = 0;
  /** The rewritten response head, until it is written (with the first body bytes). */
  private pendingHead: Buffer | null = null;
  /** A response head's body has not started yet (its head came at call.respondedAt). */
  private bodyAwaited = false;
  private trace: AttemptTrace | null = null;
  private tunnel: Tunnel | null = null;
  private readonly outbound: boolean;
  /** The upstream is full: the client is not read until it drains (made when first needed). */
  private upward: Backpressure | null = null;
  /** The client is full: the upstream is not read until it drains (made when first needed). */
  private downward: Backpressure | null = null;

  constructor(private readonly ds: Downstream) {
    this.outbound = ds.ctx.direction === 'outbound';
  }

  /** Starts serving a request (`o` filled in): a new exchange, or one that `reusable` said may serve another. */
  begin(dest: Destination, headBytes: Buffer): void {
    this.dest = dest;
    this.headBytes = headBytes;
    this.firstQueue.length = 0;
    this.queue = this.firstQueue;
    this.queued = 0;
    this.reqDone = false;
    this.finished = false;
    this.responseDone = false;
    this.closeAfter = false;
    this.discard = false;
    this.status = 0;
    this.pendingHead = null;
    this.bodyAwaited = false;
    this.trace = null;
  }

  /**
   * The exchange ended cleanly and holds nothing (no connection, tunnel or back-pressure wait
   * that could still call it back): it may serve the connection's next request.
   */
  get reusable(): boolean {
    return this.finished && this.up === null && this.connecting === null && this.tunnel === null && this.upward?.holding !== true && this.downward?.holding !== true;
  }

  /** The exchange will not be used again: its call's timer is cancelled. */
  dispose(): void {
    this.call?.dispose(); // undefined before its first request
  }

  /** The response head was delivered: a cut from now on is the client's to see. */
  get responseStarted(): boolean {
    return this.call.responding;
  }

  // ---- the call's decisions ----

  send(a: Attempt): Refusal | null {
    this.up = null;
    this.trace = a.trace;
    if (this.upward?.holding === true) {
      // The old upstream's back-pressure paused the client: the new attempt reads it again.
      this.upward.cancel();
      this.ds.socket.resume();
    }
    // A retry sends the body the call kept (a fresh connection after a stale one: no body).
    if (a.n > 1 || a.fresh) {
      this.queue = [...(a.body as Buffer[])];
      this.queued = 0;
    }
    return this.connect(a, !a.fresh);
  }

  abandon(): void {
    this.discard = false;
    const up = this.up;
    this.up = null;
    up?.close();
    this.stopConnecting();
  }

  fail(f: CallFailure): void {
    this.finished = true;
    this.queue = null;
    this.stopConnecting();
    this.ds.answerError(f.code, f.message, { status: f.status, details: f.details, explanation: f.explanation, hasBody: this.o.hasBody, endpoint: this.call.endpoint, attempts: this.call.attempts });
  }

  private connect(a: Attempt, mayReuse: boolean): Refusal | null {
    const e = a.endpoint;
    const ctx = this.ds.ctx;
    const tls = ctx.upstreamTls(e);
    if (tls !== null && 'code' in tls) return tls;
    const pool = ctx.pools.get(e, tls?.poolKey);
    const idle = mayReuse ? pool.take(coarseNow()) : null;
    if (idle !== null) {
      idle.handler = this;
      this.onUpstreamReady(idle);
      return null;
    }
    const t = this.dest.traffic;
    let timeoutMs = ctx.limits.connectTimeoutMs;
    if (this.outbound) {
      let used = servicePools.get(t.connections);
      if (used === undefined) servicePools.set(t.connections, (used = new Set()));
      used.add(pool);
      // At the connection limit, an idle connection to another endpoint of the service makes room.
      if (atConnectionLimit(t)) {
        for (const p of used) {
          if (!ctx.pools.isLive(p)) used.delete(p);
          else if (p !== pool && p.evictOne()) break;
        }
      }
      const refused = reserveConnection(t);
      if (refused !== null) return refused;
      timeoutMs = t.policy.connectTimeoutMs;
      pool.idleMs = t.policy.idleTimeoutMs;
    }
    this.connecting = new Upstream(e, pool, timeoutMs, this, this.outbound ? t.connections : null, tls);
    return null;
  }

  private doneConnecting(): void {
    if (this.connecting === null) return;
    this.connecting = null;
    if (this.outbound) connectSettled(this.dest.traffic);
  }

  private stopConnecting(): void {
    const c = this.connecting;
    if (c === null) return;
    this.doneConnecting();
    c.close();
  }

  // ---- the request ----

  onUpstreamReady(up: Upstream): void {
    if (this.connecting === up) this.doneConnecting();
    if (this.finished || !this.call.connected()) {
      up.pool.release(up, coarseNow());
      return;
    }
    if (!up.reused) this.ds.ctx.counters.upstreamConnect(true);
    this.up = up;
    // Outbound, the hop between proxies is this connection; inbound it is the caller's (the hop to the app is local).
    if (this.outbound) this.ds.record.mtls = up.secure;
    up.expect(this.o.isHead);
    const s = up.socket;
    const q = this.queue;
    this.queue = null;
    const head = this.requestHead();
    if (this.o.hasBody || this.o.upgrade) {
      // Head and the body bytes that follow in this tick leave in one write.
      s.cork();
      process.nextTick(uncork, s);
      s.write(head);
      this.lent(head);
      if (q !== null) for (const b of q) s.write(b);
    } else {
      s.write(head);
      // Sent at once (nothing queued): the bytes are the kernel's, the buffer is ours again.
      if (s.writableLength !== 0) this.lent(head);
    }
    if (this.queued > MAX_QUEUED_BODY) this.ds.socket.resume();
    this.queued = 0;
  }

  /** A socket keeps `head` (queued, not sent yet): the connection's head writer lets its buffer go. */
  private lent(head: Buffer): void {
    const w = this.ds.writer;
    if (w.owns(head)) w.handOff();
  }

  /**
   * The request head for this attempt: with the time left (a deadline) and its trace context
   * (tracing on), written after the head in the connection's head writer while it still holds it
   * and there is room, else into a new buffer.
   */
  private requestHead(): Buffer {
    const base = this.headBytes;
    if (!this.o.openHead) return base;
    const left = this.call.timeLeftMs();
    const t = this.trace;
    const w = this.ds.writer;
    let need = TIMEOUT.length + 16 + CRLF.length * 2;
    if (t !== null) for (const [name, value] of t.headers) need += name.length + value.length + 4;
    if (w.owns(base) && base.byteOffset === 0 && base.length + need <= w.buf.length) {
      w.pos = base.length;
      if (left !== 0) {
        w.bytes(TIMEOUT);
        w.decimal(left);
        w.bytes(CRLF);
      }
      if (t !== null) {
        for (const [name, value] of t.headers) {
          w.text(name);
          w.bytes(COLON);
          w.text(value);
          w.bytes(CRLF);
        }
      }
      w.bytes(CRLF);
      return w.buf.subarray(0, w.pos);
    }
    let end = left === 0 ? '' : `x-skein-timeout-ms: ${left}\r\n`;
    if (t !== null) end += traceLines(t);
    end += '\r\n';
    const out = Buffer.allocUnsafe(base.length + end.length);
    base.copy(out, 0);
    out.write(end, base.length, 'latin1');
    return out;
  }

  requestBody(data: Buffer): void {
    this.call.requestBody(data);
    const up = this.up;
    if (up === null) {
      if (this.queue === null) return;
      this.queue.push(data);
      this.queued += data.length;
      if (this.queued > MAX_QUEUED_BODY) this.ds.socket.pause();
      return;
    }
    if (!up.socket.write(data)) (this.upward ??= new Backpressure(() => !this.finished)).hold(up.socket, this.ds.socket);
  }

  requestDone(): void {
    this.reqDone = true;
    this.call.requestComplete();
    if (this.responseDone) this.finish();
  }

  // ---- the response ----

  onResponseHead(up: Upstream, head: Buffer, status: number): void {
    const ds = this.ds;
    if (status >= 100 && status < 200 && status !== 101) {
      // Interim responses go to the client as they are (HTTP/1.0 clients do not get them).
      if (!this.o.http10) ds.socket.write(head);
      return;
    }
    const r = readResponseHead(head, up.head, status, this.outbound, this.o.http10, up.parser.httpMinor === 0);
    if (typeof r === 'string') {
      // Not a byte of such a response is forwarded.
      up.close();
      this.onUpstreamError(up, 'exchange', new Error(`refused response: ${r}`), 'protocol');
      return;
    }
    this.status = status;
    if (this.call.responseHead(status, this.outbound && refusedByPeer(this.call.endpoint, r)) === 'discard') {
      // Read to its end and dropped (see onResponseComplete); the attempt's timer keeps running.
      this.discard = true;
      return;
    }
    ds.record.responseHead(head, up.head);
    const decode = this.o.http10 && r.chunked && !this.o.isHead;
    if (decode) up.decodeBody = true;
    const close = !this.o.keepAlive || up.needsEof || decode || ds.ctx.draining || (this.o.upgrade && status !== 101);
    this.closeAfter = close;
    let tail = status === 101 ? 'connection: upgrade\r\n\r\n' : close ? 'connection: close\r\n\r\n' : this.o.http10 ? 'connection: keep-alive\r\n\r\n' : '\r\n';
    if (this.o.explain) tail = `x-skein-explain: ${this.call.explanation()}\r\n${tail}`;
    if (!this.o.isHead && status !== 101 && status !== 204 && status !== 304) this.bodyAwaited = true;
    // Held until the first body bytes (usually in the same chunk): both leave in one write.
    this.pendingHead = clientHead(head, up.head, tail);
  }

  /** Writes the response head if it is still held. */
  private flushHead(): void {
    const head = this.pendingHead;
    if (head === null) return;
    this.pendingHead = null;
    this.ds.socket.write(head);
  }

  onResponseBody(up: Upstream, data: Buffer): void {
    if (this.discard) return;
    if (this.bodyAwaited) this.bodyStarted(up);
    this.ds.record.responseBody(data);
    const head = this.pendingHead;
    let out = data;
    if (head !== null) {
      this.pendingHead = null;
      out = Buffer.allocUnsafe(head.length + data.length);
      head.copy(out, 0);
      data.copy(out, head.length);
    }
    if (!this.ds.socket.write(out)) (this.downward ??= new Backpressure()).hold(this.ds.socket, up.socket);
  }

  onChunkDone(): void {
    this.flushHead();
  }

  /**
   * The first body bytes of the response: how long after its head, when they came in a later read
   * (see stall.ts). In the same read as the head (still held) there is no gap, and no clock read.
   */
  private bodyStarted(up: Upstream): void {
    this.bodyAwaited = false;
    if (this.pendingHead !== null) return;
    const ctx = this.ds.ctx;
    ctx.counters.bodyGap(ctx.direction, this.dest.service, up.endpoint, ctx.clock.now() - this.call.respondedAt);
  }

  onResponseComplete(up: Upstream, rest: Buffer): void {
    this.up = null;
    const reuse = this.reqDone && rest.length === 0 && up.reusable;
    if (this.discard) {
      this.discard = false;
      if (reuse) up.pool.release(up, coarseNow());
      else up.close();
      this.call.discarded();
      return;
    }
    this.flushHead();
    if (this.status === 101) {
      this.up = up;
      this.startTunnel(up, rest);
      return;
    }
    this.responseDone = true;
    if (reuse) up.pool.release(up, coarseNow());
    else {
      up.close();
      if (!this.reqDone) this.closeAfter = true;
    }
    this.finish();
  }

  onUpstreamError(up: Upstream, phase: 'connect' | 'exchange', err: Error, code: UpstreamFailure): void {
    if (this.connecting === up) this.doneConnecting();
    this.up = null;
    if (this.finished) return;
    if (this.tunnel !== null) {
      this.tunnel.upstreamClosed();
      return;
    }
    if (this.discard) {
      // The dropped response was cut short: the retry goes ahead all the same.
      this.discard = false;
      this.call.discarded();
      return;
    }
    if (phase === 'connect') {
      this.ds.ctx.counters.upstreamConnect(false);
      if (err instanceof TlsRefused) {
        const e = up.endpoint;
        this.ds.ctx.counters.tlsRefused('outbound', err.reason, err.message, e);
        this.ds.ctx.audit?.tlsRefused('outbound', err.reason, err.message, `${e.address}:${e.port}`, e.service, e.port);
      }
      this.call.connectFailed(err.message, code === 'tls');
      return;
    }
    // A head still held never left: the client can still get a proper answer.
    const answered = this.pendingHead === null;
    this.pendingHead = null;
    if (!this.call.reset(code === 'protocol' ? 'protocol' : 'reset', err.message, up.reused, answered)) return;
    // Part of the response went out: the client must see the cut.
    this.finished = true;
    this.ds.record.finish(this.status, 'SKEIN_E_UPSTREAM_RESET', this.call.endpoint, this.call.attempts);
    this.ds.destroy();
  }

  // ---- the end ----

  private finish(): void {
    if (this.finished) return;
    if (!this.reqDone && !this.closeAfter) return;
    this.finished = true;
    this.call.responseComplete();
    this.ds.record.finish(this.status, null, this.call.endpoint, this.call.attempts);
    this.ds.exchangeDone(this.closeAfter);
  }

  /** The client went away (or sent garbage) mid-exchange. */
  abort(): void {
    if (this.finished) return;
    if (this.tunnel !== null) {
      this.tunnel.close();
      return;
    }
    this.finished = true;
    this.queue = null;
    this.call.clientGone();
    this.stopConnecting();
    this.ds.record.finish(0, null, this.call.endpoint, this.call.attempts);
    const up = this.up;
    this.up = null;
    up?.close();
  }

  // ---- a tunnel (after 101) ----

  private startTunnel(up: Upstream, rest: Buffer): void {
    const ds = this.ds;
    this.tunnel = new Tunnel(ds.socket, up.socket, (n) => (ds.record.responseBytes += n), () => this.tunnelClosed());
    ds.startTunnel(this.tunnel);
    if (rest.length > 0) this.tunnel.fromUpstream(rest);
  }

  onTunnelData(_up: Upstream, data: Buffer): void {
    this.tunnel?.fromUpstream(data);
  }

  /** The tunnel is over (either side closed). */
  private tunnelClosed(): void {
    if (this.finished) return;
    this.finished = true;
    this.call.responseComplete();
    this.ds.record.finish(101, null, this.call.endpoint, this.call.attempts);
    this.up?.close();
    this.up = null;
  }
}

function uncork(s: { uncork(): void }): void {
  s.uncork();
}
