import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.js';
import { SkeinError } from '../core/errors.js';
import { createRng } from '../balance/rng.js';
import { Breakers, DEFAULT_BREAKER, type BreakerOptions, type BreakerState } from './breaker.js';

type Change = [key: string, from: BreakerState, to: BreakerState, reason: string];

function setup(opts: Partial<BreakerOptions> = {}): { clock: ManualClock; b: Breakers; changes: Change[] } {
  const clock = new ManualClock(0);
  const changes: Change[] = [];
  const b = new Breakers({ clock, rng: () => 0, onChange: (...c) => changes.push(c), ...opts });
  return { clock, b, changes };
}

function fail(b: Breakers, key: string, n: number): void {
  for (let i = 0; i < n; i++) b.failure(key);
}

/** The ms from now until `allows(key)` turns true (steps of 1 ms; ManualClock only moves forward). */
function msUntilAllowed(clock: ManualClock, b: Breakers, key: string, limit = 20_000): number {
  let waited = 0;
  while (!b.allows(key)) {
    if (waited > limit) throw new Error('never allowed');
    clock.advance(1);
    waited++;
  }
  return waited;
}

test('a key never seen is closed and allowed, and needs no state', () => {
  const { b } = setup();
  assert.equal(b.state('svc/a'), 'closed');
  assert.equal(b.allows('svc/a'), true);
  b.started('svc/a');
  b.success('svc/a');
  assert.deepEqual(b.counts(), { closed: 0, open: 0, halfOpen: 0 });
});

test('opens after 7 consecutive failures by default (Linkerd), with an event', () => {
  const { b, changes } = setup();
  assert.equal(DEFAULT_BREAKER.consecutiveFailures, 7);
  fail(b, 'svc/a', 6);
  assert.equal(b.state('svc/a'), 'closed');
  assert.equal(b.allows('svc/a'), true);
  assert.deepEqual(b.counts(), { closed: 1, open: 0, halfOpen: 0 });
  b.failure('svc/a');
  assert.equal(b.state('svc/a'), 'open');
  assert.equal(b.allows('svc/a'), false);
  assert.equal(b.allows('svc/b'), true, 'other endpoints are not affected');
  assert.deepEqual(changes, [['svc/a', 'closed', 'open', 'consecutive-failures']]);
  assert.deepEqual(b.counts(), { closed: 0, open: 1, halfOpen: 0 });
});

test('a success interrupts the streak', () => {
  const { b } = setup({ consecutiveFailures: 3 });
  fail(b, 'k', 2);
  b.success('k');
  fail(b, 'k', 2);
  assert.equal(b.state('k'), 'closed');
  b.failure('k');
  assert.equal(b.state('k'), 'open');
});

test('consecutiveFailures 0 disables the trigger', () => {
  const { b } = setup({ consecutiveFailures: 0 });
  fail(b, 'k', 1000);
  assert.equal(b.state('k'), 'closed');
  assert.equal(b.allows('k'), true);
});

test('open until the backoff elapses; allows does not consume the probe; started makes it half-open', () => {
  const { clock, b, changes } = setup({ consecutiveFailures: 1, backoffMinMs: 1000, backoffMaxMs: 10_000 });
  b.failure('k');
  clock.advance(999);
  assert.equal(b.allows('k'), false);
  b.started('k'); // not due: no effect
  assert.equal(b.state('k'), 'open');
  clock.advance(1);
  // The balancer may ask many times (several picks, several candidates): the probe is still there.
  for (let i = 0; i < 5; i++) assert.equal(b.allows('k'), true);
  assert.equal(b.state('k'), 'open');
  b.started('k');
  assert.equal(b.state('k'), 'half-open');
  assert.equal(b.allows('k'), false, 'one probe at a time');
  assert.deepEqual(b.counts(), { closed: 0, open: 0, halfOpen: 1 });
  b.started('k'); // a second request anyway: no change, no event
  clock.advance(60_000);
  assert.equal(b.allows('k'), false, 'half-open stays closed to traffic while the probe is in flight');
  b.success('k');
  assert.equal(b.state('k'), 'closed');
  assert.equal(b.allows('k'), true);
  assert.deepEqual(changes, [
    ['k', 'closed', 'open', 'consecutive-failures'],
    ['k', 'open', 'half-open', 'probe'],
    ['k', 'half-open', 'closed', 'probe-success'],
  ]);
  assert.deepEqual(b.counts(), { closed: 1, open: 0, halfOpen: 0 });
});

test('a failed probe re-opens with a longer backoff; a close starts over', () => {
  // rng 0.5: delay = min + floor(0.5 * (min(max, min * 2^(n+1)) - min))
  const { clock, b, changes } = setup({ consecutiveFailures: 2, rng: () => 0.5, backoffMinMs: 1000, backoffMaxMs: 6000 });
  fail(b, 'k', 2);
  const delays: number[] = [];
  for (let i = 0; i < 5; i++) {
    delays.push(msUntilAllowed(clock, b, 'k'));
    b.started('k');
    b.failure('k');
    assert.equal(b.state('k'), 'open');
  }
  // ceilings 2000, 4000, 6000 (capped), 6000, 6000
  assert.deepEqual(delays, [1500, 2500, 3500, 3500, 3500]);
  assert.deepEqual(changes.at(-1), ['k', 'half-open', 'open', 'probe-failure']);
  // success closes; the next opening draws from the first ceiling again
  msUntilAllowed(clock, b, 'k');
  b.started('k');
  b.success('k');
  fail(b, 'k', 2);
  assert.equal(msUntilAllowed(clock, b, 'k'), 1500);
});

test('backoff stays within [minMs, min(maxMs, minMs * 2^(n+1))) with a seeded rng', () => {
  const seeded = createRng(42);
  const draws: number[] = [];
  const rng = (): number => {
    const r = seeded();
    draws.push(r);
    return r;
  };
  const { clock, b } = setup({ consecutiveFailures: 1, rng, backoffMinMs: 100, backoffMaxMs: 1000 });
  const delays: number[] = [];
  for (let round = 0; round < 20; round++) {
    b.failure('k'); // closed -> open
    for (let n = 0; n < 6; n++) {
      // The delay the breaker really keeps (measured), against the bounds and the draw it used.
      const waited = msUntilAllowed(clock, b, 'k');
      const ceiling = Math.min(1000, 100 * 2 ** (n + 1));
      assert.ok(waited >= 100 && waited < ceiling, `round ${round} opening ${n}: open for ${waited} ms, not within [100, ${ceiling})`);
      assert.equal(waited, 100 + Math.floor(draws.at(-1)! * (ceiling - 100)), `round ${round} opening ${n}: the jitter of its draw`);
      delays.push(waited);
      b.started('k');
      if (n < 5) b.failure('k'); // re-open, longer
    }
    b.success('k'); // close: exponent back to 0
  }
  assert.equal(draws.length, 20 * 6, 'one draw per opening');
  assert.ok(new Set(delays).size > 100, `jittered: ${new Set(delays).size} distinct delays of 120`);
});

test('a bad rng value gives the shortest delay, never NaN', () => {
  const { clock, b } = setup({ consecutiveFailures: 1, rng: () => NaN });
  b.failure('k');
  assert.equal(msUntilAllowed(clock, b, 'k'), 1000);
  b.started('k');
  b.failure('k');
  const { clock: c2, b: b2 } = setup({ consecutiveFailures: 1, rng: () => 1 });
  b2.failure('k');
  assert.equal(msUntilAllowed(c2, b2, 'k'), 1999);
});

test('outcomes that arrive while open are ignored', () => {
  const { clock, b } = setup({ consecutiveFailures: 1 });
  b.failure('k');
  b.success('k'); // a request sent before it opened
  assert.equal(b.state('k'), 'open');
  b.failure('k');
  assert.equal(msUntilAllowed(clock, b, 'k'), 1000, 'the backoff was not restarted');
});

test('failure rate: opens at the threshold once minRequests outcomes are in the window', () => {
  const { b, changes } = setup({ consecutiveFailures: 0, failureRate: { threshold: 0.5, minRequests: 10, windowMs: 10_000 } });
  // an unseen key gets state at its first success: the window needs the successes
  b.success('k');
  assert.deepEqual(b.counts(), { closed: 1, open: 0, halfOpen: 0 });
  for (let i = 0; i < 4; i++) {
    b.failure('k');
    b.success('k');
  }
  b.failure('k'); // 5 of 10 failed: 9 outcomes + this one = 10, share 0.5
  assert.equal(b.state('k'), 'open');
  assert.deepEqual(changes, [['k', 'closed', 'open', 'failure-rate']]);
});

test('failure rate: below minRequests or below the threshold stays closed', () => {
  const { b } = setup({ consecutiveFailures: 0, failureRate: { threshold: 0.3, minRequests: 10, windowMs: 10_000 } });
  fail(b, 'few', 9); // 100% but only 9
  assert.equal(b.state('few'), 'closed');
  for (let i = 0; i < 8; i++) b.success('low');
  fail(b, 'low', 2); // 2 of 10 = 0.2 < 0.3
  assert.equal(b.state('low'), 'closed');
  b.success('low');
  b.failure('low'); // 3 of 12 = 0.25
  assert.equal(b.state('low'), 'closed');
  b.failure('low'); // 4 of 13 = 0.307...
  assert.equal(b.state('low'), 'open');
  // exactly the threshold counts, with no floating-point miss (0.28 * 25 is 7.000000000000001)
  const s = setup({ consecutiveFailures: 0, failureRate: { threshold: 0.28, minRequests: 25, windowMs: 10_000 } });
  for (let i = 0; i < 18; i++) s.b.success('exact');
  fail(s.b, 'exact', 6);
  assert.equal(s.b.state('exact'), 'closed');
  s.b.failure('exact'); // 7 of 25
  assert.equal(s.b.state('exact'), 'open');
});

test('failure rate: outcomes older than the window are forgotten', () => {
  const { clock, b } = setup({ consecutiveFailures: 0, failureRate: { threshold: 0.5, minRequests: 10, windowMs: 10_000 } });
  fail(b, 'k', 9);
  clock.advance(10_000);
  b.failure('k'); // the 9 are a window ago: 1 outcome
  assert.equal(b.state('k'), 'closed');
  // a sliding window: failures spread over time still count while within it
  clock.advance(10_000);
  for (let i = 0; i < 9; i++) {
    b.failure('k');
    clock.advance(1000); // 9 failures over 9 s
  }
  b.failure('k');
  assert.equal(b.state('k'), 'open');
});

test('failure rate and consecutive triggers work together; the window is cleared on close', () => {
  const { clock, b, changes } = setup({ consecutiveFailures: 3, failureRate: { threshold: 0.5, minRequests: 4, windowMs: 60_000 } });
  b.failure('k');
  b.failure('k');
  b.success('k');
  b.failure('k'); // 3 of 4 by rate; streak 1
  assert.deepEqual(changes.at(-1), ['k', 'closed', 'open', 'failure-rate']);
  msUntilAllowed(clock, b, 'k');
  b.started('k');
  b.success('k');
  assert.equal(b.state('k'), 'closed');
  b.failure('k'); // 1 of 1, under minRequests; it would be 4 of 5 if the old window were kept
  assert.equal(b.state('k'), 'closed');
  for (let i = 0; i < 5; i++) b.success('k');
  b.failure('k');
  b.failure('k'); // 3 of 8 = 0.375, streak of 2
  assert.equal(b.state('k'), 'closed');
  b.failure('k'); // streak of 3 (the rate, 4 of 9, would not open it)
  assert.deepEqual(changes.at(-1), ['k', 'closed', 'open', 'consecutive-failures']);
});

test('retain drops the state of endpoints that left, by set or by predicate', () => {
  const { b } = setup({ consecutiveFailures: 1 });
  b.failure('a');
  b.failure('b');
  b.failure('c');
  b.success('d');
  assert.deepEqual(b.counts(), { closed: 0, open: 3, halfOpen: 0 });
  b.retain(new Set(['a', 'b']));
  assert.equal(b.state('c'), 'closed');
  assert.equal(b.allows('c'), true);
  assert.deepEqual(b.counts(), { closed: 0, open: 2, halfOpen: 0 });
  b.retain((k) => k !== 'b');
  assert.equal(b.state('a'), 'open');
  assert.equal(b.state('b'), 'closed');
  assert.deepEqual(b.counts(), { closed: 0, open: 1, halfOpen: 0 });
});

test('retain keeps counts right for half-open endpoints', () => {
  const { clock, b } = setup({ consecutiveFailures: 1 });
  b.failure('a');
  b.failure('b');
  clock.advance(1000);
  b.started('a');
  assert.deepEqual(b.counts(), { closed: 0, open: 1, halfOpen: 1 });
  b.retain(new Set(['b']));
  assert.deepEqual(b.counts(), { closed: 0, open: 1, halfOpen: 0 });
  b.success('a'); // a late outcome of a dropped endpoint: nothing to close, no state needed
  assert.deepEqual(b.counts(), { closed: 0, open: 1, halfOpen: 0 });
});

test('options are validated, naming the field', () => {
  const clock = new ManualClock(0);
  const cases: [Partial<BreakerOptions> & Record<string, unknown>, string][] = [
    [{ consecutiveFailures: -1 }, 'consecutiveFailures'],
    [{ consecutiveFailures: 1.5 }, 'consecutiveFailures'],
    [{ failureRate: { threshold: 0, minRequests: 1, windowMs: 1 } }, 'failureRate.threshold'],
    [{ failureRate: { threshold: 1.01, minRequests: 1, windowMs: 1 } }, 'failureRate.threshold'],
    [{ failureRate: { threshold: NaN, minRequests: 1, windowMs: 1 } }, 'failureRate.threshold'],
    [{ failureRate: { threshold: 1, minRequests: 0, windowMs: 1 } }, 'failureRate.minRequests'],
    [{ failureRate: { threshold: 1, minRequests: 2.5, windowMs: 1 } }, 'failureRate.minRequests'],
    [{ failureRate: { threshold: 1, minRequests: 1, windowMs: 0 } }, 'failureRate.windowMs'],
    [{ failureRate: { threshold: 1, minRequests: 1, windowMs: Infinity } }, 'failureRate.windowMs'],
    [{ failureRate: 5 as never }, 'failureRate'],
    [{ backoffMinMs: 0, backoffMaxMs: 10 }, 'backoffMinMs'],
    [{ backoffMinMs: 100, backoffMaxMs: 99 }, 'backoffMaxMs'],
    [{ rng: 0.5 as never }, 'rng'],
    [{ onChange: 'x' as never }, 'onChange'],
    [{ clock: undefined as never }, 'clock'],
    [{ clock: {} as never }, 'clock'],
  ];
  for (const [bad, field] of cases) {
    assert.throws(
      () => new Breakers({ clock, ...bad }),
      (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_VALIDATION' && e.field === field,
      `expected a validation error on ${field} for ${JSON.stringify(bad)}`,
    );
  }
  assert.throws(() => new Breakers(undefined as never), (e: unknown) => e instanceof SkeinError && e.field === 'clock');
  // the edges that are allowed
  new Breakers({ clock, consecutiveFailures: 0, failureRate: { threshold: 1, minRequests: 1, windowMs: 1 }, backoffMinMs: 5, backoffMaxMs: 5 });
  new Breakers({ clock, failureRate: null });
});
