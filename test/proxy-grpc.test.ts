/**
 * gRPC through the proxy, with @grpc/grpc-js clients and servers (test/fixtures/grpc-server.mjs):
 * unary and the three streaming kinds, per-call balancing over one channel, the proxy's own errors
 * as gRPC errors that carry x-skein-error, deadlines (the shorter of the route's and grpc-timeout,
 * the header rewritten with the time left; the proxy's answers DEADLINE_EXCEEDED, not a 504),
 * Trailers-Only answers kept Trailers-Only (the END_STREAM flag of the HEADERS frame), UNAVAILABLE
 * retried on another instance, grpc-status in the failure class of the metrics, a status in the
 * trailers after streamed messages (a failure, never retried), and two proxies with mTLS between
 * them.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import http2 from 'node:http2';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ROOT, api, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { metricValue, registerInstance, startMeshProxy, startProxy, waitForProxyReady, type ProxyProcess } from './proxy-helpers.js';
import { INBOUND_PROXY_LABEL } from '../src/api/names.js';

const fixture: any = await import(join(ROOT, 'test', 'fixtures', 'grpc-server.mjs'));
const grpc: any = (await import('@grpc/grpc-js')).default;
const Echo = fixture.echoPackage().Echo;

const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

interface EchoServer {
  port: number;
  calls: Array<{ method: string; metadata: Record<string, unknown> }>;
  close(): Promise<void>;
}

async function echoServer(name: string, opts: { failWith?: number } = {}): Promise<EchoServer> {
  const s = (await fixture.startEcho(name, opts)) as EchoServer;
  cleanups.push(() => s.close());
  return s;
}

/** A client of `authority` (the service it names) through the listener at `port`. */
function client(port: number, authority: string): any {
  const c = new Echo(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': authority });
  cleanups.push(() => c.close());
  return c;
}

function unary(c: any, msg: object, opts: { deadlineMs?: number } = {}): Promise<{ value?: any; error?: any; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const meta = new grpc.Metadata();
    c.Say(msg, meta, { deadline: Date.now() + (opts.deadlineMs ?? 10_000) }, (error: any, value: any) => resolve({ value, error: error ?? undefined, ms: performance.now() - t0 }));
  });
}

const metrics = async (p: ProxyProcess) => (await api(p.admin, 'GET', '/metrics')).body as string;
const putService = async (name: string, body: object) => assert.ok([200, 201].includes((await api(cp.http, 'PUT', `/v1/services/${name}`, body)).status));

let cp: ControlProcess;
let A: ProxyProcess;
let outPort: number;
let e1: EchoServer;
let e2: EchoServer;
let sick: EchoServer;

before(async () => {
  const dir = await tempDir('skein-grpc-');
  cleanups.push(dir.remove);
  cp = await startControl({ dataDir: dir.path, args: ['--dns', 'off'] });
  cleanups.push(() => cp.stop());
  e1 = await echoServer('e1');
  e2 = await echoServer('e2');
  sick = await echoServer('sick', { failWith: grpc.status.UNAVAILABLE });
  await putService('echo', { balancer: { kind: 'round-robin' } });
  await putService('slow', { timeouts: { request: '300ms' } });
  await putService('flaky', { balancer: { kind: 'round-robin' }, outlierDetection: { enabled: false }, breaker: { enabled: false } });
  await registerInstance(cp.http, 'echo', 'e1', e1.port);
  await registerInstance(cp.http, 'echo', 'e2', e2.port);
  await registerInstance(cp.http, 'slow', 'slow-1', e1.port);
  // An h2c server that takes streams and never answers: a deadline only the proxy can enforce (a
  // grpc-js server would answer DEADLINE_EXCEEDED itself from the grpc-timeout the proxy sends, in
  // a race with the proxy's own timer).
  const hung = http2.createServer();
  const held: http2.ServerHttp2Stream[] = [];
  hung.on('stream', (st) => held.push(st));
  await new Promise<void>((r) => hung.listen(0, '127.0.0.1', r));
  cleanups.push(() => {
    for (const st of held) st.destroy();
    return new Promise((r) => hung.close(r));
  });
  await putService('hung', { timeouts: { request: '300ms' } });
  await registerInstance(cp.http, 'hung', 'hung-1', (hung.address() as { port: number }).port);
  await registerInstance(cp.http, 'flaky', 'sick-1', sick.port);
  await registerInstance(cp.http, 'flaky', 'ok-1', e2.port);
  A = await startProxy({ control: cp.http, workloads: ['name=web-1,service=web,outbound=127.0.0.1:0'] });
  cleanups.push(() => A.stop());
  await waitForProxyReady(A);
  outPort = A.workload('web-1').outbound!.port;
  await waitFor(
    async () => {
      const s = (await api(A.admin, 'GET', '/debug/endpoints')).body?.services ?? {};
      return s.echo?.endpoints?.length === 2 && s.flaky?.endpoints?.length === 2 && s.slow?.endpoints?.length === 1 && s.hung?.endpoints?.length === 1 && s.echo?.balancer?.kind === 'round-robin';
    },
    { what: 'the proxy to know echo, flaky and slow' },
  );
});

describe('gRPC through the outbound listener (grpc-js client and server)', () => {
  test('unary and server, client and bidirectional streaming calls', async () => {
    const c = client(outPort, 'echo');
    const r = await unary(c, { text: 'hello' });
    assert.equal(r.error, undefined, r.error?.message);
    assert.equal(r.value.text, 'hello');
    const counted: string[] = await new Promise((resolve, reject) => {
      const out: string[] = [];
      const s = c.Count({ text: 'tick', n: 5 });
      s.on('data', (m: any) => out.push(m.text));
      s.on('error', reject);
      s.on('end', () => resolve(out));
    });
    assert.deepEqual(counted, ['tick 0', 'tick 1', 'tick 2', 'tick 3', 'tick 4']);
    const collected: any = await new Promise((resolve, reject) => {
      const s = c.Collect((e: any, v: any) => (e ? reject(e) : resolve(v)));
      for (const t of ['a', 'b', 'c']) s.write({ text: t });
      s.end();
    });
    assert.equal(collected.text, 'a,b,c');
    const chat: string[] = await new Promise((resolve, reject) => {
      const out: string[] = [];
      const s = c.Chat();
      s.on('data', (m: any) => {
        out.push(m.text);
        if (out.length < 3) s.write({ text: `m${out.length}` });
        else s.end();
      });
      s.on('error', reject);
      s.on('end', () => resolve(out));
      s.write({ text: 'm0' });
    });
    assert.deepEqual(chat, ['m0', 'm1', 'm2'], 'each message answered before the next was sent');
    const seen = [...e1.calls, ...e2.calls].find((x) => x.method === 'Say');
    assert.equal(seen?.metadata['x-skein-caller'], 'web');
  });

  test('the calls of one channel (one HTTP/2 connection) are balanced per call', async () => {
    const c = client(outPort, 'echo');
    const from = new Map<string, number>();
    for (let i = 0; i < 10; i++) {
      const r = await unary(c, { text: `n${i}` });
      assert.equal(r.error, undefined);
      from.set(r.value.from, (from.get(r.value.from) ?? 0) + 1);
    }
    assert.deepEqual(Object.fromEntries([...from].sort()), { e1: 5, e2: 5 });
  });

  test("the proxy's own errors are gRPC errors that carry x-skein-error", async () => {
    const r = await unary(client(outPort, 'nosuch'), { text: 'x' });
    assert.equal(r.error?.code, grpc.status.UNAVAILABLE);
    assert.match(r.error.details, /^SKEIN_E_UNKNOWN_SERVICE: no service "nosuch" is registered/);
    assert.deepEqual(r.error.metadata.get('x-skein-error'), ['SKEIN_E_UNKNOWN_SERVICE']);
  });

  test("deadlines: the route's timeout shortens the client's, the app sees the time left, and the proxy answers DEADLINE_EXCEEDED", async () => {
    const c = client(outPort, 'slow');
    const quick = await unary(c, { text: 'q' }, { deadlineMs: 10_000 });
    assert.equal(quick.error, undefined);
    assert.ok(quick.value.deadlineLeftMs > 0 && quick.value.deadlineLeftMs <= 300, `the app's deadline is the route's 300 ms, not the client's 10 s (${quick.value.deadlineLeftMs} ms left)`);
    const late = await unary(client(outPort, 'hung'), { text: 'late' }, { deadlineMs: 10_000 });
    assert.equal(late.error?.code, grpc.status.DEADLINE_EXCEEDED, late.error?.message);
    assert.deepEqual(late.error.metadata.get('x-skein-error'), ['SKEIN_E_UPSTREAM_TIMEOUT']);
    assert.ok(late.ms < 2000, `answered at the route's deadline (${Math.round(late.ms)} ms)`);
    // The client's own grpc-timeout, shorter than the route's 15 s default, is what the app gets.
    const own = await unary(client(outPort, 'echo'), { text: 'own' }, { deadlineMs: 800 });
    assert.equal(own.error, undefined);
    assert.ok(own.value.deadlineLeftMs > 0 && own.value.deadlineLeftMs <= 800, `${own.value.deadlineLeftMs} ms left`);
  });

  test('a Trailers-Only answer stays Trailers-Only: one HEADERS frame with END_STREAM and grpc-status', async () => {
    const s = http2.connect(`http://127.0.0.1:${outPort}`);
    cleanups.push(() => s.destroy());
    // Msg { code: 5 } (field 4, varint 5) in a gRPC frame: not compressed, 2 bytes.
    const frame = Buffer.from([0, 0, 0, 0, 2, 0x20, 0x05]);
    const got: { flags: number; headers: http2.IncomingHttpHeaders; data: number; trailers: boolean } = await new Promise((resolve, reject) => {
      const req = s.request({ ':method': 'POST', ':path': '/skein.test.Echo/Say', ':authority': 'echo', 'content-type': 'application/grpc', te: 'trailers' });
      let flags = -1;
      let headers: http2.IncomingHttpHeaders = {};
      let data = 0;
      let trailers = false;
      req.on('response', (h, f) => {
        headers = h;
        flags = f;
      });
      req.on('data', (d: Buffer) => (data += d.length));
      req.on('trailers', () => (trailers = true));
      req.on('error', reject);
      req.on('close', () => resolve({ flags, headers, data, trailers }));
      req.setTimeout(5000, () => reject(new Error('the response did not end within 5 s')));
      req.end(frame);
    });
    assert.equal(got.headers[':status'], 200);
    assert.equal(got.headers['grpc-status'], '5');
    assert.equal(got.flags & http2.constants.NGHTTP2_FLAG_END_STREAM, http2.constants.NGHTTP2_FLAG_END_STREAM, 'the HEADERS frame ends the stream');
    assert.equal(got.data, 0);
    assert.equal(got.trailers, false, 'no second HEADERS frame');
    s.close();
  });

  test('UNAVAILABLE is retried on another instance (gRPC is POST: retried all the same)', async () => {
    const m0 = await metrics(A);
    const sick0 = sick.calls.length;
    const c = client(outPort, 'flaky');
    for (let i = 0; i < 6; i++) {
      const r = await unary(c, { text: `f${i}` });
      assert.equal(r.error, undefined, `call ${i}: ${r.error?.message}`);
      assert.equal(r.value.from, 'e2');
    }
    const m1 = await metrics(A);
    const retries = (metricValue(m1, 'skein_proxy_retries_total', { service: 'flaky', reason: 'unavailable' }) ?? 0) - (metricValue(m0, 'skein_proxy_retries_total', { service: 'flaky', reason: 'unavailable' }) ?? 0);
    // Round robin: after the first call, each call's first pick is the sick instance (its retry took the healthy one's turn).
    const hitSick = sick.calls.length - sick0;
    assert.ok(hitSick >= 5, `${hitSick} of 6 calls went to the sick instance first`);
    assert.equal(retries, hitSick, 'every call the sick instance failed was retried once');
  });

  test('a gRPC failure in an HTTP 200 counts as a failure in the metrics', async () => {
    const m0 = await metrics(A);
    const r = await unary(client(outPort, 'echo'), { text: 'x', code: grpc.status.INTERNAL });
    assert.equal(r.error?.code, grpc.status.INTERNAL);
    const failures = (m: string) => metricValue(m, 'skein_proxy_requests_total', { direction: 'outbound', service: 'echo', status: '200', class: 'failure' }) ?? 0;
    const m1 = await metrics(A);
    assert.equal(failures(m1) - failures(m0), 1);
  });
});

describe('mirroring gRPC calls (HTTP/2 copies)', () => {
  test('each call is copied to the mirror service with its own deadline; a failing mirror counts by grpc-status in its own series and fails no call', async () => {
    const next = await echoServer('next');
    await putService('echo-next', {});
    await registerInstance(cp.http, 'echo-next', 'next-1', next.port);
    await putService('sick-next', {});
    await registerInstance(cp.http, 'sick-next', 'sick-next-1', sick.port);
    // gRPC calls are POSTs: a mirror copies them only with nonIdempotent.
    await putService('mirrored', { mirror: { service: 'echo-next', nonIdempotent: true, timeout: '2s' } });
    await registerInstance(cp.http, 'mirrored', 'm-1', e2.port);
    const c = client(outPort, 'mirrored');
    await waitFor(async () => (await unary(c, { text: 'warm' })).value?.from === 'e2' && next.calls.length > 0, { what: 'a first call copied to echo-next' });
    const n0 = next.calls.length;
    for (let i = 0; i < 10; i++) {
      const r = await unary(c, { text: `m${i}` });
      assert.equal(r.value?.from, 'e2', 'the primary answers');
    }
    await waitFor(() => next.calls.length - n0 === 10, { what: '10 copies at echo-next' });
    const copy = next.calls.at(-1) as { method: string; metadata: Record<string, unknown> };
    assert.equal(copy.method, 'Say');
    assert.equal(copy.metadata['x-skein-timeout-ms'], '2000', "the copy's own deadline, the mirror's timeout");
    assert.equal(copy.metadata['x-skein-caller'], 'web');

    await putService('mirrored', { mirror: { service: 'sick-next', nonIdempotent: true } });
    const failed = async () => metricValue(await metrics(A), 'skein_proxy_mirror_requests_total', { service: 'mirrored', mirror: 'sick-next', status: '503', class: 'failure' }) ?? 0;
    await waitFor(async () => (await unary(c, { text: 'probe' })).value?.from === 'e2' && (await failed()) > 0, { what: 'a copy to the sick mirror' });
    const f0 = await failed();
    for (let i = 0; i < 10; i++) assert.equal((await unary(c, { text: `s${i}` })).error, undefined);
    // UNAVAILABLE in an HTTP 200 counts as the 503 it stands for, in the mirror's series only.
    await waitFor(async () => (await failed()) - f0 === 10, { what: '10 failed copies counted as 503' });
    const text = await metrics(A);
    assert.equal(metricValue(text, 'skein_proxy_requests_total', { service: 'mirrored', class: 'failure' }), undefined);
    assert.equal(metricValue(text, 'skein_proxy_requests_total', { service: 'sick-next' }), undefined);
    assert.equal(metricValue(text, 'skein_proxy_retries_total', { service: 'sick-next' }), undefined, 'a copy is never retried');
  });
});

describe('a status in the trailers after streamed messages', () => {
  test('the client gets the messages, then the status and its message; the metrics count a failure by grpc-status; no retry (bytes reached the client)', async () => {
    const m0 = await metrics(A);
    const counts0 = [e1, e2].map((e) => e.calls.filter((c) => c.method === 'Count').length);
    // UNAVAILABLE is in the default retries.on: in a Trailers-Only answer it would be retried.
    const got: { messages: string[]; error: any } = await new Promise((resolve) => {
      const messages: string[] = [];
      const s = client(outPort, 'echo').Count({ text: 'part', n: 3, code: grpc.status.UNAVAILABLE });
      s.on('data', (m: any) => messages.push(`${m.text} from ${m.from}`));
      s.on('error', (error: any) => resolve({ messages, error }));
      s.on('end', () => resolve({ messages, error: null }));
    });
    const from = /from (e[12])$/.exec(got.messages[0] ?? '')?.[1];
    assert.ok(from !== undefined, JSON.stringify(got.messages));
    assert.deepEqual(got.messages, [`part 0 from ${from}`, `part 1 from ${from}`, `part 2 from ${from}`]);
    assert.equal(got.error?.code, grpc.status.UNAVAILABLE);
    assert.equal(got.error?.details, `${from} fails with 14`);
    assert.deepEqual(got.error.metadata.get('x-skein-error'), [], 'the status is the app\'s, not the proxy\'s');
    const m1 = await metrics(A);
    const delta = (name: string, labels: Record<string, string>) => (metricValue(m1, name, labels) ?? 0) - (metricValue(m0, name, labels) ?? 0);
    assert.deepEqual(
      {
        failure: delta('skein_proxy_requests_total', { direction: 'outbound', service: 'echo', status: '200', class: 'failure' }),
        success: delta('skein_proxy_requests_total', { direction: 'outbound', service: 'echo', class: 'success' }),
        retries: delta('skein_proxy_retries_total', { service: 'echo' }),
      },
      { failure: 1, success: 0, retries: 0 },
    );
    const counts1 = [e1, e2].map((e) => e.calls.filter((c) => c.method === 'Count').length);
    assert.equal(counts1[0]! + counts1[1]! - counts0[0]! - counts0[1]!, 1, 'one call reached an app: not sent again');
  });
});

describe('CONNECT: gRPC clients behind HTTP_PROXY', () => {
  test('grpc-js with grpc_proxy tunnels with CONNECT to a mesh service, and every call inside is balanced', async () => {
    const saved = process.env['grpc_proxy'];
    process.env['grpc_proxy'] = `http://127.0.0.1:${outPort}`;
    let c: any;
    try {
      c = new Echo('echo:50051', grpc.credentials.createInsecure());
    } finally {
      if (saved === undefined) delete process.env['grpc_proxy'];
      else process.env['grpc_proxy'] = saved;
    }
    cleanups.push(() => c.close());
    const from = new Map<string, number>();
    for (let i = 0; i < 4; i++) {
      const r = await unary(c, { text: `t${i}` });
      assert.equal(r.error, undefined, r.error?.message);
      from.set(r.value.from, (from.get(r.value.from) ?? 0) + 1);
    }
    assert.deepEqual(Object.fromEntries([...from].sort()), { e1: 2, e2: 2 }, 'one tunnel, calls balanced per call');
  });

  test('a CONNECT to an authority that is not a mesh service is refused as before', async () => {
    const reply: string = await new Promise((resolve, reject) => {
      const s = createConnection({ host: '127.0.0.1', port: outPort });
      let got = '';
      s.on('data', (d: Buffer) => (got += d.toString('latin1')));
      s.on('end', () => resolve(got));
      s.on('error', reject);
      s.write('CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n');
    });
    assert.match(reply, /^HTTP\/1\.1 400 /);
    assert.match(reply, /x-skein-error: SKEIN_E_BAD_REQUEST/);
    assert.match(reply, /CONNECT is not supported/);
  });
});

describe('gRPC through two proxies with mTLS between them', () => {
  test('unary and bidirectional streaming calls, over mTLS', async () => {
    const app = await echoServer('secure-1');
    const B = await startMeshProxy(cp.http, 'proxy-b', ['users'], [`name=users-1,service=users,inbound=127.0.0.1:0,app=127.0.0.1:${app.port}`]);
    cleanups.push(() => B.stop());
    const M = await startMeshProxy(cp.http, 'proxy-m', ['web'], ['name=web-2,service=web,outbound=127.0.0.1:0']);
    cleanups.push(() => M.stop());
    await registerInstance(cp.http, 'users', 'users-1', B.workload('users-1').inbound!.port, { labels: { [INBOUND_PROXY_LABEL]: 'true' } });
    await waitFor(async () => ((await api(M.admin, 'GET', '/debug/endpoints')).body?.services?.users?.endpoints?.length ?? 0) === 1, { what: 'the mesh proxy to know users' });
    const c = client(M.workload('web-2').outbound!.port, 'users');
    const r = await unary(c, { text: 'secret' });
    assert.equal(r.error, undefined, r.error?.message);
    assert.equal(r.value.from, 'secure-1');
    const chat: string[] = await new Promise((resolve, reject) => {
      const out: string[] = [];
      const s = c.Chat();
      s.on('data', (m: any) => out.push(m.text));
      s.on('error', reject);
      s.on('end', () => resolve(out));
      for (const t of ['x', 'y', 'z']) s.write({ text: t });
      s.end();
    });
    assert.deepEqual(chat, ['x', 'y', 'z']);
    const meta = app.calls.find((x) => x.method === 'Say')?.metadata;
    assert.match(String(meta?.['x-skein-client-id']), /^spiffe:\/\/[^/]+\/ns\/default\/sa\/web$/, "the app learns its caller from the caller's certificate");
    const mb = await metrics(B);
    assert.equal(metricValue(mb, 'skein_proxy_mtls_requests_total', { direction: 'inbound', service: 'users' }), 2, 'both calls came over mTLS');
    const mm = await metrics(M);
    assert.equal(metricValue(mm, 'skein_proxy_mtls_requests_total', { direction: 'outbound', service: 'users' }), 2);
  });
});
