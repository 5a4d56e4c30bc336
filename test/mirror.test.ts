/**
 * Traffic mirroring end to end (docs/traffic.md, "Mirroring"): a control plane and a proxy as
 * child processes, node:http backends. A route's copies reach the mirror subset or service with
 * the Host suffixed and the body intact; idempotent methods only unless the mirror says otherwise;
 * a body larger than retries.maxBodyBytes is not copied; the share is a share; copies in flight
 * are capped (the rest dropped and counted); a copy that outlives its timeout is abandoned; a slow
 * or dead mirror never fails a primary request and never counts against the primary's endpoints,
 * breakers or golden signals (the copies have their own series).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { Socket } from 'node:net';
import { api, closedPort, mapLimit, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { httpGet, metricValue, registerInstance, scrapeMetrics, startProxy, waitForProxyReady, type ProxyProcess } from './proxy-helpers.js';

interface Seen {
  method: string;
  url: string;
  host: string;
  body: Buffer;
}

interface Backend {
  port: number;
  seen: Seen[];
  /** Requests held (not answered) while `hold` is on; answered by `release`. */
  hold: boolean;
  /** Client connections open now. */
  readonly open: number;
  release(): void;
  close(): Promise<void>;
}

/** A backend that records what it gets and answers `status`, or holds answers while `hold` is on. */
async function backend(name: string, status = 200): Promise<Backend> {
  const sockets = new Set<Socket>();
  const held: http.ServerResponse[] = [];
  const answer = (res: http.ServerResponse) => {
    const body = JSON.stringify({ from: name });
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      b.seen.push({ method: req.method ?? '', url: req.url ?? '', host: req.headers.host ?? '', body: Buffer.concat(chunks) });
      if (b.hold) held.push(res);
      else answer(res);
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  const b: Backend = {
    port: 0,
    seen: [],
    hold: false,
    get open() {
      return sockets.size;
    },
    release() {
      this.hold = false;
      for (const r of held.splice(0)) answer(r);
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  b.port = (server.address() as { port: number }).port;
  return b;
}

/** A request to service `host` through the proxy's outbound listener, with a body when given. */
function send(port: number, method: string, path: string, host: string, body?: Buffer): Promise<{ status: number; from: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, agent: false, timeout: 10_000, headers: { host, ...(body === undefined ? {} : { 'content-length': body.length }) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        let from: string | undefined;
        try {
          from = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { from?: string }).from;
        } catch {
          from = undefined;
        }
        resolve({ status: res.statusCode ?? 0, from });
      });
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', reject);
    req.end(body);
  });
}

let dir: Awaited<ReturnType<typeof tempDir>>;
let control: ControlProcess;
let proxy: ProxyProcess;
let outbound: number;
let v1: Backend;
let v2: Backend;
let shadow: Backend;
let primary: Backend;

const put = async (name: string, body: object) => {
  const r = await api(control.http, 'PUT', `/v1/services/${name}`, body);
  assert.ok(r.status === 200 || r.status === 201, JSON.stringify(r.body));
};

/** The proxy's mirror of service `shop` is `m` (waits until the proxy has it: a copy arrives). */
async function mirrorOf(service: string, m: object | null, extra: object = {}): Promise<void> {
  const body = service === 'shop' ? { backends: [{ subset: { version: 'v1' } }], retries: { maxBodyBytes: 1024 }, ...extra } : { ...extra };
  await put(service, m === null ? body : { ...body, mirror: m });
}

/** Waits until `count` stops changing (the same in two reads 200 ms apart). */
async function settled(count: () => number): Promise<void> {
  let last = -1;
  await waitFor(() => {
    const n = count();
    const same = n === last;
    last = n;
    return same;
  }, { intervalMs: 200, what: 'the copies to stop coming' });
}

const metric = async (name: string, labels: Record<string, string>) => metricValue(await scrapeMetrics(proxy), name, labels) ?? 0;

before(async () => {
  dir = await tempDir('skein-mirror-');
  control = await startControl({ dataDir: dir.path, args: ['--dns', 'off'] });
  v1 = await backend('v1');
  v2 = await backend('v2');
  shadow = await backend('shadow');
  primary = await backend('primary');
  await mirrorOf('shop', { subset: { version: 'v2' } });
  await put('shadow', {});
  await put('web', {});
  await registerInstance(control.http, 'shop', 'shop-v1', v1.port, { version: 'v1' });
  await registerInstance(control.http, 'shop', 'shop-v2', v2.port, { version: 'v2' });
  await registerInstance(control.http, 'shadow', 'shadow-1', shadow.port);
  await registerInstance(control.http, 'web', 'web-1', primary.port);
  proxy = await startProxy({ control: control.http, workloads: ['name=client,outbound=127.0.0.1:0'] });
  await waitForProxyReady(proxy);
  outbound = proxy.workload('client').outbound?.port as number;
});

after(async () => {
  await proxy?.stop();
  await control?.stop();
  for (const b of [v1, v2, shadow, primary]) await b?.close();
  await dir?.remove();
});

test('a route mirrors to a subset: each GET and PUT is copied with "-shadow" on its Host and its body intact; POST and an oversized body are not', async () => {
  await waitFor(async () => (await send(outbound, 'GET', '/warm', 'shop')).status === 200 && v2.seen.length > 0, { what: 'a first copy at v2' });
  v1.seen.length = 0;
  v2.seen.length = 0;
  const before0 = await metric('skein_proxy_mirror_requests_total', { service: 'shop', mirror: 'shop', subset: 'version=v2', status: '200', class: 'success' });
  for (let i = 0; i < 30; i++) {
    const r = await send(outbound, 'GET', `/items/${i}?q=${i}`, 'shop:8080');
    assert.equal(r.status, 200);
    assert.equal(r.from, 'v1', 'the primary answers, never the mirror');
  }
  const body = Buffer.alloc(1000, 'b');
  body.write('first-and-last', 0);
  assert.equal((await send(outbound, 'PUT', '/items/put', 'shop', body)).status, 200);
  assert.equal((await send(outbound, 'POST', '/items/post', 'shop', body)).status, 200);
  assert.equal((await send(outbound, 'PUT', '/items/big', 'shop', Buffer.alloc(4096, 'x'))).status, 200);
  await waitFor(() => v2.seen.length >= 31, { what: '31 copies at v2' });
  assert.equal(v1.seen.length, 33, 'every primary request reached v1 once');
  // The copies: the 30 GETs and the PUT, in order, each with the Host suffixed before its port.
  assert.deepEqual(
    v2.seen.slice(0, 30).map((s) => `${s.method} ${s.url} ${s.host}`),
    Array.from({ length: 30 }, (_, i) => `GET /items/${i}?q=${i} shop-shadow:8080`),
  );
  const p = v2.seen[30] as Seen;
  assert.equal(`${p.method} ${p.url} ${p.host}`, 'PUT /items/put shop-shadow');
  assert.equal(p.body.length, 1000);
  assert.ok(p.body.equals(body), 'the copy carries the body byte for byte');
  // Give a stray POST or big copy time to show up, then check none did.
  await send(outbound, 'GET', '/last', 'shop');
  await waitFor(() => v2.seen.some((s) => s.url === '/last'), { what: 'the last copy' });
  assert.deepEqual(
    v2.seen.filter((s) => s.url === '/items/post' || s.url === '/items/big').map((s) => s.url),
    [],
    'POST is not copied (not idempotent) and a 4 KiB body is more than retries.maxBodyBytes (1 KiB)',
  );
  await waitFor(async () => (await metric('skein_proxy_mirror_requests_total', { service: 'shop', mirror: 'shop', subset: 'version=v2', status: '200', class: 'success' })) - before0 === 32, {
    what: '32 copies counted as 200s',
  });
  assert.equal(await metric('skein_proxy_mirror_dropped_total', { service: 'shop', mirror: 'shop', subset: 'version=v2', reason: 'body' }), 1);
  // The golden signals see the primaries only: no request of shop is counted against v2.
  const text = await scrapeMetrics(proxy);
  assert.equal(metricValue(text, 'skein_proxy_requests_total', { service: 'shop', version: 'v2' }), undefined);
  assert.ok((metricValue(text, 'skein_proxy_requests_total', { service: 'shop', version: 'v1', status: '200' }) ?? 0) >= 34);
});

test('nonIdempotent copies POST too; percent copies a share (400 requests at 25%)', async () => {
  await mirrorOf('shop', { subset: { version: 'v2' }, nonIdempotent: true });
  await waitFor(
    async () => {
      const n = v2.seen.length;
      await send(outbound, 'POST', '/probe-post', 'shop', Buffer.from('{}'));
      return waitFor(() => v2.seen.length > n, { timeoutMs: 300 }).then(
        () => v2.seen.at(-1)?.url === '/probe-post',
        () => false,
      );
    },
    { what: 'a POST copied once the mirror says nonIdempotent' },
  );
  await mirrorOf('shop', { subset: { version: 'v2' }, percent: 25 });
  // Until the proxy has the new policy, every request is copied: probe until one is not.
  await waitFor(
    async () => {
      const n = v2.seen.length;
      for (let i = 0; i < 8; i++) await send(outbound, 'GET', '/probe', 'shop');
      await send(outbound, 'GET', '/probe-end', 'shop');
      return v2.seen.length - n < 9;
    },
    { what: 'the 25% share in force' },
  );
  const n0 = v2.seen.length;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const replies = await mapLimit(Array.from({ length: 400 }), 8, (_, i) => httpGet(outbound, `/share/${i}`, { agent, headers: { host: 'shop' } }));
  agent.destroy();
  assert.equal(replies.filter((r) => r.status !== 200).length, 0);
  // A bodyless request's copy leaves with it: once the last primary is answered, the copies are out.
  await settled(() => v2.seen.length);
  const copies = v2.seen.length - n0;
  // Binomial(400, 0.25): mean 100, sd 8.7; ±35 is four sd.
  assert.ok(copies >= 65 && copies <= 135, `${copies} of 400 copied at 25%`);
});

test('copies in flight are capped (the rest dropped and counted), and a copy that outlives its timeout is abandoned', async () => {
  shadow.seen.length = 0;
  shadow.hold = true;
  await mirrorOf('web', { service: 'shadow', maxInFlight: 4, timeout: '1500ms' });
  await waitFor(
    async () => {
      await send(outbound, 'GET', '/probe', 'web');
      return shadow.seen.length > 0;
    },
    { what: 'a first copy at the shadow service' },
  );
  const dropped0 = await metric('skein_proxy_mirror_dropped_total', { service: 'web', mirror: 'shadow', reason: 'limit' });
  for (let i = 0; i < 20; i++) assert.equal((await send(outbound, 'GET', `/capped/${i}`, 'web')).status, 200, 'a held copy never holds the primary');
  // One copy (the probe) was out: 3 more go, 17 are dropped.
  await waitFor(() => shadow.seen.length === 4, { what: '4 copies held at the shadow' });
  assert.equal((await metric('skein_proxy_mirror_dropped_total', { service: 'web', mirror: 'shadow', reason: 'limit' })) - dropped0, 17);
  // The held copies run out of time: counted as failures without a status, and their places free.
  await waitFor(async () => (await metric('skein_proxy_mirror_requests_total', { service: 'web', mirror: 'shadow', status: '0', class: 'failure' })) >= 4, { what: 'the 4 held copies abandoned at their timeout' });
  // Abandoned means let go: the proxy closed the 4 connections it held them on.
  await waitFor(() => shadow.open === 0, { what: 'the abandoned copies\' connections closed' });
  shadow.release();
  const n = shadow.seen.length;
  assert.equal((await send(outbound, 'GET', '/after', 'web')).status, 200);
  await waitFor(() => shadow.seen.length === n + 1, { what: 'a copy sent again once the held ones were abandoned' });
  await waitFor(async () => (await metric('skein_proxy_mirror_requests_total', { service: 'web', mirror: 'shadow', status: '200', class: 'success' })) >= 1);
});

test('a dead mirror fails no primary request and counts against nothing of the primary', async () => {
  const dead = await closedPort();
  await put('ghost', { outlierDetection: { consecutiveLocalOriginFailure: 1 } });
  await registerInstance(control.http, 'ghost', 'ghost-1', dead);
  await mirrorOf('web', { service: 'ghost' }, { outlierDetection: { consecutive5xx: 1, consecutiveLocalOriginFailure: 1 }, breaker: { consecutiveFailures: 1 } });
  const failed = () => metric('skein_proxy_mirror_requests_total', { service: 'web', mirror: 'ghost', status: '0', class: 'failure' });
  await waitFor(
    async () => {
      assert.equal((await send(outbound, 'GET', '/probe', 'web')).status, 200);
      return (await failed()) > 0;
    },
    { what: 'a failed copy to the dead mirror' },
  );
  const skipped = () => metric('skein_proxy_mirror_dropped_total', { service: 'web', mirror: 'ghost', reason: 'backoff' });
  const f0 = await failed();
  const s0 = await skipped();
  for (let i = 0; i < 50; i++) assert.equal((await send(outbound, 'GET', `/dead/${i}`, 'web')).status, 200);
  // The dead endpoint refused a connection: it is skipped for 1 s, then 2 s, ... (each copy would
  // cost a failed connect); every one of the 50 is counted, as failed or as skipped.
  await waitFor(async () => (await failed()) - f0 + ((await skipped()) - s0) === 50, { what: '50 copies counted, failed or skipped' });
  const tried = (await failed()) - f0;
  assert.ok(tried <= 5, `at most a handful of connects to the dead mirror in a few seconds of backoff (${tried})`);
  const text = await scrapeMetrics(proxy);
  // The primary's series: only 200s, no proxy errors, no ejection or breaker change for web or ghost.
  assert.equal(metricValue(text, 'skein_proxy_requests_total', { service: 'web', class: 'failure' }), undefined);
  assert.equal(metricValue(text, 'skein_proxy_requests_total', { service: 'ghost' }), undefined, 'copies are not requests of the golden signals');
  assert.equal(metricValue(text, 'skein_proxy_outlier_events_total', { service: 'web' }), undefined);
  assert.equal(metricValue(text, 'skein_proxy_outlier_events_total', { service: 'ghost' }), undefined, 'a copy is no evidence against the mirror either');
  assert.equal(metricValue(text, 'skein_proxy_breaker_transitions_total', { service: 'web' }), undefined);
  assert.equal(metricValue(text, 'skein_proxy_retries_total', { service: 'web' }), undefined);
});

test('a mirror that names neither a service nor a subset, or a bad suffix, is refused with the field', async () => {
  const r = await api(control.http, 'PUT', '/v1/services/shop', { routes: [{ name: 'r', mirror: { percent: 10 } }] });
  assert.equal(r.status, 400);
  assert.match(JSON.stringify(r.body), /routes\[0\]\.mirror/);
  assert.match(JSON.stringify(r.body), /names neither a service nor a subset/);
  const s = await api(control.http, 'PUT', '/v1/services/shop', { mirror: { service: 'shadow', hostSuffix: 'has space' } });
  assert.equal(s.status, 400);
  assert.match(JSON.stringify(s.body), /mirror\/hostSuffix|mirror\.hostSuffix/);
});
