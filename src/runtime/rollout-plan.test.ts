import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rolloutBounds, type RolloutAmount } from '../api/mesh.js';
import { planRollout, planStep, rolloutDone, type RolloutInput } from './rollout-plan.js';

const pct = (percent: number): RolloutAmount => ({ percent });
const n = (count: number): RolloutAmount => ({ count });

test('rolloutBounds: maxSurge rounds up, maxUnavailable down, both 0 makes maxUnavailable 1', () => {
  const rows: Array<[number, RolloutAmount, RolloutAmount, { surge: number; unavailable: number }]> = [
    [4, pct(25), pct(25), { surge: 1, unavailable: 1 }],
    [10, pct(25), pct(25), { surge: 3, unavailable: 2 }],
    [1, pct(25), pct(25), { surge: 1, unavailable: 0 }],
    [3, pct(25), pct(25), { surge: 1, unavailable: 0 }],
    [3, pct(0), pct(0), { surge: 0, unavailable: 1 }],
    [5, n(0), n(0), { surge: 0, unavailable: 1 }],
    [5, n(2), pct(50), { surge: 2, unavailable: 2 }],
    [0, pct(25), pct(25), { surge: 0, unavailable: 1 }],
    [8, pct(100), n(0), { surge: 8, unavailable: 0 }],
  ];
  for (const [replicas, maxSurge, maxUnavailable, want] of rows) {
    assert.deepEqual(rolloutBounds(replicas, { maxSurge, maxUnavailable }), want, `${replicas} replicas, ${JSON.stringify({ maxSurge, maxUnavailable })}`);
  }
});

test('planRollout: [old, new] after each step, replicas that are ready at once', () => {
  const rows: Array<[string, number, number, number, Array<[number, number]>]> = [
    ['4 replicas, the defaults (surge 1, unavailable 1)', 4, 1, 1, [[3, 1], [2, 2], [1, 3], [0, 4]]],
    ['10 replicas, the defaults (surge 3, unavailable 2)', 10, 3, 2, [[8, 3], [5, 5], [3, 8], [0, 10]]],
    ['1 replica, the defaults (surge 1, unavailable 0): the new one first', 1, 1, 0, [[1, 1], [0, 1]]],
    ['3 replicas, maxSurge 0: one old goes before each new starts', 3, 0, 1, [[2, 0], [2, 1], [1, 1], [1, 2], [0, 2], [0, 3]]],
    ['4 replicas, surge 4 (100%), unavailable 0: all new first (blue/green)', 4, 4, 0, [[4, 4], [0, 4]]],
    ['2 replicas, surge 0, unavailable 2: all old go, then all new (recreate)', 2, 0, 2, [[0, 0], [0, 2]]],
  ];
  for (const [what, desired, surge, unavailable, want] of rows) {
    const plan = planRollout(desired, surge, unavailable);
    assert.deepEqual(plan, want, what);
    for (const [old, next] of plan) {
      assert.ok(old + next <= desired + surge, `${what}: ${old}+${next} within replicas + maxSurge`);
    }
  }
});

test('planStep: one reconciliation from the live counts', () => {
  const base = { desired: 4, surge: 1, unavailable: 1, leaving: 0 };
  const rows: Array<[string, RolloutInput, { next: number; old: number[] }]> = [
    ['start: one new, one old goes (4 of 5 stay available, 3 needed)', { ...base, next: { replicas: 0, available: 0 }, old: [{ replicas: 4, available: 4 }] }, { next: 1, old: [3] }],
    [
      'a replica still draining counts towards maxSurge: no new one yet',
      { ...base, leaving: 1, next: { replicas: 1, available: 0 }, old: [{ replicas: 3, available: 3 }] },
      { next: 1, old: [3] },
    ],
    [
      'new replicas that never become ready: 2 new, 3 old, and there it stays (3 available)',
      { ...base, next: { replicas: 1, available: 0 }, old: [{ replicas: 3, available: 3 }] },
      { next: 2, old: [3] },
    ],
    ['...and stays', { ...base, next: { replicas: 2, available: 0 }, old: [{ replicas: 3, available: 3 }] }, { next: 2, old: [3] }],
    [
      'old replicas that are not available go first (a crash-looping old set does not block)',
      { ...base, next: { replicas: 1, available: 1 }, old: [{ replicas: 4, available: 2 }] },
      { next: 1, old: [2] },
    ],
    [
      'two old sets (a rollout over a rollout): the oldest shrinks first',
      { ...base, next: { replicas: 0, available: 0 }, old: [{ replicas: 2, available: 2 }, { replicas: 2, available: 2 }] },
      { next: 1, old: [1, 2] },
    ],
    ['replicas lowered during a rollout: the new set shrinks to them', { ...base, desired: 2, next: { replicas: 4, available: 4 }, old: [] }, { next: 2, old: [] }],
    [
      'a rollback: the replicas of the failed revision (never available) go at once; the new set grows on the next step',
      { ...base, next: { replicas: 3, available: 3 }, old: [{ replicas: 2, available: 0 }] },
      { next: 3, old: [0] },
    ],
  ];
  for (const [what, input, want] of rows) assert.deepEqual(planStep(input), want, what);
});

test('rolloutDone: only when the new set is all available and nothing old is left, draining included', () => {
  const base = { desired: 2, surge: 1, unavailable: 0 };
  assert.equal(rolloutDone({ ...base, leaving: 0, next: { replicas: 2, available: 2 }, old: [{ replicas: 0, available: 0 }] }), true);
  assert.equal(rolloutDone({ ...base, leaving: 1, next: { replicas: 2, available: 2 }, old: [] }), false);
  assert.equal(rolloutDone({ ...base, leaving: 0, next: { replicas: 2, available: 1 }, old: [] }), false);
  assert.equal(rolloutDone({ ...base, leaving: 0, next: { replicas: 2, available: 2 }, old: [{ replicas: 1, available: 1 }] }), false);
});
