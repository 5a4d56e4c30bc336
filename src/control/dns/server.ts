/**
 * The control plane's DNS server: authoritative for `<domain>` (default `skein`), answering A,
 * AAAA and SRV for healthy instances over UDP and TCP on one port. Never recursive, never
 * forwarding: names outside the zone get REFUSED. The answering itself is the Responder's
 * (responder.ts); this file owns sockets, lifecycle, abuse limits and metrics:
 * - UDP responses pass the per-source rate limiter (rrl.ts) when it is on (by default only when
 *   listening beyond loopback, where source addresses can be forged);
 * - a TCP connection that completes no query for the idle timeout is closed (bytes trickling in
 *   do not keep it open), and at the connection cap a new connection closes the one idle longest
 *   rather than being refused, so slow connections cannot lock out a fresh query.
 */
import { isLoopbackAddress } from '../../core/loopback-host.js';
import { createSocket, type Socket as UdpSocket, type RemoteInfo } from 'node:dgram';
import { createServer, isIP, type Server as TcpServer, type Socket as TcpSocket } from 'node:net';
import type { Registry as PromRegistry, Sample } from '../../telemetry/prom.js';
import { DNS_DEFAULTS, type DnsRateLimitSettings } from '../../api/dns.js';
import { systemClock, type Clock } from '../../core/clock.js';
import { SkeinError } from '../../core/errors.js';
import type { Registry } from '../registry/registry.js';
import { Responder, type DnsCacheStats, type Transport } from './responder.js';
import { ResponseRateLimiter } from './rrl.js';
import { RCODE_NAMES } from './wire.js';
import { Zone } from './zone.js';

export interface DnsServerOptions {
  registry: Registry;
  /** The zone, e.g. `skein` or `mesh.internal`. Default `skein` (DNS_DEFAULTS). */
  domain?: string;
  /** Default DNS_DEFAULTS.host (127.0.0.1). */
  host?: string;
  /** UDP and TCP both; 0 lets the OS pick (one port for both). Default DNS_DEFAULTS.port (7453). */
  port?: number;
  /** TTL of every record, and the negative-caching TTL. Default 5. */
  ttlSeconds?: number;
  /** Where the skein_dns_* metrics go (registered once: one DnsServer per metrics registry). */
  metrics?: PromRegistry;
  logger?: { warn(obj: object, msg: string): void };
  /** A TCP connection that completes no query (and drains no answer) this long is closed. Default 10 s. */
  tcpIdleTimeoutMs?: number;
  /** Open TCP connections; one more closes the one idle longest. Default 1,000. */
  maxTcpConnections?: number;
  /** Instances one answer is built from at most (a random sample beyond). Default 64. */
  answerSample?: number;
  /** Cached responses at most. Default 10,000. */
  maxCacheEntries?: number;
  /** Estimated bytes of cached responses at most. Default 16 MiB. */
  maxCacheBytes?: number;
  /**
   * Per-source UDP response rate limiting: `enabled` defaults to whether `host` is beyond
   * loopback; the other fields default to DNS_DEFAULTS.rateLimit.
   */
  rateLimit?: Partial<DnsRateLimitSettings> & { enabled?: boolean };
  /** For the rate limiter and re-drawing sampled answers. Default the system clock. */
  clock?: Clock;
}

export interface DnsServerStats {
  readonly cache: DnsCacheStats;
  /** Null when the rate limiter is off. */
  readonly rateLimit: { readonly dropped: number; readonly slipped: number; readonly sources: number } | null;
  readonly tcp: { readonly open: number; readonly idleClosed: number; readonly evicted: number };
}

/** Attempts at finding a port free for both UDP and TCP when the OS picks. */
const BIND_ATTEMPTS = 5;

const DOMAIN_LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

export class DnsServer {
  readonly domain: string;
  private readonly opts: DnsServerOptions;
  private readonly host: string;
  private readonly ttl: number;
  private readonly idleMs: number;
  private readonly maxConns: number;
  private readonly responder: Responder;
  private readonly rrl: ResponseRateLimiter | null;
  private udp: UdpSocket | null = null;
  private tcp: TcpServer | null = null;
  /** Open connections, least recently active first (a query moves its connection to the end). */
  private readonly conns = new Map<TcpSocket, NodeJS.Timeout>();
  private tcpIdleClosed = 0;
  private tcpEvicted = 0;
  private unsubscribe: (() => void) | null = null;

  constructor(opts: DnsServerOptions) {
    this.opts = opts;
    this.domain = (opts.domain ?? DNS_DEFAULTS.domain).toLowerCase().replace(/\.$/, '');
    if (this.domain.length > 200 || !this.domain.split('.').every((l) => DOMAIN_LABEL.test(l))) {
      throw new SkeinError('SKEIN_E_VALIDATION', `DNS domain "${opts.domain}" is not a valid domain name`, { field: 'domain' });
    }
    this.host = opts.host ?? DNS_DEFAULTS.host;
    this.ttl = opts.ttlSeconds ?? DNS_DEFAULTS.ttlSeconds;
    if (!Number.isInteger(this.ttl) || this.ttl < 0 || this.ttl > 86400) {
      throw new SkeinError('SKEIN_E_VALIDATION', `DNS TTL must be a whole number of seconds from 0 to 86400, not ${this.ttl}`, { field: 'ttlSeconds' });
    }
    const D = DNS_DEFAULTS;
    this.idleMs = whole(opts.tcpIdleTimeoutMs ?? D.tcp.idleTimeoutMs, 'tcpIdleTimeoutMs', 1, 3_600_000);
    this.maxConns = whole(opts.maxTcpConnections ?? D.tcp.maxConnections, 'maxTcpConnections', 1, 1_000_000);
    const answerSample = whole(opts.answerSample ?? D.answerSample, 'answerSample', 1, 10_000);
    const maxCacheEntries = whole(opts.maxCacheEntries ?? D.cache.maxEntries, 'maxCacheEntries', 0, 10_000_000);
    const maxCacheBytes = whole(opts.maxCacheBytes ?? D.cache.maxBytes, 'maxCacheBytes', 0, 2 ** 40);
    const clock = opts.clock ?? systemClock;
    const nsAddress = isIP(this.host) !== 0 && this.host !== '0.0.0.0' && this.host !== '::' ? this.host : null;
    const zone = new Zone({ registry: opts.registry, domain: this.domain, ttlSeconds: this.ttl, nsAddress, serial: Math.floor(Date.now() / 1000), answerSample });
    this.responder = new Responder({ zone, maxCacheEntries, maxCacheBytes, clock });
    this.rrl = rateLimiter(opts.rateLimit ?? {}, this.host, clock);
    if (opts.metrics !== undefined) this.registerMetrics(opts.metrics);
  }

  /** The cache's size and bounds, the rate limiter's verdicts, the TCP connections. */
  stats(): DnsServerStats {
    const rrl = this.rrl === null ? null : { dropped: this.rrl.dropped, slipped: this.rrl.slipped, sources: this.rrl.trackedSources };
    return { cache: this.responder.stats(), rateLimit: rrl, tcp: { open: this.conns.size, idleClosed: this.tcpIdleClosed, evicted: this.tcpEvicted } };
  }

  /** Binds UDP and TCP on the same port; resolves with where they listen. */
  async start(): Promise<{ host: string; port: number }> {
    if (this.udp !== null) throw new Error('DnsServer already started');
    const wanted = this.opts.port ?? DNS_DEFAULTS.port;
    let port: number;
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
    for (const [c, timer] of this.conns) {
      clearTimeout(timer);
      c.destroy();
    }
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
    const verdict = this.rrl === null ? 'send' : this.rrl.check(rinfo.address);
    if (verdict === 'drop') return;
    const out = verdict === 'send' ? this.answer(msg, 'udp') : this.responder.truncated(msg);
    if (out !== null && this.udp !== null) this.udp.send(out, rinfo.port, rinfo.address);
  }

  /** Length-prefixed queries (RFC 1035 §4.2.2), answered in order, several per connection. */
  private onTcp(sock: TcpSocket): void {
    this.admit(sock);
    sock.setNoDelay(true);
    sock.on('close', () => this.forget(sock));
    sock.on('error', () => sock.destroy());
    let buf: Buffer = Buffer.alloc(0);
    let waiting = false;
    // Answers the complete queries in `buf`, stopping at the first answer the client has not read
    // room for: the rest waits for 'drain', so what is queued on a socket is one answer, not one
    // per query a single chunk can hold.
    const answerAll = (): void => {
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (len > DNS_DEFAULTS.tcp.maxQueryBytes) {
          sock.destroy();
          return;
        }
        if (buf.length < 2 + len) return;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        this.touch(sock);
        const out = this.answer(msg, 'tcp');
        if (out === null) continue;
        const prefix = Buffer.allocUnsafe(2);
        prefix.writeUInt16BE(out.length);
        if (!sock.write(Buffer.concat([prefix, out]))) {
          // Stop reading while the client does not read its answers; its reading them is activity.
          sock.pause();
          waiting = true;
          sock.once('drain', () => {
            waiting = false;
            this.touch(sock);
            answerAll();
            if (!waiting && !sock.destroyed) sock.resume();
          });
          return;
        }
      }
    };
    sock.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      if (!waiting) answerAll();
    });
  }

  /** Tracks a new connection, first closing the one idle longest when at the cap. */
  private admit(sock: TcpSocket): void {
    while (this.conns.size >= this.maxConns) {
      const oldest = this.conns.keys().next().value as TcpSocket;
      this.forget(oldest);
      oldest.destroy();
      this.tcpEvicted++;
    }
    const timer = setTimeout(() => {
      this.forget(sock);
      sock.destroy();
      this.tcpIdleClosed++;
    }, this.idleMs);
    timer.unref();
    this.conns.set(sock, timer);
  }

  /** A complete query (or an answer drained): the connection is active; its idle time restarts. */
  private touch(sock: TcpSocket): void {
    const timer = this.conns.get(sock);
    if (timer === undefined) return;
    this.conns.delete(sock);
    this.conns.set(sock, timer.refresh());
  }

  private forget(sock: TcpSocket): void {
    const timer = this.conns.get(sock);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.conns.delete(sock);
  }

  /** Counters and gauges read from plain counts at scrape time: nothing on the hot path. */
  private registerMetrics(registry: PromRegistry): void {
    const responder = this.responder;
    registry.scraped<'transport' | 'rcode'>('counter', { name: 'skein_dns_queries_total', help: 'DNS queries answered, by transport and response code.', labelNames: ['transport', 'rcode'] }, () => {
      const out: Sample[] = [];
      for (const transport of ['udp', 'tcp'] as const) {
        responder.counts[transport].forEach((n, rcode) => {
          if (n > 0) out.push({ labels: [transport, RCODE_NAMES[rcode] ?? String(rcode)], value: n });
        });
      }
      return out;
    });
    const stats = () => this.stats();
    const one = (value: number): Sample[] => [{ labels: [], value }];
    registry.scraped('counter', { name: 'skein_dns_cache_hits_total', help: 'DNS queries answered from the encoded-response cache.' }, () => one(stats().cache.hits));
    registry.scraped('gauge', { name: 'skein_dns_cache_entries', help: "Encoded DNS responses cached (bounded by the cache's maximum entries)." }, () => one(stats().cache.entries));
    registry.scraped('gauge', { name: 'skein_dns_cache_bytes', help: "Estimated bytes of the cached DNS responses (bounded by the cache's maximum bytes)." }, () => one(stats().cache.bytes));
    registry.scraped<'action'>('counter', { name: 'skein_dns_rate_limited_total', help: "UDP responses over a source's rate: dropped, or sent truncated instead (slip).", labelNames: ['action'] }, () => {
      const rrl = stats().rateLimit;
      return rrl === null ? [] : [{ labels: ['drop'], value: rrl.dropped }, { labels: ['slip'], value: rrl.slipped }];
    });
    registry.scraped<'reason'>('counter', { name: 'skein_dns_tcp_closed_total', help: 'TCP connections the DNS server closed: idle past the timeout, or the idlest at the connection cap.', labelNames: ['reason'] }, () => {
      const tcp = stats().tcp;
      return [{ labels: ['idle'], value: tcp.idleClosed }, { labels: ['cap'], value: tcp.evicted }];
    });
  }
}

/** A whole-number option within bounds, or a validation error naming it. */
function whole(value: number, field: string, min: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new SkeinError('SKEIN_E_VALIDATION', `DNS option ${field} must be a whole number from ${min} to ${max}, not ${value}`, { field });
  }
  return value;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || isLoopbackAddress(host);
}

/** The rate limiter the options ask for: on beyond loopback unless told otherwise. */
function rateLimiter(opts: NonNullable<DnsServerOptions['rateLimit']>, host: string, clock: Clock): ResponseRateLimiter | null {
  if (!(opts.enabled ?? !isLoopback(host))) return null;
  const D = DNS_DEFAULTS.rateLimit;
  return new ResponseRateLimiter(
    {
      responsesPerSecond: whole(opts.responsesPerSecond ?? D.responsesPerSecond, 'rateLimit.responsesPerSecond', 1, 1_000_000),
      burst: whole(opts.burst ?? D.burst, 'rateLimit.burst', 1, 10_000_000),
      slip: whole(opts.slip ?? D.slip, 'rateLimit.slip', 0, 10),
      maxSources: whole(opts.maxSources ?? D.maxSources, 'rateLimit.maxSources', 1, 10_000_000),
    },
    clock,
  );
}

function bindError(host: string, port: number, e: unknown): SkeinError {
  if (e instanceof SkeinError) return e;
  return new SkeinError('SKEIN_E_ADDRESS_IN_USE', `DNS server cannot listen on ${host}:${port}: ${(e as Error).message}`, { cause: e });
}
