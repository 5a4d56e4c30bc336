/**
 * Upstream connections and their pools. An `Upstream` is one keep-alive connection to one
 * endpoint with its own response parser; while it carries a request it belongs to that request's
 * `Exchange` (see exchange.ts), and in between it waits in its endpoint's `Pool` (last in, first
 * out, so the fewest connections stay warm and the rest age out). One file (~600 lines): the
 * connection, its parser's callbacks and the pool that hands it out share its states.
 */
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { TlsRefusal } from '../../api/mtls.js';
import type { Endpoint } from '../../discovery/endpoint.js';
import { joinConnections, leaveConnections } from '../../engine/admission.js';
import { handshakeRefusal } from '../../identity/mtls/refusal.js';
import type { UpstreamTls } from '../../identity/mtls/outbound.js';
import { watchHandshake, type HandshakeWatch } from '../../identity/mtls/handshake.js';
import { ERR, HttpParser, ParserType } from './llhttp.js';
import { HeadCallbacks } from './head.js';
import { scanResponseHead } from './response-head.js';

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

const EMPTY = Buffer.alloc(0);
const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');
/** A read longer than this has its head found before llhttp parses it (see ResponseReader.feed). */
const HEAD_PROBE_BYTES = 4096;

/**
 * The response side of a connection: llhttp frames every response, with two shortcuts (issue 16;
 * docs/benchmarks.md, "Upstream parsing and pools"):
 * - llhttp's header spans are ignored: once it has validated a head, `scanResponseHead` fills the
 *   header table in one pass, which also finds the Content-Length;
 * - a body framed by Content-Length is counted here instead of passing through llhttp: the parser
 *   stops at the end of the head and is reset for the next message once the body's last byte has
 *   come. llhttp still decides every head (and so whether the length is valid); chunked bodies,
 *   bodies that end with the connection, 1xx, 204, 304, the responses to HEAD and 101 go through
 *   llhttp as before.
 * response-parse.test.ts feeds random and adversarial response streams to this and to plain llhttp
 * and checks that they agree. `Upstream` adds the connection; the methods it implements report to
 * the exchange.
 */
export abstract class ResponseReader extends HeadCallbacks {
  readonly parser: HttpParser = new HttpParser(ParserType.Response, this);
  /** Response to a HEAD request: tell the parser there is no body. */
  skipBody = false;
  /** Raw forwarding of body bytes is off; onBody decodes chunked framing instead (HTTP/1.0 clients). */
  decodeBody = false;
  tunnel = false;
  protected headDone = false;
  protected msgDone = false;
  private status = 0;
  private cur: Buffer | null = null;
  /** Bytes still to come of a body counted here (Content-Length); -1: llhttp frames the body, if any. */
  private left = -1;
  /** llhttp's keep-alive verdict at the head (the parser is reset after a counted body). */
  private headKeepAlive = false;
  /** The last final response's body was counted here. */
  private counted = false;

  /** Someone still listens (the connection is not closed): stop parsing when not. */
  protected abstract listening(): boolean;
  /** A response head; see UpstreamHandler.onResponseHead. */
  protected abstract gotHead(head: Buffer, status: number): void;
  protected abstract gotBody(data: Buffer): void;
  protected abstract gotChunkDone(): void;
  protected abstract gotComplete(rest: Buffer): void;
  /** The response is malformed (`reason` says how): the connection is given up. */
  protected abstract malformed(reason: string): void;

  /** Starts listening for a new response (the previous one is done). */
  expect(skipBody: boolean): void {
    this.skipBody = skipBody;
    this.decodeBody = false;
    this.headDone = false;
    this.msgDone = false;
    this.counted = false;
  }

  // ---- parser callbacks ----

  // The header spans are ignored: scanResponseHead fills the head's table once llhttp has validated it.
  override onHeaderField(): number {
    return 0;
  }
  override onHeaderValue(): number {
    return 0;
  }

  onHeadersComplete(status: number, _upgrade: boolean, keepAlive: boolean): number {
    this.headDone = true;
    this.status = status;
    this.headKeepAlive = keepAlive;
    // A response to HEAD has no body whatever its headers say; 1xx / 204 / 304 llhttp knows.
    return this.skipBody ? 1 : ERR.PAUSED;
  }
  onBody(s: number, e: number): number {
    if (this.decodeBody && this.cur !== null && this.listening()) this.gotBody(this.cur.subarray(s, e));
    return 0;
  }
  onMessageComplete(): number {
    this.msgDone = true;
    return ERR.PAUSED;
  }

  /** Parses response bytes; loops because one chunk may hold an interim 1xx and the final head. */
  feed(data: Buffer): void {
    for (;;) {
      if (!this.listening()) return;
      if (this.left >= 0) {
        this.count(data);
        return;
      }
      if (!this.headDone) {
        const rest = this.readHead(data);
        if (rest === null) return;
        data = rest;
        if (this.left >= 0) continue;
      }
      this.cur = data;
      const ret = this.parser.execute(data);
      this.cur = null;
      if (!this.listening()) return;
      if (ret === ERR.OK) {
        if (!this.decodeBody && data.length > 0) this.gotBody(data);
        if (this.listening()) this.gotChunkDone();
        return;
      }
      if ((ret === ERR.PAUSED || ret === ERR.PAUSED_UPGRADE) && this.msgDone) {
        const off = this.parser.errorOffset;
        if (!this.decodeBody && off > 0) this.gotBody(data.subarray(0, off));
        data = off === data.length ? EMPTY : data.subarray(off);
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
      this.malformed(`malformed response: ${this.parser.reason()}`);
      return;
    }
  }

  /**
   * The head part of `feed`: the bytes after the head, with the parser resumed unless the body is
   * counted here; null when this read is done with (the head goes on in the next one, the response
   * ended with its head, or it was refused).
   */
  private readHead(data: Buffer): Buffer | null {
    for (;;) {
      // llhttp gets a copy of what it parses: of a long read, only up to the first empty line
      // (the end of a well-formed head; a read that starts with empty lines, which llhttp skips
      // before a message, is given whole), so that a body that came with its head is not copied.
      // Where llhttp stops is what counts: a shorter input is the same as a read split there.
      let input = data;
      if (data.length > HEAD_PROBE_BYTES && data[0] !== 13 && data[0] !== 10) {
        const blank = data.indexOf(CRLFCRLF);
        if (blank >= 0) input = data.subarray(0, blank + 4);
      }
      const ret = this.parser.execute(input);
      if (ret === ERR.OK) {
        this.head.consumed(input);
        if (this.head.base > 64 * 1024) this.malformed('upstream response head too large');
        if (input === data || !this.listening()) return null;
        // The head goes on (a read that began inside it): the rest of the read.
        data = data.subarray(input.length);
        continue;
      }
      if ((ret !== ERR.PAUSED && ret !== ERR.PAUSED_UPGRADE) || !this.headDone) {
        this.malformed(`malformed response: ${this.parser.reason()}`);
        return null;
      }
      const end = this.parser.errorOffset;
      const head = this.head.complete(data, end);
      const length = scanResponseHead(head, this.head);
      if (this.head.overflow) {
        this.malformed('upstream response head too large');
        return null;
      }
      const status = this.status;
      // A body llhttp would frame by this length: counted here (see the class's comment).
      if (length >= 0 && !this.msgDone && status >= 200 && status !== 204 && status !== 304) {
        this.left = length;
        this.counted = true;
      }
      this.gotHead(head, status);
      const rest = end === data.length ? EMPTY : data.subarray(end);
      if (this.msgDone) {
        // No body (HEAD): the message ended with its head.
        this.finishMessage(rest);
        return null;
      }
      if (this.left < 0) this.parser.resume();
      return this.listening() ? rest : null;
    }
  }

  /** Body bytes of a counted body (`left` of them still to come). */
  private count(data: Buffer): void {
    const left = this.left;
    const n = data.length;
    if (n < left) {
      this.left = left - n;
      if (n > 0) this.gotBody(data);
      if (this.listening()) this.gotChunkDone();
      return;
    }
    // The body ends in this chunk: the parser starts over for the next message.
    this.left = -1;
    this.parser.reset();
    this.msgDone = true;
    if (n === left) {
      if (n > 0) this.gotBody(data);
      this.finishMessage(EMPTY);
      return;
    }
    if (left > 0) this.gotBody(data.subarray(0, left));
    this.finishMessage(data.subarray(left));
  }

  protected finishMessage(rest: Buffer): void {
    if (!this.listening()) return;
    if (this.status === 101) {
      this.tunnel = true;
      this.gotComplete(rest);
      return;
    }
    this.parser.resume();
    this.gotComplete(rest);
  }

  /** Whether llhttp lets the connection carry another response after this one (version, Connection). */
  get keepAlive(): boolean {
    return this.counted ? this.headKeepAlive : this.parser.keepAlive;
  }

  /** Whether the response's body runs until the connection closes (no length, not chunked). */
  get needsEof(): boolean {
    return this.left >= 0 ? false : this.parser.needsEof;
  }

  /**
   * The stream ended: true when that completes the response (a body delimited by the close);
   * `finishMessage` is then the caller's to call. False for a response cut short.
   */
  protected endCompletes(): boolean {
    if (!this.headDone || this.msgDone || this.tunnel || this.left >= 0) return false;
    const ret = this.parser.finish();
    return (ret === ERR.OK || ret === ERR.PAUSED) && this.msgDone;
  }

  /** The parser's memory goes back (the connection is closed). */
  protected release(): void {
    this.parser.destroy();
  }
}

export class Upstream extends ResponseReader {
  readonly socket: Socket;
  handler: UpstreamHandler | null = null;
  connected = false;
  /** Has served at least one exchange before the current one (a stale connection is possible). */
  reused = false;
  idleSince = 0;
  /** An mTLS connection to a peer proxy. */
  readonly secure: boolean;
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
    this.counter = joinConnections(counter);
    this.handler = handler;
    this.secure = tls !== null;
    const socket = tls === null ? connect({ host: endpoint.address, port: endpoint.port, noDelay: true }) : tlsConnect({ host: endpoint.address, port: endpoint.port, ...tls.options() });
    this.socket = socket;
    socket.setTimeout(connectTimeoutMs);
    let hs: HandshakeWatch | null = null;
    if (tls === null) socket.once('connect', () => this.ready());
    else {
      hs = watchHandshake(socket as TLSSocket, tls, (check) => {
        if (!check.ok) this.fail('connect', new TlsRefused(check.reason, check.detail), 'tls');
        else this.ready();
      });
    }
    socket.on('timeout', () => {
      if (!this.connected) this.fail('connect', new Error(`${hs?.handshaking === true ? 'TLS handshake' : 'connect'} timeout after ${connectTimeoutMs} ms`), 'timeout');
    });
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.onEnd());
    socket.on('error', (err: Error & { code?: string }) => {
      if (hs?.handshaking === true) {
        const r = handshakeRefusal(err);
        if (!r.ok) this.fail('connect', new TlsRefused(r.reason, r.detail), 'tls');
        return;
      }
      this.fail(this.connected ? 'exchange' : 'connect', err, this.connected ? 'reset' : 'connect');
    });
    socket.on('close', () => {
      this.uncount();
      this.pool.forget(this);
      this.release();
      if (!this.closedByUs) this.fail('exchange', new Error('upstream closed the connection'), 'reset');
    });
  }

  private ready(): void {
    this.socket.setTimeout(0);
    this.connected = true;
    this.handler?.onUpstreamReady(this);
  }

  /** Leaves its service's connection count (once: when closed by us, or when the socket closes). */
  private uncount(): void {
    this.counter = leaveConnections(this.counter);
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

  // ---- what the reader reports, to the exchange ----

  protected listening(): boolean {
    return this.handler !== null;
  }
  protected gotHead(head: Buffer, status: number): void {
    this.handler?.onResponseHead(this, head, status);
  }
  protected gotBody(data: Buffer): void {
    this.handler?.onResponseBody(this, data);
  }
  protected gotChunkDone(): void {
    this.handler?.onChunkDone();
  }
  protected gotComplete(rest: Buffer): void {
    this.handler?.onResponseComplete(this, rest);
  }
  protected malformed(reason: string): void {
    this.fail('exchange', new Error(reason), 'protocol');
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

  /** Whether the connection can carry another request after this response. */
  get reusable(): boolean {
    return !this.tunnel && this.keepAlive && !this.socket.destroyed;
  }

  private onEnd(): void {
    const h = this.handler;
    if (h !== null && this.endCompletes()) {
      // A body delimited by the end of the connection: the end completes it.
      this.closedByUs = true;
      this.finishMessage(EMPTY);
      this.socket.destroy();
      return;
    }
    if (h !== null && this.tunnel) {
      h.onTunnelData(this, EMPTY);
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
