/**
 * Traffic splitting end to end (docs/traffic.md, "Splits and header pins"): a control plane and a
 * proxy as child processes, two node:http backends registered as versions v1 and v2 of one
 * service. 2,000 requests at 90/10 reach the backends within ±2 points of their weights; a request
 * with `x-canary: 1` is pinned to v2; a PUT of the service to 50/50 under keep-alive load drops
 * no request and no client connection, and the requests after it follow the new weights; the
 * proxy's request metrics count each version apart.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { Socket } from 'node:net';
import { api, mapLimit, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { metricValue, registerInstance, scrapeMetrics, startProxy, waitForProxyReady, type ProxyProcess } from './proxy-helpers.js';

interface Backend {
  readonly version: string;
  port: number;
  hits: number;
  close(): Promise<void>;
}

/** A backend answering 200 `{"version": ...}` to everything, counting what it gets. */
async function backend(version: string): Promise<Backend> {
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    b.hits++;
    req.resume();
    req.on('end', () => {
      const body = JSON.stringify({ version });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  const b: Backend = {
    version,
    port: 0,
    hits: 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  b.port = (server.address() as { port: number }).port;
  return b;
}

interface Reply {
  status: number;
  version: string | undefined;
  explain: string | undefined;
  error: string | undefined;
}

/** One GET to the proxy's outbound listener for service `shop`; `sockets` collects the client connections used. */
function get(port: number, opts: { agent?: http.Agent; headers?: Record<string, string>; sockets?: Set<Socket> } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/items', headers: { host: 'shop', ...opts.headers }, agent: opts.agent ?? false, timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        let version: string | undefined;
        try {
          version = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { version?: string }).version;
        } catch {
          version = undefined;
        }
        const h = (n: string) => (res.headers[n] === undefined ? undefined : String(res.headers[n]));
        resolve({ status: res.statusCode ?? 0, version, explain: h('x-skein-explain'), error: h('x-skein-error') });
      });
      res.on('error', reject);
    });
    req.on('socket', (s: Socket) => opts.sockets?.add(s));
    req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', reject);
    req.end();
  });
}

const percent = (n: number, total: number) => (100 * n) / total;

function assertNear(n: number, total: number, weight: number, what: string): void {
  const p = percent(n, total);
  assert.ok(Math.abs(p - weight) <= 2, `${what}: ${n} of ${total} = ${p.toFixed(2)}%, expected ${weight}% ± 2 points`);
}

const service = (v1: number, v2: number) => ({
  balancer: { kind: 'round-robin' },
  backends: [
    { subset: { version: 'v1' }, weight: v1 },
    { subset: { version: 'v2' }, weight: v2 },
  ],
  routes: [{ name: 'canary', match: { headers: { 'x-canary': '1' } }, backends: [{ subset: { version: 'v2' } }] }],
});

let dir: Awaited<ReturnType<typeof tempDir>>;
let control: ControlProcess;
let proxy: ProxyProcess;
let outbound: number;
let v1: Backend;
let v2: Backend;

before(async () => {
  dir = await tempDir('skein-split-');
  control = await startControl({ dataDir: dir.path, args: ['--dns', 'off'] });
  v1 = await backend('v1');
  v2 = await backend('v2');
  const put = await api(control.http, 'PUT', '/v1/services/shop', service(90, 10));
  assert.ok(put.status === 200 || put.status === 201, JSON.stringify(put.body));
  await registerInstance(control.http, 'shop', 'shop-v1', v1.port, { version: 'v1' });
  await registerInstance(control.http, 'shop', 'shop-v2', v2.port, { version: 'v2' });
  proxy = await startProxy({ control: control.http, workloads: ['name=client,outbound=127.0.0.1:0'] });
  await waitForProxyReady(proxy);
  outbound = proxy.workload('client').outbound?.port as number;
  await waitFor(async () => ((await api(proxy.admin, 'GET', '/debug/endpoints')).body?.services?.shop?.endpoints?.length ?? 0) === 2, { what: 'the proxy to know both versions of shop' });
});

after(async () => {
  await proxy?.stop();
  await control?.stop();
  await v1?.close();
  await v2?.close();
  await dir?.remove();
});

test('2,000 requests at 90/10 reach v1 and v2 within ±2 points; x-canary: 1 pins a request to v2; the metrics count each version', async (t) => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  const replies = await mapLimit(Array.from({ length: 2000 }), 16, () => get(outbound, { agent }));
  agent.destroy();
  const bad = replies.filter((r) => r.status !== 200);
  assert.equal(bad.length, 0, `failed: ${JSON.stringify(bad.slice(0, 3))}`);
  assert.equal(v1.hits + v2.hits, 2000);
  t.diagnostic(`received: v1 ${v1.hits}, v2 ${v2.hits}`);
  assertNear(v1.hits, 2000, 90, 'v1 received');
  assertNear(v2.hits, 2000, 10, 'v2 received');
  assert.equal(replies.filter((r) => r.version === 'v2').length, v2.hits, 'each answer came from the backend that counted it');

  // The header pin: every request with x-canary: 1 reaches v2, and the explanation says why.
  const before2 = v2.hits;
  for (let i = 0; i < 20; i++) {
    const r = await get(outbound, { headers: { 'x-canary': '1', 'x-skein-explain': '1' } });
    assert.equal(r.status, 200);
    assert.equal(r.version, 'v2');
    assert.match(r.explain ?? '', /^route=canary; service=shop; backend=version=v2 \(weight 100\); endpoint=shop-v2 \(127\.0\.0\.1:\d+\); attempts=1;/);
  }
  assert.equal(v2.hits - before2, 20);
  const plain = await get(outbound, { headers: { 'x-skein-explain': '1' } });
  assert.match(plain.explain ?? '', /^route=default; service=shop; backend=version=v(1 \(weight 90\)|2 \(weight 10\)); endpoint=shop-v[12] /);

  // Per-version request counts in Prometheus (the outbound side).
  const text = await scrapeMetrics(proxy);
  const count = (version: string, route: string) => metricValue(text, 'skein_proxy_requests_total', { direction: 'outbound', service: 'shop', route, version, status: '200' }) ?? 0;
  assert.equal(count('v1', 'default'), replies.filter((r) => r.version === 'v1').length + (plain.version === 'v1' ? 1 : 0));
  assert.equal(count('v2', 'canary'), 20);
  // /debug/endpoints shows the split, and the policy the proxy applies.
  const debug = (await api(proxy.admin, 'GET', '/debug/endpoints')).body.services.shop;
  assert.deepEqual(debug.traffic.policy.routes.find((r: { name: string }) => r.name === 'default').backends.map((b: { name: string; weight: number }) => [b.name, b.weight]), [
    ['version=v1', 90],
    ['version=v2', 10],
  ]);
});

test('a PUT to 50/50 under keep-alive load: no request fails, no client connection is dropped, and the requests after it follow the new weights', async (t) => {
  const agents = Array.from({ length: 8 }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
  const sockets = new Set<Socket>();
  const failures: string[] = [];
  const seen = { v1: 0, v2: 0 };
  let phase: 'before' | 'after' = 'before';
  let afterCount = 0;
  let stop = false;
  const loops = agents.map(async (agent) => {
    while (!stop) {
      try {
        const r = await get(outbound, { agent, sockets });
        if (r.status !== 200) failures.push(`${r.status} ${r.error ?? ''}`);
        else if (phase === 'after' && (r.version === 'v1' || r.version === 'v2')) {
          seen[r.version]++;
          afterCount++;
        }
      } catch (e) {
        failures.push(`no answer: ${(e as Error).message}`);
      }
    }
  });
  try {
    const start = v1.hits + v2.hits;
    await waitFor(() => v1.hits + v2.hits - start >= 500, { what: '500 requests at 90/10' });
    const put = await api(control.http, 'PUT', '/v1/services/shop', service(50, 50));
    assert.equal(put.status, 200, JSON.stringify(put.body));
    await waitFor(
      async () => {
        const routes = (await api(proxy.admin, 'GET', '/debug/endpoints')).body.services.shop.traffic.policy.routes as Array<{ name: string; backends: Array<{ weight: number }> }>;
        return routes.find((r) => r.name === 'default')?.backends[0]?.weight === 50;
      },
      { what: 'the proxy to apply 50/50' },
    );
    phase = 'after';
    await waitFor(() => afterCount >= 2000, { timeoutMs: 30_000, what: '2,000 requests after the change' });
  } finally {
    stop = true;
    await Promise.all(loops);
    for (const a of agents) a.destroy();
  }
  t.diagnostic(`after the change: v1 ${seen.v1}, v2 ${seen.v2} of ${afterCount}; ${sockets.size} client connections`);
  assert.deepEqual(failures, []);
  assert.equal(sockets.size, 8, 'each client kept its one keep-alive connection through the change');
  assertNear(seen.v1, afterCount, 50, 'v1 after the change');
  assertNear(seen.v2, afterCount, 50, 'v2 after the change');
});

test('a bad split is refused with the field named, and the split in force keeps serving', async () => {
  const bad = await api(control.http, 'PUT', '/v1/services/shop', { ...service(50, 50), backends: [{ subset: { version: 'v1' }, weight: 110 }, { subset: { version: 'v2' }, weight: -10 }] });
  assert.equal(bad.status, 400, JSON.stringify(bad.body));
  assert.equal(bad.body.code, 'SKEIN_E_VALIDATION');
  assert.equal(bad.body.field, 'backends[0].weight');
  const sum = await api(control.http, 'PUT', '/v1/services/shop', { ...service(50, 50), backends: [{ subset: { version: 'v1' }, weight: 60 }, { subset: { version: 'v2' }, weight: 60 }] });
  assert.equal(sum.status, 400);
  assert.equal(sum.body.field, 'backends');
  assert.match(sum.body.message, /weights must sum to 100, not 120/);
  const stored = await api(control.http, 'GET', '/v1/services/shop');
  assert.deepEqual(stored.body.definition.trafficRaw.backends.map((b: { weight: number }) => b.weight), [50, 50]);
  const before = { v1: v1.hits, v2: v2.hits };
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  await mapLimit(Array.from({ length: 200 }), 4, () => get(outbound, { agent }));
  agent.destroy();
  assert.deepEqual({ v1: v1.hits - before.v1, v2: v2.hits - before.v2 }, { v1: 100, v2: 100 });
});
