/**
 * `skein proxy` end to end over HTTP/1.1, on real sockets: a control plane, real backends
 * (node:http servers, and a raw TCP server for the answers node:http will not give), and the proxy
 * as a child process. Covers routing by Host and absolute-form targets, the proxy's own error
 * answers, hop-by-hop and forwarding headers, keep-alive and pipelining, streaming bodies both
 * ways, HEAD, `Expect: 100-continue`, upgrades, HTTP/1.0 clients, the listener limits (on a second
 * proxy with small ones), upstream failures, the admin server and the inbound listener.
 *
 * One control plane and one proxy serve most subtests; each subtest uses its own paths (and, where
 * it counts connections or metrics, its own service) so that they do not see each other.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer as createHttpServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type Socket } from 'node:net';
import type { Writable } from 'node:stream';
import { api, closedPort, startControl, tempDir, waitFor } from './helpers.js';
import {
  decodeChunked,
  isCompleteResponse,
  metricValue,
  openRaw,
  parseResponse,
  rawExchange,
  registerInstance,
  scrapeMetrics,
  startProxy,
  waitForProxyReady,
  type ParsedResponse,
  type ProxyProcess,
  type RawConnection,
  assertErrorBody,
} from './proxy-helpers.js';

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

const MiB = 1024 * 1024;
/** 20 MiB of random bytes: the large bodies, both ways. */
const BIG = randomBytes(20 * MiB);
const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const BIG_SHA = sha256(BIG);
/** The body of GET /sized (HEAD /sized announces its length). */
const SIZED = Buffer.alloc(1234, 'abcdefghij');
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;

/** Named one-shot gates: a backend waits on one, the test opens it (before or after the wait). */
class Gates {
  private readonly waiting = new Map<string, () => void>();
  private readonly opened = new Set<string>();
  wait(name: string): Promise<void> {
    if (this.opened.has(name)) return Promise.resolve();
    return new Promise((resolve) => this.waiting.set(name, resolve));
  }
  open(name: string): void {
    this.opened.add(name);
    const r = this.waiting.get(name);
    this.waiting.delete(name);
    r?.();
  }
}

/** A request as a node:http backend saw it. */
interface Seen {
  method: string;
  url: string;
  httpVersion: string;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
  /** Body bytes so far, their hash once complete, and the first 4 KiB as text (as they arrive). */
  bytes: number;
  sha256: string;
  text: string;
  done: boolean;
  upgrade: boolean;
}

interface HttpBackend {
  name: string;
  port: number;
  requests: Seen[];
  /** TCP connections accepted, and closed, since start. */
  connections: number;
  closedConnections: number;
  gates: Gates;
  /** The last request with this exact target. */
  find(url: string): Seen | undefined;
  close(): Promise<void>;
}

async function writeAll(w: Writable, buf: Buffer, chunk = 256 * 1024): Promise<void> {
  for (let off = 0; off < buf.length; off += chunk) {
    if (!w.write(buf.subarray(off, off + chunk))) await once(w, 'drain');
  }
}

/**
 * A node:http backend. By path:
 * - `/upload`: answers `{"bytes":N,"sha256":"..."}` of the request body;
 * - `/echo-body`: answers the request body (first 4 KiB) once it is complete;
 * - `/big`, `/big-chunked`: the 20 MiB body, with Content-Length or chunked;
 * - `/sized`: 1234 bytes with Content-Length (no body for HEAD);
 * - `/chunked`: `hello world` in two chunks;
 * - `/slow/ID`: `part-1;`, then `part-2;` once gate `ID:2` opens, `part-3;` once `ID:3` opens;
 * - `/hold/ID`: nothing until gate `hold:ID` opens, then `held`;
 * - `/status/NNN`: that status;
 * - anything else: `ok METHOD TARGET`.
 * An upgrade request is answered 101, then every byte is echoed.
 */
async function startHttpBackend(name: string, opts: { keepAliveTimeoutMs?: number } = {}): Promise<HttpBackend> {
  const gates = new Gates();
  const sockets = new Set<Socket>();
  const requests: Seen[] = [];
  const record = (req: IncomingMessage, upgrade: boolean): Seen => {
    const seen: Seen = {
      method: req.method ?? '',
      url: req.url ?? '',
      httpVersion: req.httpVersion,
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      bytes: 0,
      sha256: '',
      text: '',
      done: false,
      upgrade,
    };
    requests.push(seen);
    return seen;
  };
  const respond = async (req: IncomingMessage, res: ServerResponse, seen: Seen): Promise<void> => {
    const path = new URL(req.url ?? '/', 'http://backend').pathname;
    res.setHeader('x-backend', name);
    const parts = path.split('/');
    switch (parts[1]) {
      case 'upload':
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ bytes: seen.bytes, sha256: seen.sha256 }));
        return;
      case 'echo-body':
        res.end(seen.text);
        return;
      case 'big':
        res.setHeader('content-length', BIG.length);
        await writeAll(res, BIG);
        res.end();
        return;
      case 'big-chunked':
        await writeAll(res, BIG);
        res.end();
        return;
      case 'sized':
        res.setHeader('content-length', SIZED.length);
        res.setHeader('content-type', 'text/plain');
        if (req.method === 'HEAD') res.end();
        else res.end(SIZED);
        return;
      case 'chunked':
        res.setHeader('content-type', 'text/plain');
        res.write('hello ');
        res.end('world');
        return;
      case 'slow': {
        const id = parts[2] ?? '';
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('part-1;');
        await gates.wait(`${id}:2`);
        res.write('part-2;');
        await gates.wait(`${id}:3`);
        res.end('part-3;');
        return;
      }
      case 'hold':
        await gates.wait(`hold:${parts[2] ?? ''}`);
        res.end('held');
        return;
      case 'status': {
        const code = Number(parts[2]);
        res.statusCode = code;
        res.end(`status ${code}`);
        return;
      }
      default:
        res.end(`ok ${req.method} ${req.url}`);
    }
  };
  const server = createHttpServer((req, res) => {
    const seen = record(req, false);
    const hash = createHash('sha256');
    req.on('data', (d: Buffer) => {
      hash.update(d);
      seen.bytes += d.length;
      if (seen.text.length < 4096) seen.text += d.toString('latin1');
    });
    req.on('end', () => {
      seen.sha256 = hash.digest('hex');
      seen.done = true;
      respond(req, res, seen).catch(() => res.destroy());
    });
  });
  if (opts.keepAliveTimeoutMs !== undefined) server.keepAliveTimeout = opts.keepAliveTimeoutMs;
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    record(req, true);
    socket.on('error', () => {});
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    if (head.length > 0) socket.write(head);
    socket.on('data', (d: Buffer) => socket.write(d));
    socket.on('end', () => socket.end());
  });
  const b: HttpBackend = {
    name,
    port: 0,
    requests,
    connections: 0,
    closedConnections: 0,
    gates,
    find: (url) => requests.findLast((r) => r.url === url),
    close: async () => {
      server.closeAllConnections();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  server.on('connection', (s: Socket) => {
    b.connections++;
    sockets.add(s);
    s.on('close', () => {
      b.closedConnections++;
      sockets.delete(s);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  b.port = (server.address() as { port: number }).port;
  return b;
}

interface RawBackend {
  port: number;
  /** Request targets, in arrival order. */
  targets: string[];
  /** Connections accepted. */
  connections: number;
  /** Request targets per connection, in accept order. */
  byConnection: string[][];
  /** Requests it closed the connection on without answering (`oneShot`). */
  dropped: string[];
  gates: Gates;
  close(): Promise<void>;
}

/**
 * A raw TCP backend for what node:http will not answer (requests have no bodies). By target:
 * - `/hop`: a 200 with hop-by-hop response headers (Connection naming a header, Keep-Alive);
 * - `/garbage`: bytes that are not HTTP;
 * - `/reset-early`: a TCP reset, no answer;
 * - `/reset-mid/ID`, `/reset-mid-chunked/ID`: a head and 1000 body bytes of a longer body, then a
 *   reset once gate ID opens;
 * - `/eof`: a body delimited by the end of the connection;
 * - `/early-hints`: 103 Early Hints, then the final 200;
 * - `/conn-close`: a 200 with `Connection: close`, and the connection left open;
 * - `/cl-te`: a 200 with both Content-Length and Transfer-Encoding: chunked;
 * - `/cl-cl`: a 200 with two different Content-Length fields;
 * - `/extra`: a 200 followed, in the same write, by a second (unsolicited) response;
 * - anything else: `200 ok`.
 * `oneShot`: every connection answers its first request only (keep-alive, as far as the proxy
 * can tell) and is closed, unanswered, when a second request arrives on it: the race of a server
 * closing an idle connection just as the client reuses it, made deterministic.
 */
async function startRawBackend(opts: { oneShot?: boolean } = {}): Promise<RawBackend> {
  const gates = new Gates();
  const sockets = new Set<Socket>();
  const targets: string[] = [];
  const dropped: string[] = [];
  const byConnection: string[][] = [];
  let connections = 0;
  const answer = (sock: Socket, target: string) => {
    const parts = target.split('/');
    switch (parts[1]) {
      case 'hop':
        sock.write(
          'HTTP/1.1 200 OK\r\nConnection: X-Resp-Secret, keep-alive\r\nKeep-Alive: timeout=5, max=100\r\nX-Resp-Secret: hidden\r\n' +
            'X-Resp-Keep: kept\r\nContent-Length: 2\r\n\r\nok',
        );
        return;
      case 'garbage':
        sock.write('THIS IS NOT HTTP AT ALL\r\n\r\n');
        return;
      case 'eof':
        sock.end('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-eof');
        return;
      case 'conn-close':
        sock.write('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok');
        return;
      case 'cl-te':
        sock.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n');
        return;
      case 'cl-cl':
        sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!');
        return;
      case 'extra':
        sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsmuggle');
        return;
      case 'early-hints':
        sock.write('HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n');
        sock.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal');
        return;
      case 'reset-early':
        sock.resetAndDestroy();
        return;
      case 'reset-mid':
        sock.write(`HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n${'x'.repeat(1000)}`);
        void gates.wait(parts[2] ?? '').then(() => sock.resetAndDestroy());
        return;
      case 'reset-mid-chunked':
        sock.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n${'x'.repeat(1000)}\r\n`);
        void gates.wait(parts[2] ?? '').then(() => sock.resetAndDestroy());
        return;
      default:
        sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    }
  };
  const srv = createNetServer((sock) => {
    sockets.add(sock);
    connections++;
    let buf = Buffer.alloc(0);
    let answered = 0;
    const mine: string[] = [];
    byConnection.push(mine);
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      let end: number;
      while ((end = buf.indexOf('\r\n\r\n')) >= 0) {
        const target = buf.subarray(0, end).toString('latin1').split(' ')[1] ?? '';
        buf = buf.subarray(end + 4);
        targets.push(target);
        mine.push(target);
        if (opts.oneShot === true && answered > 0) {
          dropped.push(target);
          sock.destroy();
          return;
        }
        answered++;
        answer(sock, target);
      }
    });
    sock.on('error', () => {});
    sock.on('close', () => sockets.delete(sock));
  });
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    port: (srv.address() as { port: number }).port,
    targets,
    get connections() {
      return connections;
    },
    dropped,
    byConnection,
    gates,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => srv.close(() => resolve()));
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The mesh: one control plane, the backends, the main proxy and a proxy with small limits
// ---------------------------------------------------------------------------------------------

const cleanups: Array<() => unknown> = [];
let control: string;
let proxy: ProxyProcess;
let limited: ProxyProcess;
let outPort: number; // the main proxy's outbound listener (workload "client")
let inPort: number; // the main proxy's inbound listener (workload "app1")
let limPort: number; // the limited proxy's outbound listener (workload "limited")
let web: HttpBackend; // service web: most subtests
let ka: HttpBackend; // service ka: connection counting
let shortKa: HttpBackend; // service shortka: closes idle keep-alive connections after 50 ms
let live: HttpBackend; // service halfdead, the instance that answers
let counted: HttpBackend; // service counted: only the metrics subtest uses it
let app: HttpBackend; // the app behind the inbound listener
let raw: RawBackend; // service raw
let oneShot: RawBackend; // service oneshot: closes a connection when a second request arrives on it
let deadPort: number; // service halfdead, the instance that refuses connections

before(async () => {
  const dir = await tempDir('skein-proxy-http-');
  cleanups.push(dir.remove);
  const cp = await startControl({ dataDir: dir.path });
  cleanups.push(() => cp.stop());
  control = cp.http;
  [web, ka, shortKa, live, counted, app] = await Promise.all([
    startHttpBackend('web'),
    startHttpBackend('ka'),
    startHttpBackend('shortka', { keepAliveTimeoutMs: 50 }),
    startHttpBackend('live'),
    startHttpBackend('counted'),
    startHttpBackend('app'),
  ]);
  for (const b of [web, ka, shortKa, live, counted, app]) cleanups.push(() => b.close());
  raw = await startRawBackend();
  cleanups.push(() => raw.close());
  oneShot = await startRawBackend({ oneShot: true });
  cleanups.push(() => oneShot.close());
  deadPort = await closedPort();
  const sickPort = await closedPort();

  const def = await api(control, 'PUT', '/v1/services/halfdead', { balancer: { kind: 'round-robin' } });
  assert.ok(def.status === 200 || def.status === 201, `defining halfdead: ${def.status} ${JSON.stringify(def.body)}`);
  await registerInstance(control, 'web', 'web-1', web.port);
  await registerInstance(control, 'ka', 'ka-1', ka.port);
  await registerInstance(control, 'shortka', 'shortka-1', shortKa.port);
  await registerInstance(control, 'halfdead', 'hd-dead', deadPort);
  await registerInstance(control, 'halfdead', 'hd-live', live.port);
  await registerInstance(control, 'counted', 'counted-1', counted.port);
  await registerInstance(control, 'raw', 'raw-1', raw.port);
  await registerInstance(control, 'oneshot', 'oneshot-1', oneShot.port);
  // An HTTP check starts unhealthy, and nothing listens on its port: never healthy.
  const sick = await registerInstance(control, 'sick', 'sick-1', sickPort, { check: { type: 'http', path: '/health', interval: '1s' } });
  assert.equal(sick.instance.status, 'unhealthy');

  [proxy, limited] = await Promise.all([
    startProxy({ control, workloads: ['name=client,outbound=127.0.0.1:0', `name=app1,inbound=127.0.0.1:0,app=127.0.0.1:${app.port}`] }),
    startProxy({
      control,
      workloads: ['name=limited,outbound=127.0.0.1:0'],
      args: ['--header-timeout', '300ms', '--idle-timeout', '500ms', '--max-connections', '3', '--max-head', '4096'],
    }),
  ]);
  cleanups.push(() => proxy.stop(), () => limited.stop());
  outPort = (proxy.workload('client').outbound ?? assert.fail('no outbound address for client')).port;
  inPort = (proxy.workload('app1').inbound ?? assert.fail('no inbound address for app1')).port;
  limPort = (limited.workload('limited').outbound ?? assert.fail('no outbound address for limited')).port;
  await Promise.all([waitForProxyReady(proxy), waitForProxyReady(limited)]);
});

after(async () => {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
});

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const show = (b: Buffer | string) => JSON.stringify((typeof b === 'string' ? b : b.toString('latin1')).slice(0, 300));

/** For failure messages: the proxy's last log lines if it exited. */
function proxyState(p: ProxyProcess = proxy): string {
  const c = p.child;
  if (c.exitCode === null && c.signalCode === null) return '';
  return ` (the proxy exited: code ${c.exitCode}, signal ${c.signalCode}; last logs:\n${p.logs.slice(-20).join('\n')})`;
}

/** One request on a new connection; resolves with the first complete response (or what came before a close). */
async function exchangeOnce(port: number, bytes: string, timeoutMs = 5_000): Promise<{ res: ParsedResponse; closed: boolean; raw: Buffer }> {
  const r = await rawExchange(port, bytes, { timeoutMs, until: isCompleteResponse });
  const res = parseResponse(r.response);
  assert.ok(res, `no response head (closed=${r.closed}, error=${r.error}): ${show(r.response)}${proxyState()}`);
  return { res, closed: r.closed, raw: r.response };
}

/** The proxy answered with its own error: status, x-skein-error, x-request-id and a JSON body naming the code. */
function assertProxyError(res: ParsedResponse, status: number, code: string): void {
  assert.equal(res.status, status, `status line ${res.statusLine}`);
  assert.equal(res.headers['x-skein-error'], code);
  assert.match(res.headers['content-type'] ?? '', /application\/json/);
  assert.ok(res.complete, 'the error response is incomplete');
  assertErrorBody(res.body, code);
}

/** Values of the header lines called `name` (any case) as the backend received them. */
function headerLines(seen: Seen, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < seen.rawHeaders.length; i += 2) if (seen.rawHeaders[i]?.toLowerCase() === name) out.push(seen.rawHeaders[i + 1] ?? '');
  return out;
}

function seenAt(b: HttpBackend, url: string): Seen {
  const s = b.find(url);
  assert.ok(s, `backend ${b.name} did not receive ${url}; it got: ${b.requests.slice(-5).map((r) => r.url).join(', ')}`);
  return s;
}

/** A GET on `c` for `host`; asserts the backend's plain answer. */
async function getOk(c: RawConnection, host: string, path: string): Promise<ParsedResponse> {
  c.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
  const res = await c.readResponse();
  assert.equal(res.status, 200, `GET ${path} (Host: ${host}): ${res.statusLine} ${show(res.body)}`);
  assert.equal(res.body.toString('latin1'), `ok GET ${path}`);
  return res;
}

/** The index of the raw backend's connection that received `target` (the last one that did). */
function rawConnectionOf(b: RawBackend, target: string): number {
  for (let i = b.byConnection.length - 1; i >= 0; i--) if (b.byConnection[i]?.includes(target)) return i;
  assert.fail(`the raw backend did not receive ${target}`);
}

/** A GET to service oneshot on `c`, answered `ok` by the raw backend. */
async function getOneShot(c: RawConnection, path: string): Promise<void> {
  c.write(`GET ${path} HTTP/1.1\r\nHost: oneshot\r\n\r\n`);
  const res = await c.readResponse();
  assert.equal(res.status, 200, `GET ${path}: ${res.statusLine} ${show(res.body)}`);
  assert.equal(res.body.toString(), 'ok');
}

/** A request with node:http (agent: false) to the main outbound listener; the body is hashed as it arrives. */
function httpCall(opts: {
  method?: string;
  path: string;
  headers?: Record<string, string | number>;
  send?: (req: Writable) => Promise<void>;
  port?: number;
  onData?: (chunk: Buffer) => void;
}): Promise<{ status: number; headers: IncomingHttpHeaders; bytes: number; sha256: string; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: opts.port ?? outPort, method: opts.method ?? 'GET', path: opts.path, headers: { host: 'web', ...opts.headers }, agent: false }, (res) => {
      const hash = createHash('sha256');
      let bytes = 0;
      let text = '';
      res.on('data', (d: Buffer) => {
        hash.update(d);
        bytes += d.length;
        if (text.length < 4096) text += d.toString('latin1');
        opts.onData?.(d);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, bytes, sha256: hash.digest('hex'), text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (opts.send === undefined) req.end();
    else opts.send(req).then(() => req.end(), reject);
  });
}

// ---------------------------------------------------------------------------------------------
// 1. Routing
// ---------------------------------------------------------------------------------------------

describe('routing', () => {
  test('Host: svc, svc:80, svc.service.skein (any case, trailing dot) route to the service', async () => {
    const c = await openRaw(outPort);
    try {
      const hosts = ['web', 'web:80', 'web.service.skein', 'WEB.Service.Skein', 'web.service.skein.'];
      for (const [i, host] of hosts.entries()) {
        await getOk(c, host, `/route/${i}`);
        assert.deepEqual(headerLines(seenAt(web, `/route/${i}`), 'host'), [host], 'the backend gets the Host as the client sent it');
      }
      assert.ok(!c.closed, 'the proxy closed a keep-alive connection');
    } finally {
      c.destroy();
    }
  });

  test('absolute-form target (curl -x): the backend gets origin form and the authority as Host', async () => {
    const c = await openRaw(outPort);
    try {
      c.write('GET http://web/p?q=1 HTTP/1.1\r\nHost: web\r\nProxy-Connection: Keep-Alive\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n');
      const res = await c.readResponse();
      assert.equal(res.status, 200, res.statusLine);
      assert.equal(res.body.toString(), 'ok GET /p?q=1');
      const seen = seenAt(web, '/p?q=1');
      assert.deepEqual(headerLines(seen, 'host'), ['web']);
      assert.deepEqual(headerLines(seen, 'proxy-connection'), []);
      assert.equal(seen.headers['user-agent'], 'curl/8.5.0');

      // RFC 9112 §3.2.2: the authority of an absolute-form target replaces the Host header.
      c.write('GET http://web.service.skein:80/abs/2 HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n');
      const res2 = await c.readResponse();
      assert.equal(res2.status, 200, `${res2.statusLine} ${show(res2.body)}`);
      assert.deepEqual(headerLines(seenAt(web, '/abs/2'), 'host'), ['web.service.skein:80']);

      // No path at all: "/" is the path.
      c.write('GET http://web HTTP/1.1\r\nHost: web\r\n\r\n');
      const res3 = await c.readResponse();
      assert.equal(res3.status, 200, res3.statusLine);
      assert.equal(res3.body.toString(), 'ok GET /');

      // The scheme is case-insensitive (RFC 3986 §3.1).
      c.write('GET HTTP://web/abs/4 HTTP/1.1\r\nHost: web\r\n\r\n');
      const res4 = await c.readResponse();
      assert.equal(res4.status, 200, `${res4.statusLine} ${show(res4.body)}`);
      assert.equal(res4.body.toString(), 'ok GET /abs/4');

      // The asterisk form goes by Host.
      c.write('OPTIONS * HTTP/1.1\r\nHost: web\r\n\r\n');
      const res5 = await c.readResponse();
      assert.equal(res5.status, 200, res5.statusLine);
      assert.equal(res5.body.toString(), 'ok OPTIONS *');
    } finally {
      c.destroy();
    }
  });

  test('unknown service: 503 SKEIN_E_UNKNOWN_SERVICE, and the connection stays usable', async () => {
    const c = await openRaw(outPort);
    try {
      c.write('GET /x HTTP/1.1\r\nHost: no-such-service\r\n\r\n');
      const res = await c.readResponse();
      assertProxyError(res, 503, 'SKEIN_E_UNKNOWN_SERVICE');
      assert.match(res.headers['x-request-id'] ?? '', UUID, 'a proxy error carries the request id');
      assert.doesNotMatch(res.headers.connection ?? '', /close/i, 'a bodyless GET keeps its connection after a local error');
      await getOk(c, 'web', '/after-unknown');
      assert.ok(!c.closed);
    } finally {
      c.destroy();
    }
  });

  test('a request with a body to an unknown service gets its 503 without the body being taken for a request', async () => {
    const c = await openRaw(outPort);
    try {
      // The body looks like a request: a proxy that skipped it wrongly would answer it.
      const body = 'GET /smuggled HTTP/1.1\r\nHost: web\r\n\r\n';
      c.write(`POST /x HTTP/1.1\r\nHost: no-such-service\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      const res = await c.readResponse();
      assertProxyError(res, 503, 'SKEIN_E_UNKNOWN_SERVICE');
      if (/close/i.test(res.headers.connection ?? '')) await c.waitClosed(5_000);
      else await getOk(c, 'web', '/after-unknown-post');
      assert.equal(c.buffer.length, 0, `more than one response: ${show(c.buffer)}`);
      assert.equal(web.find('/smuggled'), undefined, 'the body was forwarded as a request');
    } finally {
      c.destroy();
    }
  });

  test('a service with no healthy instance: 503 SKEIN_E_NO_HEALTHY_ENDPOINT, and the connection stays usable', async () => {
    const c = await openRaw(outPort);
    try {
      c.write('GET /x HTTP/1.1\r\nHost: sick\r\nX-Request-Id: sick-req-1\r\n\r\n');
      const res = await c.readResponse();
      assertProxyError(res, 503, 'SKEIN_E_NO_HEALTHY_ENDPOINT');
      assert.equal(res.headers['x-request-id'], 'sick-req-1', 'the error carries the client request id');
      assert.equal((JSON.parse(res.body.toString()) as { requestId?: string }).requestId, 'sick-req-1');
      await getOk(c, 'web', '/after-sick');
      // HEAD gets the error head without its body.
      c.write('HEAD /x HTTP/1.1\r\nHost: sick\r\n\r\n');
      const head = await c.readResponse({ head: true });
      assert.equal(head.status, 503);
      assert.equal(head.headers['x-skein-error'], 'SKEIN_E_NO_HEALTHY_ENDPOINT');
      await getOk(c, 'web', '/after-sick-head');
    } finally {
      c.destroy();
    }
  });

  test('a host that is not a service name: 400 SKEIN_E_NO_ROUTE', async () => {
    for (const host of ['foo.example.com', '127.0.0.1:8080', 'web.service.other']) {
      const { res } = await exchangeOnce(outPort, `GET /x HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
      assertProxyError(res, 400, 'SKEIN_E_NO_ROUTE');
    }
    // HTTP/1.0 allows no Host: then there is no service named at all.
    const { res } = await exchangeOnce(outPort, 'GET /x HTTP/1.0\r\n\r\n');
    assertProxyError(res, 400, 'SKEIN_E_NO_ROUTE');
  });
});

// ---------------------------------------------------------------------------------------------
// 2. Headers
// ---------------------------------------------------------------------------------------------

describe('headers', () => {
  test('hop-by-hop request headers are removed; x-forwarded-for is appended; proto and request id added', async () => {
    const c = await openRaw(outPort);
    try {
      c.write(
        'GET /hdr/1 HTTP/1.1\r\nHost: web\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n' +
          'TE: trailers\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\nX-Secret: s3cret\r\nX-Forwarded-For: 1.2.3.4\r\nX-Keep: yes\r\n\r\n',
      );
      const res = await c.readResponse();
      assert.equal(res.status, 200, res.statusLine);
      const seen = seenAt(web, '/hdr/1');
      for (const h of ['connection', 'keep-alive', 'proxy-connection', 'te', 'proxy-authorization', 'x-secret']) {
        assert.deepEqual(headerLines(seen, h), [], `${h} reached the backend: ${JSON.stringify(seen.rawHeaders)}`);
      }
      assert.deepEqual(headerLines(seen, 'x-keep'), ['yes']);
      assert.deepEqual(headerLines(seen, 'x-forwarded-for'), ['1.2.3.4, 127.0.0.1']);
      assert.deepEqual(headerLines(seen, 'x-forwarded-proto'), ['http']);
      const rid = headerLines(seen, 'x-request-id');
      assert.equal(rid.length, 1);
      assert.match(rid[0] ?? '', UUID);

      // Connection tokens in any case and spacing, over two Connection lines.
      c.write('GET /hdr/2 HTTP/1.1\r\nHost: web\r\nConnection: X-A , x-b\r\nConnection: X-C\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\nX-Latin: caf\xe9\r\n\r\n');
      assert.equal((await c.readResponse()).status, 200);
      const seen2 = seenAt(web, '/hdr/2');
      for (const h of ['connection', 'x-a', 'x-b', 'x-c']) assert.deepEqual(headerLines(seen2, h), [], `${h} reached the backend`);
      assert.deepEqual(headerLines(seen2, 'x-d'), ['4']);
      assert.deepEqual(headerLines(seen2, 'x-latin'), ['caf\xe9'], 'an obs-text byte in a value is passed as it is');
      assert.notEqual(headerLines(seen2, 'x-request-id')[0], rid[0], 'each request gets its own id');
    } finally {
      c.destroy();
    }
  });

  test('headers the proxy manages are still removed when named in Connection, and the proxy adds its own', async () => {
    // RFC 9110 §7.6.1: fields named in Connection are hop-by-hop and MUST be removed. The proxy then
    // adds x-forwarded-for, x-forwarded-proto and x-request-id as for any request without them.
    const c = await openRaw(outPort);
    try {
      c.write(
        'GET /hdr/5 HTTP/1.1\r\nHost: web\r\nConnection: X-Forwarded-For, X-Forwarded-Proto, X-Request-Id\r\n' +
          'X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Request-Id: hop-by-hop-id\r\n\r\n',
      );
      assert.equal((await c.readResponse()).status, 200);
      const seen = seenAt(web, '/hdr/5');
      // All three checked before failing, so that a failure names every field that is wrong.
      const got = {
        'x-forwarded-for': headerLines(seen, 'x-forwarded-for'),
        'x-forwarded-proto': headerLines(seen, 'x-forwarded-proto'),
        'x-request-id is one fresh UUID': headerLines(seen, 'x-request-id').map((v) => UUID.test(v)),
      };
      assert.deepEqual(got, { 'x-forwarded-for': ['127.0.0.1'], 'x-forwarded-proto': ['http'], 'x-request-id is one fresh UUID': [true] }, `the backend got ${JSON.stringify(seen.rawHeaders)}`);
    } finally {
      c.destroy();
    }
  });

  test('x-forwarded-for is created; x-forwarded-proto and x-request-id are kept when present', async () => {
    const c = await openRaw(outPort);
    try {
      c.write('GET /hdr/3 HTTP/1.1\r\nHost: web\r\nX-Forwarded-Proto: https\r\nX-Request-Id: req-abc-123\r\n\r\n');
      assert.equal((await c.readResponse()).status, 200);
      const seen = seenAt(web, '/hdr/3');
      assert.deepEqual(headerLines(seen, 'x-forwarded-for'), ['127.0.0.1']);
      assert.deepEqual(headerLines(seen, 'x-forwarded-proto'), ['https']);
      assert.deepEqual(headerLines(seen, 'x-request-id'), ['req-abc-123']);

      // Two X-Forwarded-For lines are one list (RFC 9110 §5.3): one line with the peer appended.
      c.write('GET /hdr/4 HTTP/1.1\r\nHost: web\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\n\r\n');
      assert.equal((await c.readResponse()).status, 200);
      assert.deepEqual(headerLines(seenAt(web, '/hdr/4'), 'x-forwarded-for'), ['1.2.3.4, 5.6.7.8, 127.0.0.1']);
    } finally {
      c.destroy();
    }
  });

  test('hop-by-hop response headers are removed before the client', async () => {
    const c = await openRaw(outPort);
    try {
      c.write('GET /hop HTTP/1.1\r\nHost: raw\r\n\r\n');
      const res = await c.readResponse();
      assert.equal(res.status, 200, res.statusLine);
      assert.equal(res.body.toString(), 'ok');
      assert.equal(res.headers['x-resp-keep'], 'kept');
      assert.equal(res.headers['x-resp-secret'], undefined, 'a header named in Connection reached the client');
      assert.equal(res.headers['keep-alive'], undefined, 'Keep-Alive reached the client');
      assert.doesNotMatch(res.headers.connection ?? '', /x-resp-secret/i, 'the backend Connection header reached the client');
      // The connection goes on.
      await getOk(c, 'web', '/after-hop');
    } finally {
      c.destroy();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 3. Keep-alive and pipelining
// ---------------------------------------------------------------------------------------------

describe('keep-alive and pipelining', () => {
  test('50 sequential requests on one client connection use one upstream connection', async () => {
    assert.equal(ka.connections, 0, 'service ka is not used before this test');
    const c = await openRaw(outPort);
    try {
      for (let i = 0; i < 50; i++) await getOk(c, 'ka', `/ka/${i}`);
      assert.ok(!c.closed, 'the client connection was closed');
    } finally {
      c.destroy();
    }
    assert.equal(ka.requests.length, 50);
    assert.equal(ka.connections, 1, `the backend saw ${ka.connections} connections for 50 sequential requests`);
  });

  test('sequential client connections share the pooled upstream connection', async () => {
    const before = ka.connections;
    for (let i = 0; i < 10; i++) {
      const c = await openRaw(outPort);
      try {
        await getOk(c, 'ka', `/ka-conn/${i}`);
      } finally {
        c.destroy();
      }
    }
    assert.ok(ka.connections - before <= 1, `10 sequential client connections opened ${ka.connections - before} upstream connections`);
  });

  test('Connection: close from the client: the proxy closes after the response', async () => {
    const c = await openRaw(outPort);
    try {
      c.write('GET /ka-close HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n');
      const res = await c.readResponse();
      assert.equal(res.status, 200);
      assert.equal(res.body.toString(), 'ok GET /ka-close');
      await c.waitClosed(5_000);
      assert.deepEqual(headerLines(seenAt(web, '/ka-close'), 'connection'), []);
    } finally {
      c.destroy();
    }
  });

  test('a client that half-closes after its request still gets the response, then the close', async () => {
    const c = await openRaw(outPort);
    try {
      c.write('GET /half-close HTTP/1.1\r\nHost: web\r\n\r\n');
      c.end();
      const res = await c.readResponse();
      assert.equal(res.status, 200, res.statusLine);
      assert.equal(res.body.toString(), 'ok GET /half-close');
      await c.waitClosed(5_000);
    } finally {
      c.destroy();
    }
  });

  test('responses without a body (204, 304) keep the connection in step', async () => {
    const c = await openRaw(outPort);
    try {
      for (const code of [204, 304]) {
        c.write(`GET /status/${code} HTTP/1.1\r\nHost: web\r\n\r\n`);
        const res = await c.readResponse();
        assert.equal(res.status, code);
        await getOk(c, 'web', `/after-${code}`);
      }
      assert.equal(c.buffer.length, 0, `stray bytes: ${show(c.buffer)}`);
    } finally {
      c.destroy();
    }
  });

  test('a response delimited by the end of the upstream connection: body forwarded, client connection closed', async () => {
    const c = await openRaw(outPort);
    try {
      c.write('GET /eof HTTP/1.1\r\nHost: raw\r\n\r\n');
      // No length and no chunking: only the close can tell the client that the body ended.
      const res = await c.readResponse();
      assert.equal(res.status, 200);
      assert.equal(res.body.toString(), 'until-eof');
      assert.ok(c.closed);
    } finally {
      c.destroy();
    }
  });

  test('an interim 103 Early Hints is relayed before the final response', async () => {
    const c = await openRaw(outPort);
    try {
      c.write('GET /early-hints HTTP/1.1\r\nHost: raw\r\n\r\n');
      const hints = await c.readResponse();
      assert.equal(hints.status, 103, hints.statusLine);
      assert.equal(hints.headers.link, '</style.css>; rel=preload');
      const res = await c.readResponse();
      assert.equal(res.status, 200, res.statusLine);
      assert.equal(res.body.toString(), 'final');
      await getOk(c, 'web', '/after-hints');
    } finally {
      c.destroy();
    }
  });

  test('pipelined requests (one packet) get their responses in order', async () => {
    const c = await openRaw(outPort);
    try {
      c.write(['a', 'b', 'c'].map((x) => `GET /pipe/${x} HTTP/1.1\r\nHost: web\r\n\r\n`).join(''));
      for (const x of ['a', 'b', 'c']) {
        const res = await c.readResponse();
        assert.equal(res.status, 200, res.statusLine);
        assert.equal(res.body.toString(), `ok GET /pipe/${x}`);
      }
      // A HEAD between GETs: its response has no body, and the next one is framed right.
      c.write('GET /pipe/d HTTP/1.1\r\nHost: web\r\n\r\nHEAD /sized HTTP/1.1\r\nHost: web\r\n\r\nGET /pipe/e HTTP/1.1\r\nHost: web\r\n\r\n');
      assert.equal((await c.readResponse()).body.toString(), 'ok GET /pipe/d');
      const head = await c.readResponse({ head: true });
      assert.equal(head.headers['content-length'], String(SIZED.length));
      const e = await c.readResponse();
      assert.equal(e.statusLine.slice(0, 12), 'HTTP/1.1 200');
      assert.equal(e.body.toString(), 'ok GET /pipe/e');

      // Requests with bodies (Content-Length, chunked) and a GET after them, in one packet.
      c.write(
        'POST /echo-body?p1 HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n\r\nhello' +
          'POST /echo-body?p2 HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n' +
          'GET /pipe/f HTTP/1.1\r\nHost: web\r\n\r\n',
      );
      assert.equal((await c.readResponse()).body.toString(), 'hello');
      assert.equal((await c.readResponse()).body.toString(), 'abcdef');
      assert.equal((await c.readResponse()).body.toString(), 'ok GET /pipe/f');
      assert.equal(c.buffer.length, 0, `stray bytes: ${show(c.buffer)}`);
    } finally {
      c.destroy();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 4. Streaming
// ---------------------------------------------------------------------------------------------

describe('streaming', () => {
  test('a 20 MiB request body with Content-Length arrives intact', async () => {
    const r = await httpCall({ method: 'POST', path: '/upload?cl', headers: { 'content-length': BIG.length }, send: (req) => writeAll(req, BIG) });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(JSON.parse(r.text), { bytes: BIG.length, sha256: BIG_SHA });
    assert.equal(seenAt(web, '/upload?cl').headers['content-length'], String(BIG.length));
  });

  test('a 20 MiB chunked request body arrives intact', async () => {
    const r = await httpCall({ method: 'POST', path: '/upload?chunked', send: (req) => writeAll(req, BIG) });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(JSON.parse(r.text), { bytes: BIG.length, sha256: BIG_SHA });
    assert.equal(seenAt(web, '/upload?chunked').headers['transfer-encoding'], 'chunked');
  });

  test('a 20 MiB response with Content-Length arrives intact', async () => {
    const r = await httpCall({ path: '/big' });
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-length'], String(BIG.length));
    assert.equal(r.bytes, BIG.length);
    assert.equal(r.sha256, BIG_SHA);
  });

  test('a 20 MiB chunked response arrives intact', async () => {
    const r = await httpCall({ path: '/big-chunked' });
    assert.equal(r.status, 200);
    assert.equal(r.headers['transfer-encoding'], 'chunked');
    assert.equal(r.bytes, BIG.length);
    assert.equal(r.sha256, BIG_SHA);
  });

  test('a slow response is delivered as it is produced', async () => {
    let got = '';
    const done = httpCall({ path: '/slow/s1', onData: (d) => (got += d.toString('latin1')) });
    // The backend writes part 2 only once the client has part 1: a proxy that buffers whole
    // bodies would never deliver part 1.
    await waitFor(() => got === 'part-1;', { timeoutMs: 5_000, what: `part 1 at the client (got ${JSON.stringify(got)})` });
    web.gates.open('s1:2');
    await waitFor(() => got === 'part-1;part-2;', { timeoutMs: 5_000, what: `part 2 at the client (got ${JSON.stringify(got)})` });
    web.gates.open('s1:3');
    const r = await done;
    assert.equal(r.status, 200);
    assert.equal(r.text, 'part-1;part-2;part-3;');
  });

  test('a slow request body is forwarded as it is sent', async () => {
    const r = await httpCall({
      method: 'POST',
      path: '/echo-body?slow',
      send: async (req) => {
        req.write('part-1;');
        // The backend has part 1 while the client still holds the rest of the body.
        await waitFor(() => web.find('/echo-body?slow')?.text === 'part-1;', { timeoutMs: 5_000, what: 'part 1 of the request body at the backend' });
        req.write('part-2;');
        await waitFor(() => web.find('/echo-body?slow')?.text === 'part-1;part-2;', { timeoutMs: 5_000, what: 'part 2 of the request body at the backend' });
        assert.equal(web.find('/echo-body?slow')?.done, false);
        req.write('part-3;');
      },
    });
    assert.equal(r.status, 200);
    assert.equal(r.text, 'part-1;part-2;part-3;');
  });

  test('HEAD gets the headers of GET and no body; the connection stays usable', async () => {
    const c = await openRaw(outPort);
    try {
      c.write('HEAD /sized HTTP/1.1\r\nHost: web\r\n\r\n');
      const head = await c.readResponse({ head: true });
      assert.equal(head.status, 200);
      assert.equal(head.headers['content-length'], String(SIZED.length));
      assert.equal(head.headers['content-type'], 'text/plain');
      c.write('GET /sized HTTP/1.1\r\nHost: web\r\n\r\n');
      // Had the proxy sent a body after the HEAD response, it would be parsed here as a head.
      const get = await c.readResponse();
      assert.equal(get.statusLine.slice(0, 12), 'HTTP/1.1 200', `after HEAD: ${show(get.statusLine)}`);
      assert.equal(get.headers['content-length'], String(SIZED.length));
      assert.ok(get.body.equals(SIZED));
      assert.equal(c.buffer.length, 0, `stray bytes: ${show(c.buffer)}`);
      assert.equal(seenAt(web, '/sized').method, 'GET');
      assert.ok(web.requests.some((r) => r.url === '/sized' && r.method === 'HEAD'), 'the backend got the HEAD');
    } finally {
      c.destroy();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 5. Expect: 100-continue
// ---------------------------------------------------------------------------------------------

describe('Expect: 100-continue', () => {
  test('the 100 Continue of the backend reaches the client before it sends the body', async () => {
    const c = await openRaw(outPort);
    try {
      c.write('POST /upload?continue HTTP/1.1\r\nHost: web\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n');
      const interim = await c.readResponse();
      assert.equal(interim.status, 100, `expected 100 Continue first: ${interim.statusLine}`);
      assert.equal(c.buffer.length, 0, `more than the interim response before the body was sent: ${show(c.buffer)}`);
      assert.equal(seenAt(web, '/upload?continue').headers.expect, '100-continue');
      c.write('hello world');
      const res = await c.readResponse();
      assert.equal(res.status, 200, res.statusLine);
      assert.deepEqual(JSON.parse(res.body.toString()), { bytes: 11, sha256: sha256('hello world') });
      await getOk(c, 'web', '/after-continue');
    } finally {
      c.destroy();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 6. Upgrade
// ---------------------------------------------------------------------------------------------

describe('upgrade', () => {
  test('a WebSocket-style upgrade: 101, then bytes flow both ways through the proxy', async () => {
    const c = await openRaw(outPort);
    try {
      c.write(
        'GET /ws HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n' +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      );
      const res = await c.readResponse();
      assert.equal(res.status, 101, `${res.statusLine} ${show(res.body)}`);
      assert.equal(res.headers.upgrade, 'websocket');
      assert.match(res.headers.connection ?? '', /upgrade/i);
      const seen = seenAt(web, '/ws');
      assert.ok(seen.upgrade, 'the backend did not see an upgrade request');
      assert.equal(seen.headers.upgrade, 'websocket');
      assert.match(String(seen.headers.connection), /upgrade/i);
      assert.equal(seen.headers['sec-websocket-key'], 'dGhlIHNhbXBsZSBub25jZQ==');

      for (const msg of [Buffer.from('ping-1'), Buffer.from([0, 1, 2, 0x0d, 0x0a, 0x0d, 0x0a, 255]), randomBytes(256 * 1024)]) {
        c.write(msg);
        await c.waitUntil((b) => b.length >= msg.length, { what: `the echo of ${msg.length} bytes` });
        assert.ok(c.take().equals(msg), 'the echo differs from what was sent');
      }
      // The client ends its side: the backend ends its side, and the proxy closes.
      c.end();
      await c.waitClosed(5_000);
    } finally {
      c.destroy();
    }
  });

  test('an upgrade the backend declines: its ordinary response reaches the client', async () => {
    const c = await openRaw(outPort);
    try {
      c.write('GET /ws-declined HTTP/1.1\r\nHost: raw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
      const res = await c.readResponse();
      assert.equal(res.status, 200, res.statusLine);
      assert.equal(res.body.toString(), 'ok');
      // The server may ignore Upgrade (RFC 9110 §7.8): the connection then goes on as HTTP, or closes.
      if (/close/i.test(res.headers.connection ?? '')) await c.waitClosed(5_000);
      else await getOk(c, 'web', '/after-declined-upgrade');
    } finally {
      c.destroy();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 7. HTTP/1.0 clients
// ---------------------------------------------------------------------------------------------

describe('HTTP/1.0 client', () => {
  test('a chunked response is de-chunked and the connection closed at its end', async () => {
    const r = await rawExchange(outPort, 'GET /chunked HTTP/1.0\r\nHost: web\r\n\r\n', { timeoutMs: 5_000 });
    assert.ok(r.closed, `the proxy did not close the HTTP/1.0 connection; got ${show(r.response)}`);
    const res = parseResponse(r.response);
    assert.ok(res, `no response: ${show(r.response)}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers['transfer-encoding'], undefined, 'an HTTP/1.0 client got Transfer-Encoding');
    assert.equal(res.body.toString(), 'hello world', 'the body is not the de-chunked one');
    assert.equal(seenAt(web, '/chunked').httpVersion, '1.1', 'the proxy speaks HTTP/1.1 upstream');
  });

  test('a Content-Length response: body intact, connection closed', async () => {
    const r = await rawExchange(outPort, 'GET /sized HTTP/1.0\r\nHost: web\r\n\r\n', { timeoutMs: 5_000 });
    assert.ok(r.closed, 'the proxy did not close the HTTP/1.0 connection');
    const res = parseResponse(r.response);
    assert.equal(res?.status, 200);
    assert.ok(res.complete && res.body.equals(SIZED));
    assert.equal(r.response.length, r.response.indexOf('\r\n\r\n') + 4 + SIZED.length, 'bytes after the body');
  });

  test('an HTTP/1.0 client gets no interim 1xx response, only the final one', async () => {
    const r = await rawExchange(outPort, 'GET /early-hints HTTP/1.0\r\nHost: raw\r\n\r\n', { timeoutMs: 5_000 });
    assert.ok(r.closed, `the proxy did not close the HTTP/1.0 connection; got ${show(r.response)}`);
    const res = parseResponse(r.response);
    assert.equal(res?.status, 200, `first response: ${show(r.response)}`);
    assert.equal(res.body.toString(), 'final');
  });

  test('Connection: keep-alive from an HTTP/1.0 client keeps the connection for a Content-Length response', async () => {
    const c = await openRaw(outPort);
    try {
      c.write('GET /sized HTTP/1.0\r\nHost: web\r\nConnection: keep-alive\r\n\r\n');
      const res = await c.readResponse();
      assert.equal(res.status, 200);
      assert.ok(res.body.equals(SIZED));
      assert.match(res.headers.connection ?? '', /keep-alive/i, 'an HTTP/1.0 client needs Connection: keep-alive to keep the connection');
      c.write('GET /http10-again HTTP/1.0\r\nHost: web\r\nConnection: keep-alive\r\n\r\n');
      const again = await c.readResponse();
      assert.equal(again.body.toString(), 'ok GET /http10-again');
    } finally {
      c.destroy();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 8. Limits (the second proxy: --header-timeout 300ms --idle-timeout 500ms --max-connections 3 --max-head 4096)
// ---------------------------------------------------------------------------------------------

describe('limits', () => {
  test('header timeout: half a head gets 408 SKEIN_E_REQUEST_TIMEOUT and the connection is closed', async () => {
    const t0 = Date.now();
    const r = await rawExchange(limPort, 'GET /limits/slowloris HTTP/1.1\r\nHost: web\r\n', { timeoutMs: 5_000 });
    const elapsed = Date.now() - t0;
    assert.ok(r.closed, `the connection was not closed within 5 s; got ${show(r.response)}${proxyState(limited)}`);
    const res = parseResponse(r.response);
    assert.ok(res, `no 408 before the close: ${show(r.response)}`);
    assertProxyError(res, 408, 'SKEIN_E_REQUEST_TIMEOUT');
    assert.match(res.headers.connection ?? '', /close/i);
    assert.ok(elapsed >= 250, `closed after ${elapsed} ms, before the 300 ms header timeout`);
    assert.equal(web.find('/limits/slowloris'), undefined);
  });

  test('an idle keep-alive connection is closed after the idle timeout', async () => {
    const c = await openRaw(limPort);
    try {
      await getOk(c, 'web', '/limits/idle');
      const t0 = Date.now();
      await c.waitClosed(5_000);
      const elapsed = Date.now() - t0;
      assert.ok(elapsed >= 400, `closed ${elapsed} ms after the response, before the 500 ms idle timeout`);
      assert.equal(c.buffer.length, 0, `bytes before the close: ${show(c.buffer)}`);
    } finally {
      c.destroy();
    }
  });

  test('a head larger than --max-head gets 431; a smaller one passes', async () => {
    const big = await exchangeOnce(limPort, `GET /limits/big-head HTTP/1.1\r\nHost: web\r\nX-Big: ${'a'.repeat(5000)}\r\n\r\n`);
    assertProxyError(big.res, 431, 'SKEIN_E_HEADERS_TOO_LARGE');
    assert.equal(web.find('/limits/big-head'), undefined);
    const small = await exchangeOnce(limPort, `GET /limits/small-head HTTP/1.1\r\nHost: web\r\nX-Big: ${'a'.repeat(3000)}\r\n\r\n`);
    assert.equal(small.res.status, 200, small.res.statusLine);
    assert.equal(seenAt(web, '/limits/small-head').headers['x-big'], 'a'.repeat(3000));
  });

  test('neither timeout cuts a request in flight: a held response and a slow request body', async () => {
    await waitFor(async () => metricValue(await scrapeMetrics(limited), 'skein_proxy_connections_open', { workload: 'limited', direction: 'outbound' }) === 0, {
      timeoutMs: 5_000,
      what: 'no client connection open at the limited proxy',
    });
    const idle = await openRaw(limPort);
    const held = await openRaw(limPort);
    const upload = await openRaw(limPort);
    try {
      held.write('GET /hold/inflight HTTP/1.1\r\nHost: web\r\n\r\n');
      upload.write('POST /echo-body?trickle HTTP/1.1\r\nHost: web\r\nContent-Length: 10\r\n\r\nhello');
      await waitFor(() => web.find('/hold/inflight') !== undefined && web.find('/echo-body?trickle')?.text === 'hello', { timeoutMs: 5_000, what: 'both requests at the backend' });
      // The sweep that closes the idle connection (500 ms) has also looked at the other two, whose
      // requests started with it: past both the idle and the header timeout.
      await idle.waitClosed(5_000);
      assert.ok(!held.closed && !upload.closed, 'a connection with a request in flight was closed');
      upload.write('world');
      const up = await upload.readResponse();
      assert.equal(up.status, 200, up.statusLine);
      assert.equal(up.body.toString(), 'helloworld');
      web.gates.open('hold:inflight');
      const h = await held.readResponse();
      assert.equal(h.body.toString(), 'held');
    } finally {
      web.gates.open('hold:inflight');
      for (const c of [idle, held, upload]) c.destroy();
    }
  });

  test('with --max-connections 3, a 4th connection is refused with 503 while 3 are busy, and accepted once one closes', async () => {
    const open = { workload: 'limited', direction: 'outbound' };
    await waitFor(async () => metricValue(await scrapeMetrics(limited), 'skein_proxy_connections_open', open) === 0, {
      timeoutMs: 5_000,
      what: 'no client connection open at the limited proxy',
    });
    const holds: RawConnection[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const c = await openRaw(limPort);
        holds.push(c);
        // A request in flight: neither idle nor in its head, so no timeout closes the connection.
        c.write(`GET /hold/lim-${i} HTTP/1.1\r\nHost: web\r\n\r\n`);
      }
      await waitFor(() => [0, 1, 2].every((i) => web.find(`/hold/lim-${i}`) !== undefined), { timeoutMs: 5_000, what: 'the 3 held requests at the backend' });

      // All 3 have a request in flight, so none makes room (an idle one would: test/connection-cap.test.ts).
      const fourth = await rawExchange(limPort, 'GET /limits/fourth HTTP/1.1\r\nHost: web\r\n\r\n', { timeoutMs: 3_000 });
      assert.ok(fourth.closed, 'a 4th connection was kept open');
      const refused = parseResponse(fourth.response);
      assert.equal(refused?.status, 503, `the 4th connection's answer: ${show(fourth.response)}`);
      assert.equal(refused.headers['x-skein-error'], 'SKEIN_E_CONNECTION_LIMIT');
      assert.match(refused.headers.connection ?? '', /close/);
      assert.equal(web.find('/limits/fourth'), undefined, 'the 4th connection was forwarded');

      web.gates.open('hold:lim-0');
      const r0 = await holds[0]!.readResponse();
      assert.equal(r0.body.toString(), 'held');
      holds[0]!.destroy();
      await waitFor(
        async () => {
          const r = await rawExchange(limPort, 'GET /limits/again HTTP/1.1\r\nHost: web\r\n\r\n', { timeoutMs: 2_000, until: isCompleteResponse });
          return parseResponse(r.response)?.status === 200;
        },
        { timeoutMs: 5_000, what: 'a new connection to be accepted once one of the 3 closed' },
      );
      for (const i of [1, 2]) {
        web.gates.open(`hold:lim-${i}`);
        assert.equal((await holds[i]!.readResponse()).body.toString(), 'held');
      }
    } finally {
      for (const i of [0, 1, 2]) web.gates.open(`hold:lim-${i}`);
      for (const c of holds) c.destroy();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 9. Resilience
// ---------------------------------------------------------------------------------------------

describe('resilience', () => {
  test('an instance that refuses connections: every request succeeds on the other, failed connects are counted', async () => {
    const failed = async () => metricValue(await scrapeMetrics(proxy), 'skein_proxy_upstream_connects_total', { result: 'failed' }) ?? 0;
    const before = await failed();
    const c = await openRaw(outPort);
    try {
      for (let i = 0; i < 10; i++) {
        const res = await getOk(c, 'halfdead', `/hd/${i}`);
        assert.equal(res.headers['x-backend'], 'live');
      }
    } finally {
      c.destroy();
    }
    assert.equal(live.requests.filter((r) => r.url.startsWith('/hd/')).length, 10);
    const after = await failed();
    assert.ok(after > before, `skein_proxy_upstream_connects_total{result="failed"} did not grow (${before} -> ${after}) with round-robin over a closed port`);
  });

  test('a backend that closes idle keep-alive connections after 50 ms: sequential requests all succeed', async () => {
    const c = await openRaw(outPort);
    try {
      // node:http enforces keepAliveTimeout on a timer of about a second: 3 rounds are enough.
      for (let i = 0; i < 3; i++) {
        const closedBefore = shortKa.closedConnections;
        await getOk(c, 'shortka', `/ska/${i}`);
        // The backend closes the connection the proxy pooled: the next request comes after that.
        await waitFor(() => shortKa.closedConnections > closedBefore, { timeoutMs: 5_000, what: 'the backend to close its idle connection' });
      }
    } finally {
      c.destroy();
    }
    assert.equal(shortKa.requests.filter((r) => r.url.startsWith('/ska/')).length, 3);
  });

  test('a pooled connection the backend closes as the request arrives: a bodyless request is retried on a new one', async () => {
    const c = await openRaw(outPort);
    try {
      for (let i = 0; i < 4; i++) {
        c.write(`GET /one/${i} HTTP/1.1\r\nHost: oneshot\r\n\r\n`);
        const res = await c.readResponse();
        assert.equal(res.status, 200, `request ${i}: ${res.statusLine} ${show(res.body)}`);
        assert.equal(res.body.toString(), 'ok');
      }
    } finally {
      c.destroy();
    }
    // Requests 1..3 each went first to the pooled connection of the one before (dropped there).
    assert.deepEqual(oneShot.dropped, ['/one/1', '/one/2', '/one/3']);
    assert.deepEqual(oneShot.targets, ['/one/0', '/one/1', '/one/1', '/one/2', '/one/2', '/one/3', '/one/3']);
    assert.equal(oneShot.connections, 4);
  });

  test('a request with a body on a pooled connection the backend drops is not sent twice: 502 SKEIN_E_UPSTREAM_RESET', async () => {
    const c = await openRaw(outPort);
    const from = oneShot.targets.length;
    try {
      await getOneShot(c, '/two/0');
      // The POST goes to the connection pooled by the GET, which the backend drops on its arrival.
      c.write('POST /two/1 HTTP/1.1\r\nHost: oneshot\r\nContent-Length: 5\r\n\r\nhello');
      const res = await c.readResponse();
      assertProxyError(res, 502, 'SKEIN_E_UPSTREAM_RESET');
    } finally {
      c.destroy();
    }
    // (The GET may itself have been retried: it found the connection the previous test pooled.)
    assert.deepEqual(
      oneShot.targets.slice(from).filter((t) => t === '/two/1'),
      ['/two/1'],
      'the request with a body was sent again',
    );
  });

  test('a bodyless POST on a pooled connection the backend drops is not retried (RFC 9110 §9.2.2: a proxy MUST NOT retry non-idempotent requests)', async () => {
    const c = await openRaw(outPort);
    const from = oneShot.targets.length;
    try {
      await getOneShot(c, '/three/0');
      c.write('POST /three/1 HTTP/1.1\r\nHost: oneshot\r\nContent-Length: 0\r\n\r\n');
      const res = await c.readResponse();
      assert.deepEqual(
        oneShot.targets.slice(from).filter((t) => t === '/three/1'),
        ['/three/1'],
        `a bodyless POST was sent a second time after the pooled connection closed (the client got ${res.statusLine})`,
      );
      assertProxyError(res, 502, 'SKEIN_E_UPSTREAM_RESET');
    } finally {
      c.destroy();
    }
  });

  test('an upstream reset mid-response (Content-Length) cuts the client connection', async () => {
    const c = await openRaw(outPort);
    try {
      c.write('GET /reset-mid/m1 HTTP/1.1\r\nHost: raw\r\n\r\n');
      await c.waitUntil((b) => b.indexOf('\r\n\r\n') >= 0 && b.length - b.indexOf('\r\n\r\n') - 4 >= 1000, { what: 'the head and 1000 body bytes' });
      raw.gates.open('m1');
      await c.waitClosed(5_000);
      const res = parseResponse(c.buffer);
      assert.equal(res?.status, 200);
      assert.equal(res.headers['content-length'], '100000');
      assert.ok(!res.complete, 'the client got a complete response');
      assert.equal(res.body.length, 1000);
    } finally {
      c.destroy();
    }
  });

  test('an upstream reset mid-response (chunked) cuts the client connection without a last chunk', async () => {
    const c = await openRaw(outPort);
    try {
      c.write('GET /reset-mid-chunked/m2 HTTP/1.1\r\nHost: raw\r\n\r\n');
      await c.waitUntil((b) => b.includes(`${'x'.repeat(1000)}\r\n`), { what: 'the head and the first chunk' });
      raw.gates.open('m2');
      await c.waitClosed(5_000);
      const buf = c.buffer;
      const res = parseResponse(buf);
      assert.equal(res?.status, 200);
      assert.ok(!res.complete, `the client got a complete chunked response: ${show(buf)}`);
      assert.equal(decodeChunked(buf.subarray(buf.indexOf('\r\n\r\n') + 4)), null);
    } finally {
      c.destroy();
    }
  });

  test('an upstream reset before any response: 502 SKEIN_E_UPSTREAM_RESET', async () => {
    const { res } = await exchangeOnce(outPort, 'GET /reset-early HTTP/1.1\r\nHost: raw\r\n\r\n');
    assertProxyError(res, 502, 'SKEIN_E_UPSTREAM_RESET');
  });

  test('an upstream Connection: close response: that connection is not used again', async () => {
    const c = await openRaw(outPort);
    try {
      c.write('GET /conn-close HTTP/1.1\r\nHost: raw\r\n\r\n');
      const res = await c.readResponse();
      assert.equal(res.status, 200);
      assert.equal(res.body.toString(), 'ok');
      // The backend left its connection open; RFC 9112 §9.6: no further request may go on it.
      c.write('GET /after-conn-close HTTP/1.1\r\nHost: raw\r\n\r\n');
      const next = await c.readResponse();
      assert.equal(next.status, 200, `${next.statusLine} ${show(next.body)}`);
      assert.equal(next.body.toString(), 'ok');
    } finally {
      c.destroy();
    }
    assert.notEqual(rawConnectionOf(raw, '/after-conn-close'), rawConnectionOf(raw, '/conn-close'), 'a request went on a connection the backend said it would close');
  });

  test('bytes after a complete upstream response are not forwarded, and that connection is not reused', async () => {
    const c = await openRaw(outPort);
    try {
      c.write('GET /extra HTTP/1.1\r\nHost: raw\r\n\r\n');
      const res = await c.readResponse();
      assert.equal(res.status, 200);
      assert.equal(res.body.toString(), 'ok');
      c.write('GET /after-extra HTTP/1.1\r\nHost: raw\r\n\r\n');
      const next = await c.readResponse();
      assert.equal(next.body.toString(), 'ok', 'the unsolicited response reached the client as the answer to the next request');
      assert.equal(c.buffer.length, 0, `stray bytes: ${show(c.buffer)}`);
    } finally {
      c.destroy();
    }
    assert.notEqual(rawConnectionOf(raw, '/after-extra'), rawConnectionOf(raw, '/extra'), 'the connection with unsolicited bytes was reused');
  });

  test('an upstream response with two different Content-Lengths: 502 SKEIN_E_UPSTREAM_PROTOCOL (RFC 9112 §6.3)', async () => {
    const { res, raw: bytes } = await exchangeOnce(outPort, 'GET /cl-cl HTTP/1.1\r\nHost: raw\r\n\r\n');
    assertProxyError(res, 502, 'SKEIN_E_UPSTREAM_PROTOCOL');
    assert.ok(!bytes.includes('ok!'), 'the invalid response reached the client');
  });

  test('an upstream response with Content-Length and chunked: refused, or forwarded without Content-Length (RFC 9112 §6.3)', async () => {
    const { res } = await exchangeOnce(outPort, 'GET /cl-te HTTP/1.1\r\nHost: raw\r\n\r\n');
    if (res.status === 502) {
      assertProxyError(res, 502, 'SKEIN_E_UPSTREAM_PROTOCOL');
    } else {
      assert.equal(res.status, 200);
      assert.equal(res.headers['content-length'], undefined, 'an intermediary MUST remove Content-Length before forwarding a chunked response');
      assert.equal(res.body.toString(), 'ok');
    }
  });

  test('an upstream answering garbage: 502 SKEIN_E_UPSTREAM_PROTOCOL, and the client connection goes on', async () => {
    const c = await openRaw(outPort);
    try {
      c.write('GET /garbage HTTP/1.1\r\nHost: raw\r\n\r\n');
      const res = await c.readResponse();
      assertProxyError(res, 502, 'SKEIN_E_UPSTREAM_PROTOCOL');
      await getOk(c, 'web', '/after-garbage');
    } finally {
      c.destroy();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 10. Admin
// ---------------------------------------------------------------------------------------------

describe('admin', () => {
  test('/live and /ready answer 200', async () => {
    const live1 = await api(proxy.admin, 'GET', '/live');
    assert.equal(live1.status, 200);
    assert.deepEqual(live1.body, { live: true });
    const ready = await api(proxy.admin, 'GET', '/ready');
    assert.equal(ready.status, 200);
    assert.deepEqual(ready.body, { ready: true });
  });

  test('/metrics counts requests by direction, workload, source, service, route, instance, status and class', async () => {
    const labels = { workload: 'client', direction: 'outbound', service: 'counted' };
    const errLabels = { direction: 'outbound', code: 'SKEIN_E_UNKNOWN_SERVICE' };
    const m0 = await scrapeMetrics(proxy);
    assert.equal(metricValue(m0, 'skein_proxy_requests_total', labels), undefined, 'service counted has requests before this test');
    const err0 = metricValue(m0, 'skein_proxy_errors_total', errLabels) ?? 0;
    const noService = { direction: 'outbound', workload: 'client', service: '', status: '503', class: 'failure' };
    const noService0 = metricValue(m0, 'skein_proxy_requests_total', noService) ?? 0;

    const c = await openRaw(outPort);
    try {
      for (let i = 0; i < 7; i++) await getOk(c, 'counted', `/m/${i}`);
      for (let i = 0; i < 2; i++) {
        c.write('GET /status/404 HTTP/1.1\r\nHost: counted\r\n\r\n');
        assert.equal((await c.readResponse()).status, 404);
      }
      c.write('GET /m HTTP/1.1\r\nHost: still-no-such-service\r\n\r\n');
      assert.equal((await c.readResponse()).status, 503);
    } finally {
      c.destroy();
    }
    const m1 = await scrapeMetrics(proxy);
    assert.equal(metricValue(m1, 'skein_proxy_requests_total', { ...labels, status: '200' }), 7);
    assert.equal(metricValue(m1, 'skein_proxy_requests_total', { ...labels, status: '404' }), 2);
    assert.equal(metricValue(m1, 'skein_proxy_requests_total', labels), 9);
    assert.equal(metricValue(m1, 'skein_proxy_request_duration_seconds_bucket', { ...labels, le: '+Inf' }), 9);
    assert.equal(metricValue(m1, 'skein_proxy_request_duration_seconds_count', labels), 9);
    assert.ok((metricValue(m1, 'skein_proxy_request_duration_seconds_sum', labels) ?? 0) > 0);
    assert.equal((metricValue(m1, 'skein_proxy_errors_total', errLabels) ?? 0) - err0, 1);
    assert.match(m1, /^# TYPE skein_proxy_request_duration_seconds histogram$/m);
    assert.match(m1, /^skein_proxy_requests_total\{direction="outbound",workload="client",source="client",service="counted",route="default",status="200",class="success"\} 7$/m);
    // The request for a service that does not exist: counted with no service, as a failure.
    assert.equal((metricValue(m1, 'skein_proxy_requests_total', noService) ?? 0) - noService0, 1);
    // Request and response body bytes, by the same labels.
    assert.ok((metricValue(m1, 'skein_proxy_response_bytes_total', labels) ?? 0) > 0);
    assert.equal(metricValue(m1, 'skein_proxy_request_bytes_total', labels), 0, 'GETs have no body');
  });

  test('/debug/endpoints lists the services, their endpoints and balancer', async () => {
    const r = await api(proxy.admin, 'GET', '/debug/endpoints');
    assert.equal(r.status, 200);
    const body = r.body as {
      ready: boolean;
      workloads: Array<{ name: string }>;
      services: Record<string, { balancer: { kind: string }; endpoints: Array<{ id: string; address: string; port: number }> }>;
    };
    assert.equal(body.ready, true);
    assert.deepEqual(body.workloads.map((w) => w.name).sort(), ['app1', 'client']);
    const ends = (svc: string) => {
      const s = body.services[svc];
      assert.ok(s, `service ${svc} is not listed: ${Object.keys(body.services).join(', ')}`);
      return s.endpoints.map((e) => ({ id: e.id, address: e.address, port: e.port })).sort((a, b) => a.id.localeCompare(b.id));
    };
    assert.deepEqual(ends('web'), [{ id: 'web-1', address: '127.0.0.1', port: web.port }]);
    assert.equal(body.services.web?.balancer.kind, 'peak-ewma');
    assert.deepEqual(ends('halfdead'), [
      { id: 'hd-dead', address: '127.0.0.1', port: deadPort },
      { id: 'hd-live', address: '127.0.0.1', port: live.port },
    ]);
    assert.equal(body.services.halfdead?.balancer.kind, 'round-robin');
    assert.deepEqual(ends('sick'), [], 'an unhealthy instance is not an endpoint');
  });

  test('an unknown admin path: 404 with a JSON body', async () => {
    const r = await api(proxy.admin, 'GET', '/no-such-thing');
    assert.equal(r.status, 404);
    assert.match(r.headers.get('content-type') ?? '', /application\/json/);
    assert.equal((r.body as { code?: string }).code, 'SKEIN_E_NOT_FOUND');
  });
});

// ---------------------------------------------------------------------------------------------
// 11. Inbound listener
// ---------------------------------------------------------------------------------------------

describe('inbound listener', () => {
  test('requests to the inbound port reach the app, with x-forwarded-for', async () => {
    const labels = { workload: 'app1', direction: 'inbound', service: 'app1', status: '200' };
    const before = metricValue(await scrapeMetrics(proxy), 'skein_proxy_requests_total', labels) ?? 0;
    const c = await openRaw(inPort);
    try {
      await getOk(c, 'app1', '/in/1');
      const seen = seenAt(app, '/in/1');
      assert.deepEqual(headerLines(seen, 'x-forwarded-for'), ['127.0.0.1']);
      assert.deepEqual(headerLines(seen, 'x-forwarded-proto'), ['http']);
      assert.match(headerLines(seen, 'x-request-id')[0] ?? '', UUID);
      assert.deepEqual(headerLines(seen, 'host'), ['app1']);

      c.write('GET /in/2 HTTP/1.1\r\nHost: anything.example:8080\r\nX-Forwarded-For: 10.0.0.1\r\nConnection: keep-alive\r\n\r\n');
      const res = await c.readResponse();
      assert.equal(res.status, 200, 'the inbound listener forwards whatever the Host');
      const seen2 = seenAt(app, '/in/2');
      assert.deepEqual(headerLines(seen2, 'x-forwarded-for'), ['10.0.0.1, 127.0.0.1']);
      assert.deepEqual(headerLines(seen2, 'connection'), []);
    } finally {
      c.destroy();
    }
    assert.equal(web.find('/in/1'), undefined, 'an inbound request went to a service instead of the app');
    const after = metricValue(await scrapeMetrics(proxy), 'skein_proxy_requests_total', labels) ?? 0;
    assert.equal(after - before, 2);
  });
});
