/** The sums of `skein proxy --workers N`'s admin server (src/proxy/workers.ts), without threads. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry, aggregate } from '../../telemetry/prom.js';
import { render } from '../../telemetry/exposition.js';
import type { StatsSeries } from '../../api/stats.js';
import { EventFeed, sumAuthz, sumSeries } from '../workers.js';
import { ProxyMetrics, type ProxyGauges } from '../metrics.js';
import type { TrafficState } from '../../resilience/traffic-state.js';

const series = (over: Partial<StatsSeries>): StatsSeries => ({
  direction: 'inbound',
  workload: 'web-1',
  source: 'client',
  service: 'web',
  route: 'default',
  instance: 'web-1',
  version: '',
  requests: 0,
  failures: 0,
  statuses: {},
  latency: { counts: [0, 0, 0], sum: 0 },
  requestBytes: 0,
  responseBytes: 0,
  mtls: 0,
  ...over,
});

test('sumSeries adds the series of one key and keeps the others apart', () => {
  const a = series({ requests: 3, failures: 1, statuses: { '200': 2, '503': 1 }, latency: { counts: [1, 2, 0], sum: 0.5 }, requestBytes: 10, responseBytes: 20, mtls: 3 });
  const b = series({ requests: 5, failures: 0, statuses: { '200': 5 }, latency: { counts: [0, 4, 1], sum: 1.25 }, requestBytes: 1, responseBytes: 2 });
  const other = series({ route: 'api', requests: 7, statuses: { '200': 7 }, latency: { counts: [7, 0, 0], sum: 0.07 } });
  const sum = sumSeries([{ series: [a, other] }, { series: [b] }]);
  assert.equal(sum.length, 2);
  assert.deepEqual(sum[0], series({ requests: 8, failures: 1, statuses: { '200': 7, '503': 1 }, latency: { counts: [1, 6, 1], sum: 1.75 }, requestBytes: 11, responseBytes: 22, mtls: 3 }));
  assert.deepEqual(sum[1], other);
  // The workers' own snapshots are not changed by the sum.
  assert.equal(a.requests, 3);
  assert.deepEqual(a.latency.counts, [1, 2, 0]);
});

test('sumSeries: a version or an instance apart is another series; a missing version is ""', () => {
  const { version: _v, ...old } = series({ requests: 1 });
  const sum = sumSeries([{ series: [old as StatsSeries, series({ requests: 2, version: 'v2' }), series({ requests: 4, instance: 'web-2' })] }, { series: [series({ requests: 8 })] }]);
  assert.deepEqual(
    sum.map((s) => [s.instance, s.version, s.requests]),
    [
      ['web-1', '', 9],
      ['web-1', 'v2', 2],
      ['web-2', '', 4],
    ],
  );
});

test('sumAuthz adds the counts of one service, outcome and policy', () => {
  const sum = sumAuthz([
    { authz: [{ service: 'web', outcome: 'deny', policy: 'p', count: 2 }] },
    { authz: [{ service: 'web', outcome: 'deny', policy: 'p', count: 3 }, { service: 'web', outcome: 'allow', policy: '', count: 1 }] },
    {},
  ]);
  assert.deepEqual(sum, [
    { service: 'web', outcome: 'deny', policy: 'p', count: 5 },
    { service: 'web', outcome: 'allow', policy: '', count: 1 },
  ]);
});

test('EventFeed numbers every worker\'s events once, in one sequence, so since= means the same for all', () => {
  const feed = new EventFeed();
  const ev = (seq: number, detail: string) => ({ seq, time: 1, type: 'eject', service: 'web', instance: 'web-1', detail });
  assert.equal(feed.after(0), 0);
  feed.take(0, [ev(1, 'w0 a'), ev(2, 'w0 b')], 2);
  feed.take(1, [ev(1, 'w1 a')], 1);
  assert.deepEqual(feed.since(0).map((e) => [e.seq, e.detail]), [
    [1, 'w0 a'],
    [2, 'w0 b'],
    [3, 'w1 a'],
  ]);
  assert.equal(feed.after(0), 2, 'worker 0 is asked from its own seq 2 next');
  // Asked again, a worker answers events already taken too (it was asked since an older seq): not twice.
  feed.take(0, [ev(2, 'w0 b'), ev(3, 'w0 c')], 3);
  assert.deepEqual(feed.since(3).map((e) => [e.seq, e.detail]), [[4, 'w0 c']]);
  assert.equal(feed.seq, 4);
  assert.deepEqual(feed.since(4), []);
});

test('the workers\' /metrics: counters, gauges and histograms summed by series, process_* from the first worker', async () => {
  const worker = async (requests: number, open: number, latencies: number[], cpu: number) => {
    const r = new Registry();
    r.counter({ name: 'skein_proxy_requests_total', help: 'h', labelNames: ['service'] }).labels('web').inc(requests);
    r.gauge({ name: 'skein_proxy_connections_open', help: 'h' }).set(open);
    const h = r.histogram({ name: 'skein_proxy_request_duration_seconds', help: 'h', labelNames: ['service'], buckets: [0.1, 1] });
    for (const l of latencies) h.labels('web').observe(l);
    r.scraped('counter', { name: 'process_cpu_seconds_total', help: 'h', aggregator: 'first' }, () => [{ labels: [], value: cpu }]);
    // Posted to the main thread: what arrives is a structured clone.
    return structuredClone(await r.getMetricsAsJSON());
  };
  const text = render(aggregate([await worker(300, 2, [0.05, 2], 1.5), await worker(100, 3, [0.5], 1.5)]), 'prometheus');
  assert.match(text, /^skein_proxy_requests_total\{service="web"\} 400$/m);
  assert.match(text, /^skein_proxy_connections_open 5$/m);
  assert.match(text, /^skein_proxy_request_duration_seconds_bucket\{service="web",le="0\.1"\} 1$/m);
  assert.match(text, /^skein_proxy_request_duration_seconds_bucket\{service="web",le="1"\} 2$/m);
  assert.match(text, /^skein_proxy_request_duration_seconds_bucket\{service="web",le="\+Inf"\} 3$/m);
  assert.match(text, /^skein_proxy_request_duration_seconds_sum\{service="web"\} 2\.55$/m);
  assert.match(text, /^skein_proxy_request_duration_seconds_count\{service="web"\} 3$/m);
  assert.match(text, /^process_cpu_seconds_total 1\.5$/m, 'every thread reads the same process: not doubled');
});

test('two proxies\' registries summed: the process metrics as one process, the heap of both threads, no family twice', async () => {
  const gauges: ProxyGauges = { connections: () => [], idleUpstreams: () => 0, endpoints: () => [], watchConnected: () => false, traffic: () => [], certificates: () => [] };
  const workers = [new ProxyMetrics(gauges, 'a'), new ProxyMetrics(gauges, 'b')];
  workers[0]!.listener('w', 'inbound').record('api', 'web', 'default', 'web-1', 200, false, 0.003, 10, 20);
  workers[1]!.listener('w', 'inbound').record('api', 'web', 'default', 'web-1', 200, false, 0.003, 1, 2);
  const per = await Promise.all(workers.map(async (w) => structuredClone(await w.registry.getMetricsAsJSON())));
  const sum = aggregate(per);
  assert.deepEqual(sum.map((f) => f.name), per[0]!.map((f) => f.name), 'the same families, in the same order');
  const value = (families: typeof sum, name: string) => families.find((f) => f.name === name)?.samples[0]?.value;
  assert.equal(value(sum, 'process_resident_memory_bytes'), value(per[0]!, 'process_resident_memory_bytes'));
  assert.equal(value(sum, 'process_start_time_seconds'), value(per[0]!, 'process_start_time_seconds'));
  assert.equal(value(sum, 'nodejs_heap_size_used_bytes'), value(per[0]!, 'nodejs_heap_size_used_bytes')! + value(per[1]!, 'nodejs_heap_size_used_bytes')!);
  const text = render(sum, 'prometheus');
  const base = 'direction="inbound",workload="w",source="api",service="web",route="default"';
  assert.match(text, new RegExp(`^skein_proxy_requests_total\\{${base},status="200",class="success"\\} 2$`, 'm'));
  assert.match(text, new RegExp(`^skein_proxy_request_bytes_total\\{${base}\\} 11$`, 'm'));
  assert.match(text, new RegExp(`^skein_proxy_request_duration_seconds_bucket\\{${base},le="0.005"\\} 2$`, 'm'));
});

test('gauges every worker reads alike keep their meaning in the sum: the first certificate to expire, connected only when all are, the worst view of an endpoint\'s state', async () => {
  const notAfter = Date.UTC(2027, 0, 2);
  const traffic = (panicking: boolean, ejected: number, active: number) =>
    ({ service: 'web', active, connections: { open: 1 }, budget: { available: 10 }, outlier: { ejectedCount: ejected }, breakers: null, down: new Set(), panicking, panicPicks: 0 }) as unknown as TrafficState;
  const gauges = (connected: boolean, expires: number, t: TrafficState): ProxyGauges => ({
    connections: () => [],
    idleUpstreams: () => 0,
    endpoints: () => [{ service: 'web', count: 3 }],
    watchConnected: () => connected,
    traffic: () => [t],
    certificates: () => [{ service: 'web', identity: 'spiffe://mesh/web', notAfter: expires }],
  });
  const workers = [new ProxyMetrics(gauges(true, notAfter, traffic(false, 0, 2)), 'a'), new ProxyMetrics(gauges(false, notAfter + 3_600_000, traffic(true, 1, 5)), 'b')];
  const text = render(aggregate(await Promise.all(workers.map(async (w) => structuredClone(await w.registry.getMetricsAsJSON())))), 'prometheus');
  assert.match(text, new RegExp(`^skein_proxy_certificate_expiry_timestamp_seconds\\{service="web",identity="spiffe://mesh/web"\\} ${notAfter / 1000}$`, 'm'), 'the earlier of the two, not their sum');
  assert.match(text, /^skein_proxy_control_connected 0$/m, 'one worker is cut off');
  assert.match(text, /^skein_proxy_endpoints\{service="web"\} 3$/m, 'both know the same 3');
  assert.match(text, /^skein_proxy_panicking\{service="web"\} 1$/m);
  assert.match(text, /^skein_proxy_ejected_endpoints\{service="web"\} 1$/m);
  assert.match(text, /^skein_proxy_requests_in_flight\{service="web"\} 7$/m, 'amounts are still summed');
});
