/**
 * HTTP/1.1 request framing at the proxy's outbound listener: every malformed or ambiguous
 * request (request smuggling: CL.TE, TE.CL, duplicate or invalid Content-Length, obfuscated
 * Transfer-Encoding, bare LF, obs-fold, bad chunk framing, ...) is answered by the proxy itself
 * with 400 SKEIN_E_BAD_REQUEST and the connection closed, and nothing of it (nor of the request
 * hidden behind it) reaches the backend. Legal requests with bodies still pass through, and an
 * oversized header block gets 431 SKEIN_E_HEADERS_TOO_LARGE.
 *
 * Bytes are written raw over node:net, so they reach the proxy exactly as listed in the corpus
 * (test/proxy-helpers.ts, `malformedRequests`, with the RFC rule each entry breaks). The backend
 * is a raw TCP server that records every byte it gets.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startControl, tempDir, waitFor } from './helpers.js';
import {
  bigHeaderRequest,
  isCompleteResponse,
  legalRequests,
  malformedRequests,
  parseResponse,
  rawExchange,
  recordingBackend,
  registerInstance,
  startProxy,
  waitForProxyReady,
  type RawExchangeResult,
  type RecordedRequest,
  type ProxyProcess,
  type RecordingBackend,
  assertErrorBody,
} from './proxy-helpers.js';

const cleanups: Array<() => unknown> = [];
let backend: RecordingBackend;
let proxy: ProxyProcess;
let outbound: number; // the client workload's outbound port

const corpus = malformedRequests('sink');

before(async () => {
  const dir = await tempDir('skein-framing-');
  cleanups.push(dir.remove);
  const cp = await startControl({ dataDir: dir.path });
  cleanups.push(() => cp.stop());
  backend = await recordingBackend();
  cleanups.push(() => backend.close());
  await registerInstance(cp.http, 'sink', 'sink-1', backend.port);
  proxy = await startProxy({ control: cp.http, workloads: ['name=client,outbound=127.0.0.1:0'] });
  cleanups.push(() => proxy.stop());
  const out = proxy.workload('client').outbound;
  assert.ok(out, `the proxy reported no outbound address for "client": ${JSON.stringify(proxy.workloads)}`);
  outbound = out.port;
  await waitForProxyReady(proxy);
  // A well-formed request gets through: the proxy routes `sink` and the backend is reachable.
  await waitFor(
    async () => {
      const r = await rawExchange(outbound, 'GET / HTTP/1.1\r\nHost: sink\r\n\r\n', { timeoutMs: 2_000, until: isCompleteResponse });
      return parseResponse(r.response)?.status === 200;
    },
    { timeoutMs: 15_000, what: `GET / with Host: sink through the proxy to answer 200; proxy logs:\n${proxy.logs.slice(-20).join('\n')}` },
  );
  backend.reset();
});

after(async () => {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
});

const show = (b: Buffer) => JSON.stringify(b.toString('latin1').slice(0, 300));

/** For failure messages: whether the proxy process is gone (a crash makes every later test fail). */
function proxyState(): string {
  const c = proxy.child;
  if (c.exitCode === null && c.signalCode === null) return '';
  return ` (the proxy exited: code ${c.exitCode}, signal ${c.signalCode}; last logs:\n${proxy.logs.slice(-20).join('\n')})`;
}

/** Waits a little for the proxy to be reaped if it seems to have died (only on failure paths). */
async function settleProxyExit(): Promise<void> {
  await waitFor(() => proxy.child.exitCode !== null || proxy.child.signalCode !== null, { timeoutMs: 1_000 }).catch(() => {});
}

/** rawExchange to the outbound port; when nothing came back, failure messages say whether the proxy died. */
async function send(bytes: Buffer | string, opts: Parameters<typeof rawExchange>[2] = {}): Promise<RawExchangeResult> {
  let r: RawExchangeResult;
  try {
    r = await rawExchange(outbound, bytes, opts);
  } catch (e) {
    await settleProxyExit();
    throw new Error(`${(e as Error).message}${proxyState()}`);
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

/** A well-formed request through the proxy, answered by the backend: everything sent before it has been handled. */
async function barrier(tag: string): Promise<RecordedRequest> {
  const path = `/framing/barrier-${tag}`;
  const r = await send(`GET ${path} HTTP/1.1\r\nHost: sink\r\n\r\n`, { until: isCompleteResponse });
  assert.equal(parseResponse(r.response)?.status, 200, `barrier request: ${show(r.response)}`);
  const req = backend.requests.find((q) => q.target.includes(path));
  assert.ok(req, 'the barrier request did not reach the backend');
  return req;
}

describe('malformed request heads are refused before any byte is forwarded', () => {
  const entries = corpus.filter((e) => e.stage === 'head');
  for (const e of entries) {
    test(e.name, async () => {
      const r = await send(e.bytes);
      assertBadRequest(r);
      const got = backend.received().toString('latin1');
      assert.ok(!got.includes(e.marker), `the backend received the refused request: ${JSON.stringify(got)}`);
      if (e.smuggled) assert.ok(!got.includes(e.smuggled), `the backend received the hidden request: ${JSON.stringify(got)}`);
    });
  }

  test('the backend received nothing at all of these requests', async () => {
    assert.equal(backend.received().length, 0, `the backend received ${show(backend.received())}`);
    // Anything forwarded late would have been sent before this request's answer came back.
    const canary = await barrier('heads');
    assert.deepEqual(
      backend.requests.map((q) => q.target),
      [canary.target],
      'the backend saw requests other than the barrier',
    );
    assert.equal(backend.received().length, canary.raw.length, `the backend received more than the barrier: ${show(backend.received())}`);
    backend.reset();
  });
});

describe('bad chunked framing is refused, and nothing behind it is forwarded', () => {
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
      const r = await send(e.bytes);
      assertBadRequest(r);
      check(e);
    });
  }

  test('after a barrier, still no complete or hidden request at the backend', async () => {
    await barrier('bodies');
    for (const e of entries) check(e);
    assert.ok(!backend.received().toString('latin1').includes('/smuggled/'), `hidden request at the backend: ${show(backend.received())}`);
    backend.reset();
  });
});

describe('legal requests with bodies pass through', () => {
  for (const l of legalRequests('sink')) {
    test(l.name, async () => {
      const r = await send(l.bytes, { until: isCompleteResponse });
      const res = parseResponse(r.response);
      assert.equal(res?.status, 200, `response: ${show(r.response)}`);
      assert.equal(res.body.toString('latin1'), 'ok');
      const q = backend.requests.find((x) => x.target.includes(l.marker));
      assert.ok(q, `the request did not reach the backend; it got ${show(backend.received())}`);
      assert.equal(q.method, 'POST');
      assert.equal(q.body.toString('latin1'), l.body);
    });
  }
});

describe('an oversized header block gets 431', () => {
  for (const shape of ['one-field', 'many-fields'] as const) {
    test(`100 KiB of header fields (${shape})`, async () => {
      const marker = `/framing/too-large-${shape}`;
      const r = await send(bigHeaderRequest(marker, 100 * 1024, shape, 'sink'), { until: isCompleteResponse });
      assertProxyError(r, 431, 'SKEIN_E_HEADERS_TOO_LARGE');
      assert.ok(!backend.received().toString('latin1').includes(marker), 'the backend received the oversized request');
    });
  }
});
