import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ManualClock, systemClock } from '../../core/clock.js';
import { SignalStore, type StatsEvent, type StatsSnapshot } from './windows.js';
import { MeshEvents } from './events.js';
import { LATENCY_BUCKETS } from '../../api/stats.js';
import { parseStats, Scraper, type ScrapeRound, type ScrapeTarget } from './scraper.js';
import { panicDetail } from '../../resilience/traffic-state.js';

const BOUNDS = LATENCY_BUCKETS; // what the proxy reports

/** A fake proxy admin server: its counters grow by `step` requests per scrape. */
class FakeProxy {
  server: Server;
  admin = '';
  sinces: number[] = [];
  requests = 0;
  step = 10;
  startedAt = Date.now() - 60_000;
  events: StatsEvent[] = [];
  hang = false;
  status = 200;
  body: string | null = null;
  private hanging: ServerResponse[] = [];

  constructor(
    readonly id: string,
    readonly service: string,
  ) {
    this.server = createServer((req, res) => this.handle(req, res));
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.admin = `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  restart(): void {
    this.startedAt = Date.now();
    this.requests = 0;
    this.events = [];
  }

  snapshot(since: number): StatsSnapshot {
    const counts = new Array<number>(BOUNDS.length + 1).fill(0);
    counts[3] = this.requests;
    return {
      proxy: { id: this.id, startedAt: this.startedAt },
      at: Date.now(),
      bounds: BOUNDS,
      series: [
        {
          direction: 'inbound',
          workload: `${this.service}-1`,
          source: 'frontend',
          service: this.service,
          route: 'default',
          instance: `${this.service}-1`,
          requests: this.requests,
          failures: 0,
          statuses: { '200': this.requests },
          latency: { counts, sum: this.requests * 0.004 },
          requestBytes: 0,
          responseBytes: this.requests * 10,
        },
      ],
      events: this.events.filter((e) => e.seq > since),
      eventSeq: this.events.length === 0 ? 0 : this.events[this.events.length - 1]!.seq,
    };
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname !== '/stats') {
      res.writeHead(404).end();
      return;
    }
    const since = Number(url.searchParams.get('since') ?? '0');
    this.sinces.push(since);
    if (this.hang) {
      this.hanging.push(res);
      return;
    }
    if (this.status !== 200) {
      res.writeHead(this.status).end('no');
      return;
    }
    this.requests += this.step;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(this.body ?? JSON.stringify(this.snapshot(since)));
  }

  target(): ScrapeTarget {
    return { id: this.id, admin: this.admin, workloads: [{ service: this.service }] };
  }

  async close(): Promise<void> {
    for (const r of this.hanging) r.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function deadPort(): Promise<string> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return `127.0.0.1:${port}`;
}

test('a round scrapes every proxy in parallel: a hanging one delays nobody, a dead one counts failed', async (t) => {
  const a = await new FakeProxy('pa', 'alpha').listen();
  const b = await new FakeProxy('pb', 'beta').listen();
  const slow = await new FakeProxy('pslow', 'gamma').listen();
  slow.hang = true;
  t.after(() => Promise.all([a.close(), b.close(), slow.close()]));
  const dead = await deadPort();
  const store = new SignalStore({ intervalMs: 2000 });
  const events = new MeshEvents();
  const targets = [a.target(), b.target(), slow.target(), { id: 'pdead', admin: dead }];
  const scraper = new Scraper({ store, events, proxies: () => targets, clock: systemClock, intervalMs: 2000, timeoutMs: 1500 });
  const heard: ScrapeRound[] = [];
  scraper.onScrape((r) => heard.push(r));

  // Round 1 sets the baselines; the store needs a second round for traffic.
  const r1 = await scraper.scrapeNow();
  assert.equal(r1.ok, 2);
  assert.equal(r1.failed, 2);
  assert.deepEqual(scraper.counters, { ok: 2, failed: 2, rounds: 1, skippedRounds: 0 });

  let done = false;
  const p2 = scraper.scrapeNow().then((r) => {
    done = true;
    return r;
  });
  // The fast proxies' deltas are in the store while the round still waits for the hanging one.
  await until('alpha and beta ingested', () => store.window('1m').services.filter((s) => s.requests > 0).length === 2);
  assert.equal(done, false, 'the round is still waiting for the hanging proxy');
  const r2 = await p2;
  assert.equal(r2.ok, 2);
  assert.equal(r2.failed, 2);
  const byId = new Map(r2.results.map((r) => [r.id, r]));
  assert.match(byId.get('pslow')!.error ?? '', /timed out after 1500 ms/);
  assert.match(byId.get('pdead')!.error ?? '', /ECONNREFUSED|fetch failed/);
  assert.equal(byId.get('pa')!.requests, 10);
  assert.ok(r2.durationMs >= 1400, `the round lasted ${r2.durationMs} ms`);
  assert.deepEqual(scraper.counters, { ok: 4, failed: 4, rounds: 2, skippedRounds: 0 });
  assert.equal(heard.length, 2);
  const v = store.window('1m');
  assert.deepEqual(v.services.map((s) => [s.service, s.requests]), [['alpha', 10], ['beta', 10]]);
  assert.deepEqual(a.sinces, [0, 0]);
  assert.deepEqual(scraper.status().find((s) => s.id === 'pdead')!.consecutiveFailures, 2);
});

test('proxy events reach the feed with a readable message, and `since` moves on', async (t) => {
  const a = await new FakeProxy('pa', 'products').listen();
  t.after(() => a.close());
  const now = Date.now();
  a.events = [
    { seq: 6, time: now - 60 * 60_000, type: 'eject', service: 'products', instance: 'products-9', detail: 'an hour ago' },
    { seq: 7, time: now - 1000, type: 'eject', service: 'products', instance: 'products-2', detail: '5 consecutive gateway failures' },
  ];
  const store = new SignalStore();
  const events = new MeshEvents();
  const scraper = new Scraper({ store, events, proxies: () => [a.target()] });
  await scraper.scrapeNow();
  const got = events.recent();
  assert.equal(got.length, 1, 'on first contact only the last 15 minutes');
  assert.equal(got[0]!.type, 'eject');
  assert.equal(got[0]!.message, 'products-2 ejected: 5 consecutive gateway failures');
  assert.equal(got[0]!.id, 'products-2');
  assert.equal(got[0]!.service, 'products');
  assert.equal(got[0]!['proxy'], 'pa');
  assert.equal(got[0]!.time, new Date(now - 1000).toISOString());

  a.events.push({ seq: 8, time: Date.now(), type: 'breaker', service: 'products', instance: 'products-2', detail: 'open: 5 consecutive failures' });
  await scraper.scrapeNow();
  assert.deepEqual(a.sinces, [0, 7]);
  const last = events.recent({ types: ['breaker'] });
  assert.equal(last.length, 1);
  assert.equal(last[0]!.message, 'products-2 breaker open: 5 consecutive failures');
  assert.equal(last[0]!['state'], 'open');
  await scraper.scrapeNow();
  assert.deepEqual(a.sinces, [0, 7, 8]);
  assert.equal(events.size, 2, 'no event delivered twice');
});

test('a panic event reaches the feed with its counts, as one proxy saw the service (no instance)', async (t) => {
  const a = await new FakeProxy('pa', 'frontend').listen();
  t.after(() => a.close());
  const counts = { endpoints: 2, available: 0, ejected: 1, failingActiveChecks: 1, threshold: 50 };
  const now = Date.now();
  a.events = [
    { seq: 1, time: now - 2000, type: 'panic', service: 'frontend', instance: '', detail: panicDetail({ type: 'panic', service: 'frontend', panicking: true, ...counts }) },
    { seq: 2, time: now - 1000, type: 'panic', service: 'frontend', instance: '', detail: panicDetail({ type: 'panic', service: 'frontend', panicking: false, ...counts, available: 1, failingActiveChecks: 0 }) },
  ];
  const events = new MeshEvents();
  const scraper = new Scraper({ store: new SignalStore(), events, proxies: () => [a.target()] });
  await scraper.scrapeNow();
  const got = events.recent({ types: ['panic'] });
  assert.deepEqual(
    got.map((e) => ({ service: e.service, id: e.id, proxy: e['proxy'], state: e['state'], panicking: e['panicking'], endpoints: e['endpoints'], available: e['available'], ejected: e['ejected'], failing: e['failingActiveChecks'], threshold: e['threshold'] })),
    [
      { service: 'frontend', id: null, proxy: 'pa', state: 'entered', panicking: true, endpoints: 2, available: 0, ejected: 1, failing: 1, threshold: 50 },
      { service: 'frontend', id: null, proxy: 'pa', state: 'left', panicking: false, endpoints: 2, available: 1, ejected: 1, failing: 0, threshold: 50 },
    ],
  );
  assert.equal(
    got[0]!.message,
    'frontend is in panic mode in proxy pa: 0 of 2 instances may take traffic (1 ejected, 1 failing active checks), below the panic threshold of 50%: requests go to every instance, ejected or failing active checks',
  );
  assert.equal(got[1]!.message, 'frontend left panic mode in proxy pa: 1 of 2 instances may take traffic (1 ejected, 0 failing active checks), the panic threshold is 50%');
});

test('a restarted proxy: asked again from seq 0, its counters count from zero, and a proxy event says so', async (t) => {
  const a = await new FakeProxy('pa', 'products').listen();
  t.after(() => a.close());
  a.events = [{ seq: 1, time: Date.now(), type: 'eject', service: 'products', instance: 'p-1', detail: 'x' }];
  const store = new SignalStore();
  const events = new MeshEvents();
  const scraper = new Scraper({ store, events, proxies: () => [a.target()] });
  await scraper.scrapeNow();
  await scraper.scrapeNow();
  assert.equal(store.window('1m').services[0]!.requests, 10);
  const firstStart = a.startedAt;
  a.restart();
  a.startedAt = firstStart + 30_000; // restarted 30 s ago: not "fresh", yet all of it counts as a restart
  a.events = [{ seq: 1, time: Date.now(), type: 'return', service: 'products', instance: 'p-1', detail: 'after 30 s' }];
  const r = await scraper.scrapeNow();
  assert.equal(r.ok, 1);
  assert.deepEqual(a.sinces, [0, 1, 1, 0], 'the answer to since=1 showed a new startedAt: asked again from 0');
  assert.equal(store.window('1m').services[0]!.requests, 10 + 20, 'the restarted proxy counted 20 (two answers) since it started');
  const proxyEvents = events.recent({ types: ['proxy'] });
  assert.equal(proxyEvents.length, 1);
  assert.match(proxyEvents[0]!.message, /proxy pa restarted/);
  assert.equal(proxyEvents[0]!.service, 'products');
  assert.deepEqual(events.recent({ types: ['return'] }).map((e) => e.message), ['p-1 returned to the load balancer: after 30 s']);
});

test('a proxy failing three scrapes in a row is announced, and again when it answers', async (t) => {
  const a = await new FakeProxy('pa', 'products').listen();
  t.after(() => a.close());
  const store = new SignalStore();
  const events = new MeshEvents();
  const scraper = new Scraper({ store, events, proxies: () => [a.target()] });
  await scraper.scrapeNow();
  a.status = 500;
  for (let i = 0; i < 2; i++) assert.match((await scraper.scrapeNow()).results[0]!.error ?? '', /HTTP 500/);
  assert.equal(events.recent({ types: ['proxy'] }).length, 0, 'two failures are not news yet');
  await scraper.scrapeNow();
  await scraper.scrapeNow();
  let pe = events.recent({ types: ['proxy'] });
  assert.equal(pe.length, 1, 'announced once');
  assert.equal(pe[0]!['change'], 'unreachable');
  assert.match(pe[0]!.message, /does not answer stats scrapes: HTTP 500/);
  a.status = 200;
  await scraper.scrapeNow();
  pe = events.recent({ types: ['proxy'] });
  assert.equal(pe.length, 2);
  assert.equal(pe[1]!['change'], 'reachable');
  assert.equal(scraper.counters.failed, 4);
});

test('malformed stats fail the scrape and ingest nothing', async (t) => {
  const a = await new FakeProxy('pa', 'products').listen();
  t.after(() => a.close());
  const store = new SignalStore();
  const scraper = new Scraper({ store, events: new MeshEvents(), proxies: () => [a.target()] });
  a.body = JSON.stringify({ proxy: { id: 'pa', startedAt: 1 }, at: 2, bounds: [0.1], series: [{ direction: 'sideways' }], events: [], eventSeq: 0 });
  const r = await scraper.scrapeNow();
  assert.equal(r.failed, 1);
  assert.match(r.results[0]!.error ?? '', /malformed stats: series\[0\]\.direction/);
  a.body = '{not json';
  assert.match((await scraper.scrapeNow()).results[0]!.error ?? '', /not JSON/);
  assert.equal(store.stats.proxies, 0);
});

test('parseStats accepts the /stats format and names the first bad field', () => {
  const good = new FakeProxy('x', 'products').snapshot(0);
  assert.deepEqual(parseStats(JSON.parse(JSON.stringify(good))).series[0]!.service, 'products');
  const cases: Array<[unknown, RegExp]> = [
    [null, /body must be an object/],
    [{ ...good, proxy: { id: '', startedAt: 1 } }, /proxy\.id must not be empty/],
    [{ ...good, bounds: [0.1, 0.05] }, /bounds\[1\] must be greater/],
    [{ ...good, series: [{ ...good.series[0], requests: -1 }] }, /series\[0\]\.requests/],
    [{ ...good, series: [{ ...good.series[0], latency: { counts: [1, 2], sum: 0 } }] }, /series\[0\]\.latency\.counts must have 15 entries/],
    [{ ...good, events: [{ seq: 'one' }] }, /events\[0\]\.seq/],
    [{ ...good, series: [{ ...good.series[0], requests: 2, mtls: 3 }] }, /series\[0\]\.mtls must be at most requests \(2\)/],
    [{ ...good, authz: [{ service: 'products', outcome: 'maybe', policy: 'p', count: 1 }] }, /authz\[0\]\.outcome must be one of allow, deny, dry-run-deny, audit/],
    [{ ...good, authz: [{ service: 'products', outcome: 'deny', policy: 'p', count: -1 }] }, /authz\[0\]\.count/],
  ];
  for (const [body, re] of cases) assert.throws(() => parseStats(body), re);
  // The mTLS count and the authorization decisions are kept; a proxy without them gives 0 and none.
  const withSecurity = parseStats({ ...good, series: [{ ...good.series[0], requests: 5, mtls: 4 }], authz: [{ service: 'products', outcome: 'dry-run-deny', policy: 'strict', count: 2 }] });
  assert.equal(withSecurity.series[0]!.mtls, 4);
  assert.deepEqual(withSecurity.authz, [{ service: 'products', outcome: 'dry-run-deny', policy: 'strict', count: 2 }]);
  const { authz: _a, ...older } = good as typeof good & { authz?: unknown };
  const parsedOlder = parseStats({ ...older, series: good.series.map(({ mtls: _m, ...rest }) => rest) });
  assert.deepEqual([parsedOlder.series[0]!.mtls, parsedOlder.authz], [0, []]);
});

test('start() scrapes at once and every interval; stop() cancels the timer and the fetches in flight', async (t) => {
  const slow = await new FakeProxy('pslow', 'products').listen();
  slow.hang = true;
  t.after(() => slow.close());
  const clock = new ManualClock(Date.now());
  const store = new SignalStore({ clock });
  const scraper = new Scraper({ store, events: new MeshEvents(), proxies: () => [slow.target()], clock, intervalMs: 2000, timeoutMs: 5000 });
  const heard: ScrapeRound[] = [];
  scraper.onScrape((r) => heard.push(r));
  scraper.start();
  assert.equal(scraper.started, true);
  await until('the first request', () => slow.sinces.length === 1);
  // The round is still running at the next tick: the tick is skipped, not stacked.
  clock.advance(1000);
  assert.equal(scraper.counters.skippedRounds, 0);
  clock.advance(1000);
  assert.equal(scraper.counters.skippedRounds, 1);
  assert.equal(slow.sinces.length, 1);
  scraper.stop();
  await until('the round to end', () => heard.length === 1);
  assert.equal(heard[0]!.results[0]!.error, 'stopped');
  assert.equal(heard[0]!.failed, 0, 'a fetch cancelled by stop() is not a failed scrape');
  assert.equal(scraper.counters.failed, 0);
  assert.equal(clock.pending, 0, 'no timer left behind');
  clock.advance(10_000);
  await new Promise((r) => setImmediate(r));
  assert.equal(slow.sinces.length, 1, 'no scrape after stop');
});

test('the timer drives rounds with an injected clock', async (t) => {
  const a = await new FakeProxy('pa', 'products').listen();
  t.after(() => a.close());
  const clock = new ManualClock(Date.now());
  const store = new SignalStore({ clock });
  const scraper = new Scraper({ store, events: new MeshEvents(), proxies: () => [a.target()], clock, intervalMs: 2000 });
  const heard: ScrapeRound[] = [];
  scraper.onScrape((r) => heard.push(r));
  scraper.start();
  t.after(() => scraper.stop());
  await until('round 1', () => heard.length === 1);
  clock.advance(2000);
  await until('round 2', () => heard.length === 2);
  assert.equal(heard[1]!.at - heard[0]!.at, 2000);
  assert.equal(store.window('10s').services[0]!.requests, 10);
  assert.equal(store.window('10s').services[0]!.rps, 5);
});

test('rounds keep to the grid of the first one: a late round counts for its grid time; the timer aims at the grid', async () => {
  const T0 = 1_800_000_000_000;
  const clock = new ManualClock(T0);
  const store = new SignalStore({ clock, intervalMs: 2000 });
  const scraper = new Scraper({ store, events: new MeshEvents(), proxies: () => [], clock, intervalMs: 2000 });
  const heard: number[] = [];
  scraper.onScrape((r) => heard.push(r.at - T0));
  await scraper.scrapeNow();
  // A round 700 ms late (an event-loop stall) is the round of its grid time, not a new slot's.
  clock.advance(2700);
  await scraper.scrapeNow();
  clock.advance(1300);
  await scraper.scrapeNow();
  assert.deepEqual(heard, [0, 2000, 4000]);
  // The timer: rounds on the grid, and nothing left behind by stop().
  clock.advance(500);
  scraper.start();
  await until('the round at start', () => heard.length === 4);
  assert.equal(heard[3], 4000, 'started 500 ms after a grid point: that round belongs to it');
  for (const at of [6000, 8000]) {
    clock.advance(2000);
    await until(`the round at ${at}`, () => heard.at(-1) === at);
  }
  scraper.stop();
  assert.equal(clock.pending, 0, 'stop() leaves no timer');
});
