/**
 * Response rate limiting over UDP, per source, as BIND's RRL does it in outline: a UDP source
 * address can be forged, so a server that answers every datagram lends its bandwidth to whoever
 * floods it with queries "from" a victim. Each source network (an IPv4 /24, an IPv6 /56, as in
 * BIND's defaults: one host rarely owns just one address) gets a token bucket of responses;
 * beyond it responses are dropped, except every `slip`-th, which goes out as an empty truncated
 * response (TC set, no larger than the query) so a real client behind the source retries over
 * TCP, which cannot be forged. TCP is never limited.
 *
 * The table of sources is bounded: past `maxSources` the source tracked longest is forgotten (it
 * starts again with a full bucket, as a new source would).
 */
import type { DnsRateLimitSettings } from '../../api/dns.js';
import type { Clock } from '../../core/clock.js';
import { TokenBucket } from '../../resilience/rate-limit.js';

export type RateVerdict = 'send' | 'slip' | 'drop';

interface Source {
  readonly bucket: TokenBucket;
  /** Responses refused since the source was first tracked (for the slip count). */
  limited: number;
}

export class ResponseRateLimiter {
  /** Responses dropped, and sent truncated instead, since the start. */
  dropped = 0;
  slipped = 0;
  private readonly settings: DnsRateLimitSettings;
  private readonly clock: Clock;
  private readonly sources = new Map<string, Source>();

  constructor(settings: DnsRateLimitSettings, clock: Clock) {
    this.settings = settings;
    this.clock = clock;
  }

  get trackedSources(): number {
    return this.sources.size;
  }

  /** Whether the response to a query from `address` goes out, slips out truncated, or is dropped. */
  check(address: string): RateVerdict {
    const key = sourceNetwork(address);
    let source = this.sources.get(key);
    if (source === undefined) {
      if (this.sources.size >= this.settings.maxSources) this.sources.delete(this.sources.keys().next().value as string);
      const { responsesPerSecond, burst } = this.settings;
      source = { bucket: new TokenBucket({ requestsPerSecond: responsesPerSecond, burst, clock: this.clock }), limited: 0 };
      this.sources.set(key, source);
    }
    if (source.bucket.take() === 0) return 'send';
    source.limited++;
    if (this.settings.slip > 0 && source.limited % this.settings.slip === 0) {
      this.slipped++;
      return 'slip';
    }
    this.dropped++;
    return 'drop';
  }
}

/**
 * The network a source address is limited as: its IPv4 /24 or its IPv6 /56 (the first 14 hex
 * digits of the address written out in full). IPv4-mapped IPv6 addresses count as IPv4.
 */
export function sourceNetwork(address: string): string {
  const v4 = address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
  if (!v4.includes(':')) return v4.slice(0, v4.lastIndexOf('.'));
  const pct = address.indexOf('%');
  const plain = pct < 0 ? address : address.slice(0, pct);
  const [head = '', tail] = plain.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return groups
    .map((g) => g.padStart(4, '0'))
    .join('')
    .slice(0, 14);
}
