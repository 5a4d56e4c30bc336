import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.js';
import { SkeinError } from '../core/errors.js';
import { DEFAULT_OUTLIER, ENVOY_FAILURE_PERCENTAGE, ENVOY_SUCCESS_RATE, OutlierDetector, type FailureKind, type OutlierEvent, type OutlierOptions } from './outlier.js';

const HOUR = 3_600_000;

function setup(keys: readonly string[], opts: Partial<OutlierOptions> = {}): { clock: ManualClock; d: OutlierDetector; events: OutlierEvent[] } {
  const clock = new ManualClock(0);
  const events: OutlierEvent[] = [];
  const d = new OutlierDetector({ clock, onEvent: (e) => events.push(e), ...opts });
  d.setEndpoints(keys);
  return { clock, d, events };
}

function fail(d: OutlierDetector, key: string, kind: FailureKind, n: number): void {
  for (let i = 0; i < n; i++) d.failure(key, kind);
}

function succeed(d: OutlierDetector, key: string, n: number): void {
  for (let i = 0; i < n; i++) d.success(key);
}

/** Ten endpoints k0..k9, so the default 10% cap allows one ejection. */
const TEN = Array.from({ length: 10 }, (_, i) => `svc/k${i}`);

test('the defaults are Envoy\'s, with the interval detectors off (and, as in Envoy, consecutive gateway failures not enforced)', () => {
  assert.deepEqual(
    { ...DEFAULT_OUTLIER },
    {
      consecutive5xx: 5,
      consecutiveGatewayFailure: 0,
      consecutiveLocalOriginFailure: 5,
      intervalMs: 10_000,
      baseEjectionMs: 30_000,
      maxEjectionMs: 300_000,
      maxEjectionPercent: 10,
      successRate: null,
      failurePercentage: null,
    },
  );
  assert.deepEqual({ ...ENVOY_SUCCESS_RATE }, { minimumHosts: 5, requestVolume: 100, stdevFactor: 1.9 });
  assert.deepEqual({ ...ENVOY_FAILURE_PERCENTAGE }, { threshold: 85, minimumHosts: 5, requestVolume: 50 });
});

test('consecutive 5xx: the 5th ejects, for the base time, with an event', () => {
  const { clock, d, events } = setup(TEN);
  clock.advance(7);
  fail(d, 'svc/k1', 'upstream-5xx', 4);
  assert.equal(d.isEjected('svc/k1'), false);
  d.failure('svc/k1', 'upstream-5xx');
  assert.equal(d.isEjected('svc/k1'), true);
  assert.equal(d.isEjected('svc/k2'), false);
  assert.equal(d.ejectedCount, 1);
  assert.deepEqual(events, [{ type: 'eject', key: 'svc/k1', reason: 'consecutive-5xx', ejections: 1, untilMs: 7 + 30_000 }]);
  assert.deepEqual(d.snapshot()['svc/k1'], {
    ejected: true,
    ejections: 1,
    totalEjections: 1,
    untilMs: 30_007,
    consecutive5xx: 0,
    consecutiveGatewayFailure: 0,
    consecutiveLocalOriginFailure: 0,
    intervalRequests: 5,
    intervalFailures: 5,
  });
  d.stop();
});

test('consecutive gateway failures eject on their own threshold; a gateway failure is also a 5xx', () => {
  const { d, events } = setup(TEN, { consecutiveGatewayFailure: 3, consecutive5xx: 5 });
  fail(d, 'svc/k0', 'gateway', 3);
  assert.equal(d.isEjected('svc/k0'), true);
  assert.equal(events[0]?.reason, 'consecutive-gateway-failure');

  const g = setup(TEN, { consecutiveGatewayFailure: 0, consecutive5xx: 5 });
  fail(g.d, 'svc/k0', 'gateway', 4);
  assert.equal(g.d.isEjected('svc/k0'), false);
  g.d.failure('svc/k0', 'gateway');
  assert.equal(g.d.isEjected('svc/k0'), true);
  assert.equal(g.events[0]?.reason, 'consecutive-5xx', 'gateway failures count as 5xx');
  // a 5xx that is not a gateway failure does not end a gateway streak
  const h = setup(TEN, { consecutiveGatewayFailure: 3, consecutive5xx: 0 });
  fail(h.d, 'svc/k0', 'gateway', 2);
  h.d.failure('svc/k0', 'upstream-5xx');
  h.d.failure('svc/k0', 'gateway');
  assert.equal(h.d.isEjected('svc/k0'), true);
  assert.equal(h.events[0]?.reason, 'consecutive-gateway-failure');
});

test('consecutive local-origin failures eject', () => {
  const { d, events } = setup(TEN);
  fail(d, 'svc/k3', 'local-origin', 4);
  assert.equal(d.isEjected('svc/k3'), false);
  d.failure('svc/k3', 'local-origin');
  assert.equal(d.isEjected('svc/k3'), true);
  assert.equal(events[0]?.reason, 'consecutive-local-origin-failure');
});

test('a success interrupts every streak', () => {
  const { d, events } = setup(TEN);
  for (const kind of ['upstream-5xx', 'gateway', 'local-origin'] as const) {
    fail(d, 'svc/k0', kind, 4);
    d.success('svc/k0');
    fail(d, 'svc/k0', kind, 4);
    assert.equal(d.isEjected('svc/k0'), false, kind);
    d.success('svc/k0');
  }
  assert.deepEqual(events, []);
});

test('local-origin failures and 5xx are counted apart: neither resets the other', () => {
  const { d, events } = setup(TEN);
  for (let i = 0; i < 4; i++) {
    d.failure('svc/k0', 'local-origin');
    d.failure('svc/k0', 'upstream-5xx');
  }
  assert.equal(d.isEjected('svc/k0'), false, '8 failures in a row, but 4 of each');
  assert.deepEqual(
    { ...d.snapshot()['svc/k0'] },
    {
      ejected: false,
      ejections: 0,
      totalEjections: 0,
      untilMs: null,
      consecutive5xx: 4,
      consecutiveGatewayFailure: 0,
      consecutiveLocalOriginFailure: 4,
      intervalRequests: 8,
      intervalFailures: 8,
    },
  );
  d.failure('svc/k0', 'local-origin');
  assert.equal(d.isEjected('svc/k0'), true);
  assert.equal(events[0]?.reason, 'consecutive-local-origin-failure');
});

test('an ejection ends lazily in isEjected once its time is over', () => {
  const { clock, d, events } = setup(TEN, { intervalMs: HOUR });
  fail(d, 'svc/k0', 'upstream-5xx', 5);
  clock.advance(29_999);
  assert.equal(d.isEjected('svc/k0'), true);
  clock.advance(1);
  assert.equal(d.ejectedCount, 0, 'over its time: not counted, even before it is ended');
  assert.equal(events.length, 1, 'no return yet: nothing asked');
  assert.equal(d.isEjected('svc/k0'), false);
  assert.deepEqual(events[1], { type: 'return', key: 'svc/k0', reason: 'ejection-time-over', ejections: 1, untilMs: null });
  assert.equal(d.isEjected('svc/k0'), false);
  assert.equal(events.length, 2, 'returned once');
  // the streaks start over after a return
  fail(d, 'svc/k0', 'upstream-5xx', 4);
  assert.equal(d.isEjected('svc/k0'), false);
});

test('an ejection ends on the interval, without anyone asking', () => {
  const { clock, d, events } = setup(TEN); // interval 10 s
  clock.advance(5000);
  fail(d, 'svc/k0', 'upstream-5xx', 5); // until 35 s
  clock.advance(30_000); // t = 35 s: the interval ran at 10, 20, 30 s
  assert.equal(events.length, 1);
  clock.advance(5000); // t = 40 s
  assert.equal(events.length, 2);
  assert.equal(events[1]?.type, 'return');
  assert.equal(d.ejectedCount, 0);
  assert.equal((d.snapshot()['svc/k0'] as { ejected: boolean }).ejected, false);
});

test('an outcome after the ejection time ends it too, and counts', () => {
  const { clock, d, events } = setup(TEN, { intervalMs: HOUR });
  fail(d, 'svc/k0', 'upstream-5xx', 5);
  clock.advance(30_000);
  fail(d, 'svc/k0', 'upstream-5xx', 4);
  assert.equal(events[1]?.type, 'return');
  d.failure('svc/k0', 'upstream-5xx');
  assert.equal(d.isEjected('svc/k0'), true, 'the fifth since the return ejects again');
});

test('outcomes reported while ejected are ignored', () => {
  const { d } = setup(TEN, { intervalMs: HOUR });
  fail(d, 'svc/k0', 'upstream-5xx', 5);
  fail(d, 'svc/k0', 'local-origin', 10);
  d.success('svc/k0');
  const s = d.snapshot()['svc/k0'] as Record<string, unknown>;
  assert.equal(s.consecutiveLocalOriginFailure, 0);
  assert.equal(s.intervalRequests, 5);
  assert.equal(s.totalEjections, 1);
});

test('ejection time grows with repeated ejections, capped by maxEjectionMs', () => {
  const { clock, d, events } = setup(TEN, { intervalMs: HOUR, baseEjectionMs: 30_000, maxEjectionMs: 70_000 });
  const durations: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = clock.now();
    fail(d, 'svc/k0', 'upstream-5xx', 5);
    const e = events.at(-1)!;
    assert.equal(e.type, 'eject');
    durations.push(e.untilMs! - t0);
    clock.advance(e.untilMs! - t0 - 1);
    assert.equal(d.isEjected('svc/k0'), true);
    clock.advance(1);
    assert.equal(d.isEjected('svc/k0'), false);
  }
  assert.deepEqual(durations, [30_000, 60_000, 70_000, 70_000, 70_000]);
  assert.deepEqual(
    events.filter((e) => e.type === 'eject').map((e) => e.ejections),
    [1, 2, 3, 3, 3],
    'the multiplier stops growing once it reaches the max',
  );
});

test('the ejection multiplier decays by one per healthy interval', () => {
  const { clock, d, events } = setup(TEN, { intervalMs: 10_000, baseEjectionMs: 10_000 });
  const eject = (): OutlierEvent => {
    fail(d, 'svc/k0', 'upstream-5xx', 5);
    return events.at(-1)!;
  };
  const ejections = (): unknown => (d.snapshot()['svc/k0'] as { ejections: number }).ejections;
  clock.advance(1);
  assert.equal(eject().untilMs, 10_001); // multiplier 1
  clock.advance(20_000); // t = 20001: returned by the interval at 20 s
  assert.equal(events.at(-1)?.type, 'return');
  assert.equal(ejections(), 1, 'no decay in the interval it returned');
  assert.equal(eject().untilMs, 20_001 + 20_000); // multiplier 2, until 40001
  clock.advance(30_000); // t = 50001: returned at 50 s
  assert.equal(ejections(), 2);
  clock.advance(10_000); // the interval at 60 s: back for one interval
  assert.equal(ejections(), 1);
  clock.advance(10_000); // 70 s
  assert.equal(ejections(), 0);
  clock.advance(10_000); // 80 s: stays at 0
  assert.equal(ejections(), 0);
  const e = eject();
  assert.equal(e.ejections, 1);
  assert.equal(e.untilMs! - clock.now(), 10_000, 'after decaying, the base time again');
});

test('max ejection percent: 3 endpoints at 10% still eject 1, but not 2', () => {
  const keys = ['svc/a', 'svc/b', 'svc/c'];
  const { clock, d, events } = setup(keys, { intervalMs: HOUR });
  fail(d, 'svc/a', 'upstream-5xx', 5);
  fail(d, 'svc/b', 'upstream-5xx', 5);
  fail(d, 'svc/c', 'local-origin', 5);
  assert.equal(d.isEjected('svc/a'), true);
  assert.equal(d.isEjected('svc/b'), false);
  assert.equal(d.isEjected('svc/c'), false);
  assert.equal(d.ejectedCount, 1);
  assert.deepEqual(events.map((e) => `${e.type} ${e.key}`), ['eject svc/a']);
  // a refused ejection resets that streak: one more failure is not enough
  d.failure('svc/b', 'upstream-5xx');
  assert.equal(d.isEjected('svc/b'), false);
  // an ejection over its time frees its place, even if nobody ended it yet
  clock.advance(30_000);
  fail(d, 'svc/b', 'upstream-5xx', 4);
  assert.deepEqual(events.map((e) => `${e.type} ${e.key}`), ['eject svc/a', 'return svc/a', 'eject svc/b']);
  assert.equal(d.isEjected('svc/b'), true);
});

test('max ejection percent: 20 endpoints at 10% eject 2; 100% ejects all', () => {
  const keys = Array.from({ length: 20 }, (_, i) => `svc/e${i}`);
  const { d } = setup(keys, { intervalMs: HOUR });
  for (const k of keys) fail(d, k, 'upstream-5xx', 5);
  assert.equal(d.ejectedCount, 2);
  const all = setup(keys.slice(0, 4), { intervalMs: HOUR, maxEjectionPercent: 100 });
  for (const k of keys.slice(0, 4)) fail(all.d, k, 'gateway', 5);
  assert.equal(all.d.ejectedCount, 4);
  // 19 x (500 / 19) / 100 is 4.999999999999999 in floating point: still 5
  const n19 = keys.slice(0, 19);
  const odd = setup(n19, { intervalMs: HOUR, maxEjectionPercent: 500 / 19 });
  for (const k of n19) fail(odd.d, k, 'gateway', 5);
  assert.equal(odd.d.ejectedCount, 5);
});

const SR = { consecutive5xx: 0, consecutiveGatewayFailure: 0, consecutiveLocalOriginFailure: 0, maxEjectionPercent: 100 };

test('success rate: ejects below mean - stdevFactor x stdev (Envoy\'s example: 50 vs 100 x 4)', () => {
  const keys = ['svc/a', 'svc/b', 'svc/c', 'svc/d', 'svc/e'];
  const { d, events } = setup(keys, { ...SR, successRate: ENVOY_SUCCESS_RATE });
  for (const k of keys.slice(0, 4)) succeed(d, k, 100);
  succeed(d, 'svc/e', 50);
  fail(d, 'svc/e', 'upstream-5xx', 50);
  // rates 100, 100, 100, 100, 50: mean 90, stdev 20, threshold 90 - 1.9 * 20 = 52
  d.evaluate();
  assert.deepEqual(events, [{ type: 'eject', key: 'svc/e', reason: 'success-rate', ejections: 1, untilMs: 30_000 }]);
  // counts are per interval: the next evaluation has nothing to judge
  d.evaluate();
  assert.equal(events.length, 1);
});

test('success rate: only hosts with requestVolume count, and at least minimumHosts of them', () => {
  const keys = ['svc/a', 'svc/b', 'svc/c', 'svc/d', 'svc/e'];
  const { d, events } = setup(keys, { ...SR, successRate: ENVOY_SUCCESS_RATE });
  for (const k of keys.slice(0, 4)) succeed(d, k, 100);
  succeed(d, 'svc/e', 49);
  fail(d, 'svc/e', 'upstream-5xx', 50); // 99 requests: below the volume
  d.evaluate();
  assert.deepEqual(events, [], 'only 4 hosts with the volume, 5 needed');

  // with a smaller minimum, the 4 hosts are judged among themselves: all alike, no outlier
  const s = setup(keys, { ...SR, successRate: { minimumHosts: 4, requestVolume: 100, stdevFactor: 1.9 } });
  for (const k of keys.slice(0, 4)) succeed(s.d, k, 100);
  succeed(s.d, 'svc/e', 49);
  fail(s.d, 'svc/e', 'upstream-5xx', 50);
  s.d.evaluate();
  assert.deepEqual(s.events, []);

  // a tighter factor catches a milder outlier; the cap picks the worst first
  const t = setup(keys, { ...SR, maxEjectionPercent: 10, successRate: { minimumHosts: 5, requestVolume: 10, stdevFactor: 0.5 } });
  succeed(t.d, 'svc/a', 10);
  succeed(t.d, 'svc/b', 10);
  succeed(t.d, 'svc/c', 10);
  succeed(t.d, 'svc/d', 8);
  fail(t.d, 'svc/d', 'local-origin', 2); // 80%
  succeed(t.d, 'svc/e', 7);
  fail(t.d, 'svc/e', 'gateway', 3); // 70%
  // mean 90, stdev sqrt((3*100 + 100 + 400) / 5) = 12.65, threshold 83.7: d and e are below
  t.d.evaluate();
  assert.deepEqual(t.events.map((e) => `${e.key} ${e.reason}`), ['svc/e success-rate'], 'one (the worst) under the 10% cap');
});

test('failure percentage: ejects at or above the threshold, with the volume and host minimums', () => {
  const keys = ['svc/a', 'svc/b', 'svc/c', 'svc/d'];
  const fpOpts = { threshold: 85, minimumHosts: 3, requestVolume: 50 };
  const { clock, d, events } = setup(keys, { ...SR, failurePercentage: fpOpts });
  clock.advance(10_000); // the interval runs with no traffic: nothing
  assert.deepEqual(events, []);
  succeed(d, 'svc/a', 50);
  succeed(d, 'svc/b', 8);
  fail(d, 'svc/b', 'upstream-5xx', 42); // 84%
  succeed(d, 'svc/c', 7);
  fail(d, 'svc/c', 'local-origin', 43); // 86%
  fail(d, 'svc/d', 'gateway', 49); // 100% of 49: below the volume
  clock.advance(10_000); // the interval at 20 s
  assert.deepEqual(events, [{ type: 'eject', key: 'svc/c', reason: 'failure-percentage', ejections: 1, untilMs: 20_000 + 30_000 }]);

  const few = setup(keys, { ...SR, failurePercentage: { ...fpOpts, minimumHosts: 4 } });
  succeed(few.d, 'svc/a', 50);
  succeed(few.d, 'svc/b', 50);
  fail(few.d, 'svc/c', 'upstream-5xx', 50);
  fail(few.d, 'svc/d', 'upstream-5xx', 49);
  few.d.evaluate();
  assert.deepEqual(few.events, [], '3 hosts with the volume, 4 needed');
});

test('failure percentage and success rate respect the cap together, worst first', () => {
  const keys = Array.from({ length: 10 }, (_, i) => `svc/h${i}`);
  const { d, events } = setup(keys, {
    ...SR,
    maxEjectionPercent: 20,
    successRate: { minimumHosts: 3, requestVolume: 10, stdevFactor: 1 },
    failurePercentage: { threshold: 50, minimumHosts: 3, requestVolume: 10 },
  });
  for (const k of keys.slice(0, 7)) succeed(d, k, 10);
  fail(d, 'svc/h7', 'upstream-5xx', 10); // 0%
  succeed(d, 'svc/h8', 2);
  fail(d, 'svc/h8', 'upstream-5xx', 8); // 20%
  succeed(d, 'svc/h9', 4);
  fail(d, 'svc/h9', 'upstream-5xx', 6); // 40%
  d.evaluate();
  assert.deepEqual(events.map((e) => `${e.key} ${e.reason}`), ['svc/h7 success-rate', 'svc/h8 success-rate']);
  assert.equal(d.ejectedCount, 2);
});

test('setEndpoints forgets endpoints that left; outcomes for unknown keys are ignored', () => {
  const { d, events } = setup(['svc/a', 'svc/b', 'svc/c'], { intervalMs: HOUR });
  fail(d, 'svc/a', 'upstream-5xx', 5);
  fail(d, 'svc/b', 'upstream-5xx', 3);
  assert.equal(d.ejectedCount, 1);
  d.setEndpoints(['svc/b', 'svc/c', 'svc/d']);
  assert.equal(d.ejectedCount, 0);
  assert.equal(d.isEjected('svc/a'), false);
  assert.deepEqual(Object.keys(d.snapshot()), ['svc/b', 'svc/c', 'svc/d']);
  assert.equal((d.snapshot()['svc/b'] as { consecutive5xx: number }).consecutive5xx, 3, 'endpoints that stay keep their state');
  fail(d, 'svc/gone', 'upstream-5xx', 10);
  d.success('svc/gone');
  assert.equal(d.isEjected('svc/gone'), false);
  assert.equal(d.snapshot()['svc/gone'], undefined);
  // the place of the forgotten ejection is free
  fail(d, 'svc/c', 'upstream-5xx', 5);
  assert.equal(d.isEjected('svc/c'), true);
  // a returning key starts afresh
  d.setEndpoints(['svc/a', 'svc/b', 'svc/c', 'svc/d']);
  assert.equal((d.snapshot()['svc/a'] as { ejections: number }).ejections, 0);
  assert.deepEqual(events.map((e) => `${e.type} ${e.key}`), ['eject svc/a', 'eject svc/c'], 'no event for a forgotten endpoint');
});

test('the interval timer is set at construction and cancelled by stop()', () => {
  const clock = new ManualClock(0);
  const d = new OutlierDetector({ clock });
  assert.equal(clock.pending, 1);
  d.stop();
  d.stop();
  assert.equal(clock.pending, 0);
  d.setEndpoints(['a']);
  fail(d, 'a', 'upstream-5xx', 5);
  assert.equal(d.isEjected('a'), true);
  d.evaluate(); // still callable by hand
});

test('options are validated, naming the field', () => {
  const clock = new ManualClock(0);
  const sr = ENVOY_SUCCESS_RATE;
  const fp = ENVOY_FAILURE_PERCENTAGE;
  const cases: [Record<string, unknown>, string][] = [
    [{ consecutive5xx: -1 }, 'consecutive5xx'],
    [{ consecutive5xx: 2.5 }, 'consecutive5xx'],
    [{ consecutiveGatewayFailure: NaN }, 'consecutiveGatewayFailure'],
    [{ consecutiveLocalOriginFailure: '5' }, 'consecutiveLocalOriginFailure'],
    [{ intervalMs: 0 }, 'intervalMs'],
    [{ baseEjectionMs: 0 }, 'baseEjectionMs'],
    [{ baseEjectionMs: 1000, maxEjectionMs: 999 }, 'maxEjectionMs'],
    [{ maxEjectionPercent: 101 }, 'maxEjectionPercent'],
    [{ maxEjectionPercent: -1 }, 'maxEjectionPercent'],
    [{ successRate: 1 }, 'successRate'],
    [{ successRate: { ...sr, minimumHosts: -1 } }, 'successRate.minimumHosts'],
    [{ successRate: { ...sr, requestVolume: 0 } }, 'successRate.requestVolume'],
    [{ successRate: { ...sr, stdevFactor: -0.1 } }, 'successRate.stdevFactor'],
    [{ successRate: { minimumHosts: 5, requestVolume: 100 } }, 'successRate.stdevFactor'],
    [{ failurePercentage: { ...fp, threshold: 101 } }, 'failurePercentage.threshold'],
    [{ failurePercentage: { ...fp, minimumHosts: 1.5 } }, 'failurePercentage.minimumHosts'],
    [{ failurePercentage: { ...fp, requestVolume: 0 } }, 'failurePercentage.requestVolume'],
    [{ onEvent: 1 }, 'onEvent'],
    [{ clock: undefined }, 'clock'],
    [{ clock: { now: () => 0 } }, 'clock'],
  ];
  for (const [bad, field] of cases) {
    assert.throws(
      () => new OutlierDetector({ clock, ...bad } as OutlierOptions),
      (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_VALIDATION' && e.field === field,
      `expected a validation error on ${field} for ${JSON.stringify(bad)}`,
    );
  }
  assert.equal(clock.pending, 0, 'a refused construction sets no timer');
  // a base above the default max raises the default max (Envoy: max(300 s, base))
  const d = new OutlierDetector({ clock, baseEjectionMs: 600_000, successRate: sr, failurePercentage: fp });
  d.setEndpoints(['a']);
  const events: number[] = [];
  const e = new OutlierDetector({ clock, baseEjectionMs: 600_000, onEvent: (ev) => events.push(ev.untilMs ?? -1) });
  e.setEndpoints(['a']);
  fail(e, 'a', 'upstream-5xx', 5);
  assert.deepEqual(events, [600_000]);
  d.stop();
  e.stop();
});

test('ejectedKeys lists the ejected endpoints as they are ejected, return, or leave; ejectedUntil tells when each ejection ends', () => {
  const { clock, d } = setup(TEN, { maxEjectionPercent: 100, intervalMs: HOUR });
  assert.deepEqual([...d.ejectedKeys()], []);
  fail(d, 'svc/k1', 'local-origin', 5);
  clock.advance(10);
  fail(d, 'svc/k2', 'upstream-5xx', 5);
  fail(d, 'svc/k3', 'upstream-5xx', 5);
  assert.deepEqual([...d.ejectedKeys()], ['svc/k1', 'svc/k2', 'svc/k3']);
  assert.equal(d.ejectedUntil('svc/k1'), 30_000);
  assert.equal(d.ejectedUntil('svc/k2'), 30_010);
  assert.equal(d.ejectedUntil('svc/k4'), null, 'not ejected');
  assert.equal(d.ejectedUntil('svc/nope'), null, 'unknown');
  d.removeEndpoint('svc/k2');
  assert.deepEqual([...d.ejectedKeys()], ['svc/k1', 'svc/k3'], 'an endpoint that left is no longer listed');
  d.setEndpoints(TEN.filter((k) => k !== 'svc/k3'));
  assert.deepEqual([...d.ejectedKeys()], ['svc/k1']);
  clock.advance(29_990);
  assert.deepEqual([...d.ejectedKeys()], ['svc/k1'], 'over its time but not yet ended: still listed (isEjected ends it)');
  assert.equal(d.isEjected('svc/k1'), false);
  assert.deepEqual([...d.ejectedKeys()], []);
  d.stop();
});
