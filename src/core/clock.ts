/** Time is injected: everything with a timer takes a Clock, so tests never sleep. */

/** The longest delay a Node timer takes (2^31 - 1 ms); longer ones fire at once. */
export const MAX_TIMER_MS = 2_147_483_647;

export interface TimerHandle {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  setInterval(fn: () => void, ms: number): TimerHandle;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return { cancel: () => clearTimeout(t) };
  },
  setInterval(fn, ms) {
    const t = setInterval(fn, ms);
    t.unref?.();
    return { cancel: () => clearInterval(t) };
  },
};

interface ManualTimer {
  id: number;
  at: number;
  every: number | null;
  fn: () => void;
}

/** A clock for tests: time moves only when `advance` is called. */
export class ManualClock implements Clock {
  private t: number;
  private seq = 0;
  private timers = new Map<number, ManualTimer>();
  private readonly earlyMs: number;

  /**
   * `earlyMs`: timers fire that much before `now()` reaches their time, and wait at least 1 ms, as
   * Node's do against the precise clock (libuv counts whole ms from the start of the loop's turn;
   * a delay under 1 ms becomes 1 ms). 0 (the default): exactly on time.
   */
  constructor(start = 1_700_000_000_000, { earlyMs = 0 }: { readonly earlyMs?: number } = {}) {
    this.t = start;
    this.earlyMs = earlyMs;
  }

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    return this.add(fn, ms, null);
  }

  setInterval(fn: () => void, ms: number): TimerHandle {
    return this.add(fn, ms, Math.max(1, ms));
  }

  get pending(): number {
    return this.timers.size;
  }

  /** Moves time forward, firing due timers in time order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let next: ManualTimer | undefined;
      for (const tm of this.timers.values()) {
        if (tm.at <= end && (next === undefined || tm.at < next.at || (tm.at === next.at && tm.id < next.id))) next = tm;
      }
      if (next === undefined) break;
      this.t = Math.max(this.t, next.at);
      if (next.every === null) this.timers.delete(next.id);
      else next.at += next.every;
      next.fn();
    }
    this.t = end;
  }

  private add(fn: () => void, ms: number, every: number | null): TimerHandle {
    const id = ++this.seq;
    const delay = this.earlyMs > 0 ? Math.max(1, ms) - this.earlyMs : Math.max(0, ms);
    this.timers.set(id, { id, at: this.t + delay, every, fn });
    return { cancel: () => this.timers.delete(id) };
  }
}

const TIME_ORIGIN = performance.timeOrigin;

/**
 * The system clock with sub-millisecond `now()` (performance.now() on the epoch's origin): for
 * latencies that feed load-aware balancing, where a loopback call takes a fraction of a ms.
 */
export const preciseClock: Clock = {
  // timeOrigin read once: its getter allocates, and the proxy reads this clock per request.
  now: () => TIME_ORIGIN + performance.now(),
  setTimeout: systemClock.setTimeout,
  setInterval: systemClock.setInterval,
};
