/**
 * The TCP driver: one client connection of a tcp service's listener, carried to one endpoint as an
 * opaque stream. Nothing is read to detect a protocol: the client's socket stays paused until the
 * upstream connection is up, so a server that speaks first (MySQL, SMTP, Redis' replies to
 * nothing) reaches its client at once, and the client's early bytes wait in the kernel.
 *
 * The engine decides, one `Call` per connection (src/engine/call.ts):
 *
 *   accept -> [inbound: authorization by the caller's verified identity and port]
 *          -> admission (rate limit, fault abort or delay, limits.maxRequests: streams in flight)
 *          -> attempt: pick an endpoint, connect (the service's connection limits, its connect
 *             timeout; mTLS to a peer proxy's inbound listener as HTTP does, and then the peer's
 *             status: did its app take the connection? peer-status.ts)
 *             connect failed / timed out / mTLS refused / the peer's app unreachable -> the call
 *             retries on another endpoint (the failure is evidence for breakers and outlier
 *             detection), or fails
 *          -> established (`Call.established`): no retry from now on; bytes flow both ways with
 *             `pipe` (back-pressure each way), a FIN forwarded as a FIN (half-close), the service's
 *             `timeouts.tcpIdle` closing a stream with no byte either way
 *          -> closed: `responseComplete`, the stream's metrics, its access-log line and tap record.
 *
 * A failure has no response to carry it: its SKEIN_E_* code is logged and counted
 * (skein_proxy_tcp_connections_total, skein_proxy_errors_total), and the client's connection is
 * reset (an RST, so that a client never mistakes a refusal for a server that closed cleanly);
 * a peer proxy's client (mTLS) gets the refusal as its status instead.
 *
 * In the golden signals a stream is a request whose answer is its connection to the app: counted
 * when that is known (established: status 200; failed: its code's status, a failure; the client
 * left first: 0), its latency the time from accept to the app's connection.
 */
import { MESH_ALPN_STATUS } from '../../api/mtls.js';
import { plainAddress } from '../../core/address.js';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import type { HashInput } from '../../balance/hash-key.js';
import type { ErrorCode } from '../../core/errors.js';
import { ERROR_CODES } from '../../core/errors.js';
import { admit, callerOf, connectSettled, isRefusal, joinConnections, leaveConnections, reserveConnection, type ConnectionCount } from '../../engine/admission.js';
import { refusedByPeer } from '../../engine/answer.js';
import { authorize } from '../../engine/authorization.js';
import { Call, STREAM_ESTABLISHED, type Attempt, type CallDriver, type CallFailure } from '../../engine/call.js';
import type { Destination, Refusal } from '../../engine/service-client.js';
import { coarseNow } from '../http1/coarse-clock.js';
import type { RouteError } from '../http1/types.js';
import type { PeerIdentity } from '../tls/inbound.js';
import type { UpstreamTls } from '../../identity/mtls/outbound.js';
import { watchHandshake, type HandshakeWatch } from '../../identity/mtls/handshake.js';
import { handshakeRefusal } from '../../identity/mtls/refusal.js';
import { connectedStatus, PeerStatusReader, refusedStatus } from './peer-status.js';
import type { TcpContext, TcpSeries } from './types.js';

/** A client that does not close its side after the upstream closed is destroyed this long after. */
const LINGER_MS = 5000;


/** Resets a connection (an RST), or destroys it where the handle cannot reset (a TLS socket). */
function reset(s: Socket): void {
  if (s.destroyed) return;
  try {
    s.resetAndDestroy();
  } catch {
    s.destroy();
  }
}

/** ms to two decimals, as the access log writes them. */
const round = (ms: number) => Math.round(ms * 100) / 100;

function isRouteError(d: Destination | RouteError): d is RouteError {
  return (d as RouteError).error !== undefined;
}

/** One opaque stream: a client connection and, once established, its upstream connection. */
export class TcpStream implements CallDriver, HashInput {
  /** For the listener's connection cap and sweep (connection-cap.ts): a stream is never idle between requests. */
  readonly idle = false;
  readonly readingHead = false;
  readonly since = coarseNow();
  readonly sourceAddress: string;
  private readonly t0: number;
  private call: Call | null = null;
  private dest: Destination | null = null;
  /** The upstream connection being made (counted in the service's pending connections outbound). */
  private connecting: Socket | null = null;
  private up: Socket | null = null;
  /** The service's open-connection count, while `up` or `connecting` holds a place in it. */
  private counter: ConnectionCount = null;
  private series: TcpSeries | null = null;
  /** The stream's end: "established", or the code it failed with. */
  private result: 'established' | ErrorCode | null = null;
  private finished = false;
  /** Inbound from a peer proxy (mTLS): the stream starts with this proxy's status (peer-status.ts). */
  private readonly statusFirst: boolean;
  /** The calling service (outbound: this workload's; inbound: the peer's verified one, if any). */
  private readonly source: string | null;
  /** ms from accept to the app's connection (-1: none yet). */
  private connectMs = -1;
  /** The hop between proxies is mTLS (inbound: the client's connection; outbound: the upstream one). */
  private mtls: boolean;
  /** Counted in the golden signals (once, when its answer was known). */
  private recorded = false;
  private receivedBytes = 0;
  private sentBytes = 0;

  constructor(
    readonly socket: Socket,
    private readonly ctx: TcpContext,
    target: Destination | RouteError,
    private readonly peer: PeerIdentity | null,
    private readonly onClose: (s: TcpStream) => void,
  ) {
    this.t0 = ctx.clock.now();
    this.sourceAddress = plainAddress(socket.remoteAddress);
    // A peer proxy that negotiated the status (an older one, skein-mesh/1, reads none).
    this.statusFirst = ctx.direction === 'inbound' && peer !== null && (socket as TLSSocket).alpnProtocol === MESH_ALPN_STATUS;
    this.mtls = peer !== null;
    this.source = ctx.direction === 'outbound' ? ctx.callerService : (peer?.service ?? null);
    // Not a byte is read until the upstream is up (see the top of the file).
    socket.pause();
    socket.setNoDelay(true);
    socket.on('error', () => this.clientFailed());
    socket.on('close', () => this.clientClosed());
    if (isRouteError(target)) {
      this.refuse({ code: target.error, message: target.message }, null);
      return;
    }
    this.start(target);
  }

  header(): string | undefined {
    return undefined;
  }

  private start(dest: Destination): void {
    const ctx = this.ctx;
    this.dest = dest;
    this.series = ctx.tcp.tcpOpened(ctx.workload, ctx.direction, dest.service);
    if (ctx.draining) {
      this.refuse({ code: 'SKEIN_E_PROXY_DRAINING', message: 'the proxy is shutting down' }, dest);
      return;
    }
    const traffic = dest.traffic;
    // A stream has no method, path or headers: the service's default route applies.
    const route = traffic.routes.fallback;
    const peer = this.peer;
    if (ctx.authz !== null) {
      const port = this.socket.localPort ?? 0;
      const facts = { identity: peer?.identity ?? null, namespace: peer?.namespace ?? null, service: peer?.service ?? null, sourceAddress: this.sourceAddress, method: '', path: '', port, header: () => null };
      const audit = ctx.audit;
      const denied = authorize(
        ctx.authz,
        dest.service,
        () => facts,
        ctx.counters,
        audit === null
          ? null
          : (d) => audit.authz(d, () => ({ service: dest.service, sourceIdentity: peer?.identity ?? null, sourceAddress: this.sourceAddress, tls: peer === null ? 'plaintext' : 'mtls', port, method: '', rawPath: '', path: '', requestId: null })),
      );
      if (denied !== null) {
        this.refuse(denied, dest);
        return;
      }
    }
    const admitted = admit(traffic, route, ctx.direction, callerOf(ctx.direction, ctx.workload, peer?.service ?? null, this.sourceAddress), ctx.rng, ctx.counters);
    if (isRefusal(admitted)) {
      this.refuse(admitted, dest);
      return;
    }
    this.call = new Call(dest, { direction: ctx.direction, route, idempotent: true, hasBody: false, upgrade: false, timeoutMs: 0, delayMs: admitted.delayMs, hash: this, hop: null }, this, ctx.clock, ctx.counters, ctx.rng);
    this.call.start();
  }

  // ---- the call's decisions ----

  send(a: Attempt): Refusal | null {
    const ctx = this.ctx;
    const e = a.endpoint;
    const tls = ctx.upstreamTls(e);
    if (tls !== null && 'code' in tls) return tls;
    const traffic = (this.dest as Destination).traffic;
    const outbound = ctx.direction === 'outbound';
    let timeoutMs = ctx.limits.connectTimeoutMs;
    if (outbound) {
      const refused = reserveConnection(traffic);
      if (refused !== null) return refused;
      this.counter = joinConnections(traffic.connections);
      timeoutMs = traffic.policy.connectTimeoutMs;
    }
    // allowHalfOpen: a FIN from the endpoint leaves the other direction open (tls.connect passes it on; its types omit it).
    const s = tls === null ? connect({ host: e.address, port: e.port, noDelay: true, allowHalfOpen: true }) : tlsConnect({ host: e.address, port: e.port, ...tls.options(), allowHalfOpen: true } as ConnectionOptions);
    this.connecting = s;
    this.mtls = ctx.direction === 'inbound' ? this.mtls : tls !== null;
    this.watchConnect(s, tls, timeoutMs);
    return null;
  }

  /**
   * The connect (and mTLS handshake, and the peer proxy's status) of `s`, within `timeoutMs`: all
   * of it is the stream's connect, the peer's own connect to its app included.
   */
  private watchConnect(s: Socket, tls: UpstreamTls | null, timeoutMs: number): void {
    let hs: HandshakeWatch | null = null;
    let awaiting = false;
    s.setTimeout(timeoutMs);
    s.on('timeout', () => {
      if (this.connecting !== s) return;
      const what = awaiting ? "the inbound proxy's status (its connect to its app)" : hs?.handshaking === true ? 'TLS handshake' : 'connect';
      this.connectFailed(s, `${what} timeout after ${timeoutMs} ms`, false);
    });
    s.on('error', (err: Error & { code?: string }) => {
      if (this.connecting !== s) return;
      if (hs?.handshaking === true) {
        const r = handshakeRefusal(err);
        this.connectFailed(s, r.ok ? err.message : r.detail, true, r.ok ? undefined : r.reason);
        return;
      }
      this.connectFailed(s, err.message, false);
    });
    if (tls === null) {
      s.once('connect', () => this.ready(s));
      return;
    }
    hs = watchHandshake(s as TLSSocket, tls, (check) => {
      if (!check.ok) this.connectFailed(s, check.detail, true, check.reason);
      else if ((s as TLSSocket).alpnProtocol !== MESH_ALPN_STATUS) this.ready(s);
      else {
        awaiting = true;
        this.awaitStatus(s);
      }
    });
  }

  private connectFailed(s: Socket, reason: string, secure: boolean, tlsReason?: Parameters<TcpContext['counters']['tlsRefused']>[1]): void {
    const ctx = this.ctx;
    this.stopConnecting();
    s.destroy();
    ctx.counters.upstreamConnect(false);
    const call = this.call;
    if (call === null) return;
    const e = call.endpoint;
    if (tlsReason !== undefined && e !== null) {
      ctx.counters.tlsRefused('outbound', tlsReason, reason, e);
      ctx.audit?.tlsRefused('outbound', tlsReason, reason, `${e.address}:${e.port}`, e.service, e.port);
    }
    call.connectFailed(reason, secure);
  }

  /** The upstream connection is up (and its peer verified): the stream is established. */
  private ready(s: Socket): void {
    if (this.connecting !== s) return;
    if (this.finished || this.call === null || !this.call.connected()) {
      this.dropUpstream(s);
      return;
    }
    this.establish(s);
  }

  /**
   * An mTLS connection to a peer's inbound proxy is up: the request has left for the endpoint
   * (`connected`), and the stream is established once the peer says its app took it.
   */
  private awaitStatus(s: Socket): void {
    if (this.connecting !== s) return;
    if (this.finished || this.call === null || !this.call.connected()) {
      this.dropUpstream(s);
      return;
    }
    const reader = new PeerStatusReader();
    const onData = (b: Buffer) => {
      const st = reader.push(b);
      if (st.kind === 'more') return;
      s.off('data', onData);
      s.off('end', onEnd);
      s.pause();
      if (this.connecting !== s) return;
      const call = this.call as Call;
      if (st.kind === 'connected') {
        // The app's first bytes may have come with the status: they are the stream's.
        if (st.rest.length > 0) s.unshift(st.rest);
        this.establish(s);
        return;
      }
      this.stopConnecting();
      s.destroy();
      this.ctx.counters.upstreamConnect(false);
      const e = call.endpoint;
      if (st.kind === 'malformed') {
        call.reset('protocol', st.reason, false, false);
        return;
      }
      const at = e === null ? '' : `${e.id} at ${e.address}:${e.port}`;
      call.streamRefused(st.code, `the inbound proxy of ${at} refused the stream: ${st.message}`, refusedByPeer(e, 'inbound', st.code));
    };
    const onEnd = () => {
      if (this.connecting === s) this.connectFailed(s, 'the inbound proxy closed the connection before its status', false);
    };
    s.on('data', onData);
    s.once('end', onEnd);
  }

  private dropUpstream(s: Socket): void {
    this.doneConnecting();
    this.uncount();
    s.destroy();
  }

  /** The app took the connection: the stream is the call's answer, and bytes flow. */
  private establish(s: Socket): void {
    this.doneConnecting();
    s.setTimeout(0);
    this.ctx.counters.upstreamConnect(true);
    const call = this.call as Call;
    if (!call.established()) {
      this.uncount();
      s.destroy();
      return;
    }
    this.up = s;
    this.result = 'established';
    this.connectMs = this.ctx.clock.now() - this.t0;
    this.record(STREAM_ESTABLISHED, null);
    // A peer proxy's stream is told first that the app took it (peer-status.ts).
    if (this.statusFirst) this.socket.write(connectedStatus());
    this.pipe(s);
  }

  abandon(): void {
    const s = this.connecting;
    this.stopConnecting();
    s?.destroy();
  }

  fail(f: CallFailure): void {
    this.failWith(f.code, f.message, f.details);
  }

  // ---- the stream ----

  private pipe(up: Socket): void {
    const client = this.socket;
    const series = this.series as TcpSeries;
    client.on('data', (b: Buffer) => {
      this.receivedBytes += b.length;
      series.received(b.length);
    });
    up.on('data', (b: Buffer) => {
      this.sentBytes += b.length;
      series.sent(b.length);
    });
    // `pipe` pauses the reader while the writer's buffer is full, and ends the writer when the
    // reader ends: a FIN either way is forwarded, the other direction goes on (allowHalfOpen).
    client.pipe(up);
    up.pipe(client);
    up.on('error', () => {
      // A reset from the upstream is passed on as a reset.
      reset(client);
    });
    up.on('close', () => this.upstreamClosed());
    const idleMs = (this.dest as Destination).traffic.policy.tcpIdleTimeoutMs;
    // A socket's timeout counts reads and writes: the client's sees both directions of the stream.
    client.setTimeout(idleMs);
    client.on('timeout', () => {
      this.ctx.logger?.info({ workload: this.ctx.workload, direction: this.ctx.direction, service: this.dest?.service, idleMs }, 'tcp stream closed: no byte either way within timeouts.tcpIdle');
      up.destroy();
      client.destroy();
    });
    client.resume();
  }

  private upstreamClosed(): void {
    this.uncount();
    const client = this.socket;
    if (client.destroyed) return;
    // The app closed: the client gets the rest and a FIN; what it still sends goes nowhere.
    client.unpipe();
    client.end();
    client.on('data', () => undefined);
    const t = setTimeout(() => client.destroy(), LINGER_MS);
    t.unref();
  }

  // ---- the client ----

  private clientFailed(): void {
    // A client's reset: the upstream gets one too.
    const up = this.up;
    if (up !== null) reset(up);
    this.socket.destroy();
  }

  private clientClosed(): void {
    if (this.finished) return;
    this.finished = true;
    const up = this.up;
    if (up !== null && !up.destroyed) up.destroy();
    this.abandon();
    const call = this.call;
    if (call !== null) {
      if (this.result === 'established') call.responseComplete();
      else call.clientGone();
      call.dispose();
    }
    const ms = this.ctx.clock.now() - this.t0;
    this.series?.closed(this.result ?? 'established', ms / 1000);
    // The client left before the stream had an answer: no response.
    this.record(0, null);
    this.observeClose(ms);
    this.onClose(this);
  }

  /** Refused before any attempt (routing, authorization, admission). */
  private refuse(r: Refusal, dest: Destination | null): void {
    this.failWith(r.code, r.message, { ...(dest === null ? {} : { service: dest.service }), ...r.details });
  }

  /** The stream fails: logged, counted, and the client reset (a peer proxy is told why: its status). */
  private failWith(code: ErrorCode, message: string, details: Record<string, unknown> | undefined): void {
    const ctx = this.ctx;
    this.result = code;
    ctx.counters.proxyError(ctx.direction, code);
    ctx.logger?.warn({ workload: ctx.workload, direction: ctx.direction, client: this.sourceAddress, code, ...details }, message);
    this.record(ERROR_CODES[code].status, code);
    this.abandon();
    const client = this.socket;
    if (!this.statusFirst || client.destroyed) {
      reset(client);
      return;
    }
    client.end(refusedStatus(code, message));
    const t = setTimeout(() => client.destroy(), LINGER_MS);
    t.unref();
  }

  // ---- what is seen of the stream ----

  /** The golden signals (once): the stream's answer is its connection to the app (see the top). */
  private record(status: number, error: ErrorCode | null): void {
    if (this.recorded) return;
    this.recorded = true;
    const ctx = this.ctx;
    const e = this.call?.endpoint ?? null;
    const ms = this.connectMs >= 0 ? this.connectMs : ctx.clock.now() - this.t0;
    ctx.metrics?.record(this.source, this.dest?.service ?? null, this.dest === null ? null : this.dest.traffic.routes.fallback.name, e === null ? null : e.id, status, status === 0 || error !== null, ms / 1000, 0, 0, this.mtls, e === null ? null : e.version);
  }

  /** The stream closed: its access-log line and tap record. */
  private observeClose(ms: number): void {
    const ctx = this.ctx;
    const call = this.call;
    const e = call?.endpoint ?? null;
    const service = this.dest?.service ?? null;
    const route = this.dest === null ? null : this.dest.traffic.routes.fallback.name;
    const error = this.result === 'established' || this.result === null ? null : this.result;
    const status = this.result === 'established' ? STREAM_ESTABLISHED : error === null ? 0 : ERROR_CODES[error].status;
    const connectMs = this.connectMs < 0 ? null : round(this.connectMs);
    const tap = ctx.tap;
    if (tap !== null && tap.wants(this.source, service) !== 0) {
      tap.publish({
        time: Date.now(),
        direction: ctx.direction,
        workload: ctx.workload,
        source: this.source,
        destination: service,
        route,
        method: 'TCP',
        path: '',
        status,
        latencyMs: connectMs ?? round(ms),
        instance: e === null ? null : e.id,
        requestId: null,
        error,
        durationMs: round(ms),
        receivedBytes: this.receivedBytes,
        sentBytes: this.sentBytes,
      });
    }
    ctx.accessLog?.write({
      workload: ctx.workload,
      direction: ctx.direction,
      client: this.sourceAddress,
      caller: this.source,
      method: 'TCP',
      path: '',
      service,
      route,
      status,
      durationMs: round(ms),
      connectMs,
      upstream: e === null ? null : `${e.id} ${e.address}:${e.port}`,
      attempts: call?.attempts ?? 0,
      error,
      receivedBytes: this.receivedBytes,
      sentBytes: this.sentBytes,
    });
  }

  // ---- connection bookkeeping ----

  private doneConnecting(): void {
    if (this.connecting === null) return;
    this.connecting = null;
    if (this.ctx.direction === 'outbound') connectSettled((this.dest as Destination).traffic);
  }

  private stopConnecting(): void {
    if (this.connecting === null) return;
    this.doneConnecting();
    this.uncount();
  }

  private uncount(): void {
    this.counter = leaveConnections(this.counter);
  }

  // ---- what the listener does to its connections ----

  /** Draining: a stream has no request boundary to close at; it is destroyed when the grace ends. */
  close(): void {
    this.destroy();
  }

  destroy(): void {
    this.up?.destroy();
    this.socket.destroy();
  }

  headTimeout(): void {
    // Never reading a head.
  }
}

/**
 * Hands a client connection over to the TCP driver (CONNECT to a tcp service in the HTTP/1
 * driver): `socket` is connected, its CONNECT answered (`200`), `early` the bytes that came after
 * the CONNECT request (sent upstream first). Returns the stream; `onClose` runs when it is over.
 */
export function handOff(socket: Socket, ctx: TcpContext, target: Destination | RouteError, early: Buffer | null, onClose: (s: TcpStream) => void = () => undefined): TcpStream {
  // Paused first: bytes put back on a flowing socket are emitted at once, to its old listeners.
  socket.pause();
  if (early !== null && early.length > 0) socket.unshift(early);
  return new TcpStream(socket, ctx, target, null, onClose);
}
