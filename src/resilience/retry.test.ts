import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseService } from '../api/parse.js';
import { ManualClock } from '../core/clock.js';
import { retryDelay, type RetryAttempt } from './retry.js';
import { RetryBudget } from './retry-budget.js';

const policy = (retries: object = {}) => parseService({ name: 's', retries }).traffic.routes[0]!.retries;
const budget = (opts: { ratio?: number; minRetriesPerSecond?: number } = {}) => new RetryBudget({ clock: new ManualClock(), ...opts });
const GET: RetryAttempt = { retries: 0, idempotent: true, hasBody: false, bodyKept: false, timeLeftMs: Number.POSITIVE_INFINITY };
const POST: RetryAttempt = { ...GET, idempotent: false, hasBody: true, bodyKept: true };
const TOP = () => 1 - 2 ** -40;

test('the default policy retries the four conditions and 503 (an app saying it is overloaded), no other status', () => {
  const p = policy();
  for (const c of ['connect-failure', 'reset', 'refused-stream', 'per-try-timeout'] as const) assert.equal(typeof retryDelay(p, c, 0, GET, budget()), 'number', c);
  assert.equal(typeof retryDelay(p, 'status', 503, GET, budget()), 'number', '503');
  for (const s of [500, 501, 502, 504, 505]) assert.equal(retryDelay(p, 'status', s, GET, budget()), 'not-retried', String(s));
  const only = policy({ on: ['reset'], statuses: [500] });
  assert.equal(retryDelay(only, 'connect-failure', 0, GET, budget()), 'not-retried');
  assert.equal(retryDelay(only, 'status', 503, GET, budget()), 'not-retried');
  assert.equal(typeof retryDelay(only, 'status', 500, GET, budget()), 'number');
});

test('methods: a POST is retried only when nothing reached an app, or when the route allows it', () => {
  const p = policy();
  assert.equal(retryDelay(p, 'status', 503, POST, budget()), 'method');
  assert.equal(retryDelay(p, 'reset', 0, POST, budget()), 'method');
  assert.equal(typeof retryDelay(p, 'connect-failure', 0, POST, budget()), 'number');
  assert.equal(typeof retryDelay(p, 'refused-stream', 0, POST, budget()), 'number');
  assert.equal(typeof retryDelay(policy({ nonIdempotent: true }), 'status', 503, POST, budget()), 'number');
  assert.equal(retryDelay(p, 'connect-failure', 0, { ...POST, bodyKept: false }, budget()), 'body', 'a body that was not kept cannot be sent again');
});

test('backoff: full jitter under min(max, base * 2^n); max retries; the deadline', () => {
  const p = policy({ maxRetries: 5, backoff: { base: '25ms', max: '250ms' } });
  const ceilings = [0, 1, 2, 3, 4].map((n) => retryDelay(p, 'reset', 0, { ...GET, retries: n }, budget(), TOP));
  assert.deepEqual(ceilings, [24, 49, 99, 199, 249], 'the top of each range (exclusive ceiling)');
  assert.equal(retryDelay(p, 'reset', 0, GET, budget(), () => 0), 0);
  assert.equal(retryDelay(p, 'reset', 0, GET, budget(), () => Number.NaN), 0, 'a bad rng gives the shortest delay');
  assert.equal(retryDelay(p, 'reset', 0, { ...GET, retries: 5 }, budget()), 'max-retries');
  assert.equal(retryDelay(p, 'reset', 0, { ...GET, retries: 2, timeLeftMs: 50 }, budget(), TOP), 'deadline', 'a 99 ms backoff does not fit in 50 ms');
  assert.equal(retryDelay(policy({ maxRetries: 0 }), 'reset', 0, GET, budget()), 'max-retries');
});

test('the budget is asked last, and its refusal is told apart', () => {
  const b = budget({ ratio: 0, minRetriesPerSecond: 0 });
  assert.equal(retryDelay(policy(), 'status', 500, GET, b), 'not-retried');
  assert.equal(retryDelay(policy(), 'status', 503, POST, b), 'method');
  assert.equal(b.exhausted, 0, 'refusals for other reasons do not touch the budget');
  assert.equal(retryDelay(policy(), 'status', 503, GET, b), 'budget');
  assert.equal(b.exhausted, 1);
  const one = budget({ ratio: 0, minRetriesPerSecond: 0.1 });
  assert.equal(typeof retryDelay(policy(), 'reset', 0, GET, one), 'number', 'the floor (0.1/s over 10 s) allows one');
  assert.equal(retryDelay(policy(), 'reset', 0, GET, one), 'budget');
});
