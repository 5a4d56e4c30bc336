import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseService } from '../api/parse.js';
import { createBalancer } from '../balance/index.js';
import { setOf } from '../balance/test-helpers.js';
import { ManualClock } from '../core/clock.js';
import { TrafficState } from '../resilience/traffic-state.js';
import { MAX_SERIES, MAX_SOURCES, ProxyMetrics, type ProxyGauges } from './metrics.js';

const gauges: ProxyGauges = { connections: () => [], idleUpstreams: () => 0, endpoints: () => [], watchConnected: () => true, traffic: () => [], certificates: () => [] };

/** The value of one sample line of the Prometheus text, by its exact label set. */
function sample(text: string, line: string): number | undefined {
  const l = text.split('\n').find((x) => x.startsWith(`${line} `));
  return l === undefined ? undefined : Number(l.slice(line.length + 1));
}

test('Prometheus series are summed over the destination instance; /stats keeps instances apart', async () => {
  const m = new ProxyMetrics(gauges, 'p1');
  const out = m.listener('client', 'outbound');
  out.record('client', 'web', 'default', 'web-1', 200, false, 0.002, 10, 100);
  out.record('client', 'web', 'default', 'web-2', 200, false, 0.004, 10, 100);
  out.record('client', 'web', 'default', 'web-2', 503, true, 0.2, 0, 20);
  const { text } = await m.exposition();
  const base = 'direction="outbound",workload="client",source="client",service="web",route="default"';
  assert.equal(sample(text, `skein_proxy_requests_total{${base},status="200",class="success"}`), 2);
  assert.equal(sample(text, `skein_proxy_requests_total{${base},status="503",class="failure"}`), 1);
  assert.equal(sample(text, `skein_proxy_request_duration_seconds_count{${base}}`), 3);
  assert.equal(sample(text, `skein_proxy_request_duration_seconds_bucket{${base},le="0.0025"}`), 1);
  assert.equal(sample(text, `skein_proxy_request_duration_seconds_bucket{${base},le="0.25"}`), 3);
  assert.equal(sample(text, `skein_proxy_request_bytes_total{${base}}`), 20);
  assert.equal(sample(text, `skein_proxy_response_bytes_total{${base}}`), 220);
  assert.doesNotMatch(text, /instance="/, 'no instance ids in Prometheus');

  const snap = m.snapshot();
  assert.deepEqual(
    snap.series.map((s) => [s.instance, s.requests, s.failures]).sort(),
    [['web-1', 1, 0], ['web-2', 2, 1]],
  );
  assert.equal(snap.bounds.length + 1, snap.series[0]!.latency.counts.length);
});

test('outbound series carry the version of the endpoint that answered ("" when none): Prometheus by version, /stats by instance and version', async () => {
  const m = new ProxyMetrics(gauges, 'p1');
  const out = m.listener('client', 'outbound');
  for (let i = 0; i < 9; i++) out.record('client', 'web', 'default', 'web-1', 200, false, 0.002, 0, 0, false, 'v1');
  out.record('client', 'web', 'default', 'web-2', 503, true, 0.002, 0, 0, false, 'v2');
  out.record('client', 'web', 'default', 'web-2', 200, false, 0.002, 0, 0, false, 'v2');
  // An instance redeployed under the same id with another version: a series of its own.
  out.record('client', 'web', 'default', 'web-2', 200, false, 0.002, 0, 0, false, 'v3');
  // Answered by the proxy before an endpoint was picked: no version.
  out.record('client', 'web', 'default', null, 503, true, 0, 0, 0, false, null);
  const { text } = await m.exposition();
  const base = 'direction="outbound",workload="client",source="client",service="web",route="default"';
  assert.equal(sample(text, `skein_proxy_requests_total{${base},version="v1",status="200",class="success"}`), 9);
  assert.equal(sample(text, `skein_proxy_requests_total{${base},version="v2",status="503",class="failure"}`), 1);
  assert.equal(sample(text, `skein_proxy_requests_total{${base},version="v2",status="200",class="success"}`), 1);
  assert.equal(sample(text, `skein_proxy_requests_total{${base},version="v3",status="200",class="success"}`), 1);
  assert.equal(sample(text, `skein_proxy_requests_total{${base},status="503",class="failure"}`), 1, 'no version label when there is none (to Prometheus, the same as version="")');
  assert.equal(sample(text, `skein_proxy_request_duration_seconds_count{${base},version="v2"}`), 2);
  assert.deepEqual(
    m.snapshot().series.map((s) => [s.instance, s.version, s.requests, s.failures]),
    [
      ['web-1', 'v1', 9, 0],
      ['web-2', 'v2', 2, 1],
      ['web-2', 'v3', 1, 0],
      ['', '', 1, 1],
    ],
  );
});

test('callers past the first 100 of an inbound listener are "other"; bad names "unknown"', async () => {
  const m = new ProxyMetrics(gauges, 'p1');
  const inb = m.listener('web-1', 'inbound');
  for (let i = 0; i < MAX_SOURCES + 5; i++) inb.record(`caller-${i}`, 'web', 'default', 'web-1', 200, false, 0.001, 0, 0);
  inb.record('Not A Service!', 'web', 'default', 'web-1', 200, false, 0.001, 0, 0);
  inb.record(null, 'web', 'default', 'web-1', 200, false, 0.001, 0, 0);
  const sources = new Map(m.snapshot().series.map((s) => [s.source, s.requests]));
  assert.equal(sources.size, MAX_SOURCES + 2);
  assert.equal(sources.get('other'), 5);
  assert.equal(sources.get('unknown'), 2);
  assert.equal(sources.get('caller-0'), 1);
});

test(`past ${MAX_SERIES} series a listener counts new instances as "other"`, () => {
  const m = new ProxyMetrics(gauges, 'p1');
  const out = m.listener('client', 'outbound');
  for (let i = 0; i < MAX_SERIES + 10; i++) out.record('client', 'web', 'default', `web-${i}`, 200, false, 0.001, 0, 0);
  out.record('client', 'web', 'default', 'web-0', 200, false, 0.001, 0, 0);
  const series = m.snapshot().series;
  assert.equal(series.length, MAX_SERIES + 1);
  assert.equal(series.find((s) => s.instance === 'other')?.requests, 10);
  assert.equal(series.find((s) => s.instance === 'web-0')?.requests, 2, 'known instances keep their series');
});

test('/stats?since= returns only newer traffic events; Prometheus counts them too', async () => {
  const m = new ProxyMetrics(gauges, 'p1');
  m.trafficEvent({ type: 'eject', service: 'web', endpoint: 'web/web-1', reason: 'consecutive-5xx', ejections: 1, untilMs: 30_000 });
  m.trafficEvent({ type: 'breaker', service: 'web', endpoint: 'web/web-2', from: 'closed', to: 'open', reason: '5 consecutive failures' });
  const all = m.snapshot();
  assert.deepEqual(all.events.map((e) => [e.seq, e.type, e.service, e.instance, e.detail]), [
    [1, 'eject', 'web', 'web-1', 'consecutive-5xx'],
    [2, 'breaker', 'web', 'web-2', 'open: 5 consecutive failures'],
  ]);
  assert.equal(all.eventSeq, 2);
  assert.deepEqual(m.snapshot(1).events.map((e) => e.seq), [2]);
  assert.deepEqual(m.snapshot(2).events, []);
  const { text } = await m.exposition();
  assert.equal(sample(text, 'skein_proxy_outlier_events_total{service="web",event="eject"}'), 1);
  assert.equal(sample(text, 'skein_proxy_breaker_transitions_total{service="web",to="open"}'), 1);
});

test('the Prometheus series follow new requests between scrapes', async () => {
  const m = new ProxyMetrics(gauges, 'p1');
  const out = m.listener('client', 'outbound');
  const line = 'skein_proxy_requests_total{direction="outbound",workload="client",source="client",service="web",route="default",status="200",class="success"}';
  out.record('client', 'web', 'default', 'web-1', 200, false, 0.001, 0, 0);
  assert.equal(sample((await m.exposition()).text, line), 1);
  out.record('client', 'web', 'default', 'web-1', 200, false, 0.001, 0, 0);
  assert.equal(sample((await m.exposition()).text, line), 2);
});

test('panic mode: skein_proxy_panicking per service, skein_proxy_panic_total counting picks in panic, transitions, and a /stats event with the counts', async () => {
  const clock = new ManualClock();
  const traffic: TrafficState[] = [];
  const m = new ProxyMetrics({ ...gauges, traffic: () => traffic }, 'p1');
  const policy = parseService({ name: 'web', breaker: { enabled: false }, outlierDetection: { maxEjectionPercent: 100 } }).traffic;
  const t = new TrafficState({ service: 'web', policy, clock, onEvent: (e) => m.trafficEvent(e) });
  const calm = new TrafficState({ service: 'api', policy, clock });
  traffic.push(t, calm);
  const set = setOf(2);
  t.setEndpoints(set);
  const b = createBalancer('round-robin');
  b.update(set);
  const read = async () => {
    const { text } = await m.exposition();
    return {
      panicking: sample(text, 'skein_proxy_panicking{service="web"}'),
      calm: sample(text, 'skein_proxy_panicking{service="api"}'),
      picks: sample(text, 'skein_proxy_panic_total{service="web"}'),
      entered: sample(text, 'skein_proxy_panic_transitions_total{service="web",to="panic"}') ?? 0,
      left: sample(text, 'skein_proxy_panic_transitions_total{service="web",to="normal"}') ?? 0,
    };
  };
  assert.deepEqual(await read(), { panicking: 0, calm: 0, picks: 0, entered: 0, left: 0 });
  for (const e of set.list()) for (let i = 0; i < 5; i++) t.record(e.key, 500);
  for (let i = 0; i < 7; i++) assert.notEqual(t.pick(b, undefined, null), null, 'every instance ejected: panic, and still an answer');
  assert.deepEqual(await read(), { panicking: 1, calm: 0, picks: 7, entered: 1, left: 0 });
  clock.advance(30_000);
  t.pick(b, undefined, null);
  assert.deepEqual(await read(), { panicking: 0, calm: 0, picks: 7, entered: 1, left: 1 });
  const panics = m.snapshot().events.filter((e) => e.type === 'panic');
  assert.deepEqual(
    panics.map((e) => [e.service, e.instance, e.detail]),
    [
      ['web', '', 'entered: 0 of 2 instances may take traffic (2 ejected, 0 failing active checks), below the panic threshold of 50%'],
      ['web', '', 'left: 2 of 2 instances may take traffic (0 ejected, 0 failing active checks), the panic threshold is 50%'],
    ],
  );
  t.stop();
  calm.stop();
});

test('mTLS requests per series and authorization decisions by outcome and policy: in /stats and in Prometheus', async () => {
  const m = new ProxyMetrics(gauges, 'p1');
  const inb = m.listener('web-1', 'inbound');
  inb.record('api', 'web', 'default', 'web-1', 200, false, 0.001, 0, 0, true);
  inb.record('api', 'web', 'default', 'web-1', 200, false, 0.001, 0, 0, true);
  inb.record('api', 'web', 'default', 'web-1', 200, false, 0.001, 0, 0, false);
  inb.record('local', 'web', 'default', 'web-1', 403, false, 0.001, 0, 0, false);
  const allow = { allowed: true, policy: 'only-api', rule: 0, reason: 'allowed', dryRunDenied: null, audited: [] };
  m.authz('web', allow);
  m.authz('web', { ...allow, dryRunDenied: { policy: 'strict-paths', rule: null }, audited: [{ policy: 'watch', rule: 1 }] });
  m.authz('web', { allowed: false, policy: 'only-api', rule: null, reason: 'no ALLOW policy matched', dryRunDenied: null, audited: [] });
  const snap = m.snapshot();
  assert.deepEqual(
    snap.series.map((s) => [s.source, s.requests, s.mtls]).sort(),
    [['api', 3, 2], ['local', 1, 0]],
  );
  assert.deepEqual(
    snap.authz?.map((a) => [a.service, a.outcome, a.policy, a.count]).sort(),
    [['web', 'allow', 'only-api', 2], ['web', 'audit', 'watch', 1], ['web', 'deny', 'only-api', 1], ['web', 'dry-run-deny', 'strict-paths', 1]],
  );
  const { text } = await m.exposition();
  assert.equal(sample(text, 'skein_proxy_mtls_requests_total{direction="inbound",workload="web-1",source="api",service="web",route="default"}'), 2);
  assert.equal(sample(text, 'skein_proxy_mtls_requests_total{direction="inbound",workload="web-1",source="local",service="web",route="default"}'), 0);
  assert.equal(sample(text, 'skein_proxy_authz_decisions_total{service="web",outcome="allow",policy="only-api"}'), 2);
  assert.equal(sample(text, 'skein_proxy_authz_decisions_total{service="web",outcome="dry-run-deny",policy="strict-paths"}'), 1);
});
