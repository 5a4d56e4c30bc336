import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff, DEFAULT_BACKOFF_BASE_MS, DEFAULT_BACKOFF_CAP_MS } from './backoff.js';
import { SkeinError } from './errors.js';
import { seededRandom } from './seeded-random.js';

/** An rng that always returns `v` (just under 1 gives each ceiling's top). */
const fixed = (v: number) => () => v;
const TOP = 1 - 2 ** -32;


test('defaults: base 100 ms, cap 10 s; the ceiling doubles from base to cap', () => {
  const b = new Backoff({ rng: fixed(TOP) });
  assert.equal(b.baseMs, DEFAULT_BACKOFF_BASE_MS);
  assert.equal(b.capMs, DEFAULT_BACKOFF_CAP_MS);
  const ceilings: number[] = [];
  const delays: number[] = [];
  for (let i = 0; i < 10; i++) {
    ceilings.push(b.ceiling);
    delays.push(b.next());
  }
  assert.deepEqual(ceilings, [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]);
  assert.deepEqual(delays, [99, 199, 399, 799, 1599, 3199, 6399, 9999, 9999, 9999]);
});

test('full jitter: delay = floor(rng * min(cap, base * 2^attempt))', () => {
  const b = new Backoff({ baseMs: 10, capMs: 1000, rng: fixed(0.5) });
  assert.deepEqual([b.next(), b.next(), b.next(), b.next()], [5, 10, 20, 40]);
  const zero = new Backoff({ baseMs: 10, capMs: 1000, rng: fixed(0) });
  assert.deepEqual([zero.next(), zero.next(), zero.next()], [0, 0, 0], 'full jitter reaches down to 0');
  assert.equal(zero.attempt, 3, 'attempts count even when the delay drawn is 0');
});

test('reset() starts from the base ceiling again', () => {
  const b = new Backoff({ baseMs: 50, capMs: 400, rng: fixed(TOP) });
  for (let i = 0; i < 6; i++) b.next();
  assert.equal(b.ceiling, 400);
  b.reset();
  assert.equal(b.attempt, 0);
  assert.equal(b.ceiling, 50);
  assert.equal(b.next(), 49);
  assert.equal(b.next(), 99);
});

test('seeded rng: every delay lies in [0, ceiling) and the sequence repeats with the seed', () => {
  const run = (seed: number) => {
    const b = new Backoff({ baseMs: 100, capMs: 10_000, rng: seededRandom(seed) });
    const out: Array<[number, number]> = [];
    for (let i = 0; i < 200; i++) {
      const c = b.ceiling;
      out.push([b.next(), c]);
      if (i % 37 === 36) b.reset();
    }
    return out;
  };
  const a = run(42);
  for (const [d, c] of a) {
    assert.ok(Number.isInteger(d) && d >= 0 && d < c, `${d} in [0, ${c})`);
  }
  assert.deepEqual(run(42), a, 'same seed, same delays');
  assert.notDeepEqual(run(43), a, 'another seed, other delays');
  // Jitter spreads the capped delays over the whole range, not near the cap.
  const capped = a.filter(([, c]) => c === 10_000).map(([d]) => d);
  assert.ok(capped.length > 50);
  assert.ok(Math.min(...capped) < 2500 && Math.max(...capped) > 7500, `capped delays spread: ${Math.min(...capped)}..${Math.max(...capped)}`);
});

test('many attempts never overflow: the exponent stops at the cap', () => {
  const b = new Backoff({ baseMs: 1, capMs: 1000, rng: fixed(TOP) });
  for (let i = 0; i < 5000; i++) b.next();
  assert.equal(b.attempt, 10, '2^10 = 1024 >= 1000');
  assert.equal(b.next(), 999);
  const c = new Backoff({ baseMs: 1, capMs: Number.MAX_VALUE, rng: fixed(0.5) });
  for (let i = 0; i < 2000; i++) assert.ok(Number.isFinite(c.next()));
});

test('a misbehaving rng never yields NaN, a negative delay or one at the ceiling', () => {
  for (const v of [NaN, -1, 1, 2, Infinity]) {
    const d = new Backoff({ baseMs: 100, capMs: 100, rng: fixed(v) }).next();
    assert.ok(Number.isInteger(d) && d >= 0 && d < 100, `rng ${v} -> ${d}`);
  }
});

test('invalid options are refused with SKEIN_E_VALIDATION naming the field', () => {
  const cases: Array<[ConstructorParameters<typeof Backoff>[0], string]> = [
    [{ baseMs: 0 }, 'baseMs'],
    [{ baseMs: -5 }, 'baseMs'],
    [{ baseMs: NaN }, 'baseMs'],
    [{ baseMs: 100, capMs: 50 }, 'capMs'],
    [{ capMs: Infinity }, 'capMs'],
  ];
  for (const [opts, field] of cases) {
    assert.throws(
      () => new Backoff(opts),
      (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_VALIDATION' && e.field === field,
      JSON.stringify(opts),
    );
  }
  assert.equal(new Backoff({ baseMs: 100, capMs: 100 }).capMs, 100, 'cap may equal base');
});
