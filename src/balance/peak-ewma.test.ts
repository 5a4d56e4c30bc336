import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.js';
import type { Completion } from './balancer.js';
import { PeakEwmaBalancer } from './peak-ewma.js';
import { createRng } from './rng.js';
import { countPicks, setOf } from './test-helpers.js';

const near = (got: number | undefined, want: number, eps = 1e-6) => assert.ok(got !== undefined && Math.abs(got - want) < eps, `got ${got}, want ${want}`);

/**
 * A request stream on a manual clock: `perMs` requests every millisecond, each answered after the
 * latency its endpoint has at the time it was sent. Returns each endpoint's share in percent.
 */
function simulation(b: PeakEwmaBalancer, clock: ManualClock, latency: Record<string, number>) {
  const queues = new Map<string, Array<{ due: number; latencyMs: number; c: Completion }>>();
  return (ms: number, perMs = 1): Record<string, number> => {
    const counts: Record<string, number> = {};
    for (let t = 0; t < ms; t++) {
      clock.advance(1);
      const now = clock.now();
      for (const q of queues.values()) {
        while (q.length > 0 && q[0]!.due <= now) {
          const r = q.shift()!;
          r.c.end({ latencyMs: r.latencyMs, ok: true });
        }
      }
      for (let k = 0; k < perMs; k++) {
        const e = b.pick();
        assert.ok(e !== null);
        counts[e.id] = (counts[e.id] ?? 0) + 1;
        const l = latency[e.id]!;
        let q = queues.get(e.id);
        if (q === undefined) queues.set(e.id, (q = []));
        q.push({ due: now + l, latencyMs: l, c: b.start(e) });
      }
    }
    for (const k of Object.keys(counts)) counts[k] = (100 * counts[k]!) / (ms * perMs);
    return counts;
  };
}

test('steers away from a slow endpoint, and back once it is fast again', () => {
  const clock = new ManualClock(0);
  const b = new PeakEwmaBalancer({ clock, rng: createRng(5) });
  b.update(setOf(3));
  const latency: Record<string, number> = { e0: 10, e1: 10, e2: 100 };
  const run = simulation(b, clock, latency);
  run(10_000); // warm-up: 10 s
  const s = run(50_000);
  assert.ok((s['e2'] ?? 0) < 10, `slow endpoint got ${s['e2']}%`);
  for (const id of ['e0', 'e1']) assert.ok(s[id]! > 42 && s[id]! < 55, `${id} got ${s[id]}%`);
  near(b.estimateMs('svc/e0'), 10, 0.2);
  assert.ok(b.estimateMs('svc/e2')! > 50);

  // It recovers: idle decay gets it tried again, and fast answers bring its estimate down.
  latency['e2'] = 10;
  run(50_000);
  const r = run(20_000);
  assert.ok(r['e2']! > 25, `recovered endpoint got ${r['e2']}%`);
  near(b.estimateMs('svc/e2'), 10, 0.5);
});

test('the same under concurrency (3 requests per ms)', () => {
  const clock = new ManualClock(0);
  const b = new PeakEwmaBalancer({ clock, rng: createRng(9) });
  b.update(setOf(3));
  const run = simulation(b, clock, { e0: 10, e1: 10, e2: 100 });
  run(10_000, 3);
  const s = run(30_000, 3);
  assert.ok((s['e2'] ?? 0) < 10, `slow endpoint got ${s['e2']}%`);
});

test('a new endpoint starts at the default estimate (30 ms)', () => {
  const clock = new ManualClock(0);
  const b = new PeakEwmaBalancer({ clock });
  b.update(setOf(2));
  near(b.estimateMs('svc/e0'), 30);
  assert.equal(b.estimateMs('svc/nope'), undefined);
  const c = new PeakEwmaBalancer({ clock, defaultRttMs: 5 });
  c.update(setOf(1));
  near(c.estimateMs('svc/e0'), 5);
});

test('peak-sensitive: a slower answer replaces the estimate, a faster one is blended in over tau', () => {
  const clock = new ManualClock(0);
  const b = new PeakEwmaBalancer({ clock, decayMs: 10_000 });
  b.update(setOf(1));
  const e = b.set.list()[0]!;
  b.start(e).end({ latencyMs: 100, ok: true });
  near(b.estimateMs(e.key), 100);
  // A faster answer 10 s (one tau) after: weight 1 - 1/e for it.
  const c = b.start(e);
  clock.advance(10_000);
  c.end({ latencyMs: 10, ok: true });
  near(b.estimateMs(e.key), 100 * Math.exp(-1) + 10 * (1 - Math.exp(-1)));
  // A faster answer right after: barely moves it (time-based, not count-based).
  const before = b.estimateMs(e.key)!;
  const d = b.start(e);
  clock.advance(1);
  d.end({ latencyMs: 10, ok: true });
  assert.ok(before - b.estimateMs(e.key)! < 0.01);
});

test('idle endpoints decay toward zero; busy ones hold their estimate', () => {
  const clock = new ManualClock(0);
  const b = new PeakEwmaBalancer({ clock, decayMs: 1000 });
  b.update(setOf(2));
  const [e0, e1] = b.set.list();
  b.start(e0!).end({ latencyMs: 200, ok: true });
  const busy = b.start(e1!);
  clock.advance(1000);
  near(b.estimateMs(e0!.key), 200 * Math.exp(-1), 1e-9);
  near(b.estimateMs(e1!.key), 30, 1e-9);
  assert.equal(b.inflight(e1!.key), 1);
  busy.end({ latencyMs: 300, ok: true });
  assert.equal(b.inflight(e1!.key), 0);
  near(b.estimateMs(e1!.key), 300);
});

test('failures never lower the estimate', () => {
  const clock = new ManualClock(0);
  const b = new PeakEwmaBalancer({ clock });
  b.update(setOf(1));
  const e = b.set.list()[0]!;
  const c = b.start(e);
  clock.advance(60_000);
  c.end({ latencyMs: 1, ok: false });
  near(b.estimateMs(e.key), 30);
  b.start(e).end({ latencyMs: 500, ok: false });
  near(b.estimateMs(e.key), 500);
  b.start(e).end({ latencyMs: NaN, ok: true });
  near(b.estimateMs(e.key), 500, 1e-9);
  assert.equal(b.inflight(e.key), 0);
});

test('in-flight requests raise the cost: a busy endpoint is avoided', () => {
  const clock = new ManualClock(0);
  const b = new PeakEwmaBalancer({ clock, rng: createRng(1) });
  b.update(setOf(3));
  const e0 = b.set.list()[0]!;
  const held = [b.start(e0), b.start(e0)];
  const counts = countPicks(b, 3000);
  assert.equal(counts.get('e0'), undefined, 'cost 30x3 loses to 30x1 every time');
  for (const c of held) c.end({ latencyMs: 30, ok: true });
  assert.ok(countPicks(b, 3000).get('e0')! > 500);
});

test('weights divide the cost', () => {
  const clock = new ManualClock(0);
  const b = new PeakEwmaBalancer({ clock, rng: createRng(1) });
  b.update(setOf(2, [3, 1]));
  const e0 = b.set.list()[0]!;
  // e0: 30 x (1 + 1) / 3 = 20 < e1: 30 x 1 / 1.
  const c = b.start(e0);
  assert.deepEqual(Object.fromEntries(countPicks(b, 100)), { e0: 100 });
  // e0: 30 x 4 / 3 = 40 > 30.
  const more = [b.start(e0), b.start(e0)];
  assert.deepEqual(Object.fromEntries(countPicks(b, 100)), { e1: 100 });
  for (const x of [c, ...more]) x.end({ latencyMs: 30, ok: true });
});

test('estimates and in-flight counts survive updates; a new address starts afresh', () => {
  const clock = new ManualClock(0);
  const b = new PeakEwmaBalancer({ clock });
  const s1 = setOf(3);
  b.update(s1);
  const e0 = s1.list()[0]!;
  b.start(e0).end({ latencyMs: 250, ok: true });
  const open = b.start(e0);
  const s2 = s1.apply({ type: 'remove', keys: ['svc/e2'] }).apply({ type: 'add', endpoints: [{ ...e0, weight: 4 }] });
  b.update(s2);
  near(b.estimateMs(e0.key), 250);
  assert.equal(b.inflight(e0.key), 1);
  open.end({ latencyMs: 250, ok: true });
  assert.equal(b.inflight(e0.key), 0);
  b.update(s2.apply({ type: 'add', endpoints: [{ ...e0, address: '10.7.7.7' }] }));
  near(b.estimateMs(e0.key), 30);
  // A weight-0 (drained) endpoint keeps its state too.
  b.start(b.set.get(e0.key)!).end({ latencyMs: 77, ok: true });
  b.update(b.set.apply({ type: 'add', endpoints: [{ ...e0, address: '10.7.7.7', weight: 0 }] }));
  assert.equal(b.size, 1);
  near(b.estimateMs(e0.key), 77);
});
