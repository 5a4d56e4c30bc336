/**
 * Scale to zero against a real `skein up` (docs/deployments.md#scale-to-zero): `web` autoscales
 * with min 0 and a 3 s cool-down; with no request it goes to zero replicas, and the next requests
 * (held by the proxy, a POST with a body among them) wake it and are answered, with one wake for
 * all of them. `lazy` starts asleep (replicas 0) and never becomes ready: its held requests end in
 * SKEIN_E_COLD_START_TIMEOUT after coldStart.timeout, and beyond coldStart.queue at once in
 * SKEIN_E_COLD_START_QUEUE_FULL. A second proxy (`skein proxy`, a token of scope "proxy") wakes a
 * service through the control plane's POST /v1/mesh/services/{s}/wake.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { join } from 'node:path';
import { ROOT, api, waitFor } from './helpers.js';
import { portOf, upFromText, type MeshUnderTest } from './mesh-helpers.js';
import { startProxy, waitForProxyReady, type ProxyProcess } from './proxy-helpers.js';

const APP = join(ROOT, 'test', 'fixtures', 'rollout-app.mjs');

const MESH = [
  'kind: Mesh',
  'name: zero-test',
  'services:',
  '  web:',
  '    command: node',
  `    args: [${JSON.stringify(APP)}]`,
  '    env: { APP_VERSION: v1 }',
  '    readiness: { type: http, path: /health, interval: 100ms, deadline: 10s }',
  '    autoscale: { min: 0, max: 3, target: { rps: 100 }, interval: 500ms, window: 2s, coolDown: 3s }',
  '  lazy:',
  '    command: node',
  `    args: [${JSON.stringify(APP)}]`,
  '    env: { READY: never }',
  '    replicas: 0',
  '    readiness: { type: http, path: /health, interval: 100ms, deadline: 60s }',
  '    autoscale: { min: 0, max: 2, target: { rps: 100 }, interval: 500ms, coolDown: 30s }',
  '    coldStart: { queue: 2, timeout: 1500ms }',
  '',
].join('\n');

interface Svc {
  desired: number;
  ready: number;
  servicePort: string;
  instances: Array<{ pid: number | null; state: string }>;
}
interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function request(port: number, method: string, path: string, body: string | null = null, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, agent: false, headers: body === null ? headers : { ...headers, 'content-length': String(Buffer.byteLength(body)) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body ?? undefined);
  });
}

describe('scale to zero under skein up', () => {
  let mesh: MeshUnderTest;
  let edge: ProxyProcess | null = null;
  const svc = (name: string) => mesh.service<Svc>(name);
  const events = async (service: string): Promise<Array<{ message: string; reason?: string; change: string }>> => {
    const r = await api(mesh.up.control, 'GET', `/v1/events?service=${service}&type=autoscale&limit=500`);
    assert.equal(r.status, 200);
    return r.body.events;
  };

  before(async () => {
    mesh = await upFromText('skein-zero-', MESH, ['--scrape-interval', '1s', '--mtls', 'off']);
  });
  after(async () => {
    await edge?.stop();
    await mesh?.stop();
  });

  test('no request for the cool-down: zero replicas; the next requests are held, wake it once, and are answered', async () => {
    const s0 = await svc('web');
    assert.deepEqual([s0.desired, s0.ready], [1, 1], 'min 0 starts with one replica');
    await waitFor(async () => (await svc('web')).instances.length === 0, { timeoutMs: 20_000, what: 'web scaled to zero' });
    const asleep = await svc('web');
    assert.equal(asleep.desired, 0);
    const zero = (await events('web')).find((e) => e.reason === 'idle');
    assert.equal(zero?.message, 'web scaled to zero from 1 replicas: no request for 3s (autoscale.coolDown); the next request wakes it');

    // Five requests at once while asleep, a POST with a body among them.
    const port = portOf(asleep.servicePort);
    const answers = await Promise.all([
      request(port, 'GET', '/a', null, { 'x-skein-explain': '1' }),
      request(port, 'POST', '/b', 'hello, held body'),
      ...[1, 2, 3].map((i) => request(port, 'GET', `/c${i}`)),
    ]);
    assert.deepEqual(
      answers.map((a) => a.status),
      [200, 200, 200, 200, 200],
      answers.map((a) => a.body).join('\n'),
    );
    assert.equal((JSON.parse(answers[0]!.body) as { version: string }).version, 'v1');
    assert.match(String(answers[0]!.headers['x-skein-explain']), /; held=\d+ms \(the service was scaled to zero: waited for an instance to start\)/);
    const wakes = (await events('web')).filter((e) => e.reason === 'wake');
    assert.equal(wakes.length, 1, JSON.stringify(wakes));
    assert.equal(wakes[0]!.message, "web woken from zero to 1 replica: a caller's proxy holds requests for it");
    const awake = await svc('web');
    assert.deepEqual([awake.desired, awake.ready], [1, 1]);
    // Awake, a request is not held.
    const direct = await request(port, 'GET', '/d', null, { 'x-skein-explain': '1' });
    assert.equal(direct.status, 200);
    assert.doesNotMatch(String(direct.headers['x-skein-explain']), /held=/);
  });

  test('a service that never becomes ready: held requests time out with their own error; beyond the queue, refused at once', async () => {
    const lazy = await svc('lazy');
    assert.equal(lazy.desired, 0, 'replicas 0: it starts asleep');
    const port = portOf(lazy.servicePort);
    const t0 = performance.now();
    const held = [request(port, 'GET', '/x'), request(port, 'GET', '/y')];
    // The two first are held (queue 2): wait until the proxy holds them, then a third is refused at once.
    await waitFor(async () => (await svc('lazy')).desired === 1, { timeoutMs: 5000, what: 'lazy woken' });
    const third = await request(port, 'GET', '/z');
    assert.equal(third.status, 503);
    assert.equal(third.headers['x-skein-error'], 'SKEIN_E_COLD_START_QUEUE_FULL');
    const full = JSON.parse(third.body) as { message: string; details: { coldStart: unknown } };
    assert.equal(full.message, 'service "lazy" has no instance (it is scaled to zero) and this proxy already holds 2 requests for it while one starts (coldStart.queue 2)');
    assert.deepEqual(full.details.coldStart, { queue: 2, waiting: 2 });
    for (const a of await Promise.all(held)) {
      assert.equal(a.status, 503);
      assert.equal(a.headers['x-skein-error'], 'SKEIN_E_COLD_START_TIMEOUT');
      const b = JSON.parse(a.body) as { message: string; details: { coldStart: { heldMs: number } } };
      assert.equal(b.message, 'service "lazy" is scaled to zero and no instance of it became ready within 1500 ms (coldStart.timeout) while the request was held');
      // Timers fire by the event loop's millisecond clock: up to 1 ms early on the call's finer one.
      assert.ok(b.details.coldStart.heldMs >= 1499 && b.details.coldStart.heldMs < 3000, `held ${b.details.coldStart.heldMs} ms`);
    }
    assert.ok(performance.now() - t0 >= 1500);
  });

  test('another proxy wakes a service through the control plane, with a token of scope "proxy"; bad wakes are refused', async () => {
    // web back to sleep first (3 s cool-down after its last request).
    await waitFor(async () => (await svc('web')).instances.length === 0, { timeoutMs: 20_000, what: 'web asleep again' });
    const minted = await api(mesh.up.control, 'POST', '/v1/tokens', { scope: 'proxy', name: 'edge', services: ['edge'] });
    assert.equal(minted.status, 201, JSON.stringify(minted.body));
    edge = await startProxy({ control: mesh.up.control, workloads: ['name=edge,outbound=127.0.0.1:0'], args: ['--mtls', 'off'], env: { SKEIN_TOKEN: minted.body.token } });
    // Its first snapshot (/ready): before it, a request is refused with SKEIN_E_DISCOVERY_UNAVAILABLE.
    await waitForProxyReady(edge);
    const out = edge.workload('edge').outbound;
    assert.ok(out !== null);
    const answer = await new Promise<Answer>((resolve, reject) => {
      const req = http.request({ host: out.host, port: out.port, method: 'GET', path: 'http://web/e', agent: false }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(answer.status, 200, answer.body);
    assert.equal((await events('web')).filter((e) => e.reason === 'wake').length, 2);

    const unknown = await api(mesh.up.control, 'POST', '/v1/mesh/services/nope/wake', {});
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.code, 'SKEIN_E_UNKNOWN_SERVICE');
    const extra = await api(mesh.up.control, 'POST', '/v1/mesh/services/web/wake', { replicas: 3 });
    assert.equal(extra.status, 400);
    assert.equal(extra.body.message, 'replicas is not a known field (the body is empty)');
    const awake = await api(mesh.up.control, 'POST', '/v1/mesh/services/web/wake', {});
    assert.deepEqual([awake.status, awake.body], [200, { service: 'web', woken: false }], 'already awake: nothing to do');
    const reader = await api(mesh.up.control, 'POST', '/v1/tokens', { scope: 'read', name: 'viewer' });
    const refused = await api(mesh.up.control, 'POST', '/v1/mesh/services/web/wake', {}, { authorization: `Bearer ${reader.body.token}` });
    assert.equal(refused.status, 403);
  });
});
