/**
 * The SDK as an app uses it: `setGlobalDispatcher(createMeshDispatcher(...))`, then the global
 * `fetch('http://<service>/...')`, against a real `skein control` and real HTTP servers registered
 * as instances. What the engine decides is the conformance suite's (test/conformance.test.ts);
 * here: fetch's bodies (kept for a retry, streamed), what the callee gets, errors as responses,
 * aborts, and origins outside the mesh going to undici's Agent unchanged.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { getGlobalDispatcher, request, setGlobalDispatcher, type Dispatcher } from 'undici';
import { adminTokenOf, api, closedPort, skein, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { PROXY_TAP_LIMITS } from '../src/api/tap.js';
import { forEachLine } from '../src/core/lines.js';
import { metricValue, mintJoinToken, registerInstance, startMeshProxy } from './proxy-helpers.js';
import { INBOUND_PROXY_LABEL } from '../src/api/names.js';
import { generateKeyPairSync } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createCsr } from '../src/identity/certs.js';
import { SHOP_PAGE, portOf, startShop, upFromText, type MeshUnderTest } from './mesh-helpers.js';
import { join } from 'node:path';
import { ROOT } from './helpers.js';
import { LATENCY_BUCKETS } from '../src/api/stats.js';
import { startBackend, type Backend } from './conformance.js';
import { createMeshDispatcher, type MeshDispatcher } from '../src/sdk/index.js';

describe('the SDK under fetch (setGlobalDispatcher)', () => {
  let control: ControlProcess;
  let dir: { remove(): Promise<void> };
  let sdk: MeshDispatcher;
  let previous: Dispatcher;
  const backends: Backend[] = [];

  before(async () => {
    dir = await tempDir('skein-sdk-');
    control = await startControl({ dataDir: (dir as { path: string } & typeof dir).path, args: ['--dns', 'off', '--scrape-interval', '1s'] });
    const r = await api(control.http, 'PUT', '/v1/services/user-service', { balancer: { kind: 'round-robin' }, breaker: { enabled: false }, outlierDetection: { enabled: false }, retries: { maxRetries: 1, nonIdempotent: true } });
    assert.ok(r.status === 200 || r.status === 201, JSON.stringify(r.body));
    for (const id of ['user-1', 'user-2']) {
      const b = await startBackend(id);
      backends.push(b);
      await registerInstance(control.http, 'user-service', id, b.port);
    }
    previous = getGlobalDispatcher();
    sdk = createMeshDispatcher({ control: control.http, service: 'web', metrics: { listen: '127.0.0.1:0' }, token: (await adminTokenOf(control.http)) ?? '' });
    setGlobalDispatcher(sdk);
    await waitFor(() => sdk.mesh.endpoints('user-service').size === 2 && sdk.mesh.watch.definition('user-service') !== null, { timeoutMs: 10_000, what: 'the SDK to see user-service' });
  });

  after(async () => {
    setGlobalDispatcher(previous);
    await sdk?.close();
    await control?.stop();
    for (const b of backends) await b.close();
    await dir?.remove();
  });

  test("fetch('http://user-service/ok') goes to the mesh: round-robin over both instances", async () => {
    const seen: string[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await fetch('http://user-service/ok');
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('x-skein-error'), null);
      seen.push(String(res.headers.get('x-backend')));
      assert.equal(await res.text(), `${seen[i]}\n`);
    }
    assert.notEqual(seen[0], seen[1]);
    assert.deepEqual([seen[2], seen[3]], [seen[0], seen[1]], `alternates: ${seen.join(', ')}`);
  });

  test('the callee gets x-request-id, x-skein-caller (the SDK\'s service) and the service as Host', async () => {
    const res = await fetch('http://user-service/headers', { headers: { 'x-skein-caller': 'forged', 'x-skein-explain': '1' } });
    const h = (await res.json()) as Record<string, string>;
    assert.equal(h['x-skein-caller'], 'web');
    assert.match(h['x-request-id'] ?? '', /^[0-9a-f-]{36}$/);
    assert.equal(h['host'], 'user-service');
    assert.equal(h['x-skein-explain'], undefined, 'x-skein-explain is the mesh\'s, not sent on');
    assert.match(res.headers.get('x-skein-explain') ?? '', /^route=default; service=user-service; endpoint=user-\d \(127\.0\.0\.1:\d+\); attempts=1/);
  });

  test('a PUT body is kept and sent again by the retry of a 503', async () => {
    const res = await fetch('http://user-service/fail-first', { method: 'PUT', body: 'payload-1' });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-attempt'), '2');
    assert.equal(await res.text(), 'payload-1');
    // undici's own API passes a string body as it is (not a stream): kept all the same.
    const r2 = await request('http://user-service/fail-first', { dispatcher: sdk, method: 'PUT', body: 'payload-2' });
    assert.equal(r2.statusCode, 200);
    assert.equal(r2.headers['x-attempt'], '2');
    assert.equal(await r2.body.text(), 'payload-2');
  });

  test('a streamed POST body (nonIdempotent retries) is kept and sent again', async () => {
    const enc = new TextEncoder();
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(enc.encode('part-1;'));
        c.enqueue(enc.encode('part-2'));
        c.close();
      },
    });
    const res = await fetch('http://user-service/fail-first', { method: 'POST', body: stream, duplex: 'half' } as RequestInit);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-attempt'), '2');
    assert.equal(await res.text(), 'part-1;part-2');
  });

  test("the mesh's own answers reach fetch as responses: status, x-skein-error, the JSON body", async () => {
    const res = await fetch('http://user-service/hang', { headers: { 'x-skein-timeout-ms': '100' } });
    assert.equal(res.status, 504);
    assert.equal(res.headers.get('x-skein-error'), 'SKEIN_E_UPSTREAM_TIMEOUT');
    assert.equal(res.headers.get('x-skein-error-origin'), 'outbound');
    const body = (await res.json()) as { code: string; message: string; requestId: string; details: { service: string; timeoutMs: number } };
    assert.equal(body.code, 'SKEIN_E_UPSTREAM_TIMEOUT');
    assert.match(body.message, /^no response from "user-service" within 100 ms/);
    assert.equal(body.details.timeoutMs, 100);
    assert.equal(res.headers.get('x-request-id'), body.requestId);
    const unknown = await fetch('http://nobody/x');
    assert.equal(unknown.status, 503);
    assert.equal(unknown.headers.get('x-skein-error'), 'SKEIN_E_UNKNOWN_SERVICE');
  });

  test('an aborted fetch rejects with its reason and leaves nothing in flight', async () => {
    const ac = new AbortController();
    const t = setTimeout(() => ac.abort(), 100);
    await assert.rejects(fetch('http://user-service/hang', { signal: ac.signal }), (e: Error) => e.name === 'AbortError');
    clearTimeout(t);
    assert.equal(sdk.mesh.services.get('user-service')?.traffic.active, 0);
  });

  test('origins outside the mesh go to the network unchanged', async () => {
    const b = backends[0] as Backend;
    const res = await fetch(`http://127.0.0.1:${b.port}/headers`);
    const h = (await res.json()) as Record<string, string>;
    assert.equal(h['x-skein-caller'], undefined);
    assert.equal(h['x-request-id'], undefined);
    assert.equal(res.headers.get('x-backend'), 'user-1');
    await assert.rejects(fetch('http://localhost:1/x'), (e: Error) => e instanceof TypeError);
  });

  test('metrics: the proxy\'s families with plane="sdk", served, announced, and in the control plane\'s golden signals', async () => {
    const addr = await sdk.metricsAddress();
    assert.ok(addr !== null);
    const count = async () => metricValue(await (await fetch(`http://${addr}/metrics`)).text(), 'skein_proxy_requests_total', { plane: 'sdk', direction: 'outbound', source: 'web', service: 'user-service', route: 'default', status: '200', class: 'success' }) ?? 0;
    const before = await count();
    for (let i = 0; i < 5; i++) assert.equal((await fetch('http://user-service/ok')).status, 200);
    const fail = await fetch('http://user-service/status/500');
    assert.equal(fail.status, 500);
    await fail.text();
    assert.equal((await count()) - before, 5);
    const text = await (await fetch(`http://${addr}/metrics`)).text();
    assert.equal(metricValue(text, 'skein_proxy_requests_total', { plane: 'sdk', service: 'user-service', status: '500', class: 'failure' }), 1);
    const les = [...text.matchAll(/^skein_proxy_request_duration_seconds_bucket\{[^}]*service="user-service"[^}]*le="([^"]+)"/gm)].map((m) => m[1]);
    assert.deepEqual([...new Set(les)], [...LATENCY_BUCKETS.map(String), '+Inf'], 'the proxy\'s buckets');
    const proxies = (await api(control.http, 'GET', '/v1/proxies')).body as { proxies?: Array<{ id: string; admin: string }> } | Array<{ id: string; admin: string }>;
    const list = Array.isArray(proxies) ? proxies : (proxies.proxies ?? []);
    await waitFor(async () => {
      const b = (await api(control.http, 'GET', '/v1/proxies')).body as { proxies?: Array<{ id: string; admin: string }> } | Array<{ id: string; admin: string }>;
      const l = Array.isArray(b) ? b : (b.proxies ?? []);
      return l.some((p) => p.id === `sdk-web-${process.pid}` && p.admin === addr);
    }, { timeoutMs: 5000, what: `the SDK announced (proxies: ${JSON.stringify(list)})` });
    await waitFor(
      async () => {
        const one = (await api(control.http, 'GET', '/v1/signals/services/user-service?window=15m')).body as { edges?: Array<{ source: string; destination: string; requests: number }> };
        return (one.edges ?? []).find((e) => e.source === 'web' && e.destination === 'user-service')?.requests ?? 0;
      },
      { timeoutMs: 15_000, what: 'the edge web -> user-service in /v1/signals' },
    );
  });

  test("skein tap shows the SDK's requests as a proxy's outbound ones: the record's fields; headers only with --headers, authorization redacted", async () => {
    const addr = await sdk.metricsAddress();
    const id = `sdk-web-${process.pid}`;
    await waitFor(async () => {
      const b = (await api(control.http, 'GET', '/v1/proxies')).body as { proxies: Array<{ id: string; admin: string }> };
      return b.proxies.some((p) => p.id === id && p.admin === addr);
    }, { timeoutMs: 10_000, what: 'the SDK announced' });
    const token = (await adminTokenOf(control.http)) ?? '';
    const opened = async () => ((await (await fetch(`http://${addr}/debug/taps`)).json()) as { opened: number }).opened;
    /** `skein tap` (the control plane's relay) while `send` runs: its JSON lines. */
    const tapWhile = async (args: string[], send: () => Promise<void>) => {
      const before = await opened();
      const cli = skein(['tap', ...args, '-o', 'json', '-c', control.http, '--token', token], { timeoutMs: 30_000 });
      await waitFor(async () => (await opened()) > before, { timeoutMs: 10_000, what: "the relay's tap on the SDK" });
      await send();
      const out = await cli;
      assert.equal(out.code, 0, out.stderr);
      return out.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    };
    let backend = '';
    const lines = await tapWhile(['user-service', '--limit', '2'], async () => {
      const ok = await fetch('http://user-service/ok?q=1', { headers: { 'x-request-id': 'tap-1', authorization: 'Bearer s3cret' } });
      backend = String(ok.headers.get('x-backend'));
      assert.equal(await ok.text(), `${backend}\n`);
      const late = await fetch('http://user-service/hang', { headers: { 'x-request-id': 'tap-2', 'x-skein-timeout-ms': '100' } });
      assert.equal(late.status, 504);
      await late.arrayBuffer();
    });
    assert.equal(lines.length, 2, JSON.stringify(lines));
    const [ok, late] = lines as [Record<string, unknown>, Record<string, unknown>];
    assert.match(String(ok['time']), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.ok(typeof ok['latencyMs'] === 'number' && ok['latencyMs'] > 0 && ok['latencyMs'] < 5000, String(ok['latencyMs']));
    const common = { direction: 'outbound', workload: 'web', source: 'web', destination: 'user-service', route: 'default', method: 'GET', proxy: id };
    assert.deepEqual({ ...ok, time: 0, latencyMs: 0 }, { ...common, time: 0, latencyMs: 0, path: '/ok', status: 200, instance: backend, requestId: 'tap-1', error: null });
    // Its 100 ms deadline (a timer may fire a few µs short of it as performance.now() counts).
    assert.ok(Number(late['latencyMs']) >= 99 && Number(late['latencyMs']) < 5000, `the timed-out request took its deadline: ${String(late['latencyMs'])}`);
    assert.deepEqual({ ...late, time: 0, latencyMs: 0 }, { ...common, time: 0, latencyMs: 0, path: '/hang', status: 504, instance: late['instance'], requestId: 'tap-2', error: 'SKEIN_E_UPSTREAM_TIMEOUT' });
    assert.match(String(late['instance']), /^user-[12]$/);

    // With --headers, tapping the caller this time (`skein tap` takes a service the control plane knows): the request
    // as the SDK sent it, the response as the app got it; secrets redacted.
    const web = await api(control.http, 'PUT', '/v1/services/web', {});
    assert.ok(web.status === 200 || web.status === 201, JSON.stringify(web.body));
    const [h] = (await tapWhile(['web', '--limit', '1', '--headers'], async () => {
      // undici's request (fetch adds headers of its own): the headers are exactly these.
      const res = await request('http://user-service/ok', { dispatcher: sdk, headers: { 'x-request-id': 'tap-3', authorization: 'Bearer s3cret', 'x-tenant': 'acme' } });
      await res.body.text();
    })) as [Record<string, unknown>];
    assert.equal(h['requestId'], 'tap-3');
    assert.equal(h['source'], 'web');
    const req = h['requestHeaders'] as Record<string, string>;
    assert.deepEqual(req, { 'x-request-id': 'tap-3', authorization: '[redacted]', 'x-tenant': 'acme', 'x-skein-caller': 'web', host: 'user-service' });
    const res = h['responseHeaders'] as Record<string, string>;
    assert.equal(res['x-backend'], h['instance']);
    assert.equal(h['requestBody'], undefined, 'bodies only with --bodies');
    assert.ok(!JSON.stringify(lines).includes('s3cret') && !JSON.stringify(h).includes('s3cret'));

    // The CLI redacts again, in case: the line as it leaves the SDK (its /tap, as the relay reads it) has the secret redacted already.
    const ac = new AbortController();
    const direct = await fetch(`http://${addr}/tap?service=user-service&headers=1&bodies=1`, { signal: ac.signal });
    assert.equal(direct.status, 200);
    assert.equal(direct.headers.get('content-type'), 'application/x-ndjson; charset=utf-8');
    const got: string[] = [];
    const reading = forEachLine(direct.body as ReadableStream<Uint8Array>, (l) => got.push(l), () => got.length >= 1).catch(() => undefined);
    await waitFor(async () => ((await (await fetch(`http://${addr}/debug/taps`)).json()) as { open: number }).open === 1, { timeoutMs: 5000, what: 'the direct tap open' });
    const put = await request('http://user-service/ok', { dispatcher: sdk, method: 'PUT', body: 'hello', headers: { 'x-request-id': 'tap-4', 'x-api-key': 'k3y' } });
    assert.equal(await put.body.text(), 'hello');
    await waitFor(() => got.length >= 1, { timeoutMs: 5000, what: 'the line from the SDK\'s /tap' });
    ac.abort();
    await reading;
    const line = JSON.parse(got[0] as string) as Record<string, unknown>;
    assert.deepEqual(line['requestHeaders'], { 'x-request-id': 'tap-4', 'x-api-key': '[redacted]', 'x-skein-caller': 'web', host: 'user-service' });
    assert.deepEqual([line['requestBody'], line['responseBody'], line['method'], line['proxy']], ['hello', 'hello', 'PUT', id]);
  });

  test("the SDK's /tap checks its query as the proxy's admin does, under the proxy's limits", async () => {
    const addr = await sdk.metricsAddress();
    const bad = await fetch(`http://${addr}/tap?service=Not_A_Name`);
    assert.equal(bad.status, 400);
    assert.deepEqual(await bad.json(), { code: 'SKEIN_E_BAD_QUERY', message: 'service must be a service name (a DNS label)', field: 'service' });
    const flag = await fetch(`http://${addr}/tap?service=web&headers=maybe`);
    assert.deepEqual(await flag.json(), { code: 'SKEIN_E_BAD_QUERY', message: 'headers must be 1 or 0', field: 'headers' });
    const unknown = await fetch(`http://${addr}/tap?service=web&verbose=1`);
    assert.deepEqual(await unknown.json(), { code: 'SKEIN_E_BAD_QUERY', message: 'unknown query parameter "verbose" (allowed: service, headers, bodies)' });
    const stats = (await (await fetch(`http://${addr}/debug/taps`)).json()) as { limits: unknown; open: number };
    assert.deepEqual(stats.limits, PROXY_TAP_LIMITS);
  });

  test('/stats checks its query as the proxy\'s admin does: a bad since or an unknown parameter is 400 SKEIN_E_BAD_QUERY naming it', async () => {
    const addr = await sdk.metricsAddress();
    const bad = await fetch(`http://${addr}/stats?since=abc`);
    assert.equal(bad.status, 400);
    assert.equal(bad.headers.get('x-skein-error'), 'SKEIN_E_BAD_QUERY');
    assert.deepEqual(await bad.json(), { code: 'SKEIN_E_BAD_QUERY', message: 'since must be an event sequence number (a whole number), got "abc"', field: 'since' });
    const negative = await fetch(`http://${addr}/stats?since=-1`);
    assert.equal(negative.status, 400);
    await negative.arrayBuffer();
    const unknown = await fetch(`http://${addr}/stats?sinec=3`);
    assert.equal(unknown.status, 400);
    assert.equal(((await unknown.json()) as { message: string }).message, 'unknown query parameter "sinec" (allowed: since)');
    const ok = await fetch(`http://${addr}/stats?since=2`);
    assert.equal(ok.status, 200);
    assert.equal(((await ok.json()) as { proxy: { id: string } }).proxy.id, `sdk-web-${process.pid}`);
  });
});

describe('createMeshDispatcher: bad options are refused before anything starts', () => {
  test('no control plane URL: SKEIN_E_USAGE naming "control"', () => {
    assert.throws(
      () => createMeshDispatcher({} as Parameters<typeof createMeshDispatcher>[0]),
      (e: Error & { code?: string; field?: string }) => e.code === 'SKEIN_E_USAGE' && e.field === 'control' && /"control" must be the control plane's URL/.test(e.message),
    );
    assert.throws(() => createMeshDispatcher({ control: [] }), (e: Error & { code?: string }) => e.code === 'SKEIN_E_USAGE');
  });

  test('a metrics address that is not HOST:PORT: SKEIN_E_USAGE naming metrics.listen or metrics.advertise', () => {
    assert.throws(
      () => createMeshDispatcher({ control: 'http://127.0.0.1:1', metrics: { listen: 'everywhere' } }),
      (e: Error & { code?: string; field?: string }) => e.code === 'SKEIN_E_USAGE' && e.field === 'metrics.listen' && /metrics\.listen must be HOST:PORT .*got "everywhere"/.test(e.message),
    );
    assert.throws(
      () => createMeshDispatcher({ control: 'http://127.0.0.1:1', metrics: { advertise: '127.0.0.1' } }),
      (e: Error & { code?: string; field?: string }) => e.code === 'SKEIN_E_USAGE' && e.field === 'metrics.advertise',
    );
  });

  test('mTLS options: a mode that is not one, or strict without a join token: SKEIN_E_USAGE naming the option', () => {
    assert.throws(
      () => createMeshDispatcher({ control: 'http://127.0.0.1:1', mtls: { mode: 'strickt' as 'strict' } }),
      (e: Error & { code?: string; field?: string }) => e.code === 'SKEIN_E_USAGE' && e.field === 'mtls.mode' && e.message === 'createMeshDispatcher: mtls.mode must be one of strict, permissive, off, got "strickt"',
    );
    const saved = process.env['SKEIN_JOIN_TOKEN'];
    delete process.env['SKEIN_JOIN_TOKEN'];
    try {
      assert.throws(
        () => createMeshDispatcher({ control: 'http://127.0.0.1:1', mtls: { mode: 'strict' } }),
        (e: Error & { code?: string; field?: string }) => e.code === 'SKEIN_E_USAGE' && e.field === 'mtls.joinToken' && /^createMeshDispatcher: mtls mode strict needs a join token for the SDK's certificate: mint one with `skein ca token --proxy ID --service S` and pass mtls\.joinToken \(or SKEIN_JOIN_TOKEN\)$/.test(e.message),
      );
    } finally {
      if (saved !== undefined) process.env['SKEIN_JOIN_TOKEN'] = saved;
    }
  });

  test('before the first snapshot: SKEIN_E_DISCOVERY_UNAVAILABLE as a response, as the proxy answers', async () => {
    const d = createMeshDispatcher({ control: `http://127.0.0.1:${await closedPort()}` });
    try {
      const res = await request('http://user-service/x', { dispatcher: d });
      assert.equal(res.statusCode, 503);
      assert.equal(res.headers['x-skein-error'], 'SKEIN_E_DISCOVERY_UNAVAILABLE');
      const body = (await res.body.json()) as { code: string; message: string };
      assert.equal(body.message, 'the SDK has not yet heard from the control plane');
    } finally {
      await d.close();
    }
  });
});

describe('the SDK with mTLS: real `skein proxy --mtls strict` inbound sides', () => {
  let control: ControlProcess;
  let dir: { path: string; remove(): Promise<void> };
  let td: string;
  let sdk: MeshDispatcher;
  const stops: Array<() => Promise<unknown>> = [];
  const idOf = (service: string) => `spiffe://${td}/ns/default/sa/${service}`;
  const label = { labels: { [INBOUND_PROXY_LABEL]: 'true' } };

  before(async () => {
    dir = await tempDir('skein-sdk-mtls-');
    // 1-minute certificates: the SDK renews its own within the test (at 50-70% of the lifetime).
    control = await startControl({ dataDir: dir.path, args: ['--dns', 'off', '--leaf-lifetime', '1m'] });
    td = (await api(control.http, 'GET', '/v1/ca')).body.trustDomain as string;
    for (const service of ['users', 'orders']) {
      const app = await startBackend(`${service}-app`);
      stops.push(() => app.close());
      const p = await startMeshProxy(control.http, `proxy-${service}`, [service], [`name=${service}-1,service=${service},inbound=127.0.0.1:0,app=127.0.0.1:${app.port}`]);
      stops.push(() => p.stop());
      await registerInstance(control.http, service, `${service}-1`, p.workload(`${service}-1`).inbound!.port, label);
      // The registry says users' inbound listener is also "billing": the proxy there proves it is users'.
      if (service === 'users') await registerInstance(control.http, 'billing', 'billing-1', p.workload('users-1').inbound!.port, label);
    }
    sdk = createMeshDispatcher({ control: control.http, service: 'web', metrics: { listen: '127.0.0.1:0' }, mtls: { mode: 'strict', joinToken: await mintJoinToken(control.http, 'sdk-web', ['web']) } });
    await sdk.ready();
    await waitFor(() => ['users', 'orders', 'billing'].every((s) => sdk.mesh.endpoints(s).size === 1), { timeoutMs: 10_000, what: 'the SDK to see users, orders and billing' });
  });

  after(async () => {
    await sdk?.close();
    for (const s of stops.reverse()) await s();
    await control?.stop();
    await dir?.remove();
  });

  test('the SDK holds its workload certificate and calls two strict services over mTLS: each app sees the verified identity', async () => {
    const cert = sdk.certificate();
    assert.equal(cert?.identity, idOf('web'));
    for (const service of ['users', 'orders']) {
      const res = await request(`http://${service}/headers`, { dispatcher: sdk, headers: { 'x-skein-client-id': idOf('admin') } });
      assert.equal(res.statusCode, 200);
      assert.equal(res.headers['x-backend'], `${service}-app`);
      const h = (await res.body.json()) as Record<string, string>;
      assert.equal(h['x-skein-client-id'], idOf('web'), `${service}: the caller's certificate, not the header the app sent`);
      assert.equal(h['x-skein-caller'], 'web');
    }
  });

  test('announced with its certificate (no token): GET /v1/proxies names its SPIFFE ID', async () => {
    const addr = await sdk.metricsAddress();
    await waitFor(
      async () => {
        const b = (await api(control.http, 'GET', '/v1/proxies')).body as { proxies: Array<{ id: string; admin: string; announcedBy: string | null }> };
        return b.proxies.find((p) => p.id === `sdk-web-${process.pid}` && p.admin === addr && p.announcedBy === idOf('web')) ?? null;
      },
      { timeoutMs: 10_000, what: 'the SDK announced with its certificate' },
    );
  });

  test("an endpoint whose proxy is not the identity the registry gives it: 502 SKEIN_E_UPSTREAM_TLS naming why, as the proxy answers", async () => {
    const res = await request('http://billing/headers', { dispatcher: sdk });
    assert.equal(res.statusCode, 502);
    assert.equal(res.headers['x-skein-error'], 'SKEIN_E_UPSTREAM_TLS');
    const body = (await res.body.json()) as { message: string; details: { tried: Array<{ endpoint: string; outcome: string }> } };
    assert.match(body.message, /^no mTLS connection to /);
    assert.equal(body.details.tried[0]?.endpoint, 'billing-1');
    assert.equal(body.details.tried[0]?.outcome, `mTLS refused: the peer is not the identity the registry says the endpoint has: ${idOf('users')}, expected ${idOf('billing')}`);
  });

  test('an SDK with mTLS off is refused by the strict peer: 403 SKEIN_E_MTLS_REQUIRED from its inbound side', async () => {
    const plain = createMeshDispatcher({ control: control.http, service: 'web', mtls: { mode: 'off' } });
    try {
      await plain.ready();
      await waitFor(() => plain.mesh.endpoints('users').size === 1, { timeoutMs: 10_000, what: 'the plaintext SDK to see users' });
      const res = await request('http://users/headers', { dispatcher: plain });
      assert.equal(res.statusCode, 403);
      assert.equal(res.headers['x-skein-error'], 'SKEIN_E_MTLS_REQUIRED');
      assert.match(((await res.body.json()) as { message: string }).message, /takes mutual TLS only/);
    } finally {
      await plain.close();
    }
  });

  test('the SDK renews its certificate by itself, and new connections present the renewed one', { timeout: 120_000 }, async () => {
    const first = sdk.certificate();
    assert.ok(first !== null);
    const renewed = await waitFor(() => {
      const c = sdk.certificate();
      return c !== null && c.serial !== first.serial ? c : null;
    }, { timeoutMs: 60_000, what: 'the SDK to renew its 1-minute certificate' });
    assert.ok(renewed !== null);
    assert.equal(renewed.identity, idOf('web'));
    assert.ok(renewed.notAfter.getTime() > first.notAfter.getTime(), 'the renewed certificate ends later');
    // The connection open across the renewal goes on; closed (reset), the next one is made with the renewed certificate.
    for (const reset of [true, false]) {
      const res = await request('http://users/headers', { dispatcher: sdk, reset });
      assert.equal(res.statusCode, 200);
      assert.equal(((await res.body.json()) as Record<string, string>)['x-skein-client-id'], idOf('web'));
    }
  });
});

describe('skein up gives its services what the SDK needs: the demo\'s frontend-sdk, with the frontend strict', () => {
  let up: Awaited<ReturnType<typeof startShop>>;

  before(async () => {
    up = await startShop();
  });

  after(async () => {
    await up?.stop();
  });

  test('frontend-sdk holds its certificate, is announced with it (GET /v1/proxies), and calls the strict frontend over mTLS', async () => {
    const td = (await api(up.control, 'GET', '/v1/ca')).body.trustDomain as string;
    const frontend = (await api(up.control, 'GET', '/v1/services/frontend')).body as { mtls?: { mode: string } };
    assert.equal(frontend.mtls, undefined, "the frontend has no mode of its own: the mesh's, strict");
    const proxies = await waitFor(
      async () => {
        const b = (await api(up.control, 'GET', '/v1/proxies')).body as { proxies: Array<{ id: string; announcedBy: string | null; workloads: Array<{ service: string }> }> };
        const sdk = b.proxies.find((p) => p.id.startsWith('sdk-frontend-sdk-'));
        return sdk === undefined ? null : sdk;
      },
      { timeoutMs: 15_000, what: 'frontend-sdk announced to the control plane' },
    );
    assert.ok(proxies !== null);
    assert.equal(proxies.announcedBy, `spiffe://${td}/ns/default/sa/frontend-sdk`, 'announced with its own certificate');
    assert.deepEqual(proxies.workloads.map((w) => w.service), ['frontend-sdk']);
    // It waited for its certificate: the control plane never had to refuse an announcement without a credential.
    assert.doesNotMatch([...up.stdout, ...up.stderr].join('\n'), /"path":"\/v1\/proxies\/sdk-frontend-sdk-[^"]*".*request refused: no token/);
    const m = (await api(up.control, 'GET', '/v1/mesh')).body as { services: Array<{ name: string; servicePort: string }> };
    const port = portOf(m.services.find((s) => s.name === 'frontend-sdk')?.servicePort ?? '');
    const res = await request(`http://127.0.0.1:${port}${SHOP_PAGE}`);
    const body = (await res.body.json()) as { via: string; served_by: Record<string, string>; mesh: { explain: string; error: string | null } };
    assert.equal(res.statusCode, 200, JSON.stringify(body));
    assert.equal(body.via, 'sdk');
    assert.equal(body.served_by['frontend_sdk'], 'frontend-sdk-1');
    assert.equal(body.served_by['frontend'], 'frontend-1');
    assert.equal(body.mesh.error, null);
    assert.match(body.mesh.explain, /^route=default; service=frontend; endpoint=frontend-1 /);
  });

  test("a replica's credentials: the mesh's mode and a join token for its own certificate (spent by the SDK), no control-plane token", async () => {
    const r = await api(up.control, 'GET', '/v1/mesh');
    const inst = (r.body as { services: Array<{ name: string; instances: Array<{ id: string; pid: number | null }> }> }).services.find((s) => s.name === 'frontend-sdk')?.instances[0];
    assert.ok(inst?.pid != null);
    const env = (await readFile(`/proc/${inst.pid}/environ`, 'utf8')).split('\0');
    const get = (k: string) => env.find((l) => l.startsWith(`${k}=`))?.slice(k.length + 1);
    assert.equal(get('SKEIN_MTLS'), 'strict');
    assert.equal(get('SKEIN_TOKEN'), undefined, 'no control-plane token: with mTLS the certificate is its credential');
    const token = get('SKEIN_JOIN_TOKEN');
    assert.match(token ?? '', /^[A-Za-z0-9_-]{43}$/);
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1', privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
    const again = await api(up.control, 'POST', '/v1/ca/certificates', { service: 'frontend-sdk', csr: await createCsr(privateKey) }, { authorization: `Bearer ${token}` });
    assert.equal(again.status, 401);
    assert.equal(again.body.code, 'SKEIN_E_JOIN_TOKEN_USED', 'the SDK spent it on its certificate');
    assert.equal(again.body.details.proxy, 'frontend-sdk-1', 'minted for this replica');
  });
});

describe('the SDK wakes a service scaled to zero under skein up (asking with its certificate), as the proxy does', () => {
  let mesh: MeshUnderTest;
  let sdk: MeshDispatcher;
  const MESH = [
    'kind: Mesh',
    'name: sdk-zero',
    'services:',
    '  sleepy:',
    '    command: node',
    `    args: [${JSON.stringify(join(ROOT, 'test', 'fixtures', 'rollout-app.mjs'))}]`,
    '    env: { APP_VERSION: v7 }',
    '    replicas: 0',
    '    readiness: { type: http, path: /health, interval: 100ms, deadline: 20s }',
    '    autoscale: { min: 0, max: 1, target: { rps: 100 }, interval: 500ms, coolDown: 30s }',
    '    coldStart: { queue: 4, timeout: 20s }',
    '',
  ].join('\n');

  before(async () => {
    mesh = await upFromText('skein-sdk-zero-', MESH);
    sdk = createMeshDispatcher({ control: mesh.up.control, service: 'tester', mtls: { mode: 'strict', joinToken: await mintJoinToken(mesh.up.control, 'sdk-tester', ['tester']) } });
    await sdk.ready();
    await waitFor(() => sdk.mesh.watch.knows('sleepy'), { timeoutMs: 10_000, what: 'the SDK to know sleepy' });
  });

  after(async () => {
    await sdk?.close();
    await mesh?.stop();
  });

  test('a request to sleepy (0 replicas) is held, the SDK asks for a wake, and the replica that starts answers it over mTLS', { timeout: 60_000 }, async () => {
    assert.equal(sdk.mesh.endpoints('sleepy').size, 0);
    const res = await request('http://sleepy/hello', { dispatcher: sdk, headers: { 'x-skein-explain': '1', 'x-skein-timeout-ms': '20000' } });
    const body = await res.body.text();
    assert.equal(res.statusCode, 200, body);
    assert.deepEqual(JSON.parse(body), { version: 'v7', id: 'sleepy-1' });
    assert.match(String(res.headers['x-skein-explain']), /; held=\d+ms \(the service was scaled to zero: waited for an instance to start\)/);
    const events = (await api(mesh.up.control, 'GET', '/v1/events?service=sleepy&limit=100')).body.events as Array<{ message: string }>;
    assert.ok(events.some((e) => /^sleepy woken from zero to 1 replica/.test(e.message)), `a wake in the mesh events: ${JSON.stringify(events.map((e) => e.message))}`);
  });
});

describe('skein up --mtls off gives each service a token of scope "proxy" for itself alone', () => {
  let mesh: MeshUnderTest;
  const app = JSON.stringify(join(ROOT, 'test', 'fixtures', 'rollout-app.mjs'));
  const MESH = ['kind: Mesh', 'name: sdk-plain', 'services:', ...['alpha', 'beta'].flatMap((n) => [`  ${n}:`, '    command: node', `    args: [${app}]`, '    readiness: { type: http, path: /health, interval: 100ms }']), ''].join('\n');

  before(async () => {
    mesh = await upFromText('skein-sdk-plain-', MESH, ['--mtls', 'off']);
  });

  after(async () => {
    await mesh?.stop();
  });

  test('SKEIN_TOKEN of an alpha replica: registers alpha\'s instances, not beta\'s nor a Service; listed as skein-up-svc-alpha', async () => {
    const alpha = await mesh.service<{ instances: Array<{ pid: number | null }> }>('alpha');
    const pid = alpha.instances[0]?.pid;
    assert.ok(pid != null);
    const env = (await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0');
    const get = (k: string) => env.find((l) => l.startsWith(`${k}=`))?.slice(k.length + 1);
    assert.equal(get('SKEIN_MTLS'), undefined);
    assert.equal(get('SKEIN_JOIN_TOKEN'), undefined);
    const token = get('SKEIN_TOKEN') ?? '';
    assert.match(token, /^skein_prx_/);
    const auth = { authorization: `Bearer ${token}` };
    const own = await api(mesh.up.control, 'PUT', '/v1/services/alpha/instances/alpha-extra', { address: '127.0.0.1', port: await closedPort() }, auth);
    assert.ok(own.status === 200 || own.status === 201, JSON.stringify(own.body));
    assert.equal((await api(mesh.up.control, 'DELETE', '/v1/services/alpha/instances/alpha-extra', undefined, auth)).status < 300, true);
    const other = await api(mesh.up.control, 'PUT', '/v1/services/beta/instances/beta-extra', { address: '127.0.0.1', port: await closedPort() }, auth);
    assert.equal(other.status, 403);
    assert.equal(other.body.code, 'SKEIN_E_FORBIDDEN');
    const service = await api(mesh.up.control, 'PUT', '/v1/services/alpha', {}, auth);
    assert.equal(service.status, 403);
    const tokens = (await api(mesh.up.control, 'GET', '/v1/tokens', undefined, { authorization: `Bearer ${await adminTokenOf(mesh.up.control)}` })).body.tokens as Array<{ name: string; scope: string; services: string[] | null }>;
    assert.deepEqual(tokens.filter((t) => t.name.startsWith('skein-up-') && t.name !== 'skein-up-proxy').map((t) => [t.name, t.scope, t.services]).sort(), [
      ['skein-up-svc-alpha', 'proxy', ['alpha']],
      ['skein-up-svc-beta', 'proxy', ['beta']],
    ]);
  });
});
