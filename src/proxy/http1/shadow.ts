/**
 * A mirrored copy's I/O over HTTP/1.1 (the engine's `Shadow` decides the rest: src/engine/mirror.ts).
 * The copy is the request's upstream head with its Host given the mirror's suffix and its own
 * x-skein-timeout-ms, then its body as it came (chunked framing included); its response is
 * parsed to its end and dropped, and the connection goes back to the mirror endpoint's pool.
 */
import { ConnectReservation } from '../../engine/admission.js';
import type { Shadow, ShadowDriver } from '../../engine/mirror.js';
import type { Refusal } from '../../engine/service-client.js';
import type { Endpoint } from '../../discovery/endpoint.js';
import { coarseNow } from './coarse-clock.js';
import type { ListenerContext } from './types.js';
import { Upstream, type UpstreamHandler } from './upstream.js';

const HOST = 'host:';

/**
 * The copy's head from the request's upstream head (`open`: without its final CRLF): the Host
 * line's value given the mirror's suffix, `x-skein-timeout-ms` the copy's time, and the end.
 */
export function shadowHead(upstream: Buffer, open: boolean, s: Shadow): Buffer {
  const text = upstream.toString('latin1', 0, open ? upstream.length : upstream.length - 2);
  const lines = text.split('\r\n');
  // lines[0] is the request line; the last is "" (the head ends with CRLF).
  for (let i = 1; i < lines.length; i++) {
    const l = lines[i] as string;
    if (l.length >= HOST.length && l.slice(0, HOST.length).toLowerCase() === HOST) {
      lines[i] = `host: ${s.authority(l.slice(HOST.length).trim())}`;
      break;
    }
  }
  lines[lines.length - 1] = `x-skein-timeout-ms: ${s.timeoutMs}\r\n\r\n`;
  return Buffer.from(lines.join('\r\n'), 'latin1');
}

/** One copy in flight over HTTP/1.1. */
export class ShadowExchange implements ShadowDriver, UpstreamHandler {
  private up: Upstream | null = null;
  /** The new connection this copy reserved (pending until it is up or failed). */
  private readonly reserved = new ConnectReservation();
  private shadow: Shadow | null = null;
  /** The final response's status. */
  private status = 0;

  constructor(
    private readonly ctx: ListenerContext,
    private readonly head: Buffer,
    private readonly isHead: boolean,
  ) {}

  send(s: Shadow, e: Endpoint): Refusal | null {
    const ctx = this.ctx;
    const tls = ctx.upstreamTls(e);
    if (tls !== null && 'code' in tls) return tls;
    this.shadow = s;
    const pool = ctx.pools.get(e, tls?.poolKey);
    const idle = pool.take(coarseNow());
    if (idle !== null) {
      idle.handler = this;
      this.onUpstreamReady(idle);
      return null;
    }
    const t = s.dest.traffic;
    const refused = this.reserved.reserve(t);
    if (refused !== null) return refused;
    pool.idleMs = t.policy.idleTimeoutMs;
    this.up = new Upstream(e, pool, t.policy.connectTimeoutMs, this, t.connections, tls);
    return null;
  }

  abort(): boolean {
    const connecting = this.reserved.held;
    this.reserved.settle();
    const up = this.up;
    this.up = null;
    this.shadow = null;
    up?.close();
    return connecting;
  }

  onUpstreamReady(up: Upstream): void {
    this.reserved.settle();
    if (this.shadow === null) {
      up.pool.release(up, coarseNow());
      return;
    }
    if (!up.reused) this.ctx.counters.upstreamConnect(true);
    this.up = up;
    up.expect(this.isHead);
    const s = up.socket;
    s.cork();
    s.write(this.head);
    for (const b of this.shadow.body) s.write(b);
    s.uncork();
  }

  onResponseHead(_up: Upstream, _head: Buffer, status: number): void {
    if (status >= 200) this.status = status;
  }
  onResponseBody(): void {}
  onChunkDone(): void {}
  onTunnelData(): void {}

  onResponseComplete(up: Upstream, rest: Buffer): void {
    const s = this.shadow;
    this.shadow = null;
    this.up = null;
    if (rest.length === 0 && up.reusable) up.pool.release(up, coarseNow());
    else up.close();
    s?.answered(this.status);
  }

  onUpstreamError(up: Upstream, phase: 'connect' | 'exchange'): void {
    this.reserved.settle();
    if (phase === 'connect') this.ctx.counters.upstreamConnect(false);
    const s = this.shadow;
    this.shadow = null;
    this.up = null;
    up.close();
    s?.failed(phase === 'connect');
  }
}
