/**
 * A listener of the proxy: outbound (routes by service) or inbound (to the local app), serving
 * HTTP/1, HTTP/2 (by the client preface) or, for a tcp workload, opaque TCP streams; its
 * connection cap, its drain, and the hand-off of CONNECT tunnels. The proxy (proxy.ts) owns the
 * listeners of its workloads and what they share (pools, metrics, certificates, the watch).
 */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Direction } from '../api/stats.js';
import type { HostPort } from '../core/address.js';
import { preciseClock, type Clock } from '../core/clock.js';
import type { Mirrors } from '../engine/mirror.js';
import type { Rng } from '../core/backoff.js';
import { SkeinError } from '../core/errors.js';
import { Downstream } from './http1/downstream.js';
import { errorResponse } from './http1/local-reply.js';
import { ConnectionCap, type CappedConnection } from './connection-cap.js';
import { H2Downstream, type H2Context } from './http2/session.js';
import { H2Pools } from './http2/pool.js';
import { PREFACE_FIRST, sniff } from './http2/preface.js';
import { type Http2Settings } from '../api/http2.js';
import type { Tracer } from '../engine/observe.js';
import { type Limits, type ListenerContext, type ListenerMetrics, type RouteError } from './http1/types.js';
import { type Destination } from '../engine/service-client.js';
import { TapHub } from '../telemetry/tap.js';
import { Pools } from './http1/upstream.js';
import { ProxyMetrics } from './metrics.js';
import type { AccessLog } from './access-log.js';
import { ProxyAudit } from '../telemetry/audit-log.js';
import { handOff, TcpStream } from './tcp/stream.js';
import type { TcpContext, TcpCounters } from './tcp/types.js';
import { ServiceAuthz } from '../engine/authorization.js';
import type { Endpoint } from '../discovery/endpoint.js';
import type { Refusal } from '../engine/service-client.js';
import type { InboundTlsServer, PeerIdentity } from './tls/inbound.js';
import type { UpstreamTls } from '../identity/mtls/outbound.js';
import type { Proxy } from './proxy.js';

/** A client connection of a listener, whatever its protocol (HTTP/1 Downstream, HTTP/2 H2Downstream, a TCP stream). */
interface ClientConnection extends CappedConnection {
  close(): void;
  headTimeout(): void;
}

/** A listener: outbound (routes by service) or inbound (to the local app); HTTP, or opaque TCP streams (`tcp`). */
export class Listener implements H2Context, TcpContext {
  readonly server: Server;
  readonly conns = new Set<ClientConnection>();
  /** Connections whose first bytes were part of the HTTP/2 preface, waiting for the rest (rare). */
  private readonly sniffing = new Set<Socket>();
  private readonly cap: ConnectionCap<ClientConnection>;
  /** Inbound with mTLS on: how a new connection is taken (null: plaintext as it comes). */
  private readonly tls: InboundTlsServer | null;
  readonly authz: ServiceAuthz | null;
  readonly claimedCallers: boolean;
  draining = false;
  /** Connections accepted since the listener started (refused ones too). */
  accepted = 0;
  private readonly destinations = new Map<string, Destination>();
  readonly metrics: ListenerMetrics | null;

  constructor(
    readonly proxy: Proxy,
    readonly workload: string,
    readonly callerService: string,
    readonly direction: Direction,
    readonly resolve: (authority: string | null) => Destination | RouteError,
    /** Whether a new connection is an opaque TCP stream (asked at accept: never by reading its bytes). */
    private readonly tcpNow: () => boolean = () => false,
    /** Outbound to one service whatever the request names (a service port): it takes no CONNECT. */
    private readonly pinned = false,
  ) {
    this.cap = new ConnectionCap(this.conns, () => proxy.limits.maxConnections, (state) => proxy.metrics.connectionEvicted(workload, direction, state));
    // No server.maxConnections: Node would drop a new connection at the cap unseen, where an idle
    // or half-sent one should make room for it (connection-cap.ts).
    this.server = createServer({ allowHalfOpen: true, noDelay: true }, (socket: Socket) => this.accept(socket));
    this.metrics = proxy.requestMetrics ? proxy.metrics.listener(workload, direction) : null;
    this.authz = direction === 'inbound' ? proxy.authzOf(callerService) : null;
    this.tls = direction === 'inbound' ? proxy.inboundTlsServer(callerService, (s, peer) => this.serve(s, peer)) : null;
    this.claimedCallers = direction === 'inbound' && this.tls === null;
  }

  private accept(socket: Socket): void {
    this.accepted++;
    if (this.draining) {
      socket.destroy();
      return;
    }
    if (!this.cap.admit()) {
      const max = this.proxy.limits.maxConnections;
      this.proxy.metrics.proxyError(this.direction, 'SKEIN_E_CONNECTION_LIMIT');
      const message = `the ${this.direction} listener of ${this.workload} has ${max} connections (limits.maxConnections), every one busy with a request`;
      if (this.tcpNow()) {
        // A stream has no response to carry the error: logged, and the client reset.
        this.proxy.logger?.warn({ workload: this.workload, direction: this.direction, code: 'SKEIN_E_CONNECTION_LIMIT' }, message);
        socket.resetAndDestroy();
        return;
      }
      this.cap.refuse(socket, errorResponse('SKEIN_E_CONNECTION_LIMIT', message, { close: true, origin: this.direction }));
      return;
    }
    if (this.tls === null) this.serve(socket, null);
    else this.tls.accept(socket);
  }

  /**
   * Serves a connection ready for HTTP (plaintext, or after the mTLS handshake; later a CONNECT
   * tunnel): HTTP/1 (Downstream), or HTTP/2 when its first bytes are the client preface.
   */
  serve(socket: Socket, peer: PeerIdentity | null): void {
    if (this.draining) {
      socket.destroy();
      return;
    }
    if (this.tcpNow()) {
      this.conns.add(new TcpStream(socket, this, this.resolve(null), peer, this.closed));
      return;
    }
    this.conns.add(new Downstream(socket, this, this.closed, peer, this.sniffH2));
  }

  private readonly closed = (c: ClientConnection): void => {
    this.conns.delete(c);
    this.cap.closed(c);
  };

  /** The first chunk of a connection: one byte compared, the rest only when it is 'P'; true when HTTP/2 took it. */
  private readonly sniffH2 = (d: Downstream, first: Buffer): boolean => {
    if (first[0] !== PREFACE_FIRST) return false;
    const kind = sniff(first);
    if (kind === 'http1') return false;
    d.release();
    this.closed(d);
    if (kind === 'h2') this.serveH2(d.socket, d.peerId, first);
    else this.awaitPreface(d.socket, d.peerId, first);
    return true;
  };

  private serveH2(socket: Socket, peer: PeerIdentity | null, first: Buffer): void {
    this.conns.add(new H2Downstream(socket, this, this.closed, peer, first));
  }

  /** The first bytes were a part of the preface: the rest decides (rare: a preface split over reads). */
  private awaitPreface(socket: Socket, peer: PeerIdentity | null, first: Buffer): void {
    let got = first;
    // Not a connection of the set until it is one: the head timeout and a drain end the wait.
    this.sniffing.add(socket);
    const timer = setTimeout(() => socket.destroy(), this.proxy.limits.headersTimeoutMs);
    const settle = () => {
      clearTimeout(timer);
      this.sniffing.delete(socket);
      socket.off('data', onData);
      socket.off('close', settle);
    };
    const onData = (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      const kind = sniff(got);
      if (kind === 'more') return;
      settle();
      if (this.draining) {
        socket.destroy();
        return;
      }
      if (kind === 'h2') {
        this.serveH2(socket, peer, got);
        return;
      }
      socket.pause();
      socket.unshift(got);
      this.conns.add(new Downstream(socket, this, this.closed, peer, null));
      socket.resume();
    };
    socket.on('data', onData);
    socket.on('close', settle);
  }

  /**
   * Outbound: a CONNECT tunnel to a mesh service (grpc-js and other clients behind HTTP_PROXY)
   * is served like a new connection of the listener: HTTP/1 or HTTP/2 by its first bytes, each
   * request routed by its own authority. The one hand-off for tunnels: a tcp service's tunnel can
   * be routed to another driver here.
   */
  get tunnel(): ListenerContext['tunnel'] {
    return this.direction === 'outbound' && !this.pinned ? this.serveTunnel : null;
  }

  private readonly serveTunnel = (socket: Socket, peer: PeerIdentity | null, rest: Buffer, dest: Destination): void => {
    // A tcp service's tunnel is one opaque stream to it (never read to detect a protocol).
    if (this.proxy.isTcpService(dest.service)) {
      this.conns.add(handOff(socket, this, dest, rest, this.closed));
      return;
    }
    if (rest.length === 0) {
      this.serve(socket, peer);
      return;
    }
    socket.pause();
    socket.unshift(rest);
    this.serve(socket, peer);
    socket.resume();
  };

  get h2(): Http2Settings {
    return this.proxy.http2;
  }
  get h2Pools(): H2Pools {
    return this.proxy.h2Pools;
  }

  upstreamTls(e: Endpoint): UpstreamTls | Refusal | null {
    return this.direction === 'outbound' ? this.proxy.upstreamTls(this.callerService, e) : null;
  }

  get tap(): TapHub {
    return this.proxy.tap;
  }
  get tracer(): Tracer | null {
    return this.proxy.tracer;
  }
  get mirrors(): Mirrors {
    return this.proxy.mirrors;
  }
  get clock(): Clock {
    return preciseClock;
  }
  get rng(): Rng {
    return this.proxy.rng;
  }
  get tcp(): TcpCounters {
    return this.proxy.metrics;
  }
  get logger(): Logger | undefined {
    return this.proxy.logger;
  }

  get limits(): Limits {
    return this.proxy.limits;
  }
  get pools(): Pools {
    return this.proxy.pools;
  }
  get counters(): ProxyMetrics {
    return this.proxy.metrics;
  }
  get accessLog(): AccessLog | null {
    return this.proxy.accessLog;
  }
  get audit(): ProxyAudit | null {
    return this.proxy.audit;
  }

  destination(service: string, make: () => Destination): Destination {
    let d = this.destinations.get(service);
    if (d === undefined) {
      d = make();
      this.destinations.set(service, d);
    }
    return d;
  }

  allDestinations(): Iterable<Destination> {
    return this.destinations.values();
  }

  listen(at: HostPort): Promise<string> {
    return new Promise((resolve, reject) => {
      const onError = (e: NodeJS.ErrnoException) =>
        reject(new SkeinError('SKEIN_E_ADDRESS_IN_USE', `${this.workload} ${this.direction} listener: cannot listen on ${at.host}:${at.port}: ${e.code ?? e.message}`, { field: this.direction }));
      this.server.once('error', onError);
      this.server.listen({ host: at.host, port: at.port, reusePort: this.proxy.reusePort }, () => {
        this.server.off('error', onError);
        const a = this.server.address() as AddressInfo;
        resolve(`${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}`);
      });
    });
  }

  /** Stop accepting, let requests in flight finish (up to `graceMs`), then close everything. */
  async drain(graceMs: number): Promise<void> {
    this.draining = true;
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    for (const s of this.sniffing) s.destroy();
    for (const c of this.conns) if (c.idle) c.close();
    const deadline = performance.now() + graceMs;
    while (this.conns.size > 0 && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
      for (const c of this.conns) if (c.idle) c.close();
    }
    for (const c of this.conns) c.destroy();
    await closed;
  }

  sweep(now: number): void {
    const l = this.proxy.limits;
    for (const c of this.conns) {
      if (c.readingHead && now - c.since > l.headersTimeoutMs) c.headTimeout();
      else if (c.idle && now - c.since > l.idleTimeoutMs) c.close();
    }
  }
}
