import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseService } from '../api/parse.js';
import { createBalancer } from '../balance/index.js';
import { setOf } from '../balance/test-helpers.js';
import { ManualClock } from '../core/clock.js';
import { listCalls } from '../discovery/test-helpers.js';
import type { Endpoint } from '../discovery/endpoint.js';
import { retryDelay, type RetryAttempt, type RetryReason } from './retry.js';
import { RetryBudget } from './retry-budget.js';
import { panicDetail, parsePanicDetail, TrafficState, type PanicEvent, type TrafficEvent } from './traffic-state.js';

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

test("the proxy's own active checks gate endpoints; all failing is told apart (panic mode off)", () => {
  const { t, b, keys, picks, events } = setup({ panicThreshold: 0 });
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

// ---- What counts against an instance (docs/traffic.md): one test per row of the table ----

const GET: RetryAttempt = { retries: 0, idempotent: true, hasBody: false, bodyKept: false, timeLeftMs: Number.POSITIVE_INFINITY };
const POST: RetryAttempt = { ...GET, idempotent: false, hasBody: true, bodyKept: true };
const budget = () => new RetryBudget({ clock: new ManualClock() });
/** The default route's retry decision for an outcome, for a GET and a POST. */
function retried(t: TrafficState, reason: RetryReason, status = 0): { get: boolean; post: boolean } {
  const p = t.routes.fallback.retries;
  return { get: typeof retryDelay(p, reason, status, GET, budget()) === 'number', post: typeof retryDelay(p, reason, status, POST, budget()) === 'number' };
}
const streaks = (t: TrafficState, key: string) => {
  const s = t.outlier?.snapshot()[key] as { consecutive5xx: number; consecutiveGatewayFailure: number; consecutiveLocalOriginFailure: number };
  return { c5xx: s.consecutive5xx, gateway: s.consecutiveGatewayFailure, local: s.consecutiveLocalOriginFailure };
};
const BREAKER_3 = { breaker: { consecutiveFailures: 3 } };

test('row 1, a mesh failure (status 0): retried (reset and per-try timeout for idempotent methods only), a breaker failure, a local-origin failure for ejection', () => {
  const { t, keys, events } = setup(BREAKER_3);
  const k = keys[0] as string;
  assert.deepEqual(retried(t, 'connect-failure'), { get: true, post: true });
  assert.deepEqual(retried(t, 'reset'), { get: true, post: false });
  assert.deepEqual(retried(t, 'per-try-timeout'), { get: true, post: false });
  for (let i = 0; i < 3; i++) t.record(k, 0);
  assert.equal(t.breakers?.state(k), 'open', 'three in a row open the breaker (consecutiveFailures 3)');
  assert.deepEqual(streaks(t, k), { c5xx: 0, gateway: 0, local: 3 }, 'counted as local-origin, apart from 5xx');
  t.record(k, 0);
  t.record(k, 0);
  const eject = events.find((e) => e.type === 'eject') as { endpoint: string; reason: string } | undefined;
  assert.deepEqual(eject && { endpoint: eject.endpoint, reason: eject.reason }, { endpoint: k, reason: 'consecutive-local-origin-failure' }, 'the default consecutiveLocalOriginFailure is 5');
});

test("row 2, a peer proxy's own refusal (recorded as status 0): retried for any method, a breaker failure, a local-origin failure", () => {
  const { t, keys } = setup(BREAKER_3);
  const k = keys[1] as string;
  assert.deepEqual(retried(t, 'refused-stream'), { get: true, post: true }, 'nothing reached an app: any method');
  for (let i = 0; i < 3; i++) t.record(k, 0);
  assert.equal(t.breakers?.state(k), 'open');
  assert.deepEqual(streaks(t, k), { c5xx: 0, gateway: 0, local: 3 });
});

test('row 3, the app answers 503: retried (idempotent methods), a breaker failure, a 5xx for ejection (consecutive5xx)', () => {
  const { t, keys, events } = setup(BREAKER_3);
  const k = keys[0] as string;
  assert.deepEqual(t.routes.fallback.retries.statuses, [503], 'the only status retried by default');
  assert.deepEqual(retried(t, 'status', 503), { get: true, post: false });
  for (let i = 0; i < 3; i++) t.record(k, 503);
  assert.equal(t.breakers?.state(k), 'open', 'three 503s open the breaker');
  assert.deepEqual(streaks(t, k), { c5xx: 3, gateway: 3, local: 0 });
  t.record(k, 503);
  t.record(k, 503);
  const eject = events.find((e) => e.type === 'eject') as { endpoint: string; reason: string } | undefined;
  assert.deepEqual(eject && { endpoint: eject.endpoint, reason: eject.reason }, { endpoint: k, reason: 'consecutive-5xx' }, 'five in a row: consecutive5xx (the gateway trigger is off by default)');
});

test('row 4, the app answers another 5xx: not retried, not a breaker failure (a success for it), a 5xx for ejection after 5 in a row', () => {
  for (const status of [500, 501, 502, 504, 599]) {
    const { t, keys, events } = setup(BREAKER_3);
    const k = keys[2] as string;
    assert.deepEqual(retried(t, 'status', status), { get: false, post: false }, `${status} is not retried by default`);
    t.record(k, 0);
    t.record(k, 0);
    t.record(k, status);
    t.record(k, 0);
    t.record(k, 0);
    assert.equal(t.breakers?.state(k), 'closed', `${status} counts as a success for the breaker: it broke the streak of mesh failures`);
    t.record(k, 200);
    for (let i = 0; i < 4; i++) t.record(k, status);
    assert.equal(t.breakers?.state(k), 'closed', `${status} x4 leaves the breaker closed`);
    assert.equal(t.outlier?.isEjected(k), false, `four ${status} do not eject`);
    t.record(k, status);
    assert.equal(t.outlier?.isEjected(k), true, `the fifth ${status} in a row ejects`);
    assert.deepEqual(
      events.filter((e) => e.type !== 'breaker').map((e) => e.type === 'eject' && e.reason),
      ['consecutive-5xx'],
      `${status}: one ejection, by consecutive5xx`,
    );
  }
});

test('row 4: consecutiveGatewayFailure is off by default (ten 502s with consecutive5xx off eject nothing); set, it ejects on 502/503/504; a listed status is retried', () => {
  const off = setup({ outlierDetection: { consecutive5xx: 0 } });
  assert.equal(off.t.policy.outlier?.consecutiveGatewayFailure, 0);
  for (let i = 0; i < 10; i++) off.t.record(off.keys[0] as string, 502);
  assert.equal(off.t.outlier?.isEjected(off.keys[0] as string), false);
  const on = setup({ outlierDetection: { consecutive5xx: 0, consecutiveGatewayFailure: 3 }, retries: { statuses: [502, 503] } });
  for (const s of [502, 504, 503]) on.t.record(on.keys[0] as string, s);
  assert.deepEqual(
    on.events.filter((e) => e.type === 'eject').map((e) => e.type === 'eject' && e.reason),
    ['consecutive-gateway-failure'],
  );
  assert.deepEqual(retried(on.t, 'status', 502), { get: true, post: false }, 'retries.statuses lists 502: retried');
  assert.deepEqual(retried(on.t, 'status', 504), { get: false, post: false });
});

test('row 5, any other status: not retried, a success for the breaker and for ejection (both streaks end)', () => {
  for (const status of [200, 204, 302, 400, 404, 429, 499]) {
    const { t, keys } = setup(BREAKER_3);
    const k = keys[0] as string;
    assert.deepEqual(retried(t, 'status', status), { get: false, post: false }, String(status));
    t.record(k, 0);
    t.record(k, 0);
    for (let i = 0; i < 4; i++) t.record(k, 500);
    t.record(k, status);
    assert.deepEqual(streaks(t, k), { c5xx: 0, gateway: 0, local: 0 }, `${status} ends every streak`);
    t.record(k, 0);
    t.record(k, 0);
    assert.equal(t.breakers?.state(k), 'closed', `${status} ended the breaker's streak`);
  }
});

// ---- The panic threshold ----

const PANIC_POLICY = { breaker: { enabled: false }, outlierDetection: { maxEjectionPercent: 100 } };
const ejectN = (t: TrafficState, key: string) => {
  for (let i = 0; i < 5; i++) t.record(key, 500);
  assert.equal(t.outlier?.isEjected(key), true, `${key} ejected`);
};
const panics = (events: TrafficEvent[]) => events.filter((e): e is PanicEvent => e.type === 'panic').map(({ type: _type, service: _service, ...rest }) => rest);

test('panic: when fewer than 50% of the instances may take traffic, ejections are ignored and every instance gets requests; an event says so, with the counts', () => {
  const { t, keys, picks, events } = setup(PANIC_POLICY);
  ejectN(t, keys[0] as string);
  assert.deepEqual(picks(20), new Map([['e1', 10], ['e2', 10]]), '2 of 3 may take traffic: no panic, the ejected one is skipped');
  assert.equal(t.panicking, false);
  assert.deepEqual(panics(events), []);
  ejectN(t, keys[1] as string);
  assert.deepEqual(picks(30), new Map([['e0', 10], ['e1', 10], ['e2', 10]]), '1 of 3 (33%): panic, spread over all three');
  assert.equal(t.panicking, true);
  assert.equal(t.panicPicks, 30);
  assert.deepEqual(panics(events), [{ panicking: true, endpoints: 3, available: 1, ejected: 2, failingActiveChecks: 0, threshold: 50 }], 'one event on entering');
  assert.equal(t.summary().panic, true);
  assert.deepEqual((t.debug() as { panic: object }).panic, { panicking: true, threshold: 50, picks: 30, lastDecision: { endpoints: 3, available: 1, ejected: 2, failingActiveChecks: 0, threshold: 50 } });
  assert.equal(panicDetail(events.find((e) => e.type === 'panic') as PanicEvent), 'entered: 1 of 3 instances may take traffic (2 ejected, 0 failing active checks), below the panic threshold of 50%');
});

test('panic: failing active checks count like ejections; panic ends when enough come back (one event), and an ejection running out ends it too', () => {
  const { t, keys, picks, events, clock } = setup({ ...PANIC_POLICY, outlierDetection: { maxEjectionPercent: 100, interval: '1h' } });
  ejectN(t, keys[0] as string);
  t.setActiveHealth(keys[1] as string, false, 'HTTP 500');
  assert.deepEqual(picks(3), new Map([['e0', 1], ['e1', 1], ['e2', 1]]), 'in panic');
  t.setActiveHealth(keys[1] as string, true, 'HTTP 200');
  assert.deepEqual(picks(4), new Map([['e1', 2], ['e2', 2]]), 'out of panic: the ejection applies again');
  assert.equal(t.panicking, false);
  t.setActiveHealth(keys[2] as string, false, 'HTTP 500');
  t.setActiveHealth(keys[1] as string, false, 'HTTP 500');
  picks(3);
  assert.equal(t.panicking, true);
  t.setActiveHealth(keys[1] as string, true, 'HTTP 200');
  t.setActiveHealth(keys[2] as string, true, 'HTTP 200');
  clock.advance(29_999);
  picks(1);
  assert.equal(t.panicking, false, 'the active checks pass again: 2 of 3');
  t.setActiveHealth(keys[1] as string, false, 'HTTP 500');
  t.setActiveHealth(keys[2] as string, false, 'HTTP 500');
  picks(1);
  assert.equal(t.panicking, true, '0 of 3');
  t.setActiveHealth(keys[2] as string, true, 'HTTP 200');
  picks(1);
  assert.equal(t.panicking, true, '1 of 3 (e0 still ejected)');
  clock.advance(1);
  assert.deepEqual(picks(2), new Map([['e0', 1], ['e2', 1]]), "e0's 30 s are over (no evaluation ran: the interval is 1 h): 2 of 3, e1 failing its check is skipped again");
  assert.equal(t.panicking, false);
  assert.deepEqual(
    panics(events).map((p) => [p.panicking, p.available, p.ejected, p.failingActiveChecks]),
    [
      [true, 1, 1, 1],
      [false, 2, 1, 0],
      [true, 0, 1, 2],
      [false, 2, 1, 0],
      [true, 0, 1, 2],
      [false, 2, 0, 1],
    ],
    'one event per change, with the counts that decided it',
  );
});

test('panic threshold 0: never in panic, an outage stays an outage (and is told as before)', () => {
  const { t, b, keys, picks, events } = setup({ ...PANIC_POLICY, panicThreshold: 0 });
  ejectN(t, keys[0] as string);
  ejectN(t, keys[1] as string);
  assert.deepEqual(picks(4), new Map([['e2', 4]]));
  t.setActiveHealth(keys[2] as string, false, 'down');
  assert.deepEqual(picks(2), new Map([['none', 2]]));
  assert.deepEqual(t.whyNone(b), { endpoints: 3, failingActiveChecks: 1, breakersOpen: 0, ejected: 2 });
  assert.equal(t.panicking, false);
  assert.deepEqual(panics(events), []);
});

test('panic threshold at the exact boundary: 1 of 2 instances available (50%) is not panic; 0 of 2 is', () => {
  const clock = new ManualClock();
  const events: TrafficEvent[] = [];
  const set = setOf(2);
  const t = new TrafficState({ service: 'svc', policy: parseService({ name: 'svc', ...PANIC_POLICY }).traffic, clock, onEvent: (e) => events.push(e) });
  t.setEndpoints(set);
  const b = createBalancer('round-robin');
  b.update(set);
  const [k0, k1] = set.list().map((e) => e.key) as [string, string];
  ejectN(t, k0);
  for (let i = 0; i < 4; i++) assert.equal(t.pick(b, undefined, null)?.id, 'e1', '50% is not below 50%');
  assert.equal(t.panicking, false);
  t.setActiveHealth(k1, false, 'HTTP 500');
  const ids = new Set<string>();
  for (let i = 0; i < 4; i++) ids.add(t.pick(b, undefined, null)?.id ?? 'none');
  assert.deepEqual([...ids].sort(), ['e0', 'e1']);
  assert.deepEqual(panics(events), [{ panicking: true, endpoints: 2, available: 0, ejected: 1, failingActiveChecks: 1, threshold: 50 }]);
  t.stop();
});

test('panic keeps the breakers and the tried set; with every breaker open, whyNone counts the breakers (the only gate left) and says panic', () => {
  const { t, b, set, keys, picks } = setup({ outlierDetection: { maxEjectionPercent: 100 }, breaker: { consecutiveFailures: 3 } });
  const [e0, e1, e2] = set.list() as [Endpoint, Endpoint, Endpoint];
  // 503s: 3 open the breaker, 5 eject.
  for (const k of [keys[0], keys[1]] as string[]) for (let i = 0; i < 5; i++) t.record(k, 503);
  assert.equal(t.breakers?.state(keys[0] as string), 'open');
  assert.deepEqual(picks(4), new Map([['e2', 4]]), 'in panic, but e0 and e1 are behind open breakers');
  assert.equal(t.panicking, true);
  for (let i = 0; i < 5; i++) assert.equal(t.pick(b, undefined, [e2])?.id, 'e2', 'a retry: every other one is behind its breaker, so the tried one again');
  for (let i = 0; i < 3; i++) t.record(keys[2] as string, 503);
  assert.equal(t.pick(b, undefined, null), null);
  assert.deepEqual(t.whyNone(b), { endpoints: 3, failingActiveChecks: 0, breakersOpen: 3, ejected: 0, panic: true });
  void e0;
  void e1;
});

test('panic and the tried set: a retry in panic goes to an instance not tried yet, ejected or not', () => {
  const { t, b, set, keys } = setup(PANIC_POLICY);
  const [e0, e1] = set.list() as [Endpoint, Endpoint];
  ejectN(t, keys[0] as string);
  ejectN(t, keys[2] as string);
  const ids = new Map<string, number>();
  for (let i = 0; i < 6; i++) {
    const id = t.pick(b, undefined, [e1])?.id ?? 'none';
    ids.set(id, (ids.get(id) ?? 0) + 1);
  }
  assert.deepEqual(ids, new Map([['e0', 3], ['e2', 3]]), 'e0 and e2 are ejected, but in panic they take the retries that leave e1');
  for (let i = 0; i < 3; i++) assert.equal(t.pick(b, undefined, [e0, e1])?.id, 'e2');
  assert.equal(t.panicking, true);
});

test('the common case gives the balancer no gate at all, and so does panic with nothing but ejections', () => {
  const { t, b, keys } = setup(PANIC_POLICY);
  const gates: Array<boolean> = [];
  const spy = Object.create(b) as typeof b;
  spy.pick = (ctx) => {
    gates.push(ctx?.available !== undefined);
    return b.pick(ctx);
  };
  t.pick(spy, undefined, null);
  ejectN(t, keys[0] as string);
  t.pick(spy, undefined, null);
  ejectN(t, keys[1] as string);
  t.pick(spy, undefined, null);
  assert.deepEqual(gates, [false, true, false], 'nothing out: no gate; one ejected: the gate; panic: no gate (only breakers and the tried set would need one)');
});

test('panicDetail and parsePanicDetail are inverses', () => {
  for (const panicking of [true, false]) {
    const e: PanicEvent = { type: 'panic', service: 's', panicking, endpoints: 12, available: 3, ejected: 7, failingActiveChecks: 4, threshold: 35 };
    const { type: _t, service: _s, ...fields } = e;
    assert.deepEqual(parsePanicDetail(panicDetail(e)), fields);
  }
  assert.equal(parsePanicDetail('open: 5 consecutive failures'), null);
});
