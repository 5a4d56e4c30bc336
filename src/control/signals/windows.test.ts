import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../core/clock.js';
import { SkeinError } from '../../core/errors.js';
import { histogramQuantile, parseWindow, SignalStore, WINDOWS, type StatsSnapshot } from './windows.js';
import { BOUNDS, statsSeries, type SeriesIn } from './test-fixtures.js';
import type { StatsAuthz } from '../../api/stats.js';

const T0 = 1_700_000_000_000;
const B = BOUNDS;
const HOUR = 3_600_000;
const series = (s: SeriesIn) => statsSeries(s, 2);

function snap(clock: ManualClock, list: SeriesIn[], opts: { id?: string; startedAt?: number; bounds?: number[]; authz?: StatsAuthz[] } = {}): StatsSnapshot {
  return {
    proxy: { id: opts.id ?? 'p1', startedAt: opts.startedAt ?? T0 - HOUR },
    at: clock.now(),
    bounds: opts.bounds ?? B,
    series: list.map(series),
    ...(opts.authz === undefined ? {} : { authz: opts.authz }),
    events: [],
    eventSeq: 0,
  };
}

function counts(at: Record<number, number>): number[] {
  const c = new Array<number>(B.length + 1).fill(0);
  for (const [i, n] of Object.entries(at)) c[Number(i)] = n;
  return c;
}

const close = (a: number | null, b: number, eps = 1e-6) => assert.ok(a !== null && Math.abs(a - b) < eps, `${a} should be ${b}`);

function setup(intervalMs = 2000, maxKeys?: number) {
  const clock = new ManualClock(T0);
  const store = new SignalStore({ clock, intervalMs, ...(maxKeys === undefined ? {} : { maxKeys }) });
  return { clock, store };
}

test('parseWindow: default 1m, the four windows, anything else a 400 naming them', () => {
  assert.equal(parseWindow(undefined), '1m');
  for (const w of WINDOWS) assert.equal(parseWindow(w), w);
  for (const badWindow of ['2m', '', '10S', '60s', '1h']) {
    assert.throws(
      () => parseWindow(badWindow),
      (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_BAD_QUERY' && e.field === 'window' && e.status === 400 && /10s, 1m, 5m, 15m/.test(e.message),
    );
  }
});

test('histogramQuantile interpolates within buckets like PromQL', () => {
  const bounds = [0.1, 0.2, 0.4];
  // 10 in (0,0.1], 20 in (0.1,0.2], 10 in (0.2,0.4]
  const c = [10, 20, 10, 0];
  close(histogramQuantile(0.5, bounds, c), 0.15); // rank 20: 0.1 + 0.1 * (10/20)
  close(histogramQuantile(0.95, bounds, c), 0.36); // rank 38: 0.2 + 0.2 * (8/10)
  close(histogramQuantile(0.25, bounds, c), 0.1); // rank 10: the top of the first bucket
  close(histogramQuantile(0.5, bounds, [10, 0, 0, 0]), 0.05); // the first bucket starts at 0
  close(histogramQuantile(0.99, bounds, [0, 0, 0, 5]), 0.4); // +Inf: the highest finite bound
  close(histogramQuantile(0.99, bounds, [99, 0, 0, 1]), 0.1 * (99 / 99)); // rank 99 is still in bucket 0
  close(histogramQuantile(0.995, bounds, [99, 0, 0, 1]), 0.4); // rank 99.5 falls into +Inf
  assert.equal(histogramQuantile(0.5, bounds, [0, 0, 0, 0]), null);
});

test('a long-running proxy first sets the baseline; then deltas give rps, success rate and percentiles', () => {
  const { clock, store } = setup();
  const r0 = store.ingest(snap(clock, [{ requests: 1000, failures: 10, latency: { counts: counts({ 2: 1000 }), sum: 1 } }]));
  assert.equal(r0.mode, 'baseline');
  assert.equal(store.window('10s').services.length, 0, 'a baseline is no traffic');
  assert.equal(store.hasService('products'), false);

  clock.advance(2000);
  // +100 requests, +5 failures: 50 in (1ms, 2.5ms], 50 in (2.5ms, 5ms]
  const r1 = store.ingest(snap(clock, [{ requests: 1100, failures: 15, latency: { counts: counts({ 2: 1050, 3: 50 }), sum: 1.3 } }]));
  assert.equal(r1.mode, 'delta');
  assert.equal(r1.requests, 100);
  const v = store.window('10s');
  assert.equal(v.services.length, 1);
  const s = v.services[0]!;
  assert.equal(s.service, 'products');
  assert.equal(s.requests, 100);
  assert.equal(s.failures, 5);
  assert.equal(s.rps, 50, 'one interval covered so far: 100 requests / 2 s');
  close(s.successRate, 0.95);
  close(s.latencyMs.p50, 2.5); // rank 50 ends bucket (1, 2.5]
  close(s.latencyMs.p95, 2.5 + 2.5 * (45 / 50));
  close(s.latencyMs.p99, 2.5 + 2.5 * (49 / 50));
  assert.equal(s.via, 'inbound');
  assert.deepEqual(s.instances.map((i) => [i.id, i.requests]), [['products-1', 100]]);
  assert.ok(store.hasService('products'));
});

test('rps divides by the window once enough data is kept, and by the covered time before', () => {
  const { clock, store } = setup();
  let total = 0;
  store.ingest(snap(clock, [{ requests: total }]));
  for (let i = 0; i < 6; i++) {
    clock.advance(2000);
    total += 20;
    store.ingest(snap(clock, [{ requests: total }]));
  }
  const ten = store.window('10s').services[0]!;
  assert.equal(ten.requests, 100, 'the last five slots');
  assert.equal(ten.rps, 10);
  const minute = store.window('1m');
  assert.equal(minute.services[0]!.requests, 120);
  assert.equal(minute.coveredMs, 12_000, 'six intervals since the first scrape');
  assert.equal(minute.services[0]!.rps, 10);
  // Between scrapes the window still ends at the last complete round.
  clock.advance(900);
  assert.equal(store.window('10s').services[0]!.rps, 10);
});

test('when scrapes stop coming, rates decay to zero', () => {
  const { clock, store } = setup();
  store.ingest(snap(clock, [{ requests: 0 }]));
  clock.advance(2000);
  store.ingest(snap(clock, [{ requests: 40 }]));
  assert.equal(store.window('10s').services[0]!.requests, 40);
  clock.advance(30_000);
  const s = store.window('10s').services[0]!;
  assert.equal(s.requests, 0);
  assert.equal(s.rps, 0);
  assert.equal(s.successRate, null);
  assert.deepEqual(s.latencyMs, { p50: null, p95: null, p99: null });
  assert.equal(store.window('1m').services[0]!.requests, 40, 'still inside the minute');
});

test('a proxy that started less than one interval ago counts fully on first sight', () => {
  const { clock, store } = setup();
  const r = store.ingest(snap(clock, [{ requests: 7 }], { startedAt: T0 - 500 }));
  assert.equal(r.mode, 'full');
  assert.equal(store.window('10s').services[0]!.requests, 7);
});

test('a new startedAt is a restart: the new counters are the delta', () => {
  const { clock, store } = setup();
  store.ingest(snap(clock, [{ requests: 500 }]));
  clock.advance(2000);
  store.ingest(snap(clock, [{ requests: 520 }]));
  clock.advance(2000);
  const r = store.ingest(snap(clock, [{ requests: 600 }], { startedAt: T0 + 3000 }));
  assert.equal(r.mode, 'full');
  assert.equal(r.restarted, true);
  assert.equal(store.window('10s').services[0]!.requests, 20 + 600);
  assert.equal(store.stats.restarts, 1);
});

test('any counter going down is a restart, even with the same startedAt', () => {
  const { clock, store } = setup();
  store.ingest(snap(clock, [{ requests: 500 }, { requests: 50, service: 'orders', instance: 'orders-1', workload: 'orders-1' }]));
  clock.advance(2000);
  // products restarted from 0 and has 3; orders has 60 (it would be +10 as a delta, but the proxy restarted: 60)
  const r = store.ingest(snap(clock, [{ requests: 3 }, { requests: 60, service: 'orders', instance: 'orders-1', workload: 'orders-1' }]));
  assert.equal(r.restarted, true);
  const v = store.window('10s');
  assert.deepEqual(v.services.map((s) => [s.service, s.requests]), [['orders', 60], ['products', 3]]);
  // Then normal deltas again.
  clock.advance(2000);
  assert.equal(store.ingest(snap(clock, [{ requests: 5 }, { requests: 60, service: 'orders', instance: 'orders-1', workload: 'orders-1' }])).mode, 'delta');
  assert.equal(store.window('10s').services.find((s) => s.service === 'products')!.requests, 5);
});

test("a service's numbers come from inbound series; without inbound traffic from outbound ones", () => {
  const { clock, store } = setup();
  const out = (n: number, service: string, instance: string) => ({ requests: n, direction: 'outbound' as const, workload: 'frontend-1', source: 'frontend', service, instance });
  const list = (k: number): SeriesIn[] => [
    // products: both views (its proxy's inbound and frontend's outbound); inbound wins
    { requests: 10 * k, instance: 'products-1', workload: 'products-1' },
    out(11 * k, 'products', 'products-1'),
    // payments: only frontend's outbound view (no proxy in front of payments)
    out(4 * k, 'payments', 'pay-a'),
    out(6 * k, 'payments', ''), // answered by the proxy itself: counts for the service, no instance
    // frontend: inbound from outside the mesh
    { requests: 3 * k, service: 'frontend', source: 'unknown', workload: 'frontend-1', instance: 'frontend-1' },
  ];
  store.ingest(snap(clock, list(0), { id: 'p' }));
  clock.advance(2000);
  store.ingest(snap(clock, list(1), { id: 'p' }));
  const v = store.window('1m');
  const by = new Map(v.services.map((s) => [s.service, s]));
  assert.equal(by.get('products')!.requests, 10);
  assert.equal(by.get('products')!.via, 'inbound');
  assert.equal(by.get('payments')!.requests, 10);
  assert.equal(by.get('payments')!.via, 'outbound');
  assert.deepEqual(by.get('payments')!.instances.map((i) => [i.id, i.requests]), [['pay-a', 4]]);
  assert.equal(by.get('frontend')!.requests, 3);
  assert.equal(v.mesh.requests, 10 + 10 + 3, 'the mesh sums the chosen views');
  // Edges: outbound only; the unknown caller makes none.
  assert.deepEqual(
    v.edges.map((e) => [e.source, e.destination, e.requests, e.via]),
    [
      ['frontend', 'payments', 10, 'outbound'],
      ['frontend', 'products', 11, 'outbound'],
    ],
  );
  // Routes are per direction.
  assert.deepEqual(
    v.routes.filter((r) => r.service === 'products').map((r) => [r.direction, r.requests]),
    [
      ['inbound', 10],
      ['outbound', 11],
    ],
  );
});

test('an inbound series from a known caller makes an edge only when no outbound series reports the pair', () => {
  const { clock, store } = setup();
  const list = (k: number): SeriesIn[] => [{ requests: 5 * k, source: 'sdk-app' }];
  store.ingest(snap(clock, list(0)));
  clock.advance(2000);
  store.ingest(snap(clock, list(1)));
  const e = store.window('1m').edges;
  assert.deepEqual(e.map((x) => [x.source, x.destination, x.requests, x.via]), [['sdk-app', 'products', 5, 'inbound']]);
});

test('different latency bounds are mapped onto the first ones', () => {
  const { clock, store } = setup();
  store.ingest(snap(clock, [{ requests: 0 }]));
  clock.advance(2000);
  // A proxy with coarser bounds: 0.002 falls in our (0.001, 0.0025], 0.02 in (0.01, 0.025], +Inf stays +Inf.
  const coarse = [0.002, 0.02];
  store.ingest(snap(clock, [{ requests: 0 }], { id: 'p2', startedAt: T0 + 1900, bounds: coarse }));
  clock.advance(2000);
  store.ingest(
    snap(clock, [{ requests: 10, latency: { counts: [4, 4, 2], sum: 0 }, service: 'slow', instance: 's-1', workload: 's-1' }], { id: 'p2', startedAt: T0 + 1900, bounds: coarse }),
  );
  const s = store.window('10s').services.find((x) => x.service === 'slow')!;
  assert.equal(s.requests, 10);
  // In our bounds: 4 in (1ms, 2.5ms], 4 in (10ms, 25ms], 2 in +Inf. p50 = rank 5: 10 + 15 * (1/4)
  close(s.latencyMs.p50, 13.75);
  close(s.latencyMs.p99, 10_000, 1e-6);
});

test('series: one point per interval, for a service or the whole mesh', () => {
  const { clock, store } = setup();
  const list = (a: number, b: number): SeriesIn[] => [
    { requests: a, failures: Math.floor(a / 10) },
    { requests: b, service: 'orders', instance: 'orders-1', workload: 'orders-1' },
  ];
  store.ingest(snap(clock, list(0, 0)));
  const t1 = clock.now();
  clock.advance(2000);
  store.ingest(snap(clock, list(20, 2)));
  clock.advance(2000);
  store.ingest(snap(clock, list(20, 2))); // an idle interval
  clock.advance(2000);
  store.ingest(snap(clock, list(60, 4)));
  const p = store.series('1m', 'products');
  assert.equal(p.stepMs, 2000);
  assert.equal(p.points.length, 4, 'from the first scrape to the last round');
  assert.deepEqual(p.points.map((x) => x.rps), [0, 10, 0, 20]);
  assert.deepEqual(p.points.map((x) => x.successRate), [null, 0.9, null, 0.9]);
  assert.deepEqual(p.points.map((x) => x.time), [t1, t1 + 2000, t1 + 4000, t1 + 6000]);
  close(p.points[1]!.p50, 1 + 1.5 * 0.5);
  assert.equal(p.points[2]!.p99, null);
  const mesh = store.series('1m');
  assert.equal(mesh.service, null);
  assert.deepEqual(mesh.points.map((x) => x.rps), [0, 11, 0, 21]);
  const ten = store.series('10s');
  assert.equal(ten.points.length, 4, '5 slots wanted, 4 kept so far');
  // A known service with no data: zero points, still one per interval.
  assert.deepEqual(store.series('10s', 'nothing').points.map((x) => x.rps), [0, 0, 0, 0]);
});

test('keys without traffic for 15 minutes are dropped, and the service is no longer seen', () => {
  const { clock, store } = setup();
  store.ingest(snap(clock, [{ requests: 0 }, { requests: 0, service: 'orders', instance: 'o-1', workload: 'o-1' }]));
  clock.advance(2000);
  store.ingest(snap(clock, [{ requests: 5 }, { requests: 1, service: 'orders', instance: 'o-1', workload: 'o-1' }]));
  assert.deepEqual(store.seenServices(), ['orders', 'products']);
  const keys = store.stats.keys;
  assert.ok(keys >= 6, `keys: ${keys}`);
  // products keeps getting traffic; orders stays idle.
  let n = 5;
  for (let t = 0; t < 15 * 60_000 + 10_000; t += 10_000) {
    clock.advance(10_000);
    n += 1;
    store.ingest(snap(clock, [{ requests: n }, { requests: 1, service: 'orders', instance: 'o-1', workload: 'o-1' }]));
  }
  assert.deepEqual(store.seenServices(), ['products']);
  assert.equal(store.hasService('orders'), false);
  assert.ok(store.stats.expiredKeys >= 4, `expired: ${store.stats.expiredKeys}`);
  assert.equal(store.window('15m').services.some((s) => s.service === 'orders'), false);
  // With no proxies at all, everything expires in time.
  clock.advance(16 * 60_000);
  assert.deepEqual(store.seenServices(), []);
  assert.equal(store.stats.keys, 0);
  assert.equal(store.stats.proxies, 0, 'silent proxies are forgotten');
});

test('at most maxKeys keys: new ones past the cap are refused and counted', () => {
  const { clock, store } = setup(2000, 6);
  const many = (k: number): SeriesIn[] => Array.from({ length: 5 }, (_, i) => ({ requests: k * (i + 1), service: `svc-${i}`, instance: `i-${i}`, workload: `i-${i}` }));
  store.ingest(snap(clock, many(0)));
  clock.advance(2000);
  store.ingest(snap(clock, many(1)));
  assert.equal(store.stats.keys, 6);
  assert.ok(store.stats.droppedKeys > 0);
  // Requests are lost only where the service's own series was refused: svc-2, svc-3 and svc-4.
  assert.equal(store.stats.droppedRequests, 3 + 4 + 5);
  // svc-0 got its service, route, instance and edge keys (4); svc-1 its service and route key.
  assert.deepEqual(store.seenServices(), ['svc-0', 'svc-1']);
  assert.equal(store.window('10s').services.find((s) => s.service === 'svc-0')!.requests, 1);
});

test('a window of 10s at a 3 s interval covers 4 slots (12 s)', () => {
  const { clock, store } = setup(3000);
  store.ingest(snap(clock, [{ requests: 0 }]));
  let n = 0;
  for (let i = 0; i < 10; i++) {
    clock.advance(3000);
    n += 30;
    store.ingest(snap(clock, [{ requests: n }]));
  }
  const v = store.window('10s');
  assert.equal(v.coveredMs, 12_000);
  assert.equal(v.services[0]!.requests, 120);
  assert.equal(v.services[0]!.rps, 10);
});

test('requests refused before a service was known belong to no service, edge or route', () => {
  const { clock, store } = setup();
  const list = (k: number): SeriesIn[] => [
    { requests: 10 * k, direction: 'outbound', workload: 'frontend-1', source: 'frontend', instance: 'products-1' },
    { requests: 3 * k, failures: 3 * k, direction: 'outbound', workload: 'frontend-1', source: 'frontend', service: '', route: '', instance: '' },
  ];
  store.ingest(snap(clock, list(0)));
  clock.advance(2000);
  store.ingest(snap(clock, list(1)));
  const v = store.window('1m');
  assert.deepEqual(v.services.map((s) => [s.service, s.requests, s.failures]), [['products', 10, 0]]);
  assert.deepEqual(v.edges.map((e) => [e.source, e.destination]), [['frontend', 'products']]);
  assert.ok(v.routes.every((r) => r.service !== ''));
});

test('after missed scrapes the traffic is spread over the slots it spanned, not piled into one', () => {
  const { clock, store } = setup();
  let total = 0;
  store.ingest(snap(clock, [{ requests: total }]));
  for (let i = 0; i < 5; i++) {
    clock.advance(2000);
    total += 200; // 100 rps
    store.ingest(snap(clock, [{ requests: total }]));
  }
  // 14 scrapes missed (28 s), then one answer with everything since.
  clock.advance(30_000);
  total += 3000;
  store.ingest(snap(clock, [{ requests: total }]));
  const ten = store.window('10s').services[0]!;
  assert.equal(ten.rps, 100, 'still 100 rps, not the 28 s of traffic in one slot');
  const points = store.series('1m', 'products').points.filter((p) => p.rps > 0);
  assert.ok(points.every((p) => p.rps === 100), `every point 100 rps: ${JSON.stringify(points.map((p) => p.rps))}`);
  assert.equal(store.window('1m').services[0]!.requests, 200 * 5 + 3000, 'nothing lost');
});

test('a proxy that restarted some time before it was seen again: its traffic spread since its start', () => {
  const { clock, store } = setup();
  store.ingest(snap(clock, [{ requests: 500 }]));
  clock.advance(2000);
  store.ingest(snap(clock, [{ requests: 600 }]));
  // Gone for 40 s; restarted 20 s ago and served 2000 requests (100 rps) since.
  clock.advance(40_000);
  const r = store.ingest(snap(clock, [{ requests: 2000 }], { startedAt: clock.now() - 20_000 }));
  assert.equal(r.restarted, true);
  assert.equal(store.window('10s').services[0]!.rps, 100);
  assert.equal(store.window('1m').services[0]!.requests, 100 + 2000);
});

test('15m reads 30 s slots: the rate over the last 14.5-15 minutes, and a chart point per 30 s', () => {
  const { clock, store } = setup();
  let total = 0;
  store.ingest(snap(clock, [{ requests: total }]));
  for (let i = 0; i < 600; i++) {
    // 20 minutes: 50 rps, then 150 rps for the last 5 minutes
    clock.advance(2000);
    total += i < 450 ? 100 : 300;
    store.ingest(snap(clock, [{ requests: total }]));
  }
  const fifteen = store.window('15m').services[0]!;
  // 10 minutes at 50 rps and 5 at 150 (give or take the 30 s the window may be short).
  assert.ok(Math.abs(fifteen.rps - (10 * 50 + 5 * 150) / 15) < 2, `15m rps ${fifteen.rps}`);
  const five = store.window('5m').services[0]!;
  assert.equal(five.rps, 150);
  const chart = store.series('15m', 'products');
  assert.equal(chart.stepMs, 30_000);
  assert.ok(chart.points.length >= 29 && chart.points.length <= 31, `points: ${chart.points.length}`);
  assert.deepEqual([...new Set(chart.points.slice(0, -11).map((p) => p.rps))], [50]);
  assert.deepEqual([...new Set(chart.points.slice(-9).map((p) => p.rps))], [150]);
  assert.equal(store.series('5m', 'products').stepMs, 2000);
});

test("edges count their mTLS requests from the view they come from; a proxy without the field counts none", () => {
  const { clock, store } = setup();
  const out = (n: number, mtls: number | undefined, service: string) => ({ requests: n, direction: 'outbound' as const, workload: 'frontend-1', source: 'frontend', service, instance: `${service}-1`, ...(mtls === undefined ? {} : { mtls }) });
  const list = (k: number): SeriesIn[] => [
    out(20 * k, 20 * k, 'users'), // every request over mTLS
    out(10 * k, 4 * k, 'products'), // some
    { requests: 9 * k, mtls: 9 * k, service: 'products', instance: 'products-1', workload: 'products-1' }, // products' inbound view: not the edge's
    out(6 * k, undefined, 'legacy'), // an older proxy: no mtls field
    { requests: 5 * k, mtls: 5 * k, source: 'sdk-app' }, // inbound only: the edge from the inbound view
  ];
  store.ingest(snap(clock, list(1)));
  clock.advance(2000);
  store.ingest(snap(clock, list(3)));
  assert.deepEqual(
    store.window('1m').edges.map((e) => [e.source, e.destination, e.via, e.requests, e.mtls]),
    [
      ['frontend', 'legacy', 'outbound', 12, 0],
      ['frontend', 'products', 'outbound', 20, 8],
      ['frontend', 'users', 'outbound', 40, 40],
      ['sdk-app', 'products', 'inbound', 10, 10],
    ],
  );
  // An mTLS count lower than before is a restart: the new counters are the traffic.
  clock.advance(2000);
  const r = store.ingest(snap(clock, [out(60, 1, 'users')]));
  assert.equal(r.restarted, true);
  const users = store.window('10s').edges.find((e) => e.destination === 'users')!;
  assert.deepEqual([users.requests, users.mtls], [40 + 60, 40 + 1]);
});

test('authorization decisions: per service, outcome and policy over the window, from the deltas of every proxy', () => {
  const { clock, store } = setup();
  const a = (service: string, outcome: StatsAuthz['outcome'], policy: string, count: number): StatsAuthz => ({ service, outcome, policy, count });
  const inbound = (n: number, id: string): SeriesIn => ({ requests: n, instance: id, workload: id });
  // Two proxies of products; the first snapshots are baselines (decisions before them are not in any window).
  store.ingest(snap(clock, [inbound(100, 'products-1')], { id: 'p1', authz: [a('products', 'allow', 'only-frontend', 90), a('products', 'deny', 'only-frontend', 10)] }));
  store.ingest(snap(clock, [inbound(0, 'products-2')], { id: 'p2', authz: [] }));
  clock.advance(2000);
  store.ingest(
    snap(clock, [inbound(107, 'products-1')], {
      id: 'p1',
      authz: [a('products', 'allow', 'only-frontend', 94), a('products', 'deny', 'only-frontend', 13), a('products', 'dry-run-deny', 'no-admin', 2), a('products', 'audit', 'watch', 1)],
    }),
  );
  store.ingest(snap(clock, [inbound(5, 'products-2')], { id: 'p2', authz: [a('products', 'allow', 'only-frontend', 3), a('products', 'deny', '', 2)] }));
  const v = store.window('1m');
  assert.deepEqual(v.services.find((s) => s.service === 'products')!.authz, {
    allowed: 4 + 3,
    denied: 3 + 2,
    dryRunDenied: 2,
    audited: 1,
    byPolicy: [
      { policy: 'only-frontend', outcome: 'allow', requests: 7 },
      { policy: '', outcome: 'deny', requests: 2 },
      { policy: 'only-frontend', outcome: 'deny', requests: 3 },
      { policy: 'no-admin', outcome: 'dry-run-deny', requests: 2 },
      { policy: 'watch', outcome: 'audit', requests: 1 },
    ],
  });
  // 12 s later with no new decisions: zeros over the 10s window, the service still listed.
  clock.advance(12_000);
  const same = [a('products', 'allow', 'only-frontend', 94), a('products', 'deny', 'only-frontend', 13), a('products', 'dry-run-deny', 'no-admin', 2), a('products', 'audit', 'watch', 1)];
  store.ingest(snap(clock, [inbound(107, 'products-1')], { id: 'p1', authz: same }));
  assert.deepEqual(store.window('10s').services.find((s) => s.service === 'products')!.authz, { allowed: 0, denied: 0, dryRunDenied: 0, audited: 0, byPolicy: [] });
  // A decision count lower than before is a restart: its counts are the traffic.
  const r = store.ingest(snap(clock, [inbound(5, 'products-2')], { id: 'p2', authz: [a('products', 'allow', 'only-frontend', 1)] }));
  assert.equal(r.restarted, true);
  assert.deepEqual(store.window('10s').services.find((s) => s.service === 'products')!.authz.byPolicy, [{ policy: 'only-frontend', outcome: 'allow', requests: 1 }]);
});

test("versions(): a service's outbound traffic per version of the instance that answered, over the last interval asked", () => {
  const { clock, store } = setup(1000);
  const out = (version: string | undefined, requests: number, failures: number, bucket: number) => ({
    direction: 'outbound' as const,
    workload: 'frontend',
    source: 'frontend',
    instance: `products-${version ?? 'none'}`,
    ...(version === undefined ? {} : { version }),
    requests,
    failures,
    latency: { counts: counts({ [bucket]: requests }), sum: 0 },
  });
  store.ingest(snap(clock, [out('v1', 0, 0, 2), out('v2', 0, 0, 2)], { startedAt: T0 - HOUR }));
  // Three intervals: v1 healthy and fast; v2 failing half its requests and slow (5-10 ms).
  for (let i = 1; i <= 3; i++) {
    clock.advance(1000);
    store.ingest(snap(clock, [out('v1', 90 * i, 0, 2), out('v2', 10 * i, 5 * i, 4), out(undefined, 4 * i, 0, 2)]));
  }
  clock.advance(1000);
  const all = store.versions('products', 3000);
  assert.deepEqual(all.map((v) => [v.version, v.via, v.requests, v.failures]), [['', 'outbound', 12, 0], ['v1', 'outbound', 270, 0], ['v2', 'outbound', 30, 15]]);
  const v2 = all.find((v) => v.version === 'v2')!;
  close(v2.successRate, 0.5);
  assert.ok(v2.latencyMs.p99 !== null && v2.latencyMs.p99 > 5 && v2.latencyMs.p99 <= 10, `v2's p99 is in the 5-10 ms bucket: ${v2.latencyMs.p99}`);
  close(all.find((v) => v.version === 'v1')!.successRate, 1);
  // The last interval only: one scrape's traffic.
  assert.deepEqual(store.versions('products', 1000).map((v) => [v.version, v.requests]), [['', 4], ['v1', 90], ['v2', 10]]);
  // Another service, or inbound-only traffic, has no versions.
  assert.deepEqual(store.versions('users', 3000), []);
  // v2's own inbound listeners saw every attempt (retries that succeeded elsewhere included): their view wins.
  const inb = { direction: 'inbound' as const, workload: 'products-v2', source: 'frontend', instance: 'products-v2', version: 'v2', latency: { counts: counts({ 4: 0 }), sum: 0 } };
  store.ingest(snap(clock, [{ ...inb, requests: 0, failures: 0 }], { id: 'p2' }));
  clock.advance(1000);
  store.ingest(snap(clock, [{ ...inb, requests: 14, failures: 9, latency: { counts: counts({ 4: 14 }), sum: 0 } }], { id: 'p2' }));
  clock.advance(1000);
  assert.deepEqual(store.versions('products', 1000).filter((v) => v.version === 'v2').map((v) => [v.via, v.requests, v.failures]), [['inbound', 14, 9]]);
  // The version aggregate does not leak into the window's routes.
  assert.deepEqual(store.window('10s').routes.map((r) => [r.service, r.route, r.direction, r.requests]), [['products', 'default', 'inbound', 14], ['products', 'default', 'outbound', 312]]);
});
