/**
 * A client's HTTP/2 connection (h2c with prior knowledge, or HTTP/2 inside the mesh's mTLS): one
 * server session, each stream one request (stream.ts: an engine Call each). The listener hands the
 * connection over after its first bytes were the client preface (preface.ts); the session reads
 * them again from the socket's buffer.
 *
 * The session guards itself against rapid reset (CVE-2023-44487): a client that resets more than
 * `maxResets` streams within `resetWindowMs` gets GOAWAY (ENHANCE_YOUR_CALM) and the connection
 * closes. This is the guard that trips (test/proxy-http2.test.ts asserts its GOAWAY code): Node's
 * behind it are a last line, both GOAWAY INTERNAL_ERROR: nghttp2's reset rate limit, five times
 * as lenient (pool.ts sessionOptions), and the refusal of streams beyond maxConcurrentStreams
 * that the JS side has not closed yet (the session ends after 100 refusals), which only an event
 * loop more than maxConcurrentStreams streams behind reaches first.
 * Errors of one request are answered on its stream: nothing else closes the session.
 */
import { plainAddress } from '../../core/address.js';
import http2, { type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { Http2Settings } from '../../api/http2.js';
import { coarseNow } from '../http1/coarse-clock.js';
import type { ListenerContext } from '../http1/types.js';
import type { PeerIdentity } from '../tls/inbound.js';
import { sessionOptions, type H2Pools } from './pool.js';
import { H2Exchange } from './stream.js';

/** What the HTTP/2 driver needs of its listener beyond the HTTP/1 forwarder's context. */
export interface H2Context extends ListenerContext {
  readonly h2: Http2Settings;
  readonly h2Pools: H2Pools;
}

const { NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_NO_ERROR, NGHTTP2_REFUSED_STREAM } = http2.constants;


export class H2Downstream {
  readonly session: ServerHttp2Session;
  readonly peer: string;
  /** coarseNow() when the connection last had no stream open (the listener's idle sweep). */
  since = coarseNow();
  /** The header timeout does not apply: a session with no stream is idle. */
  readonly readingHead = false;
  private open = 0;
  /** Rapid reset: GOAWAY sent, no stream is served any more. */
  private calmed = false;
  private resets = 0;
  private windowStart = 0;
  /** Streams reset by the client in all (for tests and the log). */
  resetTotal = 0;

  constructor(
    readonly socket: Socket,
    readonly ctx: H2Context,
    private readonly onClose: (c: H2Downstream) => void,
    /** Inbound over mTLS: the caller's verified identity; null: plaintext (or outbound). */
    readonly peerId: PeerIdentity | null,
    /** The bytes read so far (the preface, maybe more): the session reads them first. */
    first: Buffer,
  ) {
    this.peer = plainAddress(socket.remoteAddress);
    socket.pause();
    socket.unshift(first);
    const s = http2.performServerHandshake(socket, sessionOptions(ctx.h2));
    this.session = s;
    s.setLocalWindowSize(ctx.h2.sessionWindowBytes);
    s.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number) => this.onStream(stream, headers, flags));
    // An error of the session (Node's guards among them) ends it once its GOAWAY is out.
    s.on('error', () => {
      if (!s.closed) s.close();
      setTimeout(() => this.destroy(), 1000).unref();
    });
    s.on('close', () => this.onClose(this));
  }

  private onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number): void {
    if (this.calmed) {
      stream.on('error', () => undefined);
      stream.close(NGHTTP2_REFUSED_STREAM);
      return;
    }
    this.open++;
    new H2Exchange(this, stream, headers, flags).start();
  }

  /** A stream's exchange is over (once per stream). */
  streamDone(): void {
    this.open--;
    if (this.open === 0) this.since = coarseNow();
  }

  /** The client reset a stream before its answer: counted against the rapid-reset limit. */
  clientReset(code: number): void {
    if (code === NGHTTP2_NO_ERROR) return;
    this.resetTotal++;
    const now = this.ctx.clock.now();
    const h2 = this.ctx.h2;
    if (now - this.windowStart > h2.resetWindowMs) {
      this.windowStart = now;
      this.resets = 0;
    }
    if (++this.resets <= h2.maxResets) return;
    if (this.calmed || this.session.destroyed) return;
    this.calmed = true;
    this.ctx.counters.proxyError(this.ctx.direction, 'SKEIN_E_H2_RAPID_RESET');
    // GOAWAY with ENHANCE_YOUR_CALM; the connection closes once it is written (at the latest in 1 s).
    // Called from inside nghttp2's callbacks (a stream's 'aborted'): the session is closed after them.
    const s = this.session;
    s.goaway(NGHTTP2_ENHANCE_YOUR_CALM);
    setImmediate(() => s.close());
    setTimeout(() => this.destroy(), 1000).unref();
  }

  /** No stream open (safe to close while draining). */
  get idle(): boolean {
    return this.open === 0;
  }

  /** Graceful: GOAWAY, streams in flight finish. */
  close(): void {
    if (!this.session.closed) this.session.close();
  }

  destroy(): void {
    this.session.destroy();
    this.socket.destroy();
  }

  headTimeout(): void {
    // No head to wait for between streams (the session's own timeouts apply to frames).
  }
}
