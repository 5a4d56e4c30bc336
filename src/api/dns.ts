/**
 * Every default and bound of the control plane's DNS server (docs/dns.md): the server, its
 * response cache, its rate limiter and the CLI read them from here; nothing else spells them.
 */

export interface DnsRateLimitSettings {
  /** Responses per second each source (an IPv4 /24, an IPv6 /56) gets over UDP. */
  readonly responsesPerSecond: number;
  /** Responses a source may get at once above the rate. */
  readonly burst: number;
  /**
   * Every `slip`-th response over the limit goes out as an empty truncated one (TC set) instead of
   * being dropped, so a real client behind a limited source retries over TCP; 0 drops them all.
   */
  readonly slip: number;
  /** Sources tracked at once; the one tracked longest is forgotten first. */
  readonly maxSources: number;
}

export const DNS_DEFAULTS = Object.freeze({
  /** Where the server listens (UDP and TCP): `skein control --dns`, `skein up`, a DnsServer given no host or port. */
  host: '127.0.0.1',
  port: 7453,
  domain: 'skein',
  ttlSeconds: 5,
  /**
   * The largest UDP response, whatever EDNS size a client offers: DNS Flag Day 2020's 1,232
   * bytes (a 1,280-byte IPv6 minimum MTU less headers), so responses are never fragmented and
   * one answer amplifies a query at most this much. A client offering less gets 512 (RFC 1035).
   */
  udpPayload: 1232,
  /** Instances one answer is built from: a random sample of this many when a service has more. */
  answerSample: 64,
  /** Answer orders one cache entry keeps, served in turn (fewer when it has fewer answers). */
  rotations: 8,
  cache: Object.freeze({
    /** Cached responses (one per name, type class, EDNS flags and size class). */
    maxEntries: 10_000,
    /** Bytes of cached responses, keys and bookkeeping (an estimate of what they hold in memory). */
    maxBytes: 16 * 1024 * 1024,
  }),
  /** Per-source response rate limiting over UDP: on by default only when listening beyond loopback. */
  rateLimit: Object.freeze({ responsesPerSecond: 100, burst: 200, slip: 2, maxSources: 10_000 }) satisfies DnsRateLimitSettings,
  tcp: Object.freeze({
    /** A connection that sends no complete query for this long is closed. */
    idleTimeoutMs: 10_000,
    /** Open connections; one more arriving closes the one idle longest. */
    maxConnections: 1000,
    /** A query longer than this closes its connection (real queries are a few hundred bytes). */
    maxQueryBytes: 4096,
  }),
});
