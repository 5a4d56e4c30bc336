import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildAutoscale, type MeshAutoscale, type RawAutoscale } from '../api/mesh/autoscale.js';
import { MAX_REPLICAS } from '../api/mesh/schema.js';
import { decideReplicas, EMPTY_AUTOSCALE_STATE, type AutoscaleDecision, type AutoscaleState } from './autoscale-algorithm.js';

function policy(raw: Partial<RawAutoscale> = {}): MeshAutoscale {
  const problems: string[] = [];
  const p = buildAutoscale({ min: 1, max: 10, target: { rps: 100 }, ...raw }, (f, m) => problems.push(`${f} ${m}`), MAX_REPLICAS);
  assert.deepEqual(problems, []);
  return p as MeshAutoscale;
}

const T0 = 1_700_000_000_000;
const once = (p: MeshAutoscale, replicas: number, ready: number, metric: number | null, state: AutoscaleState = EMPTY_AUTOSCALE_STATE, now = T0): AutoscaleDecision =>
  decideReplicas({ now, policy: p, replicas, ready, metric }, state);

test('one decision from no history: tolerance, rounding, clamping, missing metrics, ready replicas only', () => {
  const rps = policy();
  const rows: Array<[string, MeshAutoscale, number, number, number | null, number, string | null]> = [
    // [what, policy, replicas, ready, metric (service total), desired, limitedBy]
    ['on target', rps, 2, 2, 200, 2, null],
    ['10% over: within the tolerance', rps, 2, 2, 220, 2, null],
    ['10.5% over: out of it, ceil(2 x 1.105) = 3', rps, 2, 2, 221, 3, null],
    ['exactly 5x: ceil(500 / 100) = 5, not 6 (no float noise)', rps, 1, 1, 500, 5, null],
    ['rounding up: 301 rps -> 4', rps, 2, 2, 301, 4, null],
    ['only ready replicas count: 3 asked, 1 ready at 300 -> 3', rps, 3, 1, 300, 3, null],
    ['the up rate: 1 -> at most max(1 + 4, 2) = 5 per period', rps, 1, 1, 900, 5, 'rate-limit'],
    ['the up rate: 8 -> at most max(8 + 4, 16), then max 10', rps, 8, 8, 1600, 10, 'max'],
    ['clamped to max', policy({ max: 3 }), 2, 2, 1000, 3, 'max'],
    ['below min: raised to min whatever the metric', policy({ min: 3 }), 2, 2, 0, 3, 'min'],
    ['above max: lowered to max', policy({ max: 4 }), 6, 6, 600, 4, 'max'],
    ['a missing metric: no change, even at 6 replicas', rps, 6, 6, null, 6, 'no-metric'],
    ['no ready replica: no change', rps, 2, 0, 500, 2, 'no-ready'],
    ['scale-down with an empty history: nothing in the window holds it (the controller seeds the starting replicas)', rps, 4, 4, 100, 1, null],
    ['inFlight: 12 in flight over 2 ready, target 2 -> 6', policy({ target: { inFlight: 2 } }), 2, 2, 12, 6, null],
  ];
  for (const [what, p, replicas, ready, metric, desired, limitedBy] of rows) {
    const d = once(p, replicas, ready, metric);
    assert.equal(d.desired, desired, `${what}: desired`);
    assert.equal(d.limitedBy, limitedBy, `${what}: limitedBy`);
  }
  // The per-replica value the event shows.
  assert.equal(once(rps, 2, 2, 301).value, 150.5);
  assert.equal(once(rps, 2, 2, 301).recommendation, 4);
  assert.equal(once(rps, 2, 2, null).recommendation, null);
});

test('scale-down stabilization: the highest recommendation over the window, no scale-down before it ends', () => {
  const p = policy({ scaleDown: { stabilization: '60s' } });
  // 5 replicas at 500 rps (on target), then the load drops to 100 rps.
  let d = once(p, 5, 5, 500);
  assert.equal(d.desired, 5);
  let s = d.state;
  const at = (sec: number) => T0 + sec * 1000;
  for (const sec of [10, 30, 59]) {
    d = once(p, 5, 5, 100, s, at(sec));
    s = d.state;
    assert.equal(d.desired, 5, `${sec}s: held`);
    assert.equal(d.recommendation, 1);
    assert.equal(d.limitedBy, 'stabilization');
  }
  // 60 s after the recommendation of 5: it leaves the window; the highest left is 1.
  d = once(p, 5, 5, 100, s, at(60));
  assert.equal(d.desired, 1);
  assert.equal(d.limitedBy, null);
});

test('stabilization takes the highest over the window, not the newest: a dip to 2 after a 4 stays at 4', () => {
  const p = policy({ scaleDown: { stabilization: '60s' } });
  let d = once(p, 6, 6, 400); // recommends 4, window has 4
  assert.equal(d.desired, 4);
  d = once(p, 4, 4, 200, d.state, T0 + 20_000); // recommends 2
  assert.equal(d.desired, 4);
  d = once(p, 4, 4, 300, d.state, T0 + 40_000); // recommends 3
  assert.equal(d.desired, 4);
  d = once(p, 4, 4, 300, d.state, T0 + 61_000); // the 4 left; highest is 3
  assert.equal(d.desired, 3);
});

test('scale-up rate: replicas added within the period count, a new period allows more', () => {
  const p = policy({ max: 40 });
  let d = once(p, 2, 2, 3000); // wants 30; limit max(2 + 4, 4) = 6
  assert.equal(d.desired, 6);
  assert.equal(d.limitedBy, 'rate-limit');
  d = once(p, 6, 6, 3000, d.state, T0 + 5000); // period start is still 2: no more
  assert.equal(d.desired, 6);
  assert.equal(d.limitedBy, 'rate-limit');
  d = once(p, 6, 6, 3000, d.state, T0 + 15_000); // the period passed: max(6 + 4, 12) = 12
  assert.equal(d.desired, 12);
  d = once(policy({ max: 40, scaleUp: { pods: 1, percent: 10 } }), 10, 10, 3000);
  assert.equal(d.desired, 11, 'max(10 + 1, ceil(10 x 1.1)) = 11');
});

test('scale-up stabilization (0 by default) can be set: the lowest recommendation over it', () => {
  const p = policy({ scaleUp: { stabilization: '30s' } });
  let d = once(p, 2, 2, 200);
  assert.equal(d.desired, 2);
  d = once(p, 2, 2, 500, d.state, T0 + 10_000);
  assert.equal(d.desired, 2, 'the 2 of 10 s ago is still in the window');
  assert.equal(d.limitedBy, 'stabilization');
  d = once(p, 2, 2, 500, d.state, T0 + 31_000);
  assert.equal(d.desired, 5);
});

test('p99: up as HPA (ratio), down one replica at a time, never below min, missing p99 holds', () => {
  const p = policy({ min: 2, target: { p99: '200ms' }, scaleDown: { stabilization: '0s' } });
  assert.equal(once(p, 2, 2, 500).desired, 5, 'ceil(2 x 500 / 200)');
  assert.equal(once(p, 4, 4, 210).desired, 4, 'within 10%');
  assert.equal(once(p, 4, 4, 50).desired, 3, 'well under: one fewer');
  const atMin = once(p, 2, 2, 10);
  assert.equal(atMin.desired, 2);
  assert.equal(atMin.limitedBy, 'min');
  assert.equal(once(p, 4, 4, null).desired, 4);
});
