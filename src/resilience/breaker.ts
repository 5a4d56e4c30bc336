/**
 * Circuit breakers per endpoint: failure accrual in the manner of linkerd2-proxy, with a
 * half-open probe.
 *
 * One `Breakers` serves one destination service and keeps a small state per endpoint key:
 *
 * - closed: requests flow. Failures accrue; the breaker opens after `consecutiveFailures`
 *   failures in a row, or (when `failureRate` is set) when the failure share over the sliding
 *   window reaches the threshold with at least `minRequests` outcomes in the window.
 * - open: no request is let through until the backoff has elapsed; then `allows` says true again
 *   ("open and due") and the next `started` call makes that request the probe.
 * - half-open: the probe is in flight and nothing else is let through. The first outcome reported
 *   decides: success closes the breaker, failure re-opens it with a longer backoff.
 *
 * Backoff: the n-th opening since the last close (n from 0) stays open for a delay drawn uniformly
 * from [minMs, min(maxMs, minMs * 2^(n+1))) ("full jitter" above the floor minMs): with the
 * defaults 1-2 s, then 1-4 s, 1-8 s, then 1-10 s for good. A close starts over at n = 0.
 *
 * The failure-rate window is a ring of WINDOW_SLOTS slots of windowMs / WINDOW_SLOTS each; a slot
 * older than the window is cleared when it is reused, so the window covers between
 * (WINDOW_SLOTS - 1) / WINDOW_SLOTS of windowMs and windowMs of history. The rate is checked when
 * a failure is recorded (a success never opens a breaker).
 *
 * Hot path: `allows`, `started`, `success` and `failure` do not allocate (except for the one-time
 * state of a key: at its first failure, or at its first success when `failureRate` is on, since the
 * window needs the successes too) and set no timers; time comes from `clock.now()`. A key never
 * seen is closed and has no entry. Nothing here touches registry objects: state is by endpoint key,
 * and `retain` (or `forget`, one key) drops the state of endpoints that left the service.
 *
 * Contract with the caller (the proxy): call `started(key)` for each request sent, right after the
 * pick that chose it (so `allows` can be asked of several candidates without consuming the probe),
 * and report exactly one of `success(key)` / `failure(key)` for it. Outcomes that arrive while the
 * breaker is open (requests sent before it opened) are ignored. In half-open the first outcome
 * reported is taken as the probe's: a late outcome of a request sent before the breaker opened
 * can decide instead, which errs on the side of the endpoint's most recent behaviour. A probe whose
 * outcome is never reported leaves the endpoint half-open (excluded) until `retain` drops it.
 */
import type { Clock } from '../core/clock.js';
import { SkeinError } from '../core/errors.js';
import { TRAFFIC_DEFAULTS, type BreakerPolicy } from '../api/traffic.js';

export type BreakerState = 'closed' | 'open' | 'half-open';

/**
 * The breaker's settings are the traffic policy's (`BreakerPolicy`, src/api/traffic): each field
 * left out takes its default from TRAFFIC_DEFAULTS.breaker (consecutiveFailures 7, Linkerd's;
 * failureRate off; backoff 1 s to 10 s).
 */
export type BreakerOptions = Partial<BreakerPolicy> & {
  clock: Clock;
  rng?: () => number;
  /** Called on every state change (for events/metrics). */
  onChange?: (key: string, from: BreakerState, to: BreakerState, reason: string) => void;
};

/** The defaults of `BreakerOptions`: the traffic policy's (one place, src/api/traffic). */
export const DEFAULT_BREAKER: BreakerPolicy = TRAFFIC_DEFAULTS.breaker;

/**
 * The reasons passed to `onChange` (stable strings, fit for a metric label):
 * - 'consecutive-failures': closed -> open, the consecutive trigger;
 * - 'failure-rate': closed -> open, the failure-rate trigger;
 * - 'probe': open -> half-open, a probe was sent;
 * - 'probe-success': half-open -> closed;
 * - 'probe-failure': half-open -> open (with a longer backoff).
 */
export type BreakerReason = 'consecutive-failures' | 'failure-rate' | 'probe' | 'probe-success' | 'probe-failure';

/** Slots of the failure-rate ring. */
export const WINDOW_SLOTS = 10;

/** The state of one endpoint. */
class Entry {
  state: BreakerState = 'closed';
  /** Failures in a row while closed. */
  consecutive = 0;
  /** While open: the time (ms) from which a probe may go. */
  dueAt = 0;
  /** Openings since the last close: the exponent of the next backoff. */
  opens = 0;
  /** Failure-rate ring (null when the rate trigger is off): slot epoch, outcomes, failures. */
  readonly epochs: Float64Array | null;
  readonly total: Uint32Array | null;
  readonly failed: Uint32Array | null;

  constructor(window: boolean) {
    if (window) {
      this.epochs = new Float64Array(WINDOW_SLOTS).fill(-Infinity);
      this.total = new Uint32Array(WINDOW_SLOTS);
      this.failed = new Uint32Array(WINDOW_SLOTS);
    } else {
      this.epochs = null;
      this.total = null;
      this.failed = null;
    }
  }

  clearWindow(): void {
    this.epochs?.fill(-Infinity);
  }
}

function invalid(field: string, message: string): SkeinError {
  return new SkeinError('SKEIN_E_VALIDATION', `breaker: ${message}`, { field });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}

export class Breakers {
  private readonly clock: Clock;
  private readonly rng: () => number;
  private readonly onChange: BreakerOptions['onChange'];
  private readonly consecutiveFailures: number;
  private readonly rateOn: boolean;
  private readonly threshold: number;
  private readonly minRequests: number;
  private readonly slotMs: number;
  private readonly minMs: number;
  private readonly maxMs: number;
  private readonly entries = new Map<string, Entry>();
  private openCount = 0;
  private halfOpenCount = 0;

  constructor(opts: BreakerOptions) {
    if (!isObject(opts)) throw invalid('clock', 'options with a clock are required');
    const { clock } = opts;
    if (!isObject(clock) || typeof clock.now !== 'function') throw invalid('clock', 'clock must be a Clock');
    this.clock = clock;

    if (opts.rng !== undefined && typeof opts.rng !== 'function') throw invalid('rng', 'rng must be a function returning numbers in [0, 1)');
    this.rng = opts.rng ?? Math.random;
    if (opts.onChange !== undefined && typeof opts.onChange !== 'function') throw invalid('onChange', 'onChange must be a function');
    this.onChange = opts.onChange;

    const cf = opts.consecutiveFailures ?? DEFAULT_BREAKER.consecutiveFailures;
    if (typeof cf !== 'number' || !Number.isInteger(cf) || cf < 0) {
      throw invalid('consecutiveFailures', `consecutiveFailures must be an integer >= 0, not ${String(cf)}`);
    }
    this.consecutiveFailures = cf;

    const fr = opts.failureRate ?? null;
    if (fr === null) {
      this.rateOn = false;
      this.threshold = 1;
      this.minRequests = 1;
      this.slotMs = 1;
    } else {
      if (!isObject(fr)) throw invalid('failureRate', 'failureRate must be an object or null');
      const { threshold, minRequests, windowMs } = fr;
      if (typeof threshold !== 'number' || !(threshold > 0 && threshold <= 1)) {
        throw invalid('failureRate.threshold', `failureRate.threshold must be a number in (0, 1], not ${String(threshold)}`);
      }
      if (typeof minRequests !== 'number' || !Number.isInteger(minRequests) || minRequests < 1) {
        throw invalid('failureRate.minRequests', `failureRate.minRequests must be an integer >= 1, not ${String(minRequests)}`);
      }
      if (typeof windowMs !== 'number' || !Number.isFinite(windowMs) || windowMs <= 0) {
        throw invalid('failureRate.windowMs', `failureRate.windowMs must be a number > 0, not ${String(windowMs)}`);
      }
      this.rateOn = true;
      this.threshold = threshold;
      this.minRequests = minRequests;
      this.slotMs = windowMs / WINDOW_SLOTS;
    }

    const minMs = opts.backoffMinMs ?? DEFAULT_BREAKER.backoffMinMs;
    const maxMs = opts.backoffMaxMs ?? Math.max(DEFAULT_BREAKER.backoffMaxMs, typeof minMs === 'number' ? minMs : 0);
    if (typeof minMs !== 'number' || !Number.isFinite(minMs) || minMs <= 0) {
      throw invalid('backoffMinMs', `backoffMinMs must be a number > 0, not ${String(minMs)}`);
    }
    if (typeof maxMs !== 'number' || !Number.isFinite(maxMs) || maxMs < minMs) {
      throw invalid('backoffMaxMs', `backoffMaxMs must be a number >= backoffMinMs (${minMs}), not ${String(maxMs)}`);
    }
    this.minMs = minMs;
    this.maxMs = maxMs;
  }

  /** Side-effect free, allocation free: false while the endpoint's breaker is open and its backoff has not elapsed, or half-open with its probe in flight. True when closed, or open-and-due (a probe may go). */
  allows(key: string): boolean {
    const e = this.entries.get(key);
    if (e === undefined) return true;
    switch (e.state) {
      case 'closed':
        return true;
      case 'open':
        return this.clock.now() >= e.dueAt;
      default:
        return false;
    }
  }

  /** A request was sent to key: if its breaker is open and due, it becomes half-open with this request as the probe. */
  started(key: string): void {
    const e = this.entries.get(key);
    if (e === undefined || e.state !== 'open' || this.clock.now() < e.dueAt) return;
    e.state = 'half-open';
    this.openCount--;
    this.halfOpenCount++;
    this.onChange?.(key, 'open', 'half-open', 'probe');
  }

  /** Outcome of a request sent to key. In half-open: success closes, failure re-opens with a longer backoff. */
  success(key: string): void {
    let e = this.entries.get(key);
    if (e === undefined) {
      // Without the rate trigger a success on a fresh key changes nothing: no entry.
      if (!this.rateOn) return;
      e = new Entry(true);
      this.entries.set(key, e);
    }
    switch (e.state) {
      case 'closed':
        e.consecutive = 0;
        if (e.epochs !== null) this.record(e, false);
        return;
      case 'half-open':
        // consecutive count and window were cleared when it opened
        e.state = 'closed';
        e.opens = 0;
        this.halfOpenCount--;
        this.onChange?.(key, 'half-open', 'closed', 'probe-success');
        return;
      default:
        return; // open: a request sent before it opened
    }
  }

  failure(key: string): void {
    let e = this.entries.get(key);
    if (e === undefined) {
      e = new Entry(this.rateOn);
      this.entries.set(key, e);
    }
    switch (e.state) {
      case 'closed': {
        e.consecutive++;
        if (this.consecutiveFailures > 0 && e.consecutive >= this.consecutiveFailures) {
          this.open(key, e, 'closed', 'consecutive-failures');
          return;
        }
        if (e.epochs !== null && this.record(e, true)) this.open(key, e, 'closed', 'failure-rate');
        return;
      }
      case 'half-open':
        this.halfOpenCount--;
        this.open(key, e, 'half-open', 'probe-failure');
        return;
      default:
        return; // open: a request sent before it opened
    }
  }

  state(key: string): BreakerState {
    return this.entries.get(key)?.state ?? 'closed';
  }

  /** Endpoints no longer in the set: their state is dropped. */
  retain(keys: ReadonlySet<string> | ((key: string) => boolean)): void {
    const keep = typeof keys === 'function' ? keys : (k: string) => keys.has(k);
    for (const k of this.entries.keys()) if (!keep(k)) this.forget(k);
  }

  /** One endpoint left the set: its state is dropped, O(1). */
  forget(key: string): void {
    const e = this.entries.get(key);
    if (e === undefined) return;
    if (e.state === 'open') this.openCount--;
    else if (e.state === 'half-open') this.halfOpenCount--;
    this.entries.delete(key);
  }

  /**
   * { closed, open, halfOpen } counts for metrics / error bodies. `closed` counts the keys this
   * breaker keeps state for (those that ever failed, or ever reported with `failureRate` on), not
   * every endpoint of the service: keys never seen are closed without an entry.
   */
  /** Whether any breaker is open or half-open (a cheap test before gating a pick). */
  get anyNotClosed(): boolean {
    return this.openCount + this.halfOpenCount > 0;
  }

  counts(): { closed: number; open: number; halfOpen: number } {
    return { closed: this.entries.size - this.openCount - this.halfOpenCount, open: this.openCount, halfOpen: this.halfOpenCount };
  }

  /** The backoff of the n-th opening since the last close (n from 0), for an rng draw r in [0, 1). */
  private backoffMs(n: number, r: number): number {
    const ceiling = Math.min(this.maxMs, this.minMs * 2 ** (n + 1));
    if (!(r >= 0)) r = 0; // NaN or negative from a bad rng: the shortest delay, never NaN
    if (r >= 1) r = 1 - Number.EPSILON;
    return this.minMs + Math.floor(r * (ceiling - this.minMs));
  }

  /** Opens the breaker of `e` (from closed or half-open; the caller fixed the half-open count). */
  private open(key: string, e: Entry, from: BreakerState, reason: BreakerReason): void {
    e.state = 'open';
    e.dueAt = this.clock.now() + this.backoffMs(e.opens, this.rng());
    // Stop counting once the ceiling is capped: the exponent stays small.
    if (this.minMs * 2 ** (e.opens + 1) < this.maxMs) e.opens++;
    e.consecutive = 0;
    e.clearWindow();
    this.openCount++;
    this.onChange?.(key, from, 'open', reason);
  }

  /** Records an outcome in the ring; true when the failure-rate trigger is met. */
  private record(e: Entry, failed: boolean): boolean {
    const epochs = e.epochs!;
    const total = e.total!;
    const fails = e.failed!;
    const epoch = Math.floor(this.clock.now() / this.slotMs);
    const i = ((epoch % WINDOW_SLOTS) + WINDOW_SLOTS) % WINDOW_SLOTS;
    if (epochs[i] !== epoch) {
      epochs[i] = epoch;
      total[i] = 0;
      fails[i] = 0;
    }
    total[i] = total[i]! + 1;
    if (!failed) return false;
    fails[i] = fails[i]! + 1;
    let n = 0;
    let f = 0;
    const oldest = epoch - WINDOW_SLOTS;
    for (let j = 0; j < WINDOW_SLOTS; j++) {
      const ep = epochs[j]!;
      if (ep > oldest && ep <= epoch) {
        n += total[j]!;
        f += fails[j]!;
      }
    }
    return n >= this.minRequests && f / n >= this.threshold;
  }
}
