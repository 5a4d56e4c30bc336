/** The sums of `skein proxy --workers N`'s admin server (src/proxy/workers.ts), without threads. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Counter, Gauge, Registry } from 'prom-client';
import type { StatsSeries } from '../../api/stats.js';
import { EventFeed, aggregateMetrics, sumAuthz, sumSeries } from '../workers.js';

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

test('aggregateMetrics sums counters and gauges over the workers, and takes process_* from the first', async () => {
  const worker = async (requests: number, open: number, cpu: number) => {
    const r = new Registry();
    new Counter({ name: 'skein_proxy_requests_total', help: 'h', labelNames: ['service'], registers: [r] }).labels('web').inc(requests);
    new Gauge({ name: 'skein_proxy_connections_open', help: 'h', registers: [r] }).set(open);
    new Counter({ name: 'process_cpu_seconds_total', help: 'h', registers: [r] }).inc(cpu);
    return r.getMetricsAsJSON();
  };
  const text = await aggregateMetrics([await worker(300, 2, 1.5), await worker(100, 3, 1.5)]).metrics();
  assert.match(text, /^skein_proxy_requests_total\{service="web"\} 400$/m);
  assert.match(text, /^skein_proxy_connections_open 5$/m);
  assert.match(text, /^process_cpu_seconds_total 1\.5$/m, 'every thread reads the same process: not doubled');
});
