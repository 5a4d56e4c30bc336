/**
 * Skein with the real Prometheus (Debian's /usr/bin/prometheus; scripts/setup.sh installs it):
 * the demo shop runs under `skein up`; `skein prometheus-config` writes the scrape configuration
 * (checked by promtool); Prometheus discovers the proxy and the control plane through the
 * control plane's http_sd endpoint and scrapes them every second. A steady, known request rate
 * sent through the frontend must come back out of PromQL as that rate. Then the Grafana dashboard
 * (docs/grafana/skein-dashboard.json): a dashboard Grafana can import, every PromQL expression in
 * it runs in this Prometheus and shows data where its metrics have series, and every metric and
 * label it names is one the proxy or the control plane really exposes and docs/metrics.md
 * documents.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parse as parseYaml } from 'yaml';
import { ROOT, api, closedPort, run, skein, tempDir, waitFor } from './helpers.js';
import { SHOP_PAGE as PAGE, Pacer, startShop, type UpProcess } from './mesh-helpers.js';
import { checkTargets, prometheusConfig, promDuration } from '../src/cli/prometheus-config.js';

const PROMETHEUS = '/usr/bin/prometheus';
const PROMTOOL = '/usr/bin/promtool';
const DASHBOARD = join(ROOT, 'docs', 'grafana', 'skein-dashboard.json');

/** The metric names and labels docs/metrics.md documents: the dashboard may use these only. */
const METRICS_DOC = join(ROOT, 'docs', 'metrics.md');
/** Labels Prometheus itself puts on every series it scrapes from the targets of `skein prometheus-config`. */
const TARGET_LABELS = ['job', 'instance', 'skein_proxy'];
const HISTOGRAMS = new Set(['skein_proxy_request_duration_seconds', 'skein_api_request_duration_seconds']);

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

interface PromProcess {
  base: string;
  logs: string[];
  stop(): Promise<void>;
}

async function startPrometheus(configFile: string, dataDir: string): Promise<PromProcess> {
  const port = await closedPort();
  const child: ChildProcess = spawn(
    PROMETHEUS,
    [`--config.file=${configFile}`, `--storage.tsdb.path=${dataDir}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const logs: string[] = [];
  for (const s of [child.stdout, child.stderr]) createInterface({ input: s as NodeJS.ReadableStream }).on('line', (l) => logs.push(l));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const base = `http://127.0.0.1:${port}`;
  const p: PromProcess = {
    base,
    logs,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM'); // by its pid: only this Prometheus
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
    },
  };
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`prometheus exited with ${child.exitCode}: ${logs.join('\n')}`);
        return (await fetch(`${base}/-/ready`)).status === 200;
      },
      { timeoutMs: 30_000, intervalMs: 100, what: 'Prometheus to be ready' },
    );
  } catch (e) {
    await p.stop();
    throw e;
  }
  return p;
}

/** GET /api/v1/query; throws with Prometheus's error for a bad query. */
async function promQuery(base: string, query: string, time?: number): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> {
  const params = new URLSearchParams({ query });
  if (time !== undefined) params.set('time', String(time));
  const r = await fetch(`${base}/api/v1/query?${params}`);
  const body = (await r.json()) as { status: string; error?: string; errorType?: string; data?: { resultType: string; result: any } };
  if (body.status !== 'success') throw new Error(`${body.errorType}: ${body.error} in\n${query}`);
  const d = body.data as { resultType: string; result: any };
  if (d.resultType === 'scalar') return [{ metric: {}, value: d.result }];
  return d.result;
}

/** Every PromQL expression of a Grafana dashboard, with the panel it belongs to and its legend. */
function dashboardExprs(dash: any): Array<{ panel: string; expr: string; legend: string }> {
  const out: Array<{ panel: string; expr: string; legend: string }> = [];
  for (const p of allPanels(dash)) {
    for (const t of p.targets ?? []) if (typeof t.expr === 'string') out.push({ panel: p.title, expr: t.expr, legend: typeof t.legendFormat === 'string' ? t.legendFormat : '' });
  }
  return out;
}

/** Every panel of a dashboard, the panels of collapsed rows included. */
function allPanels(dash: any): any[] {
  const out: any[] = [];
  const walk = (panels: any[] | undefined) => {
    for (const p of panels ?? []) {
      out.push(p);
      walk(p.panels);
    }
  };
  walk(dash.panels);
  return out;
}

/** The metrics docs/metrics.md lists, with the label names of each (from its tables). */
function documentedMetrics(markdown: string): Map<string, Set<string>> {
  // The labels of the per-request series ("all of the above", "as the histogram").
  const requestLabels = new Set<string>();
  const labelTable = markdown.indexOf('| label | values |');
  assert.ok(labelTable >= 0, 'docs/metrics.md has the table of request labels');
  for (const line of markdown.slice(labelTable).split('\n').slice(2)) {
    const m = /^\| `([a-z_]+)` \|/.exec(line);
    if (m === null) break;
    requestLabels.add(m[1] as string);
  }
  const out = new Map<string, Set<string>>();
  for (const m of markdown.matchAll(/^\| `([a-z_:][a-z0-9_:]*)` \| (counter|gauge|histogram) \|([^|]*)\|/gm)) {
    const labels = m[3] as string;
    const named = [...labels.replace(/\([^)]*\)/g, '').matchAll(/`([a-z_]+)`/g)].map((x) => x[1] as string);
    out.set(m[1] as string, /\ball\b|as the histogram/.test(labels) ? new Set(requestLabels) : new Set(named));
  }
  return out;
}

/** The label names an expression matches on (per metric) and the ones it groups or matches by. */
function labelsUsed(expr: string): { matchers: Array<{ metric: string; label: string }>; grouping: string[] } {
  const matchers: Array<{ metric: string; label: string }> = [];
  for (const m of expr.matchAll(/\b(skein_[a-z0-9_]+)\s*\{([^}]*)\}/g)) {
    for (const l of (m[2] as string).matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"/g)) matchers.push({ metric: m[1] as string, label: l[1] as string });
  }
  const grouping: string[] = [];
  for (const m of expr.matchAll(/\b(?:by|without|on|ignoring)\s*\(([^)]*)\)/g)) {
    for (const l of (m[1] as string).split(',')) if (l.trim() !== '') grouping.push(l.trim());
  }
  return { matchers, grouping };
}

/** Grafana's template variables as Grafana would fill them for "All" at a 1 s scrape interval. */
function substitute(expr: string, rateInterval = '10s'): string {
  return expr
    .replaceAll('$__rate_interval', rateInterval)
    .replaceAll('${__rate_interval}', rateInterval)
    .replaceAll('$__interval', '2s')
    .replaceAll('$__range', '5m')
    .replaceAll('${service}', '.*')
    .replaceAll('$service', '.*');
}

/** The metric families an expression names (histogram series folded into their family). */
function metricFamilies(expr: string): string[] {
  const names = new Set<string>();
  for (const m of expr.matchAll(/\b(skein_[a-z0-9_]+)\b/g)) {
    const name = m[1] as string;
    const family = name.replace(/_(bucket|count|sum)$/, '');
    names.add(HISTOGRAMS.has(family) ? family : name);
  }
  return [...names];
}

// ---------------------------------------------------------------------------------------------
// The configuration on its own
// ---------------------------------------------------------------------------------------------

describe('skein prometheus-config output', () => {
  test('http_sd at the control plane, the interval given, a comment on how to use it', () => {
    const text = prometheusConfig({ control: 'http://127.0.0.1:7400', intervalMs: 15_000 });
    assert.match(text, /^# Prometheus scrape configuration for a Skein mesh/);
    assert.match(text, /prometheus --config\.file=prometheus\.yml/);
    const cfg = parseYaml(text);
    assert.equal(cfg.global.scrape_interval, '15s');
    assert.equal(cfg.scrape_configs.length, 1);
    const job = cfg.scrape_configs[0];
    assert.equal(job.scrape_interval, '15s');
    assert.deepEqual(job.http_sd_configs, [{ url: 'http://127.0.0.1:7400/v1/prometheus/targets', refresh_interval: '15s' }]);
    assert.equal(job.file_sd_configs, undefined);
  });

  test('--file-sd: file_sd_configs reading the file instead', () => {
    const cfg = parseYaml(prometheusConfig({ control: 'http://127.0.0.1:7400', intervalMs: 1000, fileSd: '/tmp/x/targets.json' }));
    const job = cfg.scrape_configs[0];
    assert.equal(job.http_sd_configs, undefined);
    assert.deepEqual(job.file_sd_configs, [{ files: ['/tmp/x/targets.json'], refresh_interval: '5s' }]);
    assert.equal(job.scrape_interval, '1s');
    assert.equal(job.scrape_timeout, '1s');
  });

  test('durations as Prometheus writes them; target groups checked', () => {
    assert.deepEqual([promDuration(1000), promDuration(90_000), promDuration(60_000), promDuration(1500)], ['1s', '90s', '1m', '1500ms']);
    assert.deepEqual(checkTargets([{ targets: ['127.0.0.1:1'], labels: { job: 'x' } }, { targets: [] }]), [{ targets: ['127.0.0.1:1'], labels: { job: 'x' } }, { targets: [] }]);
    assert.throws(() => checkTargets({ targets: [] }), /not a list of target groups/);
    assert.throws(() => checkTargets([{ targets: [1] }]), /targets/);
  });

  test('bad flags: a usage error, exit 2', async () => {
    const r = await skein(['prometheus-config', '--interval', '500ms']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--interval must be at least 1s.*\[SKEIN_E_USAGE\]/);
    const fraction = await skein(['prometheus-config', '--interval', '1500ms']);
    assert.equal(fraction.code, 2, fraction.stderr);
    assert.match(fraction.stderr, /--interval must be whole seconds, got 1500ms \[SKEIN_E_USAGE\]/);
    const malformed = await skein(['prometheus-config', '--interval', 'often']);
    assert.equal(malformed.code, 2, malformed.stderr);
    assert.match(malformed.stderr, /--interval must be a duration/);
    // Without --file-sd the control plane is not asked: the configuration names it for Prometheus.
    const offline = await skein(['prometheus-config', '-c', 'http://prometheus-can-reach.example:7400']);
    assert.equal(offline.code, 0, offline.stderr);
    assert.equal(parseYaml(offline.stdout).scrape_configs[0].http_sd_configs[0].url, 'http://prometheus-can-reach.example:7400/v1/prometheus/targets');
    const nowhere = await skein(['prometheus-config', '--file-sd', '/tmp/never-written.json', '-c', `127.0.0.1:${await closedPort()}`]);
    assert.equal(nowhere.code, 1);
    assert.match(nowhere.stderr, /\[SKEIN_E_CONTROL_UNREACHABLE\]/);
  });
});

// ---------------------------------------------------------------------------------------------
// With the real Prometheus
// ---------------------------------------------------------------------------------------------

describe('the real Prometheus scraping the demo shop', () => {
  let mesh: (UpProcess & { frontendPort: number }) | undefined;
  let prom: PromProcess | undefined;
  let dir: { path: string; remove: () => Promise<void> } | undefined;
  /** The evaluation time (Unix seconds) inside the steady load of the rate test, for the dashboard's queries. */
  let loadAt: number | undefined;

  before(async () => {
    // Not installed is a failure, never a silent skip.
    for (const bin of [PROMETHEUS, PROMTOOL]) {
      if (!existsSync(bin)) throw new Error(`${bin} is not installed: run scripts/setup.sh (it installs Debian's prometheus package, which ships prometheus and promtool)`);
    }
    dir = await tempDir('skein-prometheus-');
    mesh = await startShop({ outbound: false });
    // The configuration exactly as a user makes it, with a 1 s scrape interval.
    const cfg = await skein(['prometheus-config', '-c', mesh.control, '--interval', '1s']);
    assert.equal(cfg.code, 0, cfg.stderr);
    const file = join(dir.path, 'prometheus.yml');
    await writeFile(file, cfg.stdout);
    const check = await run(PROMTOOL, ['check', 'config', file]);
    assert.equal(check.code, 0, `promtool check config:\n${check.stdout}${check.stderr}\n${cfg.stdout}`);
    prom = await startPrometheus(file, join(dir.path, 'tsdb'));
  });

  after(async () => {
    await prom?.stop();
    await mesh?.stop();
    await dir?.remove();
  });

  test('discovers every proxy and the control plane through http_sd, and every target is up', async (t) => {
    const proxies = (await api(mesh!.control, 'GET', '/v1/proxies')).body.proxies as Array<{ id: string; admin: string }>;
    assert.ok(proxies.length >= 1, 'skein up runs a proxy');
    type Target = { labels: Record<string, string>; health: string; scrapeUrl: string; lastError: string };
    const targets = (await waitFor(
      async () => {
        const r = await api(prom!.base, 'GET', '/api/v1/targets?state=active');
        const active = (r.body?.data?.activeTargets ?? []) as Target[];
        return active.length === proxies.length + 1 && active.every((x) => x.health === 'up') ? active : null;
      },
      { timeoutMs: 30_000, intervalMs: 250, what: `Prometheus to scrape ${proxies.length} proxy target(s) and the control plane, all up (logs: ${prom!.logs.join('\n')})` },
    )) as Target[];
    t.diagnostic(targets.map((x) => `${x.labels['job']} ${x.scrapeUrl} ${x.health}`).join('; '));
    for (const p of proxies) {
      const target = targets.find((x) => x.labels['skein_proxy'] === p.id);
      assert.ok(target, `proxy ${p.id} is a target`);
      assert.equal(target.labels['job'], 'skein-proxy');
      assert.equal(target.scrapeUrl, `http://${p.admin}/metrics`);
    }
    const control = targets.find((x) => x.labels['job'] === 'skein-control');
    assert.equal(control?.scrapeUrl, `${mesh!.control}/metrics`, 'the control plane is a target');
    // And Prometheus's own view agrees: up == 1 for each.
    const up = await promQuery(prom!.base, 'up{job=~"skein-.*"}');
    assert.equal(up.length, proxies.length + 1, JSON.stringify(up));
    assert.ok(up.every((s) => s.value[1] === '1'), JSON.stringify(up));
  });

  test('a steady 20 requests/s through the frontend reads back as ~20/s in PromQL', async (t) => {
    // 15 s of paced load; the rates are taken over the 10 s from 4 s to 14 s after the start.
    const RATE = 20;
    const load = new Pacer(mesh!.frontendPort, PAGE, RATE);
    await waitFor(() => Date.now() - load.startedAt >= 15_000, { timeoutMs: 20_000, intervalMs: 100, what: '15 s of load' });
    await load.stop();
    assert.ok(load.ok >= load.sent * 0.99, `the shop answered: ${load.ok}/${load.sent}`);
    const at = (load.startedAt + 14_000) / 1000;
    // What was really sent in that window (the pacer can fall behind on a busy machine, then catches up).
    const sent = load.times.filter((ms) => ms > (at - 10) * 1000 && ms <= at * 1000).length / 10;
    assert.ok(sent > RATE * 0.5, `the pacer sent ${sent} req/s in the window`);
    // Prometheus scrapes every second: wait until every target has a sample past the evaluation time.
    await waitFor(async () => Number((await promQuery(prom!.base, 'min(timestamp(up{job=~"skein-.*"}))'))[0]?.value[1]) > at + 1, {
      timeoutMs: 15_000,
      intervalMs: 250,
      what: 'Prometheus to scrape past the evaluation time',
    });
    loadAt = at;
    const rate = async (selector: string) => {
      const r = await promQuery(prom!.base, `sum(rate(skein_proxy_requests_total{${selector}}[10s]))`, at);
      assert.equal(r.length, 1, `${selector}: ${JSON.stringify(r)}`);
      return Number(r[0]!.value[1]);
    };
    // Every request sent is counted once: over the 10 s window PromQL may differ from what was sent
    // by the requests that straddle its two edges (sent before an edge, counted as they end after
    // it), one or two of the 200, not by a share of them.
    const within = (what: string, v: number) => {
      t.diagnostic(`${what}: ${v.toFixed(2)} req/s (sent ${sent.toFixed(2)} req/s)`);
      assert.ok(Math.abs(v - sent) * 10 <= 2.5, `${what}: PromQL says ${v} req/s, ${(Math.abs(v - sent) * 10).toFixed(1)} requests off the ${sent} req/s sent over 10 s`);
    };
    // Through the frontend's service port (an outbound listener of the proxy) ...
    within('outbound to frontend', await rate('direction="outbound",service="frontend"'));
    // ... into the frontend's instance (its inbound listener; the control plane's health checks come without a caller) ...
    within('inbound at frontend', await rate('direction="inbound",service="frontend",source!="unknown"'));
    // ... and each page is one call to each of the two services it calls.
    for (const callee of ['user-service', 'product-service']) within(`frontend -> ${callee}`, await rate(`direction="outbound",source="frontend",service="${callee}"`));
    // No failures, and a latency.
    const failures = await promQuery(prom!.base, 'sum(rate(skein_proxy_requests_total{class="failure"}[10s])) or vector(0)', at);
    assert.equal(Number(failures[0]?.value[1]), 0, JSON.stringify(failures));
    const p99 = await promQuery(prom!.base, 'histogram_quantile(0.99, sum by (le) (rate(skein_proxy_request_duration_seconds_bucket{direction="inbound",service="frontend"}[10s])))', at);
    const seconds = Number(p99[0]?.value[1]);
    t.diagnostic(`frontend p99 (inbound, PromQL): ${(seconds * 1000).toFixed(1)} ms`);
    // In seconds, and the size of a page of the demo (a few ms; 1000 times that if recorded in ms).
    assert.ok(seconds > 0 && seconds < 0.25, `the frontend's p99 is under 250 ms: ${JSON.stringify(p99)}`);
  });

  test('the Grafana dashboard: valid, every expression runs, and names only metrics and labels that exist', async (t) => {
    const dash = JSON.parse(await readFile(DASHBOARD, 'utf8'));
    // The shape Grafana imports.
    assert.equal(typeof dash.title, 'string');
    assert.match(dash.uid, /^[a-zA-Z0-9_-]{1,40}$/);
    assert.ok(dash.schemaVersion >= 36, 'a current Grafana schema');
    assert.ok(
      dash.templating.list.some((v: any) => v.type === 'datasource' && v.query === 'prometheus' && v.name === 'datasource'),
      'a Prometheus datasource variable',
    );
    const panels = allPanels(dash);
    const ids = panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, `panel ids are unique: ${ids.join(',')}`);
    for (const p of panels) {
      assert.ok(['row', 'stat', 'timeseries', 'gauge', 'table', 'bargauge', 'text'].includes(p.type), `panel "${p.title}": type ${p.type}`);
      const g = p.gridPos;
      assert.ok(g && [g.h, g.w, g.x, g.y].every(Number.isInteger) && g.x + g.w <= 24, `panel "${p.title}": gridPos ${JSON.stringify(g)}`);
      if (p.type === 'row') continue;
      assert.equal(p.datasource?.uid, '${datasource}', `panel "${p.title}" uses the datasource variable`);
      const refIds = (p.targets ?? []).map((x: any) => x.refId);
      assert.ok(refIds.length > 0 && new Set(refIds).size === refIds.length, `panel "${p.title}": targets with distinct refIds`);
    }

    const at = loadAt ?? Date.now() / 1000;
    const documented = documentedMetrics(await readFile(METRICS_DOC, 'utf8'));
    // Live metric families of the proxies and the control plane.
    const proxies = (await api(mesh!.control, 'GET', '/v1/proxies')).body.proxies as Array<{ admin: string }>;
    const texts = await Promise.all([...proxies.map((p) => `http://${p.admin}/metrics`), `${mesh!.control}/metrics`].map(async (u) => (await fetch(u)).text()));
    const live = new Set<string>();
    for (const text of texts) for (const m of text.matchAll(/^# TYPE (\S+) /gm)) live.add(m[1] as string);
    // The label names of each family's series as Prometheus stores them (null: no series yet,
    // such as retries in a mesh that never retried; then the documented labels are the reference).
    const stored = new Map<string, Set<string> | null>();
    const labelsOf = async (family: string): Promise<Set<string>> => {
      if (!stored.has(family)) {
        const params = new URLSearchParams({ 'match[]': `{__name__=~"${family}(_bucket|_count|_sum)?"}`, start: String(at - 600), end: String(Date.now() / 1000) });
        const r = await api(prom!.base, 'GET', `/api/v1/series?${params}`);
        assert.equal(r.body?.status, 'success', JSON.stringify(r.body));
        const series = r.body.data as Array<Record<string, string>>;
        stored.set(family, series.length === 0 ? null : new Set(series.flatMap((x) => Object.keys(x)).filter((k) => k !== '__name__')));
      }
      return stored.get(family) ?? new Set([...(documented.get(family) ?? []), ...TARGET_LABELS]);
    };

    const exprs = dashboardExprs(dash);
    assert.ok(exprs.length >= 20, `the dashboard has its panels: ${exprs.length} expressions`);
    let withData = 0;
    for (const { panel, expr, legend } of exprs) {
      const families = metricFamilies(expr);
      assert.ok(families.length > 0, `panel "${panel}" queries a Skein metric: ${expr}`);
      for (const name of families) {
        assert.ok(documented.has(name), `panel "${panel}" uses ${name}, which docs/metrics.md does not document`);
        assert.ok(live.has(name), `panel "${panel}" uses ${name}, which neither the proxy nor the control plane exposes`);
      }
      const { matchers, grouping } = labelsUsed(expr);
      for (const { metric, label } of matchers) {
        const family = metric.replace(/_(bucket|count|sum)$/, '');
        const known = await labelsOf(HISTOGRAMS.has(family) ? family : metric);
        assert.ok(known.has(label), `panel "${panel}": ${metric} has no label "${label}" (it has ${[...known].join(', ')})`);
      }
      const anyLabels = new Set<string>();
      for (const f of families) for (const l of await labelsOf(f)) anyLabels.add(l);
      for (const label of grouping) assert.ok(anyLabels.has(label), `panel "${panel}" groups by "${label}", a label none of ${families.join(', ')} has (they have ${[...anyLabels].join(', ')})`);
      // Runs in Prometheus (an error names the panel) ...
      const result = await promQuery(prom!.base, substitute(expr), at).catch((e: Error) => assert.fail(`panel "${panel}": ${e.message}`));
      // ... gives series wherever its metrics have them ...
      const allStored = (await Promise.all(families.map(async (f) => (await labelsOf(f), stored.get(f) !== null)))).every(Boolean);
      if (allStored) assert.ok(result.length > 0, `panel "${panel}" shows nothing although its metrics have series: ${substitute(expr)}`);
      if (result.length > 0) withData++;
      // ... and the labels its legend shows are on those series.
      for (const m of legend.matchAll(/\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}/g)) {
        for (const s of result) assert.ok(m[1] as string in s.metric, `panel "${panel}": legend {{${m[1]}}} but the series has ${JSON.stringify(s.metric)}`);
      }
    }
    t.diagnostic(`${exprs.length} expressions over ${new Set(exprs.flatMap((e) => metricFamilies(e.expr))).size} metrics ran; ${withData} gave series`);

    // The template variable's query finds the shop's services, and the panels show them.
    const serviceVar = dash.templating.list.find((v: any) => v.name === 'service');
    assert.equal(serviceVar?.definition, 'label_values(skein_proxy_requests_total, service)');
    const values = await api(prom!.base, 'GET', `/api/v1/label/service/values?${new URLSearchParams({ 'match[]': 'skein_proxy_requests_total' })}`);
    for (const s of ['frontend', 'user-service', 'product-service']) assert.ok(values.body.data.includes(s), JSON.stringify(values.body));
    const byPanel = (title: string) => {
      const e = exprs.find((x) => x.panel === title);
      assert.ok(e, `a "${title}" panel`);
      return e.expr;
    };
    const rate = await promQuery(prom!.base, substitute(byPanel('Request rate by service')), at);
    for (const s of ['frontend', 'user-service', 'product-service']) {
      assert.ok(rate.some((x) => x.metric['service'] === s && Number(x.value[1]) > 0), `${s} in "Request rate by service": ${JSON.stringify(rate)}`);
    }
    // The per-instance panel shows the replicas (the workloads of the inbound listeners), not the proxy's scrape address.
    // Every replica has its series; within a 10 s window peak-EWMA may send a service's requests
    // to the faster of two replicas only (with two, both are always the candidates), so the rates
    // are checked per service, not per replica.
    const perInstance = await promQuery(prom!.base, substitute(byPanel('Request rate by instance')), at);
    const instances = new Set(perInstance.map((x) => x.metric['workload']));
    for (const id of ['frontend-1', 'user-service-1', 'user-service-2', 'product-service-1', 'product-service-2']) {
      assert.ok(instances.has(id), `${id} in "Request rate by instance": ${JSON.stringify(perInstance)}`);
    }
    for (const svc of ['frontend', 'user-service', 'product-service']) {
      const sum = perInstance.filter((x) => x.metric['service'] === svc).reduce((n, x) => n + Number(x.value[1]), 0);
      assert.ok(Math.abs(sum - 20) <= 2.5, `${svc}'s replicas together serve the 20 requests/s sent: ${sum} in "Request rate by instance": ${JSON.stringify(perInstance)}`);
    }
    const edges = await promQuery(prom!.base, substitute(byPanel('Request rate by edge')), at);
    for (const callee of ['user-service', 'product-service']) {
      assert.ok(edges.some((x) => x.metric['source'] === 'frontend' && x.metric['service'] === callee && Number(x.value[1]) > 0), `frontend -> ${callee} in "Request rate by edge": ${JSON.stringify(edges)}`);
    }
  });

  test('--file-sd: the targets written as file_sd JSON, and a config promtool accepts', async () => {
    const file = join(dir!.path, 'skein-targets.json');
    const r = await skein(['prometheus-config', '--file-sd', file, '-c', mesh!.control, '--interval', '1s']);
    assert.equal(r.code, 0, r.stderr);
    // The control plane, the mesh's proxy and frontend-sdk's SDK (it announces its metrics as a proxy does).
    assert.match(r.stderr, /^wrote 3 target\(s\) to /);
    const groups = JSON.parse(await readFile(file, 'utf8')) as Array<{ targets: string[]; labels: Record<string, string> }>;
    assert.ok(groups.some((g) => g.labels.job === 'skein-control' && g.targets[0] === mesh!.control.replace('http://', '')), JSON.stringify(groups));
    assert.equal(groups.filter((g) => g.labels.job === 'skein-proxy').reduce((n, g) => n + g.targets.length, 0), 2, JSON.stringify(groups));
    const cfg = parseYaml(r.stdout);
    assert.deepEqual(cfg.scrape_configs[0].file_sd_configs[0].files, [file]);
    const cfgFile = join(dir!.path, 'file-sd.yml');
    await writeFile(cfgFile, r.stdout);
    const check = await run(PROMTOOL, ['check', 'config', cfgFile]);
    assert.equal(check.code, 0, `${check.stdout}${check.stderr}`);
  });
});
