/**
 * Rate limiters for the proxy's hot path: time from `clock.now()`, no timers, no allocation per call.
 *
 * - TokenBucket: `burst` tokens, refilled continuously at `requestsPerSecond` up to `burst`; a
 *   request takes one token.
 * - Gcra (generic cell rate algorithm, as in redis-cell): a theoretical arrival time TAT, emission
 *   interval T = 1000 / rate ms, tolerance τ = T × (burst − 1). Allow when now ≥ TAT − τ, then
 *   TAT = max(TAT, now) + T; otherwise retry after TAT − τ − now. One number of state.
 *
 * The two are the same limiter (GCRA is the virtual-scheduling form of the bucket): for any arrival
 * times (on a clock that does not go back) they make the same decisions. Guarantee: in any interval
 * of d ms at most burst + rate × d / 1000 requests are allowed; a caller that waits the returned
 * delay is allowed then. A clock that goes backwards never grants extra requests. Burst is a whole
 * number of requests, so the two stay identical.
 */
import type { Clock } from '../core/clock.js';
import { SkeinError } from '../core/errors.js';
import { defaultBurst, TRAFFIC_DEFAULTS, type RateLimitAlgorithmName, type RateLimitPolicy } from '../api/traffic.js';

export type RateLimitAlgorithm = RateLimitAlgorithmName;

/**
 * A limiter's settings are the traffic policy's (`RateLimitPolicy`, src/api/traffic): burst
 * defaults to max(1, ceil(requestsPerSecond)) (`defaultBurst`), the algorithm to token-bucket.
 */
export type RateLimitOptions = Pick<RateLimitPolicy, 'requestsPerSecond'> & Partial<Pick<RateLimitPolicy, 'burst' | 'algorithm'>> & { clock: Clock };

export interface RateLimiter {
  /** 0 when the request may go now (and it is counted); otherwise the ms until one would be allowed (≥ 1). */
  take(): number;
}

/** The most callers a per-caller limiter keeps a bucket for (the least recently seen goes first). */
export const DEFAULT_MAX_KEYS = TRAFFIC_DEFAULTS.rateLimitMaxCallers;

/**
 * Slack for floating-point rounding, in ms: a request due within a nanosecond is allowed, so
 * waiting the (ceil'd) retry-after always suffices.
 */
const EPS_MS = 1e-6;

function invalid(field: string, message: string): SkeinError {
  return new SkeinError('SKEIN_E_VALIDATION', `rate limit: ${message}`, { field });
}

interface Settings {
  rate: number;
  burst: number;
  clock: Clock;
}

function validate(opts: RateLimitOptions): Settings {
  const rate = opts.requestsPerSecond;
  if (typeof rate !== 'number' || !Number.isFinite(rate) || rate <= 0) {
    throw invalid('requestsPerSecond', `requestsPerSecond must be a finite number > 0, not ${String(rate)}`);
  }
  const burst = opts.burst ?? defaultBurst(rate);
  if (typeof burst !== 'number' || !Number.isSafeInteger(burst) || burst < 1) {
    throw invalid('burst', `burst must be a whole number >= 1, not ${String(burst)}`);
  }
  if (opts.clock == null || typeof opts.clock.now !== 'function') throw invalid('clock', 'clock must be a Clock');
  return { rate, burst, clock: opts.clock };
}

/** A wait in fractional ms as the whole ms to report: ceil'd, at least 1 (also for NaN). */
function retryAfter(ms: number): number {
  const r = Math.ceil(ms - EPS_MS);
  return r >= 1 ? r : 1;
}

export class TokenBucket implements RateLimiter {
  readonly requestsPerSecond: number;
  readonly burst: number;
  private readonly clock: Clock;
  private readonly tokensPerMs: number;
  private readonly msPerToken: number;
  private tokens: number;
  /** The latest time seen; refill counts from here, so a clock that goes back refills nothing. */
  private last: number;

  constructor(opts: RateLimitOptions) {
    const s = validate(opts);
    this.requestsPerSecond = s.rate;
    this.burst = s.burst;
    this.clock = s.clock;
    this.tokensPerMs = s.rate / 1000;
    this.msPerToken = 1000 / s.rate;
    this.tokens = s.burst;
    this.last = s.clock.now();
  }

  take(): number {
    const now = this.clock.now();
    if (now > this.last) {
      const t = this.tokens + (now - this.last) * this.tokensPerMs;
      this.tokens = t < this.burst ? t : this.burst;
      this.last = now;
    }
    const waitMs = (1 - this.tokens) * this.msPerToken;
    if (waitMs <= EPS_MS) {
      this.tokens -= 1;
      return 0;
    }
    return retryAfter(waitMs);
  }

  /** Forgets all history: a full bucket, as if just created. */
  reset(): void {
    this.tokens = this.burst;
    this.last = this.clock.now();
  }
}

export class Gcra implements RateLimiter {
  readonly requestsPerSecond: number;
  readonly burst: number;
  private readonly clock: Clock;
  /** T, ms between requests at the sustained rate. */
  private readonly interval: number;
  /** τ = T × (burst − 1). */
  private readonly tolerance: number;
  /** Times are kept relative to this origin so fractional ms keep their precision (epoch ms are ~1.7e12). */
  private readonly origin: number;
  private tat: number;

  constructor(opts: RateLimitOptions) {
    const s = validate(opts);
    this.requestsPerSecond = s.rate;
    this.burst = s.burst;
    this.clock = s.clock;
    this.interval = 1000 / s.rate;
    this.tolerance = this.interval * (s.burst - 1);
    const now = s.clock.now();
    this.origin = Number.isFinite(now) ? now : 0;
    this.tat = 0;
  }

  take(): number {
    const now = this.clock.now() - this.origin;
    const waitMs = this.tat - this.tolerance - now;
    if (waitMs <= EPS_MS) {
      this.tat = (this.tat > now ? this.tat : now) + this.interval;
      return 0;
    }
    return retryAfter(waitMs);
  }

  /** Forgets all history: the full burst is available, as if just created. */
  reset(): void {
    this.tat = this.clock.now() - this.origin;
  }
}

export function createRateLimiter(opts: RateLimitOptions): RateLimiter {
  return build(opts);
}

function build(opts: RateLimitOptions): TokenBucket | Gcra {
  const algorithm = opts.algorithm ?? TRAFFIC_DEFAULTS.rateLimitAlgorithm;
  if (algorithm === 'token-bucket') return new TokenBucket(opts);
  if (algorithm === 'gcra') return new Gcra(opts);
  throw invalid('algorithm', `algorithm must be "token-bucket" or "gcra", not ${JSON.stringify(algorithm)}`);
}

/** A key's limiter in the LRU list (most recent at head). */
class Entry {
  key: string;
  readonly limiter: TokenBucket | Gcra;
  prev: Entry | null = null;
  next: Entry | null = null;

  constructor(key: string, limiter: TokenBucket | Gcra) {
    this.key = key;
    this.limiter = limiter;
  }
}

/**
 * One limiter per key (a caller), created on first use; at most maxKeys kept (least recently used
 * evicted; a key whose limiter is full/idle can be dropped without changing behaviour).
 *
 * An evicted entry is recycled for the new key (reset to a full burst), so a flood of distinct keys
 * allocates nothing once maxKeys is reached. Evicting a key that was not idle forgets its debt: when
 * it comes back it gets a fresh burst — the price of bounded memory; size maxKeys above the number
 * of callers active within burst / rate seconds to avoid it.
 */
export class KeyedRateLimiter {
  readonly maxKeys: number;
  private readonly opts: RateLimitOptions;
  private readonly entries = new Map<string, Entry>();
  private head: Entry | null = null;
  private tail: Entry | null = null;

  constructor(opts: RateLimitOptions & { maxKeys?: number /* default DEFAULT_MAX_KEYS */ }) {
    const maxKeys = opts.maxKeys ?? DEFAULT_MAX_KEYS;
    if (typeof maxKeys !== 'number' || !Number.isSafeInteger(maxKeys) || maxKeys < 1) {
      throw invalid('maxKeys', `maxKeys must be a whole number >= 1, not ${String(maxKeys)}`);
    }
    this.maxKeys = maxKeys;
    // Validates the rest now rather than on the first take().
    build(opts);
    this.opts = { requestsPerSecond: opts.requestsPerSecond, burst: opts.burst, algorithm: opts.algorithm, clock: opts.clock };
  }

  take(key: string): number {
    let e = this.entries.get(key);
    if (e === undefined) {
      e = this.admit(key);
    } else if (e !== this.head) {
      this.unlink(e);
      this.pushHead(e);
    }
    return e.limiter.take();
  }

  get size(): number {
    return this.entries.size;
  }

  private admit(key: string): Entry {
    let e: Entry;
    if (this.entries.size < this.maxKeys || this.tail === null) {
      e = new Entry(key, build(this.opts));
    } else {
      e = this.tail;
      this.unlink(e);
      this.entries.delete(e.key);
      e.key = key;
      e.limiter.reset();
    }
    this.entries.set(key, e);
    this.pushHead(e);
    return e;
  }

  private unlink(e: Entry): void {
    if (e.prev === null) this.head = e.next;
    else e.prev.next = e.next;
    if (e.next === null) this.tail = e.prev;
    else e.next.prev = e.prev;
    e.prev = null;
    e.next = null;
  }

  private pushHead(e: Entry): void {
    e.next = this.head;
    if (this.head !== null) this.head.prev = e;
    this.head = e;
    if (this.tail === null) this.tail = e;
  }
}
