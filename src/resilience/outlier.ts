/**
 * Outlier detection: passive health checking in the manner of Envoy's.
 *
 * One `OutlierDetector` serves one destination service. The proxy reports the outcome of every
 * request (`success`, `failure` with its kind) and the balancer's gate asks `isEjected` of the
 * candidates; an ejected endpoint gets no traffic until its ejection time is over.
 *
 * Ejection triggers:
 * - consecutive ones, checked inline as failures are reported: `consecutive5xx` 5xx responses
 *   (a gateway failure is a 5xx too), `consecutiveGatewayFailure` 502/503/504 responses,
 *   `consecutiveLocalOriginFailure` local-origin failures (the proxy could not reach the
 *   endpoint). A success resets all three streaks; a failure resets none (a 500 does not end a
 *   gateway streak, unlike Envoy, which resets the gateway streak on a non-gateway 5xx), and
 *   local-origin failures are counted apart from 5xx ones (Envoy's split_external_local_origin_errors).
 *   When a streak reaches its threshold the endpoint is ejected and its streaks are reset; if the
 *   max-percent cap refuses the ejection, only that streak is reset (as in Envoy), so it takes a
 *   full streak again before the next attempt.
 * - interval ones, every `intervalMs` in `evaluate()`, over the outcomes reported since the last
 *   evaluation by endpoints that are not ejected (all failure kinds count as failures):
 *   success rate (eject when rate < mean - stdevFactor * stdev, population stdev, rates in
 *   percent, among the endpoints with >= requestVolume requests, when there are at least
 *   minimumHosts of them) and failure percentage (eject when failure % >= threshold, same
 *   volume/host minimums). Candidates are ejected worst first, so when the cap bites it keeps
 *   the worst endpoints out.
 *
 * Ejection time: baseEjectionMs x the endpoint's ejection multiplier, capped at maxEjectionMs. The
 * multiplier grows by one with each ejection (while base x multiplier < max) and, as in Envoy,
 * shrinks by one at every evaluation at which the endpoint is not ejected and has been back for
 * at least one interval, so an endpoint that stays healthy gets short ejections again.
 * An ejection ends at the first of: `isEjected` (or an outcome) asked after its time is over, or
 * the next evaluation; either way a 'return' event is emitted and the streaks are reset.
 *
 * Cap: never more than max(1, floor(n x maxEjectionPercent / 100)) endpoints ejected, n being
 * the endpoints set with `setEndpoints` (one may always be ejected, as Envoy's
 * always_eject_one_host). Expired ejections not yet ended are ended before the cap refuses one.
 *
 * Keys: the detector keeps state only for the keys given to `setEndpoints` (or `addEndpoint`,
 * one at a time, and forgotten with `removeEndpoint`); outcomes for other
 * keys (a request to an endpoint that has since left) are ignored and `isEjected` is false for
 * them. Dropping an ejected endpoint emits no event. Outcomes reported while an endpoint is
 * ejected (requests sent before) are ignored.
 *
 * Hot path: `success`, `failure` and `isEjected` do not allocate (only an ejection or return,
 * which emits an event, does) and set no timers; time is `clock.now()`. The only timer is the
 * evaluation interval set at construction (`stop()` cancels it).
 */
import type { Clock, TimerHandle } from '../core/clock.js';
import { SkeinError } from '../core/errors.js';
import { TRAFFIC_DEFAULTS, type OutlierPolicy } from '../api/traffic.js';

export type FailureKind = 'upstream-5xx' | 'gateway' | 'local-origin';
// gateway = 502/503/504 from the upstream; upstream-5xx = any 5xx (a gateway failure is also a 5xx);
// local-origin = the proxy could not reach it: connect refused/timeout, reset, per-try timeout.

export interface OutlierEvent {
  type: 'eject' | 'return';
  key: string;
  /** eject: an `OutlierReason` other than 'ejection-time-over'; return: 'ejection-time-over'. */
  reason: string;
  /** The ejection multiplier after the event. */
  ejections: number;
  /** eject: when the ejection ends (clock ms); return: null. */
  untilMs: number | null;
}

/**
 * The detector's settings are the traffic policy's (`OutlierPolicy`, src/api/traffic): each left
 * out takes its default from TRAFFIC_DEFAULTS.outlier (Envoy's, except that the interval detectors
 * are off and consecutiveGatewayFailure is 0: consecutive5xx counts gateway failures too).
 * maxEjectionMs defaults to max(its default, baseEjectionMs); at least one endpoint may always be
 * ejected (Envoy's rule); 0 turns a consecutive trigger off.
 */
export type OutlierOptions = Partial<OutlierPolicy> & {
  clock: Clock;
  onEvent?: (e: OutlierEvent) => void;
};

/** The defaults of `OutlierOptions`: the traffic policy's (one place, src/api/traffic, docs/traffic.md). */
export const DEFAULT_OUTLIER: OutlierPolicy = TRAFFIC_DEFAULTS.outlier;

/** Envoy's defaults for success-rate ejection, to turn it on with: `successRate: ENVOY_SUCCESS_RATE`. */
export const ENVOY_SUCCESS_RATE = TRAFFIC_DEFAULTS.successRate;

/** Envoy's defaults for failure-percentage ejection. */
export const ENVOY_FAILURE_PERCENTAGE = TRAFFIC_DEFAULTS.failurePercentage;

/** The reasons of the events (stable strings, fit for a metric label). */
export type OutlierReason =
  | 'consecutive-5xx'
  | 'consecutive-gateway-failure'
  | 'consecutive-local-origin-failure'
  | 'success-rate'
  | 'failure-percentage'
  | 'ejection-time-over';

class Host {
  ejected = false;
  /** While ejected: when the ejection ends. */
  untilMs = 0;
  /** The ejection multiplier (decays while healthy). */
  ejections = 0;
  /** Ejections ever (for debug output). */
  totalEjections = 0;
  /** When the last ejection ended; null if never ejected. */
  returnedAt: number | null = null;
  c5xx = 0;
  cGateway = 0;
  cLocal = 0;
  /** Outcomes since the last evaluation. */
  ok = 0;
  failed = 0;

  resetStreaks(): void {
    this.c5xx = 0;
    this.cGateway = 0;
    this.cLocal = 0;
  }
}

interface Candidate {
  key: string;
  host: Host;
  /** Success rate in percent. */
  rate: number;
}

function invalid(field: string, message: string): SkeinError {
  return new SkeinError('SKEIN_E_VALIDATION', `outlier: ${message}`, { field });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}

/** Validates a number option; `dflt` undefined: required. */
function num(field: string, v: unknown, dflt: number | undefined, min: number, max: number, integer: boolean, minExclusive = false): number {
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || (minExclusive && v === min) || v > max || (integer && !Number.isInteger(v))) {
    const range = max === Infinity ? `${minExclusive ? '>' : '>='} ${min}` : `in ${min}..${max}`;
    throw invalid(field, `${field} must be ${integer ? 'an integer' : 'a number'} ${range}, not ${String(v)}`);
  }
  return v;
}

const byRateAscending = (a: Candidate, b: Candidate): number => a.rate - b.rate;

export class OutlierDetector {
  private readonly clock: Clock;
  private readonly onEvent: ((e: OutlierEvent) => void) | undefined;
  private readonly c5xx: number;
  private readonly cGateway: number;
  private readonly cLocal: number;
  private readonly intervalMs: number;
  private readonly baseMs: number;
  private readonly maxMs: number;
  private readonly maxPercent: number;
  private readonly sr: { minimumHosts: number; requestVolume: number; stdevFactor: number } | null;
  private readonly fp: { threshold: number; minimumHosts: number; requestVolume: number } | null;
  private hosts = new Map<string, Host>();
  /** Hosts with `ejected` set (some may be over their time and not yet returned). */
  private active = 0;
  /** The keys of those hosts: what `ejectedKeys` walks (the panic threshold counts them without a walk over every host). */
  private readonly ejectedSet = new Set<string>();
  private timer: TimerHandle | null;

  constructor(opts: OutlierOptions) {
    if (!isObject(opts)) throw invalid('clock', 'options with a clock are required');
    const { clock } = opts;
    if (!isObject(clock) || typeof clock.now !== 'function' || typeof clock.setInterval !== 'function') throw invalid('clock', 'clock must be a Clock');
    if (opts.onEvent !== undefined && typeof opts.onEvent !== 'function') throw invalid('onEvent', 'onEvent must be a function');
    this.clock = clock;
    this.onEvent = opts.onEvent;
    const D = DEFAULT_OUTLIER;
    this.c5xx = num('consecutive5xx', opts.consecutive5xx, D.consecutive5xx, 0, Infinity, true);
    this.cGateway = num('consecutiveGatewayFailure', opts.consecutiveGatewayFailure, D.consecutiveGatewayFailure, 0, Infinity, true);
    this.cLocal = num('consecutiveLocalOriginFailure', opts.consecutiveLocalOriginFailure, D.consecutiveLocalOriginFailure, 0, Infinity, true);
    this.intervalMs = num('intervalMs', opts.intervalMs, D.intervalMs, 0, Infinity, false, true);
    this.baseMs = num('baseEjectionMs', opts.baseEjectionMs, D.baseEjectionMs, 0, Infinity, false, true);
    // The default max is never below the base (Envoy: max(300 s, base)).
    this.maxMs = num('maxEjectionMs', opts.maxEjectionMs, Math.max(D.maxEjectionMs, this.baseMs), 0, Infinity, false);
    if (this.maxMs < this.baseMs) throw invalid('maxEjectionMs', `maxEjectionMs must be >= baseEjectionMs (${this.baseMs}), not ${this.maxMs}`);
    this.maxPercent = num('maxEjectionPercent', opts.maxEjectionPercent, D.maxEjectionPercent, 0, 100, false);

    const sr = opts.successRate ?? null;
    if (sr !== null) {
      if (!isObject(sr)) throw invalid('successRate', 'successRate must be an object or null');
      this.sr = {
        minimumHosts: num('successRate.minimumHosts', sr.minimumHosts, undefined, 0, Infinity, true),
        requestVolume: num('successRate.requestVolume', sr.requestVolume, undefined, 1, Infinity, true),
        stdevFactor: num('successRate.stdevFactor', sr.stdevFactor, undefined, 0, Infinity, false),
      };
    } else this.sr = null;

    const fp = opts.failurePercentage ?? null;
    if (fp !== null) {
      if (!isObject(fp)) throw invalid('failurePercentage', 'failurePercentage must be an object or null');
      this.fp = {
        threshold: num('failurePercentage.threshold', fp.threshold, undefined, 0, 100, false),
        minimumHosts: num('failurePercentage.minimumHosts', fp.minimumHosts, undefined, 0, Infinity, true),
        requestVolume: num('failurePercentage.requestVolume', fp.requestVolume, undefined, 1, Infinity, true),
      };
    } else this.fp = null;

    this.timer = clock.setInterval(() => this.evaluate(), this.intervalMs);
  }

  /** The endpoint keys currently in the service (ejection percentage is of these; gone keys are forgotten). */
  setEndpoints(keys: readonly string[]): void {
    const next = new Map<string, Host>();
    for (const k of keys) next.set(k, this.hosts.get(k) ?? new Host());
    for (const [k, h] of this.hosts)
      if (h.ejected && !next.has(k)) {
        this.active--;
        this.ejectedSet.delete(k);
      }
    this.hosts = next;
  }

  /** One endpoint joined the service (nothing happens for a key already known), O(1). */
  addEndpoint(key: string): void {
    if (!this.hosts.has(key)) this.hosts.set(key, new Host());
  }

  /** One endpoint left the service: its state is forgotten (no event, even if it was ejected), O(1). */
  removeEndpoint(key: string): void {
    const h = this.hosts.get(key);
    if (h === undefined) return;
    if (h.ejected) {
      this.active--;
      this.ejectedSet.delete(key);
    }
    this.hosts.delete(key);
  }

  success(key: string): void {
    const h = this.hosts.get(key);
    if (h === undefined || !this.usable(key, h)) return;
    h.ok++;
    h.resetStreaks();
  }

  failure(key: string, kind: FailureKind): void {
    const h = this.hosts.get(key);
    if (h === undefined || !this.usable(key, h)) return;
    h.failed++;
    switch (kind) {
      case 'gateway':
        h.cGateway++;
        h.c5xx++;
        if (this.cGateway > 0 && h.cGateway >= this.cGateway) {
          h.cGateway = 0;
          if (this.eject(key, h, 'consecutive-gateway-failure', this.clock.now())) return;
        }
        if (this.c5xx > 0 && h.c5xx >= this.c5xx) {
          h.c5xx = 0;
          this.eject(key, h, 'consecutive-5xx', this.clock.now());
        }
        return;
      case 'upstream-5xx':
        h.c5xx++;
        if (this.c5xx > 0 && h.c5xx >= this.c5xx) {
          h.c5xx = 0;
          this.eject(key, h, 'consecutive-5xx', this.clock.now());
        }
        return;
      case 'local-origin':
        h.cLocal++;
        if (this.cLocal > 0 && h.cLocal >= this.cLocal) {
          h.cLocal = 0;
          this.eject(key, h, 'consecutive-local-origin-failure', this.clock.now());
        }
        return;
      default:
        return; // an unknown kind (from untyped code): counted in the interval stats only
    }
  }

  /** Allocation free. An ejection whose time is over ends lazily here too (returns false and emits 'return'), not only on the interval. */
  isEjected(key: string): boolean {
    const h = this.hosts.get(key);
    if (h === undefined || !h.ejected) return false;
    const now = this.clock.now();
    if (now < h.untilMs) return true;
    this.unEject(key, h, now);
    return false;
  }

  /** Runs the interval evaluation now (success rate, failure percentage, un-ejection). The detector schedules this itself with clock.setInterval(intervalMs) from construction; stop() cancels it. */
  evaluate(): void {
    const now = this.clock.now();
    if (this.active > 0) this.returnDue(now);

    const sr = this.sr;
    const fp = this.fp;
    const n = this.hosts.size;
    if ((sr !== null && n >= sr.minimumHosts) || (fp !== null && n >= fp.minimumHosts)) {
      // Both lists are taken before any ejection of this round (as Envoy does).
      const srHosts: Candidate[] = [];
      const fpHosts: Candidate[] = [];
      let sum = 0;
      for (const [key, host] of this.hosts) {
        const volume = host.ok + host.failed;
        if (host.ejected || volume === 0) continue;
        const rate = (100 * host.ok) / volume;
        if (sr !== null && volume >= sr.requestVolume) {
          srHosts.push({ key, host, rate });
          sum += rate;
        }
        if (fp !== null && volume >= fp.requestVolume) fpHosts.push({ key, host, rate });
      }
      if (sr !== null && srHosts.length > 0 && srHosts.length >= sr.minimumHosts) {
        const mean = sum / srHosts.length;
        let variance = 0;
        for (const c of srHosts) variance += (c.rate - mean) ** 2;
        const stdev = Math.sqrt(variance / srHosts.length);
        const threshold = mean - sr.stdevFactor * stdev;
        const out = srHosts.filter((c) => c.rate < threshold).sort(byRateAscending);
        for (const c of out) this.eject(c.key, c.host, 'success-rate', now);
      }
      if (fp !== null && fpHosts.length > 0 && fpHosts.length >= fp.minimumHosts) {
        const out = fpHosts.filter((c) => 100 - c.rate >= fp.threshold).sort(byRateAscending);
        for (const c of out) this.eject(c.key, c.host, 'failure-percentage', now);
      }
    }

    for (const h of this.hosts.values()) {
      h.ok = 0;
      h.failed = 0;
      // Decay: healthy, and back for at least one interval.
      if (!h.ejected && h.ejections > 0 && h.returnedAt !== null && now - h.returnedAt >= this.intervalMs) h.ejections--;
    }
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = null;
  }

  /** Whether any endpoint may be ejected (ejections whose time is over included): a cheap test before gating a pick. */
  get anyEjected(): boolean {
    return this.active > 0;
  }

  /**
   * The keys of the endpoints marked ejected, O(1): some may be over their time and not yet
   * returned (ask `isEjected`, which ends those). Live: ending an ejection while walking it is safe.
   */
  ejectedKeys(): ReadonlySet<string> {
    return this.ejectedSet;
  }

  /** When `key`'s ejection ends (clock ms); null when it is not ejected. */
  ejectedUntil(key: string): number | null {
    const h = this.hosts.get(key);
    return h === undefined || !h.ejected ? null : h.untilMs;
  }

  /** Endpoints ejected now (an ejection over its time but not yet ended is not counted). */
  get ejectedCount(): number {
    if (this.active === 0) return 0;
    const now = this.clock.now();
    let n = 0;
    for (const h of this.hosts.values()) if (h.ejected && now < h.untilMs) n++;
    return n;
  }

  /** For debug output: per key { ejected, ejections, untilMs, consecutive counts }. */
  snapshot(): Record<string, object> {
    const now = this.clock.now();
    return Object.fromEntries(
      [...this.hosts].map(([key, h]) => {
        const ejected = h.ejected && now < h.untilMs;
        return [
          key,
          {
            ejected,
            ejections: h.ejections,
            totalEjections: h.totalEjections,
            untilMs: ejected ? h.untilMs : null,
            consecutive5xx: h.c5xx,
            consecutiveGatewayFailure: h.cGateway,
            consecutiveLocalOriginFailure: h.cLocal,
            intervalRequests: h.ok + h.failed,
            intervalFailures: h.failed,
          },
        ];
      }),
    );
  }

  /** False while `h` is ejected (its outcomes are ignored); ends an ejection whose time is over. */
  private usable(key: string, h: Host): boolean {
    if (!h.ejected) return true;
    const now = this.clock.now();
    if (now < h.untilMs) return false;
    this.unEject(key, h, now);
    return true;
  }

  /** The most endpoints that may be ejected at once. */
  private cap(): number {
    // The epsilon keeps e.g. 3 × 33.333... / 100 from flooring to 0.99...
    return Math.max(1, Math.floor((this.hosts.size * this.maxPercent) / 100 + 1e-9));
  }

  /** Ejects `h` unless it is ejected already or the cap refuses; true when it was ejected. */
  private eject(key: string, h: Host, reason: OutlierReason, now: number): boolean {
    if (h.ejected) return false;
    if (this.active >= this.cap()) {
      this.returnDue(now);
      if (this.active >= this.cap()) return false;
    }
    if (this.baseMs * h.ejections < this.maxMs) h.ejections++;
    h.ejected = true;
    h.untilMs = now + Math.min(this.baseMs * h.ejections, this.maxMs);
    h.totalEjections++;
    h.resetStreaks();
    this.active++;
    this.ejectedSet.add(key);
    this.onEvent?.({ type: 'eject', key, reason, ejections: h.ejections, untilMs: h.untilMs });
    return true;
  }

  private unEject(key: string, h: Host, now: number): void {
    h.ejected = false;
    h.returnedAt = now;
    h.resetStreaks();
    // Judge it on what it does from now on.
    h.ok = 0;
    h.failed = 0;
    this.active--;
    this.ejectedSet.delete(key);
    this.onEvent?.({ type: 'return', key, reason: 'ejection-time-over', ejections: h.ejections, untilMs: null });
  }

  /** Ends every ejection whose time is over. */
  private returnDue(now: number): void {
    for (const [key, h] of this.hosts) if (h.ejected && now >= h.untilMs) this.unEject(key, h, now);
  }
}
