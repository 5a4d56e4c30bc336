import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildCanary, CANARY_DEFAULTS, type RawCanary } from '../api/canary.js';
import { CanaryAnalysis, type IntervalSignals, type WebhookOutcome } from './canary-analysis.js';

function policy(raw: RawCanary = {}) {
  const problems: string[] = [];
  const p = buildCanary(raw, (f, m) => problems.push(`${f}: ${m}`));
  assert.deepEqual(problems, []);
  return p;
}

const good: IntervalSignals = { requests: 100, failures: 0, p99Ms: 20 };
const ok = (type: WebhookOutcome['type'], name: string = type): WebhookOutcome => ({ name, type, ok: true, detail: 'HTTP 200' });
const no = (type: WebhookOutcome['type'], name: string = type, detail = 'HTTP 500'): WebhookOutcome => ({ name, type, ok: false, detail });

test("defaults are Flagger's: 1m interval, step 10 to 50, threshold 5, success >= 99%, p99 <= 500 ms", () => {
  const p = policy();
  assert.deepEqual(
    [p.intervalMs, p.stepWeight, p.maxWeight, p.threshold, p.minSuccessRate, p.maxP99Ms, p.minRequests, p.abortErrorRate, p.webhooks],
    [60_000, 10, 50, 5, 0.99, 500, 10, 0.5, []],
  );
  assert.equal(p.intervalMs * p.threshold, 300_000, 'a bad canary keeps traffic at most interval x threshold: 5 minutes');
  assert.equal(CANARY_DEFAULTS.webhookTimeoutMs, 10_000);
});

test('a good canary goes 10, 20, 30, 40, 50, then is promoted: maxWeight / stepWeight + 1 intervals after it is ready', () => {
  const a = new CanaryAnalysis(policy({ interval: '1s' }));
  assert.deepEqual(a.hooksDue(), ['pre-rollout', 'rollback']);
  const weights: string[] = [];
  let t = 0;
  const first = a.step(t, null);
  weights.push(first.action === 'set-weight' ? String(first.weight) : first.action);
  while (!a.done) {
    const d = a.step((t += 1000), good);
    weights.push(d.action === 'set-weight' ? String(d.weight) : d.action);
  }
  assert.deepEqual(weights, ['10', '20', '30', '40', '50', 'promote']);
  assert.equal(a.phase, 'promoted');
  assert.equal(a.failedChecks, 0);
  assert.deepEqual(a.history.at(-1)?.checks.map((c) => c.text), ['100 requests', 'success rate 100.0% >= 99.0%', 'p99 20.0 ms <= 500 ms']);
  assert.throws(() => a.step(t + 1000, good), /over \(promoted\)/);
});

test('a canary answering 100% 5xx is rolled back at its first judged interval (the abort limit), weight 0', () => {
  const a = new CanaryAnalysis(policy({ interval: '1s', threshold: 3 }));
  a.step(0, null);
  const d = a.step(1000, { requests: 40, failures: 40, p99Ms: 2 });
  assert.deepEqual(d, { action: 'rollback', reason: 'error rate 100.0% > 50.0% in one interval' });
  assert.equal(a.weight, 0);
  assert.equal(a.phase, 'rolled-back');
  assert.deepEqual(a.history.at(-1)?.checks.map((c) => [c.check, c.value, c.threshold, c.ok]), [['requests', 40, 10, true], ['error-rate', 1, 0.5, false]]);
});

test('failed checks add up, not reset by a pass; at the threshold the canary is rolled back naming the metric', () => {
  const a = new CanaryAnalysis(policy({ interval: '1s', threshold: 3 }));
  a.step(0, null);
  const bad: IntervalSignals = { requests: 100, failures: 10, p99Ms: 20 };
  const d1 = a.step(1, bad);
  assert.deepEqual(d1, { action: 'hold', weight: 10, reason: 'failed check 1 of 3: success rate 90.0% < 99.0%' });
  assert.deepEqual(a.step(2, good), { action: 'set-weight', weight: 20, reason: 'every check passed at weight 10' });
  assert.equal(a.step(3, bad).action, 'hold');
  assert.equal(a.step(4, good).action, 'set-weight');
  const d3 = a.step(5, bad);
  assert.deepEqual(d3, { action: 'rollback', reason: '3 failed checks (threshold 3); the last: success rate 90.0% < 99.0%' });
  assert.equal(a.failedChecks, 3);
  assert.deepEqual(a.history.map((s) => s.weight), [0, 10, 10, 20, 20, 30]);
});

test('a slow canary is rolled back and the reason is p99', () => {
  const a = new CanaryAnalysis(policy({ interval: '1s', threshold: 2, p99: '100ms' }));
  a.step(0, null);
  const slow: IntervalSignals = { requests: 50, failures: 0, p99Ms: 250 };
  assert.equal(a.step(1, slow).action, 'hold');
  const d = a.step(2, slow);
  assert.equal(d.action, 'rollback');
  assert.equal(d.reason, '2 failed checks (threshold 2); the last: p99 250.0 ms > 100 ms');
});

test('too little traffic to judge is a failed check, not a pass; no signals at all likewise', () => {
  const a = new CanaryAnalysis(policy({ interval: '1s', threshold: 2, minRequests: 20 }));
  a.step(0, null);
  assert.deepEqual(a.step(1, { requests: 19, failures: 0, p99Ms: 1 }), { action: 'hold', weight: 10, reason: 'failed check 1 of 2: too little traffic to judge: 19 requests < 20' });
  assert.equal(a.step(2, null).action, 'rollback');
  // 19 failing requests are below the bar for the abort too: judged by the count.
  const b = new CanaryAnalysis(policy({ interval: '1s', threshold: 5, minRequests: 20 }));
  b.step(0, null);
  assert.equal(b.step(1, { requests: 19, failures: 19, p99Ms: 1 }).action, 'hold');
});

test('webhooks: pre-rollout gates the first traffic, rollout counts as a check, confirm-promotion holds without failing, rollback aborts', () => {
  const a = new CanaryAnalysis(policy({ interval: '1s', threshold: 3, stepWeight: 25, maxWeight: 50 }));
  assert.deepEqual(a.step(0, null, [no('pre-rollout', 'load-test', 'timeout after 10000 ms')]), { action: 'hold', weight: 0, reason: 'failed check 1 of 3: pre-rollout webhook "load-test": timeout after 10000 ms' });
  assert.equal(a.weight, 0, 'no traffic before the pre-rollout hooks pass');
  assert.equal(a.step(1, null, [ok('pre-rollout', 'load-test')]).action, 'set-weight');
  assert.deepEqual(a.hooksDue(), ['rollout', 'rollback']);
  assert.equal(a.step(2, good, [no('rollout', 'smoke')]).reason, 'failed check 2 of 3: rollout webhook "smoke": HTTP 500');
  assert.deepEqual(a.step(3, good, [ok('rollout', 'smoke')]), { action: 'set-weight', weight: 50, reason: 'every check passed at weight 25' });
  assert.deepEqual(a.hooksDue(), ['rollout', 'confirm-promotion', 'rollback']);
  const held = a.step(4, good, [ok('rollout', 'smoke'), no('confirm-promotion', 'approve', 'HTTP 403')]);
  assert.deepEqual(held, { action: 'hold', weight: 50, reason: 'waiting for the confirm-promotion webhook "approve" (HTTP 403)' });
  assert.equal(a.failedChecks, 2, 'waiting for a confirmation is not a failure');
  assert.equal(a.step(5, good, [ok('rollout', 'smoke'), ok('confirm-promotion', 'approve')]).action, 'promote');

  const b = new CanaryAnalysis(policy({ interval: '1s' }));
  b.step(0, null);
  assert.deepEqual(b.step(1, good, [ok('rollback', 'big-red-button')]), { action: 'rollback', reason: 'the rollback webhook "big-red-button" asked for it' });
  const c = new CanaryAnalysis(policy({ interval: '1s' }));
  c.step(0, null);
  assert.deepEqual(c.abort(1, 'the new revision did not become ready within its progress deadline (10s)'), { action: 'rollback', reason: 'the new revision did not become ready within its progress deadline (10s)' });
  assert.equal(c.phase, 'rolled-back');
});

test('bad canary specs are refused with the field named', () => {
  const problems = (raw: RawCanary) => {
    const out: string[] = [];
    buildCanary(raw, (f, m) => out.push(`${f} ${m}`));
    return out;
  };
  assert.deepEqual(problems({ stepWeight: 60, maxWeight: 50 }), ['canary.stepWeight must be at most maxWeight (50)']);
  assert.deepEqual(problems({ interval: '500ms' }), ['canary.interval must be at least 1s']);
  assert.deepEqual(problems({ webhooks: [{ name: 'a', type: 'rollout', url: 'ftp://x' }, { name: 'a', type: 'rollout', url: 'nope' }] }), [
    'canary.webhooks[0].url must be an http:// or https:// URL, not ftp:',
    'canary.webhooks[1].name "a" names two webhooks',
    'canary.webhooks[1].url must be an http:// or https:// URL, not "nope"',
  ]);
  assert.deepEqual(problems({ webhooks: [{ name: 'slow', type: 'rollout', url: 'http://127.0.0.1/', timeout: '2m' }] }), ['canary.webhooks[0].timeout must be at most 1m']);
});
