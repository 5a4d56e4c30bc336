import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Completion } from './balancer.js';
import { LeastRequestBalancer } from './least-request.js';
import { createRng } from './rng.js';
import { countPicks, setOf, shares } from './test-helpers.js';

test('prefers endpoints with fewer requests in flight', () => {
  const b = new LeastRequestBalancer({ rng: createRng(2) });
  b.update(setOf(3));
  const [e0, e1] = b.set.list();
  const held: Completion[] = [];
  for (let i = 0; i < 5; i++) held.push(b.start(e0!));
  held.push(b.start(e1!));
  assert.equal(b.inflight('svc/e0'), 5);
  // e0 is never the less loaded of two distinct endpoints; e1 only wins against e0.
  const counts = countPicks(b, 3000);
  assert.equal(counts.get('e0'), undefined);
  const s = shares(counts);
  assert.ok(Math.abs(s.get('e1')! - 100 / 3) < 3 && Math.abs(s.get('e2')! - 200 / 3) < 3, JSON.stringify([...s]));
  for (const c of held) c.end({ latencyMs: 1, ok: true });
  assert.equal(b.inflight('svc/e0'), 0);
  assert.equal(countPicks(b, 3000).size, 3);
});

test('in flight per unit of weight: weight 2 with 1 in flight beats weight 1 with 1', () => {
  const b = new LeastRequestBalancer({ rng: createRng(2) });
  b.update(setOf(2, [2, 1]));
  const [e0, e1] = b.set.list();
  const a = b.start(e0!);
  const c = b.start(e1!);
  assert.deepEqual(Object.fromEntries(countPicks(b, 200)), { e0: 200 });
  const d = b.start(e0!);
  // 2/2 = 1/1: a tie goes to the first drawn, drawn by weight.
  const s = shares(countPicks(b, 30_000));
  assert.ok(Math.abs(s.get('e0')! - 200 / 3) < 1.5);
  for (const x of [a, c, d]) x.end({ latencyMs: 1, ok: true });
});

test('under load a slow endpoint gets fewer requests', () => {
  const b = new LeastRequestBalancer({ rng: createRng(4) });
  b.update(setOf(3));
  const latency: Record<string, number> = { e0: 5, e1: 5, e2: 50 };
  const pending: Array<{ due: number; c: Completion }> = [];
  const counts: Record<string, number> = {};
  for (let t = 0; t < 20_000; t++) {
    for (let i = pending.length - 1; i >= 0; i--) {
      if (pending[i]!.due <= t) {
        pending[i]!.c.end({ latencyMs: 0, ok: true });
        pending.splice(i, 1);
      }
    }
    for (let k = 0; k < 2; k++) {
      const e = b.pick()!;
      counts[e.id] = (counts[e.id] ?? 0) + 1;
      pending.push({ due: t + latency[e.id]!, c: b.start(e) });
    }
  }
  assert.ok(counts['e2']! < counts['e0']! / 2 && counts['e2']! < counts['e1']! / 2, JSON.stringify(counts));
});

test('completions count out once; in-flight counts survive updates, not address changes', () => {
  const b = new LeastRequestBalancer();
  const s1 = setOf(2);
  b.update(s1);
  const e0 = s1.list()[0]!;
  const c = b.start(e0);
  b.start(e0);
  c.end({ latencyMs: 1, ok: true });
  c.end({ latencyMs: 1, ok: true });
  assert.equal(b.inflight(e0.key), 1);
  b.update(s1.apply({ type: 'add', endpoints: [{ ...e0, weight: 0 }] }));
  assert.equal(b.inflight(e0.key), 1, 'kept while drained');
  b.update(b.set.apply({ type: 'add', endpoints: [{ ...e0, weight: 3 }] }));
  assert.equal(b.inflight(e0.key), 1);
  b.update(b.set.apply({ type: 'add', endpoints: [{ ...e0, port: 9999 }] }));
  assert.equal(b.inflight(e0.key), 0, 'a new address is a new process');
  assert.equal(b.inflight('svc/none'), 0);
});
