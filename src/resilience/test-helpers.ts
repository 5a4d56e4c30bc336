/** Helpers of the resilience tests (not used by the policies themselves). */
import { createRng } from '../balance/rng.js';
import type { Clock } from '../core/clock.js';

/** A seeded generator for repeatable sequences (the balancers' sfc32). */
export const seeded = (seed: number): (() => number) => createRng(seed);

/** A clock the test can move backwards (ManualClock only moves forward); it has no timers. */
export class SettableClock implements Clock {
  constructor(public t: number) {}
  now(): number {
    return this.t;
  }
  setTimeout(): never {
    throw new Error('no timers expected');
  }
  setInterval(): never {
    throw new Error('no timers expected');
  }
}
