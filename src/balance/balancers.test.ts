/** Behaviours every balancer shares: empty sets, weight 0, the gate, options, completions. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.js';
import { isSkeinError } from '../core/errors.js';
import { EndpointSet, type Endpoint } from '../discovery/endpoint.js';
import { BALANCER_KINDS, BALANCERS, DEFAULT_BALANCER_KIND, type MaglevBalancer, NOOP_COMPLETION, createBalancer, createRng, isBalancerKind, type Balancer, type BalancerKind } from './index.js';
import { countPicks, randomKeys, setOf, shares } from './test-helpers.js';

function make(kind: BalancerKind, seed = 1): Balancer {
  return createBalancer(kind, { rng: createRng(seed), clock: new ManualClock(0) });
}

const keys = randomKeys(4096, createRng(99));
const withKey = (i: number) => ({ hash: keys[i % keys.length] });

test('the kinds, and peak-ewma as the default', () => {
  assert.deepEqual([...BALANCER_KINDS], ['round-robin', 'weighted-round-robin', 'random', 'least-request', 'peak-ewma', 'ring-hash', 'maglev']);
  assert.equal(DEFAULT_BALANCER_KIND, 'peak-ewma');
  assert.equal(createBalancer().kind, 'peak-ewma');
  for (const k of BALANCER_KINDS) {
    assert.equal(createBalancer(k).kind, k);
    assert.ok(isBalancerKind(k));
  }
  assert.ok(!isBalancerKind('fastest'));
});

test('unknown kinds and bad options are validation errors naming the field', () => {
  const fieldOf = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      assert.ok(isSkeinError(e));
      assert.equal(e.code, 'SKEIN_E_VALIDATION');
      return e.field;
    }
    assert.fail('no error');
  };
  assert.equal(fieldOf(() => createBalancer('fastest' as BalancerKind)), 'kind');
  assert.equal(fieldOf(() => createBalancer('maglev', {}, { tableSize: 65536 })), 'tableSize');
  assert.equal(fieldOf(() => createBalancer('peak-ewma', {}, { decayMs: 0 })), 'decayMs');
  assert.equal(fieldOf(() => createBalancer('peak-ewma', {}, { defaultRttMs: -1 })), 'defaultRttMs');
  assert.equal(fieldOf(() => createBalancer('ring-hash', {}, { minRingSize: 10, maxRingSize: 5 })), 'minRingSize');
  assert.equal(fieldOf(() => createBalancer('random', { rng: 3 as unknown as () => number })), 'rng');
  assert.equal(fieldOf(() => createBalancer('weighted-round-robin', {}, { maxSchedule: -1 })), 'maxSchedule');
});

test('each kind takes only its own options: another kind\'s option is refused, naming the kind and the option', () => {
  assert.throws(
    () => createBalancer('peak-ewma', {}, { tableSize: 65537 }),
    (e: unknown) => isSkeinError(e) && e.code === 'SKEIN_E_VALIDATION' && e.field === 'tableSize' && e.message === 'peak-ewma balancer: tableSize is not a known field',
  );
  assert.throws(() => createBalancer('round-robin', {}, { decayMs: 5 }), (e: unknown) => isSkeinError(e) && e.field === 'decayMs');
  assert.throws(() => createBalancer('maglev', {}, { tableSize: 'big' }), (e: unknown) => isSkeinError(e) && e.message === 'maglev balancer: tableSize must be an integer');
  // Its own options reach it.
  assert.equal((createBalancer('maglev', {}, { tableSize: 7 }) as MaglevBalancer).tableSize, 7);
  assert.equal((createBalancer('peak-ewma', {}, { decayMs: 500 }) as unknown as { decayMs: number }).decayMs, 500);
});

test('every kind of BALANCER_KINDS has one registration, under its own name', () => {
  assert.deepEqual(Object.keys(BALANCERS).sort(), [...BALANCER_KINDS].sort());
  for (const [kind, reg] of Object.entries(BALANCERS)) assert.equal(reg.kind, kind);
});

for (const kind of BALANCER_KINDS) {
  test(`${kind}: no endpoints, or only drained ones -> null`, () => {
    const b = make(kind);
    assert.equal(b.pick(), null);
    assert.equal(b.pick({ hash: 'k' }), null);
    assert.equal(b.size, 0);
    b.update(setOf(3, [0, 0, 0]));
    assert.equal(b.size, 0);
    assert.equal(b.pick(), null);
    assert.equal(b.pick({ hash: 'k', available: () => true }), null);
    b.update(EndpointSet.empty());
    assert.equal(b.pick(), null);
  });

  test(`${kind}: weight-0 endpoints are never picked`, () => {
    const b = make(kind);
    // Equal weights for the others: peak-ewma gives a heavier endpoint every pair it is in at no load.
    b.update(setOf(5, [1, 0, 1, 0, 1]));
    assert.equal(b.size, 3);
    const counts = countPicks(b, 20_000, withKey);
    assert.deepEqual([...counts.keys()].sort(), ['e0', 'e2', 'e4']);
    b.update(setOf(5, [0, 0, 0, 0, 7]));
    assert.deepEqual([...countPicks(b, 1000, withKey).keys()], ['e4']);
  });

  test(`${kind}: a single endpoint is always picked, unless the gate says no`, () => {
    const b = make(kind);
    b.update(setOf(1));
    for (let i = 0; i < 50; i++) assert.equal(b.pick(withKey(i))?.id, 'e0');
    assert.equal(b.pick({ hash: 'x', available: () => false }), null);
    assert.equal(b.pick({ available: () => false }), null);
  });

  test(`${kind}: the gate is respected; all unavailable -> null`, () => {
    const b = make(kind);
    b.update(setOf(20, [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5]));
    const blocked = new Set(['e0', 'e3', 'e4', 'e7', 'e8', 'e9', 'e10', 'e11', 'e12', 'e15', 'e19']);
    const available = (e: Endpoint) => !blocked.has(e.id);
    const counts = countPicks(b, 20_000, (i) => ({ hash: i % 3 === 0 ? undefined : keys[i % keys.length], available }));
    for (const id of counts.keys()) assert.ok(!blocked.has(id) && id !== 'null', `${id} was picked`);
    assert.equal(counts.size, 20 - blocked.size, 'every available endpoint gets some');
    // Only one available: always that one.
    for (let i = 0; i < 200; i++) assert.equal(b.pick({ hash: keys[i], available: (e) => e.id === 'e13' })?.id, 'e13');
    let calls = 0;
    const none = () => {
      calls++;
      return false;
    };
    for (let i = 0; i < 100; i++) assert.equal(b.pick({ hash: i % 2 === 0 ? keys[i] : undefined, available: none }), null);
    assert.ok(calls <= 100 * 20 * 2, `the gate was asked ${calls} times for 100 picks over 20 endpoints`);
  });

  test(`${kind}: an update swaps the endpoints; removed ones are never picked again`, () => {
    const b = make(kind);
    const s1 = setOf(5);
    b.update(s1);
    assert.equal(b.set, s1);
    countPicks(b, 100, withKey);
    const s2 = s1.apply({ type: 'remove', keys: ['svc/e1', 'svc/e3'] }).apply({ type: 'add', endpoints: [{ service: 'svc', id: 'n1', address: '10.9.0.1', port: 80 }] });
    b.update(s2);
    assert.equal(b.size, 4);
    const counts = countPicks(b, 10_000, withKey);
    assert.deepEqual([...counts.keys()].sort(), ['e0', 'e2', 'e4', 'n1']);
    b.update(s2);
    assert.equal(b.size, 4, 'the same snapshot again is a no-op');
  });

  test(`${kind}: completions can be ended once; extra ends are ignored`, () => {
    const b = make(kind);
    b.update(setOf(3));
    const e = b.pick({ hash: 'k' });
    assert.ok(e !== null);
    const c = b.start(e);
    c.end({ latencyMs: 5, ok: true });
    c.end({ latencyMs: 5, ok: true });
    if (kind !== 'least-request' && kind !== 'peak-ewma') assert.equal(c, NOOP_COMPLETION, 'no allocation when load is not used');
    // An endpoint from outside the set: a no-op completion, nothing breaks.
    const stranger = EndpointSet.of([{ service: 'other', id: 'x', address: '10.1.1.1', port: 1 }]).list()[0]!;
    b.start(stranger).end({ latencyMs: 1, ok: false });
  });
}

test('weights are respected within 1.5 percentage points over 100k picks (1, 2, 7)', () => {
  const weights = [1, 2, 7];
  const keyRng = createRng(7);
  for (const kind of ['weighted-round-robin', 'random', 'ring-hash', 'maglev', 'least-request'] as const) {
    const b = make(kind, 3);
    b.update(setOf(3, weights));
    const counts = new Map<string, number>();
    for (let i = 0; i < 100_000; i++) {
      const e = b.pick({ hash: `k${Math.floor(keyRng() * 2 ** 40).toString(36)}` });
      assert.ok(e !== null);
      b.start(e).end({ latencyMs: 1, ok: true });
      counts.set(e.id, (counts.get(e.id) ?? 0) + 1);
    }
    const s = shares(counts);
    weights.forEach((w, i) => {
      const got = s.get(`e${i}`) ?? 0;
      assert.ok(Math.abs(got - w * 10) <= 1.5, `${kind}: e${i} (weight ${w}) got ${got.toFixed(2)}%, want ${w * 10}% +- 1.5`);
    });
  }
});

test('round-robin cycles evenly and ignores weights other than 0', () => {
  const b = make('round-robin');
  b.update(setOf(4, [1, 5, 1, 9]));
  const counts = countPicks(b, 4000);
  assert.deepEqual([...counts.values()], [1000, 1000, 1000, 1000]);
});
