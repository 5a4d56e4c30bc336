/**
 * The fault-tolerance features of `skein proxy` (docs/traffic.md), end to end on real sockets: a
 * control plane and two proxies as child processes, node:http backends written here.
 *
 * Covered: timeouts and deadline propagation, retries (statuses, methods, kept bodies, the retry
 * budget), limits, the failure-accrual breaker, outlier detection, the proxy's own active health
 * checks, rate limits (outbound, inbound per caller, per route), fault injection, the explain
 * header, and policies that are refused.
 *
 * One control plane and one proxy (P, workloads `client`, `a` and `b`) serve every test; each test
 * uses services of its own, so the per-service state of the proxy (budget, breakers, ejections,
 * buckets) of one test never meets another's. A second proxy (Q) carries an inbound listener for
 * the inbound rate-limit test.
 *
 * The backends share one attempt counter per x-request-id (the proxy keeps the request id across
 * the attempts of a request): a script can answer "the first attempt of every request fails, the
 * next one succeeds", which makes retries deterministic whatever endpoint the balancer picks
 * first.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import http, { type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import { createConnection, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import { api, closedPort, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { metricValue, registerInstance, scrapeMetrics, startProxy, waitForProxyReady, type ProxyProcess } from './proxy-helpers.js';
import { INBOUND_PROXY_LABEL } from '../src/api/names.js';

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/** A request as a backend saw it. */
interface Hit {
  /** The instance id of the backend. */
  backend: string;
  method: string;
  url: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** Raw header pairs, to count repeated fields. */
  rawHeaders: string[];
  rid: string;
  /** 1 for the first attempt of this x-request-id seen by any backend, 2 for the second... */
  attempt: number;
  /** performance.now() when the request head arrived. */
  at: number;
  body: Buffer;
  done: boolean;
}

type Action = { kind: 'ok' } | { kind: 'status'; status: number } | { kind: 'hang' } | { kind: 'reset' } | { kind: 'slow'; ms: number };
type Script = (h: Hit) => Action;

const OK: Action = { kind: 'ok' };
const HANG: Action = { kind: 'hang' };
const RESET: Action = { kind: 'reset' };
const status = (s: number): Action => ({ kind: 'status', status: s });

/** Attempts per x-request-id, over every backend. */
const attemptsByRid = new Map<string, number>();

interface Backend {
  id: string;
  port: number;
  hits: Hit[];
  script: Script;
  /** Answers every held (hanging) request with 200. */
  release(): void;
  close(): Promise<void>;
}

/**
 * A node:http backend registered as instance `id`. Each request is recorded when its head
 * arrives; once its body is complete, `script` decides: 200 with JSON `{backend, attempt, url}`,
 * another status, hang (held until `release` or close), or reset (the socket destroyed).
 */
async function startBackend(id: string, script: Script = () => OK): Promise<Backend> {
  const sockets = new Set<Socket>();
  const held: ServerResponse[] = [];
  const answer = (res: ServerResponse, h: Hit, code: number) => {
    const body = JSON.stringify({ backend: id, attempt: h.attempt, url: h.url, status: code });
    res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-served-by': id });
    res.end(body);
  };
  const b: Backend = {
    id,
    port: 0,
    hits: [],
    script,
    release() {
      for (const res of held.splice(0)) {
        if (res.writableEnded || res.destroyed) continue;
        const body = JSON.stringify({ backend: id, released: true });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-served-by': id });
        res.end(body);
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  const server = http.createServer((req, res) => {
    const rid = String(req.headers['x-request-id'] ?? '');
    const attempt = (attemptsByRid.get(rid) ?? 0) + 1;
    attemptsByRid.set(rid, attempt);
    const url = req.url ?? '';
    const h: Hit = {
      backend: id,
      method: req.method ?? '',
      url,
      path: url.split('?')[0] as string,
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      rid,
      attempt,
      at: performance.now(),
      body: Buffer.alloc(0),
      done: false,
    };
    b.hits.push(h);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => {});
    req.on('end', () => {
      h.body = Buffer.concat(chunks);
      h.done = true;
      const a = b.script(h);
      switch (a.kind) {
        case 'ok':
          answer(res, h, 200);
          return;
        case 'status':
          answer(res, h, a.status);
          return;
        case 'hang':
          held.push(res);
          return;
        case 'reset':
          req.socket.destroy();
          return;
        case 'slow':
          // A slow app: the answer comes `ms` after the request.
          setTimeout(() => answer(res, h, 200), a.ms);
          return;
      }
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  b.port = (server.address() as { port: number }).port;
  return b;
}

/** The hits of one request (by x-request-id) over these backends, in attempt order. */
function hitsOf(rid: string, backends: Backend[]): Hit[] {
  return backends.flatMap((b) => b.hits.filter((h) => h.rid === rid)).sort((x, y) => x.attempt - y.attempt);
}

/** Hits of a backend, /health probes left out. */
const appHits = (b: Backend) => b.hits.filter((h) => h.path !== '/health');

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

// ---------------------------------------------------------------------------------------------
// A client
// ---------------------------------------------------------------------------------------------

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  /** The body as JSON, or undefined. */
  json: any;
  rid: string;
}

/**
 * One request to the proxy's listener at `port` on a new connection, Host `service`. A fresh
 * x-request-id is sent (given back as `rid`). `body` as one Buffer goes with Content-Length; as
 * an array of Buffers, chunked.
 */
function send(
  port: number,
  service: string,
  opts: { method?: string; path?: string; headers?: Record<string, string>; body?: Buffer | Buffer[]; timeoutMs?: number } = {},
): Promise<Reply> {
  const rid = randomUUID();
  const headers: Record<string, string | number> = { host: service, 'x-request-id': rid, ...(opts.headers ?? {}) };
  if (Buffer.isBuffer(opts.body)) headers['content-length'] = opts.body.length;
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: opts.method ?? 'GET', path: opts.path ?? '/', headers, agent: false, timeout: opts.timeoutMs ?? 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json, rid });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from the proxy within ${opts.timeoutMs ?? 10_000} ms (${opts.method ?? 'GET'} ${service}${opts.path ?? '/'})`)));
    req.on('error', reject);
    if (Array.isArray(opts.body)) {
      for (const c of opts.body) req.write(c);
      req.end();
    } else req.end(opts.body);
  });
}

const show = (r: Reply) => `${r.status} x-skein-error=${String(r.headers['x-skein-error'])} explain=${String(r.headers['x-skein-explain'])} ${r.text.slice(0, 600)}`;

/** The reply is a proxy error with this status and code: header, JSON body, request id. */
function assertProxyError(r: Reply, statusCode: number, code: string, what: string): void {
  assert.equal(r.status, statusCode, `${what}: status; got ${show(r)}`);
  assert.equal(r.headers['x-skein-error'], code, `${what}: x-skein-error; got ${show(r)}`);
  assert.ok(r.json !== undefined, `${what}: the body is JSON; got ${show(r)}`);
  assert.equal(r.json.code, code, `${what}: body.code; got ${show(r)}`);
  assert.equal(typeof r.json.message, 'string', `${what}: body.message`);
  assert.equal(r.json.requestId, r.rid, `${what}: body.requestId is the request's x-request-id`);
}

/** The reply came from a backend (no proxy error) with this status. */
function assertFromApp(r: Reply, statusCode: number, what: string): void {
  assert.equal(r.status, statusCode, `${what}: status; got ${show(r)}`);
  assert.equal(r.headers['x-skein-error'], undefined, `${what}: an answer of the app, not of the proxy; got ${show(r)}`);
  assert.ok(typeof r.headers['x-served-by'] === 'string', `${what}: x-served-by is set by the backend; got ${show(r)}`);
}

/** `key=value` pairs of an x-skein-explain header. */
function parseExplain(v: string | string[] | undefined): Record<string, string> {
  assert.equal(typeof v, 'string', `an x-skein-explain header: ${JSON.stringify(v)}`);
  const out: Record<string, string> = {};
  for (const part of (v as string).split('; ')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i)] = part.slice(i + 1);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The mesh
// ---------------------------------------------------------------------------------------------

let cp: ControlProcess;
let P: ProxyProcess;
/** P's outbound ports: workload client (service client), a (caller-a), b (caller-b). */
let OUT = 0;
let OUT_A = 0;
let OUT_B = 0;
const cleanups: Array<() => unknown> = [];

/** Stops what was started (in reverse order) when the run ends, whatever happened. */
function onCleanup(fn: () => unknown): void {
  cleanups.push(fn);
}

async function debugOf(p: ProxyProcess): Promise<any> {
  const r = await api(p.admin, 'GET', '/debug/endpoints');
  assert.equal(r.status, 200, `GET ${p.admin}/debug/endpoints: ${r.status}`);
  return r.body;
}

async function serviceDebug(service: string, p: ProxyProcess = P): Promise<any> {
  return (await debugOf(p)).services?.[service];
}

async function metrics(p: ProxyProcess = P): Promise<string> {
  return scrapeMetrics(p);
}

const mv = (text: string, name: string, labels: Record<string, string>) => metricValue(text, name, labels) ?? 0;

/** PUT /v1/services/{name}: the policy (and round-robin, which is also the marker that a proxy has the definition). */
async function putService(name: string, policy: Record<string, unknown>): Promise<void> {
  const r = await api(cp.http, 'PUT', `/v1/services/${name}`, { balancer: { kind: 'round-robin' }, ...policy });
  assert.ok(r.status === 200 || r.status === 201, `PUT /v1/services/${name}: ${r.status} ${JSON.stringify(r.body)}`);
}

/**
 * A service with this policy whose instances are `backends` (instance id = backend id), and a
 * proxy that knows all of it: the definition is written before the instances, and the watch
 * stream is in revision order, so a proxy that lists the instances has the definition (checked
 * too: the balancer kind it shows is the definition's round-robin).
 */
async function setupService(name: string, policy: Record<string, unknown>, backends: Array<{ id: string; port: number; labels?: Record<string, string> }>, proxies: ProxyProcess[] = [P]): Promise<void> {
  await putService(name, policy);
  for (const b of backends) await registerInstance(cp.http, name, b.id, b.port, b.labels === undefined ? {} : { labels: b.labels });
  const want = backends.map((b) => b.id).sort().join(',');
  for (const p of proxies) {
    await waitFor(
      async () => {
        const s = await serviceDebug(name, p);
        return s !== undefined && s.balancer?.kind === 'round-robin' && (s.endpoints as Array<{ id: string }>).map((e) => e.id).sort().join(',') === want;
      },
      { timeoutMs: 10_000, what: `proxy to know service ${name} with its definition and endpoints ${want}` },
    );
  }
}

/** Polls P's /debug/endpoints until the policy in force for `service` satisfies `pred`. */
async function waitForPolicy(service: string, pred: (policy: any) => boolean, what: string): Promise<void> {
  await waitFor(
    async () => {
      const s = await serviceDebug(service);
      return s?.traffic?.policy !== undefined && pred(s.traffic.policy);
    },
    { timeoutMs: 10_000, what: `the proxy to apply ${what} to ${service}` },
  );
}

/** The policy's default route (the last one). */
const defaultRoute = (policy: any) => (policy.routes as any[])[policy.routes.length - 1];

/** Starts backends for a test; closed when the run ends. */
async function backendsFor(...specs: Array<[string, Script?]>): Promise<Backend[]> {
  const out: Backend[] = [];
  for (const [id, script] of specs) {
    const b = await startBackend(id, script);
    onCleanup(() => b.close());
    out.push(b);
  }
  return out;
}

/** No retry, no breaker, no outlier detection: what a test of something else wants. */
const QUIET = { breaker: { enabled: false }, outlierDetection: { enabled: false } };

before(async () => {
  const dir = await tempDir('skein-resilience-');
  onCleanup(dir.remove);
  cp = await startControl({ dataDir: join(dir.path, 'data'), args: ['--dns', 'off'] });
  onCleanup(() => cp.stop());
  P = await startProxy({
    control: cp.http,
    workloads: ['name=client,service=client,outbound=127.0.0.1:0', 'name=a,service=caller-a,outbound=127.0.0.1:0', 'name=b,service=caller-b,outbound=127.0.0.1:0'],
  });
  onCleanup(() => P.stop());
  OUT = (P.workload('client').outbound as { port: number }).port;
  OUT_A = (P.workload('a').outbound as { port: number }).port;
  OUT_B = (P.workload('b').outbound as { port: number }).port;
  await waitForProxyReady(P);
});

after(async () => {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
});

// ---------------------------------------------------------------------------------------------
// 1. Timeouts and deadlines
// ---------------------------------------------------------------------------------------------

describe('1. timeouts and deadline propagation', () => {
  test('a per-try timeout on a hanging backend is retried on another endpoint, which answers', async () => {
    const svc = 'to-pertry';
    // The first attempt of every request hangs, wherever it lands; the second answers.
    const script: Script = (h) => (h.attempt === 1 ? HANG : OK);
    const bs = await backendsFor([`${svc}-a`, script], [`${svc}-b`, script]);
    await setupService(svc, { ...QUIET, timeouts: { request: '5s', perTry: '300ms' } }, bs);
    const before = await metrics();
    const r = await send(OUT, svc, { path: '/pt', headers: { 'x-skein-explain': '1' } });
    assertFromApp(r, 200, 'after a per-try timeout and a retry');
    const hits = hitsOf(r.rid, bs);
    assert.equal(hits.length, 2, `two attempts reached the backends: ${JSON.stringify(hits.map((h) => h.backend))}`);
    const [first, second] = hits as [Hit, Hit];
    assert.notEqual(first.backend, second.backend, 'the retry went to the other endpoint');
    assert.equal(r.json.backend, second.backend, 'the answer is the second attempt\'s');
    const ex = parseExplain(r.headers['x-skein-explain']);
    assert.equal(ex.attempts, '2', `explain counts both attempts: ${String(r.headers['x-skein-explain'])}`);
    assert.match(ex.failed ?? '', new RegExp(`^${first.backend}: no response within 300 ms`), `explain names the failed attempt: ${String(r.headers['x-skein-explain'])}`);
    assert.match(ex.endpoint ?? '', new RegExp(`^${second.backend} \\(127\\.0\\.0\\.1:\\d+\\)$`), 'explain names the endpoint that answered');
    // Each attempt carries the time left of the request timeout, and the second has less left.
    const t1 = Number(first.headers['x-skein-timeout-ms']);
    const t2 = Number(second.headers['x-skein-timeout-ms']);
    assert.ok(Number.isInteger(t1) && t1 > 0 && t1 <= 5000, `first attempt's x-skein-timeout-ms in (0, 5000]: ${String(first.headers['x-skein-timeout-ms'])}`);
    assert.ok(Number.isInteger(t2) && t2 > 0 && t2 < t1, `second attempt's x-skein-timeout-ms below the first's (${t1}): ${String(second.headers['x-skein-timeout-ms'])}`);
    const afterM = await metrics();
    assert.equal(
      mv(afterM, 'skein_proxy_retries_total', { service: svc, reason: 'per-try-timeout' }) - mv(before, 'skein_proxy_retries_total', { service: svc, reason: 'per-try-timeout' }),
      1,
      'one retry counted with reason per-try-timeout',
    );
  });

  test('a per-try timeout of a POST is not retried by default (the app may have seen it)', async () => {
    const svc = 'to-pertry-post';
    const script: Script = (h) => (h.attempt === 1 ? HANG : OK);
    const bs = await backendsFor([`${svc}-a`, script], [`${svc}-b`, script]);
    await setupService(svc, { ...QUIET, timeouts: { request: '5s', perTry: '200ms' } }, bs);
    const r = await send(OUT, svc, { method: 'POST', path: '/p', body: Buffer.from('once') });
    assertProxyError(r, 504, 'SKEIN_E_UPSTREAM_TIMEOUT', 'a POST whose only attempt ran out of its per-try timeout');
    assert.match(r.json.message, /per-try timeout of 200 ms/, `the message names the per-try timeout: ${r.json.message}`);
    assert.equal(r.json.details?.retries, 0, 'no retry');
    assert.equal(hitsOf(r.rid, bs).length, 1, 'one attempt reached a backend');
  });

  test('the overall request timeout with every backend hanging: 504 SKEIN_E_UPSTREAM_TIMEOUT naming service, route and tried endpoints', async () => {
    const svc = 'to-overall';
    const bs = await backendsFor([`${svc}-a`, () => HANG], [`${svc}-b`, () => HANG]);
    await setupService(svc, { ...QUIET, routes: [{ name: 'slow', match: { pathPrefix: '/slow' }, timeouts: { request: '600ms', perTry: '250ms' } }] }, bs);
    const r = await send(OUT, svc, { path: '/slow/x' });
    assertProxyError(r, 504, 'SKEIN_E_UPSTREAM_TIMEOUT', 'every attempt hangs');
    const d = r.json.details;
    assert.ok(d !== undefined && d !== null, `the error has details: ${r.text}`);
    assert.equal(d.service, svc, 'details.service');
    assert.equal(d.route, 'slow', 'details.route is the matched route');
    assert.ok(Array.isArray(d.tried), `details.tried is a list: ${JSON.stringify(d)}`);
    const tried = new Set((d.tried as Array<{ endpoint: string; address: string; outcome: string }>).map((t) => t.endpoint));
    assert.deepEqual([...tried].sort(), bs.map((b) => b.id).sort(), `details.tried names both endpoints: ${JSON.stringify(d.tried)}`);
    for (const t of d.tried) {
      assert.match(t.address, /^127\.0\.0\.1:\d+$/, `tried[].address: ${JSON.stringify(t)}`);
      assert.match(t.outcome, /no response within/, `tried[].outcome says it timed out: ${JSON.stringify(t)}`);
    }
    assert.equal(d.timeoutMs, 600, 'details.timeoutMs is the route\'s request timeout');
    const hits = hitsOf(r.rid, bs);
    assert.ok(hits.length >= 2, `at least two attempts reached the backends: ${hits.length}`);
    for (const h of hits) {
      const v = Number(h.headers['x-skein-timeout-ms']);
      assert.ok(Number.isInteger(v) && v > 0 && v <= 600, `attempt ${h.attempt}: x-skein-timeout-ms in (0, 600]: ${String(h.headers['x-skein-timeout-ms'])}`);
    }
  });

  test('x-skein-timeout-ms reaches the backend, at most the configured request timeout, exactly once', async () => {
    const svc = 'to-header';
    const [b] = await backendsFor([`${svc}-a`]);
    await setupService(svc, { ...QUIET, timeouts: { request: '7s' } }, [b as Backend]);
    const r = await send(OUT, svc, { path: '/h' });
    assertFromApp(r, 200, 'a plain request');
    const [h] = hitsOf(r.rid, [b as Backend]);
    assert.ok(h !== undefined, 'the backend got the request');
    const fields = h.rawHeaders.filter((_, i) => i % 2 === 0 && h.rawHeaders[i]?.toLowerCase() === 'x-skein-timeout-ms');
    assert.equal(fields.length, 1, `one x-skein-timeout-ms field: ${JSON.stringify(h.rawHeaders)}`);
    const v = h.headers['x-skein-timeout-ms'];
    assert.match(String(v), /^\d+$/, 'a whole number');
    assert.ok(Number(v) > 0 && Number(v) <= 7000, `x-skein-timeout-ms in (0, 7000]: ${String(v)}`);
  });

  test('a client-sent x-skein-timeout-ms: 200 lowers the 15 s default: 504 with timeoutMs 200, the backend saw <= 200', async () => {
    const svc = 'to-client-deadline';
    const bs = await backendsFor([`${svc}-a`, () => HANG]);
    await setupService(svc, { ...QUIET }, bs);
    const r = await send(OUT, svc, { path: '/d', headers: { 'x-skein-timeout-ms': '200' } });
    assertProxyError(r, 504, 'SKEIN_E_UPSTREAM_TIMEOUT', 'a 200 ms deadline against a hanging backend');
    assert.equal(r.json.details?.timeoutMs, 200, `details.timeoutMs is the client's deadline, not 15000: ${r.text}`);
    const hits = hitsOf(r.rid, bs);
    assert.equal(hits.length, 1, 'one attempt (the per-try timeout is the request timeout: no retry)');
    const h = hits[0] as Hit;
    const fields = h.rawHeaders.filter((_, i) => i % 2 === 0 && h.rawHeaders[i]?.toLowerCase() === 'x-skein-timeout-ms');
    assert.equal(fields.length, 1, `the client's field is replaced, not added to: ${JSON.stringify(h.rawHeaders)}`);
    const v = Number(h.headers['x-skein-timeout-ms']);
    assert.ok(Number.isInteger(v) && v > 0 && v <= 200, `the backend saw x-skein-timeout-ms <= 200: ${String(h.headers['x-skein-timeout-ms'])}`);
  });

  test('x-skein-timeout-ms: 0 is answered 504 SKEIN_E_DEADLINE_EXCEEDED without reaching a backend', async () => {
    const svc = 'to-zero';
    const bs = await backendsFor([`${svc}-a`]);
    await setupService(svc, { ...QUIET }, bs);
    const r = await send(OUT, svc, { path: '/z', headers: { 'x-skein-timeout-ms': '0' } });
    assertProxyError(r, 504, 'SKEIN_E_DEADLINE_EXCEEDED', 'a spent deadline');
    assert.equal(hitsOf(r.rid, bs).length, 0, 'no backend saw it');
    const ok = await send(OUT, svc, { path: '/z' });
    assertFromApp(ok, 200, 'the same service without the header');
  });

  test('a malformed x-skein-timeout-ms is answered 400 SKEIN_E_BAD_REQUEST without reaching a backend', async () => {
    const svc = 'to-malformed';
    const bs = await backendsFor([`${svc}-a`]);
    await setupService(svc, { ...QUIET }, bs);
    for (const bad of ['abc', '-5', '1.5', '10ms', '0x10', '']) {
      const r = await send(OUT, svc, { path: '/m', headers: { 'x-skein-timeout-ms': bad } });
      assertProxyError(r, 400, 'SKEIN_E_BAD_REQUEST', `x-skein-timeout-ms: ${JSON.stringify(bad)}`);
      assert.equal(hitsOf(r.rid, bs).length, 0, `x-skein-timeout-ms: ${JSON.stringify(bad)} reached no backend`);
    }
  });

  test('a large whole-number x-skein-timeout-ms is a deadline, not malformed (the service timeout is the smaller)', async () => {
    // docs/traffic.md: "a value that is not a whole number gets SKEIN_E_BAD_REQUEST"; the
    // proxy takes the smaller of its own timeout and N.
    const svc = 'to-large';
    const bs = await backendsFor([`${svc}-a`]);
    await setupService(svc, { ...QUIET, timeouts: { request: '3s' } }, bs);
    for (const big of ['4294967296', '100000000000']) {
      const r = await send(OUT, svc, { path: '/l', headers: { 'x-skein-timeout-ms': big } });
      assertFromApp(r, 200, `x-skein-timeout-ms: ${big} (a whole number, larger than the 3 s timeout)`);
      const h = hitsOf(r.rid, bs)[0] as Hit;
      assert.ok(Number(h.headers['x-skein-timeout-ms']) <= 3000, `the service's 3 s is the smaller: ${String(h.headers['x-skein-timeout-ms'])}`);
    }
  });

  test('with the request timeout off (0s), a client deadline beyond 2^31-1 ms is not cut short (timer overflow)', async () => {
    // 3000000000 ms (about 35 days) is a valid deadline; setTimeout cannot wait that long (it
    // fires after 1 ms instead), so a proxy that arms it as is times out at once.
    const svc = 'to-overflow';
    const bs = await backendsFor([`${svc}-a`, () => ({ kind: 'slow', ms: 150 })]);
    await setupService(svc, { ...QUIET, timeouts: { request: '0s' } }, bs);
    const base = await send(OUT, svc, { path: '/no-header' });
    assertFromApp(base, 200, 'no deadline at all: the slow app answers');
    const r = await send(OUT, svc, { path: '/far-deadline', headers: { 'x-skein-timeout-ms': '3000000000' } });
    const warnings = P.logs.filter((l) => /TimeoutOverflow/i.test(l));
    assertFromApp(r, 200, `a deadline 35 days away, the app answering after 150 ms; proxy log lines about timer overflow: ${JSON.stringify(warnings)}`);
  });
});

// ---------------------------------------------------------------------------------------------
// 2. Retries
// ---------------------------------------------------------------------------------------------

describe('2. retries', () => {
  /** The first attempt of each request answers `first`, later ones 200. */
  const failFirst = (s: number): Script => (h) => (h.attempt === 1 ? status(s) : OK);

  test('a 503 is retried on the other endpoint, which answers 200', async () => {
    const svc = 're-503';
    const bs = await backendsFor([`${svc}-a`, failFirst(503)], [`${svc}-b`, failFirst(503)]);
    await setupService(svc, { ...QUIET }, bs);
    const before = await metrics();
    for (let i = 0; i < 4; i++) {
      const r = await send(OUT, svc, { path: `/r${i}`, headers: { 'x-skein-explain': '1' } });
      assertFromApp(r, 200, `request ${i}: the 503 is retried`);
      const hits = hitsOf(r.rid, bs);
      assert.deepEqual(hits.map((h) => h.attempt), [1, 2], `request ${i}: two attempts`);
      assert.notEqual(hits[0]?.backend, hits[1]?.backend, `request ${i}: the retry went to the other endpoint (${hits.map((h) => h.backend).join(' -> ')})`);
      assert.equal(r.json.backend, hits[1]?.backend, `request ${i}: answered by the retry`);
      const ex = parseExplain(r.headers['x-skein-explain']);
      assert.equal(ex.attempts, '2', `request ${i}: explain attempts`);
      assert.equal(ex.failed, `${hits[0]?.backend}: HTTP 503`, `request ${i}: explain names the failed attempt`);
    }
    const counts = bs.map((b) => b.hits.length);
    assert.equal(counts[0]! + counts[1]!, 8, `8 attempts in all: ${JSON.stringify(counts)}`);
    assert.equal(bs.reduce((n, b) => n + b.hits.filter((h) => h.attempt === 1).length, 0), 4, 'each request failed once');
    const afterM = await metrics();
    assert.equal(mv(afterM, 'skein_proxy_retries_total', { service: svc, reason: 'status' }) - mv(before, 'skein_proxy_retries_total', { service: svc, reason: 'status' }), 4, 'four retries counted (reason status)');
  });

  test('statuses are configurable: 500 is not retried by default, and is with retries.statuses: [500]', async () => {
    const svc = 're-500';
    const bs = await backendsFor([`${svc}-a`, failFirst(500)], [`${svc}-b`, failFirst(500)]);
    await setupService(svc, { ...QUIET }, bs);
    const r1 = await send(OUT, svc, { path: '/a' });
    assertFromApp(r1, 500, 'a 500 with the default statuses [502, 503, 504]');
    assert.equal(hitsOf(r1.rid, bs).length, 1, 'one attempt: not retried');

    await putService(svc, { ...QUIET, retries: { statuses: [500] } });
    await waitForPolicy(svc, (p) => JSON.stringify(defaultRoute(p).retries.statuses) === '[500]', 'retries.statuses [500]');
    const r2 = await send(OUT, svc, { path: '/b' });
    assertFromApp(r2, 200, 'a 500 with retries.statuses [500]');
    const hits = hitsOf(r2.rid, bs);
    assert.equal(hits.length, 2, 'retried once');
    assert.notEqual(hits[0]?.backend, hits[1]?.backend, 'on the other endpoint');
    // 503 is no longer in the list.
    for (const b of bs) b.script = failFirst(503);
    const r3 = await send(OUT, svc, { path: '/c' });
    assertFromApp(r3, 503, 'a 503 once statuses is [500]');
    assert.equal(hitsOf(r3.rid, bs).length, 1, 'a 503 is not retried then');
  });

  test('POST is not retried after a 503 by default; a route with nonIdempotent: true retries it', async () => {
    const svc = 're-post';
    const bs = await backendsFor([`${svc}-a`, failFirst(503)], [`${svc}-b`, failFirst(503)]);
    await setupService(svc, { ...QUIET, routes: [{ name: 'writes', match: { pathPrefix: '/write', methods: ['POST'] }, retries: { nonIdempotent: true } }] }, bs);
    const r1 = await send(OUT, svc, { method: 'POST', path: '/other', body: Buffer.from('hello') });
    assertFromApp(r1, 503, 'POST on the default route');
    assert.equal(hitsOf(r1.rid, bs).length, 1, 'POST not retried by default');

    const r2 = await send(OUT, svc, { method: 'POST', path: '/write/1', body: Buffer.from('hello'), headers: { 'x-skein-explain': '1' } });
    assertFromApp(r2, 200, 'POST on the route with nonIdempotent: true');
    const hits = hitsOf(r2.rid, bs);
    assert.equal(hits.length, 2, 'retried once');
    assert.notEqual(hits[0]?.backend, hits[1]?.backend, 'on the other endpoint');
    assert.equal(parseExplain(r2.headers['x-skein-explain']).route, 'writes', 'explain names the route');
    for (const h of hits) assert.equal(h.body.toString(), 'hello', `attempt ${h.attempt} got the body`);

    // PUT is idempotent: retried on the default route.
    const r3 = await send(OUT, svc, { method: 'PUT', path: '/other', body: Buffer.from('put-body') });
    assertFromApp(r3, 200, 'PUT on the default route');
    assert.equal(hitsOf(r3.rid, bs).length, 2, 'PUT retried');
  });

  test('a request body up to maxBodyBytes is replayed intact on the retry; a larger one is not retried', async () => {
    const svc = 're-body';
    const bs = await backendsFor([`${svc}-a`, failFirst(503)], [`${svc}-b`, failFirst(503)]);
    await setupService(svc, { ...QUIET, routes: [{ name: 'writes', match: { pathPrefix: '/write', methods: ['POST'] }, retries: { nonIdempotent: true } }] }, bs);
    const cases: Array<{ name: string; method: string; path: string; body: Buffer | Buffer[]; retried: boolean }> = [
      { name: 'POST 60 KiB (content-length)', method: 'POST', path: '/write/cl', body: randomBytes(60 * 1024), retried: true },
      { name: 'POST exactly 64 KiB (content-length)', method: 'POST', path: '/write/64k', body: randomBytes(64 * 1024), retried: true },
      { name: 'POST 3 x 20 KiB (chunked)', method: 'POST', path: '/write/chunked', body: [randomBytes(20 * 1024), randomBytes(20 * 1024), randomBytes(20 * 1024)], retried: true },
      { name: 'PUT 1 KiB', method: 'PUT', path: '/small', body: randomBytes(1024), retried: true },
      { name: 'POST 100 KiB (over maxBodyBytes)', method: 'POST', path: '/write/big', body: randomBytes(100 * 1024), retried: false },
      { name: 'PUT 100 KiB (idempotent, over maxBodyBytes)', method: 'PUT', path: '/big', body: randomBytes(100 * 1024), retried: false },
    ];
    for (const c of cases) {
      const whole = Array.isArray(c.body) ? Buffer.concat(c.body) : c.body;
      const r = await send(OUT, svc, { method: c.method, path: c.path, body: c.body });
      const hits = hitsOf(r.rid, bs);
      if (c.retried) {
        assertFromApp(r, 200, c.name);
        assert.equal(hits.length, 2, `${c.name}: retried once`);
      } else {
        assertFromApp(r, 503, `${c.name}: the 503 goes back, as it was`);
        assert.equal(hits.length, 1, `${c.name}: not retried`);
      }
      for (const h of hits) {
        assert.ok(h.done, `${c.name}: attempt ${h.attempt} got a complete body`);
        assert.equal(h.body.length, whole.length, `${c.name}: attempt ${h.attempt} (${h.backend}) got ${h.body.length} of ${whole.length} bytes`);
        assert.equal(sha(h.body), sha(whole), `${c.name}: attempt ${h.attempt} (${h.backend}) got the bytes sent`);
      }
    }
  });

  test('maxRetries: 0 turns retries off', async () => {
    const svc = 're-off';
    const bs = await backendsFor([`${svc}-a`, failFirst(503)], [`${svc}-b`, failFirst(503)]);
    await setupService(svc, { ...QUIET, retries: { maxRetries: 0 } }, bs);
    const r = await send(OUT, svc, { path: '/x' });
    assertFromApp(r, 503, 'a 503 with maxRetries 0');
    assert.equal(hitsOf(r.rid, bs).length, 1, 'not retried');
    // And a reset is not retried either: the proxy's own error comes back.
    for (const b of bs) b.script = (h) => (h.attempt === 1 ? RESET : OK);
    const r2 = await send(OUT, svc, { path: '/y' });
    assertProxyError(r2, 502, 'SKEIN_E_UPSTREAM_RESET', 'a reset with maxRetries 0');
    assert.equal(r2.json.details?.retries, 0, 'details.retries is 0');
    assert.equal(hitsOf(r2.rid, bs).length, 1, 'a reset is not retried');
  });

  test('connect failures are retried for POST too (nothing reached an app)', async () => {
    const svc = 're-connect';
    const bs = await backendsFor([`${svc}-live`]);
    await setupService(svc, { ...QUIET }, [...bs, { id: `${svc}-dead`, port: await closedPort() }]);
    const m0 = await metrics();
    for (let i = 0; i < 4; i++) {
      const r = await send(OUT, svc, { method: 'POST', path: `/c${i}`, body: Buffer.from(`body-${i}`) });
      assertFromApp(r, 200, `POST ${i} with one endpoint refusing connections`);
      assert.equal(hitsOf(r.rid, bs)[0]?.body.toString(), `body-${i}`, `POST ${i}: the live backend got the body`);
    }
    const m1 = await metrics();
    assert.ok(
      mv(m1, 'skein_proxy_retries_total', { service: svc, reason: 'connect-failure' }) - mv(m0, 'skein_proxy_retries_total', { service: svc, reason: 'connect-failure' }) >= 1,
      'at least one POST was retried after a connect failure (round-robin over two endpoints)',
    );
  });

  test("refused-stream: a peer inbound proxy that could not reach its app is retried elsewhere, POST included", async () => {
    const svc = 're-refused';
    const [live] = await backendsFor([`${svc}-app`]);
    const deadApp = await closedPort();
    const R = await startProxy({
      control: cp.http,
      workloads: [`name=${svc}-1,service=${svc},inbound=127.0.0.1:0,app=127.0.0.1:${deadApp}`, `name=${svc}-2,service=${svc},inbound=127.0.0.1:0,app=127.0.0.1:${(live as Backend).port}`],
    });
    onCleanup(() => R.stop());
    // Registered as inbound listeners (as `skein up` registers its replicas): their refusals are believed.
    const labels = { [INBOUND_PROXY_LABEL]: 'true' };
    await setupService(svc, { ...QUIET }, [
      { id: `${svc}-1`, port: (R.workload(`${svc}-1`).inbound as { port: number }).port, labels },
      { id: `${svc}-2`, port: (R.workload(`${svc}-2`).inbound as { port: number }).port, labels },
    ]);
    const m0 = await metrics();
    for (let i = 0; i < 4; i++) {
      const r = await send(OUT, svc, { method: 'POST', path: `/p${i}`, body: Buffer.from(`body-${i}`), headers: { 'x-skein-explain': '1' } });
      assertFromApp(r, 200, `POST ${i} with one instance's app down behind its inbound proxy`);
      const hits = hitsOf(r.rid, [live as Backend]);
      assert.equal(hits.length, 1, `POST ${i}: the app got it once`);
      assert.equal(hits[0]?.body.toString(), `body-${i}`, `POST ${i}: with its body`);
    }
    const m1 = await metrics();
    assert.ok(
      mv(m1, 'skein_proxy_retries_total', { service: svc, reason: 'refused-stream' }) - mv(m0, 'skein_proxy_retries_total', { service: svc, reason: 'refused-stream' }) >= 1,
      `at least one POST was retried as refused-stream; retries: ${m1.split('\n').filter((l) => l.startsWith('skein_proxy_retries_total') && l.includes(svc)).join('; ')}`,
    );
  });

  test('the retry budget refuses retries (ratio 0, 1 retry per second): explain and error body say so, and the metric counts it', async () => {
    const budget = { ratio: 0, minRetriesPerSecond: 1, window: '1s' };
    // An app's 503: the budget allows one retry, then refuses the next one of the same request.
    const svc = 're-budget';
    const bs = await backendsFor([`${svc}-a`, () => status(503)], [`${svc}-b`, () => status(503)]);
    await setupService(svc, { ...QUIET, retries: { maxRetries: 2, budget } }, bs);
    const m0 = await metrics();
    const r = await send(OUT, svc, { path: '/b', headers: { 'x-skein-explain': '1' } });
    assertFromApp(r, 503, 'every attempt answers 503');
    const hits = hitsOf(r.rid, bs);
    assert.equal(hits.length, 2, `one retry (the budget's one per window), not maxRetries' two: ${hits.map((h) => h.backend).join(', ')}`);
    const explain = String(r.headers['x-skein-explain']);
    assert.match(explain, /budget=0 \(a retry was refused by the budget\)/, `explain says the budget refused a retry: ${explain}`);
    assert.equal(parseExplain(explain).attempts, '2', `explain attempts: ${explain}`);
    const m1 = await metrics();
    assert.ok(
      mv(m1, 'skein_proxy_retry_budget_exhausted_total', { service: svc }) - mv(m0, 'skein_proxy_retry_budget_exhausted_total', { service: svc }) >= 1,
      'skein_proxy_retry_budget_exhausted_total rose',
    );
    const dbg = await serviceDebug(svc);
    assert.ok(dbg.traffic.budget.exhausted >= 1, `/debug/endpoints shows the refusal: ${JSON.stringify(dbg.traffic.budget)}`);

    // A proxy error (reset): its JSON body says the budget refused.
    const svc2 = 're-budget-reset';
    const bs2 = await backendsFor([`${svc2}-a`, () => RESET], [`${svc2}-b`, () => RESET]);
    await setupService(svc2, { ...QUIET, retries: { maxRetries: 2, budget } }, bs2);
    const r2 = await send(OUT, svc2, { path: '/r' });
    assertProxyError(r2, 502, 'SKEIN_E_UPSTREAM_RESET', 'every attempt is reset');
    const d = r2.json.details;
    assert.equal(d?.budget?.refusedARetry, true, `details.budget.refusedARetry: ${r2.text}`);
    assert.equal(d?.retries, 1, `details.retries: ${r2.text}`);
    assert.equal(d?.tried?.length, 2, `details.tried has both attempts: ${r2.text}`);
    assert.equal(hitsOf(r2.rid, bs2).length, 2, 'two attempts reached the backends');
    const m2 = await metrics();
    assert.ok(mv(m2, 'skein_proxy_retry_budget_exhausted_total', { service: svc2 }) >= 1, `skein_proxy_retry_budget_exhausted_total{service="${svc2}"} rose`);
  });
});

// ---------------------------------------------------------------------------------------------
// 3. Limits
// ---------------------------------------------------------------------------------------------

describe('3. limits', () => {
  test('maxRequests: 2 with two requests in flight: the third gets 503 SKEIN_E_UPSTREAM_OVERFLOW at once', async () => {
    const svc = 'lim';
    const bs = await backendsFor([`${svc}-a`, () => HANG], [`${svc}-b`, () => HANG]);
    await setupService(svc, { ...QUIET, limits: { maxRequests: 2 } }, bs);
    const inFlight = [send(OUT, svc, { path: '/1' }), send(OUT, svc, { path: '/2' })];
    let settled = 0;
    for (const p of inFlight) void p.then(() => settled++, () => settled++);
    await waitFor(() => bs.reduce((n, b) => n + b.hits.length, 0) === 2, { timeoutMs: 5000, what: 'both requests to reach the hanging backends' });
    const third = await send(OUT, svc, { path: '/3' });
    assertProxyError(third, 503, 'SKEIN_E_UPSTREAM_OVERFLOW', 'the third request');
    assert.equal(settled, 0, 'the two requests were still in flight when the third was refused');
    assert.equal(third.json.details?.limit, 2, `details.limit: ${third.text}`);
    assert.equal(third.json.details?.inFlight, 2, `details.inFlight: ${third.text}`);
    assert.equal(hitsOf(third.rid, bs).length, 0, 'the refused request reached no backend');
    assert.equal((await serviceDebug(svc)).traffic.inFlight, 2, '/debug/endpoints: two in flight');
    for (const b of bs) b.release();
    for (const r of await Promise.all(inFlight)) assertFromApp(r, 200, 'a held request, released');
    for (const b of bs) b.script = () => OK;
    await waitFor(async () => (await serviceDebug(svc)).traffic.inFlight === 0, { timeoutMs: 5000, what: 'in-flight count back to 0' });
    const rs = await Promise.all([send(OUT, svc, { path: '/4' }), send(OUT, svc, { path: '/5' })]);
    for (const r of rs) assertFromApp(r, 200, 'once the in-flight requests finished');
  });
});

describe('3b. limits and clients that go away', () => {
  test('a client that resets its connection while its request hangs frees its maxRequests slot', async () => {
    const svc = 'lim-abort';
    const bs = await backendsFor([`${svc}-a`, (h) => (h.path === '/hang' ? HANG : OK)]);
    await setupService(svc, { ...QUIET, limits: { maxRequests: 1 } }, bs);
    // A raw connection, so that it can be reset: a FIN alone is a legal half-close after the
    // request (the proxy then still owes the response), a RST says the client is gone.
    const sock = createConnection({ host: '127.0.0.1', port: OUT });
    sock.on('error', () => {});
    await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
    sock.write(`GET /hang HTTP/1.1\r\nHost: ${svc}\r\n\r\n`);
    await waitFor(() => (bs[0] as Backend).hits.length === 1, { timeoutMs: 5000, what: 'the hanging request to reach the backend' });
    const refused = await send(OUT, svc, { path: '/x' });
    assertProxyError(refused, 503, 'SKEIN_E_UPSTREAM_OVERFLOW', 'a second request while the first is in flight');
    sock.resetAndDestroy();
    await waitFor(async () => (await serviceDebug(svc)).traffic.inFlight === 0, { timeoutMs: 5000, what: 'the in-flight count to drop once the client left' });
    assertFromApp(await send(OUT, svc, { path: '/y' }), 200, 'a request after the client went away');
  });
});

// ---------------------------------------------------------------------------------------------
// 4. Breaker
// ---------------------------------------------------------------------------------------------

describe('4. failure-accrual breaker', () => {
  test('every endpoint failing: SKEIN_E_BREAKER_OPEN with details; after the backends heal a probe closes it', async () => {
    const svc = 'brk';
    // 503: the status a breaker counts (an app's other 5xx are answers about the request); not
    // retried here, so that each request is one attempt.
    const bs = await backendsFor([`${svc}-a`, () => status(503)], [`${svc}-b`, () => status(503)]);
    await setupService(svc, { outlierDetection: { enabled: false }, retries: { maxRetries: 0 }, breaker: { consecutiveFailures: 3, backoff: { min: '1s', max: '2s' } } }, bs);
    const m0 = await metrics();
    let open: Reply | null = null;
    const seen: number[] = [];
    for (let i = 0; i < 12 && open === null; i++) {
      const r = await send(OUT, svc, { path: `/f${i}` });
      if (r.headers['x-skein-error'] === 'SKEIN_E_BREAKER_OPEN') open = r;
      else {
        assertFromApp(r, 503, `request ${i} before the breakers open`);
        seen.push(r.status);
      }
    }
    assert.ok(open !== null, `SKEIN_E_BREAKER_OPEN within 12 requests; got ${seen.length} answers of the app first`);
    assertProxyError(open, 503, 'SKEIN_E_BREAKER_OPEN', 'every breaker open');
    assert.deepEqual(bs.map((b) => b.hits.length), [3, 3], 'each endpoint got exactly consecutiveFailures (3) requests before its breaker opened');
    const d = open.json.details;
    assert.equal(d?.service, svc, 'details.service');
    assert.equal(d?.route, 'default', 'details.route');
    assert.deepEqual(d?.breakers, { open: 2, halfOpen: 0 }, `details.breakers: ${open.text}`);
    assert.equal(hitsOf(open.rid, bs).length, 0, 'the refused request reached no backend');
    const dbg = await serviceDebug(svc);
    assert.equal(dbg.traffic.breakers?.open, 2, `/debug/endpoints shows both open: ${JSON.stringify(dbg.traffic.breakers)}`);

    // Heal; poll with requests (they are what lets the half-open probes through).
    for (const b of bs) b.script = () => OK;
    await waitFor(
      async () => {
        const r = await send(OUT, svc, { path: '/heal' });
        if (r.status !== 200) assertProxyError(r, 503, 'SKEIN_E_BREAKER_OPEN', 'while the breakers back off');
        const s = await serviceDebug(svc);
        return s.traffic.breakers.open === 0 && s.traffic.breakers.halfOpen === 0;
      },
      { timeoutMs: 10_000, intervalMs: 50, what: 'probes to close both breakers (backoff 1-2 s)' },
    );
    for (let i = 0; i < 4; i++) assertFromApp(await send(OUT, svc, { path: `/ok${i}` }), 200, `request ${i} after the breakers closed`);
    assert.ok(bs.every((b) => b.hits.some((h) => h.path.startsWith('/heal') || h.path.startsWith('/ok'))), 'both endpoints get traffic again');
    const m1 = await metrics();
    const delta = (to: string) => mv(m1, 'skein_proxy_breaker_transitions_total', { service: svc, to }) - mv(m0, 'skein_proxy_breaker_transitions_total', { service: svc, to });
    assert.equal(delta('open'), 2, 'two transitions to open');
    assert.equal(delta('half-open'), 2, 'two probes (half-open)');
    assert.equal(delta('closed'), 2, 'two transitions to closed');
  });
});

// ---------------------------------------------------------------------------------------------
// 5. Outlier detection
// ---------------------------------------------------------------------------------------------

describe('5. outlier detection', () => {
  test('a backend answering 500 is ejected after consecutive5xx and gets no more requests', async () => {
    const svc = 'od';
    const [bad, good] = await backendsFor([`${svc}-bad`, () => status(500)], [`${svc}-good`]);
    const bs = [bad as Backend, good as Backend];
    await setupService(svc, { breaker: { enabled: false }, outlierDetection: { consecutive5xx: 3 } }, bs);
    const m0 = await metrics();
    for (let i = 0; i < 20 && (bad as Backend).hits.length < 3; i++) {
      const r = await send(OUT, svc, { path: `/o${i}` });
      assert.ok(r.status === 200 || r.status === 500, `request ${i}: 200 or the app's 500; got ${show(r)}`);
    }
    assert.equal((bad as Backend).hits.length, 3, 'the bad backend got three requests');
    const key = `${svc}/${svc}-bad`;
    await waitFor(async () => (await serviceDebug(svc)).traffic.outliers?.[key]?.ejected === true, { timeoutMs: 2000, what: `${key} ejected in /debug/endpoints` });
    const m1 = await metrics();
    assert.equal(mv(m1, 'skein_proxy_outlier_events_total', { service: svc, event: 'eject' }) - mv(m0, 'skein_proxy_outlier_events_total', { service: svc, event: 'eject' }), 1, 'one eject event');
    assert.ok(P.logs.some((l) => l.includes('outlier ejected') && l.includes(key)), 'the proxy logged "outlier ejected"');
    for (let i = 0; i < 10; i++) {
      const r = await send(OUT, svc, { path: `/after${i}` });
      assertFromApp(r, 200, `request ${i} after the ejection`);
      assert.equal(r.json.backend, `${svc}-good`, `request ${i} went to the good backend`);
    }
    assert.equal((bad as Backend).hits.length, 3, 'the ejected backend got no more requests');
    const dbg = await serviceDebug(svc);
    assert.equal(dbg.traffic.outliers[key].ejected, true, 'still ejected (base ejection time 30 s)');
  });
});

describe('5b. outlier detection: return', () => {
  test('an ejected endpoint returns after baseEjectionTime and gets traffic again', async () => {
    const svc = 'od-return';
    let badStatus = 500;
    const [bad, good] = await backendsFor([`${svc}-bad`, () => status(badStatus)], [`${svc}-good`]);
    await setupService(svc, { breaker: { enabled: false }, outlierDetection: { consecutive5xx: 2, interval: '200ms', baseEjectionTime: '500ms' } }, [bad as Backend, good as Backend]);
    const m0 = await metrics();
    for (let i = 0; i < 10 && (bad as Backend).hits.length < 2; i++) await send(OUT, svc, { path: `/o${i}` });
    assert.equal((bad as Backend).hits.length, 2, 'the bad backend answered 500 twice');
    const key = `${svc}/${svc}-bad`;
    await waitFor(async () => (await serviceDebug(svc)).traffic.outliers?.[key]?.ejected === true, { timeoutMs: 2000, what: `${key} ejected` });
    badStatus = 200;
    const hitsAtEjection = (bad as Backend).hits.length;
    await waitFor(
      async () => {
        const r = await send(OUT, svc, { path: '/probe' });
        assertFromApp(r, 200, 'while one endpoint is ejected');
        return (bad as Backend).hits.length > hitsAtEjection;
      },
      { timeoutMs: 5000, intervalMs: 50, what: `${key} to get traffic again after its 500 ms ejection` },
    );
    const m1 = await metrics();
    assert.equal(mv(m1, 'skein_proxy_outlier_events_total', { service: svc, event: 'eject' }) - mv(m0, 'skein_proxy_outlier_events_total', { service: svc, event: 'eject' }), 1, 'one eject event');
    assert.equal(mv(m1, 'skein_proxy_outlier_events_total', { service: svc, event: 'return' }) - mv(m0, 'skein_proxy_outlier_events_total', { service: svc, event: 'return' }), 1, 'one return event');
    assert.equal((await serviceDebug(svc)).traffic.outliers?.[key]?.ejected, false, '/debug/endpoints: no longer ejected');
    assert.ok(P.logs.some((l) => l.includes('outlier returned') && l.includes(key)), 'the proxy logged "outlier returned"');
  });
});

// ---------------------------------------------------------------------------------------------
// 6. Active health checks from the proxy
// ---------------------------------------------------------------------------------------------

describe('6. active health checks from the proxy', () => {
  test("an endpoint failing the proxy's own /health check gets no traffic although the control plane lists it; it returns when it passes", async () => {
    const svc = 'ahc';
    let xHealth = 500;
    const [x, y] = await backendsFor([`${svc}-x`, (h) => (h.path === '/health' ? status(xHealth) : OK)], [`${svc}-y`]);
    const bs = [x as Backend, y as Backend];
    await setupService(svc, { ...QUIET, activeHealthCheck: { type: 'http', path: '/health', interval: '200ms', unhealthyThreshold: 2 } }, bs);
    // The proxy's state for a service (and its checker) starts with the first request.
    const first = await send(OUT, svc, { path: '/start' });
    assert.equal(first.status, 200, `first request: ${show(first)}`);
    const key = `${svc}/${svc}-x`;
    await waitFor(async () => JSON.stringify((await serviceDebug(svc)).traffic.activeCheckFailing) === JSON.stringify([key]), {
      timeoutMs: 5000,
      what: `${key} to fail the proxy's active check`,
    });
    assert.ok((x as Backend).hits.filter((h) => h.path === '/health').length >= 2, 'the proxy probed x\'s /health');
    const listed = await api(cp.http, 'GET', `/v1/services/${svc}/instances`);
    assert.deepEqual(
      (listed.body.instances as Array<{ id: string; status: string }>).map((i) => `${i.id}:${i.status}`).sort(),
      [`${svc}-x:healthy`, `${svc}-y:healthy`],
      'the control plane still lists both as healthy',
    );
    const xBefore = appHits(x as Backend).length;
    for (let i = 0; i < 8; i++) {
      const r = await send(OUT, svc, { path: `/down${i}` });
      assertFromApp(r, 200, `request ${i} while x fails its check`);
      assert.equal(r.json.backend, `${svc}-y`, `request ${i} went to y`);
    }
    assert.equal(appHits(x as Backend).length, xBefore, 'x got no request while failing');
    const m = await metrics();
    assert.ok(mv(m, 'skein_proxy_active_check_transitions_total', { service: svc, result: 'unhealthy' }) >= 1, 'an unhealthy transition counted');

    xHealth = 200;
    await waitFor(async () => ((await serviceDebug(svc)).traffic.activeCheckFailing as string[]).length === 0, { timeoutMs: 5000, what: `${key} to pass again` });
    let back = false;
    for (let i = 0; i < 6 && !back; i++) {
      const r = await send(OUT, svc, { path: `/up${i}` });
      assertFromApp(r, 200, `request ${i} after x recovered`);
      back = r.json.backend === `${svc}-x`;
    }
    assert.ok(back, 'x gets traffic again once it passes');
  });
});

// ---------------------------------------------------------------------------------------------
// 7. Rate limits
// ---------------------------------------------------------------------------------------------

describe('7. rate limits', () => {
  test('outbound { requestsPerSecond: 1, burst: 2 }: the third quick request gets 429 SKEIN_E_RATE_LIMITED with Retry-After', async () => {
    const svc = 'rl-out';
    const bs = await backendsFor([`${svc}-a`]);
    await setupService(svc, { ...QUIET, rateLimit: { outbound: { requestsPerSecond: 1, burst: 2 } } }, bs);
    const rs: Reply[] = [];
    for (let i = 0; i < 3; i++) rs.push(await send(OUT, svc, { path: `/q${i}` }));
    assertFromApp(rs[0] as Reply, 200, 'first (burst)');
    assertFromApp(rs[1] as Reply, 200, 'second (burst)');
    const r = rs[2] as Reply;
    assertProxyError(r, 429, 'SKEIN_E_RATE_LIMITED', 'third');
    const ra = r.headers['retry-after'];
    assert.match(String(ra), /^\d+$/, `Retry-After is whole seconds: ${String(ra)}`);
    assert.ok(Number(ra) >= 1, `Retry-After >= 1: ${String(ra)}`);
    assert.equal(r.json.details?.route, 'default', 'details.route');
    assert.equal(r.json.details?.direction, 'outbound', 'details.direction');
    assert.equal(hitsOf(r.rid, bs).length, 0, 'the refused request reached no backend');
    assert.equal((bs[0] as Backend).hits.length, 2, 'the backend got two');
  });

  test('inbound limit with perCaller, applied by the callee\'s inbound proxy: each calling service has its own bucket', async () => {
    const svc = 'rl-in';
    const [app] = await backendsFor([`${svc}-app`]);
    await putService(svc, { ...QUIET, rateLimit: { inbound: { requestsPerSecond: 1, burst: 1, perCaller: true } } });
    const Q = await startProxy({ control: cp.http, workloads: [`name=api-1,service=${svc},inbound=127.0.0.1:0,app=127.0.0.1:${(app as Backend).port}`] });
    onCleanup(() => Q.stop());
    await waitForProxyReady(Q);
    const qIn = Q.workload('api-1').inbound as { port: number };
    await setupService(svc, { ...QUIET, rateLimit: { inbound: { requestsPerSecond: 1, burst: 1, perCaller: true } } }, [{ id: 'api-1', port: qIn.port }], [P, Q]);

    const a1 = await send(OUT_A, svc, { path: '/a1' });
    const b1 = await send(OUT_B, svc, { path: '/b1' });
    const a2 = await send(OUT_A, svc, { path: '/a2' });
    const b2 = await send(OUT_B, svc, { path: '/b2' });
    assertFromApp(a1, 200, 'caller-a, first');
    assertFromApp(b1, 200, 'caller-b, first: its own bucket (caller-a has spent the one of its bucket)');
    for (const [r, who] of [
      [a2, 'caller-a'],
      [b2, 'caller-b'],
    ] as const) {
      assertProxyError(r, 429, 'SKEIN_E_RATE_LIMITED', `${who}, second`);
      assert.equal(r.json.details?.direction, 'inbound', `${who}: refused by the inbound proxy: ${r.text}`);
      assert.match(r.json.message, new RegExp(`per caller \\(${who}\\)`), `${who}: the message names the caller's bucket: ${r.json.message}`);
      assert.ok(Number(r.headers['retry-after']) >= 1, `${who}: Retry-After >= 1: ${String(r.headers['retry-after'])}`);
    }
    const callers = (app as Backend).hits.map((h) => `${h.path}:${String(h.headers['x-skein-caller'])}`);
    assert.deepEqual(callers, ['/a1:caller-a', '/b1:caller-b'], 'the app got the two allowed requests, each naming its caller');
    for (const h of (app as Backend).hits) {
      const v = Number(h.headers['x-skein-timeout-ms']);
      assert.ok(Number.isInteger(v) && v > 0 && v <= 15_000, `the deadline crossed both proxies (<= the caller's 15 s): ${String(h.headers['x-skein-timeout-ms'])}`);
    }
  });

  test('outbound perCaller: true gives each calling workload its own bucket; without it they share one', async () => {
    const per = 'rl-percaller';
    const shared = 'rl-shared';
    const bs = await backendsFor([`${per}-a`], [`${shared}-a`]);
    await setupService(per, { ...QUIET, rateLimit: { outbound: { requestsPerSecond: 1, burst: 1, perCaller: true } } }, [bs[0] as Backend]);
    await setupService(shared, { ...QUIET, rateLimit: { outbound: { requestsPerSecond: 1, burst: 1 } } }, [bs[1] as Backend]);
    const pa = await send(OUT_A, per, { path: '/a' });
    const pb = await send(OUT_B, per, { path: '/b' });
    const pa2 = await send(OUT_A, per, { path: '/a2' });
    assertFromApp(pa, 200, 'perCaller: workload a, first');
    assertFromApp(pb, 200, 'perCaller: workload b, first (its own bucket)');
    assertProxyError(pa2, 429, 'SKEIN_E_RATE_LIMITED', 'perCaller: workload a, second');
    const sa = await send(OUT_A, shared, { path: '/a' });
    const sb = await send(OUT_B, shared, { path: '/b' });
    assertFromApp(sa, 200, 'shared: workload a, first');
    assertProxyError(sb, 429, 'SKEIN_E_RATE_LIMITED', 'shared: workload b after a took the one token of the shared bucket');
  });

  test('gcra { requestsPerSecond: 1, burst: 2 } allows the burst, then refuses', async () => {
    const svc = 'rl-gcra';
    const bs = await backendsFor([`${svc}-a`]);
    await setupService(svc, { ...QUIET, rateLimit: { outbound: { requestsPerSecond: 1, burst: 2, algorithm: 'gcra' } } }, bs);
    const rs: Reply[] = [];
    for (let i = 0; i < 3; i++) rs.push(await send(OUT, svc, { path: `/g${i}` }));
    assert.deepEqual(rs.map((r) => r.status), [200, 200, 429], `statuses: ${rs.map(show).join(' | ')}`);
    assertProxyError(rs[2] as Reply, 429, 'SKEIN_E_RATE_LIMITED', 'third');
    assert.ok(Number(rs[2]?.headers['retry-after']) >= 1, 'Retry-After >= 1');
  });

  test('the service-level limit applies to the default route and to routes without their own: one bucket', async () => {
    // docs/traffic.md: "Service-level limits apply to the default route and to routes that do
    // not set their own; a route's limit has a bucket of its own."
    const svc = 'rl-inherit';
    const bs = await backendsFor([`${svc}-a`]);
    await setupService(svc, { ...QUIET, rateLimit: { outbound: { requestsPerSecond: 1, burst: 1 } }, routes: [{ name: 'plain', match: { pathPrefix: '/plain' } }] }, bs);
    const r1 = await send(OUT, svc, { path: '/x' });
    const r2 = await send(OUT, svc, { path: '/plain/y' });
    assertFromApp(r1, 200, 'default route, first');
    assertProxyError(r2, 429, 'SKEIN_E_RATE_LIMITED', 'route "plain" (no limit of its own) right after: the service limit of 1 request/s is spent');
  });

  test('a route with its own limit: /limited is limited, other paths are not', async () => {
    const svc = 'rl-route';
    const bs = await backendsFor([`${svc}-a`]);
    await setupService(svc, { ...QUIET, routes: [{ name: 'limited', match: { pathPrefix: '/limited' }, rateLimit: { outbound: { requestsPerSecond: 1, burst: 1 } } }] }, bs);
    const l1 = await send(OUT, svc, { path: '/limited/1' });
    const l2 = await send(OUT, svc, { path: '/limited/2' });
    assertFromApp(l1, 200, '/limited, first');
    assertProxyError(l2, 429, 'SKEIN_E_RATE_LIMITED', '/limited, second');
    assert.equal(l2.json.details?.route, 'limited', 'details.route names the route');
    for (let i = 0; i < 6; i++) assertFromApp(await send(OUT, svc, { path: `/free/${i}` }), 200, `/free/${i}: the default route has no limit`);
  });
});

// ---------------------------------------------------------------------------------------------
// 8. Fault injection
// ---------------------------------------------------------------------------------------------

describe('8. fault injection', () => {
  test('abort 100%: the configured status with SKEIN_E_FAULT_INJECTED, no backend reached; abort 0%: never', async () => {
    const svc = 'fault';
    const bs = await backendsFor([`${svc}-a`]);
    await setupService(
      svc,
      {
        ...QUIET,
        routes: [
          { name: 'abort', match: { pathPrefix: '/abort' }, fault: { abort: { status: 418, percent: 100 } } },
          { name: 'abort503', match: { pathPrefix: '/abort503' }, fault: { abort: { status: 503, percent: 100 } } },
          { name: 'never', match: { pathPrefix: '/never' }, fault: { abort: { status: 503, percent: 0 } } },
        ],
      },
      bs,
    );
    const r = await send(OUT, svc, { path: '/abort/x' });
    assertProxyError(r, 418, 'SKEIN_E_FAULT_INJECTED', 'abort 418 at 100%');
    assert.equal(r.json.details?.route, 'abort', 'details.route');
    const r503 = await send(OUT, svc, { path: '/abort503' });
    assertProxyError(r503, 503, 'SKEIN_E_FAULT_INJECTED', 'abort 503 at 100% (not retried: nothing was sent)');
    assert.equal(hitsOf(r.rid, bs).length + hitsOf(r503.rid, bs).length, 0, 'no backend reached');
    for (let i = 0; i < 20; i++) assertFromApp(await send(OUT, svc, { path: `/never/${i}` }), 200, `/never/${i}: percent 0 never aborts`);
    assert.equal((bs[0] as Backend).hits.length, 20, 'all 20 reached the backend');
  });

  test('delay 100% of 300ms: the backend sees the request no earlier than 300 ms after it was sent', async () => {
    const svc = 'fault-delay';
    const bs = await backendsFor([`${svc}-a`]);
    await setupService(svc, { ...QUIET, routes: [{ name: 'delay', match: { pathPrefix: '/delay' }, fault: { delay: { duration: '300ms', percent: 100 } } }] }, bs);
    const t0 = performance.now();
    const r = await send(OUT, svc, { path: '/delay', headers: { 'x-skein-explain': '1' } });
    assertFromApp(r, 200, 'a delayed request');
    const h = hitsOf(r.rid, bs)[0] as Hit;
    // A lower bound (setTimeout may fire up to a millisecond early): causality, not speed.
    assert.ok(h.at - t0 >= 299, `the backend saw the request ${(h.at - t0).toFixed(1)} ms after it was sent (>= 300 ms expected)`);
    assert.equal(parseExplain(r.headers['x-skein-explain']).route, 'delay');
  });

  test('a fault delay counts against the request timeout: delay 300ms with request 150ms is a 504, the backend not reached', async () => {
    const svc = 'fault-delay-timeout';
    const bs = await backendsFor([`${svc}-a`]);
    await setupService(svc, { ...QUIET, routes: [{ name: 'delay', match: { pathPrefix: '/delay' }, timeouts: { request: '150ms' }, fault: { delay: { duration: '300ms', percent: 100 } } }] }, bs);
    const r = await send(OUT, svc, { path: '/delay' });
    assertProxyError(r, 504, 'SKEIN_E_UPSTREAM_TIMEOUT', 'the delay outlasts the request timeout');
    assert.equal(hitsOf(r.rid, bs).length, 0, 'the backend was not reached');
  });
});

// ---------------------------------------------------------------------------------------------
// 9. Explain
// ---------------------------------------------------------------------------------------------

describe('9. x-skein-explain and x-skein-caller', () => {
  test('x-skein-explain: 1 gets the explain header (not forwarded); without it there is none; x-skein-caller is the proxy\'s', async () => {
    const svc = 'explain';
    const bs = await backendsFor([`${svc}-1`]);
    const b = bs[0] as Backend;
    await setupService(svc, { ...QUIET, routes: [{ name: 'api', match: { pathPrefix: '/api' } }] }, bs);
    const r = await send(OUT, svc, { path: '/x', headers: { 'x-skein-explain': '1', 'x-skein-caller': 'forged' } });
    assertFromApp(r, 200, 'with x-skein-explain');
    const explain = String(r.headers['x-skein-explain']);
    assert.match(
      explain,
      new RegExp(`^route=default; service=${svc}; endpoint=${svc}-1 \\(127\\.0\\.0\\.1:${b.port}\\); attempts=1; budget=\\d+; timeout=15000ms$`),
      `the explain header: ${explain}`,
    );
    const h = hitsOf(r.rid, bs)[0] as Hit;
    assert.equal(h.headers['x-skein-explain'], undefined, 'x-skein-explain is not forwarded to the backend');
    const callers = h.rawHeaders.filter((_, i) => i % 2 === 0 && h.rawHeaders[i]?.toLowerCase() === 'x-skein-caller');
    assert.equal(callers.length, 1, `one x-skein-caller: ${JSON.stringify(h.rawHeaders)}`);
    assert.equal(h.headers['x-skein-caller'], 'client', 'the client\'s x-skein-caller is replaced by the proxy\'s (the workload\'s service)');

    const r2 = await send(OUT, svc, { path: '/api/y', headers: { 'x-skein-explain': '1' } });
    assert.equal(parseExplain(r2.headers['x-skein-explain']).route, 'api', 'explain names a matched route');

    const r3 = await send(OUT, svc, { path: '/x' });
    assertFromApp(r3, 200, 'without x-skein-explain');
    assert.equal(r3.headers['x-skein-explain'], undefined, 'no explain header unless asked');

    const r4 = await send(OUT, svc, { path: '/x', headers: { 'x-skein-explain': '0' } });
    assert.equal(r4.headers['x-skein-explain'], undefined, 'x-skein-explain: 0 does not ask');
    assert.equal((hitsOf(r4.rid, bs)[0] as Hit).headers['x-skein-explain'], undefined, 'x-skein-explain: 0 is not forwarded either');

  });

  test('x-skein-explain comes on the proxy\'s own answers too ("on any response")', async () => {
    const svc = 'explain-errors';
    const bs = await backendsFor([`${svc}-1`, (h) => (h.path === '/hang' ? HANG : OK)]);
    await setupService(
      svc,
      {
        ...QUIET,
        routes: [
          { name: 'abort', match: { pathPrefix: '/abort' }, fault: { abort: { status: 503, percent: 100 } } },
          { name: 'limited', match: { pathPrefix: '/limited' }, rateLimit: { outbound: { requestsPerSecond: 1, burst: 1 } } },
        ],
      },
      bs,
    );
    // An attempt that failed (the proxy's timeout after sending).
    const t = await send(OUT, svc, { path: '/hang', headers: { 'x-skein-explain': '1', 'x-skein-timeout-ms': '100' } });
    assertProxyError(t, 504, 'SKEIN_E_UPSTREAM_TIMEOUT', 'a 100 ms deadline against a hanging backend');
    const ex = parseExplain(t.headers['x-skein-explain']);
    assert.equal(ex.route, 'default', `explain on a timeout: ${String(t.headers['x-skein-explain'])}`);
    assert.match(ex.failed ?? '', new RegExp(`^${svc}-1: no response within 100 ms`), `explain names the failed attempt: ${String(t.headers['x-skein-explain'])}`);
    // Answers made before any attempt.
    const cases: Array<[string, string, number, string, Record<string, string>]> = [
      ['a fault abort', '/abort', 503, 'SKEIN_E_FAULT_INJECTED', {}],
      ['a spent deadline', '/x', 504, 'SKEIN_E_DEADLINE_EXCEEDED', { 'x-skein-timeout-ms': '0' }],
      ['the first request on a limited route', '/limited/1', 200, '', {}],
      ['a rate-limited request', '/limited/2', 429, 'SKEIN_E_RATE_LIMITED', {}],
    ];
    for (const [what, path, code, err, headers] of cases) {
      const r = await send(OUT, svc, { path, headers: { 'x-skein-explain': '1', ...headers } });
      if (err === '') assertFromApp(r, code, what);
      else assertProxyError(r, code, err, what);
      assert.equal(typeof r.headers['x-skein-explain'], 'string', `${what}: an x-skein-explain header (docs: "on any response"); got ${show(r)}`);
      assert.match(String(r.headers['x-skein-explain']), new RegExp(`route=[a-z]+; service=${svc}`), `${what}: explain names route and service`);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 10. Bad input
// ---------------------------------------------------------------------------------------------

describe('10. invalid policies are refused, the policy in force keeps serving', () => {
  test('negative duration, ratio 1.5, unknown retry condition, perTry > request, duplicate route names: 400 SKEIN_E_VALIDATION naming the field', async () => {
    const svc = 'bad';
    const bs = await backendsFor([`${svc}-a`]);
    const good = { ...QUIET, timeouts: { request: '5s' }, retries: { statuses: [503] }, routes: [{ name: 'r1', match: { pathPrefix: '/r1' } }] };
    await setupService(svc, good, bs);
    assertFromApp(await send(OUT, svc, { path: '/before' }), 200, 'before');
    await waitForPolicy(svc, (p) => defaultRoute(p).requestTimeoutMs === 5000, 'the good policy');
    const cases: Array<{ name: string; body: Record<string, unknown>; field: string }> = [
      { name: 'negative duration', body: { timeouts: { request: '-1s' } }, field: 'timeouts.request' },
      { name: 'ratio 1.5', body: { retries: { budget: { ratio: 1.5 } } }, field: 'retries.budget.ratio' },
      { name: 'unknown retry condition', body: { retries: { on: ['reset', 'gremlins'] } }, field: 'retries.on[1]' },
      { name: 'perTry > request', body: { timeouts: { request: '1s', perTry: '2s' } }, field: 'timeouts.perTry' },
      { name: 'duplicate route names', body: { routes: [{ name: 'x', match: { pathPrefix: '/a' } }, { name: 'x', match: { pathPrefix: '/b' } }] }, field: 'routes[1].name' },
      { name: 'breaker backoff max below min', body: { breaker: { backoff: { min: '2s', max: '1s' } } }, field: 'breaker.backoff.max' },
    ];
    for (const c of cases) {
      const r = await api(cp.http, 'PUT', `/v1/services/${svc}`, { balancer: { kind: 'round-robin' }, ...c.body });
      assert.equal(r.status, 400, `${c.name}: 400; got ${r.status} ${JSON.stringify(r.body)}`);
      assert.equal(r.body?.code, 'SKEIN_E_VALIDATION', `${c.name}: code; got ${JSON.stringify(r.body)}`);
      const fields = [r.body?.field, ...((r.body?.details ?? []) as Array<{ field: string }>).map((d) => d.field)];
      assert.ok(fields.includes(c.field), `${c.name}: the error names ${c.field}; got ${JSON.stringify(r.body)}`);
      assert.equal(r.body?.field, c.field, `${c.name}: body.field; got ${JSON.stringify(r.body)}`);
    }
    // Nothing was stored.
    const def = await api(cp.http, 'GET', `/v1/services/${svc}`);
    assert.equal(def.status, 200);
    assert.equal(def.body.definition?.trafficRaw?.timeouts?.request, '5s', `the stored definition is the good one: ${JSON.stringify(def.body.definition)}`);
    // A later write (another service) as a barrier: once the proxy has it, it has seen all before it.
    const [barrier] = await backendsFor([`${svc}-barrier-a`]);
    await setupService(`${svc}-barrier`, {}, [barrier as Backend]);
    const p = (await serviceDebug(svc)).traffic.policy;
    assert.equal(defaultRoute(p).requestTimeoutMs, 5000, 'the proxy still has the request timeout in force');
    assert.deepEqual(defaultRoute(p).retries.statuses, [503], 'and the retry statuses');
    assert.deepEqual((p.routes as Array<{ name: string }>).map((r) => r.name), ['r1', 'default'], 'and the routes');
    for (let i = 0; i < 3; i++) assertFromApp(await send(OUT, svc, { path: `/after${i}` }), 200, `request ${i} after the refused policies`);
  });

  test('routes managed one at a time: a bad field and an unknown service are refused, naming the field', async () => {
    const bad = await api(cp.http, 'PUT', '/v1/services/bad/routes/r2', { match: { pathPrefix: '/r2' }, retries: { on: ['gremlins'] } });
    assert.equal(bad.status, 400, `bad retry condition in a route: ${JSON.stringify(bad.body)}`);
    assert.equal(bad.body?.code, 'SKEIN_E_VALIDATION');
    assert.equal(bad.body?.field, 'retries.on[0]', `field: ${JSON.stringify(bad.body)}`);
    const dflt = await api(cp.http, 'PUT', '/v1/services/bad/routes/default', { match: { pathPrefix: '/d' } });
    assert.equal(dflt.status, 400, `a route named default: ${JSON.stringify(dflt.body)}`);
    assert.equal(dflt.body?.code, 'SKEIN_E_VALIDATION');
    const unknown = await api(cp.http, 'PUT', '/v1/services/no-such-service/routes/r', { match: { pathPrefix: '/r' } });
    assert.equal(unknown.status, 404, `a route of an unknown service: ${JSON.stringify(unknown.body)}`);
    assert.equal(unknown.body?.code, 'SKEIN_E_UNKNOWN_SERVICE');
    assert.equal(unknown.body?.field, 'service', `field: ${JSON.stringify(unknown.body)}`);
    const def = await api(cp.http, 'GET', '/v1/services/bad');
    assert.deepEqual((def.body.definition?.trafficRaw?.routes as Array<{ name: string }>).map((r) => r.name), ['r1'], 'the routes are unchanged');
  });
});

// ---------------------------------------------------------------------------------------------
// 11. Regressions found in review
// ---------------------------------------------------------------------------------------------

/** A raw TCP backend: `onRequest` gets each connection's first bytes and the socket. */
async function rawBackend(onRequest: (sock: Socket) => void): Promise<{ port: number }> {
  const { createServer } = await import('node:net');
  const sockets = new Set<Socket>();
  const server = createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    sock.once('data', () => onRequest(sock));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  onCleanup(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return { port: (server.address() as { port: number }).port };
}

describe('11. regressions', () => {
  test('a 503 that arrives while the request body is still streaming is not retried: no app ever gets part of a body', async () => {
    const svc = 'early-503';
    let answered!: () => void;
    const answeredEarly = new Promise<void>((r) => (answered = r));
    const a = await rawBackend((sock) => {
      sock.write('HTTP/1.1 503 Service Unavailable\r\ncontent-length: 5\r\n\r\nsorry');
      answered();
    });
    const bodies: number[] = [];
    const b = http.createServer((req, res) => {
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      req.on('end', () => {
        bodies.push(n);
        res.end(`stored ${n}`);
      });
    });
    await new Promise<void>((r) => b.listen(0, '127.0.0.1', () => r()));
    onCleanup(() => new Promise<void>((r) => b.close(() => r())));
    await setupService(svc, { ...QUIET, retries: { nonIdempotent: true } }, [
      { id: `${svc}-a`, port: a.port },
      { id: `${svc}-b`, port: (b.address() as { port: number }).port },
    ]);
    // Round robin from a fresh state: send until a request lands on A first (the one that answers early).
    const chunk = (s: string) => `${s.length.toString(16)}\r\n${s}\r\n`;
    const sock = createConnection({ host: '127.0.0.1', port: OUT });
    sock.on('error', () => {});
    let got = '';
    sock.on('data', (d: Buffer) => (got += d.toString('latin1')));
    await new Promise<void>((r) => sock.once('connect', () => r()));
    for (let i = 0; i < 6; i++) {
      // Whichever endpoint it reaches, the body is sent in two parts, the second after A answered.
      sock.write(`PUT /x${i} HTTP/1.1\r\nhost: ${svc}\r\ntransfer-encoding: chunked\r\n\r\n${chunk('a'.repeat(1000))}`);
      await Promise.race([answeredEarly, waitFor(() => got.includes('\r\n\r\n'), { timeoutMs: 1000, what: 'an answer' }).catch(() => undefined)]);
      sock.write(`${chunk('tail')}0\r\n\r\n`);
      await waitFor(() => /\r\n\r\n(sorry|stored \d+)$/.test(got), { timeoutMs: 5000, what: `the answer to PUT /x${i}: ${JSON.stringify(got)}` });
      if (got.includes('sorry')) break;
      got = '';
    }
    assert.match(got, /^HTTP\/1\.1 503/, `the app's own 503 reaches the client: ${JSON.stringify(got)}`);
    assert.ok(!got.includes('x-skein-error'), 'it is the app answer, not a proxy error');
    assert.deepEqual(bodies.filter((n) => n !== 1004), [], `no app got part of a body (B got ${JSON.stringify(bodies)})`);
    sock.destroy();
  });

  test('a retryable 503 whose body stalls does not outlive the request timeout', async () => {
    const svc = 'stall-503';
    const a = await rawBackend((sock) => sock.write('HTTP/1.1 503 Service Unavailable\r\ncontent-length: 100\r\n\r\npartial'));
    await setupService(svc, { ...QUIET, timeouts: { request: '500ms' } }, [{ id: `${svc}-a`, port: a.port }]);
    let r: Reply;
    try {
      r = await send(OUT, svc, { path: '/stall', timeoutMs: 5000 });
    } catch (e) {
      // Once seen in CI (and not reproduced since): say what the proxy was doing.
      const state = await serviceDebug(svc).catch((x: unknown) => String(x));
      throw new Error(`${(e as Error).message}; the proxy's view of ${svc}: ${JSON.stringify(state)}; its last log lines:\n${P.logs.slice(-30).join('\n')}`, { cause: e });
    }
    assertProxyError(r, 504, 'SKEIN_E_UPSTREAM_TIMEOUT', 'a 503 whose body never ends, with a retry pending');
    await waitFor(async () => (await serviceDebug(svc)).traffic.inFlight === 0, { timeoutMs: 5000, what: 'the in-flight count back to 0' });
  });

  test("an app registered without an inbound proxy cannot pass its answer off as a proxy's refusal: a POST reaches it once", async () => {
    const svc = 'fake-refusal';
    let posts = 0;
    const app = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        if (req.method === 'POST') posts++;
        res.writeHead(502, { 'content-type': 'application/json', 'x-skein-error': 'SKEIN_E_UPSTREAM_CONNECT', 'x-skein-error-origin': 'inbound' });
        res.end(JSON.stringify({ code: 'SKEIN_E_UPSTREAM_CONNECT', message: 'not really a proxy' }));
      });
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
    onCleanup(() => new Promise<void>((r) => app.close(() => r())));
    const port = (app.address() as { port: number }).port;
    // Two instances, so a retry would have somewhere to go; neither is registered as an inbound listener.
    await setupService(svc, { ...QUIET }, [
      { id: `${svc}-a`, port },
      { id: `${svc}-b`, port },
    ]);
    const m0 = await metrics();
    const r = await send(OUT, svc, { method: 'POST', path: '/pay', body: Buffer.from('{"amount":1}'), headers: { 'content-type': 'application/json' } });
    assert.equal(r.status, 502, show(r));
    assert.equal(posts, 1, 'the app got the POST exactly once');
    const m1 = await metrics();
    assert.equal(mv(m1, 'skein_proxy_retries_total', { service: svc, reason: 'refused-stream' }) - mv(m0, 'skein_proxy_retries_total', { service: svc, reason: 'refused-stream' }), 0, 'no refused-stream retry');
  });

  test("an app's relayed SKEIN_E_UPSTREAM_CONNECT is not taken for a peer proxy's refusal: a POST is not sent again", async () => {
    const svc = 'relayed-refusal';
    const bs = await backendsFor([`${svc}-a`], [`${svc}-b`]);
    const relay = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        const body = JSON.stringify({ code: 'SKEIN_E_UPSTREAM_CONNECT', message: 'relayed by the app' });
        res.writeHead(502, { 'content-type': 'application/json', 'x-skein-error': 'SKEIN_E_UPSTREAM_CONNECT', 'x-skein-error-origin': 'inbound' });
        res.end(body);
      });
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', () => r()));
    onCleanup(() => new Promise<void>((r) => relay.close(() => r())));
    // The app sits behind an inbound listener of its own proxy, which must not let its header pass as its own.
    const Q = await startProxy({ control: cp.http, workloads: [`name=${svc}-r,service=${svc},inbound=127.0.0.1:0,app=127.0.0.1:${(relay.address() as { port: number }).port}`] });
    onCleanup(() => Q.stop());
    await waitForProxyReady(Q);
    await setupService(svc, { ...QUIET }, [{ id: `${svc}-r`, port: (Q.workload(`${svc}-r`).inbound as { port: number }).port }]);
    void bs;
    const r = await send(OUT, svc, { method: 'POST', path: '/order', body: Buffer.from('{}'), headers: { 'content-type': 'application/json' } });
    assert.equal(r.status, 502, show(r));
    assert.equal(r.headers['x-skein-error'], 'SKEIN_E_UPSTREAM_CONNECT', "the app's header passes through");
    assert.equal(r.headers['x-skein-error-origin'], undefined, "but not its claim to be the proxy's answer");
    const m = await metrics();
    assert.equal(metricValue(m, 'skein_proxy_retries_total', { service: svc, reason: 'refused-stream' }) ?? 0, 0, 'no retry of the POST');
  });
});
