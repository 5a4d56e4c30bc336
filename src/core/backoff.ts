/**
 * Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"):
 * the n-th delay (n from 0) is uniform in [0, min(cap, base * 2^n)). `next()` returns the delay
 * for the next attempt and moves on; `reset()` starts over after a success.
 *
 * No timers here: the caller schedules the delay on its own Clock.
 */
import { SkeinError } from './errors.js';

/** A source of doubles in [0, 1), like Math.random. */
export type Rng = () => number;

export interface BackoffOptions {
  /** The ceiling of the first delay, in ms. Default 100. */
  baseMs?: number;
  /** The largest ceiling, in ms. Default 10,000. */
  capMs?: number;
  /** Default Math.random. */
  rng?: Rng;
}

/** What a retry loop needs from a backoff policy (so tests can pass their own). */
export interface BackoffPolicy {
  /** The delay before the next attempt, in ms. */
  next(): number;
  /** Called after a success: the next delay is drawn from the first ceiling again. */
  reset(): void;
}

export const DEFAULT_BACKOFF_BASE_MS = 100;
export const DEFAULT_BACKOFF_CAP_MS = 10_000;

export class Backoff implements BackoffPolicy {
  readonly baseMs: number;
  readonly capMs: number;
  private readonly rng: Rng;
  private n = 0;

  constructor(opts: BackoffOptions = {}) {
    const base = opts.baseMs ?? DEFAULT_BACKOFF_BASE_MS;
    const cap = opts.capMs ?? DEFAULT_BACKOFF_CAP_MS;
    if (!Number.isFinite(base) || base <= 0) throw new SkeinError('SKEIN_E_VALIDATION', `backoff: baseMs must be a positive number, not ${String(base)}`, { field: 'baseMs' });
    if (!Number.isFinite(cap) || cap < base) throw new SkeinError('SKEIN_E_VALIDATION', `backoff: capMs must be a number >= baseMs (${base}), not ${String(cap)}`, { field: 'capMs' });
    this.baseMs = base;
    this.capMs = cap;
    this.rng = opts.rng ?? Math.random;
  }

  /** The exponent of the next ceiling: attempts since the last reset, counted until the cap is reached. */
  get attempt(): number {
    return this.n;
  }

  /** The ceiling the next delay is drawn under: min(cap, base * 2^attempt). */
  get ceiling(): number {
    // 2^n overflows to Infinity long after it passed any sane cap; min() handles that.
    return Math.min(this.capMs, this.baseMs * 2 ** this.n);
  }

  next(): number {
    const ceiling = this.ceiling;
    // Stop counting once the ceiling is capped: the exponent stays small and meaningful.
    if (ceiling < this.capMs) this.n++;
    let r = this.rng();
    if (!(r >= 0)) r = 0; // NaN or negative from a bad rng: the shortest delay, never NaN
    if (r >= 1) r = 1 - Number.EPSILON;
    return Math.floor(r * ceiling);
  }

  reset(): void {
    this.n = 0;
  }
}
