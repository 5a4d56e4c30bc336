import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock, type Clock } from '../core/clock.js';
import { SkeinError } from '../core/errors.js';
import { DEFAULT_RETRY_BUDGET, RetryBudget, type RetryBudgetOptions } from './retry-budget.js';
import { seeded, SettableClock } from './test-helpers.js';

/** ManualClock's start, a whole number of seconds, so slots (windowMs / 10) start at t0. */
const T0 = 1_700_000_000_000;

/** Withdraws until refused; returns how many were taken. */
function drain(b: RetryBudget, max = 1_000_000): number {
  let n = 0;
  while (n < max && b.tryWithdraw()) n++;
  return n;
}


test('defaults: ratio 0.2, 10 retries/s, 10 s window', () => {
  assert.deepEqual(DEFAULT_RETRY_BUDGET, { ratio: 0.2, minRetriesPerSecond: 10, windowMs: 10_000 });
  const b = new RetryBudget({ clock: new ManualClock() });
  assert.equal(b.ratio, 0.2);
  assert.equal(b.minRetriesPerSecond, 10);
  assert.equal(b.windowMs, 10_000);
});

test('floor with no traffic: minRetriesPerSecond × window seconds, then refused and counted', () => {
  const b = new RetryBudget({ clock: new ManualClock() });
  assert.equal(b.available, 100);
  assert.equal(b.exhausted, 0);
  assert.equal(drain(b), 100);
  assert.equal(b.available, 0);
  assert.equal(b.exhausted, 1, 'the refusal that ended the drain');
  assert.equal(b.tryWithdraw(), false);
  assert.equal(b.tryWithdraw(), false);
  assert.equal(b.exhausted, 3);
  const small = new RetryBudget({ clock: new ManualClock(), minRetriesPerSecond: 2, windowMs: 1500 });
  assert.equal(small.available, 3);
});

test('ratio bound under steady load: 1000 requests earn 200 retries on top of the floor', () => {
  const clock = new ManualClock();
  const b = new RetryBudget({ clock });
  // 1000 requests spread over 5 s (one every 5 ms), all inside the window.
  for (let i = 0; i < 1000; i++) {
    b.deposit();
    clock.advance(5);
  }
  assert.equal(b.available, 300);
  assert.equal(drain(b), 300);
  assert.equal(b.exhausted, 1);

  const noFloor = new RetryBudget({ clock, minRetriesPerSecond: 0 });
  for (let i = 0; i < 1000; i++) noFloor.deposit();
  assert.equal(drain(noFloor), 200);
  // Retries are not deposits: only further original requests earn more.
  for (let i = 0; i < 4; i++) noFloor.deposit();
  assert.equal(noFloor.available, 0, '4 × 0.2 is less than one whole retry');
  noFloor.deposit();
  assert.equal(noFloor.available, 1);
});

test('fractional earnings: available counts whole retries only', () => {
  const b = new RetryBudget({ clock: new ManualClock(), ratio: 0.2, minRetriesPerSecond: 0 });
  for (let i = 0; i < 7; i++) b.deposit();
  assert.equal(b.available, 1);
  assert.equal(b.tryWithdraw(), true);
  assert.equal(b.tryWithdraw(), false);
  for (let i = 0; i < 3; i++) b.deposit();
  assert.equal(b.available, 1, '10 requests × 0.2 = 2, one taken');
  // 0.2 × 15 rounds to 3.0000000000000004 and 0.1 × 3 to 0.30000000000000004: whole retries still exact.
  const tenth = new RetryBudget({ clock: new ManualClock(), ratio: 0.1, minRetriesPerSecond: 0 });
  for (let i = 0; i < 30; i++) tenth.deposit();
  assert.equal(drain(tenth), 3);
});

test('ratio 0: only the floor; ratio 0 and floor 0: never retry', () => {
  const onlyFloor = new RetryBudget({ clock: new ManualClock(), ratio: 0, minRetriesPerSecond: 1 });
  for (let i = 0; i < 10_000; i++) onlyFloor.deposit();
  assert.equal(drain(onlyFloor), 10);

  const clock = new ManualClock();
  const never = new RetryBudget({ clock, ratio: 0, minRetriesPerSecond: 0 });
  for (let i = 0; i < 10_000; i++) never.deposit();
  assert.equal(never.available, 0);
  assert.equal(never.tryWithdraw(), false);
  clock.advance(60_000);
  assert.equal(never.tryWithdraw(), false);
  assert.equal(never.exhausted, 2);

  const full = new RetryBudget({ clock: new ManualClock(), ratio: 1, minRetriesPerSecond: 0 });
  for (let i = 0; i < 50; i++) full.deposit();
  assert.equal(drain(full), 50, 'ratio 1: one retry per request');
});

test('the budget refills as the window slides: a retry counts for windowMs to windowMs + one slot', () => {
  const clock = new ManualClock(T0);
  const b = new RetryBudget({ clock });
  assert.equal(drain(b), 100);
  clock.advance(10_000);
  assert.equal(b.available, 0, 'still inside the ring (the 10 full slots before the current one)');
  clock.advance(999);
  assert.equal(b.available, 0);
  clock.advance(1);
  assert.equal(b.available, 100, 'the slot of t0 expired at t0 + 11 s');

  // Retries spread over time come back slot by slot.
  const c2 = new ManualClock(T0);
  const b2 = new RetryBudget({ clock: c2 });
  for (let s = 0; s < 10; s++) {
    assert.equal(drain(b2, 10), 10);
    c2.advance(1000);
  }
  assert.equal(b2.available, 0, 'at t0 + 10 s all 100 retries are still counted');
  c2.advance(1000);
  assert.equal(b2.available, 10, 'at t0 + 11 s the first second’s 10 retries expired');
  c2.advance(3000);
  assert.equal(b2.available, 40);
});

test('deposits expire with the window too', () => {
  const clock = new ManualClock(T0);
  const b = new RetryBudget({ clock, minRetriesPerSecond: 0 });
  for (let i = 0; i < 500; i++) b.deposit();
  assert.equal(b.available, 100);
  clock.advance(10_999);
  assert.equal(b.available, 100);
  clock.advance(1);
  assert.equal(b.available, 0);
});

test('big time jumps and a clock that goes backwards', () => {
  const clock = new SettableClock(T0);
  const b = new RetryBudget({ clock });
  for (let i = 0; i < 1000; i++) b.deposit();
  assert.equal(drain(b), 300);
  clock.t = T0 + 365 * 86_400_000; // a year later
  assert.equal(b.available, 100, 'everything expired; only the floor');
  assert.equal(drain(b), 100);
  clock.t -= 5000; // backwards: counts in the current slot, grants nothing
  assert.equal(b.available, 0);
  assert.equal(b.tryWithdraw(), false);
  b.deposit();
  clock.t -= 1e12;
  for (let i = 0; i < 9; i++) b.deposit();
  assert.equal(b.available, 2, 'deposits at a backwards time count in the current slot');
  clock.t = T0 + 365 * 86_400_000 + 11_000; // past the slot of the drain
  assert.equal(b.available, 100);
  clock.t = Number.NaN;
  assert.equal(b.tryWithdraw(), true, 'a NaN time is treated as the current slot');
  clock.t = T0 + 365 * 86_400_000 + 11_000;
  assert.equal(b.available, 99);

  const beforeEpoch = new SettableClock(-123_456);
  const neg = new RetryBudget({ clock: beforeEpoch, minRetriesPerSecond: 1 });
  assert.equal(drain(neg), 10);
  beforeEpoch.t += 11_000;
  assert.equal(drain(neg), 10, 'slots before the epoch index the ring correctly');
});

/**
 * The bound this implementation guarantees, proved by induction on the slot of the last retry:
 * the ring at slot s holds slots s−10..s, so retries(0..s) ≤ retries(0..s−11) + B + ratio × deposits(s−10..s)
 * ≤ ratio × deposits(0..s) + B × (⌊s / 11⌋ + 1), with slots numbered from the budget's creation and
 * B = minRetriesPerSecond × windowMs / 1000.
 */
function totalBound(ratio: number, deposits: number, b: number, lastSlot: number): number {
  return ratio * deposits + b * (Math.floor(lastSlot / 11) + 1);
}

test('long outage: 300 req/s for 30 s, every request wants retries; total stays within the bound', () => {
  const clock = new ManualClock(T0);
  const budget = new RetryBudget({ clock });
  const stepMs = 10;
  const perStep = 3; // 300 req/s
  const steps = 3000; // 30 s: t0 .. t0 + 29 990 ms, slots 0..29
  const maxRetriesPerRequest = 3;
  const retriesAt = new Int32Array(steps);
  const depositsAt = new Int32Array(steps);
  let requests = 0;
  let retries = 0;
  for (let i = 0; i < steps; i++) {
    for (let r = 0; r < perStep; r++) {
      budget.deposit();
      requests++;
      depositsAt[i] = (depositsAt[i] as number) + 1;
      for (let k = 0; k < maxRetriesPerRequest && budget.tryWithdraw(); k++) {
        retries++;
        retriesAt[i] = (retriesAt[i] as number) + 1;
      }
    }
    if (i < steps - 1) clock.advance(stepMs);
  }
  assert.equal(requests, 9000);
  const lastSlot = Math.floor((clock.now() - T0) / 1000);
  assert.equal(lastSlot, 29);
  const bound = totalBound(0.2, requests, 100, lastSlot);
  assert.equal(bound, 2100, '0.2 × 9000 + 100 × 3: within 10/s × 30 s + 0.2 × requests');
  assert.ok(retries <= 0.2 * requests + 10 * 30 + 100, 'the looser bound: ratio × requests + floor × seconds + one window');
  // Under saturating demand the bound is reached exactly: it is tight, not just safe.
  assert.equal(retries, bound);
  // Each request stops at its first refusal, so refusals are counted once per request that hit one.
  assert.ok(budget.exhausted > 0 && budget.exhausted <= requests);

  // Sliding windows: retries in any 10 s window ≤ 100 + 0.2 × deposits in that window and the slot before it.
  const windowSteps = 10_000 / stepMs;
  const slotSteps = 1000 / stepMs;
  for (let end = 0; end < steps; end++) {
    let w = 0;
    let d = 0;
    for (let i = Math.max(0, end - windowSteps + 1); i <= end; i++) w += retriesAt[i] as number;
    for (let i = Math.max(0, end - windowSteps - slotSteps + 1); i <= end; i++) d += depositsAt[i] as number;
    assert.ok(w <= 100 + 0.2 * d + 1e-9, `window ending at step ${end}: ${w} retries for ${d} requests`);
  }
});

test('random traffic with gaps and jumps: the total and sliding-window bounds hold throughout', () => {
  for (let seed = 1; seed <= 10; seed++) {
    const rnd = seeded(seed);
    const ratio = [0, 0.05, 0.2, 0.5, 1][seed % 5] as number;
    const floor = [0, 1, 10, 2.5][seed % 4] as number;
    const windowMs = [1000, 10_000, 3000][seed % 3] as number;
    const slotMs = windowMs / 10;
    const depositShare = ratio >= 0.5 ? 0.3 : 0.6; // enough retry demand to hit the budget
    const clock = new ManualClock(T0);
    const b = new RetryBudget({ clock, ratio, minRetriesPerSecond: floor, windowMs });
    const reserve = (floor * windowMs) / 1000;
    const events: Array<{ t: number; retry: boolean }> = [];
    let deposits = 0;
    let retries = 0;
    let refused = 0;
    for (let i = 0; i < 20_000; i++) {
      const x = rnd();
      if (x < 0.001) clock.advance(Math.floor(rnd() * 5 * windowMs)); // an idle gap
      else clock.advance(Math.floor(rnd() * 20));
      const burst = rnd() < 0.1 ? 50 : 1;
      for (let k = 0; k < burst; k++) {
        if (rnd() < depositShare) {
          b.deposit();
          deposits++;
          events.push({ t: clock.now(), retry: false });
        } else if (b.tryWithdraw()) {
          retries++;
          events.push({ t: clock.now(), retry: true });
        } else {
          refused++;
        }
      }
      const slot = Math.floor(clock.now() / slotMs) - Math.floor(T0 / slotMs); // slots since creation
      assert.ok(retries <= totalBound(ratio, deposits, reserve, slot) + 1e-9, `seed ${seed}: total bound at step ${i}`);
    }
    assert.equal(b.exhausted, refused);
    // Sliding windows of windowMs ending at each retry (two pointers over the event log).
    let lo = 0;
    let loD = 0;
    let w = 0;
    let d = 0;
    for (let j = 0; j < events.length; j++) {
      const e = events[j] as { t: number; retry: boolean };
      if (e.retry) w++;
      else d++;
      while ((events[lo] as { t: number }).t <= e.t - windowMs) {
        if ((events[lo] as { retry: boolean }).retry) w--;
        lo++;
      }
      while ((events[loD] as { t: number }).t < e.t - windowMs - slotMs) {
        if (!(events[loD] as { retry: boolean }).retry) d--;
        loD++;
      }
      // d counts deposits from loD to j; retries in (t - windowMs, t] are w.
      if (e.retry) assert.ok(w <= reserve + ratio * d + 1e-9, `seed ${seed}: window ending ${e.t - T0}: ${w} > ${reserve} + ${ratio} × ${d}`);
    }
  }
});

test('validation: bad options throw SKEIN_E_VALIDATION naming the field', () => {
  const clock = new ManualClock();
  const cases: Array<[Partial<RetryBudgetOptions>, string]> = [
    [{ ratio: -0.1 }, 'ratio'],
    [{ ratio: 1.5 }, 'ratio'],
    [{ ratio: Number.NaN }, 'ratio'],
    [{ ratio: '0.2' as unknown as number }, 'ratio'],
    [{ minRetriesPerSecond: -1 }, 'minRetriesPerSecond'],
    [{ minRetriesPerSecond: Number.NaN }, 'minRetriesPerSecond'],
    [{ minRetriesPerSecond: Number.POSITIVE_INFINITY }, 'minRetriesPerSecond'],
    [{ windowMs: 0 }, 'windowMs'],
    [{ windowMs: -10_000 }, 'windowMs'],
    [{ windowMs: 0.5 }, 'windowMs'],
    [{ windowMs: Number.NaN }, 'windowMs'],
    [{ windowMs: Number.POSITIVE_INFINITY }, 'windowMs'],
    [{ clock: undefined }, 'clock'],
    [{ clock: {} as Clock }, 'clock'],
  ];
  for (const [opts, field] of cases) {
    assert.throws(
      () => new RetryBudget({ clock, ...opts } as RetryBudgetOptions),
      (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_VALIDATION' && e.field === field && e.message.includes(field),
      `${JSON.stringify(opts)} should be refused on ${field}`,
    );
  }
  // Edges that are valid.
  assert.doesNotThrow(() => new RetryBudget({ clock, ratio: 0, minRetriesPerSecond: 0, windowMs: 1 }));
  assert.doesNotThrow(() => new RetryBudget({ clock, ratio: 1, minRetriesPerSecond: 0.5 }));
});
