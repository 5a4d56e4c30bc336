/**
 * Upstream HTTP/2 sessions, pooled per endpoint (its address, and the mTLS identities of the
 * connection: see UpstreamTls.poolKey). A stream takes the first session of its endpoint with
 * room for one more (the peer's SETTINGS_MAX_CONCURRENT_STREAMS), else a new session is opened.
 * A session that got GOAWAY, failed or closed leaves the pool at once (its streams in flight
 * finish on it); the next stream opens a new one. A session with no stream for the idle timeout
 * is closed.
 *
 * Over mTLS the session runs on a TLS connection made as for HTTP/1 (the mesh's ALPN, the
 * caller's certificate, the peer's identity checked before the first stream): the peer's inbound
 * listener tells HTTP/2 from HTTP/1 by the client preface after the handshake, like on a
 * plaintext port.
 */
import http2, { type ClientHttp2Session } from 'node:http2';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { Http2Settings } from '../../api/http2.js';
import type { Endpoint } from '../../discovery/endpoint.js';
import { MAX_HEADERS } from '../http1/head.js';
import { TlsRefused } from '../http1/upstream.js';
import type { UpstreamTls } from '../../identity/mtls/outbound.js';

/** The Node options of a session (client or server) from the settings. */
export function sessionOptions(s: Http2Settings) {
  return {
    settings: { maxConcurrentStreams: s.maxConcurrentStreams, initialWindowSize: s.streamWindowBytes, maxHeaderListSize: s.maxHeaderListBytes, enablePush: false },
    maxSessionMemory: s.maxSessionMemoryMb,
    // The HTTP/1 listener's header count limit, for HTTP/2's header lists too.
    maxHeaderListPairs: MAX_HEADERS,
    // Node's own rapid-reset guard (nghttp2's: GOAWAY INTERNAL_ERROR) is the last line behind the
    // driver's count, which names the error (ENHANCE_YOUR_CALM, SKEIN_E_H2_RAPID_RESET): 1,000
    // resets, five times as lenient at the default.
    streamResetBurst: 1000,
    streamResetRate: Math.max(1, Math.round((s.maxResets * 5000) / s.resetWindowMs)),
  };
}

type ReadyFn = (err: Error | null) => void;

/** One upstream session. */
export class UpSession {
  readonly session: ClientHttp2Session;
  /** Connected (and over mTLS: the peer checked). */
  ready = false;
  /** Out of the pool: no new streams (GOAWAY, an error, closed). */
  retired = false;
  /** Streams open on it (counted by the driver). */
  active = 0;
  /** It has carried a stream before (a failure on it may be staleness). */
  used = false;
  readonly secure: boolean;
  private waiters: ReadyFn[] = [];
  private failure: Error | null = null;
  private timer: NodeJS.Timeout | null;

  constructor(
    readonly endpoint: Endpoint,
    private readonly pool: H2Pools,
    readonly key: string,
    tls: UpstreamTls | null,
    connectTimeoutMs: number,
    private counter: { open: number } | null,
    idleMs: number,
  ) {
    this.secure = tls !== null;
    const settings = pool.settings;
    let tlsSocket: TLSSocket | null = null;
    const opts = {
      ...sessionOptions(settings),
      ...(tls === null
        ? {}
        : {
            createConnection: () => {
              const s = tlsConnect({ host: endpoint.address, port: endpoint.port, ...tls.options() });
              s.on('session', (b: Buffer) => tls.remember(b));
              tlsSocket = s;
              return s;
            },
          }),
    };
    this.session = http2.connect(`http://${endpoint.address.includes(':') ? `[${endpoint.address}]` : endpoint.address}:${endpoint.port}`, opts);
    if (counter !== null) counter.open++;
    const s = this.session;
    this.timer = setTimeout(() => this.fail(new Error(`${tls === null ? 'connect' : 'connect or TLS handshake'} timeout after ${connectTimeoutMs} ms`)), connectTimeoutMs);
    s.once('connect', () => {
      this.clearTimer();
      if (tls !== null && tlsSocket !== null) {
        const check = tls.verify(tlsSocket);
        if (!check.ok) {
          this.fail(new TlsRefused(check.reason, check.detail));
          return;
        }
      }
      s.setLocalWindowSize(settings.sessionWindowBytes);
      this.ready = true;
      this.flush(null);
    });
    s.on('error', (e: Error) => this.fail(e));
    s.on('goaway', () => this.retire());
    s.on('close', () => {
      this.fail(new Error('the session closed'));
      const c = this.counter;
      this.counter = null;
      if (c !== null) c.open--;
    });
    s.setTimeout(idleMs, () => {
      if (this.active === 0) {
        this.retire();
        s.close();
      }
    });
    s.unref();
  }

  /** Calls `fn` once the session is ready (at once if it is), or with the error it failed with. */
  whenReady(fn: ReadyFn): void {
    if (this.ready) fn(null);
    else if (this.failure !== null) fn(this.failure);
    else this.waiters.push(fn);
  }

  /** Room for one more stream. */
  get hasRoom(): boolean {
    if (this.retired || this.session.destroyed || this.session.closed) return false;
    const max = this.ready ? (this.session.remoteSettings.maxConcurrentStreams ?? this.pool.settings.maxConcurrentStreams) : this.pool.settings.maxConcurrentStreams;
    return this.active < max;
  }

  private clearTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private retire(): void {
    if (this.retired) return;
    this.retired = true;
    this.pool.remove(this);
  }

  private fail(e: Error): void {
    this.clearTimer();
    this.retire();
    if (this.failure === null && !this.ready) this.failure = e;
    if (!this.session.destroyed) this.session.destroy();
    this.flush(this.failure ?? e);
  }

  private flush(err: Error | null): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn(err);
  }
}

export class H2Pools {
  private readonly byKey = new Map<string, UpSession[]>();

  constructor(readonly settings: Http2Settings) {}

  /**
   * A session to `e` with room for a stream: a pooled one (`fresh` false), or a new one when
   * none has room and `mayOpen` allows it (it is asked only then: the service's connection
   * limits). Null: a new one was needed and `mayOpen` said no.
   */
  session(e: Endpoint, tls: UpstreamTls | null, mayOpen: () => boolean, connectTimeoutMs: number, counter: { open: number } | null, idleMs: number): UpSession | null {
    const key = `${e.address}:${e.port} ${tls?.poolKey ?? ''}`;
    const list = this.byKey.get(key);
    if (list !== undefined) for (const s of list) if (s.hasRoom) return s;
    if (!mayOpen()) return null;
    const s = new UpSession(e, this, key, tls, connectTimeoutMs, counter, idleMs);
    if (list === undefined) this.byKey.set(key, [s]);
    else list.push(s);
    return s;
  }

  remove(s: UpSession): void {
    const list = this.byKey.get(s.key);
    if (list === undefined) return;
    const i = list.indexOf(s);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.byKey.delete(s.key);
  }

  /** Sessions open now (pooled). */
  get size(): number {
    let n = 0;
    for (const l of this.byKey.values()) n += l.length;
    return n;
  }

  closeAll(): void {
    for (const l of [...this.byKey.values()]) for (const s of [...l]) s.session.destroy();
    this.byKey.clear();
  }
}
