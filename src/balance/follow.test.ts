/**
 * Balancers follow one change in O(changes) (issue 11 §6): a change of one endpoint leaves the
 * others' state alone and reads no whole list, and what they pick after many incremental changes
 * is what they would pick from the set built afresh. Table balancers (weighted round robin, ring
 * hash, Maglev) coalesce their rebuilds on large sets.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.js';
import { EndpointSet, type EndpointInput } from '../discovery/endpoint.js';
import { listCalls } from '../discovery/test-helpers.js';
import { BALANCER_KINDS, TABLE_REBUILD, createBalancer, type Balancer, type BalancerKind } from './index.js';
import { PeakEwmaBalancer } from './peak-ewma.js';
import { LeastRequestBalancer } from './least-request.js';
import { RingHashBalancer } from './ring-hash.js';
import { RoundRobinBalancer } from './round-robin.js';
import { createRng } from './rng.js';
import { countPicks, inputs, mapping, randomKeys, setOf } from './test-helpers.js';

const newcomer = (i: number, weight = 1): EndpointInput => ({ service: 'svc', id: `n${i}`, address: `10.9.${i >> 8}.${i & 255}`, port: 80, weight });

/** A random change of `s`: an endpoint added, removed, re-weighted (0 included) or moved. */
function randomChange(s: EndpointSet, rng: () => number, next: { i: number }): EndpointSet {
  const list = s.list();
  const r = rng();
  const any = list[Math.floor(rng() * list.length)];
  if (r < 0.35 || any === undefined) {
    // Ids that sort anywhere among the others (first and last places included).
    const i = next.i++;
    return s.apply({ type: 'add', endpoints: [{ ...newcomer(i, 1 + Math.floor(rng() * 3)), id: `${'adfhmpz'[i % 7]}${i}` }] });
  }
  if (r < 0.65 && list.length > 3) return s.apply({ type: 'remove', keys: [any.key] });
  if (r < 0.9) return s.apply({ type: 'add', endpoints: [{ ...any, weight: Math.floor(rng() * 3) }] });
  return s.apply({ type: 'add', endpoints: [{ ...any, port: any.port + 1 }] });
}

for (const kind of ['round-robin', 'random', 'least-request', 'peak-ewma'] as const) {
  test(`${kind}: one change among 5,000 endpoints reads no whole list`, () => {
    const b = createBalancer(kind, { rng: createRng(1), clock: new ManualClock(0) });
    let s = setOf(5000);
    b.update(s);
    const rng = createRng(2);
    const next = { i: 0 };
    const sets: EndpointSet[] = [];
    for (let i = 0; i < 200; i++) sets.push((s = randomChange(s, rng, next)));
    // The lists the random changes read are made before counting.
    const calls = listCalls(() => {
      for (const x of sets) {
        b.update(x);
        b.pick();
      }
    });
    assert.equal(calls, 0, `list() was called ${calls} times for 200 single changes`);
    assert.equal(b.size, s.pickable);
  });

  test(`${kind}: after many incremental changes it picks exactly the pickable endpoints, by weight`, () => {
    const b = createBalancer(kind, { rng: createRng(3), clock: new ManualClock(0) });
    let s = setOf(30, Array.from({ length: 30 }, (_, i) => i % 4));
    b.update(s);
    const rng = createRng(4);
    const next = { i: 0 };
    for (let i = 0; i < 500; i++) {
      s = randomChange(s, rng, next);
      b.update(s);
      if (i % 7 === 0) b.pick();
    }
    const pickable = s.list().filter((e) => e.weight > 0);
    assert.equal(b.size, pickable.length);
    const counts = countPicks(b, 40_000);
    assert.deepEqual([...counts.keys()].sort(), pickable.map((e) => e.id).sort());
    for (const e of pickable) assert.equal(b.pick({ available: (x) => x.key === e.key }), e, `${e.id} is given as it is now`);
    if (kind === 'random' || kind === 'least-request') {
      const total = pickable.reduce((a, e) => a + e.weight, 0);
      for (const e of pickable) {
        const share = (counts.get(e.id) ?? 0) / 40_000;
        assert.ok(Math.abs(share - e.weight / total) < 0.02, `${e.id}: ${share} for weight ${e.weight} of ${total}`);
      }
    }
  });
}

test('round-robin: after incremental changes one cycle visits every pickable endpoint once, in key order', () => {
  const b = new RoundRobinBalancer({ rng: createRng(5) });
  let s = setOf(40);
  b.update(s);
  const rng = createRng(6);
  const next = { i: 0 };
  for (let round = 0; round < 300; round++) {
    s = randomChange(s, rng, next);
    b.update(s);
    const pickable = s.list().filter((e) => e.weight > 0).map((e) => e.key);
    const cycle = Array.from({ length: pickable.length }, () => b.pick()!.key);
    const start = pickable.indexOf(cycle[0]!);
    assert.deepEqual(cycle, [...pickable.slice(start), ...pickable.slice(0, start)], `round ${round}`);
  }
  // Removed down to nothing and back: a fresh start.
  for (const e of s.list()) b.update((s = s.apply({ type: 'remove', keys: [e.key] })));
  assert.equal(b.pick(), null);
  b.update(s.apply({ type: 'add', endpoints: [newcomer(9000), newcomer(9001)] }));
  assert.deepEqual(new Set([b.pick()?.id, b.pick()?.id]), new Set(['n9000', 'n9001']));
});

test('peak-ewma: a change of one endpoint leaves the others\u2019 estimates and in-flight counts untouched', () => {
  const clock = new ManualClock(0);
  const b = new PeakEwmaBalancer({ clock, rng: createRng(7) });
  const s1 = setOf(1000);
  b.update(s1);
  const eps = s1.list();
  eps.forEach((e, i) => b.start(e).end({ latencyMs: 10 + i, ok: true }));
  const busy = eps.slice(0, 50).map((e) => b.start(e));
  const before = eps.map((e) => [b.estimateMs(e.key), b.inflight(e.key)]);
  const s2 = s1.apply({ type: 'remove', keys: [eps[500]!.key] });
  const s3 = s2.apply({ type: 'add', endpoints: [{ ...eps[10]!, address: '10.99.0.1' }, newcomer(1)] });
  const s4 = s3.apply({ type: 'add', endpoints: [{ ...eps[20]!, weight: 0 }] });
  b.update(s2);
  b.update(s3);
  b.update(s4);
  eps.forEach((e, i) => {
    if (i === 500) assert.equal(b.estimateMs(e.key), undefined, 'the endpoint that left is forgotten');
    else if (i === 10) assert.deepEqual([b.estimateMs(e.key), b.inflight(e.key)], [30, 0], 'a new address is a new process');
    else assert.deepEqual([b.estimateMs(e.key), b.inflight(e.key)], before[i], `${e.id} kept its state`);
  });
  assert.equal(b.estimateMs('svc/n1'), 30);
  for (const c of busy) c.end({ latencyMs: 5, ok: true });
  assert.equal(b.inflight(eps[20]!.key), 0, 'a drained endpoint still counts its requests out');
});

test('least-request: in-flight counts of the others survive a change of one endpoint', () => {
  const b = new LeastRequestBalancer({ rng: createRng(8) });
  const s1 = setOf(500);
  b.update(s1);
  const eps = s1.list();
  eps.forEach((e, i) => {
    for (let k = 0; k < i % 3; k++) b.start(e);
  });
  b.update(s1.apply({ type: 'remove', keys: [eps[7]!.key] }).apply({ type: 'add', endpoints: [newcomer(2)] }));
  eps.forEach((e, i) => assert.equal(b.inflight(e.key), i === 7 ? 0 : i % 3, e.id));
});

// ---- table balancers: coalesced rebuilds ----

const KEYS = randomKeys(20_000, createRng(9));
const big = TABLE_REBUILD.immediateUpTo * 4;

for (const kind of ['weighted-round-robin', 'ring-hash', 'maglev'] as const) {
  test(`${kind}: on a large set a burst of changes costs one rebuild, paced by the clock`, () => {
    const clock = new ManualClock(0);
    const b = createBalancer(kind, { clock, rng: createRng(10) });
    let s = setOf(big);
    b.update(s);
    b.pick({ hash: 'k' });
    const sets: EndpointSet[] = [];
    for (let i = 0; i < 100; i++) sets.push((s = s.apply({ type: 'add', endpoints: [newcomer(i)] })));
    const during = listCalls(() => {
      for (const x of sets) {
        b.update(x);
        b.pick({ hash: KEYS[0] });
      }
    });
    assert.equal(during, 0, 'no rebuild within the interval');
    assert.ok(!countPicks(b, 5000, (i) => ({ hash: KEYS[i] })).has('n5'), 'newcomers wait for the rebuild');
    clock.advance(TABLE_REBUILD.intervalMs);
    const after = listCalls(() => {
      for (let i = 0; i < 100; i++) b.pick({ hash: KEYS[i] });
    });
    assert.equal(after, 1, 'one rebuild for the whole burst');
    assert.ok(countPicks(b, 40_000, (i) => ({ hash: KEYS[i % KEYS.length] })).has('n5'), 'newcomers are picked after it');
  });

  test(`${kind}: between rebuilds, endpoints that left or were drained are never picked; moved ones are given as they are now`, () => {
    const clock = new ManualClock(0);
    const b = createBalancer(kind, { clock, rng: createRng(11) });
    const s1 = setOf(big);
    b.update(s1);
    b.pick();
    const eps = s1.list();
    const gone = new Set([eps[1]!.id, eps[2]!.id, eps[3]!.id]);
    const s2 = s1.apply({ type: 'remove', keys: [eps[1]!.key, eps[2]!.key] });
    const s3 = s2.apply({ type: 'add', endpoints: [{ ...eps[3]!, weight: 0 }, { ...eps[4]!, address: '10.77.0.4' }] });
    b.update(s2);
    b.update(s3);
    assert.equal(b.size, big - 3);
    assert.ok((b as unknown as { stale: boolean }).stale, 'changes are pending');
    for (let i = 0; i < 20_000; i++) {
      const e = b.pick({ hash: KEYS[i] });
      assert.ok(e !== null && !gone.has(e.id), `picked ${e?.id}`);
      if (e.id === eps[4]!.id) assert.equal(e.address, '10.77.0.4');
    }
    assert.equal(b.pick({ hash: KEYS[0], available: (e) => e.id === eps[4]!.id })?.address, '10.77.0.4', 'the gate sees the endpoint as it is now');
  });

  test(`${kind}: every endpoint of the table replaced within the interval: the pick rebuilds at once`, () => {
    const clock = new ManualClock(0);
    const b = createBalancer(kind, { clock, rng: createRng(12) });
    let s = setOf(big);
    b.update(s);
    b.pick();
    s = s.apply({ type: 'add', endpoints: Array.from({ length: 10 }, (_, i) => newcomer(i)) });
    b.update(s);
    b.update(s.apply({ type: 'remove', keys: setOf(big).list().map((e) => e.key) }));
    assert.equal(b.size, 10);
    assert.ok(b.pick({ hash: 'k' })?.id.startsWith('n'));
  });

  test(`${kind}: an outage (the caller's gate refuses every endpoint) with changes pending costs no rebuild per pick`, () => {
    const clock = new ManualClock(0);
    const b = createBalancer(kind, { clock, rng: createRng(13) });
    let s = setOf(big);
    b.update(s);
    b.pick();
    const none = () => false;
    const calls = listCalls(() => {
      for (let i = 0; i < 50; i++) {
        b.update((s = s.apply({ type: 'add', endpoints: [newcomer(i)] })));
        assert.equal(b.pick({ hash: KEYS[i], available: none }), null);
      }
    });
    assert.equal(calls, 0, `${calls} rebuilds while every endpoint was refused`);
  });
}

test('ring-hash: between rebuilds, the keys of an endpoint that left go exactly where the rebuilt ring sends them', () => {
  const clock = new ManualClock(0);
  const b = new RingHashBalancer({ clock });
  const s1 = setOf(big);
  b.update(s1);
  b.pick({ hash: 'k' });
  const gone = s1.list()[17]!.key;
  const s2 = s1.apply({ type: 'remove', keys: [gone] });
  b.update(s2);
  const stale = mapping(b, KEYS);
  const fresh = new RingHashBalancer({ clock });
  fresh.update(EndpointSet.of(s2.list()));
  assert.deepEqual(stale, mapping(fresh, KEYS));
  clock.advance(TABLE_REBUILD.intervalMs);
  assert.deepEqual(mapping(b, KEYS), stale, 'and the rebuild changes nothing');
});

test('every kind: a set two steps ahead (or of another lineage) is rebuilt, not followed', () => {
  for (const kind of BALANCER_KINDS as readonly BalancerKind[]) {
    const b: Balancer = createBalancer(kind, { rng: createRng(13), clock: new ManualClock(0) });
    const s1 = EndpointSet.of(inputs(5));
    b.update(s1);
    const s3 = s1.apply({ type: 'remove', keys: ['svc/e0'] }).apply({ type: 'add', endpoints: [newcomer(1)] });
    b.update(s3);
    assert.deepEqual([...countPicks(b, 2000, (i) => ({ hash: KEYS[i] })).keys()].sort(), ['e1', 'e2', 'e3', 'e4', 'n1'], kind);
    b.update(EndpointSet.of(inputs(2)));
    assert.deepEqual([...countPicks(b, 2000, (i) => ({ hash: KEYS[i] })).keys()].sort(), ['e0', 'e1'], kind);
  }
});
