/**
 * A retry budget (Finagle's RetryBudget, Linkerd's retry budget): every original request deposits
 * `ratio` of a retry, every retry withdraws one, and a floor of `minRetriesPerSecond` keeps
 * low-traffic services able to retry. Counts live in a ring of time slots (a tenth of `windowMs`
 * each) that expire lazily from `clock.now()`; no timers, no allocation per call.
 *
 * Guarantee, with B = minRetriesPerSecond × windowMs / 1000: the ring holds the current slot and
 * the 10 before it, and a retry is allowed only while retries in the ring ≤ B + ratio × requests
 * in the ring. So (a) retries in any window of `windowMs` ≤ B + ratio × requests in that window
 * plus the slot before it; (b) from creation up to any slot s (slots counted from 0 at creation),
 * retries ≤ ratio × requests + B × (⌊s / 11⌋ + 1), i.e. at most ratio × requests +
 * minRetriesPerSecond × elapsed seconds + B. A clock that goes backwards counts in the current slot.
 */
import type { Clock } from '../core/clock.js';
import { SkeinError } from '../core/errors.js';
import { TRAFFIC_DEFAULTS, type TrafficPolicy } from '../api/traffic.js';

type RetryBudgetPolicy = TrafficPolicy['budget'];

/**
 * The budget's settings are the traffic policy's (`TrafficPolicy['budget']`, src/api/traffic):
 * each left out takes its default from TRAFFIC_DEFAULTS.budget (ratio 0.2, 10 retries per second,
 * a 10 s window; Linkerd's).
 */
export type RetryBudgetOptions = Partial<RetryBudgetPolicy> & { clock: Clock };

/** The defaults of `RetryBudgetOptions`: the traffic policy's (one place, src/api/traffic). */
export const DEFAULT_RETRY_BUDGET: RetryBudgetPolicy = TRAFFIC_DEFAULTS.budget;

/** Slots per window; the ring holds one more (the current, partly elapsed slot). */
const SLOTS_PER_WINDOW = 10;
const RING = SLOTS_PER_WINDOW + 1;
/** Absorbs rounding in ratio × deposits (0.2 × 15 is 3.0000000000000004, other products fall just short). */
const EPS = 1e-9;

/** k mod RING in 0..RING-1, also for slots before the epoch. */
function ringIndex(k: number): number {
  return ((k % RING) + RING) % RING;
}

function invalid(field: string, message: string): SkeinError {
  return new SkeinError('SKEIN_E_VALIDATION', `retry budget: ${message}`, { field });
}

export class RetryBudget {
  readonly ratio: number;
  readonly minRetriesPerSecond: number;
  readonly windowMs: number;
  private readonly clock: Clock;
  private readonly slotMs: number;
  /** B: the retries the floor grants per window. */
  private readonly reserve: number;
  private readonly deposits = new Float64Array(RING);
  private readonly withdrawals = new Float64Array(RING);
  private depositSum = 0;
  private withdrawalSum = 0;
  /** The absolute slot number (floor(now / slotMs)) the ring was last rolled to. */
  private slot: number;
  /** The ring index of `slot`. */
  private idx: number;
  private refused = 0;

  constructor(opts: RetryBudgetOptions) {
    const ratio = opts.ratio ?? DEFAULT_RETRY_BUDGET.ratio;
    const floor = opts.minRetriesPerSecond ?? DEFAULT_RETRY_BUDGET.minRetriesPerSecond;
    const windowMs = opts.windowMs ?? DEFAULT_RETRY_BUDGET.windowMs;
    if (typeof ratio !== 'number' || !(ratio >= 0 && ratio <= 1)) throw invalid('ratio', `ratio must be a number from 0 to 1, not ${String(ratio)}`);
    if (typeof floor !== 'number' || !Number.isFinite(floor) || floor < 0) throw invalid('minRetriesPerSecond', `minRetriesPerSecond must be a finite number >= 0, not ${String(floor)}`);
    if (typeof windowMs !== 'number' || !Number.isFinite(windowMs) || windowMs < 1) throw invalid('windowMs', `windowMs must be a finite number >= 1, not ${String(windowMs)}`);
    if (opts.clock == null || typeof opts.clock.now !== 'function') throw invalid('clock', 'clock must be a Clock');
    this.ratio = ratio;
    this.minRetriesPerSecond = floor;
    this.windowMs = windowMs;
    this.clock = opts.clock;
    this.slotMs = windowMs / SLOTS_PER_WINDOW;
    this.reserve = (floor * windowMs) / 1000;
    const s = Math.floor(this.clock.now() / this.slotMs);
    this.slot = Number.isFinite(s) ? s : 0;
    this.idx = ringIndex(this.slot);
  }

  /** An original request (not a retry) was sent: it earns `ratio` of a retry. */
  deposit(): void {
    this.roll();
    this.deposits[this.idx] = (this.deposits[this.idx] as number) + 1;
    this.depositSum++;
  }

  /** Takes one retry if the budget has one: true, and the retry is counted; false when exhausted. */
  tryWithdraw(): boolean {
    this.roll();
    if (this.balance() < 1) {
      this.refused++;
      return false;
    }
    this.withdrawals[this.idx] = (this.withdrawals[this.idx] as number) + 1;
    this.withdrawalSum++;
    return true;
  }

  /** Whole retries that could be taken now (for the proxy's explain header and error bodies). */
  get available(): number {
    this.roll();
    const b = Math.floor(this.balance());
    return b > 0 ? b : 0;
  }

  /** Times tryWithdraw refused since creation (a counter for metrics). */
  get exhausted(): number {
    return this.refused;
  }

  private balance(): number {
    return this.reserve + this.ratio * this.depositSum - this.withdrawalSum + EPS;
  }

  /** Expires the slots time has moved past. Same slot, backwards or NaN: nothing to do. */
  private roll(): void {
    const s = Math.floor(this.clock.now() / this.slotMs);
    if (!(s > this.slot) || !Number.isFinite(s)) return;
    if (s - this.slot >= RING) {
      this.deposits.fill(0);
      this.withdrawals.fill(0);
      this.depositSum = 0;
      this.withdrawalSum = 0;
    } else {
      for (let k = this.slot + 1; k <= s; k++) {
        const i = ringIndex(k);
        this.depositSum -= this.deposits[i] as number;
        this.withdrawalSum -= this.withdrawals[i] as number;
        this.deposits[i] = 0;
        this.withdrawals[i] = 0;
      }
    }
    this.slot = s;
    this.idx = ringIndex(s);
  }
}
