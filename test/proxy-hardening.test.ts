/**
 * What an adversarial probe of the demo mesh found around the framing (issue 11, §2 and §3), tested
 * through a chain of two proxies (A's outbound listener -> B's inbound listener -> app) and at B's
 * inbound listener directly:
 * - routes match the normalized path, so `//admin`, `/./admin`, `/%61dmin`, `/ADMIN` or
 *   `/x/../admin` cannot slip past a route on `/admin`, and the app gets the path the route saw;
 * - a request line with two spaces is refused instead of making the method "POST ";
 * - `Upgrade: h2c` is declined (served as HTTP/1.1, never tunnelled);
 * - several `x-skein-timeout-ms` headers: the smallest deadline wins.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { api } from './helpers.js';
import { assertErrorBody, isCompleteResponse, parseResponse, rawExchange, recordingBackend, startChain, type Chain, type RecordingBackend } from './proxy-helpers.js';

const cleanups: Array<() => unknown> = [];
let backend: RecordingBackend;
let chain: Chain;

const ROUTES = [
  { name: 'admin', match: { pathPrefix: '/admin' }, fault: { abort: { status: 403, percent: 100 } } },
  { name: 'post-blocked', match: { path: '/post-blocked', methods: ['POST'] }, fault: { abort: { status: 403, percent: 100 } } },
];

before(async () => {
  backend = await recordingBackend();
  cleanups.push(() => backend.close());
  // An app that answers /slow after 2 s.
  const slow = http.createServer((req, res) => {
    const t = setTimeout(() => res.end('late'), req.url === '/slow' ? 2_000 : 0);
    res.on('close', () => clearTimeout(t));
  });
  await new Promise<void>((r) => slow.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => {
    slow.closeAllConnections();
    return new Promise<void>((r) => slow.close(() => r()));
  });
  chain = await startChain(
    { sink: backend.port, slow: (slow.address() as { port: number }).port },
    { services: { sink: { routes: ROUTES }, slow: { retries: { maxRetries: 0 } } } },
  );
  cleanups.push(() => chain.stop());
});

after(async () => {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
});

const LISTENERS = ['outbound', 'inbound'] as const;
type Listener = (typeof LISTENERS)[number];
const portOf = (l: Listener, service = 'sink') => (l === 'outbound' ? chain.outbound : (chain.inbound[service] as number));

/** Sends raw bytes; `untilClosed`: reads until the proxy closes the connection (else: until a complete response). */
async function request(listener: Listener, raw: string, service = 'sink', untilClosed = false) {
  const r = await rawExchange(portOf(listener, service), raw, untilClosed ? { timeoutMs: 10_000 } : { until: isCompleteResponse, timeoutMs: 10_000 });
  const res = parseResponse(r.response);
  assert.ok(res, `no response to ${JSON.stringify(raw.slice(0, 120))}: ${JSON.stringify(r.response.toString('latin1'))}`);
  return { ...res, closed: r.closed };
}

const get = (listener: Listener, target: string, extra = '', untilClosed = false) => request(listener, `GET ${target} HTTP/1.1\r\nHost: sink\r\n${extra}\r\n`, 'sink', untilClosed);
const message = (body: Buffer) => String(JSON.parse(body.toString()).message);

describe('routes match the normalized path', () => {
  // All of these are /admin (or below it) to an app that resolves paths as RFC 3986 says.
  const disguised = ['/admin', '//admin', '/./admin', '/%61dmin', '/%61%64%6D%69%6E/x', '/ADMIN', '/Admin/users', '/x/../admin', '/public/%2e%2e/admin/users', '/public/%2E%2E%2Fadmin', '/admin%2Fusers', '///admin//users'];
  for (const target of disguised) {
    test(`GET ${target} gets the /admin route (an injected 403), and the app never sees it`, async () => {
      const res = await get('outbound', target);
      assert.equal(res.status, 403, `${target}: ${res.body.toString()}`);
      assert.equal(res.headers['x-skein-error'], 'SKEIN_E_FAULT_INJECTED');
      assertErrorBody(res.body, 'SKEIN_E_FAULT_INJECTED');
      assert.equal(JSON.parse(res.body.toString()).details.route, 'admin');
      assert.deepEqual(backend.requests, [], `the app got ${backend.requests.map((q) => q.target).join(', ')}`);
    });
  }

  for (const [target, forwarded] of [
    ['/administrator', '/administrator'],
    ['/public/admin', '/public/admin'],
    ['//a/./b/%7euser?q=/../%2e&x=%zz', '/a/b/~user?q=/../%2e&x=%zz'],
    ['/a/b/../c/%3a', '/a/c/%3A'],
  ] as const) {
    for (const listener of LISTENERS) {
      test(`GET ${target} is not /admin and reaches the app as ${forwarded} (${listener})`, async () => {
        backend.reset();
        const res = await get(listener, target);
        assert.equal(res.status, 200, res.body.toString());
        assert.deepEqual(backend.requests.map((q) => q.target), [forwarded], 'the app got the normalized path, the query as it came');
        backend.reset();
      });
    }
  }

  for (const listener of LISTENERS) {
    test(`a path with a broken escape is refused with 400 (${listener})`, async () => {
      const res = await get(listener, '/a%zz/b', '', true);
      assert.equal(res.status, 400);
      assert.equal(res.headers['x-skein-error'], 'SKEIN_E_BAD_PATH');
      assert.match(message(res.body), /"%zz" at offset 2 of the path/);
      assert.ok(res.closed, 'and the connection is closed');
      assert.deepEqual(backend.requests, []);
    });
  }

  test('a route path that requests never have (not normalized) is refused, with the form to write', async () => {
    const r = await api(chain.control.http, 'PUT', '/v1/services/badroutes', { routes: [{ name: 'api', match: { pathPrefix: '/api//v1/./x' } }] });
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal(r.body.code, 'SKEIN_E_VALIDATION');
    const text = JSON.stringify(r.body);
    assert.ok(text.includes('routes[0].match.pathPrefix'), text);
    assert.ok(text.includes('write \\"/api/v1/x\\"'), text);
    const gone = await api(chain.control.http, 'GET', '/v1/services/badroutes');
    assert.equal(gone.status, 404, 'nothing was stored');
  });
});

describe('the request line', () => {
  test('POST /post-blocked gets its route (the exact request is refused by policy)', async () => {
    const res = await request('outbound', 'POST /post-blocked HTTP/1.1\r\nHost: sink\r\nContent-Length: 0\r\n\r\n');
    assert.equal(res.status, 403);
    assert.equal(res.headers['x-skein-error'], 'SKEIN_E_FAULT_INJECTED');
  });

  for (const listener of LISTENERS) {
    test(`"POST  /post-blocked" (two spaces) is refused with 400, not forwarded as method "POST " (${listener})`, async () => {
      const res = await request(listener, 'POST  /post-blocked HTTP/1.1\r\nHost: sink\r\nContent-Length: 0\r\n\r\n', 'sink', true);
      assert.equal(res.status, 400);
      assert.equal(res.headers['x-skein-error'], 'SKEIN_E_BAD_REQUEST');
      assert.match(message(res.body), /single spaces/);
      assert.ok(res.closed);
      assert.deepEqual(backend.requests, []);
    });
  }

  test('an empty line before the request line is allowed (RFC 9112 §2.2) and the method is read right', async () => {
    const res = await request('outbound', '\r\nPOST /post-blocked HTTP/1.1\r\nHost: sink\r\nContent-Length: 0\r\n\r\n');
    assert.equal(res.status, 403, 'the POST route matched: the method is "POST"');
  });
});

describe('Upgrade: h2c is declined', () => {
  const H2C = 'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n';
  for (const listener of LISTENERS) {
    test(`the request is served as HTTP/1.1 without the upgrade, then the connection closes (${listener})`, async () => {
      backend.reset();
      const res = await get(listener, '/h2c', H2C, true);
      assert.equal(res.status, 200, 'the app answered, no 101');
      assert.equal(res.body.toString(), 'ok');
      assert.match(res.headers.connection ?? '', /\bclose\b/i);
      assert.ok(res.closed, 'the connection closed after it');
      assert.equal(backend.requests.length, 1);
      const h = backend.requests[0]?.headers ?? {};
      assert.equal(h['upgrade'], undefined, 'no Upgrade reached the app');
      assert.equal(h['http2-settings'], undefined, 'no HTTP2-Settings reached the app');
      assert.doesNotMatch(h['connection'] ?? '', /upgrade/i, 'no Connection: upgrade reached the app');
      backend.reset();
    });
  }

  test('h2c offered beside another protocol is declined too', async () => {
    backend.reset();
    const res = await get('outbound', '/h2c-mixed', 'Connection: Upgrade\r\nUpgrade: websocket, h2c\r\n');
    assert.equal(res.status, 200);
    assert.equal(backend.requests[0]?.headers['upgrade'], undefined);
    backend.reset();
  });
});

describe('several x-skein-timeout-ms headers: the smallest wins', () => {
  for (const listener of LISTENERS) {
    for (const order of [['50', '999999'], ['999999', '50']]) {
      test(`${order.join(' then ')} (${listener}): the request times out after 50 ms`, async () => {
        const lines = order.map((v) => `x-skein-timeout-ms: ${v}\r\n`).join('');
        const res = await request(listener, `GET /slow HTTP/1.1\r\nHost: slow\r\n${lines}\r\n`, 'slow');
        assert.equal(res.status, 504, res.body.toString());
        assert.equal(res.headers['x-skein-error'], 'SKEIN_E_UPSTREAM_TIMEOUT');
        // Through A, B gets what is left of the 50 ms and is the one to give up.
        const ms = Number(JSON.parse(res.body.toString()).details.timeoutMs);
        assert.ok(ms > 0 && ms <= 50, `the deadline in force was ${ms} ms`);
      });
    }
  }

  test('a list in one header is the header repeated (RFC 9110 §5.3): its smallest; a member that is not a number: 400', async () => {
    const res = await request('outbound', 'GET /slow HTTP/1.1\r\nHost: slow\r\nx-skein-timeout-ms: 999999, 50\r\n\r\n', 'slow');
    assert.equal(res.status, 504, res.body.toString());
    const ms = Number(JSON.parse(res.body.toString()).details.timeoutMs);
    assert.ok(ms > 0 && ms <= 50, `the deadline in force was ${ms} ms`);
    const bad = await request('outbound', 'GET /slow HTTP/1.1\r\nHost: slow\r\nx-skein-timeout-ms: 50, soon\r\n\r\n', 'slow');
    assert.equal(bad.status, 400);
    assert.match(message(bad.body), /x-skein-timeout-ms must be a whole number of milliseconds, not "50, soon"/);
  });
});
