/**
 * Health checks run by a real control plane against real local servers: HTTP (thresholds,
 * expected status, timeouts), TCP, TTL heartbeats and expiry, automatic deregistration; every
 * status change recorded in /v1/events with a time and a reason.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { api, metricSample, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';

let cp: ControlProcess;
const cleanups: Array<() => Promise<unknown> | unknown> = [];

before(async () => {
  const d = await tempDir('skein-health-');
  cleanups.push(d.remove);
  cp = await startControl({ dataDir: d.path });
  cleanups.push(() => cp.stop());
});

after(async () => {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
});

/** An HTTP server whose answer the test switches: a status code, or hanging without an answer. */
interface Target {
  port: number;
  mode: number | 'hang';
  requests: Array<{ time: number; mode: number | 'hang'; method: string; url: string; userAgent: string }>;
  close(): Promise<void>;
}

async function httpTarget(mode: number | 'hang' = 200): Promise<Target> {
  const hung: ServerResponse[] = [];
  const t: Target = {
    port: 0,
    mode,
    requests: [],
    close: async () => {
      for (const r of hung) r.destroy();
      srv.closeAllConnections();
      await new Promise<void>((resolve) => srv.close(() => resolve()));
    },
  };
  const srv: HttpServer = createHttpServer((req: IncomingMessage, res: ServerResponse) => {
    t.requests.push({ time: Date.now(), mode: t.mode, method: req.method ?? '', url: req.url ?? '', userAgent: String(req.headers['user-agent']) });
    if (t.mode === 'hang') {
      hung.push(res);
      return;
    }
    res.statusCode = t.mode;
    res.end('ok');
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', () => resolve()));
  t.port = (srv.address() as { port: number }).port;
  cleanups.push(() => t.close());
  return t;
}

const register = (service: string, id: string, body: Record<string, unknown>) => api(cp.http, 'PUT', `/v1/services/${service}/instances/${id}`, { address: '127.0.0.1', ...body });
const instance = async (service: string, id: string) => (await api(cp.http, 'GET', `/v1/services/${service}/instances/${id}`)).body.instance;
const listed = async (service: string) => (await api(cp.http, 'GET', `/v1/services/${service}/instances`)).body.instances.map((i: any) => i.id);

async function statusBecomes(service: string, id: string, status: string, timeoutMs = 10_000): Promise<any> {
  return waitFor(
    async () => {
      const i = await instance(service, id);
      return i?.status === status ? i : null;
    },
    { timeoutMs, what: `${service}/${id} to become ${status}` },
  );
}

async function events(service: string): Promise<any[]> {
  const r = await api(cp.http, 'GET', `/v1/events?service=${service}&limit=1000`);
  assert.equal(r.status, 200);
  return r.body.events;
}

describe('health checks', () => {
  test('HTTP: healthy, unhealthy after unhealthyThreshold failures, healthy after healthyThreshold passes', async () => {
    const target = await httpTarget(200);
    const reg = await register('hweb', 'h-1', {
      port: target.port,
      check: { type: 'http', path: '/healthz', interval: '100ms', timeout: '1s', unhealthyThreshold: 3, healthyThreshold: 2 },
    });
    assert.equal(reg.status, 201);
    assert.equal(reg.body.instance.status, 'unhealthy', 'http checks start unhealthy');
    assert.equal(reg.body.instance.check, 'http');

    const up = await statusBecomes('hweb', 'h-1', 'healthy');
    assert.equal(up.reason, 'HTTP 200 from GET /healthz');
    assert.ok(target.requests.length >= 2, 'healthyThreshold 2: two passes first');
    const req = target.requests[0];
    assert.deepEqual([req?.method, req?.url, req?.userAgent], ['GET', '/healthz', 'skein-health-check']);
    assert.deepEqual(await listed('hweb'), ['h-1']);

    // Failing: unhealthy only after the third failure in a row.
    target.mode = 500;
    const down = await statusBecomes('hweb', 'h-1', 'unhealthy');
    assert.match(down.reason, /^HTTP 500 from GET \/healthz \(expected 200-399\)$/);
    const fails = target.requests.filter((r) => r.mode === 500);
    assert.ok(fails.length >= 3, `${fails.length} failures before unhealthy`);
    assert.ok(Date.parse(down.since) >= (fails[2] as { time: number }).time - 1, 'not before the third failure');
    // Unhealthy instances leave the default listing but stay in ?all=true.
    assert.deepEqual(await listed('hweb'), []);
    const all = (await api(cp.http, 'GET', '/v1/services/hweb/instances?all=true')).body.instances;
    assert.deepEqual(all.map((i: any) => [i.id, i.status]), [['h-1', 'unhealthy']]);

    // Recovering: healthy after two passes.
    target.mode = 204;
    const back = await statusBecomes('hweb', 'h-1', 'healthy');
    assert.equal(back.reason, 'HTTP 204 from GET /healthz');
    const passes = target.requests.filter((r) => r.mode === 204);
    assert.ok(passes.length >= 2);
    assert.ok(Date.parse(back.since) >= (passes[1] as { time: number }).time - 1, 'not before the second pass');
    assert.deepEqual(await listed('hweb'), ['h-1']);

    const ev = (await events('hweb')).filter((e) => e.id === 'h-1');
    assert.deepEqual(
      ev.map((e) => [e.from, e.to, e.reason]),
      [
        ['new', 'unhealthy', 'initial state (http check)'],
        ['unhealthy', 'healthy', 'HTTP 200 from GET /healthz'],
        ['healthy', 'unhealthy', 'HTTP 500 from GET /healthz (expected 200-399)'],
        ['unhealthy', 'healthy', 'HTTP 204 from GET /healthz'],
      ],
    );
    assert.deepEqual(ev.map((e) => e.time), [reg.body.instance.since, up.since, down.since, back.since], 'each event has the time of its change');
    const m = await (await fetch(`${cp.http}/metrics`)).text();
    assert.ok((metricSample(m, 'skein_health_checks_total{type="http",result="fail"}') ?? 0) >= 3);
    assert.ok((metricSample(m, 'skein_health_checks_total{type="http",result="pass"}') ?? 0) >= 4);
    assert.ok((metricSample(m, 'skein_health_transitions_total{to="unhealthy"}') ?? 0) >= 2);
    assert.equal((await api(cp.http, 'DELETE', '/v1/services/hweb/instances/h-1')).status, 200);
    // Once deregistered, the instance is no longer probed (while a witness is probed several times).
    const n = target.requests.length;
    const witness = await httpTarget(200);
    await register('hweb', 'witness', { port: witness.port, check: { type: 'http', interval: '100ms' } });
    await waitFor(() => witness.requests.length >= 4, { what: 'the witness to be probed 4 times' });
    assert.ok(target.requests.length <= n + 1, `probes after deregistration: ${target.requests.length - n}`);
  });

  test('HTTP: the expected status range decides what passes', async () => {
    const target = await httpTarget(418);
    const check = { type: 'http', path: '/', interval: '100ms', unhealthyThreshold: 1, initialState: 'healthy' };
    assert.equal((await register('teapot', 'default-range', { port: target.port, check })).status, 201);
    assert.equal((await register('teapot', 'exact', { port: target.port, check: { ...check, expectedStatus: '418', initialState: 'unhealthy' } })).status, 201);
    assert.equal((await register('teapot', 'range', { port: target.port, check: { ...check, expectedStatus: '400-499', initialState: 'unhealthy' } })).status, 201);
    const d = await statusBecomes('teapot', 'default-range', 'unhealthy');
    assert.equal(d.reason, 'HTTP 418 from GET / (expected 200-399)');
    assert.equal((await statusBecomes('teapot', 'exact', 'healthy')).reason, 'HTTP 418 from GET /');
    assert.equal((await statusBecomes('teapot', 'range', 'healthy')).reason, 'HTTP 418 from GET /');
    assert.deepEqual(await listed('teapot'), ['exact', 'range']);
    target.mode = 200;
    assert.equal((await statusBecomes('teapot', 'exact', 'unhealthy')).reason, 'HTTP 200 from GET / (expected 418-418)');
    assert.equal((await statusBecomes('teapot', 'default-range', 'healthy')).reason, 'HTTP 200 from GET /');
    assert.equal((await statusBecomes('teapot', 'range', 'unhealthy')).reason, 'HTTP 200 from GET / (expected 400-499)');
    assert.deepEqual(await listed('teapot'), ['default-range']);
  });

  test('HTTP: a server that never answers fails by the check timeout', async () => {
    const target = await httpTarget('hang');
    const reg = await register('slow', 's-1', { port: target.port, check: { type: 'http', path: '/health', interval: '1s', timeout: '200ms', unhealthyThreshold: 1, initialState: 'healthy' } });
    assert.equal(reg.body.instance.status, 'healthy');
    const down = await statusBecomes('slow', 's-1', 'unhealthy');
    assert.equal(down.reason, 'GET /health timed out after 200ms');
    assert.ok(target.requests.length >= 1, 'the server got the request');
    assert.ok(Date.parse(down.since) - (target.requests[0] as { time: number }).time >= 150, 'it waited for the timeout');
    // A server that answers again brings it back.
    target.mode = 200;
    assert.equal((await statusBecomes('slow', 's-1', 'healthy')).reason, 'HTTP 200 from GET /health');
  });

  test('HTTP: nothing listening is a failure with the connect error', async () => {
    const target = await httpTarget(200);
    await target.close();
    await register('gone', 'g-1', { port: target.port, check: { type: 'http', interval: '100ms', unhealthyThreshold: 1, initialState: 'healthy' } });
    const down = await statusBecomes('gone', 'g-1', 'unhealthy');
    assert.equal(down.reason, 'GET /health: ECONNREFUSED');
  });

  test('TCP: healthy while the port listens, unhealthy once it is closed', async () => {
    const sockets = new Set<Socket>();
    let accepted = 0;
    const srv: TcpServer = createTcpServer((s) => {
      accepted++;
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    });
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', () => resolve()));
    const port = (srv.address() as { port: number }).port;
    let open = true;
    const close = () => {
      if (!open) return Promise.resolve();
      open = false;
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => srv.close(() => resolve()));
    };
    cleanups.push(close);

    const reg = await register('db', 'd-1', { port: 5432, check: { type: 'tcp', port, interval: '100ms', unhealthyThreshold: 2 } });
    assert.equal(reg.body.instance.status, 'unhealthy');
    assert.equal(reg.body.instance.check, 'tcp');
    const up = await statusBecomes('db', 'd-1', 'healthy');
    assert.equal(up.reason, `TCP connect to port ${port} succeeded`);
    assert.ok(accepted >= 1);
    assert.deepEqual(await listed('db'), ['d-1']);

    await close();
    const down = await statusBecomes('db', 'd-1', 'unhealthy');
    assert.equal(down.reason, `TCP connect to port ${port}: ECONNREFUSED`);
    assert.deepEqual(await listed('db'), []);
    assert.deepEqual(
      (await events('db')).map((e) => [e.from, e.to, e.reason]),
      [
        ['new', 'unhealthy', 'initial state (tcp check)'],
        ['unhealthy', 'healthy', `TCP connect to port ${port} succeeded`],
        ['healthy', 'unhealthy', `TCP connect to port ${port}: ECONNREFUSED`],
      ],
    );
  });

  test('TTL: heartbeats keep the instance healthy past its ttl; without them it expires', async () => {
    const reg = await register('beat', 't-1', { port: 80, check: { type: 'ttl', ttl: '2s' } });
    assert.equal(reg.status, 201);
    assert.equal(reg.body.instance.status, 'healthy', 'registering counts as a heartbeat');
    const t0 = Date.now();
    let lastBeat = t0;
    const beats: Array<Promise<{ status: number }>> = [];
    const timer = setInterval(() => {
      lastBeat = Date.now();
      beats.push(api(cp.http, 'PUT', '/v1/services/beat/instances/t-1/heartbeat'));
    }, 250);
    const looks: string[] = [];
    try {
      // For two ttl periods, every look finds it healthy.
      await waitFor(
        async () => {
          looks.push((await instance('beat', 't-1')).status);
          return Date.now() - t0 > 4000;
        },
        { timeoutMs: 10_000, intervalMs: 100, what: 'heartbeats over two ttl periods' },
      );
    } finally {
      clearInterval(timer);
    }
    assert.ok(looks.length >= 10);
    assert.deepEqual(new Set(looks), new Set(['healthy']), 'heartbeats keep it healthy');
    const results = await Promise.all(beats);
    assert.ok(results.length >= 10);
    for (const r of results) assert.equal(r.status, 200);
    // The last heartbeat was sent at lastBeat, so the server received it no earlier.
    const stopped = lastBeat;

    const expired = await statusBecomes('beat', 't-1', 'unhealthy', 10_000);
    assert.equal(expired.reason, 'TTL expired: no heartbeat within 2000ms');
    assert.ok(Date.parse(expired.since) - stopped >= 1900, `expired ${Date.parse(expired.since) - stopped}ms after the last heartbeat`);
    assert.deepEqual(await listed('beat'), []);

    // A heartbeat brings it back; an instance can also report itself unhealthy.
    const hb = await api(cp.http, 'PUT', '/v1/services/beat/instances/t-1/heartbeat', {});
    assert.equal(hb.body.instance.status, 'healthy');
    assert.equal(hb.body.instance.reason, 'heartbeat received');
    const sick = await api(cp.http, 'PUT', '/v1/services/beat/instances/t-1/heartbeat', { status: 'unhealthy', reason: 'out of memory' });
    assert.equal(sick.body.instance.status, 'unhealthy');
    assert.deepEqual(
      (await events('beat')).map((e) => [e.from, e.to, e.reason]),
      [
        ['new', 'healthy', 'initial state (ttl check)'],
        ['healthy', 'unhealthy', 'TTL expired: no heartbeat within 2000ms'],
        ['unhealthy', 'healthy', 'heartbeat received'],
        ['healthy', 'unhealthy', 'out of memory'],
      ],
    );
    const m = await (await fetch(`${cp.http}/metrics`)).text();
    assert.ok((metricSample(m, 'skein_heartbeats_total') ?? 0) >= results.length + 2);
  });

  test('TTL: re-registering with a changed ttl restarts the clock', async () => {
    await register('rettl', 'x-1', { port: 80, check: { type: 'ttl', ttl: '1s' } });
    await statusBecomes('rettl', 'x-1', 'unhealthy');
    const again = await register('rettl', 'x-1', { port: 80, check: { type: 'ttl', ttl: '30s' } });
    assert.equal(again.status, 200);
    assert.equal(again.body.changed, true);
    assert.equal(again.body.instance.status, 'healthy', 'a changed check starts from its initial state');
    // Well past the old ttl and a sweep or two, it is still healthy: the old deadline is gone.
    const t0 = Date.now();
    const looks: string[] = [];
    await waitFor(
      async () => {
        looks.push((await instance('rettl', 'x-1')).status);
        return Date.now() - t0 > 2500;
      },
      { timeoutMs: 10_000, intervalMs: 100, what: 'a few sweeps' },
    );
    assert.deepEqual(new Set(looks), new Set(['healthy']), `statuses seen: ${looks.join(', ')}`);
  });

  test('deregisterAfter removes an instance that stays unhealthy', async () => {
    const reg = await register('reap', 'r-1', { port: 80, check: { type: 'ttl', ttl: '1s', deregisterAfter: '1s' } });
    assert.equal(reg.status, 201);
    const down = await statusBecomes('reap', 'r-1', 'unhealthy');
    assert.match(down.reason, /TTL expired/);
    await waitFor(async () => (await api(cp.http, 'GET', '/v1/services/reap/instances/r-1')).status === 404, { timeoutMs: 10_000, what: 'r-1 to be deregistered' });
    assert.ok(Date.now() - Date.parse(down.since) >= 900, 'not before it had been unhealthy for deregisterAfter');
    // The service had nothing else: it is gone entirely.
    assert.ok(!(await api(cp.http, 'GET', '/v1/services')).body.services.some((s: any) => s.name === 'reap'));
  });
});
