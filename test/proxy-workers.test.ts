/**
 * `skein proxy --workers 2`: two worker threads on the same listeners (SO_REUSEPORT), one admin
 * server reporting their sum. Real processes on 127.0.0.1, ports from the OS: a control plane
 * (scraping every second), a node:http app, and the proxy in front of it (an inbound listener).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { api, skein, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { httpGet, metricValue, mintJoinToken, registerInstance, startProxy, waitForProxyReady, type ProxyProcess } from './proxy-helpers.js';

let cp: ControlProcess;
let app: http.Server;
let proxy: ProxyProcess;
let inboundPort: number;

before(async () => {
  app = http.createServer((req, res) => res.end(`ok ${req.url}`));
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
  cp = await startControl({ dataDir: 'none', args: ['--scrape-interval', '1s'] });
  const appPort = (app.address() as AddressInfo).port;
  await registerInstance(cp.http, 'web', 'web-1', appPort);
  proxy = await startProxy({ control: cp.http, workloads: [`name=web-1,service=web,inbound=127.0.0.1:0,app=127.0.0.1:${appPort}`], args: ['--workers', '2', '--id', 'workers-proxy'] });
  inboundPort = proxy.workload('web-1').inbound!.port;
  await waitForProxyReady(proxy);
});

after(async () => {
  await proxy?.stop();
  await cp?.stop();
  await new Promise<void>((r) => (app ? app.close(() => r()) : r()));
});

interface WorkerRow {
  worker: number;
  connectionsAccepted: number;
  connectionsOpen: number;
  requests: number;
}

async function workerRows(): Promise<WorkerRow[]> {
  const r = await api(proxy.admin, 'GET', '/debug/endpoints');
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.workers as WorkerRow[];
}

/** `connections` fresh connections (one keep-alive agent each, 8 at a time), `perConnection` requests on each: the statuses. */
async function load(connections: number, perConnection: number, path: (c: number, i: number) => string): Promise<number[]> {
  const statuses: number[] = [];
  let next = 0;
  const lane = async () => {
    while (next < connections) {
      const c = next++;
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      try {
        for (let i = 0; i < perConnection; i++) statuses.push((await httpGet(inboundPort, path(c, i), { agent, headers: { host: 'web' } })).status);
      } finally {
        agent.destroy();
      }
    }
  };
  await Promise.all(Array.from({ length: 8 }, lane));
  return statuses;
}

const webRequests = async () => metricValue(await (await fetch(`${proxy.admin}/metrics`)).text(), 'skein_proxy_requests_total', { service: 'web', direction: 'inbound' }) ?? 0;
const scrapes = async () => metricValue(await (await fetch(`${cp.http}/metrics`)).text(), 'skein_signals_scrapes_total', { result: 'ok' }) ?? 0;

describe('skein proxy --workers 2', () => {
  test('400 requests over 40 fresh connections: all 200, both workers took connections, /metrics and the golden signals count exactly 400', async () => {
    const before = await workerRows();
    assert.deepEqual(before.map((w) => w.worker), [0, 1], 'two workers reported');
    const metricsBefore = await webRequests();
    assert.equal(metricsBefore, 0, 'nothing sent before');
    // The scraper's first look at a proxy is its baseline: take it before the load.
    await waitFor(async () => (await scrapes()) >= 2, { what: 'the control plane scraped the proxy', timeoutMs: 20_000 });

    const statuses = await load(40, 10, (c, i) => `/load/${c}/${i}`);
    assert.equal(statuses.length, 400);
    assert.deepEqual([...new Set(statuses)], [200], 'every request answered 200');

    const rows = await workerRows();
    const accepted = rows.map((w, i) => w.connectionsAccepted - before[i]!.connectionsAccepted);
    const served = rows.map((w, i) => w.requests - before[i]!.requests);
    assert.equal(accepted[0]! + accepted[1]!, 40, `connections per worker: ${accepted.join(' / ')}`);
    assert.ok(accepted[0]! > 0 && accepted[1]! > 0, `both workers took connections: ${accepted.join(' / ')}`);
    assert.equal(served[0]! + served[1]!, 400, `requests per worker: ${served.join(' / ')}`);
    // Each connection's 10 requests go to the worker that accepted it.
    assert.deepEqual(served, accepted.map((n) => n * 10), 'each worker served its connections\' requests');

    assert.equal(await webRequests(), 400, '/metrics: skein_proxy_requests_total of the route sums both workers');
    const text = await (await fetch(`${proxy.admin}/metrics`)).text();
    assert.equal(metricValue(text, 'skein_proxy_request_duration_seconds_count', { service: 'web' }), 400, 'the histogram sums too');
    assert.equal(metricValue(text, 'skein_proxy_requests_total', { service: 'web', route: 'default', status: '200', class: 'success' }), 400);

    const stats = await api(proxy.admin, 'GET', '/stats');
    assert.equal(stats.body.proxy.id, 'workers-proxy', 'one proxy, one id');
    const series = (stats.body.series as Array<{ service: string; direction: string; requests: number; statuses: Record<string, number>; latency: { counts: number[] } }>).filter((s) => s.service === 'web' && s.direction === 'inbound');
    assert.equal(series.length, 1, 'the workers\' series are summed into one by key');
    assert.equal(series[0]!.requests, 400);
    assert.deepEqual(series[0]!.statuses, { '200': 400 });
    assert.equal(series[0]!.latency.counts.reduce((a, b) => a + b, 0), 400);

    // The control plane scrapes the summed /stats: its golden signals count exactly what was sent.
    const n = await scrapes();
    await waitFor(async () => (await scrapes()) >= n + 2, { what: 'two more scrape rounds', timeoutMs: 20_000 });
    const signals = await api(cp.http, 'GET', '/v1/signals/services/web?window=15m');
    assert.equal(signals.status, 200, JSON.stringify(signals.body));
    assert.equal(signals.body.requests, 400, `golden signals: ${JSON.stringify(signals.body).slice(0, 600)}`);
    assert.equal(signals.body.failures, 0);
  });

  test('a tap sees the requests every worker served', async () => {
    const ac = new AbortController();
    const res = await fetch(`${proxy.admin}/tap?service=web`, { signal: ac.signal });
    assert.equal(res.status, 200);
    const lines: Array<{ path: string; status: number; proxy: string }> = [];
    const reading = (async () => {
      const dec = new TextDecoder();
      let buf = '';
      try {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          buf += dec.decode(chunk, { stream: true });
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            lines.push(JSON.parse(buf.slice(0, nl)));
            buf = buf.slice(nl + 1);
          }
        }
      } catch {
        /* aborted */
      }
    })();
    // The tap's head came after it was posted to both workers; then 40 fresh connections, one request each.
    const before = await workerRows();
    const statuses = await load(40, 1, (c) => `/tap/${c}`);
    assert.deepEqual([...new Set(statuses)], [200]);
    const rows = await workerRows();
    const served = rows.map((w, i) => w.requests - before[i]!.requests);
    assert.ok(served[0]! > 0 && served[1]! > 0, `both workers served some of them: ${served.join(' / ')}`);
    await waitFor(() => lines.length >= 40, { what: `40 tap lines (got ${lines.length})` });
    ac.abort();
    await reading;
    const paths = lines.map((l) => l.path).sort();
    assert.deepEqual(paths, Array.from({ length: 40 }, (_, c) => `/tap/${c}`).sort(), 'every request once, whichever worker served it');
    assert.ok(lines.every((l) => l.status === 200 && l.proxy === 'workers-proxy'));
  });

  test('/ready, /picks and one announced proxy', async () => {
    assert.equal((await api(proxy.admin, 'GET', '/ready')).status, 200);
    const picks = await api(proxy.admin, 'GET', '/picks?service=web&id=web-1');
    assert.deepEqual(picks.body, { service: 'web', id: 'web-1', picks: true });
    const nope = await api(proxy.admin, 'GET', '/picks?service=web&id=web-9');
    assert.equal(nope.body.picks, false);
    const proxies = await api(cp.http, 'GET', '/v1/proxies');
    const ours = (proxies.body.proxies as Array<{ id: string }>).filter((p) => p.id === 'workers-proxy');
    assert.equal(ours.length, 1, JSON.stringify(proxies.body));
  });

  test('SIGTERM stops every worker: the process exits 0 and no port is left', async () => {
    const ports = [inboundPort, proxy.adminPort];
    const code = await proxy.stop('SIGTERM');
    assert.equal(code, 0, proxy.logs.slice(-10).join('\n'));
    for (const port of ports) {
      const err = await new Promise<string>((resolve) => {
        const s = connect(port, '127.0.0.1');
        s.once('connect', () => {
          s.destroy();
          resolve('connected');
        });
        s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      });
      assert.equal(err, 'ECONNREFUSED', `port ${port} after the stop`);
    }
  });
});

describe('--workers flag values', () => {
  for (const [value, extra] of [['0', []], ['x', []], ['65', []], ['2', ['--state-dir', '/tmp/skein-workers-state']]] as const) {
    test(`--workers ${value} ${extra.join(' ')}: refused naming the flag`, async () => {
      const r = await skein(['proxy', '--admin', 'off', '--control', 'http://127.0.0.1:9', '--workload', 'name=a,inbound=127.0.0.1:0,app=127.0.0.1:9', '--workers', value, ...extra], { timeoutMs: 15_000 });
      assert.equal(r.code, 2, `a usage error: ${r.stderr}`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, /--workers/);
      assert.match(lines[0]!, /SKEIN_E_USAGE/);
      if (extra.length === 0) assert.match(lines[0]!, new RegExp(`"auto" or a whole number from 1 to 64, got "${value}"`));
    });
  }
});

describe('--workers 2 with --mtls strict', () => {
  test('both proxies with two workers: every worker gets its certificate through its main thread (one join token each), requests cross mTLS on every worker', async () => {
    const dir = await tempDir('skein-workers-mtls-');
    const cleanups: Array<() => unknown> = [dir.remove];
    try {
      const ca = await startControl({ dataDir: join(dir.path, 'data'), args: ['--dns', 'off'] });
      cleanups.unshift(() => ca.stop());
      const echo = http.createServer((req, res) => res.end(JSON.stringify({ caller: req.headers['x-skein-caller'] ?? null })));
      await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
      cleanups.unshift(() => new Promise<void>((r) => echo.close(() => r())));
      const start = async (id: string, service: string, workload: string) => {
        const token = await mintJoinToken(ca.http, id, [service]);
        const p = await startProxy({ control: ca.http, workloads: [workload], args: ['--workers', '2', '--mtls', 'strict', '--join-token', token, '--id', id] });
        cleanups.unshift(() => p.stop());
        await waitForProxyReady(p);
        return p;
      };
      const b = await start('proxy-b', 'users', `name=users-1,service=users,inbound=127.0.0.1:0,app=127.0.0.1:${(echo.address() as AddressInfo).port}`);
      const a = await start('proxy-a', 'web', 'name=web-1,service=web,outbound=127.0.0.1:0');
      await registerInstance(ca.http, 'users', 'users-1', b.workload('users-1').inbound!.port, { labels: { 'skein.io/inbound-proxy': 'true' } });
      await waitFor(async () => {
        const rows = (await api(a.admin, 'GET', '/debug/endpoints')).body;
        return (rows?.services?.users?.endpoints?.length ?? 0) === 1;
      }, { what: 'proxy-a to know users' });
      const outPort = a.workload('web-1').outbound!.port;
      // 40 clients at once, each on its own connection: both of A's workers call, both of B's answer.
      const answers = await Promise.all(
        Array.from({ length: 40 }, () => httpGet(outPort, '/who', { agent: new http.Agent({ keepAlive: false }), headers: { host: 'users' } })),
      );
      assert.deepEqual([...new Set(answers.map((r) => r.status))], [200], answers.find((r) => r.status !== 200)?.body);
      assert.deepEqual([...new Set(answers.map((r) => JSON.parse(r.body).caller))], ['web'], 'the caller proven by its certificate');
      for (const p of [a, b]) {
        const rows = (await api(p.admin, 'GET', '/debug/endpoints')).body.workers as WorkerRow[];
        assert.ok(rows.every((w) => w.requests > 0), `${p.admin}: every worker served mTLS requests: ${JSON.stringify(rows.map((w) => w.requests))}`);
      }
      const text = await (await fetch(`${b.admin}/metrics`)).text();
      assert.equal(metricValue(text, 'skein_proxy_requests_total', { service: 'users', direction: 'inbound' }), 40);
      // A's workers pool their connections to B (a request that finds an idle one reuses it): every
      // connection B's workers accepted was mTLS, summed over them, and none was plaintext.
      const accepted = ((await api(b.admin, 'GET', '/debug/endpoints')).body.workers as WorkerRow[]).reduce((n, w) => n + w.connectionsAccepted, 0);
      assert.ok(accepted >= 2 && accepted <= 40, `B's workers accepted ${accepted} connections`);
      assert.equal(metricValue(text, 'skein_proxy_inbound_connections_total', { kind: 'mtls' }), accepted, 'every connection B accepted was mTLS, summed over its workers');
      assert.equal(metricValue(text, 'skein_proxy_inbound_connections_total', { kind: 'plaintext' }) ?? 0, 0);
      assert.ok((metricValue(text, 'skein_proxy_tls_refusals_total') ?? 0) === 0, 'no handshake refused');
    } finally {
      for (const c of cleanups) await Promise.resolve(c()).catch(() => {});
    }
  });
});
