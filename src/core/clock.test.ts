import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock, systemClock } from './clock.js';

test('ManualClock starts at the given time and moves only on advance', () => {
  const c = new ManualClock(1000);
  assert.equal(c.now(), 1000);
  assert.equal(c.now(), 1000);
  c.advance(250);
  assert.equal(c.now(), 1250);
  assert.equal(new ManualClock().now(), 1_700_000_000_000);
});

test('timeouts fire once, when due, in time order, with now() at their due time', () => {
  const c = new ManualClock(0);
  const fired: Array<[string, number]> = [];
  c.setTimeout(() => fired.push(['c', c.now()]), 300);
  c.setTimeout(() => fired.push(['a', c.now()]), 100);
  c.setTimeout(() => fired.push(['b', c.now()]), 200);
  c.advance(99);
  assert.deepEqual(fired, []);
  c.advance(1);
  assert.deepEqual(fired, [['a', 100]]);
  c.advance(500);
  assert.deepEqual(fired, [['a', 100], ['b', 200], ['c', 300]]);
  assert.equal(c.now(), 600);
  assert.equal(c.pending, 0);
  c.advance(1000);
  assert.equal(fired.length, 3, 'a timeout fires only once');
});

test('timers due at the same time fire in the order they were set', () => {
  const c = new ManualClock(0);
  const order: number[] = [];
  for (let i = 0; i < 5; i++) c.setTimeout(() => order.push(i), 50);
  c.advance(50);
  assert.deepEqual(order, [0, 1, 2, 3, 4]);
});

test('a zero-delay timeout fires on advance(0), not synchronously', () => {
  const c = new ManualClock(0);
  let n = 0;
  c.setTimeout(() => n++, 0);
  assert.equal(n, 0);
  c.advance(0);
  assert.equal(n, 1);
});

test('intervals repeat every period across one long advance', () => {
  const c = new ManualClock(0);
  const at: number[] = [];
  c.setInterval(() => at.push(c.now()), 100);
  c.advance(350);
  assert.deepEqual(at, [100, 200, 300]);
  c.advance(50);
  assert.deepEqual(at, [100, 200, 300, 400]);
  assert.equal(c.pending, 1);
});

test('intervals and timeouts interleave by due time', () => {
  const c = new ManualClock(0);
  const log: string[] = [];
  c.setInterval(() => log.push(`i${c.now()}`), 100);
  c.setTimeout(() => log.push(`t${c.now()}`), 150);
  c.advance(300);
  assert.deepEqual(log, ['i100', 't150', 'i200', 'i300']);
});

test('cancel stops timeouts and intervals, even from inside a callback', () => {
  const c = new ManualClock(0);
  let t = 0;
  let i = 0;
  const th = c.setTimeout(() => t++, 100);
  th.cancel();
  const ih = c.setInterval(() => {
    i++;
    if (i === 2) ih.cancel();
  }, 10);
  c.advance(1000);
  assert.equal(t, 0);
  assert.equal(i, 2);
  assert.equal(c.pending, 0);
  th.cancel(); // cancelling twice is harmless
});

test('a callback can cancel another timer due in the same advance', () => {
  const c = new ManualClock(0);
  let second = 0;
  const h2 = c.setTimeout(() => second++, 200);
  c.setTimeout(() => h2.cancel(), 100);
  c.advance(300);
  assert.equal(second, 0);
});

test('timers set from a callback fire within the same advance when due', () => {
  const c = new ManualClock(0);
  const at: number[] = [];
  c.setTimeout(() => {
    at.push(c.now());
    c.setTimeout(() => at.push(c.now()), 50);
  }, 100);
  c.advance(200);
  assert.deepEqual(at, [100, 150]);
  assert.equal(c.now(), 200);
});

test('systemClock timers fire and cancel', async (t) => {
  // systemClock unrefs its timers; keep the event loop alive while waiting for them.
  const keepAlive = setInterval(() => {}, 1000);
  t.after(() => clearInterval(keepAlive));
  const before = Date.now();
  assert.ok(Math.abs(systemClock.now() - before) < 1000);
  let cancelled = 0;
  systemClock.setTimeout(() => cancelled++, 1).cancel();
  await new Promise<void>((resolve) => systemClock.setTimeout(resolve, 1));
  let ticks = 0;
  await new Promise<void>((resolve) => {
    const h = systemClock.setInterval(() => {
      if (++ticks === 2) {
        h.cancel();
        resolve();
      }
    }, 1);
  });
  assert.equal(ticks, 2);
  assert.equal(cancelled, 0);
});
