import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseService } from '../api/parse.js';
import { createBalancer } from '../balance/index.js';
import { setOf } from '../balance/test-helpers.js';
import { ManualClock } from '../core/clock.js';
import { listCalls } from '../discovery/test-helpers.js';
import { TrafficState, type TrafficEvent } from './traffic-state.js';

function setup(policy: object = {}) {
  const clock = new ManualClock();
  const events: TrafficEvent[] = [];
  const set = setOf(3);
  const t = new TrafficState({ service: 'svc', policy: parseService({ name: 'svc', ...policy }).traffic, clock, onEvent: (e) => events.push(e), rng: () => 0.5 });
  t.setEndpoints(set);
  const b = createBalancer('round-robin');
  b.update(set);
  const keys = set.list().map((e) => e.key);
  const picks = (n: number) => {
    const out = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const e = t.pick(b, undefined, null);
      const id = e === null ? 'none' : e.id;
      out.set(id, (out.get(id) ?? 0) + 1);
    }
    return out;
  };
  return { clock, events, set, t, b, keys, picks };
}

test('an endpoint that returns 5 5xx in a row is ejected for 30 s, then returns', () => {
  const { clock, events, t, b, keys, picks } = setup({ breaker: { enabled: false } });
  for (let i = 0; i < 5; i++) t.record(keys[0] as string, 500);
  assert.equal(t.outlier?.isEjected(keys[0] as string), true);
  assert.deepEqual([...picks(30).keys()].sort(), ['e1', 'e2'], 'the balancer skips the ejected endpoint');
  assert.equal(events[0]?.type, 'eject');
  assert.equal(t.summary().ejected, 1);
  clock.advance(30_000);
  assert.deepEqual([...picks(30).keys()].sort(), ['e0', 'e1', 'e2'], 'back after the base ejection time');
  assert.ok(events.some((e) => e.type === 'return'));
  void b;
});

test('local-origin failures (status 0) count apart from 5xx; a success resets the streak', () => {
  const { t, keys } = setup({ breaker: { enabled: false } });
  const k = keys[1] as string;
  for (let i = 0; i < 4; i++) t.record(k, 0);
  t.record(k, 200);
  for (let i = 0; i < 4; i++) t.record(k, 0);
  assert.equal(t.outlier?.isEjected(k), false, 'the success broke the streak');
  t.record(k, 0);
  assert.equal(t.outlier?.isEjected(k), true, 'five local-origin failures in a row');
});

test('breakers: open after consecutive failures, a single half-open probe after the backoff, closed by its success', () => {
  const { clock, t, b, keys, picks, events } = setup({ outlierDetection: { enabled: false }, breaker: { consecutiveFailures: 3, backoff: { min: '1s', max: '4s' } } });
  for (const k of keys) for (let i = 0; i < 3; i++) t.record(k, 503);
  assert.deepEqual(picks(5), new Map([['none', 5]]), 'every breaker is open');
  assert.deepEqual(t.whyNone(b), { endpoints: 3, failingActiveChecks: 0, breakersOpen: 3, ejected: 0 });
  assert.deepEqual(t.summary().breakers, { open: 3, halfOpen: 0 });
  clock.advance(4000);
  const probe = t.pick(b, undefined, null);
  assert.notEqual(probe, null, 'a probe may go once the backoff elapsed');
  t.started((probe as { key: string }).key);
  t.record((probe as { key: string }).key, 200);
  assert.ok(events.some((e) => e.type === 'breaker' && e.to === 'closed'));
  assert.equal(t.breakers?.state((probe as { key: string }).key), 'closed');
});

test('a retry goes to an endpoint not tried yet, and to a tried one only when none is left', () => {
  const { t, b, set } = setup();
  const [e0, e1, e2] = set.list();
  for (let i = 0; i < 20; i++) {
    const e = t.pick(b, undefined, [e0!, e1!]);
    assert.equal(e?.id, 'e2');
  }
  const again = t.pick(b, undefined, [e0!, e1!, e2!]);
  assert.notEqual(again, null, 'all tried: any endpoint may take the retry');
});

test("the proxy's own active checks gate endpoints; all failing is told apart", () => {
  const { t, b, keys, picks, events } = setup();
  t.setActiveHealth(keys[0] as string, false, 'HTTP 500');
  assert.deepEqual([...picks(20).keys()].sort(), ['e1', 'e2']);
  for (const k of keys) t.setActiveHealth(k, false, 'down');
  assert.equal(t.pick(b, undefined, null), null);
  assert.deepEqual(t.whyNone(b), { endpoints: 3, failingActiveChecks: 3, breakersOpen: 0, ejected: 0 });
  t.setActiveHealth(keys[2] as string, true, 'HTTP 200');
  assert.deepEqual([...picks(5).keys()], ['e2']);
  assert.equal(events.filter((e) => e.type === 'active-check').length, 4, 'one event per change (e0, e1, e2 down; e2 up), none for the repeat of e0');
});

test('a new policy keeps the state of the parts whose settings did not change', () => {
  const { t, keys } = setup({ breaker: { enabled: false } });
  for (let i = 0; i < 5; i++) t.record(keys[0] as string, 500);
  const outlier = t.outlier;
  const budget = t.budget;
  t.setPolicy(parseService({ name: 'svc', breaker: { enabled: false }, timeouts: { request: '1s' } }).traffic);
  assert.equal(t.outlier, outlier, 'same outlier settings: the detector (and its ejection) stays');
  assert.equal(t.budget, budget);
  assert.equal(t.outlier?.isEjected(keys[0] as string), true);
  assert.equal(t.routes.fallback.requestTimeoutMs, 1000, 'the new routes apply');
  t.setPolicy(parseService({ name: 'svc', breaker: { enabled: false }, outlierDetection: { consecutive5xx: 2 }, retries: { budget: { ratio: 0.1 } } }).traffic);
  assert.notEqual(t.outlier, outlier, 'changed outlier settings: a new detector');
  assert.notEqual(t.budget, budget);
  t.stop();
});

test('rate limits: per route and direction, per caller when asked, with the wait', () => {
  const { t, clock } = setup({
    rateLimit: { outbound: { requestsPerSecond: 1, burst: 2 }, inbound: { requestsPerSecond: 1, perCaller: true } },
    routes: [{ name: 'own', match: { pathPrefix: '/own' }, rateLimit: { outbound: { requestsPerSecond: 10, burst: 1 } } }],
  });
  const own = t.routes.routes[0]!;
  const dflt = t.routes.fallback;
  assert.equal(t.rateLimit(dflt, 'outbound', 'a'), 0);
  assert.equal(t.rateLimit(dflt, 'outbound', 'b'), 0);
  const wait = t.rateLimit(dflt, 'outbound', 'c');
  assert.ok(wait > 0 && wait <= 1000, `refused with a wait of ${wait} ms`);
  assert.equal(t.rateLimit(own, 'outbound', 'a'), 0, "a route's limit has its own bucket");
  assert.ok(t.rateLimit(own, 'outbound', 'a') > 0);
  assert.equal(t.rateLimit(dflt, 'inbound', 'x'), 0);
  assert.equal(t.rateLimit(dflt, 'inbound', 'y'), 0, 'per caller: y has its own bucket');
  assert.ok(t.rateLimit(dflt, 'inbound', 'x') > 0);
  clock.advance(1000);
  assert.equal(t.rateLimit(dflt, 'inbound', 'x'), 0, 'refilled after a second');
  assert.equal(t.rateLimited, 3);
});

test('a change of one endpoint leaves the others\u2019 breakers, ejections and active-check results as they were, and reads no whole list', () => {
  const clock = new ManualClock();
  const policy = parseService({ name: 'svc', breaker: { consecutiveFailures: 2 }, outlierDetection: { consecutive5xx: 3, maxEjectionPercent: 100 } }).traffic;
  const t = new TrafficState({ service: 'svc', policy, clock, rng: () => 0.5 });
  let set = setOf(2000);
  t.setEndpoints(set);
  const keys = set.list().map((e) => e.key);
  const [broken, ejected, down, leaving] = [keys[10]!, keys[20]!, keys[30]!, keys[40]!];
  t.record(broken, 0);
  t.record(broken, 0);
  for (let i = 0; i < 3; i++) t.record(ejected, 503);
  t.setActiveHealth(down, false, 'probe failed');
  t.record(leaving, 0);
  t.record(leaving, 0);
  for (let i = 0; i < 3; i++) t.record(leaving, 500);
  t.setActiveHealth(leaving, false, 'probe failed');
  assert.equal(t.breakers?.state(broken), 'open');
  assert.equal(t.outlier?.isEjected(ejected), true);
  const next = [set.apply({ type: 'remove', keys: [leaving] })];
  next.push(next[0]!.apply({ type: 'add', endpoints: [{ service: 'svc', id: 'new', address: '10.9.9.9', port: 80 }] }));
  next.push(next[1]!.apply({ type: 'add', endpoints: [{ ...set.get(keys[50]!)!, weight: 3 }] }));
  const lists = listCalls(() => {
    for (const s of next) t.setEndpoints((set = s));
  });
  assert.equal(lists, 0, 'O(changes): no whole list read');
  assert.equal(t.breakers?.state(broken), 'open', 'the open breaker stays open');
  assert.equal(t.outlier?.isEjected(ejected), true, 'the ejection stands');
  assert.ok(t.down.has(down), 'the failing active check stands');
  assert.equal(t.breakers?.state(leaving), 'closed', 'the endpoint that left is forgotten');
  assert.ok(!t.down.has(leaving));
  assert.equal(t.outlier?.isEjected(leaving), false);
  assert.equal(t.summary().breakers?.open, 2, 'broken, and ejected (its 503s opened its breaker too)');
  assert.equal(t.summary().ejected, 1);
  // The newcomer is tracked: 3 5xx eject it.
  for (let i = 0; i < 3; i++) t.record('svc/new', 500);
  assert.equal(t.outlier?.isEjected('svc/new'), true);
  t.stop();
});
