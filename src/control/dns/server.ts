/**
 * The control plane's DNS server: authoritative for `<domain>` (default `skein`), answering A,
 * AAAA and SRV for healthy instances over UDP and TCP on one port. Never recursive, never
 * forwarding: names outside the zone get REFUSED. The answering itself is the Responder's
 * (responder.ts); this file owns sockets, lifecycle and metrics.
 */
import { createSocket, type Socket as UdpSocket, type RemoteInfo } from 'node:dgram';
import { createServer, isIP, type Server as TcpServer, type Socket as TcpSocket } from 'node:net';
import { Counter, type Registry as PromRegistry } from 'prom-client';
import { SkeinError } from '../../core/errors.js';
import type { Registry } from '../registry/registry.js';
import { Responder, type Transport } from './responder.js';
import { RCODE_NAMES } from './wire.js';
import { Zone } from './zone.js';

export interface DnsServerOptions {
  registry: Registry;
  /** The zone, e.g. `skein` or `mesh.internal`. Default `skein`. */
  domain?: string;
  /** Default 127.0.0.1. */
  host?: string;
  /** UDP and TCP both; 0 lets the OS pick (one port for both). Default 8600. */
  port?: number;
  /** TTL of every record, and the negative-caching TTL. Default 5. */
  ttlSeconds?: number;
  /** Where the skein_dns_* metrics go (registered once: one DnsServer per prom-client registry). */
  metrics?: PromRegistry;
  logger?: { warn(obj: object, msg: string): void };
  /** A TCP connection idle (nothing read or written) this long is closed. Default 10 s. */
  tcpIdleTimeoutMs?: number;
  /** Concurrent TCP connections; more are closed as they arrive. Default 1,000. */
  maxTcpConnections?: number;
}

/** A query longer than this on TCP closes the connection (real queries are a few hundred bytes). */
const MAX_TCP_QUERY = 4096;
/** Attempts at finding a port free for both UDP and TCP when the OS picks. */
const BIND_ATTEMPTS = 5;

const DOMAIN_LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

export class DnsServer {
  readonly domain: string;
  private readonly opts: DnsServerOptions;
  private readonly host: string;
  private readonly ttl: number;
  private readonly idleMs: number;
  private readonly responder: Responder;
  private udp: UdpSocket | null = null;
  private tcp: TcpServer | null = null;
  private readonly conns = new Set<TcpSocket>();
  private unsubscribe: (() => void) | null = null;

  constructor(opts: DnsServerOptions) {
    this.opts = opts;
    this.domain = (opts.domain ?? 'skein').toLowerCase().replace(/\.$/, '');
    if (this.domain.length > 200 || !this.domain.split('.').every((l) => DOMAIN_LABEL.test(l))) {
      throw new SkeinError('SKEIN_E_VALIDATION', `DNS domain "${opts.domain}" is not a valid domain name`, { field: 'domain' });
    }
    this.host = opts.host ?? '127.0.0.1';
    this.ttl = opts.ttlSeconds ?? 5;
    if (!Number.isInteger(this.ttl) || this.ttl < 0 || this.ttl > 86400) {
      throw new SkeinError('SKEIN_E_VALIDATION', `DNS TTL must be a whole number of seconds from 0 to 86400, not ${this.ttl}`, { field: 'ttlSeconds' });
    }
    this.idleMs = opts.tcpIdleTimeoutMs ?? 10_000;
    const nsAddress = isIP(this.host) !== 0 && this.host !== '0.0.0.0' && this.host !== '::' ? this.host : null;
    const zone = new Zone({ registry: opts.registry, domain: this.domain, ttlSeconds: this.ttl, nsAddress, serial: Math.floor(Date.now() / 1000) });
    this.responder = new Responder({ zone });
    if (opts.metrics !== undefined) registerMetrics(opts.metrics, this.responder);
  }

  /** Binds UDP and TCP on the same port; resolves with where they listen. */
  async start(): Promise<{ host: string; port: number }> {
    if (this.udp !== null) throw new Error('DnsServer already started');
    const wanted = this.opts.port ?? 8600;
    let port = 0;
    for (let attempt = 1; ; attempt++) {
      const udp = await this.bindUdp(wanted);
      port = udp.address().port;
      try {
        this.tcp = await this.listenTcp(port);
        this.udp = udp;
        break;
      } catch (e) {
        udp.close();
        // With a port of our choosing, someone else may hold its TCP side: pick another.
        if (wanted !== 0 || attempt >= BIND_ATTEMPTS) throw bindError(this.host, port, e);
      }
    }

    // Changes while stopped went unseen: start from an empty cache.
    this.responder.clear();
    this.unsubscribe = this.opts.registry.onChange((e) => this.responder.invalidate(e.service));
    this.udp.on('message', (msg, rinfo) => this.onUdp(msg, rinfo));
    return { host: this.host, port };
  }

  /** Closes the sockets and every open TCP connection. */
  async stop(): Promise<void> {
    this.unsubscribe?.();
    this.unsubscribe = null;
    const udp = this.udp;
    const tcp = this.tcp;
    this.udp = null;
    this.tcp = null;
    for (const c of this.conns) c.destroy();
    this.conns.clear();
    await Promise.all([
      udp === null ? undefined : new Promise<void>((resolve) => udp.close(() => resolve())),
      tcp === null ? undefined : new Promise<void>((resolve) => tcp.close(() => resolve())),
    ]);
  }

  private bindUdp(port: number): Promise<UdpSocket> {
    return new Promise((resolve, reject) => {
      const sock = createSocket({ type: isIP(this.host) === 6 ? 'udp6' : 'udp4' });
      sock.once('error', (e) => {
        sock.close();
        reject(bindError(this.host, port, e));
      });
      sock.bind(port, this.host, () => {
        sock.removeAllListeners('error');
        // Errors after binding (an ICMP unreachable reported on send, say) must not crash us.
        sock.on('error', (e) => this.opts.logger?.warn({ err: e }, 'dns: udp socket error'));
        resolve(sock);
      });
    });
  }

  private listenTcp(port: number): Promise<TcpServer> {
    return new Promise((resolve, reject) => {
      const server = createServer((sock) => this.onTcp(sock));
      server.maxConnections = this.opts.maxTcpConnections ?? 1000;
      server.once('error', reject);
      server.listen({ port, host: this.host }, () => {
        server.removeListener('error', reject);
        server.on('error', (e) => this.opts.logger?.warn({ err: e }, 'dns: tcp server error'));
        resolve(server);
      });
    });
  }

  private answer(msg: Buffer, transport: Transport): Buffer | null {
    try {
      return this.responder.respond(msg, transport);
    } catch (e) {
      // A bug, not bad input (that gets FORMERR): say so and answer SERVFAIL.
      this.opts.logger?.warn({ err: e, transport }, 'dns: failed to answer a query');
      return this.responder.servfail(msg, transport);
    }
  }

  private onUdp(msg: Buffer, rinfo: RemoteInfo): void {
    const out = this.answer(msg, 'udp');
    if (out !== null && this.udp !== null) this.udp.send(out, rinfo.port, rinfo.address);
  }

  /** Length-prefixed queries (RFC 1035 §4.2.2), answered in order, several per connection. */
  private onTcp(sock: TcpSocket): void {
    this.conns.add(sock);
    sock.setNoDelay(true);
    sock.setTimeout(this.idleMs, () => sock.destroy());
    sock.on('close', () => this.conns.delete(sock));
    sock.on('error', () => sock.destroy());
    let buf: Buffer = Buffer.alloc(0);
    sock.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (len > MAX_TCP_QUERY) {
          sock.destroy();
          return;
        }
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        const out = this.answer(msg, 'tcp');
        if (out === null) continue;
        const prefix = Buffer.allocUnsafe(2);
        prefix.writeUInt16BE(out.length);
        // Stop reading while the client does not read its answers.
        if (!sock.write(Buffer.concat([prefix, out])) && !sock.isPaused()) {
          sock.pause();
          sock.once('drain', () => sock.resume());
        }
      }
    });
  }
}

function bindError(host: string, port: number, e: unknown): SkeinError {
  if (e instanceof SkeinError) return e;
  return new SkeinError('SKEIN_E_ADDRESS_IN_USE', `DNS server cannot listen on ${host}:${port}: ${(e as Error).message}`, { cause: e });
}

/** Counters read from the responder's plain counts at scrape time: nothing on the hot path. */
function registerMetrics(registry: PromRegistry, responder: Responder): void {
  new Counter({
    name: 'skein_dns_queries_total',
    help: 'DNS queries answered, by transport and response code.',
    labelNames: ['transport', 'rcode'],
    registers: [registry],
    collect() {
      this.reset();
      for (const transport of ['udp', 'tcp'] as const) {
        responder.counts[transport].forEach((n, rcode) => {
          if (n > 0) this.inc({ transport, rcode: RCODE_NAMES[rcode] ?? String(rcode) }, n);
        });
      }
    },
  });
  new Counter({
    name: 'skein_dns_cache_hits_total',
    help: 'DNS queries answered from the encoded-response cache.',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(responder.cacheHits);
    },
  });
}
