/**
 * Traffic splitting (split.ts) through the ServiceClient, without sockets: the weighted choice's
 * accuracy, weight changes mid-stream, empty and failing subsets, retries within a backend, the
 * subsets following the watch stream's changes, and what a call explains and reports.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseService } from '../api/parse.js';
import type { RoutePolicy } from '../api/traffic.js';
import { ManualClock } from '../core/clock.js';
import { EndpointSet, type Endpoint, type EndpointInput } from '../discovery/endpoint.js';
import { Call, type Attempt, type CallDriver, type CallFailure, type CallRequest } from './call.js';
import { noEndpoint, ServiceClient, type Refusal } from './service-client.js';
import { WeightedChoice, type BackendChoice } from './split.js';

/** Instances of svc: `v1-0`, `v1-1`, ... with their version. */
function instances(counts: Record<string, number>): EndpointInput[] {
  const out: EndpointInput[] = [];
  let n = 0;
  for (const [version, k] of Object.entries(counts)) {
    for (let i = 0; i < k; i++, n++) out.push({ service: 'svc', id: `${version}-${i}`, address: `10.0.0.${n + 1}`, port: 8080, version, labels: { tier: i === 0 ? 'gold' : 'plain' } });
  }
  return out;
}

const NO_HEADERS = { header: () => undefined, sourceAddress: '127.0.0.1' };

function client(policy: object, set: EndpointSet, clock = new ManualClock()) {
  const c = new ServiceClient('svc', parseService({ name: 'svc', balancer: { kind: 'round-robin' }, ...policy }), set, clock, () => {}, null);
  const route = (headers: Record<string, string> = {}) => c.traffic.routes.match({ method: 'GET', path: '/', header: (n) => headers[n] }) as RoutePolicy;
  return { c, route, clock };
}

/** Picks `n` first attempts of `route`: counts by version and by instance id, and the choices seen. */
function picks(c: ServiceClient, route: RoutePolicy, n: number) {
  const byVersion = new Map<string, number>();
  const byId = new Map<string, number>();
  const choices: Array<BackendChoice | null> = [];
  for (let i = 0; i < n; i++) {
    const e = c.pick(NO_HEADERS, null, route, null);
    const v = e === null ? 'none' : e.version;
    byVersion.set(v, (byVersion.get(v) ?? 0) + 1);
    if (e !== null) byId.set(e.id, (byId.get(e.id) ?? 0) + 1);
    choices.push(c.chosen);
  }
  return { byVersion, byId, choices };
}

/** Within ±2 percentage points of `percent` of `total`. */
function near(count: number | undefined, total: number, percent: number, what: string): void {
  const got = ((count ?? 0) * 100) / total;
  assert.ok(Math.abs(got - percent) <= 2, `${what}: ${got.toFixed(2)}% of ${total}, expected ${percent}% ± 2 points`);
}

const split = (a: number, b: number) => ({ backends: [{ subset: { version: 'v1' }, weight: a }, { subset: { version: 'v2' }, weight: b }] });

test('the weighted choice is exact over 10,000 picks at 90/10, 50/50 and 100/0, and smooth (never two 10% picks in a row)', () => {
  for (const [w, expect] of [
    [[90, 10], [9000, 1000]],
    [[50, 50], [5000, 5000]],
    [[100, 0], [10_000, 0]],
    [[0, 100], [0, 10_000]],
    [[33, 33, 34], [3300, 3300, 3400]],
  ] as const) {
    const c = new WeightedChoice(w);
    const counts = w.map(() => 0);
    let last = -1;
    let runs = 0;
    for (let i = 0; i < 10_000; i++) {
      const k = c.next();
      counts[k]!++;
      if (k === 1 && last === 1 && w[1] === 10) runs++;
      last = k;
    }
    assert.deepEqual(counts, expect, `weights ${w.join('/')}`);
    assert.equal(runs, 0);
  }
  // Masked: only the others take part, by their weights; all masked: -1.
  const c = new WeightedChoice([50, 30, 20]);
  const counts = [0, 0, 0];
  for (let i = 0; i < 800; i++) counts[c.next(0b100)]!++;
  assert.deepEqual(counts, [500, 300, 0]);
  assert.equal(c.next(0b111), -1);
  // Every backend left has weight 0: they take turns.
  const z = new WeightedChoice([100, 0, 0]);
  const zc = [0, 0, 0];
  for (let i = 0; i < 10; i++) zc[z.next(0b001)]!++;
  assert.deepEqual(zc, [0, 5, 5]);
});

test('a 90/10 split by version over 10,000 requests: within ±2 points, each subset balanced on its own', () => {
  const { c, route } = client(split(90, 10), EndpointSet.of(instances({ v1: 3, v2: 2 })));
  const r = route();
  assert.equal(r.name, 'default', 'the service-level split is the default route\'s');
  const { byVersion, byId, choices } = picks(c, r, 10_000);
  near(byVersion.get('v1'), 10_000, 90, 'v1');
  near(byVersion.get('v2'), 10_000, 10, 'v2');
  assert.equal(byVersion.get('v1'), 9000, 'smooth weighted round robin is exact');
  // Round robin within each subset: 3000 each of v1's, 500 each of v2's.
  assert.deepEqual([...byId].sort(), [['v1-0', 3000], ['v1-1', 3000], ['v1-2', 3000], ['v2-0', 500], ['v2-1', 500]]);
  assert.deepEqual(
    choices.find((x) => x?.backend.name === 'version=v2'),
    { backend: { subset: [['version', 'v2']], weight: 10, name: 'version=v2' }, instead: null },
  );
});

test('50/50 and 100/0 over 10,000 requests; a subset by any label', () => {
  const set = EndpointSet.of(instances({ v1: 2, v2: 2 }));
  for (const [a, b] of [
    [50, 50],
    [100, 0],
  ] as const) {
    const { c, route } = client(split(a, b), set);
    const { byVersion } = picks(c, route(), 10_000);
    near(byVersion.get('v1'), 10_000, a, `v1 at ${a}/${b}`);
    near(byVersion.get('v2'), 10_000, b, `v2 at ${a}/${b}`);
  }
  // tier=gold is v1-0 and v2-0; with version=v2 too, only v2-0.
  const { c, route } = client({ backends: [{ subset: { tier: 'gold', version: 'v2' }, weight: 25 }, { subset: { tier: 'plain' }, weight: 75 }] }, set);
  const { byId } = picks(c, route(), 1000);
  assert.deepEqual([...byId].sort(), [['v1-1', 375], ['v2-0', 250], ['v2-1', 375]]);
});

test('weights changed mid-stream (a PUT of the service): the next 10,000 requests follow the new weights; a request in flight is untouched', () => {
  const { c, route } = client(split(90, 10), EndpointSet.of(instances({ v1: 2, v2: 2 })));
  const first = picks(c, route(), 10_000);
  near(first.byVersion.get('v2'), 10_000, 10, 'before');
  // A request in flight on a v2 endpoint: its completion outlives the change.
  const e = c.pick(NO_HEADERS, null, route(), null) as Endpoint;
  const inflight = c.start(e);
  c.setDefinition(parseService({ name: 'svc', balancer: { kind: 'round-robin' }, ...split(50, 50) }));
  const second = picks(c, route(), 10_000);
  near(second.byVersion.get('v1'), 10_000, 50, 'after, v1');
  near(second.byVersion.get('v2'), 10_000, 50, 'after, v2');
  inflight.end({ latencyMs: 1, ok: true });
  // Weights unchanged (another field changed): the cycle goes on where it was.
  c.setDefinition(parseService({ name: 'svc', balancer: { kind: 'round-robin' }, ...split(50, 50), timeouts: { request: '3s' } }));
  const third = picks(c, route(), 100);
  assert.equal(third.byVersion.get('v2'), 50);
  // Back to no split: every instance, no backend chosen.
  c.setDefinition(parseService({ name: 'svc', balancer: { kind: 'round-robin' } }));
  const none = picks(c, route(), 400);
  assert.deepEqual([...none.byVersion].sort(), [['v1', 200], ['v2', 200]]);
  assert.equal(c.chosen, null);
});

test('an empty chosen subset: its share goes to the others by their weights, and the choice says instead of which', () => {
  // v3 has no instance: 50/30/20 becomes 62.5/37.5 between v1 and v2.
  const { c, route } = client(
    { backends: [{ subset: { version: 'v1' }, weight: 50 }, { subset: { version: 'v2' }, weight: 30 }, { subset: { version: 'v3' }, weight: 20 }] },
    EndpointSet.of(instances({ v1: 2, v2: 1 })),
  );
  const { byVersion, choices } = picks(c, route(), 10_000);
  assert.equal(byVersion.get('none'), undefined, 'never fails while another subset has endpoints');
  near(byVersion.get('v1'), 10_000, 62.5, 'v1');
  near(byVersion.get('v2'), 10_000, 37.5, 'v2');
  const instead = choices.filter((x) => x?.instead !== null);
  assert.equal(instead.length, 2000, "v3's 20% went elsewhere");
  assert.ok(instead.every((x) => x?.instead?.name === 'version=v3'));
  assert.deepEqual(c.debugSplits(), [
    {
      route: 'default',
      backends: [
        { subset: { version: 'v1' }, weight: 50, endpoints: 2, unknown: false },
        { subset: { version: 'v2' }, weight: 30, endpoints: 1, unknown: false },
        { subset: { version: 'v3' }, weight: 20, endpoints: 0, unknown: true },
      ],
    },
  ]);
  // 100/0 with the 100 gone: the weight-0 backend takes every request.
  const z = client(split(100, 0), EndpointSet.of(instances({ v2: 1 })));
  assert.deepEqual([...picks(z.c, z.route(), 100).byVersion], [['v2', 100]]);
});

test('a subset whose instances are all behind open breakers: the others take its requests; none left: the no-endpoint error names the backends', () => {
  const { c, route } = client({ ...split(50, 50), breaker: { consecutiveFailures: 1 } }, EndpointSet.of(instances({ v1: 1, v2: 1 })));
  const v2 = c.balancer.set.get('svc/v2-0') as Endpoint;
  c.traffic.started(v2.key);
  c.traffic.record(v2.key, 0);
  const { byVersion } = picks(c, route(), 100);
  assert.deepEqual([...byVersion], [['v1', 100]]);
  // A pin to v2 alone: nothing left, and the error says so.
  const pin = client(
    { breaker: { consecutiveFailures: 1 }, routes: [{ name: 'canary', match: { headers: { 'x-canary': '1' } }, backends: [{ subset: { version: 'v3' } }] }] },
    EndpointSet.of(instances({ v1: 1, v2: 1 })),
  );
  const r = pin.route({ 'x-canary': '1' });
  assert.equal(r.name, 'canary');
  assert.equal(pin.c.pick(NO_HEADERS, null, r, null), null);
  const refusal = noEndpoint(pin.c);
  assert.equal(refusal.code, 'SKEIN_E_NO_HEALTHY_ENDPOINT');
  assert.equal(refusal.message, 'no instance of "svc" is in the route\'s backends: version=v3 (weight 100, 0 instances)');
  assert.deepEqual(refusal.details, { backends: [{ subset: { version: 'v3' }, weight: 100, endpoints: 0 }] });
  // Without the header, the default route: every instance.
  assert.notEqual(pin.c.pick(NO_HEADERS, null, pin.route(), null), null);
  assert.equal(pin.c.emptySplit(), null);
});

test('retries stay in the backend while it has an untried endpoint, then go to another backend, and only then to a tried one', () => {
  const { c, route } = client(split(50, 50), EndpointSet.of(instances({ v1: 2, v2: 2 })));
  const r = route();
  // A first attempt on v2.
  let e = c.pick(NO_HEADERS, null, r, null) as Endpoint;
  if (e.version !== 'v2') e = c.pick(NO_HEADERS, null, r, null) as Endpoint;
  assert.equal(e.version, 'v2');
  const prior = c.chosen as BackendChoice;
  const tried = [e];
  const second = c.pick(NO_HEADERS, tried, r, prior) as Endpoint;
  assert.equal(second.version, 'v2', 'the other v2 instance');
  assert.notEqual(second.id, e.id);
  assert.equal(c.chosen, prior);
  tried.push(second);
  const third = c.pick(NO_HEADERS, tried, r, prior) as Endpoint;
  assert.equal(third.version, 'v1', 'v2 has no untried instance left');
  assert.equal(c.chosen?.instead?.name, 'version=v2');
  // Every instance tried: a tried one of the request's own backend.
  const all = EndpointSet.of(instances({ v1: 2, v2: 2 })).list().map((x) => c.balancer.set.get(x.key) as Endpoint);
  const again = c.pick(NO_HEADERS, all, r, prior) as Endpoint;
  assert.equal(again.version, 'v2');
  assert.equal(c.chosen, prior);
});

test('subsets follow the watch stream one change at a time: a new v2 instance gets v2 traffic, an instance whose version changes moves', () => {
  const set0 = EndpointSet.of(instances({ v1: 2 }));
  const { c, route } = client(split(80, 20), set0);
  assert.equal(c.debugSplits()[0]?.backends[1]?.unknown, true, 'v2 unknown until an instance has it');
  const set1 = set0.apply({ type: 'add', endpoints: [{ service: 'svc', id: 'new', address: '10.0.1.1', port: 8080, version: 'v2' }] });
  c.update(set1);
  const { byId } = picks(c, route(), 1000);
  assert.equal(byId.get('new'), 200);
  // v1-1 redeployed as v2 (same id, new version): it leaves v1's subset and joins v2's.
  const set2 = set1.apply({ type: 'add', endpoints: [{ service: 'svc', id: 'v1-1', address: '10.0.0.2', port: 8080, version: 'v2' }] });
  c.update(set2);
  const after = picks(c, route(), 1000);
  assert.deepEqual([...after.byId].sort(), [['new', 100], ['v1-0', 800], ['v1-1', 100]]);
  // Removed: gone from its subset too.
  c.update(set2.apply({ type: 'remove', keys: ['svc/new'] }));
  assert.deepEqual([...picks(c, route(), 100).byId].sort(), [['v1-0', 80], ['v1-1', 20]]);
});

test('load-aware subsets see every request to their endpoints: a least-request split counts in-flight requests per subset', () => {
  const clock = new ManualClock();
  const c = new ServiceClient('svc', parseService({ name: 'svc', balancer: { kind: 'least-request' }, ...split(0, 100) }), EndpointSet.of(instances({ v1: 1, v2: 2 })), clock, () => {}, null);
  const r = c.traffic.routes.match({ method: 'GET', path: '/', header: () => undefined }) as RoutePolicy;
  // Hold each request: least-request must keep the two v2 instances even, which it can only do
  // if the subset's balancer counts what is in flight.
  const held = [];
  const count = new Map<string, number>();
  for (let i = 0; i < 20; i++) {
    const e = c.pick(NO_HEADERS, null, r, null) as Endpoint;
    count.set(e.id, (count.get(e.id) ?? 0) + 1);
    held.push(c.start(e));
    if (i % 2 === 1) assert.deepEqual([...count].sort(), [['v2-0', (i + 1) / 2], ['v2-1', (i + 1) / 2]], `after ${i + 1} picks`);
  }
  for (const h of held) h.end({ latencyMs: 1, ok: true });
});

// ---- through a call: the explanation and the error's details ----

class Driver implements CallDriver {
  readonly sent: Attempt[] = [];
  failure: CallFailure | null = null;
  constructor(private readonly statusOf: (e: Endpoint) => number) {}
  call!: Call;
  send(a: Attempt): Refusal | null {
    this.sent.push(a);
    queueMicrotask(() => {
      this.call.connected();
      if (this.call.responseHead(this.statusOf(a.endpoint), false) === 'discard') this.call.discarded();
      else this.call.responseComplete();
    });
    return null;
  }
  abandon(): void {}
  fail(f: CallFailure): void {
    this.failure = f;
  }
}

async function run(c: ServiceClient, route: RoutePolicy, d: Driver, clock: ManualClock): Promise<Call> {
  const req: CallRequest = { direction: 'outbound', route, idempotent: true, hasBody: false, upgrade: false, timeoutMs: 0, delayMs: 0, hash: NO_HEADERS, hop: null };
  const k = new Call(c, req, d, clock, { retry: () => {}, retryBudgetExhausted: () => {} }, () => 0);
  d.call = k;
  k.start();
  for (let i = 0; i < 20 && !k.done; i++) {
    await new Promise((r) => setImmediate(r));
    clock.advance(300);
  }
  return k;
}

test('x-skein-explain names the backend (subset and weight) and the one it stood in for; a 503 from a one-instance canary is retried on the stable version', async () => {
  const clock = new ManualClock();
  const { c, route } = client(split(0, 100), EndpointSet.of(instances({ v1: 1, v2: 1 })), clock);
  const d = new Driver((e) => (e.version === 'v2' ? 503 : 200));
  const k = await run(c, route(), d, clock);
  assert.equal(k.done, true);
  assert.deepEqual(
    d.sent.map((a) => a.endpoint.id),
    ['v2-0', 'v1-0'],
  );
  assert.match(k.explanation(), /^route=default; service=svc; backend=version=v1 \(weight 0\), instead of version=v2 \(weight 100\), which had no endpoint left for the request; endpoint=v1-0 \(10\.0\.0\.1:8080\); attempts=2; failed=v2-0: HTTP 503;/);
  // Every instance answers 503: the error's details name the backend.
  const fail = new Driver(() => 503);
  const pinned = client({ retries: { maxRetries: 0, statuses: [] }, routes: [{ name: 'canary', match: { headers: { 'x-canary': '1' } }, backends: [{ subset: { version: 'v2' } }] }] }, EndpointSet.of(instances({ v1: 1, v2: 1 })), clock);
  const k2 = await run(pinned.c, pinned.route({ 'x-canary': '1' }), fail, clock);
  assert.equal(k2.done, true);
  assert.match(k2.explanation(), /^route=canary; service=svc; backend=version=v2 \(weight 100\); endpoint=v2-0 /);
  const none = client({ routes: [{ name: 'canary', match: { headers: { 'x-canary': '1' } }, backends: [{ subset: { version: 'v9' } }] }] }, EndpointSet.of(instances({ v1: 1 })), clock);
  const d3 = new Driver(() => 200);
  await run(none.c, none.route({ 'x-canary': '1' }), d3, clock);
  assert.equal(d3.failure?.code, 'SKEIN_E_NO_HEALTHY_ENDPOINT');
  assert.deepEqual(d3.failure?.details['backends'], [{ subset: { version: 'v9' }, weight: 100, endpoints: 0 }]);
});
