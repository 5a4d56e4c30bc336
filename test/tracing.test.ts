/**
 * Distributed tracing end to end, against real processes: a real OTLP/HTTP receiver (a node:http
 * server taking POST /v1/traces, OTLP JSON as @opentelemetry/exporter-trace-otlp-http sends it),
 * a control plane, real apps, and `skein proxy` processes: the caller's proxy (an outbound
 * listener for the workload "client") and the callee's proxy (an inbound listener in front of
 * the app of "web"), each exporting its spans with `--trace-otlp`. Checks that a W3C or B3
 * context is continued (one trace id, outbound hop -> attempt -> inbound hop -> attempt -> app),
 * that a request without one starts a trace, that a retry is a second attempt span under the same
 * hop, that tracing is off by default (headers untouched, nothing exported), that bad flags are
 * refused, that a collector that is down breaks no request (and is reported in the log), and
 * that `skein up --trace-otlp` traces too.
 *
 * The proxies export in batches (every 300 ms here, through OTEL_BSP_SCHEDULE_DELAY; 5 s by
 * default), so the tests poll the receiver with a deadline.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { api, closedPort, skein, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { recordingBackend, registerInstance, startProxy, waitForProxyReady, type ProxyProcess, type RecordingBackend } from './proxy-helpers.js';
import { startUp } from './mesh-helpers.js';

// The proxies started here export every 300 ms instead of every 5 s (the SDKs' own variable).
process.env['OTEL_BSP_SCHEDULE_DELAY'] = '300';

// ---------------------------------------------------------------------------------------------
// An OTLP/HTTP receiver
// ---------------------------------------------------------------------------------------------

type AttrValue = string | number | boolean;

/** One exported span, flattened: ids in lowercase hex, attributes and resource as plain maps. */
interface ExportedSpan {
  traceId: string;
  spanId: string;
  /** '' for a root span. */
  parentSpanId: string;
  name: string;
  /** OTLP SpanKind: 1 INTERNAL, 2 SERVER, 3 CLIENT. */
  kind: number;
  attrs: Record<string, AttrValue>;
  /** OTLP status code: 0 UNSET, 1 OK, 2 ERROR. */
  status: { code: number; message: string };
  resource: Record<string, AttrValue>;
  scope: string;
}

const KIND = { INTERNAL: 1, SERVER: 2, CLIENT: 3 } as const;
const STATUS_ERROR = 2;

interface Receiver {
  url: string;
  spans: ExportedSpan[];
  /** Every POST it got: path, content type and encoding. */
  posts: Array<{ path: string; contentType: string; encoding: string }>;
  /** Bodies it could not decode (must stay empty). */
  errors: string[];
  close(): Promise<void>;
}

function attrValue(v: any): AttrValue {
  if (v === null || typeof v !== 'object') return String(v);
  if ('stringValue' in v) return String(v.stringValue);
  if ('intValue' in v) return Number(v.intValue);
  if ('doubleValue' in v) return Number(v.doubleValue);
  if ('boolValue' in v) return Boolean(v.boolValue);
  return JSON.stringify(v);
}

function attrMap(list: any): Record<string, AttrValue> {
  const out: Record<string, AttrValue> = {};
  for (const a of (list ?? []) as Array<{ key: string; value: unknown }>) out[a.key] = attrValue(a.value);
  return out;
}

/** OTLP JSON ids are hex strings; a base64 id (protobuf-JSON mapping) is converted too. */
function hexId(v: unknown): string {
  if (typeof v !== 'string' || v === '') return '';
  return /^[0-9a-fA-F]+$/.test(v) && (v.length === 32 || v.length === 16) ? v.toLowerCase() : Buffer.from(v, 'base64').toString('hex');
}

async function startReceiver(): Promise<Receiver> {
  const spans: ExportedSpan[] = [];
  const posts: Receiver['posts'] = [];
  const errors: string[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = (req.url ?? '').split('?')[0] ?? '';
      const contentType = String(req.headers['content-type'] ?? '');
      const encoding = String(req.headers['content-encoding'] ?? '');
      posts.push({ path, contentType, encoding });
      if (req.method !== 'POST' || path !== '/v1/traces') {
        res.writeHead(404).end();
        return;
      }
      try {
        let body = Buffer.concat(chunks);
        if (encoding === 'gzip') body = gunzipSync(body);
        if (!contentType.startsWith('application/json')) throw new Error(`content-type ${contentType}: this receiver decodes OTLP JSON only`);
        const doc = JSON.parse(body.toString('utf8')) as { resourceSpans?: any[] };
        for (const rs of doc.resourceSpans ?? []) {
          const resource = attrMap(rs.resource?.attributes);
          for (const ss of rs.scopeSpans ?? []) {
            for (const s of ss.spans ?? []) {
              spans.push({
                traceId: hexId(s.traceId),
                spanId: hexId(s.spanId),
                parentSpanId: hexId(s.parentSpanId),
                name: String(s.name),
                kind: Number(s.kind),
                attrs: attrMap(s.attributes),
                status: { code: Number(s.status?.code ?? 0), message: String(s.status?.message ?? '') },
                resource,
                scope: String(ss.scope?.name ?? ''),
              });
            }
          }
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      } catch (e) {
        errors.push((e as Error).message);
        res.writeHead(400).end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/v1/traces`,
    spans,
    posts,
    errors,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

// ---------------------------------------------------------------------------------------------
// Apps that record the trace headers they get
// ---------------------------------------------------------------------------------------------

interface SeenRequest {
  app: string;
  url: string;
  /** Every header line, lowercase names, in order (repeats kept). */
  lines: Array<[string, string]>;
}

interface App {
  name: string;
  port: number;
  server: Server;
  seen: SeenRequest[];
}

function linesOf(req: IncomingMessage): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) out.push([req.rawHeaders[i]!.toLowerCase(), req.rawHeaders[i + 1]!]);
  return out;
}

/**
 * An app answering 200 `{"app": name}`. `failFirst`: shared by the apps of one service; the
 * first request with a given x-test-id (whichever app gets it) is answered 503.
 */
async function startApp(name: string, failFirst?: Set<string>): Promise<App> {
  const seen: SeenRequest[] = [];
  const server = createServer((req, res) => {
    seen.push({ app: name, url: req.url ?? '', lines: linesOf(req) });
    req.resume();
    req.on('end', () => {
      const id = String(req.headers['x-test-id'] ?? '');
      if (failFirst !== undefined && id !== '' && !failFirst.has(id)) {
        failFirst.add(id);
        res.writeHead(503, { 'content-type': 'text/plain' }).end('try again');
        return;
      }
      const body = JSON.stringify({ app: name });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return { name, port: (server.address() as AddressInfo).port, server, seen };
}

function closeServer(s: Server | undefined): Promise<void> {
  if (s === undefined) return Promise.resolve();
  return new Promise<void>((resolve) => {
    s.closeAllConnections();
    s.close(() => resolve());
  });
}

/** The values of header `name` in a recorded request. */
function values(r: SeenRequest, name: string): string[] {
  return r.lines.filter(([n]) => n === name).map(([, v]) => v);
}

/** The single value of header `name` (asserts there is exactly one). */
function one(r: SeenRequest, name: string): string {
  const v = values(r, name);
  assert.equal(v.length, 1, `${r.app} got ${v.length} ${name} header(s): ${JSON.stringify(v)}`);
  return v[0]!;
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/** One request to `port` with Host `service`; header values may be arrays (sent as repeated lines). */
function call(port: number, service: string, path: string, headers: Record<string, string | string[]> = {}): Promise<{ status: number; text: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'GET', path, headers: { host: service, ...headers }, agent: false, timeout: 15_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString(), headers: res.headers }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 15 s')));
    req.on('error', reject);
    req.end();
  });
}

const hex = (bytes: number) => randomBytes(bytes).toString('hex');
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** A parsed traceparent the proxy sent (asserts the format). */
function tp(value: string): { traceId: string; spanId: string; flags: string } {
  const m = TRACEPARENT.exec(value);
  assert.ok(m, `a well-formed version-00 traceparent: ${JSON.stringify(value)}`);
  assert.notEqual(m[1], '0'.repeat(32));
  assert.notEqual(m[2], '0'.repeat(16));
  return { traceId: m[1]!, spanId: m[2]!, flags: m[3]! };
}

// ---------------------------------------------------------------------------------------------
// The mesh under test
// ---------------------------------------------------------------------------------------------

let receiver: Receiver;
let cp: ControlProcess;
let webApp: App;
let flakyA: App;
let flakyB: App;
let caller: ProxyProcess;
let callee: ProxyProcess;
let outPort: number;
let inPort: number;
const cleanups: Array<() => unknown> = [];

const CALLER_ID = 'trace-caller';
const CALLEE_ID = 'trace-callee';

before(async () => {
  receiver = await startReceiver();
  cp = await startControl({ dataDir: 'none' });
  webApp = await startApp('web-1');
  const failed = new Set<string>();
  flakyA = await startApp('flaky-a', failed);
  flakyB = await startApp('flaky-b', failed);
  callee = await startProxy({
    control: cp.http,
    workloads: [`name=web-1,service=web,inbound=127.0.0.1:0,app=127.0.0.1:${webApp.port}`],
    args: ['--id', CALLEE_ID, '--trace-otlp', receiver.url],
  });
  caller = await startProxy({ control: cp.http, workloads: ['name=client,outbound=127.0.0.1:0'], args: ['--id', CALLER_ID, '--trace-otlp', receiver.url, '--trace-sample', '1'] });
  outPort = caller.workload('client').outbound!.port;
  inPort = callee.workload('web-1').inbound!.port;
  // The service (with a named route) before its instances: a proxy that lists them has the route.
  const put = await api(cp.http, 'PUT', '/v1/services/web', { routes: [{ name: 'hello', match: { pathPrefix: '/hello' } }] });
  assert.ok(put.status === 200 || put.status === 201, `PUT /v1/services/web: ${put.status} ${JSON.stringify(put.body)}`);
  await registerInstance(cp.http, 'web', 'web-1', inPort);
  await registerInstance(cp.http, 'flaky', 'flaky-a', flakyA.port);
  await registerInstance(cp.http, 'flaky', 'flaky-b', flakyB.port);
  await waitForProxyReady(caller);
  await waitForProxyReady(callee);
  await waitFor(async () => (await call(outPort, 'web', '/hello/warm')).status === 200, { what: 'web reachable through both proxies' });
  await waitFor(async () => (await call(outPort, 'flaky', '/warm')).status === 200, { what: 'both flaky endpoints known to the caller proxy', timeoutMs: 15_000 });
  await waitFor(
    async () => {
      const r = await api(caller.admin, 'GET', '/debug/endpoints');
      return JSON.stringify(r.body).includes('flaky-a') && JSON.stringify(r.body).includes('flaky-b');
    },
    { what: 'flaky-a and flaky-b in the caller proxy /debug/endpoints' },
  );
});

after(async () => {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
  await caller?.stop();
  await callee?.stop();
  await cp?.stop();
  await closeServer(webApp?.server);
  await closeServer(flakyA?.server);
  await closeServer(flakyB?.server);
  await receiver?.close();
});

/** The spans of trace `traceId` exported so far. */
const spansOf = (traceId: string) => receiver.spans.filter((s) => s.traceId === traceId);

/** Polls the receiver until `pred` holds for the trace's spans (the proxies export in batches). */
async function waitForSpans(traceId: string, pred: (spans: ExportedSpan[]) => boolean, what: string): Promise<ExportedSpan[]> {
  return waitFor<ExportedSpan[] | null>(
    () => {
      const s = spansOf(traceId);
      return pred(s) ? s : null;
    },
    { timeoutMs: 25_000, intervalMs: 100, what: `${what} (trace ${traceId}; has ${JSON.stringify(spansOf(traceId).map((s) => `${s.name}/${s.kind}`))}; decode errors ${JSON.stringify(receiver.errors)})` },
  ) as Promise<ExportedSpan[]>;
}

/** The four spans of one request through both proxies, each checked to be the only one of its kind. */
interface Chain {
  outHop: ExportedSpan;
  outAttempt: ExportedSpan;
  inHop: ExportedSpan;
  inAttempt: ExportedSpan;
}

const isHop = (s: ExportedSpan, dir: 'inbound' | 'outbound') => s.attrs['skein.direction'] === dir;
const isAttempt = (s: ExportedSpan) => s.kind === KIND.CLIENT;

/** Waits for the four spans of a request to "web" and checks the links between them. */
async function chainOf(traceId: string): Promise<Chain> {
  const spans = await waitForSpans(traceId, (s) => s.length >= 4 && s.some((x) => isHop(x, 'inbound')) && s.some((x) => isHop(x, 'outbound')), 'outbound hop, attempt, inbound hop and attempt');
  assert.equal(spans.length, 4, `four spans: ${JSON.stringify(spans.map((s) => s.name))}`);
  const outHop = spans.find((s) => isHop(s, 'outbound'))!;
  const inHop = spans.find((s) => isHop(s, 'inbound'))!;
  const outAttempt = spans.find((s) => isAttempt(s) && s.parentSpanId === outHop.spanId);
  const inAttempt = spans.find((s) => isAttempt(s) && s.parentSpanId === inHop.spanId);
  assert.ok(outAttempt, 'an attempt span whose parent is the outbound hop');
  assert.ok(inAttempt, 'an attempt span whose parent is the inbound hop');
  assert.equal(inHop.parentSpanId, outAttempt.spanId, 'the inbound hop is a child of the outbound attempt (its context went upstream)');
  assert.equal(new Set(spans.map((s) => s.spanId)).size, 4, 'four distinct span ids');
  return { outHop, outAttempt, inHop, inAttempt };
}

/** The request the app got for test id `id` (exactly one). */
function seenBy(app: App, id: string): SeenRequest {
  const got = app.seen.filter((r) => r.lines.some(([n, v]) => n === 'x-test-id' && v === id));
  assert.equal(got.length, 1, `${app.name} got ${got.length} request(s) with x-test-id ${id}`);
  return got[0]!;
}

// ---------------------------------------------------------------------------------------------
// 1. W3C trace context
// ---------------------------------------------------------------------------------------------

describe('1. W3C traceparent', () => {
  test('the trace is continued: outbound hop -> attempt -> inbound hop -> attempt -> app, one trace id, with service, route and status', async () => {
    const traceId = hex(16);
    const parent = hex(8);
    const r = await call(outPort, 'web', '/hello/world?token=secret', { traceparent: `00-${traceId}-${parent}-01`, tracestate: 'vendor=abc,other=1', 'x-test-id': 'w3c-1' });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(JSON.parse(r.text), { app: 'web-1' });

    const { outHop, outAttempt, inHop, inAttempt } = await chainOf(traceId);
    // The links: the outbound hop continues the caller's span.
    assert.equal(outHop.parentSpanId, parent, "the outbound hop's parent is the caller's span from traceparent");
    assert.equal(outAttempt.parentSpanId, outHop.spanId);
    assert.equal(inHop.parentSpanId, outAttempt.spanId);
    assert.equal(inAttempt.parentSpanId, inHop.spanId);

    // Kinds and names.
    assert.equal(outHop.kind, KIND.INTERNAL, 'outbound hop: INTERNAL');
    assert.equal(outAttempt.kind, KIND.CLIENT, 'attempt: CLIENT');
    assert.equal(inHop.kind, KIND.SERVER, 'inbound hop: SERVER');
    assert.equal(inAttempt.kind, KIND.CLIENT);
    assert.equal(outHop.name, 'GET web');
    assert.equal(inHop.name, 'GET web');
    assert.equal(outAttempt.name, 'GET web attempt');
    assert.equal(inAttempt.name, 'GET web attempt');

    // Hop attributes: service, route, status, path without the query.
    for (const [hop, dir, workload] of [[outHop, 'outbound', 'client'], [inHop, 'inbound', 'web-1']] as const) {
      assert.equal(hop.attrs['skein.direction'], dir);
      assert.equal(hop.attrs['skein.service'], 'web', `${dir} hop: skein.service`);
      assert.equal(hop.attrs['skein.route'], 'hello', `${dir} hop: skein.route is the matched route`);
      assert.equal(hop.attrs['skein.workload'], workload, `${dir} hop: skein.workload`);
      assert.equal(hop.attrs['http.request.method'], 'GET');
      assert.equal(hop.attrs['http.response.status_code'], 200, `${dir} hop: status code`);
      assert.equal(hop.attrs['url.path'], '/hello/world', `${dir} hop: the path without its query string`);
      assert.ok(!JSON.stringify(hop.attrs).includes('secret'), 'the query string is in no attribute');
      assert.notEqual(hop.status.code, STATUS_ERROR);
    }
    assert.equal(outHop.attrs['skein.caller'], 'client', 'outbound hop: the calling service');
    assert.equal(inHop.attrs['skein.caller'], 'client', "inbound hop: the caller named by the caller's proxy");

    // Attempt attributes: the endpoint tried.
    assert.equal(outAttempt.attrs['skein.attempt'], 1);
    assert.equal(outAttempt.attrs['skein.service'], 'web');
    assert.equal(outAttempt.attrs['skein.endpoint'], 'web-1');
    assert.equal(outAttempt.attrs['server.address'], '127.0.0.1');
    assert.equal(outAttempt.attrs['server.port'], inPort, "the outbound attempt went to the callee's inbound listener");
    assert.equal(outAttempt.attrs['http.response.status_code'], 200);
    assert.equal(inAttempt.attrs['server.port'], webApp.port, 'the inbound attempt went to the app');
    assert.equal(inAttempt.attrs['http.response.status_code'], 200);

    // Who exported what: each proxy under service.name skein-proxy, its --id as the instance id.
    for (const s of [outHop, outAttempt]) assert.deepEqual([s.resource['service.name'], s.resource['service.instance.id']], ['skein-proxy', CALLER_ID]);
    for (const s of [inHop, inAttempt]) assert.deepEqual([s.resource['service.name'], s.resource['service.instance.id']], ['skein-proxy', CALLEE_ID]);

    // The app got one traceparent: same trace, its parent the callee's attempt span, sampled.
    const seen = seenBy(webApp, 'w3c-1');
    const got = tp(one(seen, 'traceparent'));
    assert.equal(got.traceId, traceId, 'the app sees the same trace id');
    assert.equal(got.spanId, inAttempt.spanId, "the app's parent span is the last span before it (the inbound proxy's attempt)");
    assert.equal(got.flags, '01', 'sampled');
    assert.equal(one(seen, 'tracestate'), 'vendor=abc,other=1', 'a valid tracestate is passed on unchanged');
    assert.deepEqual(values(seen, 'b3'), [], 'no b3 added to a W3C-only request');
    assert.deepEqual(values(seen, 'x-b3-traceid'), []);
  });

  test('the export is OTLP JSON, POSTed to the URL given', async () => {
    await waitFor(() => receiver.posts.length > 0, { timeoutMs: 25_000, what: 'an export' });
    for (const p of receiver.posts) {
      assert.equal(p.path, '/v1/traces');
      assert.match(p.contentType, /^application\/json/);
    }
    assert.deepEqual(receiver.errors, [], 'every export decoded');
    assert.ok(receiver.spans.every((s) => s.scope === 'skein-proxy'), 'instrumentation scope skein-proxy');
  });

  test('an unsampled traceparent (flags 00) is propagated with the same trace id and flags 00, and no span is exported', async () => {
    const unsampled = hex(16);
    const r1 = await call(outPort, 'web', '/hello/quiet', { traceparent: `00-${unsampled}-${hex(8)}-00`, 'x-test-id': 'w3c-unsampled' });
    assert.equal(r1.status, 200, r1.text);
    const got = tp(one(seenBy(webApp, 'w3c-unsampled'), 'traceparent'));
    assert.equal(got.traceId, unsampled);
    assert.equal(got.flags, '00', 'the caller decided not to sample: the decision goes on');
    // A sampled request after it: once its spans (from both proxies) are in, the unsampled one's would be too.
    const marker = hex(16);
    const r2 = await call(outPort, 'web', '/hello/marker', { traceparent: `00-${marker}-${hex(8)}-01`, 'x-test-id': 'w3c-marker' });
    assert.equal(r2.status, 200, r2.text);
    await chainOf(marker);
    assert.deepEqual(spansOf(unsampled), [], 'nothing exported for the unsampled trace');
  });

  test('a malformed traceparent, or two of them, never fails the request: a new trace starts', async () => {
    const bad = hex(16);
    const cases: Array<[string, Record<string, string | string[]>]> = [
      ['uppercase hex', { traceparent: `00-${bad.toUpperCase()}-${hex(8)}-01` }],
      ['an all-zero span id', { traceparent: `00-${bad}-${'0'.repeat(16)}-01` }],
      ['two traceparent headers', { traceparent: [`00-${bad}-${hex(8)}-01`, `00-${hex(16)}-${hex(8)}-01`] }],
    ];
    for (const [name, headers] of cases) {
      const id = `w3c-bad-${name.replace(/\W+/g, '-')}`;
      const r = await call(outPort, 'web', '/hello/bad', { ...headers, 'x-test-id': id });
      assert.equal(r.status, 200, `${name}: ${r.text}`);
      const got = tp(one(seenBy(webApp, id), 'traceparent'));
      assert.notEqual(got.traceId, bad, `${name}: not continued`);
      const { outHop } = await chainOf(got.traceId);
      assert.equal(outHop.parentSpanId, '', `${name}: the outbound hop is the root of a new trace`);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 2. B3
// ---------------------------------------------------------------------------------------------

describe('2. B3', () => {
  test('a single b3 header continues its trace; the app gets b3 and traceparent for the same trace', async () => {
    const traceId = hex(16);
    const parent = hex(8);
    const r = await call(outPort, 'web', '/hello/b3', { b3: `${traceId}-${parent}-1`, 'x-test-id': 'b3-single' });
    assert.equal(r.status, 200, r.text);
    const { outHop, inHop, inAttempt } = await chainOf(traceId);
    assert.equal(outHop.parentSpanId, parent, "the outbound hop's parent is the b3 span id");
    const seen = seenBy(webApp, 'b3-single');
    assert.equal(one(seen, 'b3'), `${traceId}-${inAttempt.spanId}-1-${inHop.spanId}`, 'b3: trace, the last attempt span, sampled, its parent (the hop)');
    const got = tp(one(seen, 'traceparent'));
    assert.deepEqual([got.traceId, got.spanId, got.flags], [traceId, inAttempt.spanId, '01']);
    assert.deepEqual(values(seen, 'x-b3-traceid'), [], 'no multi-header B3 added to a single-header request');
  });

  test('x-b3-* multi headers (64-bit trace id) continue the trace; the app gets them back with 64-bit ids', async () => {
    const trace64 = hex(8);
    const parent = hex(8);
    const r = await call(outPort, 'web', '/hello/b3multi', { 'x-b3-traceid': trace64, 'x-b3-spanid': parent, 'x-b3-sampled': '1', 'x-test-id': 'b3-multi' });
    assert.equal(r.status, 200, r.text);
    const traceId = '0'.repeat(16) + trace64;
    const { outHop, inHop, inAttempt } = await chainOf(traceId);
    assert.equal(outHop.parentSpanId, parent, "the outbound hop's parent is x-b3-spanid");
    const seen = seenBy(webApp, 'b3-multi');
    assert.equal(one(seen, 'x-b3-traceid'), trace64, 'a 64-bit trace id goes on as 64 bits');
    assert.equal(one(seen, 'x-b3-spanid'), inAttempt.spanId);
    assert.equal(one(seen, 'x-b3-parentspanid'), inHop.spanId);
    assert.equal(one(seen, 'x-b3-sampled'), '1');
    assert.equal(tp(one(seen, 'traceparent')).traceId, traceId, 'traceparent: the 64-bit id zero-padded to 128 bits');
    assert.deepEqual(values(seen, 'b3'), [], 'no single b3 added to a multi-header request');
  });
});

// ---------------------------------------------------------------------------------------------
// 3. No trace headers
// ---------------------------------------------------------------------------------------------

describe('3. a request without trace headers', () => {
  test('starts a new trace: the outbound hop is a root span, and the app sees a valid sampled traceparent', async () => {
    const r = await call(outPort, 'web', '/hello/fresh', { 'x-test-id': 'fresh' });
    assert.equal(r.status, 200, r.text);
    const seen = seenBy(webApp, 'fresh');
    const got = tp(one(seen, 'traceparent'));
    assert.equal(got.flags, '01', 'sampled (--trace-sample 1)');
    assert.deepEqual(values(seen, 'tracestate'), []);
    assert.deepEqual(values(seen, 'b3'), [], 'no B3 headers when the request had none');
    const { outHop, inAttempt } = await chainOf(got.traceId);
    assert.equal(outHop.parentSpanId, '', 'the outbound hop is the root');
    assert.equal(got.spanId, inAttempt.spanId);
  });
});

// ---------------------------------------------------------------------------------------------
// 4. Retries
// ---------------------------------------------------------------------------------------------

describe('4. retries', () => {
  test('a 503 retried on the other endpoint: two attempt spans under one outbound hop, the failed one an error', async () => {
    const traceId = hex(16);
    const r = await call(outPort, 'flaky', '/retry', { traceparent: `00-${traceId}-${hex(8)}-01`, 'x-test-id': 'retry-1' });
    assert.equal(r.status, 200, `the retry answered: ${r.text}`);
    const spans = await waitForSpans(traceId, (s) => s.length >= 3, 'the hop and two attempts');
    assert.equal(spans.length, 3, `one hop, two attempts: ${JSON.stringify(spans.map((s) => s.name))}`);
    const hop = spans.find((s) => isHop(s, 'outbound'));
    assert.ok(hop, 'an outbound hop');
    const attempts = spans.filter(isAttempt).sort((a, b) => Number(a.attrs['skein.attempt']) - Number(b.attrs['skein.attempt']));
    assert.equal(attempts.length, 2);
    for (const a of attempts) assert.equal(a.parentSpanId, hop.spanId, 'both attempts are children of the one hop (siblings)');
    const [first, second] = attempts as [ExportedSpan, ExportedSpan];
    assert.deepEqual([first.attrs['skein.attempt'], second.attrs['skein.attempt']], [1, 2]);
    assert.equal(first.attrs['http.response.status_code'], 503);
    assert.equal(first.status.code, STATUS_ERROR, 'the failed attempt has status ERROR');
    assert.equal(first.attrs['error.type'], '503');
    assert.equal(second.attrs['http.response.status_code'], 200);
    assert.notEqual(second.status.code, STATUS_ERROR);
    assert.notEqual(first.attrs['skein.endpoint'], second.attrs['skein.endpoint'], 'the retry went to the other endpoint');
    assert.equal(hop.attrs['http.response.status_code'], 200, 'the hop ends with the answer the client got');
    assert.notEqual(hop.status.code, STATUS_ERROR);
    assert.equal(hop.attrs['skein.service'], 'flaky');
    assert.equal(hop.attrs['skein.route'], 'default');

    // Each app saw the context of the attempt that reached it.
    const apps = [flakyA, flakyB];
    const byEndpoint = (a: ExportedSpan) => apps.find((x) => x.name === a.attrs['skein.endpoint'])!;
    const firstSaw = tp(one(seenBy(byEndpoint(first), 'retry-1'), 'traceparent'));
    const secondSaw = tp(one(seenBy(byEndpoint(second), 'retry-1'), 'traceparent'));
    assert.deepEqual([firstSaw.traceId, firstSaw.spanId], [traceId, first.spanId], 'the failed try carried attempt 1');
    assert.deepEqual([secondSaw.traceId, secondSaw.spanId], [traceId, second.spanId], 'the retry carried attempt 2, not a copy of attempt 1');
  });
});

// ---------------------------------------------------------------------------------------------
// 5. Off by default
// ---------------------------------------------------------------------------------------------

describe('5. off by default', () => {
  test('a proxy without --trace-otlp forwards traceparent, tracestate, b3 and x-b3-* untouched and exports nothing', async (t) => {
    const backend: RecordingBackend = await recordingBackend();
    t.after(() => backend.close());
    // The standard OTel variables point at the receiver: had the proxy started an exporter, it would be seen.
    const plain = await startProxy({
      control: cp.http,
      workloads: ['name=plain-client,outbound=127.0.0.1:0', `name=plain-1,service=plain,inbound=127.0.0.1:0,app=127.0.0.1:${backend.port}`],
      args: ['--id', 'plain-proxy'],
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url.replace('/v1/traces', ''), OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: receiver.url, OTEL_TRACES_EXPORTER: 'otlp' },
    });
    t.after(() => plain.stop());
    await registerInstance(cp.http, 'plain', 'plain-1', plain.workload('plain-1').inbound!.port);
    await waitForProxyReady(plain);
    const port = plain.workload('plain-client').outbound!.port;
    const traceId = hex(16);
    const sent: Array<[string, string]> = [
      ['traceparent', `00-${traceId}-${hex(8)}-01`],
      ['tracestate', 'vendor=abc'],
      ['b3', `${traceId}-${hex(8)}-1`],
      ['x-b3-traceid', traceId],
      ['x-b3-spanid', hex(8)],
      ['x-b3-parentspanid', hex(8)],
      ['x-b3-sampled', '1'],
    ];
    await waitFor(async () => (await call(port, 'plain', '/p', Object.fromEntries(sent))).status === 200, { what: 'plain reachable through the untraced proxy' });
    const malformed = `00-${traceId.toUpperCase()}-${hex(8)}-01`;
    const r = await call(port, 'plain', '/p2', { traceparent: malformed });
    assert.equal(r.status, 200);
    const reqs = backend.requests;
    assert.ok(reqs.length >= 2, `the backend got the requests: ${reqs.length}`);
    const first = reqs.find((q) => q.target === '/p')!;
    const raw = first.raw.toString('latin1');
    for (const [name, value] of sent) {
      assert.ok(raw.includes(`\r\n${name}: ${value}\r\n`), `${name}: ${value} reached the app as sent:\n${raw}`);
      assert.equal(first.headers[name], value, `exactly one ${name}, unchanged`);
    }
    const second = reqs.find((q) => q.target === '/p2')!;
    assert.equal(second.headers.traceparent, malformed, 'even a malformed traceparent passes through untouched');

    const code = await plain.stop();
    assert.equal(code, 0, 'the untraced proxy stopped cleanly');
    assert.deepEqual(spansOf(traceId), [], 'no span for the trace');
    assert.ok(!receiver.spans.some((s) => s.resource['service.instance.id'] === 'plain-proxy'), 'nothing exported by the untraced proxy');
    assert.ok(!plain.logs.some((l) => /trace export/.test(l)), 'no trace export in its log');
    const ready = plain.logs.map((l) => { try { return JSON.parse(l) as { msg?: string; tracing?: unknown }; } catch { return {}; } }).find((j) => j.msg === 'proxy ready');
    assert.equal(ready?.tracing, null, 'the ready line says tracing is off');
  });
});

// ---------------------------------------------------------------------------------------------
// 6. Bad flags
// ---------------------------------------------------------------------------------------------

describe('6. bad flags are refused', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--trace-otlp', 'notaurl'], /--trace-otlp must be a URL such as http:\/\/127\.0\.0\.1:4318\/v1\/traces, got "notaurl"/],
    [['--trace-otlp', 'ftp://collector/v1/traces'], /--trace-otlp must use http or https/],
    [['--trace-sample', '2'], /--trace-sample must be a number from 0 to 1, got "2"/],
    [['--trace-sample', '-0.5'], /--trace-sample must be a number from 0 to 1/],
    [['--trace-sample', 'lots'], /--trace-sample must be a number from 0 to 1, got "lots"/],
  ];
  for (const [args, message] of cases) {
    test(`skein proxy ${args.join(' ')}`, async () => {
      const r = await skein(['proxy', '--admin', 'off', '--outbound', '127.0.0.1:0', '--trace-otlp', 'http://127.0.0.1:9/v1/traces', ...args], { timeoutMs: 15_000 });
      assert.notEqual(r.code, 0, 'exit code');
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one line: ${r.stderr}`);
      assert.match(lines[0]!, message);
      assert.match(lines[0]!, /SKEIN_E_USAGE/);
      assert.doesNotMatch(r.stdout, /proxy ready/);
    });
  }
  test('a bad OTEL_BSP_SCHEDULE_DELAY is refused by name', async () => {
    const r = await skein(['proxy', '--admin', 'off', '--outbound', '127.0.0.1:0', '--trace-otlp', 'http://127.0.0.1:9/v1/traces'], { timeoutMs: 15_000, env: { ...process.env, OTEL_BSP_SCHEDULE_DELAY: 'soon' } });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /OTEL_BSP_SCHEDULE_DELAY must be a whole number of milliseconds from 1 to 999999, got "soon".*SKEIN_E_USAGE/);
  });
});

// ---------------------------------------------------------------------------------------------
// 7. A collector that is down
// ---------------------------------------------------------------------------------------------

describe('7. a collector that is down', () => {
  test('requests still succeed (traced, headers written), a rate-limited warning is logged, and the proxy stops cleanly', async (t) => {
    const dead = await closedPort();
    const deadUrl = `http://127.0.0.1:${dead}/v1/traces`;
    const p = await startProxy({ control: cp.http, workloads: ['name=down-client,outbound=127.0.0.1:0'], args: ['--id', 'down-proxy', '--trace-otlp', deadUrl] });
    t.after(() => p.stop());
    await waitForProxyReady(p);
    const port = p.workload('down-client').outbound!.port;
    await waitFor(async () => (await call(port, 'web', '/hello/down-warm')).status === 200, { what: 'web through the proxy whose collector is down' });
    const warned = () => p.logs.filter((l) => l.includes('trace export failed'));
    // Keep traffic going until the first failed export is reported (the first export is due one
    // batch delay after the first span); every request must succeed meanwhile.
    const deadline = Date.now() + 30_000;
    let n = 0;
    while (warned().length === 0) {
      assert.ok(Date.now() < deadline, `no "trace export failed" warning within 30 s; logs:\n${p.logs.slice(-10).join('\n')}`);
      const r = await call(port, 'web', `/hello/down-${n}`, { 'x-test-id': `down-${n}` });
      assert.equal(r.status, 200, `request ${n} while the collector is down: ${r.text}`);
      assert.equal(tp(one(seenBy(webApp, `down-${n}`), 'traceparent')).flags, '01', 'still traced: a context is written');
      n++;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    assert.ok(n > 0, 'requests were made while the collector was down');
    const w = JSON.parse(warned()[0]!) as { level: number; endpoint: string; err: string; msg: string };
    assert.equal(w.level, 40, 'a warning');
    assert.equal(w.endpoint, deadUrl, 'it names the collector URL');
    assert.equal(typeof w.err, 'string');
    // Traffic after the failure is still fine.
    for (let i = 0; i < 5; i++) {
      const r = await call(port, 'web', `/hello/after-${i}`);
      assert.equal(r.status, 200, `after the failed export: ${r.text}`);
    }
    const code = await p.stop();
    assert.equal(code, 0, 'SIGTERM: it stops (the last export gives up after its timeout) and exits 0');
    assert.equal(warned().length, 1, `one warning at most a minute, however many exports failed:\n${warned().join('\n')}`);
  });
});

// ---------------------------------------------------------------------------------------------
// 8. skein up
// ---------------------------------------------------------------------------------------------

describe('8. skein up --trace-otlp', () => {
  const ECHO = `import http from 'node:http';
const s = http.createServer((req, res) => {
  const body = JSON.stringify({ pid: process.pid, traceparent: req.headers.traceparent ?? null });
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});
s.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => s.close(() => process.exit(0)));
`;
  const mesh = (dir: string) => `apiVersion: skein/v1
kind: Mesh
name: traced
services:
  echo:
    command: ${JSON.stringify(process.execPath)}
    args: [${JSON.stringify(join(dir, 'echo.mjs'))}]
    replicas: 1
    readiness: { type: http, path: /health, interval: 100ms }
`;

  test('a bad --trace-otlp or --trace-sample is refused before anything starts', async (t) => {
    const dir = await tempDir('skein-trace-up-');
    t.after(() => dir.remove());
    await writeFile(join(dir.path, 'echo.mjs'), ECHO);
    await writeFile(join(dir.path, 'mesh.yaml'), mesh(dir.path));
    for (const [args, message] of [
      [['--trace-otlp', 'notaurl'], /--trace-otlp must be a URL/],
      [['--trace-sample', '2'], /--trace-sample must be a number from 0 to 1/],
    ] as Array<[string[], RegExp]>) {
      const r = await skein(['up', join(dir.path, 'mesh.yaml'), '--http', '127.0.0.1:0', '--dns', 'off', '--outbound', 'off', '--admin', 'off', ...args], { timeoutMs: 20_000 });
      assert.notEqual(r.code, 0, `${args.join(' ')}: exit code`);
      assert.match(r.stderr, message);
      assert.match(r.stderr, /SKEIN_E_USAGE/);
      assert.doesNotMatch(r.stdout, /mesh is up/);
    }
  });

  test('the proxy of skein up exports the hops and attempts of a request to a service', async (t) => {
    const dir = await tempDir('skein-trace-up-');
    t.after(() => dir.remove());
    await writeFile(join(dir.path, 'echo.mjs'), ECHO);
    await writeFile(join(dir.path, 'mesh.yaml'), mesh(dir.path));
    const up = await startUp(join(dir.path, 'mesh.yaml'), ['--http', '127.0.0.1:0', '--dns', 'off', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--trace-otlp', receiver.url, '--trace-sample', '1'], { expect: ['outbound'] });
    t.after(() => up.stop());
    const outbound = up.outbound.split(':').at(-1);
    const traceId = hex(16);
    const parent = hex(8);
    const r = await call(Number(outbound), 'echo', '/x', { traceparent: `00-${traceId}-${parent}-01` });
    assert.equal(r.status, 200, r.text);
    const body = JSON.parse(r.text) as { pid: number; traceparent: string };
    up.pids.add(body.pid); // stopped with skein up (its process group killed only if skein up could not)
    const seen = tp(body.traceparent);
    assert.equal(seen.traceId, traceId, 'the replica sees the trace continued');
    const { outHop, outAttempt, inHop, inAttempt } = await chainOf(traceId);
    assert.equal(outHop.parentSpanId, parent);
    assert.equal(seen.spanId, inAttempt.spanId);
    assert.equal(outHop.attrs['skein.service'], 'echo');
    assert.equal(inHop.attrs['skein.service'], 'echo');
    for (const s of [outHop, outAttempt, inHop, inAttempt]) {
      assert.equal(s.resource['service.name'], 'skein-proxy');
      assert.match(String(s.resource['service.instance.id']), /^skein-up-\d+$/, 'the proxy of skein up');
    }
  });
});
