import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import type { FastifyInstance } from 'fastify';
import { ManualClock } from '../../core/clock.js';
import { parseInstance, parseService } from '../../api/parse.js';
import { MemoryStore } from '../store/store.js';
import { Registry } from '../registry/registry.js';
import { HealthManager } from '../health/manager.js';
import { Publisher } from '../publisher.js';
import { ControlMetrics } from '../metrics.js';
import { createApiServer } from '../server.js';
import { SignalStore, type StatsSnapshot } from './windows.js';
import { BOUNDS, statsSeries, type SeriesIn } from './test-fixtures.js';
import { MeshEvents } from './events.js';
import { Scraper, type ScrapeTarget } from './scraper.js';
import { meshEventsRoute, signalsRoutes } from './routes.js';
import { createSignals } from './index.js';

const T0 = 1_800_000_000_000;
const series = (s: SeriesIn) => statsSeries(s, 4); // (5ms, 10ms]

function snapshot(at: number, list: SeriesIn[], id = 'p1', authz: StatsSnapshot['authz'] = []): StatsSnapshot {
  return { proxy: { id, startedAt: T0 - 3_600_000 }, at, bounds: BOUNDS, series: list.map(series), authz, events: [], eventSeq: 0 };
}

async function setup(opts: { targets?: () => ScrapeTarget[] } = {}) {
  const clock = new ManualClock(T0);
  const registry = await Registry.open({ clock, store: new MemoryStore() });
  const health = new HealthManager({ registry, clock });
  const publisher = new Publisher({ registry, clock });
  const app = createApiServer({
    registry,
    health,
    publisher,
    metrics: new ControlMetrics(),
    clock,
    logger: pino({ level: 'silent' }),
    version: 'test',
    startedAt: T0,
    info: () => ({}),
  });
  const store = new SignalStore({ clock, intervalMs: 2000 });
  const events = new MeshEvents();
  const scraper = new Scraper({ store, events, proxies: opts.targets ?? (() => []), clock });
  signalsRoutes(app, { store, events, scraper, registry, clock });
  meshEventsRoute(app, { registry, store, events });
  await registry.putService(parseService({ name: 'products' }));
  await registry.putService(parseService({ name: 'idle' }));
  await registry.register(parseInstance({ id: 'products-1', service: 'products', address: '127.0.0.1', port: 41234 }));
  await registry.register(parseInstance({ id: 'products-3', service: 'products', address: '127.0.0.1', port: 41236 }));
  return { clock, registry, app, store, events, scraper, publisher };
}

/**
 * Two scrape rounds of traffic: products (inbound, two instances, one unregistered; its policy
 * allowed 36 requests and denied 4), frontend -> products (all mTLS), payments via outbound only
 * (3 of 8 over mTLS).
 */
function traffic(store: SignalStore, clock: ManualClock): void {
  const list = (k: number) => [
    { requests: 30 * k, failures: 3 * k, mtls: 30 * k },
    { requests: 10 * k, instance: 'products-2', workload: 'products-2', mtls: 10 * k },
    { requests: 40 * k, direction: 'outbound' as const, workload: 'frontend-1', instance: 'products-1', mtls: 40 * k },
    { requests: 8 * k, direction: 'outbound' as const, workload: 'frontend-1', service: 'payments', instance: 'pay-1', mtls: 3 * k },
  ];
  const authz = (k: number) => [
    { service: 'products', outcome: 'allow' as const, policy: 'only-frontend', count: 36 * k },
    { service: 'products', outcome: 'deny' as const, policy: 'only-frontend', count: 4 * k },
  ];
  store.ingest(snapshot(clock.now(), list(0), 'p1', authz(0)));
  clock.advance(2000);
  store.ingest(snapshot(clock.now(), list(1), 'p1', authz(1)));
}

async function json(app: FastifyInstance, url: string): Promise<{ status: number; body: any }> {
  const r = await app.inject({ method: 'GET', url });
  return { status: r.statusCode, body: r.json() };
}

test('GET /v1/signals: registered and seen services, registry status and address, edges, routes', async (t) => {
  const { app, store, clock, publisher } = await setup();
  t.after(async () => {
    publisher.close();
    await app.close();
  });
  traffic(store, clock);
  const { status, body } = await json(app, '/v1/signals');
  assert.equal(status, 200);
  assert.equal(body.window, '1m');
  assert.equal(body.time, new Date(T0 + 2000).toISOString());
  assert.equal(body.scrapeIntervalMs, 2000);
  assert.deepEqual(body.services.map((s: any) => s.service), ['idle', 'payments', 'products']);
  const idle = body.services[0];
  const noDecisions = { allowed: 0, denied: 0, dryRunDenied: 0, audited: 0, byPolicy: [] };
  assert.deepEqual(idle, { service: 'idle', rps: 0, successRate: null, latencyMs: { p50: null, p95: null, p99: null }, requests: 0, failures: 0, instances: [], authz: noDecisions });
  const products = body.services[2];
  assert.equal(products.requests, 40, 'inbound only: 30 + 10');
  assert.equal(products.failures, 3);
  assert.equal(products.rps, 20);
  assert.equal(products.successRate, 37 / 40);
  assert.equal(products.latencyMs.p50, 7.5); // all in (5, 10] ms: 5 + 5 * 0.5
  assert.deepEqual(
    products.instances.map((i: any) => [i.id, i.status, i.address, i.requests]),
    [
      ['products-1', 'healthy', '127.0.0.1:41234', 30],
      ['products-2', 'unknown', null, 10],
      ['products-3', 'healthy', '127.0.0.1:41236', 0],
    ],
  );
  assert.deepEqual(Object.keys(products.instances[0]), ['id', 'status', 'address', 'rps', 'successRate', 'latencyMs', 'requests', 'failures']);
  assert.equal(products.instances[2].successRate, null);
  assert.deepEqual(products.authz, {
    allowed: 36,
    denied: 4,
    dryRunDenied: 0,
    audited: 0,
    byPolicy: [
      { policy: 'only-frontend', outcome: 'allow', requests: 36 },
      { policy: 'only-frontend', outcome: 'deny', requests: 4 },
    ],
  });
  assert.equal(body.services[1].requests, 8, 'payments from the outbound view');
  assert.deepEqual(body.services[1].authz, noDecisions, 'payments has no inbound proxy deciding');
  assert.deepEqual(
    body.edges.map((e: any) => [e.source, e.destination, e.requests, e.mtls, e.mtlsRequests]),
    [
      ['frontend', 'payments', 8, 'some', 3],
      ['frontend', 'products', 40, 'all', 40],
    ],
  );
  assert.deepEqual(Object.keys(body.edges[0]), ['source', 'destination', 'rps', 'successRate', 'latencyMs', 'requests', 'failures', 'mtls', 'mtlsRequests']);
  assert.deepEqual(
    body.routes.map((r: any) => [r.service, r.route, r.direction, r.requests]),
    [
      ['payments', 'default', 'outbound', 8],
      ['products', 'default', 'inbound', 40],
      ['products', 'default', 'outbound', 40],
    ],
  );
});

test('bad input: unknown window 400, unknown parameter 400, unknown service 404', async (t) => {
  const { app, store, clock, publisher } = await setup();
  t.after(async () => {
    publisher.close();
    await app.close();
  });
  traffic(store, clock);
  for (const url of ['/v1/signals?window=2m', '/v1/signals/services/products?window=1h', '/v1/signals/series?window=', '/v1/signals/series?service=products&window=60s']) {
    const r = await json(app, url);
    assert.equal(r.status, 400, url);
    assert.equal(r.body.code, 'SKEIN_E_BAD_QUERY', url);
    assert.equal(r.body.field, 'window', url);
    assert.match(r.body.message, /10s, 1m, 5m, 15m/, url);
  }
  for (const [url, field] of [
    ['/v1/signals?windows=1m', 'windows'],
    ['/v1/signals/services/products?service=x', 'service'],
    ['/v1/signals/series?x=1', 'x'],
    ['/v1/signals/stream?window=10s', 'window'],
    ['/v1/signals?window=1m&window=5m', 'window'],
  ] as const) {
    const r = await json(app, url);
    assert.equal(r.status, 400, url);
    assert.equal(r.body.code, 'SKEIN_E_BAD_QUERY', url);
    assert.equal(r.body.field, field, url);
  }
  for (const url of ['/v1/signals/services/nope', '/v1/signals/series?service=nope']) {
    const r = await json(app, url);
    assert.equal(r.status, 404, url);
    assert.equal(r.body.code, 'SKEIN_E_UNKNOWN_SERVICE', url);
    assert.equal(r.body.field, 'service', url);
  }
  const badName = await json(app, '/v1/signals/services/Not_A_Label');
  assert.equal(badName.status, 400);
  assert.equal(badName.body.field, 'service');
});

test('GET /v1/signals/services/:service: the entry, the edges in and out of it, its routes', async (t) => {
  const { app, store, clock, publisher } = await setup();
  t.after(async () => {
    publisher.close();
    await app.close();
  });
  traffic(store, clock);
  // payments is known from traffic only
  const pay = await json(app, '/v1/signals/services/payments?window=10s');
  assert.equal(pay.status, 200);
  assert.equal(pay.body.service, 'payments');
  assert.equal(pay.body.window, '10s');
  assert.equal(pay.body.requests, 8);
  assert.deepEqual(pay.body.instances.map((i: any) => [i.id, i.status]), [['pay-1', 'unknown']]);
  assert.deepEqual(pay.body.edges.map((e: any) => `${e.source}->${e.destination}`), ['frontend->payments']);
  assert.deepEqual(pay.body.routes.map((r: any) => r.direction), ['outbound']);
  const fe = await json(app, '/v1/signals/services/frontend');
  assert.equal(fe.status, 404, 'a caller seen only as a source is not a service with signals');
  const idle = await json(app, '/v1/signals/services/idle');
  assert.equal(idle.status, 200);
  assert.deepEqual([idle.body.requests, idle.body.edges, idle.body.routes], [0, [], []]);
  const products = await json(app, '/v1/signals/services/products?window=10s');
  assert.deepEqual([products.body.authz.allowed, products.body.authz.denied], [36, 4]);
  assert.deepEqual(products.body.edges.map((e: any) => [e.source, e.mtls]), [['frontend', 'all']]);
  // 12 s later, out of the 10s window: the edge is still known, with no requests to tell mTLS by.
  clock.advance(12_000);
  const later = await json(app, '/v1/signals/services/products?window=10s');
  assert.deepEqual(later.body.edges.map((e: any) => [e.source, e.requests, e.mtls, e.mtlsRequests]), [['frontend', 0, null, 0]]);
  assert.equal(later.body.authz.denied, 0);
});

test('GET /v1/signals/series: per service and for the whole mesh', async (t) => {
  const { app, store, clock, publisher } = await setup();
  t.after(async () => {
    publisher.close();
    await app.close();
  });
  traffic(store, clock);
  const one = await json(app, '/v1/signals/series?service=products&window=5m');
  assert.equal(one.status, 200);
  assert.equal(one.body.service, 'products');
  assert.equal(one.body.window, '5m');
  assert.equal(one.body.stepMs, 2000);
  assert.deepEqual(one.body.points.map((p: any) => p.rps), [0, 20]);
  assert.deepEqual(Object.keys(one.body.points[1]), ['time', 'rps', 'successRate', 'p50', 'p95', 'p99']);
  assert.equal(one.body.points[1].time, T0 + 2000);
  assert.equal(one.body.points[0].p50, null);
  const mesh = await json(app, '/v1/signals/series');
  assert.equal(mesh.body.service, null);
  assert.equal(mesh.body.window, '1m');
  assert.deepEqual(mesh.body.points.map((p: any) => p.rps), [0, (40 + 8) / 2]);
});

test('GET /v1/events from the mesh feed: filters by service and type, validates', async (t) => {
  const { app, events, publisher } = await setup();
  t.after(async () => {
    publisher.close();
    await app.close();
  });
  events.add({ time: T0, type: 'eject', service: 'products', id: 'products-2', message: 'products-2 ejected: x' });
  events.add({ time: T0 + 1, type: 'scale', service: 'idle', id: null, message: 'idle scaled to 2', from: 1, to: 2 });
  events.add({ time: T0 - 5, type: 'breaker', service: 'products', id: 'products-1', message: 'products-1 breaker open' });
  const all = await json(app, '/v1/events');
  assert.deepEqual(all.body.events.map((e: any) => e.type), ['breaker', 'eject', 'scale'], 'oldest first, in time order');
  const one = await json(app, '/v1/events?service=products&type=eject,scale');
  assert.deepEqual(one.body.events.map((e: any) => e.message), ['products-2 ejected: x']);
  assert.equal((await json(app, '/v1/events?limit=1')).body.events[0].type, 'scale');
  const bad = await json(app, '/v1/events?type=eject,nope');
  assert.equal(bad.status, 400);
  assert.equal(bad.body.field, 'type');
  assert.equal((await json(app, '/v1/events?limit=0')).body.field, 'limit');
  assert.equal((await json(app, '/v1/events?service=nope')).status, 404);
});

/** Reads server-sent events from a fetch response. */
class SseReader {
  private buf = '';
  private readonly dec = new TextDecoder();
  readonly frames: string[] = [];
  constructor(private readonly reader: ReadableStreamDefaultReader<Uint8Array>) {}

  async next(what: string, match: (frame: string) => boolean, ms = 5000): Promise<string> {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = this.frames.findIndex(match);
      if (i >= 0) return this.frames.splice(0, i + 1).pop()!;
      if (Date.now() > deadline) assert.fail(`no ${what} within ${ms} ms; got ${JSON.stringify(this.frames)}`);
      let timer: NodeJS.Timeout | undefined;
      const r = await Promise.race([
        this.reader.read(),
        new Promise<null>((resolve) => {
          timer = setTimeout(() => resolve(null), Math.max(1, deadline - Date.now()));
        }),
      ]);
      clearTimeout(timer);
      if (r === null) continue;
      if (r.done) assert.fail(`the stream ended before ${what}`);
      this.buf += this.dec.decode(r.value, { stream: true });
      let end: number;
      while ((end = this.buf.indexOf('\n\n')) >= 0) {
        this.frames.push(this.buf.slice(0, end));
        this.buf = this.buf.slice(end + 2);
      }
    }
  }
}

const dataOf = (frame: string) => JSON.parse(frame.split('\n').find((l) => l.startsWith('data: '))!.slice(6));

test('GET /v1/signals/stream: signals on connect and after a scrape, mesh events, keep-alives; cleaned up on close', async (t) => {
  // A proxy admin server answering the /stats format, its counters growing by 10 per scrape.
  let requests = 0;
  const startedAt = Date.now() - 60_000;
  const proxy = createServer((req, res) => {
    requests += 10;
    const counts = new Array<number>(BOUNDS.length + 1).fill(0);
    counts[4] = requests;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ proxy: { id: 'p1', startedAt }, at: Date.now(), bounds: BOUNDS, series: [series({ requests, latency: { counts, sum: 0 } })], events: [], eventSeq: 0 }));
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const admin = `127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  const { app, scraper, events, clock, publisher } = await setup({ targets: () => [{ id: 'p1', admin }] });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.after(async () => {
    publisher.close();
    await app.close();
    proxy.closeAllConnections();
    await new Promise<void>((resolve) => proxy.close(() => resolve()));
  });
  await scraper.scrapeNow(); // the baseline
  const timersBefore = clock.pending; // the publisher's and health manager's own
  const port = (app.server.address() as AddressInfo).port;
  const ac = new AbortController();
  const res = await fetch(`http://127.0.0.1:${port}/v1/signals/stream`, { signal: ac.signal });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
  const sse = new SseReader(res.body!.getReader());
  await sse.next('retry', (f) => f === 'retry: 1000');
  const first = dataOf(await sse.next('the first signals event', (f) => f.startsWith('event: signals\n')));
  assert.equal(first.window, '10s');
  assert.deepEqual(first.mesh, { rps: 0, successRate: null });
  assert.equal(first.services.find((s: any) => s.service === 'products').requests, 0);
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(events.subscriberCount, 1);

  clock.advance(2000);
  await scraper.scrapeNow();
  const second = dataOf(await sse.next('signals after the scrape', (f) => f.startsWith('event: signals\n')));
  const products = second.services.find((s: any) => s.service === 'products');
  assert.equal(products.requests, 10);
  assert.equal(products.rps, 5);
  assert.deepEqual(second.mesh, { rps: 5, successRate: 1 });

  events.add({ time: T0 + 2500, type: 'scale', service: 'products', id: null, message: 'products scaled from 2 to 3 replicas', from: 2, to: 3 });
  const ev = dataOf(await sse.next('the mesh event', (f) => f.startsWith('event: mesh-event\n')));
  assert.deepEqual(ev, { time: new Date(T0 + 2500).toISOString(), type: 'scale', service: 'products', id: null, message: 'products scaled from 2 to 3 replicas', from: 2, to: 3 });

  clock.advance(15_000);
  await sse.next('a keep-alive comment', (f) => f === ': keep-alive');

  ac.abort();
  const deadline = Date.now() + 5000;
  const left = () => [events.subscriberCount, clock.pending - timersBefore];
  while (left().some((n) => n !== 0)) {
    if (Date.now() > deadline) assert.fail(`not cleaned up: ${left().join(' subscribers, ')} timers`);
    await new Promise((r) => setTimeout(r, 5));
  }
});

test('createSignals wires store, feed, scraper and routes; registry health events reach the feed', async (t) => {
  const clock = new ManualClock(T0);
  const registry = await Registry.open({ clock, store: new MemoryStore() });
  const s = createSignals({ registry, proxies: () => [], clock, intervalMs: 1000 });
  t.after(() => s.stop());
  assert.equal(s.store.intervalMs, 1000);
  s.start();
  assert.equal(s.scraper.started, true);
  await registry.register(parseInstance({ id: 'web-1', service: 'web', address: '10.0.0.1', port: 80, check: { type: 'ttl', ttl: '10s', initialState: 'unhealthy' } }));
  await registry.setStatus('web', 'web-1', 'healthy', 'heartbeat');
  const got = s.events.recent({ service: 'web', types: ['health'] });
  assert.equal(got.length, 2);
  assert.equal(got[1]!.message, 'web-1 is healthy (was unhealthy): heartbeat');
  assert.deepEqual([got[1]!['from'], got[1]!['to'], got[1]!['reason']], ['unhealthy', 'healthy', 'heartbeat']);
  s.stop();
  assert.equal(s.scraper.started, false);
  await registry.setStatus('web', 'web-1', 'unhealthy', 'missed');
  assert.equal(s.events.recent({ service: 'web' }).length, 2, 'stop() unsubscribes from the registry');
});

test('GET /v1/signals/services/{s}/versions: per version over the last intervals; bad `last` and unknown services named', async () => {
  const { clock, app, store } = await setup();
  const out = (version: string, k: number, failures: number) => ({ requests: 10 * k, failures: failures * k, direction: 'outbound' as const, workload: 'frontend-1', instance: `products-${version}`, version });
  store.ingest(snapshot(clock.now(), [out('v1', 0, 0), out('v2', 0, 0)]));
  for (let k = 1; k <= 2; k++) {
    clock.advance(2000);
    store.ingest(snapshot(clock.now(), [out('v1', 9 * k, 0), out('v2', k, 1)]));
  }
  clock.advance(2000);
  const r = await app.inject({ method: 'GET', url: '/v1/signals/services/products/versions?last=4s' });
  assert.equal(r.statusCode, 200, r.body);
  const body = r.json() as { lastMs: number; scrapeIntervalMs: number; versions: Array<{ version: string; requests: number; failures: number; successRate: number; latencyMs: { p99: number } }> };
  assert.equal(body.lastMs, 4000);
  assert.equal(body.scrapeIntervalMs, 2000);
  assert.deepEqual(body.versions.map((v) => [v.version, v.requests, v.failures, v.successRate]), [['v1', 180, 0, 1], ['v2', 20, 2, 0.9]]);
  assert.ok(body.versions[1]!.latencyMs.p99 > 5 && body.versions[1]!.latencyMs.p99 <= 10, `p99 in ms: ${body.versions[1]!.latencyMs.p99}`);
  for (const [last, why] of [['1s', 'below the scrape interval'], ['6m', 'beyond 5 minutes'], ['soon', 'not a duration']]) {
    const bad = await app.inject({ method: 'GET', url: `/v1/signals/services/products/versions?last=${last}` });
    assert.equal(bad.statusCode, 400, why);
    assert.equal(bad.json().code, 'SKEIN_E_BAD_QUERY');
    assert.equal(bad.json().message, `last must be a duration from the scrape interval (2s) to 5m, got "${last}"`);
  }
  const unknown = await app.inject({ method: 'GET', url: '/v1/signals/services/nope/versions' });
  assert.equal(unknown.statusCode, 404);
});
