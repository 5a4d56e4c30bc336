import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WeightedRoundRobinBalancer } from './weighted-round-robin.js';
import { countPicks, setOf } from './test-helpers.js';
import type { Endpoint } from '../discovery/endpoint.js';

/** nginx's smooth weighted round robin, written the plain way, as the reference. */
function reference(weights: readonly number[], picks: number): number[] {
  const cur = weights.map(() => 0);
  const total = weights.reduce((a, b) => a + b, 0);
  const out: number[] = [];
  for (let t = 0; t < picks; t++) {
    let best = -1;
    for (let i = 0; i < weights.length; i++) {
      cur[i]! += weights[i]!;
      if (best < 0 || cur[i]! > cur[best]!) best = i;
    }
    cur[best]! -= total;
    out.push(best);
  }
  return out;
}

const seq = (b: WeightedRoundRobinBalancer, n: number, available?: (e: Endpoint) => boolean) => Array.from({ length: n }, () => Number(b.pick({ available })?.id.slice(1) ?? -1));

const modes = [
  { name: 'precomputed cycle', opts: {} },
  { name: 'live nginx step', opts: { maxSchedule: 0 } },
];

for (const { name, opts } of modes) {
  test(`${name}: exactly nginx's sequence (5, 1, 1 -> a a b a c a a)`, () => {
    const b = new WeightedRoundRobinBalancer({ rng: () => 0, ...opts });
    b.update(setOf(3, [5, 1, 1]));
    assert.equal(b.precomputed, name === 'precomputed cycle');
    assert.deepEqual(seq(b, 14), [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    const weights = [3, 1, 7, 2, 2, 9, 1];
    const c = new WeightedRoundRobinBalancer({ rng: () => 0, ...opts });
    c.update(setOf(weights.length, weights));
    assert.deepEqual(seq(c, 250), reference(weights, 250));
  });

  test(`${name}: exact over a full cycle and smooth (no more than the weight in a row)`, () => {
    const weights = [1, 2, 7];
    const b = new WeightedRoundRobinBalancer({ rng: () => 0.37, ...opts });
    b.update(setOf(3, weights));
    const s = seq(b, 10 * 50);
    for (let cycle = 0; cycle < 50; cycle++) {
      const counts = [0, 0, 0];
      for (const i of s.slice(cycle * 10, cycle * 10 + 10)) counts[i]!++;
      assert.deepEqual(counts, weights);
    }
    let run = 1;
    for (let t = 1; t < s.length; t++) {
      run = s[t] === s[t - 1] ? run + 1 : 1;
      assert.ok(run <= weights[s[t]!]!, `run of ${run} x e${s[t]}`);
      assert.ok(run <= 3, 'nginx spreads weight 7 of 10 into runs of at most 3');
    }
  });

  test(`${name}: weights are reduced by their common divisor (100, 200, 700 acts as 1, 2, 7)`, () => {
    const b = new WeightedRoundRobinBalancer({ rng: () => 0, ...opts });
    b.update(setOf(3, [100, 200, 700]));
    assert.deepEqual(seq(b, 20), [...reference([1, 2, 7], 10), ...reference([1, 2, 7], 10)]);
  });

  test(`${name}: the gate skips endpoints; the rest keep their proportions`, () => {
    const b = new WeightedRoundRobinBalancer({ rng: () => 0, ...opts });
    b.update(setOf(4, [1, 2, 3, 4]));
    const counts = countPicks(b, 6000, () => ({ available: (e) => e.id !== 'e3' }));
    assert.deepEqual(Object.fromEntries(counts), { e0: 1000, e1: 2000, e2: 3000 });
    let calls = 0;
    assert.equal(
      b.pick({
        available: () => {
          calls++;
          return false;
        },
      }),
      null,
    );
    assert.ok(calls <= 4, `gate asked ${calls} times`);
  });

  test(`${name}: updates keep the place in the cycle and the proportions`, () => {
    const b = new WeightedRoundRobinBalancer({ rng: () => 0, ...opts });
    let s = setOf(5, [1, 2, 3, 4, 5]);
    b.update(s);
    const counts = new Map<string, number>();
    for (let round = 0; round < 3000; round++) {
      // A change every 5 picks that does not touch the weights of e0..e4.
      s = round % 2 === 0 ? s.apply({ type: 'add', endpoints: [{ service: 'svc', id: 'x', address: '10.9.9.9', port: 1, weight: 0 }] }) : s.apply({ type: 'remove', keys: ['svc/x'] });
      b.update(s);
      for (let k = 0; k < 5; k++) {
        const id = b.pick()!.id;
        counts.set(id, (counts.get(id) ?? 0) + 1);
      }
    }
    for (let i = 0; i < 5; i++) {
      const share = (counts.get(`e${i}`) ?? 0) / 15_000;
      assert.ok(Math.abs(share - (i + 1) / 15) < 0.005, `e${i}: ${share}`);
    }
  });
}

test('live mode: current weights of staying endpoints carry over an update', () => {
  const b = new WeightedRoundRobinBalancer({ rng: () => 0, maxSchedule: 0 });
  const s1 = setOf(2, [1, 1]);
  b.update(s1);
  assert.deepEqual(seq(b, 1), [0]);
  // e1 is due next; adding e2 (sorted after it) must not hand the turn back to e0.
  b.update(s1.apply({ type: 'add', endpoints: [{ service: 'svc', id: 'e2', address: '10.0.0.2', port: 8080 }] }));
  assert.equal(seq(b, 1)[0], 1);
  const counts = countPicks(b, 3000);
  assert.deepEqual(Object.fromEntries(counts), { e0: 1000, e1: 1000, e2: 1000 });
});

test('precomputed unless the cycle is too long', () => {
  const b = new WeightedRoundRobinBalancer();
  b.update(setOf(3, [1, 2, 7]));
  assert.ok(b.precomputed);
  b.update(setOf(1000, Array.from({ length: 1000 }, (_, i) => 9000 + i)));
  assert.ok(!b.precomputed, 'coprime weights over 1000 endpoints run live');
  const counts = countPicks(b, 10_000);
  assert.equal(counts.size, 1000);
});
