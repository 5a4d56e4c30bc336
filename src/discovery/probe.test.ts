import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer, type Socket, type AddressInfo } from 'node:net';
import { parseInstance } from '../api/parse.js';
import type { HealthCheck, Instance } from '../api/types.js';
import { probe, probeHttp, probeTcp } from './probe.js';

function listen(server: HttpServer | TcpServer): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

function close(server: HttpServer | TcpServer): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

function target(port: number, check: Record<string, unknown>): { instance: Instance; check: HealthCheck } {
  const instance = parseInstance({ id: 'i1', service: 'web', address: '127.0.0.1', port, check });
  return { instance, check: instance.check as HealthCheck };
}

/** An HTTP server answering GET /status/NNN with NNN, recording what it was asked. */
const requests: Array<{ method: string; url: string; ua: string | undefined }> = [];
const http = createHttpServer((req, res) => {
  requests.push({ method: req.method ?? '', url: req.url ?? '', ua: req.headers['user-agent'] });
  const m = /^\/status\/(\d{3})$/.exec(req.url ?? '');
  res.statusCode = m === null ? 404 : Number(m[1]);
  res.end('body');
});
/** An HTTP server that accepts the connection and never answers. */
const silent = createHttpServer(() => {});
const silentSockets = new Set<Socket>();
silent.on('connection', (s) => {
  silentSockets.add(s);
  s.on('close', () => silentSockets.delete(s));
});
const tcp = createTcpServer((s) => s.end());

let httpPort = 0;
let silentPort = 0;
let tcpPort = 0;
/** A port that was bound and then released: nothing listens there. */
let closedPort = 0;

before(async () => {
  httpPort = await listen(http);
  silentPort = await listen(silent);
  tcpPort = await listen(tcp);
  const tmp = createTcpServer();
  closedPort = await listen(tmp);
  await close(tmp);
});

after(async () => {
  for (const s of silentSockets) s.destroy();
  http.closeAllConnections();
  await Promise.all([close(http), close(silent), close(tcp)]);
});

test('HTTP 200 passes', async () => {
  const { instance, check } = target(httpPort, { type: 'http', path: '/status/200' });
  const r = await probeHttp(instance, check);
  assert.deepEqual(r, { ok: true, reason: 'HTTP 200 from GET /status/200' });
  const last = requests.at(-1);
  assert.deepEqual(last, { method: 'GET', url: '/status/200', ua: 'skein-health-check' });
});

test('HTTP 503 fails with a reason naming the status', async () => {
  const { instance, check } = target(httpPort, { type: 'http', path: '/status/503' });
  const r = await probeHttp(instance, check);
  assert.equal(r.ok, false);
  assert.match(r.reason, /HTTP 503/);
  assert.equal(r.reason, 'HTTP 503 from GET /status/503 (expected 200-399)');
});

test('the default range 200-399 counts redirects as passing and 4xx as failing', async () => {
  for (const [code, ok] of [[204, true], [302, true], [399, true], [400, false], [404, false], [500, false]] as const) {
    const { instance, check } = target(httpPort, { type: 'http', path: `/status/${code}` });
    assert.equal((await probeHttp(instance, check)).ok, ok, String(code));
  }
});

test('expectedStatus narrows or moves the passing range', async () => {
  const exact = target(httpPort, { type: 'http', path: '/status/200', expectedStatus: '204' });
  const r = await probeHttp(exact.instance, exact.check);
  assert.equal(r.ok, false);
  assert.equal(r.reason, 'HTTP 200 from GET /status/200 (expected 204-204)');
  const range = target(httpPort, { type: 'http', path: '/status/404', expectedStatus: '400-404' });
  assert.equal((await probeHttp(range.instance, range.check)).ok, true);
  const edge = target(httpPort, { type: 'http', path: '/status/405', expectedStatus: '400-404' });
  assert.equal((await probeHttp(edge.instance, edge.check)).ok, false);
});

test('HEAD and a check port other than the instance port', async () => {
  const instance = parseInstance({
    id: 'i1',
    service: 'web',
    address: '127.0.0.1',
    port: closedPort,
    check: { type: 'http', method: 'HEAD', path: '/status/200', port: httpPort },
  });
  const r = await probe(instance, instance.check as HealthCheck);
  assert.deepEqual(r, { ok: true, reason: 'HTTP 200 from HEAD /status/200' });
  assert.equal(requests.at(-1)?.method, 'HEAD');
});

test('a server that never answers times out after the check timeout', async () => {
  const { instance, check } = target(silentPort, { type: 'http', timeout: '200ms' });
  const started = Date.now();
  const r = await probeHttp(instance, check);
  assert.equal(r.ok, false);
  assert.equal(r.reason, 'GET /health timed out after 200ms');
  assert.ok(Date.now() - started >= 150, 'it waited for the timeout');
});

test('HTTP against a closed port: connection refused', async () => {
  const { instance, check } = target(closedPort, { type: 'http', timeout: '2s' });
  const r = await probeHttp(instance, check);
  assert.equal(r.ok, false);
  assert.equal(r.reason, 'GET /health: ECONNREFUSED');
});

test('TCP connect passes against a listener', async () => {
  const { instance, check } = target(tcpPort, { type: 'tcp' });
  const r = await probeTcp(instance, check);
  assert.deepEqual(r, { ok: true, reason: `TCP connect to port ${tcpPort} succeeded` });
  assert.deepEqual(await probe(instance, check), r, 'probe() dispatches tcp checks to probeTcp');
});

test('TCP connect to a closed port is refused', async () => {
  const { instance, check } = target(closedPort, { type: 'tcp' });
  const r = await probeTcp(instance, check);
  assert.equal(r.ok, false);
  assert.equal(r.reason, `TCP connect to port ${closedPort}: ECONNREFUSED`);
});

test('TCP checks use the check port when set', async () => {
  const { instance, check } = target(closedPort, { type: 'tcp', port: tcpPort });
  const r = await probeTcp(instance, check);
  assert.equal(r.ok, true);
  assert.match(r.reason, new RegExp(`port ${tcpPort}`));
});
