import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_SERIES, MAX_SOURCES, ProxyMetrics, type ProxyGauges } from './metrics.js';

const gauges: ProxyGauges = { connections: () => [], idleUpstreams: () => 0, endpoints: () => [], watchConnected: () => true, traffic: () => [] };

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
