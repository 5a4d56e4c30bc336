/**
 * mTLS between proxies, end to end: a real control plane (its CA), two real `skein proxy`
 * processes with --mtls strict and join tokens, an app, curl. What the app sees of its caller,
 * what a plaintext or stray TLS client gets, what a caller gets from an endpoint whose proxy is
 * not who the registry says, and certificates of 60 s renewed under load with no failed request.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import http from 'node:http';
import { join } from 'node:path';
import { api, run, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { metricValue, mintJoinToken, registerInstance, startMeshProxy, startProxy, waitForProxyReady, type ProxyProcess } from './proxy-helpers.js';

const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

let cp: ControlProcess;
let td: string;
let app: http.Server;
let appPort: number;
let A: ProxyProcess;
let B: ProxyProcess;
let outPort: number;
let inPort: number;

const mint = (proxy: string, services: string[]) => mintJoinToken(cp.http, proxy, services);

/** An app that answers with the headers it got. */
async function echoApp(): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ headers: req.headers }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return { server, port: (server.address() as { port: number }).port };
}

function get(port: number, host: string, headers: Record<string, string> = {}, path = '/'): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers: { host, ...headers }, agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within 10 s from 127.0.0.1:${port} (${host}${path})`)));
    req.on('error', reject);
    req.end();
  });
}

const metrics = async (p: ProxyProcess) => (await api(p.admin, 'GET', '/metrics')).body as string;
const idOf = (service: string) => `spiffe://${td}/ns/default/sa/${service}`;

/** Starts a proxy with --mtls strict and a fresh join token for its workloads' services. */
async function meshProxy(id: string, services: string[], workloads: string[], control = cp): Promise<ProxyProcess> {
  const p = await startMeshProxy(control.http, id, services, workloads);
  cleanups.push(() => p.stop());
  return p;
}

async function knows(p: ProxyProcess, service: string, n = 1): Promise<void> {
  await waitFor(async () => ((await api(p.admin, 'GET', '/debug/endpoints')).body?.services?.[service]?.endpoints?.length ?? 0) >= n, { timeoutMs: 10_000, what: `proxy to know ${n} endpoint(s) of ${service}` });
}

before(async () => {
  const dir = await tempDir('skein-mtls-');
  cleanups.push(dir.remove);
  cp = await startControl({ dataDir: join(dir.path, 'data'), args: ['--dns', 'off'] });
  cleanups.push(() => cp.stop());
  td = (await api(cp.http, 'GET', '/v1/ca')).body.trustDomain as string;
  ({ server: app, port: appPort } = await echoApp());
  void app;
  B = await meshProxy('proxy-b', ['users'], [`name=users-1,service=users,inbound=127.0.0.1:0,app=127.0.0.1:${appPort}`]);
  A = await meshProxy('proxy-a', ['web'], ['name=web-1,service=web,outbound=127.0.0.1:0']);
  inPort = B.workload('users-1').inbound!.port;
  outPort = A.workload('web-1').outbound!.port;
  const label = { labels: { 'skein.io/inbound-proxy': 'true' } };
  await registerInstance(cp.http, 'users', 'users-1', inPort, label);
  // The registry says this address is "billing": the proxy there proves it is users'.
  await registerInstance(cp.http, 'billing', 'billing-1', inPort, label);
  await knows(A, 'users');
  await knows(A, 'billing');
});

describe('mTLS between two skein proxy processes', () => {
  test("the app learns its caller from the caller's certificate: spoofed identity headers are replaced", async () => {
    const m0 = await metrics(B);
    const r = await get(outPort, 'users', { 'x-skein-client-id': idOf('admin'), 'x-skein-caller': 'admin' });
    assert.equal(r.status, 200, r.body);
    const seen = JSON.parse(r.body).headers as Record<string, string>;
    assert.equal(seen['x-skein-client-id'], idOf('web'), 'the verified SPIFFE ID of the caller, not the copy the request carried');
    assert.equal(seen['x-skein-caller'], 'web');
    const m1 = await metrics(B);
    const d = (metricValue(m1, 'skein_proxy_inbound_connections_total', { kind: 'mtls' }) ?? 0) - (metricValue(m0, 'skein_proxy_inbound_connections_total', { kind: 'mtls' }) ?? 0);
    assert.ok(d >= 1, `B counted the connection as mTLS (${d})`);
    // Its request too, on both sides: the caller's outbound hop and the callee's inbound one (the hop to the app is local).
    const mtlsRequests = (m: string, direction: string) => metricValue(m, 'skein_proxy_mtls_requests_total', { direction, service: 'users' }) ?? 0;
    assert.equal(mtlsRequests(m1, 'inbound') - mtlsRequests(m0, 'inbound'), 1, 'B: the inbound request was mTLS');
    // Each proxy holds a 24 h certificate for its service.
    const exp = metricValue(await metrics(A), 'skein_proxy_certificate_expiry_timestamp_seconds', { service: 'web', identity: idOf('web') }) ?? 0;
    const hours = (exp * 1000 - Date.now()) / 3_600_000;
    assert.ok(hours > 23.9 && hours <= 24, `web's certificate expires in ${hours.toFixed(3)} h`);
  });

  test('plaintext to a strict inbound port: 403 SKEIN_E_MTLS_REQUIRED, counted by reason', async () => {
    const m0 = await metrics(B);
    const r = await get(inPort, 'users');
    assert.equal(r.status, 403, r.body);
    assert.equal(r.headers['x-skein-error'], 'SKEIN_E_MTLS_REQUIRED');
    assert.match(JSON.parse(r.body).message, /takes mutual TLS only/);
    const m1 = await metrics(B);
    const q = { direction: 'inbound', reason: 'plaintext' };
    assert.equal((metricValue(m1, 'skein_proxy_tls_refusals_total', q) ?? 0) - (metricValue(m0, 'skein_proxy_tls_refusals_total', q) ?? 0), 1);
  });

  test('a stray TLS client (curl, no mesh ALPN, no certificate) fails its handshake, counted', async () => {
    const m0 = await metrics(B);
    const r = await run('curl', ['-sk', '--max-time', '5', '-o', '/dev/null', '-w', '%{http_code}', `https://127.0.0.1:${inPort}/`]);
    assert.equal(r.code, 35, `curl: an SSL connect error (exit 35), got ${r.code} ${r.stdout} ${r.stderr}`);
    const q = { direction: 'inbound', reason: 'handshake' };
    await waitFor(async () => (metricValue(await metrics(B), 'skein_proxy_tls_refusals_total', q) ?? 0) > (metricValue(m0, 'skein_proxy_tls_refusals_total', q) ?? 0), { timeoutMs: 5000, what: 'a handshake refusal counted' });
  });

  test('an endpoint whose proxy is not the identity the registry gives it: 502 SKEIN_E_UPSTREAM_TLS naming why, counted, a mesh event', async () => {
    const r = await get(outPort, 'billing');
    assert.equal(r.status, 502, r.body);
    assert.equal(r.headers['x-skein-error'], 'SKEIN_E_UPSTREAM_TLS');
    const body = JSON.parse(r.body);
    assert.match(JSON.stringify(body.details.tried), /is not the identity the registry says the endpoint has/);
    assert.match(JSON.stringify(body.details.tried), new RegExp(`${idOf('users')}, expected ${idOf('billing')}`));
    assert.ok((metricValue(await metrics(A), 'skein_proxy_tls_refusals_total', { direction: 'outbound', reason: 'wrong-identity' }) ?? 0) >= 1);
    await waitFor(
      async () => ((await api(cp.http, 'GET', '/v1/events?type=mtls-refused')).body?.events ?? []).some((e: { message: string }) => e.message.includes('wrong-identity')),
      { timeoutMs: 15_000, what: 'an mtls-refused event on the control plane' },
    );
  });

  test("active health checks reach a peer over mTLS, and its probe path is open to mesh identities under default deny", async () => {
    const { port } = await echoApp();
    const probes: string[] = [];
    const probed = http.createServer((req, res) => {
      probes.push(`${req.method} ${req.url} ${String(req.headers['x-skein-client-id'])}`);
      res.end('ok');
    });
    await new Promise<void>((r) => probed.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => probed.close(() => r())));
    void port;
    const ledger = await meshProxy('proxy-ledger', ['ledger'], [`name=ledger-1,service=ledger,inbound=127.0.0.1:0,app=127.0.0.1:${(probed.address() as { port: number }).port}`]);
    const put = await api(cp.http, 'PUT', '/v1/services/ledger', { activeHealthCheck: { type: 'http', path: '/health', interval: '200ms', unhealthyThreshold: 1 }, authorization: { default: 'deny' } });
    assert.ok([200, 201].includes(put.status), JSON.stringify(put.body));
    await registerInstance(cp.http, 'ledger', 'ledger-1', ledger.workload('ledger-1').inbound!.port, { labels: { 'skein.io/inbound-proxy': 'true' } });
    await knows(A, 'ledger');
    // A request makes A use the service (and start probing it): denied by the default.
    const r = await get(outPort, 'ledger', {}, '/books');
    assert.equal(r.status, 403, r.body);
    assert.equal(r.headers['x-skein-error'], 'SKEIN_E_AUTHZ_DENIED');
    await waitFor(() => probes.length >= 3, { timeoutMs: 10_000, what: 'three active checks through the mTLS inbound' }).catch(async (e: Error) => {
      throw new Error(`${e.message}; the caller's view: ${JSON.stringify((await api(A.admin, 'GET', '/debug/endpoints')).body.services.ledger)}; probes: ${JSON.stringify(probes)}`);
    });
    assert.match(probes[0] as string, new RegExp(`^GET /health spiffe://${td}/ns/default/sa/web$`));
    const debug = (await api(A.admin, 'GET', '/debug/endpoints')).body.services.ledger.traffic;
    assert.equal(debug.summary?.activeCheckFailing ?? debug.failingActiveChecks ?? 0, 0, `no endpoint failing its active check: ${JSON.stringify(debug)}`);
    assert.equal((await get(outPort, 'ledger', {}, '/health')).status, 200, 'web may GET the probe path itself');
  });

  test("a service's own mode over the mesh's: permissive takes plaintext (counted), back to strict refuses it", async () => {
    const setMode = async (mode: string) => assert.ok([200, 201].includes((await api(cp.http, 'PUT', '/v1/services/users', { mtls: { mode } })).status));
    await setMode('permissive');
    try {
      const m0 = await metrics(B);
      await waitFor(async () => (await get(inPort, 'users')).status === 200, { timeoutMs: 10_000, what: 'plaintext served once users is permissive' });
      const m1 = await metrics(B);
      assert.ok((metricValue(m1, 'skein_proxy_inbound_connections_total', { kind: 'plaintext' }) ?? 0) > (metricValue(m0, 'skein_proxy_inbound_connections_total', { kind: 'plaintext' }) ?? 0), 'plaintext connections counted');
      // Callers through their proxy still use mTLS in permissive mode.
      const r = await get(outPort, 'users');
      assert.equal(JSON.parse(r.body).headers['x-skein-client-id'], idOf('web'));
    } finally {
      await setMode('strict');
    }
    await waitFor(async () => (await get(inPort, 'users')).status === 403, { timeoutMs: 10_000, what: 'plaintext refused again once users is strict' });
  });

  test('a join token works once: a second proxy with the same token does not start, and says why', async () => {
    const token = await mint('proxy-c', ['web']);
    const c = await startProxy({ control: cp.http, workloads: ['name=web-2,service=web,outbound=127.0.0.1:0'], args: ['--mtls', 'strict', '--join-token', token, '--id', 'proxy-c'] });
    cleanups.push(() => c.stop());
    await waitForProxyReady(c);
    const again = await run(process.execPath, [join(import.meta.dirname, '..', '..', 'bin', 'skein.js'), 'proxy', '--control', cp.http, '--admin', 'off', '--workload', 'name=web-3,service=web,outbound=127.0.0.1:0', '--mtls', 'strict', '--join-token', token], { timeoutMs: 15_000 });
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /SKEIN_E_TOKEN_USED|already used|spent/i, again.stderr);
    const none = await run(process.execPath, [join(import.meta.dirname, '..', '..', 'bin', 'skein.js'), 'proxy', '--control', cp.http, '--admin', 'off', '--mtls', 'strict'], { timeoutMs: 15_000 });
    assert.equal(none.code, 2, 'a usage error');
    assert.match(none.stderr, /--mtls strict needs a join token/);
  });
});

/** How long the renewal test keeps its load up at least (SKEIN_RENEWAL_SOAK_MS, e.g. 300000 for the 5 minutes); by default until both proxies renewed, and 10 s more. */
const SOAK_MS = Number(process.env['SKEIN_RENEWAL_SOAK_MS'] ?? 0);

describe('certificates of 60 s renewed under steady load', () => {
  test('both proxies renew (50-70% of the lifetime), and not one request fails across the swaps', { timeout: 180_000 + SOAK_MS }, async () => {
    const dir = await tempDir('skein-mtls-renew-');
    cleanups.push(dir.remove);
    const control = await startControl({ dataDir: join(dir.path, 'data'), args: ['--dns', 'off', '--leaf-lifetime', '1m'] });
    cleanups.push(() => control.stop());
    const { port } = await echoApp();
    const b = await meshProxy('renew-b', ['users'], [`name=users-1,service=users,inbound=127.0.0.1:0,app=127.0.0.1:${port}`], control);
    const a = await meshProxy('renew-a', ['web'], ['name=web-1,service=web,outbound=127.0.0.1:0'], control);
    await registerInstance(control.http, 'users', 'users-1', b.workload('users-1').inbound!.port, { labels: { 'skein.io/inbound-proxy': 'true' } });
    await knows(a, 'users');
    const out = a.workload('web-1').outbound!.port;
    const renewed = async (p: ProxyProcess) => metricValue(await metrics(p), 'skein_proxy_certificate_renewals_total', { result: 'ok' }) ?? 0;
    let ok = 0;
    const failures: string[] = [];
    // Until both have renewed (each at 30-42 s), and 10 s past that: keep-alive and new connections.
    let bothAt = 0;
    const started = Date.now();
    while (bothAt === 0 || Date.now() - bothAt < 10_000 || Date.now() - started < SOAK_MS) {
      const r = await get(out, 'users').catch((e: Error) => ({ status: 0, body: e.message, headers: {} }));
      if (r.status === 200) ok++;
      else failures.push(`${r.status} ${r.body.slice(0, 200)}`);
      if (bothAt === 0 && ok % 20 === 0 && (await renewed(a)) >= 1 && (await renewed(b)) >= 1) bothAt = Date.now();
      if (bothAt === 0) assert.ok(Date.now() - started < 120_000, 'both proxies renewed within 2 minutes');
    }
    assert.deepEqual(failures, [], `${ok} ok`);
    if (SOAK_MS > 0) console.log(`renewal soak: ${ok} requests in ${Math.round((Date.now() - started) / 1000)} s, 0 failed; renewals: ${await renewed(a)} + ${await renewed(b)}`);
    assert.ok(ok > 100, `${ok} requests`);
    // The new certificates are the ones in use: a fresh expiry about a minute away.
    const exp = metricValue(await metrics(a), 'skein_proxy_certificate_expiry_timestamp_seconds', { service: 'web', identity: `spiffe://${(await api(control.http, 'GET', '/v1/ca')).body.trustDomain}/ns/default/sa/web` }) ?? 0;
    assert.ok(exp * 1000 - Date.now() > 20_000, 'the renewed certificate is valid for a while yet');
  });
});
