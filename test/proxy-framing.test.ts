/**
 * HTTP/1.1 framing through a chain of two proxies, as two workloads of a mesh talk: the caller's
 * proxy A (outbound listener) and the callee's proxy B (inbound listener in front of the app).
 * Every malformed or ambiguous request (request smuggling: CL.TE, TE.CL, duplicate or invalid
 * Content-Length, obfuscated Transfer-Encoding, Connection naming the framing, a sloppy request
 * line, bare LF, obs-fold, bad chunk framing, ...) is answered by the listener that gets it with
 * 400 SKEIN_E_BAD_REQUEST and the connection closed, and nothing of it (nor of the request hidden
 * behind it) reaches the app; the corpus runs against A's outbound listener (A -> B -> app) and
 * against B's inbound listener (B -> app). Legal requests with bodies still pass through, and an
 * oversized header block gets 431 SKEIN_E_HEADERS_TOO_LARGE. Responses: an app whose response
 * would be unframed by the proxy's rules (Connection naming its framing, Transfer-Encoding in
 * HTTP/1.0) gets its caller a 502 SKEIN_E_UPSTREAM_PROTOCOL, and the client's connection carries
 * no byte of it (no response swapping).
 *
 * Bytes are written raw over node:net, so they reach the proxy exactly as listed in the corpus
 * (test/proxy-helpers.ts, `malformedRequests`, with the RFC rule each entry breaks). The app
 * is a raw TCP server that records every byte it gets.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from './helpers.js';
import {
  bigHeaderRequest,
  isCompleteResponse,
  legalRequests,
  malformedRequests,
  openRaw,
  parseResponse,
  rawExchange,
  recordingBackend,
  scriptedBackend,
  startChain,
  type Chain,
  type RawExchangeResult,
  type RecordedRequest,
  type RecordingBackend,
  assertErrorBody,
} from './proxy-helpers.js';

const cleanups: Array<() => unknown> = [];
let backend: RecordingBackend;
let chain: Chain;

const corpus = malformedRequests('sink');

/** A response whose framing header is named in Connection hides a second response in its body. */
const SWAPPED = 'HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nswapped';
const RESPONSES: Record<string, string> = {
  '/resp/conn-content-length': `HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: ${4 + SWAPPED.length}\r\n\r\nbody${SWAPPED}`,
  '/resp/conn-transfer-encoding': `HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n${(4 + SWAPPED.length).toString(16)}\r\nbody${SWAPPED}\r\n0\r\n\r\n`,
  '/resp/conn-close-te': `HTTP/1.1 200 OK\r\nConnection: close, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n${(4 + SWAPPED.length).toString(16)}\r\nbody${SWAPPED}\r\n0\r\n\r\n`,
  '/resp/http10-te': `HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${(4 + SWAPPED.length).toString(16)}\r\nbody${SWAPPED}\r\n0\r\n\r\n`,
};

/** Where a request is sent: A's outbound listener (through both proxies) or B's inbound one. */
const LISTENERS = ['outbound', 'inbound'] as const;
type Listener = (typeof LISTENERS)[number];
const portOf = (l: Listener, service = 'sink') => (l === 'outbound' ? chain.outbound : (chain.inbound[service] as number));

before(async () => {
  backend = await recordingBackend();
  cleanups.push(() => backend.close());
  const scripted = await scriptedBackend((target) => RESPONSES[target]);
  cleanups.push(() => scripted.close());
  chain = await startChain(
    { sink: backend.port, resp: scripted.port },
    {
      aliases: { 'probe-raw': 'sink', 'user-service': 'sink' },
      // The refused responses are 502s by design: no breaker or ejection may take `resp` away meanwhile.
      services: { resp: { breaker: { enabled: false }, outlierDetection: { enabled: false } } },
    },
  );
  cleanups.push(() => chain.stop());
  // A well-formed request gets through both proxies to the backend.
  await waitFor(
    async () => {
      const r = await rawExchange(chain.outbound, 'GET / HTTP/1.1\r\nHost: sink\r\n\r\n', { timeoutMs: 2_000, until: isCompleteResponse });
      return parseResponse(r.response)?.status === 200;
    },
    { timeoutMs: 15_000, what: `GET / with Host: sink through both proxies to answer 200; proxy logs:\n${chain.a.logs.slice(-20).join('\n')}` },
  );
  backend.reset();
});

after(async () => {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
});

const show = (b: Buffer) => JSON.stringify(b.toString('latin1').slice(0, 300));

const proxies = () => [chain.a, chain.b];

/** For failure messages: whether a proxy process is gone (a crash makes every later test fail). */
function proxyState(): string {
  return proxies()
    .filter((p) => p.child.exitCode !== null || p.child.signalCode !== null)
    .map((p) => ` (a proxy exited: code ${p.child.exitCode}, signal ${p.child.signalCode}; last logs:\n${p.logs.slice(-20).join('\n')})`)
    .join('');
}

/** Waits a little for the proxies to be reaped if one seems to have died (only on failure paths). */
async function settleProxyExit(): Promise<void> {
  await waitFor(() => proxies().some((p) => p.child.exitCode !== null || p.child.signalCode !== null), { timeoutMs: 1_000 }).catch(() => {});
}

/** rawExchange to a listener; when nothing came back, failure messages say whether a proxy died. */
async function send(bytes: Buffer | string, opts: Parameters<typeof rawExchange>[2] = {}, listener: Listener = 'outbound'): Promise<RawExchangeResult> {
  let r: RawExchangeResult;
  try {
    r = await rawExchange(portOf(listener), bytes, opts);
  } catch (e) {
    await settleProxyExit();
    throw new Error(`${(e as Error).message}${proxyState()}`, { cause: e });
  }
  if (r.response.length === 0) await settleProxyExit();
  return r;
}

/** The proxy answered with its own error: status, x-skein-error and a JSON body naming the code. */
function assertProxyError(r: RawExchangeResult, status: number, code: string): void {
  assert.ok(r.response.length > 0, `no response at all (closed=${r.closed}, error=${r.error})${proxyState()}`);
  assert.ok(r.response.toString('latin1').startsWith(`HTTP/1.1 ${status}`), `expected HTTP/1.1 ${status}, got ${show(r.response)}`);
  const res = parseResponse(r.response);
  assert.ok(res, `incomplete response head: ${show(r.response)}`);
  assert.equal(res.headers['x-skein-error'], code, `x-skein-error in ${show(r.response)}`);
  assert.ok(res.complete || r.closed, `incomplete response body: ${show(r.response)}`);
  assertErrorBody(res.body, code);
}

/** 400 SKEIN_E_BAD_REQUEST with `connection: close`, and the proxy closed the connection. */
function assertBadRequest(r: RawExchangeResult): void {
  assertProxyError(r, 400, 'SKEIN_E_BAD_REQUEST');
  const res = parseResponse(r.response);
  assert.match(res?.headers.connection ?? '', /\bclose\b/i, `connection: close in ${show(r.response)}`);
  assert.ok(r.closed, 'the proxy did not close the connection after its 400');
}

/** A well-formed request through `listener`, answered by the backend: everything sent before it has been handled. */
async function barrier(tag: string, listener: Listener): Promise<RecordedRequest> {
  const path = `/framing/barrier-${tag}-${listener}`;
  const r = await send(`GET ${path} HTTP/1.1\r\nHost: sink\r\n\r\n`, { until: isCompleteResponse }, listener);
  assert.equal(parseResponse(r.response)?.status, 200, `barrier request: ${show(r.response)}`);
  const req = backend.requests.find((q) => q.target.includes(path));
  assert.ok(req, 'the barrier request did not reach the backend');
  return req;
}

for (const listener of LISTENERS) {
  const via = listener === 'outbound' ? "A's outbound listener (A -> B -> app)" : "B's inbound listener (B -> app)";

  describe(`malformed request heads are refused before any byte is forwarded: ${via}`, () => {
    const entries = corpus.filter((e) => e.stage === 'head');
    for (const e of entries) {
      test(e.name, async () => {
        const r = await send(e.bytes, {}, listener);
        assertBadRequest(r);
        const got = backend.received().toString('latin1');
        assert.ok(!got.includes(e.marker), `the backend received the refused request: ${JSON.stringify(got)}`);
        if (e.smuggled) assert.ok(!got.includes(e.smuggled), `the backend received the hidden request: ${JSON.stringify(got)}`);
      });
    }

    test('the backend received nothing at all of these requests', async () => {
      assert.equal(backend.received().length, 0, `the backend received ${show(backend.received())}`);
      // Anything forwarded late would have been sent before this request's answer came back.
      const canary = await barrier('heads', listener);
      assert.deepEqual(
        backend.requests.map((q) => q.target),
        [canary.target],
        'the backend saw requests other than the barrier',
      );
      assert.equal(backend.received().length, canary.raw.length, `the backend received more than the barrier: ${show(backend.received())}`);
      backend.reset();
    });
  });

  describe(`bad chunked framing is refused, and nothing behind it is forwarded: ${via}`, () => {
    // The heads of these requests are valid: a streaming proxy may have forwarded a head before it
    // met the bad chunk. It must not forward a complete request, nor any byte after the bad framing.
    const entries = corpus.filter((e) => e.stage === 'body');
    const check = (e: (typeof entries)[number]) => {
      const complete = backend.requests.filter((q) => q.target.includes(e.marker));
      assert.deepEqual(complete, [], 'the backend received the refused request complete');
      if (e.smuggled) {
        const got = backend.received().toString('latin1');
        assert.ok(!got.includes(e.smuggled), `the backend received the hidden request: ${JSON.stringify(got)}`);
      }
    };
    for (const e of entries) {
      test(e.name, async () => {
        const r = await send(e.bytes, {}, listener);
        assertBadRequest(r);
        check(e);
      });
    }

    test('after a barrier, still no complete or hidden request at the backend', async () => {
      await barrier('bodies', listener);
      for (const e of entries) check(e);
      assert.ok(!backend.received().toString('latin1').includes('/smuggled/'), `hidden request at the backend: ${show(backend.received())}`);
      backend.reset();
    });
  });

  describe(`after Connection: close, nothing more is read: ${via}`, () => {
    test('a request hidden after a Connection: close request never reaches the app', async () => {
      const hidden = `GET /smuggled/after-close-${listener} HTTP/1.1\r\nHost: sink\r\n\r\n`;
      const r = await send(`GET /framing/close-${listener} HTTP/1.1\r\nHost: sink\r\nConnection: close\r\n\r\n${hidden}`, { until: isCompleteResponse }, listener);
      const res = parseResponse(r.response);
      assert.equal(res?.status, 200, `the first request is answered: ${show(r.response)}`);
      assert.match(res.headers.connection ?? '', /\bclose\b/i, 'and the proxy says it closes');
      await waitFor(() => r.closed || backend.requests.length > 1, { timeoutMs: 5_000, what: 'the connection to close' }).catch(() => {});
      await barrier(`after-close`, listener);
      assert.deepEqual(
        backend.requests.map((q) => q.target),
        [`/framing/close-${listener}`, `/framing/barrier-after-close-${listener}`],
        'the app got the first request and the barrier, not the one after Connection: close',
      );
      backend.reset();
    });
  });

  describe(`legal requests with bodies pass through: ${via}`, () => {
    for (const l of legalRequests('sink')) {
      test(l.name, async () => {
        const r = await send(l.bytes, { until: isCompleteResponse }, listener);
        const res = parseResponse(r.response);
        assert.equal(res?.status, 200, `response: ${show(r.response)}`);
        assert.equal(res.body.toString('latin1'), 'ok');
        const q = backend.requests.find((x) => x.target.includes(l.marker));
        assert.ok(q, `the request did not reach the backend; it got ${show(backend.received())}`);
        assert.equal(q.method, 'POST');
        assert.equal(q.body.toString('latin1'), l.body);
        backend.reset();
      });
    }
  });

  describe(`an oversized header block gets 431: ${via}`, () => {
    for (const shape of ['one-field', 'many-fields'] as const) {
      test(`100 KiB of header fields (${shape})`, async () => {
        const marker = `/framing/too-large-${shape}`;
        const r = await send(bigHeaderRequest(marker, 100 * 1024, shape, 'sink'), { until: isCompleteResponse }, listener);
        assertProxyError(r, 431, 'SKEIN_E_HEADERS_TOO_LARGE');
        assert.ok(!backend.received().toString('latin1').includes(marker), 'the backend received the oversized request');
      });
    }
  });

  describe(`responses the proxy would unframe are refused, and nothing of them reaches the client: ${via}`, () => {
    for (const target of Object.keys(RESPONSES)) {
      test(target.slice('/resp/'.length), async () => {
        const c = await openRaw(portOf(listener, 'resp'));
        try {
          c.write(`GET ${target} HTTP/1.1\r\nHost: resp\r\n\r\n`);
          const first = await c.readResponse({ timeoutMs: 10_000 });
          assert.equal(first.status, 502, `the refused response: ${JSON.stringify(first)}`);
          assert.equal(first.headers['x-skein-error'], 'SKEIN_E_UPSTREAM_PROTOCOL');
          assertErrorBody(first.body, 'SKEIN_E_UPSTREAM_PROTOCOL');
          // On a connection that stayed open the next response is the next request's own.
          if (!c.closed) {
            c.write('GET /resp/ok HTTP/1.1\r\nHost: resp\r\n\r\n');
            const second = await c.readResponse({ timeoutMs: 10_000 });
            assert.equal(second.status, 200);
            assert.equal(second.body.toString('latin1'), 'ok', 'the next request gets its own answer, not the hidden one');
          }
          assert.ok(!c.buffer.toString('latin1').includes('swapped'), `the hidden response reached the client: ${show(c.buffer)}`);
        } finally {
          c.destroy();
        }
      });
    }
  });
}

describe("the probe's exact bytes (issue 11)", () => {
  test('POST with Connection: content-length hiding a GET with a spoofed caller: 400, nothing forwarded', async () => {
    const bytes =
      'POST /a HTTP/1.1\r\nHost: probe-raw\r\nConnection: content-length\r\nContent-Length: 68\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: probe-raw\r\nx-skein-caller: spoofed\r\n\r\n';
    const r = await send(bytes);
    assertBadRequest(r);
    await barrier('probe-raw', 'outbound');
    assert.deepEqual(backend.requests.map((q) => q.target), ['/framing/barrier-probe-raw-outbound'], 'only the barrier reached the app');
    assert.ok(!backend.received().toString('latin1').includes('spoofed'), 'the spoofed caller never reached the app');
    backend.reset();
  });

  test("the demo's user-service example: a victim's request is answered with its own record, and its Authorization stays its own", async () => {
    const attack =
      'POST /user HTTP/1.1\r\nHost: user-service\r\nConnection: content-length\r\nContent-Length: 98\r\n\r\nGET /user?user_id=2 HTTP/1.1\r\nHost: user-service\r\nx-skein-caller: frontend\r\nContent-Length: 20\r\n\r\n';
    const r = await send(attack);
    assertBadRequest(r);
    const victim = await send('GET /user?user_id=1 HTTP/1.1\r\nHost: user-service\r\nAuthorization: Bearer victim-token\r\n\r\n', { until: isCompleteResponse });
    assert.equal(parseResponse(victim.response)?.status, 200);
    assert.deepEqual(backend.requests.map((q) => `${q.method} ${q.target}`), ['GET /user?user_id=1'], 'the app saw the victim request only');
    assert.match(backend.received().toString('latin1'), /authorization: Bearer victim-token\r\n/i, 'with its own Authorization header');
    backend.reset();
  });
});
