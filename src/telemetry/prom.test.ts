/** Our Prometheus metrics (prom.ts) and their exposition (exposition.ts), without sockets. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry, aggregate, type Family } from './prom.js';
import { OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE, exposition, render } from './exposition.js';
import { processMetrics } from './process-metrics.js';
import { SkeinError } from '../core/errors.js';

test('the text format 0.0.4: HELP and TYPE, labels in their declared order, a blank line between families', async () => {
  const r = new Registry();
  const c = r.counter({ name: 'skein_x_total', help: 'Things.', labelNames: ['b', 'a'] });
  c.labels('2', '1').inc();
  c.labels('2', '1').inc(2.5);
  c.labels('3', '1').inc();
  r.gauge({ name: 'skein_g', help: 'A gauge.' }).set(-4);
  r.gauge({ name: 'skein_unset', help: 'Never set.', labelNames: ['x'] });
  assert.equal(
    await r.metrics(),
    [
      '# HELP skein_x_total Things.',
      '# TYPE skein_x_total counter',
      'skein_x_total{b="2",a="1"} 3.5',
      'skein_x_total{b="3",a="1"} 1',
      '',
      '# HELP skein_g A gauge.',
      '# TYPE skein_g gauge',
      'skein_g -4',
      '',
      '# HELP skein_unset Never set.',
      '# TYPE skein_unset gauge',
      '',
    ].join('\n'),
  );
});

test('escaping: label values (backslash, quote, newline) in both formats; HELP escapes the quote in OpenMetrics only', () => {
  const f: Family = { name: 'skein_e_total', help: 'a "quoted" \\ help\nline', type: 'counter', labelNames: ['v'], aggregator: 'sum', samples: [{ labels: ['C:\\dir "x"\nnext'], value: 1 }] };
  const text = render([f], 'prometheus');
  assert.match(text, /^# HELP skein_e_total a "quoted" \\\\ help\\nline$/m);
  assert.match(text, /^skein_e_total\{v="C:\\\\dir \\"x\\"\\nnext"\} 1$/m);
  const om = render([f], 'openmetrics');
  assert.match(om, /^# HELP skein_e a \\"quoted\\" \\\\ help\\nline$/m);
  assert.match(om, /^skein_e_total\{v="C:\\\\dir \\"x\\"\\nnext"\} 1$/m);
});

test('OpenMetrics: a counter family named without _total, its sample with it, no _created, and # EOF at the end', () => {
  const r = new Registry();
  r.counter({ name: 'skein_req_total', help: 'h' }).inc(7);
  r.gauge({ name: 'nodejs_things_total', help: 'a gauge whose name ends in _total keeps it' }).set(2);
  return r.getMetricsAsJSON().then((families) => {
    assert.equal(
      render(families, 'openmetrics'),
      ['# HELP skein_req h', '# TYPE skein_req counter', 'skein_req_total 7', '# HELP nodejs_things_total a gauge whose name ends in _total keeps it', '# TYPE nodejs_things_total gauge', 'nodejs_things_total 2', '# EOF', ''].join('\n'),
    );
  });
});

test('a histogram: cumulative _bucket{le} ending at +Inf, _sum and _count; le after the labels; values in seconds as given', async () => {
  const r = new Registry();
  const h = r.histogram({ name: 'skein_d_seconds', help: 'h', labelNames: ['route'], buckets: [0.005, 0.1, 1] });
  const cell = h.labels('a');
  for (const v of [0.001, 0.005, 0.05, 0.5, 3]) cell.observe(v);
  assert.equal(
    await r.metrics(),
    [
      '# HELP skein_d_seconds h',
      '# TYPE skein_d_seconds histogram',
      'skein_d_seconds_bucket{route="a",le="0.005"} 2',
      'skein_d_seconds_bucket{route="a",le="0.1"} 3',
      'skein_d_seconds_bucket{route="a",le="1"} 4',
      'skein_d_seconds_bucket{route="a",le="+Inf"} 5',
      'skein_d_seconds_sum{route="a"} 3.556',
      'skein_d_seconds_count{route="a"} 5',
      '',
    ].join('\n'),
  );
});

test('scraped metrics are read at each collection; a null label value is left out; special values', async () => {
  const r = new Registry();
  let n = 1;
  r.scraped<'a' | 'version'>('counter', { name: 'skein_s_total', help: 'h', labelNames: ['a', 'version'] }, () => [
    { labels: ['x', null], value: n },
    { labels: ['x', 'v2'], value: n * 2 },
  ]);
  r.scraped('gauge', { name: 'skein_special', help: 'h', labelNames: ['k'] }, () => [
    { labels: ['nan'], value: NaN },
    { labels: ['inf'], value: Infinity },
    { labels: ['-inf'], value: -Infinity },
  ]);
  assert.match(await r.metrics(), /^skein_s_total\{a="x"\} 1$/m);
  n = 5;
  const text = await r.metrics();
  assert.match(text, /^skein_s_total\{a="x"\} 5$/m);
  assert.match(text, /^skein_s_total\{a="x",version="v2"\} 10$/m);
  assert.match(text, /^skein_special\{k="nan"\} NaN$/m);
  assert.match(text, /^skein_special\{k="inf"\} \+Inf$/m);
  assert.match(text, /^skein_special\{k="-inf"\} -Inf$/m);
});

test('labels() returns the same cell for the same values: an increment is one addition', () => {
  const r = new Registry();
  const c = r.counter({ name: 'skein_c_total', help: 'h', labelNames: ['a', 'b'] });
  assert.equal(c.labels('x', 'y'), c.labels('x', 'y'));
  assert.notEqual(c.labels('x', 'y'), c.labels('x\u0000y', ''));
  assert.deepEqual(c.labelNames, ['a', 'b']);
});

test('bad definitions and uses are SKEIN_E_BAD_METRIC errors naming the metric and what was wrong', async () => {
  const r = new Registry();
  const bad = (fn: () => unknown, message: RegExp) =>
    assert.throws(fn, (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_BAD_METRIC' && message.test(e.message), String(message));
  bad(() => r.counter({ name: 'skein_requests', help: 'h' }), /^metric "skein_requests": a counter's name ends with "_total"/);
  bad(() => r.gauge({ name: 'skein-bad', help: 'h' }), /^metric "skein-bad": a metric name is/);
  bad(() => r.gauge({ name: 'skein_g', help: 'h', labelNames: ['__x'] }), /label name "__x"/);
  bad(() => r.gauge({ name: 'skein_g', help: 'h', labelNames: ['a', 'a'] }), /label "a" is named twice/);
  bad(() => r.histogram({ name: 'skein_h', help: 'h', labelNames: ['le'], buckets: [1] }), /cannot have a label "le"/);
  bad(() => r.histogram({ name: 'skein_h', help: 'h', buckets: [1, 1] }), /strictly ascending, got \[1, 1\]/);
  const c = r.counter({ name: 'skein_ok_total', help: 'h', labelNames: ['a', 'b'] });
  bad(() => r.counter({ name: 'skein_ok_total', help: 'h' }), /^metric "skein_ok_total": registered twice/);
  bad(() => c.labels('x'), /^metric "skein_ok_total": expects 2 label values \(a, b\), got 1$/);
  bad(() => c.labels('x', 'y').inc(-1), /a counter only goes up: inc\(-1\)/);
  assert.equal((await r.getMetricsAsJSON()).length, 1, 'nothing registered by the refused definitions');
});

const fam = (over: Partial<Family> & Pick<Family, 'name' | 'samples'>): Family => ({ help: 'h', type: 'gauge', labelNames: ['k'], aggregator: 'sum', ...over });

test('aggregate: each family by its aggregator; series by labels (absent apart from "")', () => {
  const w1 = [
    fam({ name: 's', samples: [{ labels: ['a'], value: 1 }, { labels: [''], value: 10 }] }),
    fam({ name: 'f', aggregator: 'first', samples: [{ labels: ['a'], value: 5 }] }),
    fam({ name: 'mn', aggregator: 'min', samples: [{ labels: ['a'], value: 5 }] }),
    fam({ name: 'mx', aggregator: 'max', samples: [{ labels: ['a'], value: 5 }] }),
    fam({ name: 'av', aggregator: 'average', samples: [{ labels: ['a'], value: 5 }] }),
    fam({ name: 'h', type: 'histogram', buckets: [1], samples: [{ labels: ['a'], value: 0.5, counts: [1, 0] }] }),
  ];
  const w2 = [
    fam({ name: 's', samples: [{ labels: ['a'], value: 2 }, { labels: [null], value: 100 }] }),
    fam({ name: 'f', aggregator: 'first', samples: [{ labels: ['a'], value: 7 }] }),
    fam({ name: 'mn', aggregator: 'min', samples: [{ labels: ['a'], value: 3 }] }),
    fam({ name: 'mx', aggregator: 'max', samples: [{ labels: ['a'], value: 3 }] }),
    fam({ name: 'av', aggregator: 'average', samples: [{ labels: ['a'], value: 3 }] }),
    fam({ name: 'h', type: 'histogram', buckets: [1], samples: [{ labels: ['a'], value: 4, counts: new Float64Array([0, 2]) }] }),
  ];
  const sum = aggregate([w1, w2]);
  assert.deepEqual(sum.map((f) => f.name), ['s', 'f', 'mn', 'mx', 'av', 'h']);
  const values = (name: string) => sum.find((f) => f.name === name)?.samples.map((s) => [s.labels[0], s.value, s.counts === undefined ? null : Array.from(s.counts)]);
  assert.deepEqual(values('s'), [
    ['a', 3, null],
    ['', 10, null],
    [null, 100, null],
  ]);
  assert.deepEqual(values('f'), [['a', 5, null]]);
  assert.deepEqual(values('mn'), [['a', 3, null]]);
  assert.deepEqual(values('mx'), [['a', 5, null]]);
  assert.deepEqual(values('av'), [['a', 4, null]]);
  assert.deepEqual(values('h'), [['a', 4.5, [1, 2]]]);
  assert.equal(render(sum, 'prometheus').includes('h_count{k="a"} 3\n'), true);
  assert.throws(
    () => aggregate([[fam({ name: 'x', samples: [] })], [fam({ name: 'x', type: 'counter', samples: [] })]]),
    (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_BAD_METRIC' && /registries disagree on its type, labels or buckets/.test(e.message),
  );
});

test('exposition negotiates: OpenMetrics when Accept names it, else the text format', async () => {
  const r = new Registry();
  r.counter({ name: 'skein_n_total', help: 'h' }).inc();
  assert.deepEqual(await exposition(r, undefined), { contentType: PROMETHEUS_CONTENT_TYPE, text: '# HELP skein_n_total h\n# TYPE skein_n_total counter\nskein_n_total 1\n' });
  assert.equal((await exposition(r, 'text/plain;version=0.0.4;q=0.5,*/*;q=0.1')).contentType, 'text/plain; version=0.0.4; charset=utf-8');
  const om = await exposition(r, 'application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5');
  assert.equal(om.contentType, OPENMETRICS_CONTENT_TYPE);
  assert.equal(om.text, '# HELP skein_n h\n# TYPE skein_n counter\nskein_n_total 1\n# EOF\n');
});

test('the process metrics: the series docs/metrics.md lists, with their types, labels and units', async () => {
  const r = new Registry();
  processMetrics(r);
  const families = await r.getMetricsAsJSON();
  const byName = new Map(families.map((f) => [f.name, f]));
  const one = (name: string) => byName.get(name)?.samples[0]?.value;
  for (const [name, type] of [
    ['process_cpu_seconds_total', 'counter'],
    ['process_cpu_user_seconds_total', 'counter'],
    ['process_cpu_system_seconds_total', 'counter'],
    ['process_start_time_seconds', 'gauge'],
    ['process_resident_memory_bytes', 'gauge'],
    ['process_virtual_memory_bytes', 'gauge'],
    ['process_heap_bytes', 'gauge'],
    ['process_open_fds', 'gauge'],
    ['process_max_fds', 'gauge'],
    ['nodejs_eventloop_lag_seconds', 'gauge'],
    ['nodejs_eventloop_lag_p99_seconds', 'gauge'],
    ['nodejs_active_handles_total', 'gauge'],
    ['nodejs_heap_size_total_bytes', 'gauge'],
    ['nodejs_heap_space_size_total_bytes', 'gauge'],
    ['nodejs_gc_duration_seconds', 'histogram'],
    ['nodejs_version_info', 'gauge'],
  ] as const) {
    assert.equal(byName.get(name)?.type, type, name);
  }
  assert.equal(families.length, 31, 'the 31 families prom-client exposed, no more');
  const cpu = process.cpuUsage();
  const seconds = one('process_cpu_seconds_total')!;
  assert.ok(seconds > 0 && seconds <= (cpu.user + cpu.system) / 1e6, `process_cpu_seconds_total ${seconds} s`);
  const rss = one('process_resident_memory_bytes')!;
  assert.ok(Math.abs(rss - process.memoryUsage().rss) < 64 * 1024 * 1024, `RSS in bytes: ${rss}`);
  assert.equal(one('process_start_time_seconds'), Math.round(Date.now() / 1000 - process.uptime()));
  assert.ok(one('process_open_fds')! > 2 && one('process_open_fds')! < one('process_max_fds')!);
  assert.deepEqual(byName.get('nodejs_version_info')?.samples[0]?.labels, [process.version, ...process.version.slice(1).split('.')]);
  const spaces = byName.get('nodejs_heap_space_size_total_bytes')!;
  assert.deepEqual(spaces.labelNames, ['space']);
  assert.ok(spaces.samples.some((s) => s.labels[0] === 'new' && s.value > 0), 'the young generation, space="new"');
  assert.ok(spaces.samples.some((s) => s.labels[0] === 'old'));
  // Every family whose number is the whole process's is taken from one worker, not summed.
  for (const f of families) assert.equal(f.aggregator === 'first', f.name.startsWith('process_') || f.name === 'nodejs_version_info', f.name);
});

test('the process metrics observe GC pauses (nodejs_gc_duration_seconds fills as the heap is collected)', async () => {
  const r = new Registry();
  processMetrics(r);
  // Garbage until a collection shows a GC pause (the observer reports asynchronously).
  const deadline = Date.now() + 10_000;
  let keep: unknown[] = [];
  for (;;) {
    for (let i = 0; i < 10_000; i++) keep.push({ i, s: `x${i}` });
    keep = [];
    await new Promise<void>((resolve) => setImmediate(resolve));
    const gc = (await r.getMetricsAsJSON()).find((f) => f.name === 'nodejs_gc_duration_seconds');
    const count = gc?.samples.reduce((n, s) => n + Array.from(s.counts ?? []).reduce((a, b) => a + b, 0), 0) ?? 0;
    if (count > 0) break;
    assert.ok(Date.now() < deadline, 'no GC pause observed within 10 s of allocating');
  }
});
