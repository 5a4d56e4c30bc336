import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { seededRandom } from '../core/seeded-random.js';
import {
  createProxyTracer,
  formatB3,
  formatB3Multi,
  formatTraceparent,
  parseB3,
  parseB3Multi,
  parseTraceparent,
  parseTracestate,
  resolveIncoming,
  TRACESTATE_MAX_MEMBERS,
  type OtlpTracer,
  type ProxyTracerOptions,
} from './trace.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN = '00f067aa0ba902b7';
const TP = `00-${TRACE}-${SPAN}-01`;
const ATTRS = { workload: 'web-1', service: 'checkout', route: 'default', method: 'GET', path: '/cart/42' };
const EP = { id: 'checkout-7', address: '127.0.0.1', port: 8081 };

// ---------------------------------------------------------------------------------------------
// traceparent
// ---------------------------------------------------------------------------------------------

test('traceparent: a valid version-00 value parses; flags keep all bits; OWS around it is allowed', () => {
  assert.deepEqual(parseTraceparent(TP), { traceId: TRACE, spanId: SPAN, traceFlags: 1 });
  assert.deepEqual(parseTraceparent(`00-${TRACE}-${SPAN}-00`), { traceId: TRACE, spanId: SPAN, traceFlags: 0 });
  assert.deepEqual(parseTraceparent(`00-${TRACE}-${SPAN}-09`), { traceId: TRACE, spanId: SPAN, traceFlags: 9 });
  assert.deepEqual(parseTraceparent(` \t${TP}\t `), { traceId: TRACE, spanId: SPAN, traceFlags: 1 });
});

test('traceparent: malformed values give null (a new trace), never an exception', () => {
  const bad = [
    undefined,
    '',
    ' ',
    'garbage',
    TP.slice(0, 54), // one short
    `${TP}0`, // version 00 must be exactly 55
    `${TP}-`, // ... even with a dash after
    TP.toUpperCase(),
    `00-${TRACE.toUpperCase()}-${SPAN}-01`,
    `00-${TRACE}-${SPAN.toUpperCase()}-01`,
    `00-${TRACE}-${SPAN}-0A`, // uppercase flags
    `0A-${TRACE}-${SPAN}-01`, // uppercase version
    `ff-${TRACE}-${SPAN}-01`, // version ff is invalid
    `00-${'0'.repeat(32)}-${SPAN}-01`, // all-zero trace id
    `00-${TRACE}-${'0'.repeat(16)}-01`, // all-zero span id
    `00_${TRACE}_${SPAN}_01`,
    `00-${TRACE}-${SPAN}-0x`,
    `0g-${TRACE}-${SPAN}-01`,
    `00-${TRACE.slice(0, 31)}g-${SPAN}-01`,
    `00-${TRACE}-${SPAN.slice(0, 15)}z-01`,
    `00-${TRACE}0-${SPAN.slice(1)}-01`, // dash in the wrong place
    `00 ${TRACE} ${SPAN} 01`,
    `00-${TRACE}-${SPAN}-01 ,00-${TRACE}-${SPAN}-01`, // two headers joined
    `0-${TRACE}-${SPAN}-011`,
  ];
  for (const v of bad) assert.equal(parseTraceparent(v), null, String(v));
});

test('traceparent: a higher version is parsed by the version-00 layout, extra fields after a dash are ignored', () => {
  assert.deepEqual(parseTraceparent(`01-${TRACE}-${SPAN}-01`), { traceId: TRACE, spanId: SPAN, traceFlags: 1 });
  assert.deepEqual(parseTraceparent(`cc-${TRACE}-${SPAN}-01-what-the-future-holds`), { traceId: TRACE, spanId: SPAN, traceFlags: 1 });
  assert.equal(parseTraceparent(`cc-${TRACE}-${SPAN}-01.future`), null, 'the flags must be followed by the end or a dash');
  assert.equal(parseTraceparent(`cc-${TRACE}-${SPAN}-0`), null, 'shorter than 55');
  assert.equal(parseTraceparent(`cc-${'0'.repeat(32)}-${SPAN}-01-x`), null, 'all-zero ids are invalid in any version');
});

test('traceparent: format round-trips, flags zero-padded to two digits', () => {
  assert.equal(formatTraceparent(TRACE, SPAN, 1), TP);
  assert.equal(formatTraceparent(TRACE, SPAN, 0), `00-${TRACE}-${SPAN}-00`);
  assert.equal(formatTraceparent(TRACE, SPAN, 0xab), `00-${TRACE}-${SPAN}-ab`);
  for (const v of [TP, `00-${TRACE}-${SPAN}-00`, `00-${TRACE}-${SPAN}-ff`]) {
    const p = parseTraceparent(v)!;
    assert.equal(formatTraceparent(p.traceId, p.spanId, p.traceFlags), v);
  }
});

// ---------------------------------------------------------------------------------------------
// tracestate
// ---------------------------------------------------------------------------------------------

test('tracestate: valid lists are normalised (OWS, empty members), multi-tenant keys allowed', () => {
  assert.equal(parseTracestate('congo=t61rcWkgMzE'), 'congo=t61rcWkgMzE');
  assert.equal(parseTracestate(' rojo=00f067aa0ba902b7 ,\t, congo=t61rcWkgMzE '), 'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE');
  assert.equal(parseTracestate('tenant1@vendor=x,0abc@sys-2=y z'), 'tenant1@vendor=x,0abc@sys-2=y z');
  assert.equal(parseTracestate('a_b-c*d/e=v'), 'a_b-c*d/e=v');
  const many = Array.from({ length: TRACESTATE_MAX_MEMBERS }, (_, i) => `k${i}=v${i}`).join(',');
  assert.equal(parseTracestate(many), many);
});

test('tracestate: absent, empty or invalid gives null (not passed on)', () => {
  const bad = [
    undefined,
    '',
    ' , ',
    'Congo=x', // uppercase key
    '1abc=x', // simple keys start with a letter
    'k=', // empty value
    '=v',
    'novalue',
    'k=v=w', // '=' in the value
    'k=v,k=w', // duplicate key
    `k=${'x'.repeat(257)}`,
    `${'k'.repeat(257)}=v`,
    't@Vendor=x',
    't@vendor1234567890=x', // system part at most 14 characters
    'k=caf\u00e9',
    Array.from({ length: TRACESTATE_MAX_MEMBERS + 1 }, (_, i) => `k${i}=v${i}`).join(','),
  ];
  for (const v of bad) assert.equal(parseTracestate(v), null, String(v));
  assert.equal(parseTracestate('k=a\u0001b'), null, 'control characters');
});

// ---------------------------------------------------------------------------------------------
// B3
// ---------------------------------------------------------------------------------------------

test('b3 single: all the forms of the spec parse', () => {
  assert.deepEqual(parseB3(`${TRACE}-${SPAN}-1-${'a'.repeat(16)}`), { traceId: TRACE, spanId: SPAN, parentSpanId: 'a'.repeat(16), sampled: true, debug: false, traceId64: false });
  assert.deepEqual(parseB3(`${TRACE}-${SPAN}-0`), { traceId: TRACE, spanId: SPAN, parentSpanId: null, sampled: false, debug: false, traceId64: false });
  assert.deepEqual(parseB3(`${TRACE}-${SPAN}-d`), { traceId: TRACE, spanId: SPAN, parentSpanId: null, sampled: true, debug: true, traceId64: false });
  assert.deepEqual(parseB3(`${TRACE}-${SPAN}`), { traceId: TRACE, spanId: SPAN, parentSpanId: null, sampled: null, debug: false, traceId64: false });
  assert.deepEqual(parseB3(`a3ce929d0e0e4736-${SPAN}-1`), { traceId: `${'0'.repeat(16)}a3ce929d0e0e4736`, spanId: SPAN, parentSpanId: null, sampled: true, debug: false, traceId64: true });
  assert.deepEqual(parseB3(`${TRACE.toUpperCase()}-${SPAN.toUpperCase()}-1`), { traceId: TRACE, spanId: SPAN, parentSpanId: null, sampled: true, debug: false, traceId64: false });
  assert.deepEqual(parseB3('0'), { traceId: null, spanId: null, parentSpanId: null, sampled: false, debug: false, traceId64: false });
  assert.deepEqual(parseB3(' 1 '), { traceId: null, spanId: null, parentSpanId: null, sampled: true, debug: false, traceId64: false });
  assert.deepEqual(parseB3('d'), { traceId: null, spanId: null, parentSpanId: null, sampled: true, debug: true, traceId64: false });
});

test('b3 single: malformed values give null', () => {
  const bad = [
    undefined,
    '',
    'x',
    '-',
    TRACE,
    `${TRACE}-`,
    `${TRACE}-${SPAN}-`,
    `${TRACE}-${SPAN}-2`,
    `${TRACE}-${SPAN}-true`,
    `${TRACE}-${SPAN}-1-`,
    `${TRACE}-${SPAN}-1-abc`,
    `${TRACE}-${SPAN}-1-${SPAN}-x`,
    `${TRACE.slice(1)}-${SPAN}-1`, // 31 digits
    `${TRACE}0-${SPAN}-1`,
    `${TRACE}-${SPAN}0-1`,
    `${'0'.repeat(32)}-${SPAN}-1`,
    `${'0'.repeat(16)}-${SPAN}-1`,
    `${TRACE}-${'0'.repeat(16)}-1`,
    `${TRACE}-${SPAN}-1-${'0'.repeat(16)}`,
    `${TRACE}-g0f067aa0ba902b7-1`,
  ];
  for (const v of bad) assert.equal(parseB3(v), null, String(v));
});

test('b3 multi: ids of 64 or 128 bits, sampled 1/0/true/false, flags 1 (debug), a bare decision', () => {
  assert.deepEqual(parseB3Multi({ traceId: TRACE, spanId: SPAN, parentSpanId: 'a'.repeat(16), sampled: '1' }), { traceId: TRACE, spanId: SPAN, parentSpanId: 'a'.repeat(16), sampled: true, debug: false, traceId64: false });
  assert.deepEqual(parseB3Multi({ traceId: 'a3ce929d0e0e4736', spanId: SPAN, sampled: 'false' }), { traceId: `${'0'.repeat(16)}a3ce929d0e0e4736`, spanId: SPAN, parentSpanId: null, sampled: false, debug: false, traceId64: true });
  assert.deepEqual(parseB3Multi({ traceId: TRACE, spanId: SPAN, sampled: 'True' }), { traceId: TRACE, spanId: SPAN, parentSpanId: null, sampled: true, debug: false, traceId64: false });
  assert.deepEqual(parseB3Multi({ traceId: TRACE, spanId: SPAN, flags: '1' }), { traceId: TRACE, spanId: SPAN, parentSpanId: null, sampled: true, debug: true, traceId64: false });
  assert.deepEqual(parseB3Multi({ traceId: TRACE, spanId: SPAN }), { traceId: TRACE, spanId: SPAN, parentSpanId: null, sampled: null, debug: false, traceId64: false });
  assert.deepEqual(parseB3Multi({ sampled: '0' }), { traceId: null, spanId: null, parentSpanId: null, sampled: false, debug: false, traceId64: false });
  assert.deepEqual(parseB3Multi({ flags: '1' }), { traceId: null, spanId: null, parentSpanId: null, sampled: true, debug: true, traceId64: false });
});

test('b3 multi: nothing, half a context or a malformed value gives null', () => {
  const bad = [
    {},
    { traceId: TRACE },
    { spanId: SPAN },
    { traceId: TRACE, spanId: SPAN, sampled: 'yes' },
    { traceId: TRACE, spanId: SPAN, sampled: '' },
    { traceId: TRACE, spanId: SPAN, flags: '2' },
    { traceId: TRACE, spanId: SPAN, parentSpanId: 'nope' },
    { traceId: TRACE.slice(2), spanId: SPAN },
    { traceId: TRACE, spanId: `${SPAN}00` },
    { traceId: '0'.repeat(32), spanId: SPAN },
    { traceId: TRACE, spanId: '0'.repeat(16) },
    { parentSpanId: SPAN },
  ];
  for (const h of bad) assert.equal(parseB3Multi(h), null, JSON.stringify(h));
});

test('b3: format round-trips both forms; 64-bit ids go back as 64 bits; debug as d / x-b3-flags', () => {
  for (const v of [`${TRACE}-${SPAN}-1`, `${TRACE}-${SPAN}-0-${'a'.repeat(16)}`, `${TRACE}-${SPAN}-d`, `a3ce929d0e0e4736-${SPAN}-1`]) {
    const c = parseB3(v)!;
    assert.equal(formatB3({ traceId: c.traceId!, spanId: c.spanId!, parentSpanId: c.parentSpanId, sampled: c.sampled!, debug: c.debug, traceId64: c.traceId64 }), v);
  }
  const multi = { 'x-b3-traceid': 'a3ce929d0e0e4736', 'x-b3-spanid': SPAN, 'x-b3-parentspanid': 'a'.repeat(16), 'x-b3-sampled': '0' };
  const m = parseB3Multi({ traceId: multi['x-b3-traceid'], spanId: multi['x-b3-spanid'], parentSpanId: multi['x-b3-parentspanid'], sampled: multi['x-b3-sampled'] })!;
  assert.deepEqual(formatB3Multi({ traceId: m.traceId!, spanId: m.spanId!, parentSpanId: m.parentSpanId, sampled: m.sampled!, traceId64: m.traceId64 }), multi);
  assert.deepEqual(formatB3Multi({ traceId: TRACE, spanId: SPAN, sampled: true, debug: true }), { 'x-b3-traceid': TRACE, 'x-b3-spanid': SPAN, 'x-b3-flags': '1' });
});

test('resolveIncoming: traceparent first, then b3, then x-b3-*; tracestate only with a valid traceparent', () => {
  assert.deepEqual(resolveIncoming({}), { traceId: null, spanId: null, sampled: null, debug: false, tracestate: null, b3: false, b3Multi: false, traceId64: false });
  const other = 'a'.repeat(32);
  const both = resolveIncoming({ traceparent: TP, tracestate: 'k=v', b3: `${other}-${SPAN}-0` });
  assert.deepEqual(both, { traceId: TRACE, spanId: SPAN, sampled: true, debug: false, tracestate: 'k=v', b3: true, b3Multi: false, traceId64: false });
  const fallback = resolveIncoming({ traceparent: 'junk', tracestate: 'k=v', b3: `${other}-${SPAN}-0` });
  assert.deepEqual(fallback, { traceId: other, spanId: SPAN, sampled: false, debug: false, tracestate: null, b3: true, b3Multi: false, traceId64: false });
  const multi = resolveIncoming({ b3: '1', xB3TraceId: other, xB3SpanId: SPAN });
  assert.equal(multi.traceId, other, 'a context in x-b3-* beats a bare decision in b3');
  assert.equal(multi.b3 && multi.b3Multi, true);
  const decision = resolveIncoming({ b3: '0' });
  assert.deepEqual(decision, { traceId: null, spanId: null, sampled: false, debug: false, tracestate: null, b3: true, b3Multi: false, traceId64: false });
  const malformed = resolveIncoming({ traceparent: 'x', b3: 'y', xB3TraceId: 'z' });
  assert.deepEqual(malformed, { traceId: null, spanId: null, sampled: null, debug: false, tracestate: null, b3: true, b3Multi: true, traceId64: false });
  assert.equal(resolveIncoming({ tracestate: 'k=v' }).tracestate, null, 'tracestate without traceparent');
});

test('resolveIncoming: a traceparent with a B3 form of the same trace in 64 bits (what an earlier hop wrote) keeps B3 at 64 bits', () => {
  const short = 'a3ce929d0e0e4736';
  const padded = `${'0'.repeat(16)}${short}`;
  const tpv = `00-${padded}-${SPAN}-01`;
  assert.equal(resolveIncoming({ traceparent: tpv, b3: `${short}-${SPAN}-1` }).traceId64, true, 'single b3');
  assert.equal(resolveIncoming({ traceparent: tpv, xB3TraceId: short, xB3SpanId: SPAN, xB3Sampled: '1' }).traceId64, true, 'x-b3-*');
  assert.equal(resolveIncoming({ traceparent: tpv, b3: `${padded}-${SPAN}-1` }).traceId64, false, 'b3 with the 128-bit form');
  assert.equal(resolveIncoming({ traceparent: tpv, b3: `${'b'.repeat(16)}-${SPAN}-1` }).traceId64, false, 'b3 of another trace');
  assert.equal(resolveIncoming({ traceparent: tpv }).traceId64, false, 'no B3 at all');
  assert.equal(resolveIncoming({ traceparent: TP, b3: `${short}-${SPAN}-1` }).traceId64, false, 'a traceparent of another trace wins, at 128 bits');
});

test('tracer: a 64-bit B3 trace id stays 64 bits through two hops (the second sees the first one\'s traceparent and b3)', async () => {
  await withTracer(async (t) => {
    const short = 'a3ce929d0e0e4736';
    const hop1 = t.hop('outbound', { xB3TraceId: short, xB3SpanId: SPAN, xB3Sampled: '1' }, ATTRS);
    const h1 = lines(hop1.attempt(1, EP).headers);
    assert.equal(h1['x-b3-traceid'], short);
    const hop2 = t.hop('inbound', { traceparent: h1['traceparent'], xB3TraceId: h1['x-b3-traceid'], xB3SpanId: h1['x-b3-spanid'], xB3ParentSpanId: h1['x-b3-parentspanid'], xB3Sampled: h1['x-b3-sampled'] }, ATTRS);
    const h2 = lines(hop2.attempt(1, EP).headers);
    assert.equal(h2['x-b3-traceid'], short, 'the second hop writes the 64-bit id too');
    assert.equal(parseTraceparent(h2['traceparent'])!.traceId, `${'0'.repeat(16)}${short}`);
  });
});

// ---------------------------------------------------------------------------------------------
// The tracer, against a real OTLP/HTTP collector (a node:http server)
// ---------------------------------------------------------------------------------------------

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
  status: { code?: number; message?: string };
  traceState?: string;
  service: unknown;
}

/** A collector: records the spans of every POST /v1/traces (OTLP/HTTP JSON). */
class Collector {
  readonly spans: OtlpSpan[] = [];
  readonly posts: string[] = [];
  readonly server: Server;
  constructor(private readonly answer = true) {
    this.server = createServer((req, res) => this.handle(req, res));
  }
  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1/traces`;
  }
  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let body = Buffer.concat(chunks);
      if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
      this.posts.push(`${req.method} ${req.url} ${req.headers['content-type']}`);
      const doc = JSON.parse(body.toString('utf8')) as { resourceSpans?: Array<{ resource?: { attributes?: Attr[] }; scopeSpans?: Array<{ spans?: Array<Record<string, unknown>> }> }> };
      for (const rs of doc.resourceSpans ?? []) {
        const service = attrs(rs.resource?.attributes)['service.name'];
        for (const ss of rs.scopeSpans ?? []) {
          for (const s of ss.spans ?? []) {
            this.spans.push({ ...(s as unknown as OtlpSpan), attributes: attrs(s['attributes'] as Attr[] | undefined), service });
          }
        }
      }
      if (!this.answer) return; // a black hole: never answers
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  }
  async waitFor(pred: (spans: OtlpSpan[]) => boolean, what: string, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred(this.spans)) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}; have ${JSON.stringify(this.spans.map((s) => s.name))}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
interface Attr {
  key: string;
  value: { stringValue?: string; intValue?: number | string; boolValue?: boolean; doubleValue?: number };
}
function attrs(list: Attr[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const a of list ?? []) {
    const v = a.value;
    out[a.key] = v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : (v.boolValue ?? v.doubleValue));
  }
  return out;
}
const KIND_INTERNAL = 1;
const KIND_SERVER = 2;
const KIND_CLIENT = 3;
const STATUS_ERROR = 2;

/** Header lines as a map (lowercase names). */
/** An attempt's header pairs as a record; checks each is a lowercase token name with a value a head can carry as it is. */
function lines(pairs: readonly (readonly [string, string])[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of pairs) {
    assert.match(name, /^[a-z0-9-]+$/, 'a lowercase header name');
    for (let i = 0; i < value.length; i++) {
      const c = value.charCodeAt(i);
      assert.ok(c >= 0x20 && c !== 0x7f, `${name}: no CR, LF or other control character in ${JSON.stringify(value)}`);
    }
    assert.equal(out[name], undefined, `${name} once`);
    out[name] = value;
  }
  return out;
}

async function withTracer(fn: (t: OtlpTracer, c: Collector) => Promise<void>, opts: Partial<ProxyTracerOptions> = {}): Promise<void> {
  const c = new Collector();
  const endpoint = await c.start();
  const t = createProxyTracer({ endpoint, serviceName: 'skein-proxy-test', exportTimeoutMs: 5000, ...opts });
  try {
    await fn(t, c);
  } finally {
    await t.shutdown();
    await c.close();
  }
}

test('tracer: an inbound hop continues the incoming traceparent; its attempt is its child and goes on in the header', async () => {
  await withTracer(async (t, c) => {
    const hop = t.hop('inbound', { traceparent: TP, tracestate: 'congo=t61rcWkgMzE, rojo=00f067aa0ba902b7' }, { ...ATTRS, path: '/cart/42?token=secret', caller: 'web' });
    const a = hop.attempt(1, EP);
    const h = lines(a.headers);
    assert.deepEqual(Object.keys(h), ['traceparent', 'tracestate'], 'no b3 unless the request came with it');
    assert.equal(h['tracestate'], 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7');
    const out = parseTraceparent(h['traceparent'])!;
    assert.equal(out.traceId, TRACE);
    assert.equal(out.traceFlags, 1);
    a.end(200, null);
    hop.end(200);
    hop.end(500, 'ignored: a span ends once');
    await t.flush();
    await c.waitFor((s) => s.length >= 2, 'two spans');
    assert.equal(c.posts[0], 'POST /v1/traces application/json');
    const hs = c.spans.find((s) => s.kind === KIND_SERVER)!;
    const as = c.spans.find((s) => s.kind === KIND_CLIENT)!;
    assert.equal(hs.traceId, TRACE);
    assert.equal(hs.parentSpanId, SPAN, 'the hop is a child of the incoming parent');
    assert.equal(hs.name, 'GET checkout');
    assert.equal(hs.service, 'skein-proxy-test');
    assert.equal(hs.traceState, 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7');
    assert.deepEqual(hs.attributes, {
      'http.request.method': 'GET',
      'url.path': '/cart/42',
      'skein.direction': 'inbound',
      'skein.workload': 'web-1',
      'skein.service': 'checkout',
      'skein.route': 'default',
      'skein.caller': 'web',
      'http.response.status_code': 200,
    });
    assert.equal(hs.status.code ?? 0, 0, 'a 200 leaves the status unset');
    assert.equal(as.traceId, TRACE);
    assert.equal(as.parentSpanId, hs.spanId, 'the attempt is a child of the hop');
    assert.equal(out.spanId, as.spanId, "the header carries the attempt's span id");
    assert.deepEqual(as.attributes, {
      'http.request.method': 'GET',
      'server.address': '127.0.0.1',
      'server.port': 8081,
      'skein.service': 'checkout',
      'skein.endpoint': 'checkout-7',
      'skein.attempt': 1,
      'http.response.status_code': 200,
    });
  });
});

test('tracer: an outbound hop with no context starts a trace (INTERNAL); retries are sibling attempts; failures are errors', async () => {
  await withTracer(async (t, c) => {
    const hop = t.hop('outbound', {}, { ...ATTRS, method: 'PURGE' });
    const a1 = hop.attempt(1, EP);
    a1.end(0, 'connect failed: ECONNREFUSED');
    const a2 = hop.attempt(2, { id: 'checkout-8', address: '10.0.0.8', port: 9090 });
    a2.end(503, 'HTTP 503');
    hop.end(503, 'SKEIN_E_NO_HEALTHY_ENDPOINT');
    const tp1 = parseTraceparent(lines(a1.headers)['traceparent'])!;
    const tp2 = parseTraceparent(lines(a2.headers)['traceparent'])!;
    assert.equal(tp1.traceId, tp2.traceId);
    assert.notEqual(tp1.spanId, tp2.spanId);
    await t.flush();
    await c.waitFor((s) => s.length >= 3, 'three spans');
    const hs = c.spans.find((s) => s.kind === KIND_INTERNAL)!;
    assert.equal(hs.parentSpanId ?? '', '', 'a root span');
    assert.equal(hs.traceId, tp1.traceId);
    assert.equal(hs.name, 'HTTP checkout');
    assert.equal(hs.attributes['http.request.method'], '_OTHER');
    assert.equal(hs.attributes['http.request.method_original'], 'PURGE');
    assert.equal(hs.attributes['skein.error_code'], 'SKEIN_E_NO_HEALTHY_ENDPOINT');
    assert.equal(hs.attributes['error.type'], 'SKEIN_E_NO_HEALTHY_ENDPOINT');
    assert.deepEqual(hs.status, { code: STATUS_ERROR, message: 'SKEIN_E_NO_HEALTHY_ENDPOINT' });
    const [s1, s2] = [c.spans.find((s) => s.spanId === tp1.spanId)!, c.spans.find((s) => s.spanId === tp2.spanId)!];
    assert.equal(s1.parentSpanId, hs.spanId);
    assert.equal(s2.parentSpanId, hs.spanId);
    assert.equal(s1.attributes['skein.attempt'], 1);
    assert.equal(s2.attributes['skein.attempt'], 2);
    assert.equal(s1.attributes['http.response.status_code'], undefined, 'no response, no status code');
    assert.equal(s1.attributes['error.type'], '_OTHER');
    assert.deepEqual(s1.status, { code: STATUS_ERROR, message: 'connect failed: ECONNREFUSED' });
    assert.equal(s2.attributes['error.type'], '503');
    assert.equal(s2.status.code, STATUS_ERROR);
  });
});

test('tracer: garbage in any trace header starts a new, well-formed trace (never an exception)', async () => {
  const rnd = seededRandom(42); // repeatable garbage
  const alphabet = '0123456789abcdefABCDEF-_ ,=@\t0d1';
  const junk = (): string | undefined => {
    if (rnd() < 0.3) return undefined;
    const base = [TP, `${TRACE}-${SPAN}-1`, TRACE, SPAN, '1', 'k=v'][Math.floor(rnd() * 6)]!;
    const chars = base.split('');
    for (let i = Math.floor(rnd() * 4); i > 0; i--) chars[Math.floor(rnd() * chars.length)] = alphabet[Math.floor(rnd() * alphabet.length)]!;
    return rnd() < 0.2 ? chars.join('').slice(0, Math.floor(rnd() * chars.length)) : chars.join('');
  };
  await withTracer(async (t) => {
    for (let i = 0; i < 2000; i++) {
      const h = { traceparent: junk(), tracestate: junk(), b3: junk(), xB3TraceId: junk(), xB3SpanId: junk(), xB3ParentSpanId: junk(), xB3Sampled: junk(), xB3Flags: junk() };
      const hop = t.hop(i % 2 === 0 ? 'inbound' : 'outbound', h, ATTRS);
      const a = hop.attempt(1, EP);
      const out = lines(a.headers);
      const tp = parseTraceparent(out['traceparent']);
      assert.ok(tp !== null, `${JSON.stringify(h)} -> ${JSON.stringify(a.headers)}`);
      const inc = resolveIncoming(h);
      if (inc.traceId !== null) assert.equal(tp.traceId, inc.traceId);
      if (out['tracestate'] !== undefined) assert.equal(parseTracestate(out['tracestate']), out['tracestate']);
      if (out['b3'] !== undefined) assert.equal(parseB3(out['b3'])!.spanId, tp.spanId);
      if (out['x-b3-spanid'] !== undefined) assert.equal(out['x-b3-spanid'], tp.spanId);
      a.end(200);
      hop.end(200);
    }
  }, { sampleRatio: 0 });
});

test('tracer: 4xx is not an error; 5xx and no response without a message are', async () => {
  await withTracer(async (t, c) => {
    for (const [status, path] of [
      [404, '/a'],
      [502, '/b'],
      [0, '/c'],
    ] as const) {
      t.hop('inbound', {}, { ...ATTRS, path }).end(status);
    }
    await t.flush();
    await c.waitFor((s) => s.length >= 3, 'three spans');
    const by = (p: string) => c.spans.find((s) => s.attributes['url.path'] === p)!;
    assert.equal(by('/a').status.code ?? 0, 0);
    assert.deepEqual(by('/b').status, { code: STATUS_ERROR, message: 'HTTP 502' });
    assert.deepEqual(by('/c').status, { code: STATUS_ERROR, message: 'no response' });
  });
});

test('tracer: b3 in, b3 out (single and multi, 64-bit ids stay 64-bit, debug stays debug)', async () => {
  await withTracer(async (t, c) => {
    const short = 'a3ce929d0e0e4736';
    const hop = t.hop('inbound', { b3: `${short}-${SPAN}-1` }, ATTRS);
    const a = hop.attempt(1, EP);
    const h = lines(a.headers);
    assert.deepEqual(Object.keys(h), ['traceparent', 'b3']);
    const b = parseB3(h['b3'])!;
    const tp = parseTraceparent(h['traceparent'])!;
    assert.equal(b.traceId64, true);
    assert.equal(b.traceId, `${'0'.repeat(16)}${short}`);
    assert.equal(tp.traceId, b.traceId);
    assert.equal(b.spanId, tp.spanId);
    assert.equal(b.sampled, true);
    a.end(200);
    hop.end(200);

    const hop2 = t.hop('outbound', { xB3TraceId: TRACE, xB3SpanId: SPAN, xB3Flags: '1' }, { ...ATTRS, path: '/multi' });
    const a2 = hop2.attempt(1, EP);
    const h2 = lines(a2.headers);
    assert.deepEqual(Object.keys(h2), ['traceparent', 'x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-flags']);
    const m = parseB3Multi({ traceId: h2['x-b3-traceid'], spanId: h2['x-b3-spanid'], parentSpanId: h2['x-b3-parentspanid'], flags: h2['x-b3-flags'] })!;
    assert.equal(m.traceId, TRACE);
    assert.equal(m.debug, true);
    a2.end(200);
    hop2.end(200);

    await t.flush();
    await c.waitFor((s) => s.length >= 4, 'four spans');
    const hs = c.spans.find((s) => s.kind === KIND_SERVER)!;
    assert.equal(hs.traceId, `${'0'.repeat(16)}${short}`);
    assert.equal(hs.parentSpanId, SPAN);
    assert.equal(c.spans.find((s) => s.spanId === b.spanId)!.parentSpanId, hs.spanId);
    const hs2 = c.spans.find((s) => s.kind === KIND_INTERNAL)!;
    assert.equal(hs2.traceId, TRACE);
    assert.equal(hs2.parentSpanId, SPAN);
    assert.equal(m.parentSpanId, hs2.spanId, 'x-b3-parentspanid is the hop span');
    assert.equal(c.spans.find((s) => s.spanId === m.spanId)!.parentSpanId, hs2.spanId);
  });
});

test('tracer: an unsampled trace is propagated (same trace id, new span id, flags 00) but not exported', async () => {
  await withTracer(async (t, c) => {
    const hop = t.hop('inbound', { traceparent: `00-${TRACE}-${SPAN}-00`, b3: `${TRACE}-${SPAN}-0`, tracestate: 'k=v' }, ATTRS);
    const a = hop.attempt(1, EP);
    const h = lines(a.headers);
    const tp = parseTraceparent(h['traceparent'])!;
    assert.equal(tp.traceId, TRACE);
    assert.notEqual(tp.spanId, SPAN, 'a new span id');
    assert.equal(tp.traceFlags, 0);
    assert.equal(h['tracestate'], 'k=v');
    assert.equal(parseB3(h['b3'])!.sampled, false);
    assert.equal(parseB3(h['b3'])!.spanId, tp.spanId);
    // The next hop continues it unsampled too.
    const next = t.hop('inbound', { traceparent: h['traceparent'] }, ATTRS);
    const na = next.attempt(1, EP);
    assert.equal(parseTraceparent(lines(na.headers)['traceparent'])!.traceId, TRACE);
    na.end(200);
    next.end(200);
    a.end(200);
    hop.end(200);
    // A bare "don't sample" decision, and a deferred B3 decision taken by this proxy (ratio 1: sampled).
    const deny = t.hop('outbound', { xB3Sampled: '0' }, ATTRS);
    const denied = parseTraceparent(lines(deny.attempt(1, EP).headers)['traceparent'])!;
    assert.equal(denied.traceFlags, 0);
    deny.end(200);
    const deferred = t.hop('outbound', { b3: `${'b'.repeat(32)}-${SPAN}` }, { ...ATTRS, path: '/marker' });
    const da = deferred.attempt(1, EP);
    assert.equal(parseB3(lines(da.headers)['b3'])!.sampled, true);
    da.end(200);
    deferred.end(200);
    await t.flush();
    await c.waitFor((s) => s.some((x) => x.attributes['url.path'] === '/marker'), 'the marker span');
    await c.waitFor((s) => s.length >= 2, 'the marker and its attempt');
    assert.deepEqual(
      c.spans.map((s) => s.traceId),
      ['b'.repeat(32), 'b'.repeat(32)],
      'only the sampled trace is exported',
    );
  });
});

test('tracer: sample ratio 0 propagates new traces unsampled; options are validated', async () => {
  await withTracer(
    async (t, c) => {
      const hop = t.hop('outbound', {}, ATTRS);
      const tp = parseTraceparent(lines(hop.attempt(1, EP).headers)['traceparent'])!;
      assert.equal(tp.traceFlags, 0);
      hop.end(200);
      // A caller's decision still wins over the ratio.
      const kept = t.hop('inbound', { traceparent: TP }, { ...ATTRS, path: '/kept' });
      kept.end(200);
      await t.flush();
      await c.waitFor((s) => s.length >= 1, 'the caller-sampled span');
      assert.deepEqual(
        c.spans.map((s) => s.attributes['url.path']),
        ['/kept'],
      );
    },
    { sampleRatio: 0 },
  );
  assert.throws(() => createProxyTracer({ endpoint: 'http://127.0.0.1:1/v1/traces', serviceName: 's', sampleRatio: 1.5 }), RangeError);
  assert.throws(() => createProxyTracer({ endpoint: 'http://127.0.0.1:1/v1/traces', serviceName: 's', sampleRatio: Number.NaN }), RangeError);
  assert.throws(() => createProxyTracer({ endpoint: 'not a url', serviceName: 's' }), TypeError);
  assert.throws(() => createProxyTracer({ endpoint: 'ftp://collector/v1/traces', serviceName: 's' }), TypeError);
  assert.throws(() => createProxyTracer({ endpoint: 'http://127.0.0.1:1/v1/traces', serviceName: '' }), TypeError);
  assert.throws(() => createProxyTracer({ endpoint: 'http://127.0.0.1:1/v1/traces', serviceName: 's', maxQueueSize: 0 }), RangeError);
});

test('tracer: shutdown flushes what ended, with the configured headers', async () => {
  const c = new Collector();
  const endpoint = await c.start();
  let auth: string | undefined;
  const seen = new Promise<void>((resolve) => {
    c.server.prependListener('request', (req: IncomingMessage) => {
      auth = req.headers['x-api-key'] as string | undefined;
      resolve();
    });
  });
  // A long interval: without the flush on shutdown nothing would go out.
  const t = createProxyTracer({ endpoint, serviceName: 'flushed', exportIntervalMs: 600_000, headers: { 'x-api-key': 'k1' } });
  for (let i = 0; i < 10; i++) {
    const hop = t.hop('inbound', {}, { ...ATTRS, path: `/p${i}` });
    hop.attempt(1, EP).end(200);
    hop.end(200);
  }
  await t.shutdown();
  await seen;
  await c.waitFor((s) => s.length === 20, 'all 20 spans');
  assert.equal(auth, 'k1');
  assert.ok(c.spans.every((s) => s.service === 'flushed'));
  await t.shutdown(); // idempotent
  // After shutdown the tracer still answers (spans go nowhere).
  const late = t.hop('inbound', { traceparent: TP }, ATTRS);
  assert.equal(parseTraceparent(lines(late.attempt(1, EP).headers)['traceparent'])!.traceId, TRACE);
  late.end(200);
  await c.close();
});

test('tracer: a collector that is down or never answers costs dropped spans, not errors or a hung shutdown', async () => {
  // Down: a port nobody listens on.
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  // Never answers: takes the request and keeps the connection open.
  const hole = new Collector(false);
  const holeUrl = await hole.start();
  const timeoutMs = 400;
  for (const endpoint of [`http://127.0.0.1:${port}/v1/traces`, holeUrl]) {
    const errors: Error[] = [];
    const t = createProxyTracer({ endpoint, serviceName: 'x', exportTimeoutMs: timeoutMs, maxQueueSize: 64, onExportError: (e) => errors.push(e) });
    for (let i = 0; i < 1000; i++) {
      const hop = t.hop('inbound', {}, ATTRS);
      hop.attempt(1, EP).end(200);
      hop.end(200);
    }
    const t0 = Date.now();
    await t.shutdown();
    const took = Date.now() - t0;
    assert.ok(took < timeoutMs + 2000, `shutdown took ${took} ms (export timeout ${timeoutMs} ms) for ${endpoint}`);
    const deadline = Date.now() + 5000;
    while (errors.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assert.ok(errors.length > 0, 'the failed export was reported');
  }
  assert.ok(hole.spans.length <= 2 * 64, `a bounded queue: at most two batches reached the black hole (${hole.spans.length} spans)`);
  await hole.close();
});

test('tracer: the queue is bounded (spans beyond it are dropped while an export is in flight)', async () => {
  await withTracer(async (t, c) => {
    for (let i = 0; i < 100; i++) t.hop('inbound', {}, ATTRS).end(200);
    await t.flush();
    await c.waitFor((s) => s.length >= 8, 'some spans');
    await t.flush();
    assert.ok(c.spans.length <= 16, `${c.spans.length} of 100 spans exported with a queue of 8`);
  }, { maxQueueSize: 8 });
});
