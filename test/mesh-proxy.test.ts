/**
 * Two proxies and a control plane, all as child processes (`skein control`, `skein proxy`):
 *
 * - a request crosses two proxies, the caller's outbound listener (proxy A) and the callee's
 *   inbound listener (proxy B), as in the mesh: the app sees both hops in x-forwarded-for, one
 *   x-request-id, and both proxies count the request (A as outbound, B as inbound);
 * - the control plane restarts (SIGTERM, then a new one on the same port and data dir) under a
 *   steady load: the proxy keeps serving from its last state while it is down, says so in
 *   `skein_proxy_control_connected`, reconnects, and routes to an instance registered after the
 *   restart. Not one request fails.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { join } from 'node:path';
import { INBOUND_PROXY_LABEL } from '../src/api/names.js';
import { api, closedPort, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { Load, registerInstance, startProxy, waitForProxyReady, type ProxyProcess } from './proxy-helpers.js';

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

interface Seen {
  method: string;
  url: string;
  /** Lower-cased name -> every value, in order (repeated fields stay apart). */
  fields: Map<string, string[]>;
  body: string;
}

interface App {
  port: number;
  seen: Seen[];
  close(): Promise<void>;
}

/**
 * A node:http app answering every request 200 with JSON {app, method, url}, `x-served-by: <name>`
 * and the x-request-id it received echoed back; it records what it received.
 */
async function startApp(name: string): Promise<App> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const fields = new Map<string, string[]>();
      for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
        const k = (req.rawHeaders[i] as string).toLowerCase();
        fields.set(k, [...(fields.get(k) ?? []), req.rawHeaders[i + 1] as string]);
      }
      seen.push({ method: req.method ?? '', url: req.url ?? '', fields, body: Buffer.concat(chunks).toString('utf8') });
      const body = JSON.stringify({ app: name, method: req.method, url: req.url });
      const rid = fields.get('x-request-id');
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
        'x-served-by': name,
        ...(rid === undefined ? {} : { 'x-request-id': rid.join(', ') }),
      });
      res.end(body);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as { port: number }).port,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** Lower-cased name -> every value, in order. */
  fields: Map<string, string[]>;
  body: string;
}

/** One request to 127.0.0.1:port over node:http (`agent`: keep-alive pool, or a new connection). */
function request(port: number, opts: { method?: string; path?: string; headers?: Record<string, string>; body?: string; agent?: http.Agent }): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, method: opts.method ?? 'GET', path: opts.path ?? '/', headers: opts.headers ?? {}, agent: opts.agent ?? false, timeout: 10_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const fields = new Map<string, string[]>();
          for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
            const k = (res.rawHeaders[i] as string).toLowerCase();
            fields.set(k, [...(fields.get(k) ?? []), res.rawHeaders[i + 1] as string]);
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, fields, body: Buffer.concat(chunks).toString('utf8') });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', reject);
    req.end(opts.body);
  });
}

/**
 * The sum of the samples of `name` in Prometheus text whose labels include all of `labels`
 * (any order); 0 when none matches.
 */
function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || !line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map<string, string>();
    for (const p of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) have.set(p[1] as string, p[2] as string);
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) sum += Number(m[3]);
  }
  return sum;
}

async function metricsOf(p: ProxyProcess): Promise<string> {
  const r = await api(p.admin, 'GET', '/metrics');
  assert.equal(r.status, 200, `GET ${p.admin}/metrics: ${r.status}`);
  return r.body as string;
}

/** The endpoint ids proxy `p` routes to for `service` (its /debug/endpoints). */
async function endpointIds(p: ProxyProcess, service: string): Promise<string[]> {
  const r = await api(p.admin, 'GET', '/debug/endpoints');
  const s = (r.body?.services ?? {})[service] as { endpoints: Array<{ id: string }> } | undefined;
  return (s?.endpoints ?? []).map((e) => e.id).sort();
}


const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// ---------------------------------------------------------------------------------------------
// A request crossing two proxies
// ---------------------------------------------------------------------------------------------

describe('a request crossing two proxies: A outbound -> B inbound -> app', () => {
  const cleanups: Array<() => unknown> = [];
  let app: App;
  let A: ProxyProcess;
  let B: ProxyProcess;
  let aOut: number; // A's outbound port
  const aLabels = { workload: 'client', direction: 'outbound', service: 'api' };
  const bLabels = { workload: 'api-1', direction: 'inbound', service: 'api' };

  before(async () => {
    const dir = await tempDir('skein-mesh-proxy-');
    cleanups.push(dir.remove);
    const cp = await startControl({ dataDir: join(dir.path, 'data'), args: ['--dns', 'off'] });
    cleanups.push(() => cp.stop());
    app = await startApp('api-app');
    cleanups.push(() => app.close());
    B = await startProxy({ control: cp.http, workloads: [`name=api-1,service=api,inbound=127.0.0.1:0,app=127.0.0.1:${app.port}`] });
    cleanups.push(() => B.stop());
    const bIn = B.workload('api-1').inbound;
    assert.ok(bIn && bIn.port > 0, `B reported its inbound address: ${JSON.stringify(B.workloads)}`);
    await registerInstance(cp.http, 'api', 'api-1', bIn.port);
    A = await startProxy({ control: cp.http, workloads: ['name=client,outbound=127.0.0.1:0'] });
    cleanups.push(() => A.stop());
    const out = A.workload('client').outbound;
    assert.ok(out && out.port > 0, `A reported its outbound address: ${JSON.stringify(A.workloads)}`);
    aOut = out.port;
    await waitForProxyReady(A);
    await waitFor(async () => (await endpointIds(A, 'api')).join() === 'api-1', { timeoutMs: 10_000, what: 'proxy A to know api-1' });
  });

  after(async () => {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
  });

  test('Host: api reaches the app; x-forwarded-for has both hops; one x-request-id, the one the client gets back', async () => {
    app.seen.length = 0;
    const r = await request(aOut, { path: '/hello?x=1', headers: { host: 'api' } });
    assert.equal(r.status, 200, `${r.status} ${r.body}`);
    assert.deepEqual(JSON.parse(r.body), { app: 'api-app', method: 'GET', url: '/hello?x=1' });
    assert.equal(app.seen.length, 1, 'the app got the request once');
    const s = app.seen[0] as Seen;
    assert.deepEqual(s.fields.get('host'), ['api'], 'the Host the client sent');
    assert.deepEqual(s.fields.get('x-forwarded-for'), ['127.0.0.1, 127.0.0.1'], 'A appends the client, B appends A: one field with two hops');
    assert.deepEqual(s.fields.get('x-forwarded-proto'), ['http']);
    const rids = s.fields.get('x-request-id') ?? [];
    assert.equal(rids.length, 1, `the app sees exactly one x-request-id: ${JSON.stringify(rids)}`);
    const rid = rids[0] as string;
    assert.match(rid, UUID, 'A made it (a UUID); B kept it');
    assert.deepEqual(r.fields.get('x-request-id'), [rid], 'the client gets back exactly that one (echoed by the app, not duplicated by a proxy)');
    assert.deepEqual(r.fields.get('x-served-by'), ['api-app']);
  });

  test('a client x-request-id and x-forwarded-for are kept and extended, not replaced', async () => {
    app.seen.length = 0;
    const r = await request(aOut, { headers: { host: 'api.service.skein', 'x-request-id': 'req-abc-123', 'x-forwarded-for': '203.0.113.7' } });
    assert.equal(r.status, 200, `${r.status} ${r.body}`);
    const s = app.seen[0] as Seen;
    assert.deepEqual(s.fields.get('x-request-id'), ['req-abc-123']);
    assert.deepEqual(s.fields.get('x-forwarded-for'), ['203.0.113.7, 127.0.0.1, 127.0.0.1']);
    assert.deepEqual(r.fields.get('x-request-id'), ['req-abc-123']);
  });

  test('a POST body crosses both proxies intact, as an HTTP proxy request (absolute form) too', async () => {
    app.seen.length = 0;
    const body = JSON.stringify({ hello: 'mesh', n: [1, 2, 3] });
    const r = await request(aOut, { method: 'POST', path: 'http://api/items', headers: { host: 'api', 'content-type': 'application/json' }, body });
    assert.equal(r.status, 200, `${r.status} ${r.body}`);
    const s = app.seen[0] as Seen;
    assert.equal(s.method, 'POST');
    assert.equal(s.url, '/items', 'origin form upstream');
    assert.equal(s.body, body);
  });

  test('both proxies count every request: A as outbound, B as inbound', async () => {
    /** A's outbound and B's inbound latency histograms of api: observations, and their sum in seconds. */
    const latency = async () => {
      const [aText, bText] = [await metricsOf(A), await metricsOf(B)];
      const h = (text: string, labels: Record<string, string>) => ({ count: metric(text, 'skein_proxy_request_duration_seconds_count', labels), sum: metric(text, 'skein_proxy_request_duration_seconds_sum', labels) });
      return { a: h(aText, aLabels), b: h(bText, bLabels) };
    };
    const lat0 = await latency();
    const before = { a: metric(await metricsOf(A), 'skein_proxy_requests_total', { ...aLabels, status: '200' }), b: metric(await metricsOf(B), 'skein_proxy_requests_total', { ...bLabels, status: '200' }) };
    const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
    const N = 25;
    try {
      const replies = await Promise.all(Array.from({ length: N }, (_, i) => request(aOut, { path: `/count/${i}`, headers: { host: 'api' }, agent })));
      assert.deepEqual(
        replies.map((r) => r.status),
        Array.from({ length: N }, () => 200),
      );
    } finally {
      agent.destroy();
    }
    // The metrics are recorded as the response ends: poll until they add up.
    const counted = async () => ({
      a: metric(await metricsOf(A), 'skein_proxy_requests_total', { ...aLabels, status: '200' }) - before.a,
      b: metric(await metricsOf(B), 'skein_proxy_requests_total', { ...bLabels, status: '200' }) - before.b,
    });
    let last = { a: 0, b: 0 };
    await waitFor(
      async () => {
        last = await counted();
        return last.a >= N && last.b >= N;
      },
      { timeoutMs: 5_000, what: 'both proxies to count the requests' },
    ).catch(() => undefined);
    assert.deepEqual(last, { a: N, b: N }, 'each proxy counted each request exactly once');
    const lat1 = await latency();
    assert.deepEqual([lat1.a.count - lat0.a.count, lat1.b.count - lat0.b.count], [N, N], 'the latency of each request observed once by each proxy');
    // In seconds: a local app answers in well under 0.25 s (1000 times that if it were recorded in
    // ms); and A's time holds B's (the hop from A to B includes all of B's work).
    const [aSum, bSum] = [lat1.a.sum - lat0.a.sum, lat1.b.sum - lat0.b.sum];
    assert.ok(bSum > 0 && bSum / N < 0.25, `B: mean ${bSum / N} s per request`);
    assert.ok(aSum >= bSum && aSum / N < 0.25, `A: mean ${aSum / N} s per request, B: ${bSum / N} s`);
    const aText = await metricsOf(A);
    const bText = await metricsOf(B);
    assert.equal(metric(aText, 'skein_proxy_requests_total', { direction: 'inbound' }), 0, 'A has no inbound listener: no inbound requests');
    assert.equal(metric(bText, 'skein_proxy_requests_total', { direction: 'outbound' }), 0, 'B has no outbound listener: no outbound requests');
  });
});

// ---------------------------------------------------------------------------------------------
// Control-plane restart under load
// ---------------------------------------------------------------------------------------------

describe('control-plane restart under a steady load through proxy A', () => {
  const cleanups: Array<() => unknown> = [];
  let dataDir: string;
  let cp1: ControlProcess;
  let A: ProxyProcess;
  let aOut: number;
  let web1: App;
  let web2: App;
  let load: Load | null = null;

  before(async () => {
    const dir = await tempDir('skein-cp-restart-');
    cleanups.push(dir.remove);
    dataDir = join(dir.path, 'data');
    cp1 = await startControl({ dataDir, args: ['--dns', 'off'] });
    cleanups.push(() => cp1.stop());
    web1 = await startApp('web-1');
    cleanups.push(() => web1.close());
    web2 = await startApp('web-2');
    cleanups.push(() => web2.close());
    await registerInstance(cp1.http, 'web', 'web-1', web1.port);
    A = await startProxy({ control: cp1.http, workloads: ['name=client,outbound=127.0.0.1:0'] });
    cleanups.push(() => A.stop());
    aOut = (A.workload('client').outbound as { port: number }).port;
    await waitForProxyReady(A);
    await waitFor(async () => (await endpointIds(A, 'web')).join() === 'web-1', { timeoutMs: 10_000, what: 'proxy A to know web-1' });
  });

  after(async () => {
    await load?.stop();
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
  });

  test('stop the control plane, serve from the last state, restart it on the same port and data dir, reconnect, route to a new instance; no request fails', async () => {
    const connected = async () => metric(await metricsOf(A), 'skein_proxy_control_connected');
    assert.equal(await connected(), 1, 'A watches the control plane');
    const l = new Load(aOut, '/load', 8, (_b, r) => String(r.headers['x-served-by']), { host: 'web' });
    load = l;
    await l.more(200);
    assert.deepEqual(l.failures.map((f) => f.what), [], l.report());

    // Down.
    const code = await cp1.stop('SIGTERM');
    assert.equal(code, 0, `skein control exits 0 on SIGTERM:\n${cp1.logs.slice(-10).join('\n')}`);
    await assert.rejects(fetch(`${cp1.http}/v1/health`), 'the control plane is gone');
    await waitFor(async () => (await connected()) === 0, { timeoutMs: 10_000, what: 'skein_proxy_control_connected to drop to 0' });
    const downAt = l.servedBy.get('web-1') ?? 0;
    await l.more(300);
    assert.ok((l.servedBy.get('web-1') ?? 0) >= downAt + 300, `A served from its last state while the control plane was down: ${l.report()}`);
    assert.equal(await connected(), 0, 'still down');
    const dbg = await api(A.admin, 'GET', '/debug/endpoints');
    assert.equal(dbg.body?.control?.connected, false, `/debug/endpoints says the control plane is away: ${JSON.stringify(dbg.body?.control)}`);
    const revisionBefore = Number(dbg.body?.control?.revision);

    // Up again: same port, same data dir.
    const cp2 = await startControl({ dataDir, args: ['--dns', 'off', '--http', `127.0.0.1:${cp1.httpPort}`] });
    cleanups.push(() => cp2.stop());
    assert.equal(cp2.httpPort, cp1.httpPort, 'the new control plane listens on the old port');
    const kept = await api(cp2.http, 'GET', '/v1/services/web/instances');
    assert.deepEqual(
      (kept.body?.instances ?? []).map((i: { id: string; status: string; port: number }) => [i.id, i.status, i.port]),
      [['web-1', 'healthy', web1.port]],
      `the registration survived the restart (embedded store): ${JSON.stringify(kept.body)}`,
    );
    await waitFor(async () => (await connected()) === 1, { timeoutMs: 20_000, what: `skein_proxy_control_connected back to 1; proxy logs:\n${A.logs.slice(-10).join('\n')}` });

    // The watch resumed: an instance registered now becomes reachable through A.
    const reg = await registerInstance(cp2.http, 'web', 'web-2', web2.port);
    await waitFor(async () => (await endpointIds(A, 'web')).join() === 'web-1,web-2', { timeoutMs: 10_000, what: 'proxy A to learn web-2 from the new control plane' });
    const dbg2 = await api(A.admin, 'GET', '/debug/endpoints');
    assert.equal(dbg2.body?.control?.connected, true);
    assert.ok(Number(dbg2.body?.control?.revision) >= Number(reg.revision), `A's revision (${dbg2.body?.control?.revision}) reached the registration's (${reg.revision}); before: ${revisionBefore}`);
    await waitFor(() => (l.servedBy.get('web-2') ?? 0) > 0, { timeoutMs: 10_000, what: `web-2 to serve requests of the load: ${l.report()}` });
    await l.more(200);
    await l.stop();
    load = null;
    assert.deepEqual(l.failures.map((f) => f.what), [], `no request failed over the whole restart: ${l.report()}`);
    assert.ok((l.servedBy.get('web-2') ?? 0) > 0 && (l.servedBy.get('web-1') ?? 0) > 0, l.report());
  });
});

describe('a replica whose app is gone behind its inbound listener', () => {
  const cleanups: Array<() => unknown> = [];
  let A: ProxyProcess;
  let aOut: number;

  before(async () => {
    const dir = await tempDir('skein-mesh-proxy-');
    cleanups.push(dir.remove);
    const cp = await startControl({ dataDir: join(dir.path, 'data'), args: ['--dns', 'off'] });
    cleanups.push(() => cp.stop());
    const app = await startApp('alive-app');
    cleanups.push(() => app.close());
    // Round robin, so that every other request is sent to the dead replica first.
    const def = await api(cp.http, 'PUT', '/v1/services/api', { balancer: { kind: 'round-robin' } });
    assert.ok(def.status === 200 || def.status === 201, JSON.stringify(def.body));
    // B fronts a crashed app (a port nobody listens on); C fronts a live one.
    const B = await startProxy({ control: cp.http, workloads: [`name=api-1,service=api,inbound=127.0.0.1:0,app=127.0.0.1:${await closedPort()}`] });
    cleanups.push(() => B.stop());
    const C = await startProxy({ control: cp.http, workloads: [`name=api-2,service=api,inbound=127.0.0.1:0,app=127.0.0.1:${app.port}`] });
    cleanups.push(() => C.stop());
    // Registered as inbound listeners (as `skein up` does): their own SKEIN_E_UPSTREAM_CONNECT is a
    // peer's refusal, retried for any method; an app's 502 is not retried by default.
    const labels = { [INBOUND_PROXY_LABEL]: 'true' };
    await registerInstance(cp.http, 'api', 'api-1', (B.workload('api-1').inbound as { port: number }).port, { labels });
    await registerInstance(cp.http, 'api', 'api-2', (C.workload('api-2').inbound as { port: number }).port, { labels });
    A = await startProxy({ control: cp.http, workloads: ['name=client,outbound=127.0.0.1:0'] });
    cleanups.push(() => A.stop());
    aOut = (A.workload('client').outbound as { port: number }).port;
    await waitForProxyReady(A);
    await waitFor(async () => (await endpointIds(A, 'api')).join() === 'api-1,api-2', { timeoutMs: 10_000, what: 'proxy A to know api-1 and api-2' });
  });

  after(async () => {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
  });

  test("bodyless requests get the live replica: the caller's proxy retries a peer proxy's SKEIN_E_UPSTREAM_CONNECT", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      for (let i = 0; i < 10; i++) {
        const r = await request(aOut, { path: `/r${i}`, headers: { host: 'api' }, agent });
        assert.equal(r.status, 200, `request ${i}: ${r.status} ${r.body}`);
        assert.equal(r.headers['x-served-by'], 'alive-app');
      }
      // A POST's small body is kept (retries.maxBodyBytes), and a peer's refusal means no app saw
      // it: it is sent again too, whatever the method.
      for (let i = 0; i < 4; i++) {
        const r = await request(aOut, { method: 'POST', path: '/p', headers: { host: 'api', 'content-type': 'text/plain' }, body: 'x', agent });
        assert.equal(r.status, 200, `POST ${i}: ${r.status} ${r.body}`);
        assert.equal(r.headers['x-served-by'], 'alive-app');
      }
    } finally {
      agent.destroy();
    }
  });
});
