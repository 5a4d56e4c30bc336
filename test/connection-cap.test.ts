/**
 * A listener at its connection cap (issue 11 §8): idle and half-sent connections make room for a
 * new client, busy ones are never closed for it, and only when every connection is busy with a
 * request is the new one refused, with a 503 SKEIN_E_CONNECTION_LIMIT it can read. Real sockets:
 * a control plane, `skein proxy --max-connections 50` and a node:http app that holds requests to
 * /hold until the test releases them.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { assertErrorBody, httpGet, metricValue, openRaw, registerInstance, scrapeMetrics, startProxy, waitForProxyReady, type ProxyProcess, type RawConnection } from './proxy-helpers.js';

const CAP = 50;
const HEAD = 'GET / HTTP/1.1\r\nHost: app\r\n\r\n';
const HOLD = 'GET /hold HTTP/1.1\r\nHost: app\r\n\r\n';

let dir: Awaited<ReturnType<typeof tempDir>>;
let control: ControlProcess;
let proxy: ProxyProcess;
let app: http.Server;
let port = 0;
const held: http.ServerResponse[] = [];
const all: RawConnection[] = [];

before(async () => {
  app = http.createServer((req, res) => {
    if (req.url === '/hold') held.push(res);
    else res.end('ok');
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  dir = await tempDir('skein-cap-');
  control = await startControl({ dataDir: dir.path, args: ['--dns', 'off'] });
  await registerInstance(control.http, 'app', 'app-1', (app.address() as AddressInfo).port);
  proxy = await startProxy({ control: control.http, workloads: ['name=client,outbound=127.0.0.1:0'], args: ['--max-connections', String(CAP)] });
  await waitForProxyReady(proxy);
  port = proxy.workload('client').outbound!.port;
});

after(async () => {
  for (const c of all) c.destroy();
  for (const r of held) r.destroy();
  await proxy?.stop();
  await control?.stop();
  app?.closeAllConnections();
  app?.close();
  await dir?.remove();
});

async function open(): Promise<RawConnection> {
  const c = await openRaw(port);
  all.push(c);
  return c;
}

/** A connection that made one request and waits, open, between requests. */
async function idle(): Promise<RawConnection> {
  const c = await open();
  c.write(HEAD);
  assert.equal((await c.readResponse()).status, 200);
  return c;
}

/** A connection still sending its request head. */
async function halfSent(): Promise<RawConnection> {
  const c = await open();
  c.write('GET / HTTP/1.1\r\nHost: app\r\nx-slow: ');
  return c;
}

/** A connection with a request in flight (the app holds it). */
async function busy(): Promise<RawConnection> {
  const c = await open();
  const before = held.length;
  c.write(HOLD);
  await waitFor(() => held.length > before, { what: 'the app to hold the request' });
  return c;
}

async function openConnections(): Promise<number> {
  return metricValue(await scrapeMetrics(proxy), 'skein_proxy_connections_open', { workload: 'client', direction: 'outbound' }) ?? 0;
}

async function release(): Promise<void> {
  for (const r of held.splice(0)) r.end('released');
}

test('at the cap, idle and half-sent connections make way for new clients; busy ones are served to the end', async () => {
  const busyOnes: RawConnection[] = [];
  for (let i = 0; i < 20; i++) busyOnes.push(await busy());
  const idleOnes: RawConnection[] = [];
  for (let i = 0; i < 15; i++) idleOnes.push(await idle());
  const slowOnes: RawConnection[] = [];
  for (let i = 0; i < 15; i++) slowOnes.push(await halfSent());
  await waitFor(async () => (await openConnections()) === CAP, { what: `${CAP} connections open` });

  // A real client's request (a new connection) is served, and one waiting connection made way.
  const r = await httpGet(port, '/', { headers: { host: 'app' } });
  assert.equal(r.status, 200, `${r.status} ${r.body}`);
  assert.equal(r.body, 'ok');
  await waitFor(() => [...idleOnes, ...slowOnes].filter((c) => c.closed).length === 1, { what: 'one idle or half-sent connection to be closed' });

  // Thirty more clients that stay connected: every idle and half-sent connection goes, no busy one.
  const newcomers: RawConnection[] = [];
  for (let i = 0; i < 30; i++) newcomers.push(await idle());
  await waitFor(() => [...idleOnes, ...slowOnes].every((c) => c.closed), { what: 'every idle and half-sent connection to be closed' });
  assert.ok(
    busyOnes.every((c) => !c.closed),
    'no busy connection was closed',
  );
  const text = await scrapeMetrics(proxy);
  const evicted = (state: string) => metricValue(text, 'skein_proxy_connections_evicted_total', { workload: 'client', direction: 'outbound', state }) ?? 0;
  assert.equal(evicted('head'), 15, 'the half-sent ones');
  assert.ok(evicted('idle') >= 15, `idle evictions: ${evicted('idle')}`);

  // The busy ones finish normally.
  await release();
  for (const c of busyOnes) {
    const res = await c.readResponse();
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'released');
  }
  for (const c of [...busyOnes, ...newcomers]) c.destroy();
  await waitFor(async () => (await openConnections()) === 0, { what: 'every connection closed' });
});

test('with every connection busy mid-request, a new one is answered 503 SKEIN_E_CONNECTION_LIMIT and closed', async () => {
  const busyOnes: RawConnection[] = [];
  for (let i = 0; i < CAP; i++) busyOnes.push(await busy());
  await waitFor(async () => (await openConnections()) === CAP, { what: `${CAP} connections open` });
  const before = metricValue(await scrapeMetrics(proxy), 'skein_proxy_errors_total', { direction: 'outbound', code: 'SKEIN_E_CONNECTION_LIMIT' }) ?? 0;

  // What a client sees: a complete 503 answer it can read, naming the cause, then the close.
  const refused = await open();
  refused.write(HEAD);
  const res = await refused.readResponse();
  assert.equal(res.status, 503);
  assert.equal(res.headers['x-skein-error'], 'SKEIN_E_CONNECTION_LIMIT');
  assert.equal(res.headers['connection'], 'close');
  assertErrorBody(res.body, 'SKEIN_E_CONNECTION_LIMIT');
  assert.match(JSON.parse(res.body.toString()).message as string, /50 connections \(limits\.maxConnections\), every one busy with a request/);
  await refused.waitClosed();
  const viaHttp = await httpGet(port, '/', { headers: { host: 'app' } });
  assert.equal(viaHttp.status, 503);
  assert.equal(viaHttp.headers['x-skein-error'], 'SKEIN_E_CONNECTION_LIMIT');
  const after = metricValue(await scrapeMetrics(proxy), 'skein_proxy_errors_total', { direction: 'outbound', code: 'SKEIN_E_CONNECTION_LIMIT' }) ?? 0;
  assert.equal(after - before, 2);
  assert.ok(
    busyOnes.every((c) => !c.closed),
    'no busy connection was closed',
  );

  // Once requests finish, their connections are idle again and new clients get in.
  await release();
  for (const c of busyOnes) assert.equal((await c.readResponse()).status, 200);
  await waitFor(async () => (await httpGet(port, '/', { headers: { host: 'app' } })).status === 200, { what: 'a new client to be served' });
  for (const c of busyOnes) c.destroy();
});
