/**
 * A mirrored copy's I/O over HTTP/2 (the engine's `Shadow` decides the rest: src/engine/mirror.ts):
 * one stream on a pooled session to the mirror endpoint, with the request's upstream headers, the
 * mirror's `:authority` and its own deadline (`grpc-timeout` too for gRPC), then the kept body;
 * the response is read to its end and dropped, its status (a gRPC call's grpc-status) reported.
 */
import http2, { type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { ConnectReservation, connectionRefusal } from '../../engine/admission.js';
import type { Shadow, ShadowDriver } from '../../engine/mirror.js';
import type { Refusal } from '../../engine/service-client.js';
import type { Endpoint } from '../../discovery/endpoint.js';
import { formatGrpcTimeout } from './grpc.js';
import type { UpSession } from './pool.js';
import type { H2Context } from './session.js';

const { NGHTTP2_CANCEL } = http2.constants;

/** One copy in flight over HTTP/2. */
export class H2Shadow implements ShadowDriver {
  private up: ClientHttp2Stream | null = null;
  private session: UpSession | null = null;
  private shadow: Shadow | null = null;
  /** The session this copy waits for, reserved (pending until it is up or failed). */
  private readonly reserved = new ConnectReservation();
  private status = 0;
  /** grpc-status (in the response head or its trailers); -1: none. */
  private grpcStatus = -1;

  constructor(
    private readonly ctx: H2Context,
    /** The request's upstream headers (copied: the copy's own are set on them). */
    private readonly headers: OutgoingHttpHeaders,
    private readonly grpc: boolean,
  ) {}

  send(s: Shadow, e: Endpoint): Refusal | null {
    const ctx = this.ctx;
    const tls = ctx.upstreamTls(e);
    if (tls !== null && 'code' in tls) return tls;
    const t = s.dest.traffic;
    let refusal: Refusal | null = null;
    const session = ctx.h2Pools.session(e, tls, () => (refusal = connectionRefusal(t)) === null, t.policy.connectTimeoutMs, t.connections, t.policy.idleTimeoutMs);
    if (session === null) return refusal;
    this.shadow = s;
    this.session = session;
    session.active++;
    if (session.ready) {
      this.open(session, s);
      return null;
    }
    // A session being made: pending for the service's limits, as the primary's wait is.
    const r = this.reserved.reserve(t);
    if (r !== null) {
      this.free();
      this.shadow = null;
      return r;
    }
    session.whenReady((err) => {
      this.reserved.settle();
      if (this.shadow === null) return;
      if (err === null) this.open(session, s);
      else this.over(false, true);
    });
    return null;
  }

  private open(session: UpSession, s: Shadow): void {
    const h: OutgoingHttpHeaders = { ...this.headers };
    h[':authority'] = s.authority(String(h[':authority'] ?? ''));
    h['x-skein-timeout-ms'] = String(s.timeoutMs);
    if (this.grpc) h['grpc-timeout'] = formatGrpcTimeout(s.timeoutMs);
    const body = s.body;
    let up: ClientHttp2Stream;
    try {
      up = session.session.request(h, { endStream: body.length === 0 });
    } catch {
      this.over(false);
      return;
    }
    this.up = up;
    up.on('response', (r: IncomingHttpHeaders) => {
      this.status = Number(r[':status']);
      this.readGrpc(r);
    });
    up.on('trailers', (t: IncomingHttpHeaders) => this.readGrpc(t));
    // Read to its end and dropped.
    up.on('data', () => undefined);
    up.on('error', () => undefined);
    up.on('close', () => this.over(this.status !== 0 && up.rstCode === http2.constants.NGHTTP2_NO_ERROR));
    if (body.length > 0) {
      for (const b of body) up.write(b);
      up.end();
    }
  }

  private readGrpc(h: IncomingHttpHeaders): void {
    const g = h['grpc-status'];
    if (g !== undefined) this.grpcStatus = Number(g);
  }

  abort(): boolean {
    const connecting = this.reserved.held;
    this.reserved.settle();
    const up = this.up;
    this.shadow = null;
    if (up !== null && !up.closed) up.close(NGHTTP2_CANCEL);
    this.free();
    return connecting;
  }

  /** The copy is over: answered, or failed (`connect`: its session never came up). */
  private over(answered: boolean, connect = false): void {
    const s = this.shadow;
    this.shadow = null;
    this.free();
    if (s === null) return;
    if (answered) s.answered(this.status, this.grpc ? this.grpcStatus : undefined);
    else s.failed(connect);
  }

  private free(): void {
    if (this.session !== null) this.session.active--;
    this.session = null;
    this.up = null;
  }
}
