import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock, type Clock } from '../core/clock.js';
import { SkeinError } from '../core/errors.js';
import {
  DEFAULT_MAX_KEYS,
  Gcra,
  KeyedRateLimiter,
  TokenBucket,
  createRateLimiter,
  type RateLimitAlgorithm,
  type RateLimitOptions,
  type RateLimiter,
} from './rate-limit.js';
import { seeded, SettableClock } from './test-helpers.js';

const ALGORITHMS: readonly RateLimitAlgorithm[] = ['token-bucket', 'gcra'];

/** Takes until refused; returns how many were allowed (the refusal's retry-after in `last`). */
function drain(l: RateLimiter): { allowed: number; retryAfter: number } {
  let allowed = 0;
  for (;;) {
    const r = l.take();
    if (r !== 0) return { allowed, retryAfter: r };
    allowed++;
  }
}

test('createRateLimiter: token bucket by default, GCRA on request', () => {
  const clock = new ManualClock();
  const tb = createRateLimiter({ requestsPerSecond: 5, clock });
  assert.ok(tb instanceof TokenBucket);
  assert.ok(createRateLimiter({ requestsPerSecond: 5, clock, algorithm: 'token-bucket' }) instanceof TokenBucket);
  const g = createRateLimiter({ requestsPerSecond: 5, clock, algorithm: 'gcra' });
  assert.ok(g instanceof Gcra);
  assert.equal((tb as TokenBucket).burst, 5, 'default burst ceil(rate)');
  assert.equal(new Gcra({ requestsPerSecond: 2.5, clock }).burst, 3);
  assert.equal(new TokenBucket({ requestsPerSecond: 0.25, clock }).burst, 1, 'at least 1');
});

for (const algorithm of ALGORITHMS) {
  test(`${algorithm}: burst, then refusal with the right retry-after`, () => {
    const clock = new ManualClock();
    const l = createRateLimiter({ requestsPerSecond: 10, clock, algorithm });
    assert.deepEqual(drain(l), { allowed: 10, retryAfter: 100 });
    assert.equal(l.take(), 100, 'refusals are not counted');
    clock.advance(40);
    assert.equal(l.take(), 60);
    clock.advance(59);
    assert.equal(l.take(), 1);
    clock.advance(1);
    assert.equal(l.take(), 0);
    assert.equal(l.take(), 100);

    const small = createRateLimiter({ requestsPerSecond: 5, burst: 3, clock, algorithm });
    assert.deepEqual(drain(small), { allowed: 3, retryAfter: 200 });
    clock.advance(1000);
    assert.deepEqual(drain(small), { allowed: 3, retryAfter: 200 }, 'refills to the burst, not beyond');

    const big = createRateLimiter({ requestsPerSecond: 1, burst: 50, clock, algorithm });
    assert.deepEqual(drain(big), { allowed: 50, retryAfter: 1000 });
  });

  test(`${algorithm}: fractional rates and fractional intervals`, () => {
    const clock = new ManualClock();
    const half = createRateLimiter({ requestsPerSecond: 0.5, clock, algorithm });
    assert.deepEqual(drain(half), { allowed: 1, retryAfter: 2000 });
    clock.advance(1999);
    assert.equal(half.take(), 1);
    clock.advance(1);
    assert.equal(half.take(), 0);

    const tenth = createRateLimiter({ requestsPerSecond: 0.1, burst: 2, clock, algorithm });
    assert.deepEqual(drain(tenth), { allowed: 2, retryAfter: 10_000 });
    clock.advance(5000);
    assert.equal(tenth.take(), 5000);

    // 3/s: one every 333.33 ms; retry-after is ceil'd, and waiting it is always enough.
    const three = createRateLimiter({ requestsPerSecond: 3, clock, algorithm });
    assert.deepEqual(drain(three), { allowed: 3, retryAfter: 334 });
    clock.advance(333);
    assert.equal(three.take(), 1);
    clock.advance(1);
    assert.equal(three.take(), 0);
    assert.equal(three.take(), 333, 'the next is due at 666.67 ms, 332.67 ms from now');
  });

  test(`${algorithm}: sustained rate over a simulated minute is rate × 60 + burst`, () => {
    for (const [rate, burst] of [[1, undefined], [3, undefined], [10, 1], [0.5, undefined], [7.3, 4], [1000, undefined], [2.5, 20], [0.7, 2]] as const) {
      const clock = new ManualClock();
      const l = createRateLimiter({ requestsPerSecond: rate, burst, clock, algorithm });
      const b = burst ?? Math.max(1, Math.ceil(rate));
      // Constant demand: every millisecond, take until refused, t = 0 .. 60 000 ms inclusive.
      let allowed = 0;
      for (let t = 0; t <= 60_000; t++) {
        allowed += drain(l).allowed;
        if (t < 60_000) clock.advance(1);
      }
      assert.equal(allowed, b + Math.floor(rate * 60 + 1e-9), `${algorithm} rate ${rate} burst ${b}`);
    }
    // With burst 1 and an interval that is not a whole number of ms (1428.57 ms), a request polled on
    // the ms grid is up to a ms late and a bucket of one cannot bank the lateness: fewer, never more.
    const clock = new ManualClock();
    const one = createRateLimiter({ requestsPerSecond: 0.7, burst: 1, clock, algorithm });
    let allowed = 0;
    for (let t = 0; t <= 60_000; t++) {
      allowed += drain(one).allowed;
      if (t < 60_000) clock.advance(1);
    }
    assert.equal(allowed, 42, '1 + 0.7 × 60 = 43 is the bound; 42 fit');
  });

  test(`${algorithm}: a client that waits exactly the retry-after gets the full rate`, () => {
    for (const rate of [3, 7.3, 0.5, 13, 250]) {
      const clock = new ManualClock();
      const start = clock.now();
      const l = createRateLimiter({ requestsPerSecond: rate, clock, algorithm });
      const b = Math.max(1, Math.ceil(rate));
      let allowed = 0;
      for (;;) {
        const r = l.take();
        if (r === 0) {
          allowed++;
          continue;
        }
        if (clock.now() + r > start + 60_000) break;
        // One ms early is always refused; on time is always allowed.
        if (r > 1) {
          clock.advance(r - 1);
          assert.ok(l.take() > 0, `rate ${rate}: allowed a ms early`);
          clock.advance(1);
        } else {
          clock.advance(r);
        }
        assert.equal(l.take(), 0, `rate ${rate}: refused after waiting the retry-after`);
        allowed++;
      }
      assert.equal(allowed, b + Math.floor(rate * 60 + 1e-9), `rate ${rate}`);
    }
  });

  test(`${algorithm}: idle time restores the burst, never more; a clock that goes back grants nothing`, () => {
    const clock = new SettableClock(1_700_000_000_000);
    const l = createRateLimiter({ requestsPerSecond: 4, burst: 6, clock, algorithm });
    assert.equal(drain(l).allowed, 6);
    clock.t += 86_400_000; // a day idle
    assert.deepEqual(drain(l), { allowed: 6, retryAfter: 250 });
    clock.t -= 10_000;
    assert.ok(l.take() > 0, 'backwards: still refused');
    clock.t -= 1e12;
    assert.ok(l.take() > 0);
    clock.t += 1e12 + 10_000 + 250;
    assert.equal(l.take(), 0, 'back on time: one interval later, one request');
    assert.ok(l.take() > 0);
    clock.t = Number.NaN;
    assert.ok(algorithm === 'gcra' ? l.take() === 1 : l.take() > 0, 'a NaN time is refused');
  });
}

test('token bucket and GCRA make identical decisions for any arrival times', () => {
  for (let seed = 1; seed <= 20; seed++) {
    const rnd = seeded(seed);
    const rate = [0.3, 1, 2.5, 10, 33.3, 400][seed % 6] as number;
    const burst = 1 + Math.floor(rnd() * 8);
    const clock = new ManualClock();
    const tb = new TokenBucket({ requestsPerSecond: rate, burst, clock });
    const g = new Gcra({ requestsPerSecond: rate, burst, clock });
    const interval = 1000 / rate;
    let allowed = 0;
    for (let i = 0; i < 5000; i++) {
      clock.advance(Math.floor(rnd() * rnd() * interval * 3));
      const n = rnd() < 0.2 ? 1 + Math.floor(rnd() * 10) : 1;
      for (let k = 0; k < n; k++) {
        const a = tb.take();
        const b = g.take();
        assert.equal(a, b, `seed ${seed} rate ${rate} burst ${burst} step ${i}`);
        if (a === 0) allowed++;
      }
    }
    assert.ok(allowed > 100, `seed ${seed}: the comparison exercised allowed requests (${allowed})`);
  }
});

test('in any interval of d ms at most burst + rate × d / 1000 requests are allowed', () => {
  for (const algorithm of ALGORITHMS) {
    for (let seed = 1; seed <= 6; seed++) {
      const rnd = seeded(seed * 7919);
      const rate = [0.5, 3, 12.5][seed % 3] as number;
      const burst = 1 + (seed % 5);
      const clock = new ManualClock();
      const l = createRateLimiter({ requestsPerSecond: rate, burst, clock, algorithm });
      const times: number[] = [];
      while (times.length < 1500) {
        clock.advance(Math.floor(rnd() * (2000 / rate)));
        const n = 1 + Math.floor(rnd() * 4);
        for (let k = 0; k < n; k++) if (l.take() === 0) times.push(clock.now());
      }
      for (let i = 0; i < times.length; i++) {
        for (let j = i; j < times.length; j++) {
          const d = (times[j] as number) - (times[i] as number);
          assert.ok(j - i + 1 <= burst + (rate * d) / 1000 + 1e-9, `${algorithm} seed ${seed}: ${j - i + 1} in ${d} ms`);
        }
      }
    }
  }
});

for (const algorithm of ALGORITHMS) {
  test(`keyed (${algorithm}): keys are isolated`, () => {
    const clock = new ManualClock();
    const k = new KeyedRateLimiter({ requestsPerSecond: 2, burst: 2, clock, algorithm });
    assert.equal(k.size, 0);
    assert.equal(k.take('a'), 0);
    assert.equal(k.take('a'), 0);
    assert.equal(k.take('a'), 500);
    assert.equal(k.size, 1);
    assert.equal(k.take('b'), 0, 'b has its own burst');
    assert.equal(k.take('b'), 0);
    assert.equal(k.take('b'), 500);
    assert.equal(k.take('a'), 500, 'a is still limited');
    clock.advance(500);
    assert.equal(k.take('a'), 0);
    assert.equal(k.take('b'), 0);
    assert.equal(k.take('a'), 500);
    assert.equal(k.size, 2);
  });

  test(`keyed (${algorithm}): least recently used keys are evicted beyond maxKeys`, () => {
    const clock = new ManualClock();
    const k = new KeyedRateLimiter({ requestsPerSecond: 1, burst: 1, clock, algorithm, maxKeys: 3 });
    for (const key of ['a', 'b', 'c']) assert.equal(k.take(key), 0);
    assert.equal(k.size, 3);
    assert.equal(k.take('a'), 1000, 'a is now the most recently used');
    assert.equal(k.take('d'), 0, 'd evicts b, the least recently used');
    assert.equal(k.size, 3);
    assert.equal(k.take('a'), 1000, 'a kept its state');
    assert.equal(k.take('c'), 1000, 'c kept its state');
    assert.equal(k.take('b'), 0, 'b was forgotten: it starts with a full burst again (evicting d)');
    assert.equal(k.take('d'), 0, 'd was evicted in turn');
    assert.equal(k.size, 3);

    // A flood of distinct keys keeps the size bounded, and recent keys keep their state.
    const big = new KeyedRateLimiter({ requestsPerSecond: 1, burst: 1, clock, algorithm, maxKeys: 100 });
    for (let i = 0; i < 100_000; i++) {
      assert.equal(big.take(`k${i}`), 0);
      assert.ok(big.size <= 100);
    }
    assert.equal(big.size, 100);
    for (let i = 99_900; i < 100_000; i++) assert.equal(big.take(`k${i}`), 1000, `k${i} should still be limited`);
    assert.equal(big.take('k0'), 0, 'long evicted');
  });

  test(`keyed (${algorithm}): maxKeys 1 and the default`, () => {
    const clock = new ManualClock();
    const one = new KeyedRateLimiter({ requestsPerSecond: 1, clock, algorithm, maxKeys: 1 });
    assert.equal(one.take('x'), 0);
    assert.equal(one.take('x'), 1000);
    assert.equal(one.take('y'), 0);
    assert.equal(one.size, 1);
    assert.equal(one.take('x'), 0, 'x was evicted by y');
    const dflt = new KeyedRateLimiter({ requestsPerSecond: 1, clock, algorithm });
    assert.equal(dflt.maxKeys, DEFAULT_MAX_KEYS);
    assert.equal(DEFAULT_MAX_KEYS, 10_000);
  });
}

test('validation: bad options throw SKEIN_E_VALIDATION naming the field', () => {
  const clock = new ManualClock();
  const cases: Array<[Partial<RateLimitOptions> & { maxKeys?: number }, string]> = [
    [{ requestsPerSecond: 0 }, 'requestsPerSecond'],
    [{ requestsPerSecond: -1 }, 'requestsPerSecond'],
    [{ requestsPerSecond: Number.NaN }, 'requestsPerSecond'],
    [{ requestsPerSecond: Number.POSITIVE_INFINITY }, 'requestsPerSecond'],
    [{ requestsPerSecond: '5' as unknown as number }, 'requestsPerSecond'],
    [{ requestsPerSecond: undefined as unknown as number }, 'requestsPerSecond'],
    [{ burst: 0 }, 'burst'],
    [{ burst: -3 }, 'burst'],
    [{ burst: 1.5 }, 'burst'],
    [{ burst: Number.NaN }, 'burst'],
    [{ burst: Number.POSITIVE_INFINITY }, 'burst'],
    [{ algorithm: 'leaky-bucket' as RateLimitAlgorithm }, 'algorithm'],
    [{ clock: undefined }, 'clock'],
    [{ clock: {} as Clock }, 'clock'],
  ];
  const ok = (e: unknown, field: string) => e instanceof SkeinError && e.code === 'SKEIN_E_VALIDATION' && e.field === field && e.message.includes(field);
  for (const [opts, field] of cases) {
    const full = { requestsPerSecond: 5, clock, ...opts } as RateLimitOptions;
    assert.throws(() => createRateLimiter(full), (e: unknown) => ok(e, field), `createRateLimiter ${JSON.stringify(opts)}`);
    assert.throws(() => new KeyedRateLimiter(full), (e: unknown) => ok(e, field), `KeyedRateLimiter ${JSON.stringify(opts)}`);
    if (field !== 'algorithm') {
      assert.throws(() => new TokenBucket(full), (e: unknown) => ok(e, field));
      assert.throws(() => new Gcra(full), (e: unknown) => ok(e, field));
    }
  }
  for (const maxKeys of [0, -1, 2.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.throws(() => new KeyedRateLimiter({ requestsPerSecond: 5, clock, maxKeys }), (e: unknown) => ok(e, 'maxKeys'), `maxKeys ${maxKeys}`);
  }
  assert.doesNotThrow(() => createRateLimiter({ requestsPerSecond: 0.001, burst: 1, clock }));
});
