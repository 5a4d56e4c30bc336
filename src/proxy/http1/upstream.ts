/**
 * Upstream connections and their pools. An `Upstream` is one keep-alive connection to one
 * endpoint with its own response parser; while it carries a request it belongs to that request's
 * `Exchange` (see exchange.ts), and in between it waits in its endpoint's `Pool` (last in, first
 * out, so the fewest connections stay warm and the rest age out).
 */
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { TlsRefusal } from '../../api/mtls.js';
import type { Endpoint } from '../../discovery/endpoint.js';
import { handshakeRefusal } from '../tls/peer.js';
import type { UpstreamTls } from '../tls/outbound.js';
import { ERR, HttpParser, ParserType } from './llhttp.js';
import { HeadCallbacks } from './head.js';

/** What an upstream connection reports to the exchange it serves. */
export interface UpstreamHandler {
  /** Connected (or reused): send the request. */
  onUpstreamReady(up: Upstream): void;
  /**
   * A response head is complete (the head bytes; `up.head` has its header table). An interim
   * response (1xx other than 101) is followed by the final one on the same exchange.
   */
  onResponseHead(up: Upstream, head: Buffer, statusCode: number): void;
  /** Raw response bytes after the head (body framing included), to forward as they are. */
  onResponseBody(up: Upstream, data: Buffer): void;
  /** A chunk was parsed and the response is not complete yet (write what is held). */
  onChunkDone(): void;
  /** The final response is complete; `rest` are bytes after it (a tunnel's first bytes after 101). */
  onResponseComplete(up: Upstream, rest: Buffer): void;
  /**
   * The connection failed: `phase` says whether it ever connected; `tls`: its mTLS handshake or
   * the peer's identity was refused (`err` is a TlsRefused).
   */
  onUpstreamError(up: Upstream, phase: 'connect' | 'exchange', err: Error, code: UpstreamFailure): void;
  /** Bytes after a 101 Switching Protocols (the tunnel). */
  onTunnelData(up: Upstream, data: Buffer): void;
}

export type UpstreamFailure = 'reset' | 'protocol' | 'timeout' | 'connect' | 'tls';

/** An mTLS connection the proxy refused: the reason names why (see api/mtls.ts). */
export class TlsRefused extends Error {
  constructor(
    readonly reason: TlsRefusal,
    detail: string,
  ) {
    super(detail);
  }
}

export class Upstream extends HeadCallbacks {
  readonly socket: Socket;
  readonly parser: HttpParser;
  handler: UpstreamHandler | null = null;
  connected = false;
  /** Has served at least one exchange before the current one (a stale connection is possible). */
  reused = false;
  idleSince = 0;
  /** Response to a HEAD request: tell the parser there is no body. */
  skipBody = false;
  /** Raw forwarding of body bytes is off; onBody decodes chunked framing instead (HTTP/1.0 clients). */
  decodeBody = false;
  tunnel = false;
  /** An mTLS connection to a peer proxy. */
  readonly secure: boolean;
  private headDone = false;
  private msgDone = false;
  private status = 0;
  private cur: Buffer | null = null;
  private closedByUs = false;
  private counter: { open: number } | null;

  constructor(
    readonly endpoint: Endpoint,
    /** The pool it goes back to (the one for its address when it is released: see Pool.release). */
    public pool: Pool,
    connectTimeoutMs: number,
    handler: UpstreamHandler,
    /** Counts this connection while it is open (the service's limits.maxConnections). */
    counter: { open: number } | null = null,
    /** mTLS to a peer proxy; null: plaintext. */
    tls: UpstreamTls | null = null,
  ) {
    super();
    this.counter = counter;
    if (counter !== null) counter.open++;
    this.handler = handler;
    this.parser = new HttpParser(ParserType.Response, this);
    this.secure = tls !== null;
    const socket = tls === null ? connect({ host: endpoint.address, port: endpoint.port, noDelay: true }) : tlsConnect({ host: endpoint.address, port: endpoint.port, ...tls.options() });
    this.socket = socket;
    socket.setTimeout(connectTimeoutMs);
    /** TCP is up but the TLS handshake is not done: a failure now is the handshake's. */
    let handshaking = false;
    if (tls === null) socket.once('connect', () => this.ready());
    else {
      socket.once('connect', () => {
        handshaking = true;
        socket.setNoDelay(true);
      });
      socket.once('secureConnect', () => {
        handshaking = false;
        const check = tls.verify(socket as TLSSocket);
        if (!check.ok) this.fail('connect', new TlsRefused(check.reason, check.detail), 'tls');
        else this.ready();
      });
      socket.on('session', (s: Buffer) => tls.remember(s));
    }
    socket.on('timeout', () => {
      if (!this.connected) this.fail('connect', new Error(`${handshaking ? 'TLS handshake' : 'connect'} timeout after ${connectTimeoutMs} ms`), 'timeout');
    });
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.onEnd());
    socket.on('error', (err: Error & { code?: string }) => {
      if (handshaking) {
        const r = handshakeRefusal(err);
        if (!r.ok) this.fail('connect', new TlsRefused(r.reason, r.detail), 'tls');
        return;
      }
      this.fail(this.connected ? 'exchange' : 'connect', err, this.connected ? 'reset' : 'connect');
    });
    socket.on('close', () => {
      this.uncount();
      this.pool.forget(this);
      this.parser.destroy();
      if (!this.closedByUs) this.fail('exchange', new Error('upstream closed the connection'), 'reset');
    });
  }

  private ready(): void {
    this.socket.setTimeout(0);
    this.connected = true;
    this.handler?.onUpstreamReady(this);
  }

  /** Starts listening for a new response (the previous one is done). */
  expect(skipBody: boolean): void {
    this.skipBody = skipBody;
    this.decodeBody = false;
    this.headDone = false;
    this.msgDone = false;
  }

  /** Leaves its service's connection count (once: when closed by us, or when the socket closes). */
  private uncount(): void {
    const c = this.counter;
    if (c === null) return;
    this.counter = null;
    c.open--;
  }

  close(): void {
    this.uncount();
    this.closedByUs = true;
    this.handler = null;
    this.socket.destroy();
  }

  private fail(phase: 'connect' | 'exchange', err: Error, code: UpstreamFailure): void {
    this.uncount();
    const h = this.handler;
    this.handler = null;
    this.closedByUs = true;
    this.socket.destroy();
    if (h !== null) h.onUpstreamError(this, phase, err, code);
  }

  // ---- parser callbacks (the span ones are HeadCallbacks') ----

  onHeadersComplete(status: number): number {
    this.headDone = true;
    this.status = status;
    // A response to HEAD has no body whatever its headers say; 1xx / 204 / 304 llhttp knows.
    return this.skipBody ? 1 : ERR.PAUSED;
  }
  onBody(s: number, e: number): number {
    if (this.decodeBody && this.cur !== null && this.handler !== null) this.handler.onResponseBody(this, this.cur.subarray(s, e));
    return 0;
  }
  onMessageComplete(): number {
    this.msgDone = true;
    return ERR.PAUSED;
  }

  // ---- input ----

  private onData(chunk: Buffer): void {
    const h = this.handler;
    if (h === null) {
      // Bytes on an idle connection: the server is confused or closing; never reuse it.
      this.close();
      return;
    }
    if (this.tunnel) {
      h.onTunnelData(this, chunk);
      return;
    }
    this.feed(chunk);
  }

  /** Parses response bytes; loops because one chunk may hold an interim 1xx and the final head. */
  feed(data: Buffer): void {
    for (;;) {
      const h = this.handler;
      if (h === null) return;
      if (!this.headDone) {
        this.cur = data;
        const ret = this.parser.execute(data);
        this.cur = null;
        if (ret === ERR.OK) {
          this.head.consumed(data);
          if (this.head.base > 64 * 1024 || this.head.overflow) this.fail('exchange', new Error('upstream response head too large'), 'protocol');
          return;
        }
        if ((ret !== ERR.PAUSED && ret !== ERR.PAUSED_UPGRADE) || !this.headDone) {
          this.fail('exchange', new Error(`malformed response: ${this.parser.reason()}`), 'protocol');
          return;
        }
        const end = this.parser.errorOffset;
        const head = this.head.complete(data, end);
        h.onResponseHead(this, head, this.status);
        data = data.subarray(end);
        if (this.msgDone) {
          // No body (HEAD): the message ended with its head.
          this.finishMessage(data);
          return;
        }
        this.parser.resume();
        if (this.handler === null) return;
      }
      this.cur = data;
      const ret = this.parser.execute(data);
      this.cur = null;
      const hh = this.handler;
      if (hh === null) return;
      if (ret === ERR.OK) {
        if (!this.decodeBody && data.length > 0) hh.onResponseBody(this, data);
        this.handler?.onChunkDone();
        return;
      }
      if ((ret === ERR.PAUSED || ret === ERR.PAUSED_UPGRADE) && this.msgDone) {
        const off = this.parser.errorOffset;
        if (!this.decodeBody && off > 0) hh.onResponseBody(this, data.subarray(0, off));
        data = data.subarray(off);
        if (this.status >= 100 && this.status < 200 && this.status !== 101) {
          // An interim response (100 Continue, 103 Early Hints): the final one follows.
          this.parser.resume();
          this.headDone = false;
          this.msgDone = false;
          if (data.length === 0) return;
          continue;
        }
        this.finishMessage(data);
        return;
      }
      this.fail('exchange', new Error(`malformed response: ${this.parser.reason()}`), 'protocol');
      return;
    }
  }

  private finishMessage(rest: Buffer): void {
    const h = this.handler;
    if (h === null) return;
    if (this.status === 101) {
      this.tunnel = true;
      h.onResponseComplete(this, rest);
      return;
    }
    this.parser.resume();
    h.onResponseComplete(this, rest);
  }

  /** Whether the connection can carry another request after this response. */
  get reusable(): boolean {
    return !this.tunnel && this.parser.keepAlive && !this.socket.destroyed;
  }

  get needsEof(): boolean {
    return this.parser.needsEof;
  }

  private onEnd(): void {
    const h = this.handler;
    if (h !== null && this.headDone && !this.msgDone && !this.tunnel) {
      // A body delimited by the end of the connection: the end completes it.
      const ret = this.parser.finish();
      if (ret === ERR.OK || ret === ERR.PAUSED) {
        if (this.msgDone) {
          this.closedByUs = true;
          this.finishMessage(Buffer.alloc(0));
          this.socket.destroy();
          return;
        }
      }
    }
    if (h !== null && this.tunnel) {
      h.onTunnelData(this, Buffer.alloc(0));
      return;
    }
    this.socket.end();
  }
}

/** Idle connections to one endpoint. */
export class Pool {
  private readonly idle: Upstream[] = [];
  lastUsed = 0;
  /** Kept in its Pools' table (false once swept away, until put back). */
  live = true;
  /** How long an idle connection is kept; 0: the proxy's default. */
  idleMs = 0;

  constructor(
    readonly key: string,
    readonly maxIdle: number,
    private readonly owner: Pools | null = null,
    /** The mTLS identities it is for ('' plaintext): part of the key (see Pools.get). */
    readonly identity = '',
  ) {}

  get idleCount(): number {
    return this.idle.length;
  }

  /** The most recently used idle connection, or null. */
  take(now: number): Upstream | null {
    this.lastUsed = now;
    while (this.idle.length > 0) {
      const up = this.idle.pop() as Upstream;
      if (!up.socket.destroyed) return up;
    }
    return null;
  }

  release(up: Upstream, now: number): void {
    // A request that outlived the idle timeout may come back after its pool was swept away:
    // the connection goes to the pool now kept for its address (this one, put back if none).
    if (this.owner?.closed === true) {
      up.close();
      return;
    }
    const home = this.owner?.home(this) ?? this;
    if (home !== this) {
      up.pool = home;
      home.release(up, now);
      return;
    }
    this.lastUsed = now;
    if (this.idle.length >= this.maxIdle || up.socket.destroyed) {
      up.close();
      return;
    }
    up.handler = null;
    up.reused = true;
    up.idleSince = now;
    // The last response is complete, but the back-pressure of a slow client may have paused the
    // socket on the read that completed it, and that client's 'drain' may never come (it went
    // away): an idle connection reads, so that the next request on it gets its answer and a
    // server's close is seen.
    up.socket.resume();
    this.idle.push(up);
  }

  /** Closes the oldest idle connection, if there is one: true when it did. */
  evictOne(): boolean {
    const up = this.idle.shift();
    if (up === undefined) return false;
    up.close();
    return true;
  }

  forget(up: Upstream): void {
    const i = this.idle.indexOf(up);
    if (i >= 0) this.idle.splice(i, 1);
  }

  /** Closes idle connections older than `maxIdleMs` (all of them with 0); returns how many are left. */
  sweep(now: number, maxIdleMs: number): number {
    // Oldest first: the front of the array.
    while (this.idle.length > 0 && now - (this.idle[0] as Upstream).idleSince >= maxIdleMs) {
      (this.idle.shift() as Upstream).close();
    }
    return this.idle.length;
  }
}

/**
 * Pools by endpoint address. The table is keyed by `${address}:${port}` (and the mTLS identities),
 * so an endpoint replaced by another object with the same address (a re-registration, a new
 * snapshot) finds the same pool and its warm connections. That string is made once per endpoint
 * object, not per request: the pool an Endpoint object last got is kept beside it (`byEndpoint`,
 * weakly, as endpoints are frozen and come and go) and used while it is still in the table.
 */
export class Pools {
  private readonly pools = new Map<string, Pool>();
  private readonly byEndpoint = new WeakMap<Endpoint, Pool>();

  constructor(private readonly maxIdle: number) {}

  /** The pool of `e`'s address, for connections made as `identity` (mTLS) or plaintext (''). */
  get(e: Endpoint, identity = ''): Pool {
    const known = this.byEndpoint.get(e);
    if (known !== undefined && known.live && known.identity === identity) return known;
    const key = identity === '' ? `${e.address}:${e.port}` : `${e.address}:${e.port} ${identity}`;
    let p = this.pools.get(key);
    if (p === undefined) {
      p = new Pool(key, this.maxIdle, this, identity);
      this.pools.set(key, p);
    }
    this.byEndpoint.set(e, p);
    return p;
  }

  /** Whether `p` is the pool kept for its address (not swept away). */
  isLive(p: Pool): boolean {
    return p.live;
  }

  /** The pool kept for `p`'s address: `p` itself (put back if it was swept away) or a newer one. */
  home(p: Pool): Pool {
    if (p.live) return p;
    const cur = this.pools.get(p.key);
    if (cur !== undefined) return cur;
    this.pools.set(p.key, p);
    p.live = true;
    return p;
  }

  sweep(now: number, maxIdleMs: number): void {
    for (const [key, p] of this.pools) {
      const idle = p.idleMs > 0 ? p.idleMs : maxIdleMs;
      if (p.sweep(now, idle) === 0 && now - p.lastUsed > idle) {
        this.pools.delete(key);
        p.live = false;
      }
    }
  }

  idleConnections(): number {
    let n = 0;
    for (const p of this.pools.values()) n += p.idleCount;
    return n;
  }

  /** closeAll was called: connections released later are closed. */
  closed = false;

  closeAll(): void {
    this.closed = true;
    for (const p of this.pools.values()) {
      p.sweep(Number.POSITIVE_INFINITY, 0);
      p.live = false;
    }
    this.pools.clear();
  }
}
