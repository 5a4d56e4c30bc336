import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RoundRobinBalancer } from './round-robin.js';
import { createRng } from './rng.js';
import { setOf } from './test-helpers.js';

const ids = (b: RoundRobinBalancer, n: number, available?: (e: { id: string }) => boolean) => Array.from({ length: n }, () => b.pick({ available })?.id ?? 'null');

test('cycles through the endpoints in key order, from a random start', () => {
  const b = new RoundRobinBalancer({ rng: () => 0 });
  b.update(setOf(4));
  assert.deepEqual(ids(b, 9), ['e0', 'e1', 'e2', 'e3', 'e0', 'e1', 'e2', 'e3', 'e0']);
  const starts = new Set<string>();
  for (let seed = 1; seed <= 40; seed++) {
    const c = new RoundRobinBalancer({ rng: createRng(seed) });
    c.update(setOf(4));
    starts.add(c.pick()!.id);
  }
  assert.equal(starts.size, 4, 'different proxies start at different endpoints');
});

test('state is kept across updates: the cycle continues after the endpoint picked last', () => {
  const b = new RoundRobinBalancer({ rng: () => 0 });
  const s1 = setOf(4);
  b.update(s1);
  assert.deepEqual(ids(b, 2), ['e0', 'e1']);
  // e1 leaves: continue with e2 (not back at e0).
  const s2 = s1.apply({ type: 'remove', keys: ['svc/e1'] });
  b.update(s2);
  assert.deepEqual(ids(b, 4), ['e2', 'e3', 'e0', 'e2']);
  // A new endpoint sorted after e2 is next in line.
  b.update(s2.apply({ type: 'add', endpoints: [{ service: 'svc', id: 'e25', address: '10.9.9.9', port: 80 }] }));
  assert.deepEqual(ids(b, 4), ['e25', 'e3', 'e0', 'e2']);
});

test('frequent updates do not favour the first endpoints', () => {
  const b = new RoundRobinBalancer({ rng: () => 0 });
  let s = setOf(10);
  const counts = new Map<string, number>();
  for (let round = 0; round < 1000; round++) {
    // Every 3 picks the set changes (a weight flips), which must not reset the cycle.
    s = s.apply({ type: 'add', endpoints: [{ service: 'svc', id: 'e9', address: '10.0.0.9', port: 8080, weight: 1 + (round % 2) }] });
    b.update(s);
    for (const id of ids(b, 3)) counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  for (const [id, c] of counts) assert.ok(c === 300, `${id}: ${c}`);
});

test('the gate: unavailable endpoints are skipped and the turn passes on', () => {
  const b = new RoundRobinBalancer({ rng: () => 0 });
  b.update(setOf(4));
  const notE1 = (e: { id: string }) => e.id !== 'e1';
  assert.deepEqual(ids(b, 6, notE1), ['e0', 'e2', 'e3', 'e0', 'e2', 'e3']);
  assert.deepEqual(ids(b, 2, () => false), ['null', 'null']);
  assert.deepEqual(ids(b, 2), ['e0', 'e1'], 'a null pick does not move the cycle');
});
