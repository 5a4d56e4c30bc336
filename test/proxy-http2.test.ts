/**
 * HTTP/2 through the proxy, end to end: a real control plane, `skein proxy` processes, h2c
 * backends (Node's http2), and real clients (curl --http2-prior-knowledge, h2load, Node's http2
 * client). h2c with prior knowledge on the same listener as HTTP/1; per-stream balancing (one
 * client connection over three replicas); errors answered on the stream, never a session kill;
 * trailers; interim responses (103, 100); upstream sessions reused and replaced after GOAWAY; two proxies in a row (the
 * inbound one speaks h2c to its app); rapid reset (CVE-2023-44487) ends in the proxy's own GOAWAY
 * (ENHANCE_YOUR_CALM) with its CPU bounded; one request-id sequence for HTTP/1 and HTTP/2.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import http2, { type ClientHttp2Session, type IncomingHttpHeaders, type Http2Server } from 'node:http2';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { createConnection } from 'node:net';
import { api, closedPort, run, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { httpGet, metricValue, registerInstance, startProxy, waitForProxyReady, type ProxyProcess } from './proxy-helpers.js';
import { HTTP2_DEFAULTS } from '../src/api/http2.js';
import { INBOUND_PROXY_LABEL } from '../src/api/names.js';

const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

interface H2Backend {
  server: Http2Server;
  port: number;
  id: string;
  /** Sessions the backend accepted. */
  sessions: number;
  /** Headers of the requests it got. */
  seen: IncomingHttpHeaders[];
}

/**
 * An h2c backend: GET answers its id (x-backend) and the path; POST /echo echoes the body;
 * /trailers answers with trailers; /early-hints sends a 103 first; /continue a 100 to
 * `expect: 100-continue`; /goaway answers, then sends GOAWAY on its session.
 */
async function h2Backend(id: string): Promise<H2Backend> {
  const server = http2.createServer({ settings: { maxConcurrentStreams: 256 } });
  const b: H2Backend = { server, port: 0, id, sessions: 0, seen: [] };
  server.on('session', () => b.sessions++);
  server.on('stream', (stream, headers) => {
    b.seen.push(headers);
    stream.on('error', () => undefined);
    const path = headers[':path'] ?? '';
    if (path === '/echo') {
      const parts: Buffer[] = [];
      stream.on('data', (d: Buffer) => parts.push(d));
      stream.on('end', () => {
        const body = Buffer.concat(parts);
        stream.respond({ ':status': 200, 'x-backend': id, 'content-length': body.length });
        stream.end(body);
      });
      return;
    }
    if (path === '/trailers') {
      stream.respond({ ':status': 200, 'x-backend': id }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'x-checksum': 'abc123' }));
      stream.end('with trailers');
      return;
    }
    if (path === '/early-hints') {
      stream.additionalHeaders({ ':status': 103, link: '</style.css>; rel=preload; as=style' });
      stream.respond({ ':status': 200, 'x-backend': id });
      stream.end('after the hints');
      return;
    }
    if (path === '/continue') {
      // Answers 100 to expect: 100-continue (nothing else here would), then the body's size.
      if (headers.expect === '100-continue') stream.additionalHeaders({ ':status': 100 });
      let size = 0;
      stream.on('data', (d: Buffer) => (size += d.length));
      stream.on('end', () => {
        stream.respond({ ':status': 200, 'x-backend': id });
        stream.end(`got ${size} bytes`);
      });
      return;
    }
    if (path === '/goaway') {
      stream.respond({ ':status': 200, 'x-backend': id });
      stream.end('bye', () => stream.session?.goaway());
      return;
    }
    stream.respond({ ':status': 200, 'x-backend': id, 'content-type': 'text/plain' });
    stream.end(`${id} ${path}`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  b.port = (server.address() as { port: number }).port;
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return b;
}

interface H2Response {
  status: number;
  headers: IncomingHttpHeaders;
  trailers: IncomingHttpHeaders | null;
  body: Buffer;
}

function h2Request(c: ClientHttp2Session, headers: Record<string, string | string[]>, body?: Buffer): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const req = c.request(headers, { endStream: body === undefined });
    const parts: Buffer[] = [];
    let head: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders | null = null;
    req.on('response', (h) => (head = h));
    req.on('trailers', (t) => (trailers = t));
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => resolve({ status: Number(head[':status']), headers: head, trailers, body: Buffer.concat(parts) }));
    req.on('error', reject);
    req.setTimeout(10_000, () => req.close(http2.constants.NGHTTP2_CANCEL));
    if (body !== undefined) req.end(body);
  });
}

function connect(port: number): ClientHttp2Session {
  const c = http2.connect(`http://127.0.0.1:${port}`);
  c.on('error', () => undefined);
  cleanups.push(() => c.destroy());
  return c;
}

const metrics = async (p: ProxyProcess) => (await api(p.admin, 'GET', '/metrics')).body as string;

let cp: ControlProcess;
let A: ProxyProcess;
let outPort: number;
let backends: H2Backend[];
/** Headers of the requests the HTTP/1 app got. */
const plainSeen: http.IncomingHttpHeaders[] = [];

before(async () => {
  const dir = await tempDir('skein-h2-');
  cleanups.push(dir.remove);
  cp = await startControl({ dataDir: dir.path, args: ['--dns', 'off'] });
  cleanups.push(() => cp.stop());
  backends = await Promise.all(['h2-1', 'h2-2', 'h2-3'].map((id) => h2Backend(id)));
  for (const b of backends) await registerInstance(cp.http, 'grid', b.id, b.port);
  await registerInstance(cp.http, 'down', 'down-1', await closedPort());
  // An HTTP/1 app: the HTTP/1 path is unchanged on the same listener.
  const plain = http.createServer((req, res) => {
    plainSeen.push(req.headers);
    res.end('plain');
  });
  await new Promise<void>((r) => plain.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => plain.close(() => r())));
  await registerInstance(cp.http, 'plain', 'plain-1', (plain.address() as { port: number }).port);
  A = await startProxy({ control: cp.http, workloads: ['name=web-1,service=web,outbound=127.0.0.1:0'] });
  cleanups.push(() => A.stop());
  await waitForProxyReady(A);
  outPort = A.workload('web-1').outbound!.port;
  await waitFor(async () => ((await api(A.admin, 'GET', '/debug/endpoints')).body?.services?.grid?.endpoints?.length ?? 0) === 3, { what: 'the proxy to know 3 instances of grid' });
});

describe('HTTP/2 (h2c with prior knowledge) through the outbound listener', () => {
  test('curl --http2-prior-knowledge gets an answer from an instance, routed by :authority; HTTP/1 on the same port still works', async () => {
    const r = await run('curl', ['-sS', '--http2-prior-knowledge', '-o', '-', '-w', '\n%{http_version} %{http_code}', '-H', 'x-request-id: rid-1', `http://grid/hello`, '--connect-to', `grid:80:127.0.0.1:${outPort}`], { timeoutMs: 15_000 });
    assert.equal(r.code, 0, r.stderr);
    const [body, last] = r.stdout.split('\n');
    assert.equal(last, '2 200');
    assert.match(body!, /^h2-\d \/hello$/);
    const seen = backends.flatMap((b) => b.seen).find((h) => h['x-request-id'] === 'rid-1');
    assert.ok(seen, 'a backend got the request with its x-request-id');
    assert.equal(seen[':authority'], 'grid');
    assert.equal(seen['x-skein-caller'], 'web');
    assert.equal(seen['x-forwarded-for'], '127.0.0.1');
    const h1 = await run('curl', ['-sS', '--http1.1', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', '-H', 'host: plain', `http://127.0.0.1:${outPort}/x`], { timeoutMs: 15_000 });
    assert.equal(h1.code, 0, h1.stderr);
    assert.equal(h1.stdout, '1.1 200');
  });

  test('one client connection spreads its streams over all three replicas (per-stream balancing)', async () => {
    // Round robin: every stream is one pick, so 60 streams of one connection are 20 per replica.
    assert.ok([200, 201].includes((await api(cp.http, 'PUT', '/v1/services/grid', { balancer: { kind: 'round-robin' } })).status));
    await waitFor(async () => (await api(A.admin, 'GET', '/debug/endpoints')).body?.services?.grid?.balancer?.kind === 'round-robin', { what: 'A to use round robin for grid' });
    const c = connect(outPort);
    const byBackend = new Map<string, number>();
    const rs = await Promise.all(Array.from({ length: 60 }, (_, i) => h2Request(c, { ':path': `/n/${i}`, ':authority': 'grid', 'x-skein-explain': '1' })));
    for (const r of rs) {
      assert.equal(r.status, 200);
      const id = String(r.headers['x-backend']);
      byBackend.set(id, (byBackend.get(id) ?? 0) + 1);
    }
    assert.deepEqual(Object.fromEntries([...byBackend].sort()), { 'h2-1': 20, 'h2-2': 20, 'h2-3': 20 });
    c.close();
  });

  test('errors are answered on the stream with x-skein-error and the JSON body; the session serves on', async () => {
    const c = connect(outPort);
    const unknown = await h2Request(c, { ':path': '/', ':authority': 'nosuch' });
    assert.equal(unknown.status, 503);
    assert.equal(unknown.headers['x-skein-error'], 'SKEIN_E_UNKNOWN_SERVICE');
    assert.equal(unknown.headers['content-type'], 'application/json');
    const j = JSON.parse(unknown.body.toString());
    assert.equal(j.code, 'SKEIN_E_UNKNOWN_SERVICE');
    assert.match(j.message, /no service "nosuch"/);
    const down = await h2Request(c, { ':path': '/', ':authority': 'down', 'x-skein-explain': '1' });
    assert.equal(down.status, 502);
    assert.equal(down.headers['x-skein-error'], 'SKEIN_E_UPSTREAM_CONNECT');
    assert.match(String(down.headers['x-skein-explain']), /service=down; .*attempts=/);
    assert.equal(JSON.parse(down.body.toString()).details.service, 'down');
    const ok = await h2Request(c, { ':path': '/after', ':authority': 'grid' });
    assert.equal(ok.status, 200, 'the same session still serves');
    assert.equal(c.destroyed || c.closed, false);
    c.close();
  });

  test('request bodies and trailers pass both ways; a 1 MiB body arrives whole', async () => {
    const c = connect(outPort);
    const body = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < body.length; i++) body[i] = (i * 7) & 0xff;
    const echo = await h2Request(c, { ':path': '/echo', ':method': 'POST', ':authority': 'grid' }, body);
    assert.equal(echo.status, 200);
    assert.equal(Buffer.compare(echo.body, body), 0, 'the echoed body is the body sent');
    const t = await h2Request(c, { ':path': '/trailers', ':authority': 'grid', te: 'trailers', 'x-mark': 'te-test' });
    assert.equal(t.body.toString(), 'with trailers');
    assert.equal(t.trailers?.['x-checksum'], 'abc123');
    const seen = backends.flatMap((b) => b.seen).find((h) => h['x-mark'] === 'te-test');
    assert.equal(seen?.te, 'trailers', 'te: trailers passes (gRPC needs it, although TE is hop-by-hop in HTTP/1)');
    c.close();
  });

  test('interim responses reach the client: 103 Early Hints (curl --http2-prior-knowledge), 100 Continue (a Node client that waits for it before its body)', async () => {
    const r = await run('curl', ['-sS', '--http2-prior-knowledge', '-D', '-', `http://grid/early-hints`, '--connect-to', `grid:80:127.0.0.1:${outPort}`], { timeoutMs: 15_000 });
    assert.equal(r.code, 0, r.stderr);
    const heads = r.stdout.split('\r\n\r\n');
    assert.match(heads[0]!, /^HTTP\/2 103 ?\r\nlink: <\/style\.css>; rel=preload; as=style$/, r.stdout);
    assert.match(heads[1]!, /^HTTP\/2 200 ?\r\n/, r.stdout);
    assert.match(heads[1]!, /\r\nx-backend: h2-\d/);
    assert.equal(heads[2], 'after the hints');
    const c = connect(outPort);
    const req = c.request({ ':method': 'POST', ':path': '/continue', ':authority': 'grid', expect: '100-continue' }, { endStream: false });
    const interim: number[] = [];
    req.on('headers', (h) => interim.push(Number(h[':status'])));
    const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
      let status = 0;
      let body = '';
      req.on('response', (h) => (status = Number(h[':status'])));
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => resolve({ status, body }));
      req.on('error', reject);
    });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no 100 Continue within 5 s')), 5000);
      req.once('continue', () => {
        clearTimeout(t);
        resolve();
      });
    });
    req.end(Buffer.alloc(1000));
    assert.deepEqual(await answer, { status: 200, body: 'got 1000 bytes' });
    assert.deepEqual(interim, [100]);
    c.close();
  });

  test('h2load: every request succeeds over 4 connections of 10 streams; upstream sessions are reused', async () => {
    const before = backends.reduce((n, b) => n + b.sessions, 0);
    const r = await run('h2load', ['-n', '3000', '-c', '4', '-m', '10', '-H', ':authority: grid', `http://127.0.0.1:${outPort}/load`], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, r.stderr);
    const m = /requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(r.stdout);
    assert.ok(m, r.stdout);
    assert.equal(Number(m[3]), 3000, r.stdout);
    assert.equal(Number(m[4]), 0);
    const opened = backends.reduce((n, b) => n + b.sessions, 0) - before;
    assert.ok(opened <= 6, `3000 requests opened ${opened} new upstream sessions (pooled: at most a few)`);
    const text = await metrics(A);
    assert.ok((metricValue(text, 'skein_proxy_requests_total', { direction: 'outbound', service: 'grid' }) ?? 0) >= 3000);
  });

  test('a session the upstream sends GOAWAY on is replaced: the next requests succeed, none of them through a retry or a failed connect', async () => {
    const counts = async () => {
      const text = await metrics(A);
      return { retries: metricValue(text, 'skein_proxy_retries_total', { service: 'grid', reason: 'connect-failure' }) ?? 0, failedConnects: metricValue(text, 'skein_proxy_upstream_connects_total', { result: 'failed' }) ?? 0 };
    };
    const before = await counts();
    const c = connect(outPort);
    for (let i = 0; i < 6; i++) {
      const r = await h2Request(c, { ':path': '/goaway', ':authority': 'grid' });
      assert.equal(r.status, 200, `request ${i} after GOAWAYs`);
    }
    const r = await h2Request(c, { ':path': '/after-goaway', ':authority': 'grid' });
    assert.equal(r.status, 200);
    c.close();
    // A GOAWAY'd session is retired before a request is put on it: no request met a closing session.
    assert.deepEqual(await counts(), before);
  });
});

describe('request ids', () => {
  test('requests without x-request-id get ids of one sequence, whichever protocol they came in (HTTP/1, HTTP/2, HTTP/1)', async () => {
    const h1 = async (path: string) => {
      const r = await httpGet(outPort, path, { headers: { host: 'plain' } });
      assert.equal(r.status, 200);
      return String(plainSeen.at(-1)?.['x-request-id']);
    };
    const first = await h1('/id-1');
    const c = connect(outPort);
    const r = await h2Request(c, { ':path': '/id-2', ':authority': 'grid' });
    assert.equal(r.status, 200);
    c.close();
    const second = String(backends.flatMap((b) => b.seen).find((h) => h[':path'] === '/id-2')?.['x-request-id']);
    const third = await h1('/id-3');
    const ids = [first, second, third];
    for (const id of ids) assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, `a proxy-made id: ${ids.join(' ')}`);
    // One sequence: the process's random prefix, and a counter that goes on from one protocol to the other.
    assert.equal(new Set(ids.map((id) => id.slice(0, 24))).size, 1, `one prefix: ${ids.join(' ')}`);
    const counter = ids.map((id) => parseInt(id.slice(24), 16));
    assert.deepEqual([counter[1]! - counter[0]!, counter[2]! - counter[1]!], [1, 1], `consecutive: ${ids.join(' ')}`);
  });
});

describe('the caller\'s deadline over HTTP/2', () => {
  test('a repeated x-skein-timeout-ms is its smallest (as over HTTP/1 and the SDK); one that is not whole ms is a 400 with the one message', async () => {
    const c = connect(outPort);
    const r = await h2Request(c, { ':path': '/deadline-twice', ':authority': 'grid', 'x-skein-timeout-ms': ['5000', '700'] });
    assert.equal(r.status, 200);
    const seen = backends.flatMap((b) => b.seen).find((h) => h[':path'] === '/deadline-twice');
    const left = Number(seen?.['x-skein-timeout-ms']);
    assert.ok(left > 0 && left <= 700, `the app is given what is left of the smaller, 700 ms (${left})`);
    const bad = await h2Request(c, { ':path': '/deadline-bad', ':authority': 'grid', 'x-skein-timeout-ms': 'soon' });
    assert.equal(bad.status, 400);
    assert.equal(bad.headers['x-skein-error'], 'SKEIN_E_BAD_REQUEST');
    assert.match(bad.body.toString(), /x-skein-timeout-ms must be a whole number of milliseconds, not \\"soon\\"/);
    c.close();
  });
});

describe('HTTP/2 through two proxies', () => {
  test("A's outbound -> B's inbound (h2c) -> the app over h2c: the app sees HTTP/2 and the caller", async () => {
    const app = await h2Backend('app-1');
    const B = await startProxy({ control: cp.http, workloads: [`name=users-1,service=users,inbound=127.0.0.1:0,app=127.0.0.1:${app.port}`] });
    cleanups.push(() => B.stop());
    await registerInstance(cp.http, 'users', 'users-1', B.workload('users-1').inbound!.port, { labels: { [INBOUND_PROXY_LABEL]: 'true' } });
    await waitFor(async () => ((await api(A.admin, 'GET', '/debug/endpoints')).body?.services?.users?.endpoints?.length ?? 0) === 1, { what: 'A to know users' });
    const c = connect(outPort);
    const r = await h2Request(c, { ':path': '/two-hops', ':authority': 'users' });
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), 'app-1 /two-hops');
    const seen = app.seen.at(-1)!;
    assert.equal(seen['x-skein-caller'], 'web');
    assert.match(String(seen['x-skein-timeout-ms']), /^\d+$/, 'the deadline left travels with the request');
    const echo = await h2Request(c, { ':path': '/trailers', ':authority': 'users' });
    assert.equal(echo.trailers?.['x-checksum'], 'abc123');
    const mb = await metrics(B);
    assert.equal(metricValue(mb, 'skein_proxy_requests_total', { direction: 'inbound', service: 'users' }), 2);
    c.close();
  });
});

/** CPU seconds (user + system) a process has used, from /proc. */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / 100;
}

/** A frame: 9-byte header (length, type, flags, stream id) and its payload. */
function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}

/**
 * A raw HTTP/2 client doing what the rapid-reset attack does: HEADERS then RST_STREAM (CANCEL) for
 * stream after stream, both frames in one write, 50 streams per round trip. Resolves with
 * the first GOAWAY's error code (-1: none), the streams the client wrote, and the streams the
 * server processed (the GOAWAY's last stream id).
 */
function rapidReset(port: number, max: number): Promise<{ goaway: number; opened: number; processed: number }> {
  // GET http://grid/ : :method GET (static 2), :scheme http (6), :path / (4), :authority "grid" (literal, name 1, not indexed).
  const block = Buffer.from([0x82, 0x86, 0x84, 0x01, 0x04, ...Buffer.from('grid')]);
  const rst = Buffer.alloc(4);
  rst.writeUInt32BE(http2.constants.NGHTTP2_CANCEL);
  return new Promise((resolve) => {
    const sock = createConnection({ host: '127.0.0.1', port });
    let opened = 0;
    let goaway = -1;
    let lastStream = 0;
    let buf = Buffer.alloc(0);
    let over = false;
    const finish = () => {
      if (over) return;
      over = true;
      sock.destroy();
      resolve({ goaway, opened, processed: (lastStream + 1) / 2 });
    };
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const type = buf[3]!;
        const flags = buf[4]!;
        if (type === 4 && (flags & 1) === 0) sock.write(frame(4, 1, 0, Buffer.alloc(0)));
        if (type === 6 && (flags & 1) === 1) setImmediate(burst);
        if (type === 7 && goaway < 0) {
          lastStream = buf.readUInt32BE(9) & 0x7fffffff;
          goaway = buf.readUInt32BE(9 + 4);
        }
        buf = buf.subarray(9 + len);
      }
    });
    // 50 streams opened and reset, then a PING: the next 50 leave when its ACK comes back, so the
    // server has read everything when it closes (unread bytes would make its close a TCP reset,
    // which can drop the GOAWAY on its way).
    const burst = () => {
      if (over || goaway >= 0) return;
      if (opened >= max) {
        setTimeout(finish, 2000);
        return;
      }
      const parts: Buffer[] = [];
      for (let i = 0; i < 50 && opened < max; i++) {
        const id = 2 * opened + 1;
        opened++;
        parts.push(frame(1, 0x5, id, block), frame(3, 0, id, rst));
      }
      parts.push(frame(6, 0, 0, Buffer.alloc(8)));
      sock.write(Buffer.concat(parts));
    };
    sock.on('close', finish);
    sock.on('error', finish);
    sock.on('connect', () => {
      sock.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), frame(4, 0, 0, Buffer.alloc(0))]));
      burst();
    });
  });
}

describe('rapid reset (CVE-2023-44487)', () => {
  test("a client that opens and resets streams in a loop gets the proxy's own GOAWAY (ENHANCE_YOUR_CALM) after maxResets resets, with the CPU bounded", async () => {
    const pid = A.child.pid!;
    const cpu0 = cpuSeconds(pid);
    const errors = async () => metricValue(await metrics(A), 'skein_proxy_errors_total', { code: 'SKEIN_E_H2_RAPID_RESET' }) ?? 0;
    const errors0 = await errors();
    const { goaway, opened, processed } = await rapidReset(outPort, 5000);
    const used = cpuSeconds(pid) - cpu0;
    // The driver's guard (session.ts clientReset), not one of Node's behind it: Node's refusal of
    // streams its JS side has not closed (GOAWAY INTERNAL_ERROR after 100 refusals) and nghttp2's
    // reset rate limit (also INTERNAL_ERROR, five times as lenient) would send another code.
    assert.equal(goaway, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, `GOAWAY ENHANCE_YOUR_CALM (got code ${goaway} after ${opened} streams written, ${processed} processed)`);
    // The 201st reset trips it; the GOAWAY's last stream id is where nghttp2 had read to by then:
    // within the burst of 50 that carried that reset, or the next one.
    const max = HTTP2_DEFAULTS.maxResets;
    assert.ok(processed > max && processed <= max + 100, `GOAWAY after ${processed} streams reset (maxResets ${max}; the client had written ${opened})`);
    assert.equal((await errors()) - errors0, 1, 'SKEIN_E_H2_RAPID_RESET counted once');
    assert.ok(used < 2, `the proxy used ${used.toFixed(2)} s of CPU on the attack`);
    // Other clients are served.
    const ok = await httpGet(outPort, '/after-attack', { headers: { host: 'plain' } });
    assert.equal(ok.status, 200);
  });
});

describe('a preface split over reads', () => {
  test('a client that sends part of the HTTP/2 preface and stops is closed at the head timeout; one that sends the rest is served', async () => {
    const P = await startProxy({ control: cp.http, workloads: ['name=web-2,service=web,outbound=127.0.0.1:0'], args: ['--header-timeout', '400ms'] });
    cleanups.push(() => P.stop());
    await waitForProxyReady(P);
    const port = P.workload('web-2').outbound!.port;
    // "PRI" and nothing more: neither HTTP/1 nor HTTP/2 yet.
    const closedAfter = await new Promise<string>((resolve) => {
      const s = createConnection({ host: '127.0.0.1', port }, () => s.write('PRI'));
      const t0 = performance.now();
      const guard = setTimeout(() => {
        s.destroy();
        resolve('still open after 10 s');
      }, 10_000);
      s.on('error', () => undefined);
      s.on('close', () => {
        clearTimeout(guard);
        resolve(performance.now() - t0 >= 350 ? 'closed at the head timeout' : 'closed before the head timeout');
      });
    });
    assert.equal(closedAfter, 'closed at the head timeout');
    // The preface in two writes: HTTP/2 all the same.
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const session = http2.connect(`http://127.0.0.1:${port}`, {
        createConnection: () => {
          const s = createConnection({ host: '127.0.0.1', port });
          const write = s.write.bind(s) as (b: Buffer | string) => boolean;
          let first = true;
          (s as unknown as { write: (b: Buffer | string) => boolean }).write = (b: Buffer | string) => {
            if (!first) return write(b);
            first = false;
            const buf = Buffer.isBuffer(b) ? b : Buffer.from(b);
            write(buf.subarray(0, 5));
            return write(buf.subarray(5));
          };
          return s;
        },
      });
      session.on('error', reject);
      const req = session.request({ ':path': '/split', ':authority': 'grid' });
      let status = 0;
      const chunks: Buffer[] = [];
      req.on('response', (h) => (status = Number(h[':status'])));
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => {
        session.close();
        resolve({ status, body: Buffer.concat(chunks).toString() });
      });
      req.on('error', reject);
    });
    assert.equal(answer.status, 200, answer.body);
  });
});
