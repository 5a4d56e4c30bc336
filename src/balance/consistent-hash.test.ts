/** Ring hash and Maglev: stickiness, disruption when endpoints come and go, the gate. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EndpointSet } from '../discovery/endpoint.js';
import type { Balancer } from './balancer.js';
import { MaglevBalancer, isPrime, maglevTable } from './maglev.js';
import { RingHashBalancer } from './ring-hash.js';
import { createRng } from './rng.js';
import { inputs, mapping, randomKeys, setOf, shares, countPicks } from './test-helpers.js';

const KEYS = randomKeys(100_000, createRng(2024));

function moved(a: readonly string[], b: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n / a.length;
}

const kinds: Array<{ name: string; make: () => Balancer; maxMoved: number }> = [
  { name: 'ring-hash', make: () => new RingHashBalancer({ rng: createRng(1) }), maxMoved: 0.15 },
  { name: 'maglev', make: () => new MaglevBalancer({ rng: createRng(1) }), maxMoved: 0.2 },
];

for (const { name, make, maxMoved } of kinds) {
  test(`${name}: the same key always reaches the same endpoint, on every balancer`, () => {
    const a = make();
    const b = make();
    a.update(setOf(10));
    // Built from the same endpoints listed in another order, by another instance.
    b.update(EndpointSet.of(inputs(10).reverse()));
    const first = mapping(a, KEYS.slice(0, 5000));
    assert.deepEqual(mapping(a, KEYS.slice(0, 5000)), first);
    assert.deepEqual(mapping(b, KEYS.slice(0, 5000)), first);
    assert.equal(new Set(first).size, 10);
    // Bytes hash like the string they encode.
    for (const k of KEYS.slice(0, 200)) assert.equal(a.pick({ hash: Buffer.from(k) })?.id, a.pick({ hash: k })?.id);
  });

  test(`${name}: when 1 of 10 endpoints leaves about 1/10 of keys move; adding one back moves about 1/11`, () => {
    const b = make();
    const s10 = setOf(10);
    b.update(s10);
    const before = mapping(b, KEYS);
    const s9 = s10.apply({ type: 'remove', keys: ['svc/e4'] });
    b.update(s9);
    const after = mapping(b, KEYS);
    const m = moved(before, after);
    assert.ok(m >= 0.05 && m <= maxMoved, `${(m * 100).toFixed(2)}% of keys moved`);
    let strayed = 0;
    for (let i = 0; i < KEYS.length; i++) {
      assert.notEqual(after[i], 'e4');
      if (before[i] !== 'e4' && after[i] !== before[i]) strayed++;
    }
    if (name === 'ring-hash') assert.equal(strayed, 0, 'keys of the endpoints that stayed do not move');
    else assert.ok(strayed / KEYS.length < 0.02, `${strayed} keys moved between endpoints that stayed`);
    // Back to 10 (another newcomer): it takes ~1/11 of keys, from everyone.
    b.update(s9.apply({ type: 'add', endpoints: [{ service: 'svc', id: 'new', address: '10.5.5.5', port: 1 }] }));
    const again = mapping(b, KEYS);
    const m2 = moved(after, again);
    assert.ok(m2 >= 0.05 && m2 <= maxMoved, `${(m2 * 100).toFixed(2)}% of keys moved`);
    if (name === 'ring-hash') {
      for (let i = 0; i < KEYS.length; i++) if (again[i] !== after[i]) assert.equal(again[i], 'new');
    }
    // And the old one back: the original mapping (ring hash exactly, Maglev nearly).
    b.update(s10);
    const restored = moved(before, mapping(b, KEYS));
    if (name === 'ring-hash') assert.equal(restored, 0);
    else assert.ok(restored < 0.02, `${restored}`);
  });

  test(`${name}: an unavailable endpoint's keys go elsewhere, others stay`, () => {
    const b = make();
    b.update(setOf(10));
    const keys = KEYS.slice(0, 20_000);
    const before = mapping(b, keys);
    const gated = mapping(b, keys, (e) => e.id !== 'e7');
    let strayed = 0;
    for (let i = 0; i < keys.length; i++) {
      assert.notEqual(gated[i], 'e7');
      if (before[i] !== 'e7' && gated[i] !== before[i]) strayed++;
    }
    assert.equal(strayed, 0);
    const orphans = new Set(gated.filter((_, i) => before[i] === 'e7'));
    assert.ok(orphans.size >= 5, `e7's keys spread over ${orphans.size} endpoints`);
    if (name === 'ring-hash') {
      // Walking the ring past an unavailable endpoint = the ring without it.
      const c = make();
      c.update(setOf(10).apply({ type: 'remove', keys: ['svc/e7'] }));
      assert.deepEqual(mapping(c, keys), gated);
    }
  });

  test(`${name}: without a hash key, a weighted random pick`, () => {
    const b = make();
    b.update(setOf(3, [1, 2, 7]));
    const s = shares(countPicks(b, 100_000));
    assert.ok(Math.abs(s.get('e0')! - 10) < 1.5 && Math.abs(s.get('e1')! - 20) < 1.5 && Math.abs(s.get('e2')! - 70) < 1.5, JSON.stringify([...s]));
  });

  test(`${name}: balanced over 100 endpoints (each within 0.5x..1.6x of its share)`, () => {
    const b = make();
    b.update(setOf(100));
    const counts = new Map<string, number>();
    for (const id of mapping(b, KEYS)) counts.set(id, (counts.get(id) ?? 0) + 1);
    assert.equal(counts.size, 100);
    for (const [id, c] of counts) assert.ok(c > 500 && c < 1600, `${id}: ${c} of 100000`);
  });
}

test('ring-hash: ring size follows the bounds; points stay put when membership changes', () => {
  const b = new RingHashBalancer();
  b.update(setOf(10));
  assert.equal(b.ringSize, 5120, '512 points per unit of weight: at least 4096 in all');
  b.update(setOf(9));
  assert.equal(b.ringSize, 9 * 512, 'the same scale for 9 endpoints');
  b.update(setOf(100));
  assert.ok(b.ringSize >= 12_800 && b.ringSize < 25_600, `${b.ringSize}`);
  const small = new RingHashBalancer({ minRingSize: 16, maxRingSize: 64 });
  small.update(setOf(3, [1, 2, 7]));
  assert.ok(small.ringSize <= 64 && small.ringSize >= 10, `${small.ringSize}`);
  const huge = new RingHashBalancer({ minRingSize: 100, maxRingSize: 1000 });
  huge.update(setOf(4, [10_000, 10_000, 10_000, 1]));
  assert.ok(huge.ringSize <= 1000, `${huge.ringSize}`);
  assert.equal(new Set(mapping(huge, KEYS.slice(0, 1000))).size >= 3, true);
});

test('maglev: table size must be prime; shares follow weights to within a slot or so', () => {
  assert.ok(isPrime(65537) && isPrime(2) && isPrime(131071) && !isPrime(65535) && !isPrime(1) && !isPrime(9));
  const eps = setOf(4, [1, 2, 3, 4]).list();
  const table = maglevTable(eps, 10007);
  const slots = [0, 0, 0, 0];
  for (const i of table) slots[i]!++;
  slots.forEach((n, i) => assert.ok(Math.abs(n - (10007 * (i + 1)) / 10) <= 2, `e${i}: ${n} slots`));
  const b = new MaglevBalancer({ tableSize: 7 });
  assert.equal(b.tableSize, 7);
  b.update(setOf(3));
  assert.equal(new Set(mapping(b, KEYS.slice(0, 100))).size, 3);
});

test('ring-hash: the bucketed binary search finds the first point at or after the hash, wrapping', () => {
  for (const n of [1, 3, 10, 257]) {
    // Requests without a key go to the point of a random draw: pin the draw to probe hash h.
    let h = 0;
    const b = new RingHashBalancer({ minRingSize: n === 257 ? 100_000 : 4096, rng: () => h / 2 ** 32 });
    b.update(setOf(n, Array.from({ length: n }, (_, i) => 1 + (i % 5))));
    const { points, owners } = b as unknown as { points: Uint32Array; owners: Int32Array };
    for (let i = 1; i < points.length; i++) assert.ok(points[i - 1]! <= points[i]!, 'sorted');
    const eps = b.set.list();
    const rng = createRng(n);
    const probes = [0, 1, points[0]!, points[0]! + 1, points[points.length - 1]!, 0xffffffff, ...Array.from({ length: 3000 }, () => (rng() * 2 ** 32) >>> 0)];
    for (h of probes) {
      let want = points.findIndex((p) => p >= h);
      if (want < 0) want = 0;
      assert.equal(b.pick()?.key, eps[owners[want]!]!.key, `n=${n} h=${h}`);
    }
  }
});

test('ring-hash: an update merged into the old ring gives exactly the ring built from scratch', () => {
  const rng = createRng(77);
  const b = new RingHashBalancer();
  let s = setOf(40, Array.from({ length: 40 }, (_, i) => 1 + (i % 3)));
  b.update(s);
  let next = 1000;
  for (let step = 0; step < 60; step++) {
    const list = s.list();
    const r = rng();
    if (r < 0.35 && list.length > 2) s = s.apply({ type: 'remove', keys: [list[Math.floor(rng() * list.length)]!.key] });
    else if (r < 0.7) s = s.apply({ type: 'add', endpoints: [{ service: 'svc', id: `n${next++}`, address: '10.8.0.1', port: 80, weight: 1 + Math.floor(rng() * 3) }] });
    else {
      const e = list[Math.floor(rng() * list.length)]!;
      s = s.apply({ type: 'add', endpoints: [{ ...e, weight: Math.floor(rng() * 4) }] });
    }
    b.update(s);
    const fresh = new RingHashBalancer();
    fresh.update(s);
    const got = b as unknown as { points: Uint32Array; owners: Int32Array };
    const want = fresh as unknown as { points: Uint32Array; owners: Int32Array };
    assert.deepEqual(got.points, want.points, `step ${step}`);
    assert.deepEqual(got.owners, want.owners, `step ${step}`);
  }
});
