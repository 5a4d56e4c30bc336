/**
 * Monitoring against real processes: a control plane, a proxy with an outbound listener (the
 * caller "client") and an inbound one in front of an app (instance web-1 of "web"). Checks what
 * the proxy counts (/stats, Prometheus text and OpenMetrics), that it announces itself to the
 * control plane (and to Prometheus through http_sd), and live taps, from the proxy and through
 * the control plane, with secrets redacted.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { adminTokenOf, api, startControl, waitFor, type ControlProcess } from './helpers.js';
import { Announcer } from '../src/telemetry/announce.js';
import type { WorkloadInfo } from '../src/proxy/proxy.js';
import { httpGet, registerInstance, startProxy, waitForProxyReady, metricValue, type ProxyProcess } from './proxy-helpers.js';

let cp: ControlProcess;
let proxy: ProxyProcess;
let app: Server;
let outPort: number;

/** The app: /fail answers 500, anything else echoes the request body after "ok:". */
function startApp(): Promise<Server> {
  const s = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = `ok:${Buffer.concat(chunks).toString()}`;
      res.writeHead(req.url?.startsWith('/fail') ? 500 : 200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), 'set-cookie': 'session=s3cr3t' });
      res.end(body);
    });
  });
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve(s)));
}

/** One request through the client's outbound listener to "web" (node:http: fetch cannot set Host). */
function call(method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: outPort, method, path, headers: { host: 'web', ...headers }, agent: false, timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', reject);
    req.end(body);
  });
}

/** Reads NDJSON lines from a streaming response until `n` lines came or the stream ended. */
async function readLines(res: Response, n: number, timeoutMs = 10_000): Promise<any[]> {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const dec = new TextDecoder();
  const out: any[] = [];
  let buf = '';
  const timer = setTimeout(() => void reader.cancel(), timeoutMs);
  try {
    while (out.length < n) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0 && out.length < n) {
        out.push(JSON.parse(buf.slice(0, nl)));
        buf = buf.slice(nl + 1);
      }
    }
  } finally {
    clearTimeout(timer);
    await reader.cancel().catch(() => undefined);
  }
  return out;
}

before(async () => {
  cp = await startControl({ dataDir: 'none', args: ['--scrape-interval', '1s'] });
  app = await startApp();
  const appPort = (app.address() as AddressInfo).port;
  proxy = await startProxy({
    control: cp.http,
    workloads: ['name=client,outbound=127.0.0.1:0', `name=web-1,service=web,inbound=127.0.0.1:0,app=127.0.0.1:${appPort}`],
    args: ['--id', 'monitoring-test-proxy'],
  });
  outPort = proxy.workload('client').outbound!.port;
  await registerInstance(cp.http, 'web', 'web-1', proxy.workload('web-1').inbound!.port);
  await waitForProxyReady(proxy);
  await waitFor(async () => (await call('GET', '/warm')).status === 200, { what: 'web reachable through the proxy' });
});

after(async () => {
  await proxy?.stop();
  await cp?.stop();
  await new Promise((r) => app?.close(r));
});

describe('the proxy announces itself', () => {
  test('GET /v1/proxies lists it with its admin address and workloads', async () => {
    const listed = await waitFor(async () => {
      const r = await api(cp.http, 'GET', '/v1/proxies');
      return (r.body.proxies as any[]).find((p) => p.id === 'monitoring-test-proxy');
    }, { what: 'the proxy in /v1/proxies' });
    assert.equal(listed.admin, `127.0.0.1:${proxy.adminPort}`);
    assert.deepEqual(listed.workloads.map((w: any) => `${w.name}/${w.service}`).sort(), ['client/client', 'web-1/web']);
    assert.ok(Date.parse(listed.lastSeen) > Date.now() - 60_000);
  });

  test('a workload added or removed is announced within a second or so, not at the next renewal', async () => {
    const ws: WorkloadInfo[] = [{ name: 'a', service: 'a', inbound: null, outbound: '127.0.0.1:1', app: null, pin: null }];
    const announcer = new Announcer({ controlUrl: cp.http, id: 'changing-proxy', admin: '127.0.0.1:2', workloads: () => ws, everyMs: 60_000, token: await adminTokenOf(cp.http) });
    const names = async () => ((await api(cp.http, 'GET', '/v1/proxies')).body.proxies as any[]).find((p) => p.id === 'changing-proxy')?.workloads.map((w: any) => w.name).join(',');
    try {
      announcer.start();
      await waitFor(async () => (await names()) === 'a', { what: 'the first announcement' });
      ws.push({ name: 'b', service: 'b', inbound: '127.0.0.1:3', outbound: null, app: '127.0.0.1:4', pin: null });
      await waitFor(async () => (await names()) === 'a,b', { what: 'the added workload announced (the renewal is 60 s away)', timeoutMs: 3000 });
      ws.shift();
      await waitFor(async () => (await names()) === 'b', { what: 'the removed workload announced', timeoutMs: 3000 });
    } finally {
      await announcer.stop();
    }
    assert.equal(await names(), undefined, 'stop() took it off the list');
  });

  test('GET /picks says whether the proxy still routes to an endpoint (what a drain waits on); bad queries name the parameter', async () => {
    assert.deepEqual((await api(proxy.admin, 'GET', '/picks?service=web&id=web-1')).body, { service: 'web', id: 'web-1', picks: true });
    assert.deepEqual((await api(proxy.admin, 'GET', '/picks?service=web&id=web-9')).body, { service: 'web', id: 'web-9', picks: false });
    for (const [q, field, message] of [
      ['service=web', 'id', 'id must be an instance id (1 to 256 characters)'],
      ['id=web-1&service=Web', 'service', 'service must be a service name'],
      ['service=web&id=web-1&x=1', undefined, 'unknown query parameter "x" (allowed: service, id)'],
    ] as const) {
      const r = await api(proxy.admin, 'GET', `/picks?${q}`);
      assert.deepEqual([r.status, r.body.code, r.body.field, r.body.message], [400, 'SKEIN_E_BAD_QUERY', field, message], q);
    }
  });

  test('GET /v1/prometheus/targets is Prometheus http_sd: the control plane and every proxy', async () => {
    const r = await api(cp.http, 'GET', '/v1/prometheus/targets');
    assert.equal(r.status, 200);
    const groups = r.body as Array<{ targets: string[]; labels: Record<string, string> }>;
    assert.deepEqual(groups.find((g) => g.labels.job === 'skein-control')?.targets, [`127.0.0.1:${cp.httpPort}`]);
    const mine = groups.find((g) => g.labels.skein_proxy === 'monitoring-test-proxy');
    assert.deepEqual(mine, { targets: [`127.0.0.1:${proxy.adminPort}`], labels: { job: 'skein-proxy', skein_proxy: 'monitoring-test-proxy' } });
  });

  test('bad announcements are refused with the field named, and nothing is stored', async () => {
    const bad = await api(cp.http, 'PUT', '/v1/proxies/p-1', { admin: 'not-an-address', workloads: [] });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.field, 'admin');
    const bad2 = await api(cp.http, 'PUT', '/v1/proxies/p-1', { admin: '127.0.0.1:1', workloads: [{ name: 'Bad Name', service: 'x' }] });
    assert.equal(bad2.body.field, 'workloads[0].name');
    const badId = await api(cp.http, 'PUT', '/v1/proxies/-x', { admin: '127.0.0.1:1' });
    assert.equal(badId.body.field, 'id');
    const list = await api(cp.http, 'GET', '/v1/proxies');
    assert.equal((list.body.proxies as any[]).some((p) => p.id === 'p-1' || p.id === '-x'), false);
  });
});

describe('what the proxy counts', () => {
  test('/stats: one series per listener crossed, with statuses, class, latency and bytes', async () => {
    const series = async () => {
      const r = await api(proxy.admin, 'GET', '/stats');
      assert.equal(r.status, 200);
      return r.body as { series: any[]; bounds: number[]; proxy: { id: string } };
    };
    const find = (s: any[], direction: string, route = 'default') => s.find((x) => x.direction === direction && x.service === 'web' && x.instance === 'web-1' && x.route === route && x.source === 'client');
    const s0 = await series();
    const before = { out: find(s0.series, 'outbound'), in: find(s0.series, 'inbound') };
    const base = (x: any) => x ?? { requests: 0, failures: 0, statuses: {}, requestBytes: 0, responseBytes: 0, latency: { counts: [] } };
    const b = { out: base(before.out), in: base(before.in) };

    for (let i = 0; i < 3; i++) assert.equal((await call('POST', `/echo?token=${i}`, 'hello')).status, 200);
    for (let i = 0; i < 2; i++) assert.equal((await call('GET', '/fail')).status, 500);

    const s1 = await series();
    assert.equal(s1.proxy.id, 'monitoring-test-proxy');
    for (const dir of ['outbound', 'inbound'] as const) {
      const now = find(s1.series, dir);
      assert.ok(now, `no ${dir} series for client -> web/web-1: ${JSON.stringify(s1.series)}`);
      const was = b[dir === 'outbound' ? 'out' : 'in'];
      assert.equal(now.workload, dir === 'outbound' ? 'client' : 'web-1');
      assert.equal(now.requests - was.requests, 5, dir);
      assert.equal(now.failures - was.failures, 2, `${dir}: the two 500s are failures`);
      assert.equal((now.statuses['200'] ?? 0) - (was.statuses['200'] ?? 0), 3);
      assert.equal((now.statuses['500'] ?? 0) - (was.statuses['500'] ?? 0), 2);
      assert.equal(now.requestBytes - was.requestBytes, 15, `${dir}: three bodies of 5 bytes`);
      // "ok:hello" x3 and "ok:" x2 (the app's bodies, whatever the framing).
      assert.equal(now.responseBytes - was.responseBytes, 3 * 8 + 2 * 3, dir);
      assert.equal(now.latency.counts.length, s1.bounds.length + 1);
      const counted = now.latency.counts.reduce((a: number, c: number) => a + c, 0);
      assert.equal(counted, now.requests, `${dir}: every request is in one latency bucket`);
      assert.ok(now.latency.sum > 0);
    }
  });

  test('Prometheus text by default; OpenMetrics when asked, without renaming the counters for later scrapes', async () => {
    const om = await fetch(`${proxy.admin}/metrics`, { headers: { accept: 'application/openmetrics-text; version=1.0.0' } });
    assert.match(om.headers.get('content-type') ?? '', /^application\/openmetrics-text/);
    const omText = await om.text();
    assert.ok(omText.endsWith('# EOF\n'), 'OpenMetrics ends with # EOF');
    assert.match(omText, /^# TYPE skein_proxy_requests counter$/m);
    assert.match(omText, /^skein_proxy_requests_total\{direction="outbound",workload="client",source="client",service="web",route="default",status="500",class="failure"\} \d+$/m);
    const prom = await fetch(`${proxy.admin}/metrics`);
    assert.match(prom.headers.get('content-type') ?? '', /^text\/plain/);
    const text = await prom.text();
    assert.match(text, /^# TYPE skein_proxy_requests_total counter$/m);
    assert.match(text, /^# TYPE skein_proxy_retries_total counter$/m);
    assert.ok((metricValue(text, 'skein_proxy_request_bytes_total', { direction: 'inbound', workload: 'web-1', source: 'client' }) ?? 0) >= 15);
    // The control plane negotiates the same way.
    const cpOm = await fetch(`${cp.http}/metrics`, { headers: { accept: 'application/openmetrics-text' } });
    assert.ok((await cpOm.text()).endsWith('# EOF\n'));
    const cpText = await (await fetch(`${cp.http}/metrics`)).text();
    assert.match(cpText, /^skein_proxies_known 1$/m);
    assert.match(cpText, /^# TYPE skein_watch_overflows_total counter$/m);
  });

  test('latency is recorded in seconds: 300 ms injected by a route land in the (0.25, 0.5] bucket, the app\'s own time below', async () => {
    // A route of web that delays every request 300 ms in the caller's proxy (its outbound side).
    const put = await api(cp.http, 'PUT', '/v1/services/web', { routes: [{ name: 'slow', match: { pathPrefix: '/slow' }, fault: { delay: { duration: '300ms', percent: 100 } } }] });
    assert.ok(put.status === 200 || put.status === 201, JSON.stringify(put.body));
    try {
      await waitFor(async () => {
        const t0 = Date.now();
        return (await call('GET', '/slow/warm')).status === 200 && Date.now() - t0 >= 300;
      }, { what: 'the delay of route "slow" to reach the proxy' });
      const out = { direction: 'outbound', workload: 'client', service: 'web', route: 'slow' };
      const inb = { direction: 'inbound', workload: 'web-1', service: 'web' };
      const read = async () => {
        const text = await (await fetch(`${proxy.admin}/metrics`)).text();
        const h = (labels: Record<string, string>) => ({
          le025: metricValue(text, 'skein_proxy_request_duration_seconds_bucket', { ...labels, le: '0.25' }) ?? 0,
          le05: metricValue(text, 'skein_proxy_request_duration_seconds_bucket', { ...labels, le: '0.5' }) ?? 0,
          sum: metricValue(text, 'skein_proxy_request_duration_seconds_sum', labels) ?? 0,
          count: metricValue(text, 'skein_proxy_request_duration_seconds_count', labels) ?? 0,
        });
        return { out: h(out), in: h(inb) };
      };
      const before = await read();
      const N = 4;
      for (let i = 0; i < N; i++) assert.equal((await call('GET', `/slow/${i}`)).status, 200);
      const after = await read();
      const d = (side: 'out' | 'in', k: 'le025' | 'le05' | 'sum' | 'count') => after[side][k] - before[side][k];
      assert.equal(d('out', 'count'), N, 'outbound: the N delayed requests');
      assert.equal(d('out', 'le025'), 0, 'outbound: none at or under 0.25 s');
      assert.equal(d('out', 'le05'), N, 'outbound: all in (0.25, 0.5]');
      const mean = d('out', 'sum') / N;
      assert.ok(mean >= 0.3 && mean < 0.5, `outbound: sum/count ${mean} s, about the 0.3 s injected`);
      // The inbound side (web-1's proxy) never saw the delay: the app answers at once.
      assert.equal(d('in', 'count'), N, 'inbound: the same N requests');
      assert.equal(d('in', 'le025'), N, 'inbound: all at or under 0.25 s');
      assert.ok(d('in', 'sum') / N < 0.25, `inbound: sum/count ${d('in', 'sum') / N} s`);
    } finally {
      const reset = await api(cp.http, 'PUT', '/v1/services/web', {});
      assert.equal(reset.status, 200, JSON.stringify(reset.body));
    }
  });

  test('rate-limited requests are counted by direction, service and route', async () => {
    const put = await api(cp.http, 'PUT', '/v1/services/web', { rateLimit: { outbound: { requestsPerSecond: 1, burst: 1 } } });
    assert.ok(put.status === 200 || put.status === 201, JSON.stringify(put.body));
    try {
      const statuses = await waitFor(async () => {
        const got: number[] = [];
        for (let i = 0; i < 3; i++) got.push((await call('GET', '/limited')).status);
        return got.includes(429) ? got : undefined;
      }, { what: 'the rate limit to reach the proxy' });
      const refused = (statuses ?? []).filter((s) => s === 429).length;
      const text = await (await fetch(`${proxy.admin}/metrics`)).text();
      assert.ok((metricValue(text, 'skein_proxy_rate_limited_total', { direction: 'outbound', service: 'web', route: 'default' }) ?? 0) >= refused);
      // A refusal is the proxy's own answer: the failure class, with no instance.
      assert.ok((metricValue(text, 'skein_proxy_requests_total', { direction: 'outbound', service: 'web', status: '429', class: 'failure' }) ?? 0) >= refused);
    } finally {
      const reset = await api(cp.http, 'PUT', '/v1/services/web', {});
      assert.ok(reset.status === 200 || reset.status === 201);
      await waitFor(async () => (await call('GET', '/unlimited')).status === 200 && (await call('GET', '/unlimited')).status === 200, { what: 'the rate limit to be lifted' });
    }
  });
});

describe('skein tap', () => {
  test('the proxy tap shows finished requests; headers and bodies only when asked, secrets redacted', async () => {
    const full = await fetch(`${proxy.admin}/tap?service=web&headers=1&bodies=1`);
    const plain = await fetch(`${proxy.admin}/tap?service=web`);
    assert.equal(full.status, 200);
    const fullLines = readLines(full, 2);
    const plainLines = readLines(plain, 2);
    // Taps subscribe when their response starts: keep sending until both have seen two requests.
    let sent = 0;
    const sender = (async () => {
      while (sent < 50) {
        sent++;
        await call('POST', '/tapped?secret=q', 'body-bytes', { authorization: 'Bearer top-secret', cookie: 'id=cookie-secret', 'x-visible': 'yes' });
        if ((await Promise.race([fullLines.then(() => true), new Promise((r) => setTimeout(r, 50, false))])) === true) break;
      }
    })();
    const [f, p] = await Promise.all([fullLines, plainLines]);
    await sender;
    assert.equal(f.length, 2);
    const outbound = f.find((l) => l.direction === 'outbound');
    const inbound = f.find((l) => l.direction === 'inbound');
    assert.ok(outbound && inbound, `one line per listener crossed: ${JSON.stringify(f)}`);
    for (const l of [outbound, inbound]) {
      assert.equal(l.method, 'POST');
      assert.equal(l.path, '/tapped', 'the query string is never shown');
      assert.equal(l.status, 200);
      assert.equal(l.destination, 'web');
      assert.equal(l.source, 'client');
      assert.equal(l.instance, 'web-1');
      assert.equal(l.proxy, 'monitoring-test-proxy');
      assert.equal(typeof l.latencyMs, 'number');
      assert.equal(l.requestHeaders.authorization, '[redacted]');
      assert.equal(l.requestHeaders.cookie, '[redacted]');
      assert.equal(l.requestHeaders['x-visible'], 'yes');
      assert.equal(l.responseHeaders['set-cookie'], '[redacted]');
      assert.equal(l.requestBody, 'body-bytes');
      assert.equal(l.responseBody, 'ok:body-bytes');
    }
    assert.doesNotMatch(JSON.stringify(f), /top-secret|cookie-secret|s3cr3t/);
    assert.equal(p.length, 2);
    for (const l of p) {
      assert.equal(l.requestHeaders, undefined, 'headers only when asked for');
      assert.equal(l.requestBody, undefined, 'bodies only when asked for');
    }
  });

  test('the control plane relays taps from its proxies, and ends the stream at the limit', async () => {
    const res = await fetch(`${cp.http}/v1/tap?service=web&limit=2`);
    assert.equal(res.status, 200);
    const lines = readLines(res, 3);
    let done = false;
    void lines.then(() => (done = true));
    for (let i = 0; i < 50 && !done; i++) {
      await call('GET', `/relayed/${i}`);
      await Promise.race([lines, new Promise((r) => setTimeout(r, 50))]);
    }
    const got = await lines;
    assert.equal(got.length, 2, 'the stream ends after limit lines');
    assert.ok(got.every((l) => l.destination === 'web' && l.path.startsWith('/relayed/') && l.requestHeaders === undefined));
  });

  test('bad tap requests: unknown service 404, bad parameters 400, before any stream', async () => {
    const unknown = await api(cp.http, 'GET', '/v1/tap?service=no-such-service');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.code, 'SKEIN_E_UNKNOWN_SERVICE');
    const noService = await api(cp.http, 'GET', '/v1/tap');
    assert.equal(noService.status, 400);
    assert.equal(noService.body.field, 'service');
    const badLimit = await api(cp.http, 'GET', '/v1/tap?service=web&limit=0');
    assert.equal(badLimit.body.field, 'limit');
    const badParam = await api(cp.http, 'GET', '/v1/tap?service=web&verbose=1');
    assert.equal(badParam.body.field, 'verbose');
    const proxyBad = await api(proxy.admin, 'GET', '/tap?service=web&headers=maybe');
    assert.equal(proxyBad.status, 400);
    assert.equal(proxyBad.body.field, 'headers');
  });
});

describe('golden signals: the control plane scrapes the proxy', () => {
  /**
   * web's numbers over 15 minutes (longer than this file runs, so they only grow): the service,
   * the client -> web edge, its route "golden" (which only the test below uses) inbound, and the
   * requests its 5-minute chart shows.
   */
  const web = async () => {
    const one = (await api(cp.http, 'GET', '/v1/signals/services/web?window=15m')).body;
    const chart = (await api(cp.http, 'GET', '/v1/signals/series?service=web&window=5m')).body;
    return {
      service: one,
      edge: (one.edges as any[]).find((e) => e.source === 'client' && e.destination === 'web')?.requests ?? 0,
      route: (one.routes as any[]).find((r) => r.route === 'golden' && r.direction === 'inbound') ?? { requests: 0, failures: 0, successRate: null },
      chart: (chart.points as any[]).reduce((n, p) => n + (p.rps * chart.stepMs) / 1000, 0),
      stepMs: chart.stepMs,
    };
  };
  const scrapes = async () => metricValue(await (await fetch(`${cp.http}/metrics`)).text(), 'skein_signals_scrapes_total', { result: 'ok' }) ?? 0;
  /** web's numbers once two more scrape rounds have run: everything sent before is in. */
  const settled = async () => {
    const n = await scrapes();
    await waitFor(async () => (await scrapes()) >= n + 2, { what: 'two more scrape rounds', timeoutMs: 15_000 });
    return web();
  };

  test('requests, failures and latency per service, instance, edge, route and chart, from real traffic', async () => {
    // A route of its own (by a header) holds exactly this test's requests: its numbers are known.
    const golden = { 'x-golden': '1' };
    const put = await api(cp.http, 'PUT', '/v1/services/web', { routes: [{ name: 'golden', match: { headers: golden } }] });
    assert.ok(put.status === 200 || put.status === 201, JSON.stringify(put.body));
    await waitFor(async () => {
      const r = await api(proxy.admin, 'GET', '/debug/endpoints');
      return (r.body?.services?.web?.traffic?.policy?.routes ?? []).some((x: any) => x.name === 'golden');
    }, { what: 'route "golden" in the proxy' });
    const before = await settled();
    for (let i = 0; i < 20; i++) assert.equal((await call('GET', `/ok/${i}`, undefined, golden)).status, 200);
    for (let i = 0; i < 5; i++) assert.equal((await call('GET', `/fail/${i}`, undefined, golden)).status, 500);
    await waitFor(async () => (await web()).service.requests >= before.service.requests + 25, { what: 'the 25 requests in /v1/signals', timeoutMs: 15_000 });
    const after = await settled();
    const s = after.service;
    assert.equal(s.requests - before.service.requests, 25, 'each request counted once on the service (its inbound side)');
    assert.equal(s.failures - before.service.failures, 5);
    assert.equal(after.edge - before.edge, 25, 'the client -> web edge, as the caller saw it');
    assert.deepEqual([before.route.requests, after.route.requests, after.route.failures], [0, 25, 5], 'route "golden", inbound: exactly these requests');
    assert.equal(after.route.successRate, 0.8, 'route "golden": 20 of 25 succeeded');
    assert.equal(s.successRate, (s.requests - s.failures) / s.requests, 'the service: its successes over its requests');
    assert.equal(after.stepMs, 1000, 'one point per scrape (--scrape-interval 1s)');
    assert.equal(Math.round(after.chart - before.chart), 25, 'the chart has the 25 requests, in its points');
    assert.ok(s.latencyMs.p50 > 0 && s.latencyMs.p50 <= s.latencyMs.p95 && s.latencyMs.p95 <= s.latencyMs.p99);
    const inst = s.instances.find((i: any) => i.id === 'web-1');
    assert.equal(inst.status, 'healthy');
    assert.equal(inst.address, `127.0.0.1:${proxy.workload('web-1').inbound!.port}`);
    assert.equal(inst.requests, s.requests, 'one instance served them all');
    assert.equal((await api(cp.http, 'PUT', '/v1/services/web', {})).status, 200);
  });

  test('unknown windows and services are errors, not empty answers', async () => {
    const badWindow = await api(cp.http, 'GET', '/v1/signals?window=2m');
    assert.equal(badWindow.status, 400);
    assert.equal(badWindow.body.code, 'SKEIN_E_BAD_QUERY');
    assert.equal(badWindow.body.field, 'window');
    const unknown = await api(cp.http, 'GET', '/v1/signals/services/nosuch');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.code, 'SKEIN_E_UNKNOWN_SERVICE');
    const unknownSeries = await api(cp.http, 'GET', '/v1/signals/series?service=nosuch');
    assert.equal(unknownSeries.status, 404);
  });
});

describe('--metrics off', () => {
  test('keeps no per-request series, and the proxy still forwards', async () => {
    const appPort = (app.address() as AddressInfo).port;
    const quiet = await startProxy({ control: cp.http, workloads: [`name=web-2,service=web,inbound=127.0.0.1:0,app=127.0.0.1:${appPort}`], args: ['--metrics', 'off', '--id', 'quiet-proxy'] });
    try {
      const port = quiet.workload('web-2').inbound!.port;
      const r = await httpGet(port, '/direct', { headers: { host: 'web' } });
      assert.equal(r.status, 200);
      const stats = await api(quiet.admin, 'GET', '/stats');
      assert.deepEqual(stats.body.series, []);
      const text = await (await fetch(`${quiet.admin}/metrics`)).text();
      assert.equal(metricValue(text, 'skein_proxy_requests_total'), undefined);
      assert.match(text, /^skein_proxy_connections_open\{workload="web-2",direction="inbound"\} \d+$/m, 'the other metrics stay');
    } finally {
      await quiet.stop();
    }
  });
});
