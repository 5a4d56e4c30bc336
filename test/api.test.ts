/**
 * The control plane's HTTP API over real sockets: registration, listings, service definitions and
 * their defaults, health, metrics, events, and every kind of bad input refused with a JSON error
 * naming the field and nothing written.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { api, metricSample, startControl, tempDir, type ControlProcess } from './helpers.js';

let cp: ControlProcess;
let dir: { path: string; remove: () => Promise<void> };
let base: string;

before(async () => {
  dir = await tempDir('skein-api-');
  cp = await startControl({ dataDir: dir.path });
  base = cp.http;
});

after(async () => {
  try {
    await cp?.stop();
  } finally {
    await dir?.remove();
  }
});

const put = (path: string, body: unknown, headers: Record<string, string> = {}) => api(base, 'PUT', path, body, headers);
const get = (path: string) => api(base, 'GET', path);

/** Everything a refused request must leave alone. */
async function state(): Promise<{ revision: number; instances: number; services: unknown; web: unknown }> {
  const h = await get('/v1/health');
  const s = await get('/v1/services');
  const w = await get('/v1/services/web/instances?all=true');
  return { revision: h.body.revision, instances: h.body.instances, services: s.body, web: w.status === 200 ? w.body : w.status };
}

function assertError(r: { status: number; body: any; headers: Headers }, status: number, code: string, field?: string | RegExp): void {
  assert.equal(r.status, status, `expected ${status} ${code}, got ${r.status} ${JSON.stringify(r.body)}`);
  assert.match(String(r.headers.get('content-type')), /^application\/json/);
  assert.equal(typeof r.body, 'object');
  assert.equal(r.body.code, code, JSON.stringify(r.body));
  assert.equal(typeof r.body.message, 'string');
  assert.ok(r.body.message.length > 0);
  if (field instanceof RegExp) assert.match(String(r.body.field), field);
  else if (field !== undefined) assert.equal(r.body.field, field, JSON.stringify(r.body));
}

describe('instances', () => {
  test('register: 201 created, 200 unchanged (no new revision), 200 changed', async () => {
    const r1 = await put('/v1/services/web/instances/web-1', { address: '10.0.0.1', port: 8080, zone: 'z1', labels: { tier: 'front' } });
    assert.equal(r1.status, 201, JSON.stringify(r1.body));
    assert.equal(r1.body.created, true);
    assert.equal(r1.body.changed, true);
    assert.equal(r1.body.instance.id, 'web-1');
    assert.equal(r1.body.instance.service, 'web');
    assert.equal(r1.body.instance.address, '10.0.0.1');
    assert.equal(r1.body.instance.port, 8080);
    assert.equal(r1.body.instance.weight, 1, 'default weight');
    assert.equal(r1.body.instance.zone, 'z1');
    assert.deepEqual(r1.body.instance.labels, { tier: 'front' });
    assert.equal(r1.body.instance.status, 'healthy', 'no check: healthy');
    assert.equal(r1.body.instance.check, null);
    assert.ok(!Number.isNaN(Date.parse(r1.body.instance.since)));
    const rev1 = r1.body.revision;
    assert.equal(r1.body.instance.revision, rev1);

    const r2 = await put('/v1/services/web/instances/web-1', { address: '10.0.0.1', port: 8080, zone: 'z1', labels: { tier: 'front' } });
    assert.equal(r2.status, 200);
    assert.equal(r2.body.created, false);
    assert.equal(r2.body.changed, false);
    assert.equal(r2.body.revision, rev1, 'an identical registration does not bump the revision');
    assert.equal((await get('/v1/health')).body.revision, rev1);

    const r3 = await put('/v1/services/web/instances/web-1', { address: '10.0.0.1', port: 8080, zone: 'z1', labels: { tier: 'front' }, weight: 7 });
    assert.equal(r3.status, 200);
    assert.equal(r3.body.created, false);
    assert.equal(r3.body.changed, true);
    assert.equal(r3.body.instance.weight, 7);
    assert.ok(r3.body.revision > rev1, 'a change bumps the revision');
  });

  test('get one instance, and 404 for an unknown one', async () => {
    const r = await get('/v1/services/web/instances/web-1');
    assert.equal(r.status, 200);
    assert.equal(r.body.instance.id, 'web-1');
    assert.equal(r.body.instance.weight, 7);
    assertError(await get('/v1/services/web/instances/nope'), 404, 'SKEIN_E_UNKNOWN_INSTANCE', 'id');
    assertError(await get('/v1/services/nosuch/instances'), 404, 'SKEIN_E_UNKNOWN_SERVICE', 'service');
  });

  test('list services', async () => {
    const r0 = await put('/v1/services/api/instances/api-1', { address: '10.0.1.1', port: 9000 });
    assert.equal(r0.status, 201);
    const r = await get('/v1/services');
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-skein-index'), String(r.body.revision));
    const names = r.body.services.map((s: any) => s.name);
    assert.deepEqual(names, ['api', 'web'], 'sorted by name');
    const web = r.body.services.find((s: any) => s.name === 'web');
    assert.equal(web.instances, 1);
    assert.equal(web.healthy, 1);
    assert.equal(web.defined, false);
  });

  test('list instances: healthy only by default, ?all=true with status', async () => {
    // A ttl instance that reports itself unhealthy.
    const r = await put('/v1/services/web/instances/web-2', { address: '10.0.0.2', port: 8080, check: { type: 'ttl', ttl: '60s' } });
    assert.equal(r.status, 201);
    assert.equal(r.body.instance.status, 'healthy', 'ttl checks start healthy');
    const hb = await put('/v1/services/web/instances/web-2/heartbeat', { status: 'unhealthy', reason: 'draining for the test' });
    assert.equal(hb.status, 200, JSON.stringify(hb.body));
    assert.equal(hb.body.instance.status, 'unhealthy');
    assert.equal(hb.body.instance.reason, 'draining for the test');

    const healthy = await get('/v1/services/web/instances');
    assert.equal(healthy.status, 200);
    assert.deepEqual(healthy.body.instances.map((i: any) => i.id), ['web-1']);
    assert.equal(healthy.headers.get('x-skein-index'), String(healthy.body.revision));

    const all = await get('/v1/services/web/instances?all=true');
    assert.equal(all.status, 200);
    assert.deepEqual(all.body.instances.map((i: any) => [i.id, i.status]), [['web-1', 'healthy'], ['web-2', 'unhealthy']]);
    assert.equal(all.body.instances[1].reason, 'draining for the test');
    assert.equal(all.body.instances[1].check, 'ttl');
  });

  test('heartbeat: refreshes the TTL and brings the instance back', async () => {
    const hb = await put('/v1/services/web/instances/web-2/heartbeat', {});
    assert.equal(hb.status, 200);
    assert.equal(hb.body.instance.status, 'healthy');
    assert.ok(hb.body.ttlRemainingMs > 50_000 && hb.body.ttlRemainingMs <= 60_000, `ttlRemainingMs ${hb.body.ttlRemainingMs}`);
    // No body at all (no content type) is a plain heartbeat too.
    const bare = await api(base, 'PUT', '/v1/services/web/instances/web-2/heartbeat');
    assert.equal(bare.status, 200);
    assert.equal(bare.body.instance.status, 'healthy');
    const listed = await get('/v1/services/web/instances');
    assert.deepEqual(listed.body.instances.map((i: any) => i.id), ['web-1', 'web-2']);
  });

  test('deregister', async () => {
    const before = (await get('/v1/health')).body;
    const r = await api(base, 'DELETE', '/v1/services/api/instances/api-1');
    assert.equal(r.status, 200);
    assert.equal(r.body.deregistered.id, 'api-1');
    assert.ok(r.body.revision > before.revision);
    assertError(await get('/v1/services/api/instances/api-1'), 404, 'SKEIN_E_UNKNOWN_INSTANCE');
    assertError(await api(base, 'DELETE', '/v1/services/api/instances/api-1'), 404, 'SKEIN_E_UNKNOWN_INSTANCE');
    const after = (await get('/v1/health')).body;
    assert.equal(after.instances, before.instances - 1);
    // The service had no definition and no instances left: it is gone.
    assert.ok(!(await get('/v1/services')).body.services.some((s: any) => s.name === 'api'));
  });
});

describe('service definitions', () => {
  test('PUT (201, then 200 unchanged), GET, defaults applied to instances, DELETE', async () => {
    const def = { labels: { owner: 'shop' }, ports: [{ name: 'http', port: 8080 }], defaults: { weight: 5, zone: 'eu-1', labels: { team: 'cart' }, check: { type: 'ttl', ttl: '30s' } } };
    const r1 = await put('/v1/services/cart', def);
    assert.equal(r1.status, 201, JSON.stringify(r1.body));
    assert.equal(r1.body.created, true);
    assert.deepEqual(r1.body.service.ports, [{ name: 'http', port: 8080, protocol: 'http' }], 'port protocol defaults to http');
    const r2 = await put('/v1/services/cart', def);
    assert.equal(r2.status, 200);
    assert.equal(r2.body.changed, false);
    assert.equal(r2.body.revision, r1.body.revision);

    const g = await get('/v1/services/cart');
    assert.equal(g.status, 200);
    assert.equal(g.body.name, 'cart');
    assert.deepEqual(g.body.definition.labels, { owner: 'shop' });
    assert.equal(g.body.definition.defaults.weight, 5);
    assert.equal(g.body.instances, 0);

    // Defaults fill what the instance leaves out; its own values win; labels merge.
    const a = await put('/v1/services/cart/instances/cart-1', { address: '10.0.2.1', port: 8080, labels: { extra: 'yes' } });
    assert.equal(a.status, 201, JSON.stringify(a.body));
    assert.equal(a.body.instance.weight, 5);
    assert.equal(a.body.instance.zone, 'eu-1');
    assert.deepEqual(a.body.instance.labels, { team: 'cart', extra: 'yes' });
    assert.equal(a.body.instance.check, 'ttl', 'default check applied');
    const b = await put('/v1/services/cart/instances/cart-2', { address: '10.0.2.2', port: 8080, weight: 2, zone: 'eu-2', labels: { team: 'mine' } });
    assert.equal(b.body.instance.weight, 2);
    assert.equal(b.body.instance.zone, 'eu-2');
    assert.deepEqual(b.body.instance.labels, { team: 'mine' });
    const hb = await put('/v1/services/cart/instances/cart-2/heartbeat', {});
    assert.equal(hb.status, 200, 'the default ttl check takes heartbeats');

    const listed = (await get('/v1/services')).body.services.find((s: any) => s.name === 'cart');
    assert.equal(listed.defined, true);
    assert.equal(listed.instances, 2);
    assert.deepEqual(listed.labels, { owner: 'shop' });

    const d = await api(base, 'DELETE', '/v1/services/cart');
    assert.equal(d.status, 200);
    assert.equal(d.body.deleted, 'cart');
    const g2 = await get('/v1/services/cart');
    assert.equal(g2.status, 200, 'instances keep the service known');
    assert.equal(g2.body.definition, null);
    assert.equal(g2.body.instances, 2);
    assertError(await api(base, 'DELETE', '/v1/services/cart'), 404, 'SKEIN_E_UNKNOWN_SERVICE', 'service');
    // Without the definition, a new instance gets the built-in defaults.
    const c = await put('/v1/services/cart/instances/cart-3', { address: '10.0.2.3', port: 8080 });
    assert.equal(c.body.instance.weight, 1);
    assert.equal(c.body.instance.check, null);
  });

  test('a definition with a bad default is refused and changes nothing', async () => {
    const s0 = await state();
    const r = await put('/v1/services/cart', { defaults: { check: { type: 'ttl' } } });
    assertError(r, 400, 'SKEIN_E_VALIDATION', /defaults\.check\.ttl/);
    const r2 = await put('/v1/services/cart', { defaults: { wieght: 3 } });
    assertError(r2, 400, 'SKEIN_E_VALIDATION', 'defaults.wieght');
    const r3 = await put('/v1/services/cart', { name: 'other' });
    assertError(r3, 409, 'SKEIN_E_CONFLICT', 'name');
    assert.deepEqual(await state(), s0);
    assert.equal((await get('/v1/services/cart')).body.definition, null);
  });
});

describe('health, metrics, events', () => {
  test('GET /v1/health', async () => {
    const r = await get('/v1/health');
    assert.equal(r.status, 200);
    assert.equal(r.body.status, 'ok');
    assert.equal(typeof r.body.version, 'string');
    assert.equal(r.body.store, 'embedded');
    assert.equal(r.body.http, `127.0.0.1:${cp.httpPort}`);
    assert.equal(r.body.instances, 5);
    assert.equal(r.body.healthyInstances, 5);
    assert.ok(r.body.revision > 0);
    assert.equal(typeof r.body.uptimeSeconds, 'number');
  });

  test('GET /metrics: Prometheus text, OpenMetrics on request', async () => {
    const res = await fetch(`${base}/metrics`);
    assert.equal(res.status, 200);
    assert.match(String(res.headers.get('content-type')), /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    assert.match(text, /^# HELP skein_registry_instances /m);
    assert.match(text, /^# TYPE skein_registry_instances gauge$/m);
    assert.equal(metricSample(text, 'skein_registry_instances{status="healthy"}'), 5);
    assert.equal(metricSample(text, 'skein_registry_instances{status="unhealthy"}'), 0);
    assert.equal(metricSample(text, 'skein_registry_services'), 2);
    const h = (await get('/v1/health')).body;
    assert.equal(metricSample(text, 'skein_registry_revision'), h.revision);
    assert.ok((metricSample(text, 'skein_heartbeats_total') ?? 0) >= 4);
    assert.ok((metricSample(text, 'skein_store_commits_total') ?? 0) >= 1);
    assert.ok(metricSample(text, 'skein_watch_overflows_total') !== undefined);
    assert.match(text, /^skein_api_request_duration_seconds_bucket\{.*route="\/v1\/services\/:service\/instances\/:id".*\} \d+/m, 'routes by pattern');
    assert.doesNotMatch(text, /route="\/v1\/services\/web/, 'never the raw path');
    assert.doesNotMatch(text, /# EOF/);

    const om = await fetch(`${base}/metrics`, { headers: { accept: 'application/openmetrics-text; version=1.0.0,text/plain;q=0.5' } });
    assert.equal(om.status, 200);
    assert.match(String(om.headers.get('content-type')), /^application\/openmetrics-text; version=1\.0\.0/);
    const omText = await om.text();
    assert.match(omText, /^skein_registry_instances\{status="healthy"\} 5$/m);
    assert.match(omText, /# EOF\n?$/, 'OpenMetrics ends with # EOF');
    assert.match(omText, /^# TYPE skein_heartbeats counter$/m, 'OpenMetrics names counters without _total');
    assert.match(omText, /^skein_heartbeats_total \d+$/m, '... and their samples with it');
    // And plain text again afterwards (the choice is per request), with the same names as before.
    const again = await fetch(`${base}/metrics`);
    assert.match(String(again.headers.get('content-type')), /^text\/plain/);
    const againText = await again.text();
    assert.doesNotMatch(againText, /# EOF/);
    for (const name of ['skein_heartbeats_total', 'skein_watch_overflows_total', 'skein_store_commits_total']) {
      assert.notEqual(metricSample(againText, name), undefined, `${name} after an OpenMetrics scrape`);
    }
    assert.match(againText, /^# TYPE skein_heartbeats_total counter$/m);
    assert.doesNotMatch(againText, /^skein_heartbeats /m);
    // Concurrent scrapes in both formats each get their own.
    const mixed = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const r = await fetch(`${base}/metrics`, { headers: i % 2 === 1 ? { accept: 'application/openmetrics-text' } : {} });
        return { om: i % 2 === 1, type: String(r.headers.get('content-type')), text: await r.text() };
      }),
    );
    for (const m of mixed) {
      assert.equal(m.type.startsWith('application/openmetrics-text'), m.om);
      assert.equal(m.text.includes('# EOF'), m.om);
      assert.match(m.text, /^skein_watch_overflows_total 0$/m);
    }
  });

  test('GET /v1/events: status changes with time and reason', async () => {
    const t0 = Date.now();
    const r = await get('/v1/events?service=web');
    assert.equal(r.status, 200);
    const ev = r.body.events.filter((e: any) => e.id === 'web-2');
    assert.deepEqual(
      ev.map((e: any) => [e.from, e.to, e.reason]),
      [
        ['new', 'healthy', 'initial state (ttl check)'],
        ['healthy', 'unhealthy', 'draining for the test'],
        ['unhealthy', 'healthy', 'heartbeat received'],
      ],
    );
    for (const e of r.body.events) {
      assert.equal(e.service, 'web');
      assert.match(e.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.ok(Date.parse(e.time) <= t0 + 1000 && Date.parse(e.time) > t0 - 120_000);
      assert.equal(typeof e.revision, 'number');
    }
    const revs = ev.map((e: any) => e.revision);
    assert.deepEqual(revs, [...revs].sort((a: number, b: number) => a - b), 'oldest first');
    const limited = await get('/v1/events?limit=1');
    assert.equal(limited.body.events.length, 1);
    const all = await get('/v1/events');
    assert.deepEqual(limited.body.events[0], all.body.events.at(-1), 'limit keeps the most recent');
    assertError(await get('/v1/events?limit=0'), 400, 'SKEIN_E_BAD_QUERY', 'limit');
    assertError(await get('/v1/events?service=nosuch'), 404, 'SKEIN_E_UNKNOWN_SERVICE', 'service');
  });
});

describe('bad input: a 4xx naming the field, and nothing written', () => {
  const good = { address: '10.0.9.9', port: 80 };

  async function refused(fn: () => Promise<{ status: number; body: any; headers: Headers }>, status: number, code: string, field?: string | RegExp) {
    const s0 = await state();
    const r = await fn();
    assertError(r, status, code, field);
    assert.deepEqual(await state(), s0, 'a refused request changes nothing');
    assertError(await get('/v1/services/web/instances/bad-1'), 404, 'SKEIN_E_UNKNOWN_INSTANCE');
    return r;
  }

  test('malformed JSON', async () => {
    await refused(() => put('/v1/services/web/instances/bad-1', '{"address": "10.0.9.9", "port": 80'), 400, 'SKEIN_E_BAD_JSON', 'body');
    await refused(() => put('/v1/services/web/instances/bad-1', ''), 400, 'SKEIN_E_VALIDATION', 'body');
    await refused(() => put('/v1/services/web/instances/bad-1', 'null'), 400, 'SKEIN_E_VALIDATION', 'body');
    await refused(() => put('/v1/services/web/instances/bad-1', '[1,2]'), 400, 'SKEIN_E_VALIDATION');
  });

  test('wrong types', async () => {
    const r = await refused(() => put('/v1/services/web/instances/bad-1', { address: '10.0.9.9', port: '80' }), 400, 'SKEIN_E_VALIDATION', 'port');
    assert.match(r.body.message, /port/);
    await refused(() => put('/v1/services/web/instances/bad-1', { address: '10.0.9.9', port: 80.5 }), 400, 'SKEIN_E_VALIDATION', 'port');
    await refused(() => put('/v1/services/web/instances/bad-1', { address: 10, port: 80 }), 400, 'SKEIN_E_VALIDATION', 'address');
    await refused(() => put('/v1/services/web/instances/bad-1', { address: 'not-an-ip', port: 80 }), 400, 'SKEIN_E_VALIDATION', 'address');
    await refused(() => put('/v1/services/web/instances/bad-1', { ...good, labels: { k: 1 } }), 400, 'SKEIN_E_VALIDATION', 'labels.k');
    await refused(() => put('/v1/services/web/instances/bad-1', { ...good, check: { type: 'http', interval: 'soon' } }), 400, 'SKEIN_E_VALIDATION', 'check.interval');
    await refused(() => put('/v1/services/web/instances/bad-1', { port: 80 }), 400, 'SKEIN_E_VALIDATION', 'address');
  });

  test('unknown fields, top-level and nested', async () => {
    await refused(() => put('/v1/services/web/instances/bad-1', { ...good, colour: 'blue' }), 400, 'SKEIN_E_VALIDATION', 'colour');
    await refused(() => put('/v1/services/web/instances/bad-1', { ...good, check: { type: 'tcp', foo: 1 } }), 400, 'SKEIN_E_VALIDATION', 'check.foo');
    await refused(() => put('/v1/services/web/instances/web-2/heartbeat', { status: 'healthy', mood: 'ok' }), 400, 'SKEIN_E_VALIDATION', 'mood');
  });

  test('an existing instance is not touched by a refused update', async () => {
    const before = (await get('/v1/services/web/instances/web-1')).body.instance;
    await refused(() => put('/v1/services/web/instances/web-1', { address: '10.0.0.1', port: 8080, weight: 99, check: { type: 'http', bogus: true } }), 400, 'SKEIN_E_VALIDATION', 'check.bogus');
    assert.deepEqual((await get('/v1/services/web/instances/web-1')).body.instance, before);
  });

  test('oversized body (> 1 MiB)', async () => {
    const big = JSON.stringify({ ...good, labels: { a: 'x'.repeat(1024 * 1024 + 10) } });
    await refused(() => put('/v1/services/web/instances/bad-1', big), 413, 'SKEIN_E_BODY_TOO_LARGE', 'body');
  });

  test('service name that is not a DNS label, bad instance id', async () => {
    const r = await refused(() => put('/v1/services/User_Service/instances/bad-1', good), 400, 'SKEIN_E_VALIDATION', 'service');
    assert.match(r.body.message, /User_Service/);
    await refused(() => put('/v1/services/User_Service', {}), 400, 'SKEIN_E_VALIDATION', 'service');
    await refused(() => get('/v1/services/User_Service/instances'), 400, 'SKEIN_E_VALIDATION', 'service');
    await refused(() => put('/v1/services/web/instances/-bad', good), 400, 'SKEIN_E_VALIDATION', 'id');
    await refused(() => put('/v1/services/web/instances/bad-1', { ...good, service: 'Web' }), 400, 'SKEIN_E_VALIDATION', 'service');
  });

  test('ports out of range', async () => {
    await refused(() => put('/v1/services/web/instances/bad-1', { ...good, port: 0 }), 400, 'SKEIN_E_VALIDATION', 'port');
    await refused(() => put('/v1/services/web/instances/bad-1', { ...good, port: 70000 }), 400, 'SKEIN_E_VALIDATION', 'port');
    await refused(() => put('/v1/services/web/instances/bad-1', { ...good, port: -1 }), 400, 'SKEIN_E_VALIDATION', 'port');
    await refused(() => put('/v1/services/web/instances/bad-1', { ...good, check: { type: 'tcp', port: 65536 } }), 400, 'SKEIN_E_VALIDATION', 'check.port');
    await refused(() => put('/v1/services/web', { ports: [{ name: 'http', port: 0 }] }), 400, 'SKEIN_E_VALIDATION', 'ports[0].port');
  });

  test('heartbeat for an unknown instance (404) and for a non-ttl instance (409)', async () => {
    await refused(() => put('/v1/services/web/instances/bad-1/heartbeat', {}), 404, 'SKEIN_E_UNKNOWN_INSTANCE', 'id');
    await refused(() => put('/v1/services/nosuch/instances/x/heartbeat', {}), 404, 'SKEIN_E_UNKNOWN_INSTANCE', 'id');
    const r = await refused(() => put('/v1/services/web/instances/web-1/heartbeat', {}), 409, 'SKEIN_E_NO_TTL_CHECK', 'id');
    assert.match(r.body.message, /not a ttl check/);
    await refused(() => put('/v1/services/web/instances/web-2/heartbeat', { status: 'sleepy' }), 400, 'SKEIN_E_VALIDATION', 'status');
  });

  test('body id or service differing from the path (409)', async () => {
    const r = await refused(() => put('/v1/services/web/instances/bad-1', { ...good, id: 'bad-2' }), 409, 'SKEIN_E_CONFLICT', 'id');
    assert.match(r.body.message, /bad-2/);
    await refused(() => put('/v1/services/web/instances/bad-1', { ...good, service: 'cart' }), 409, 'SKEIN_E_CONFLICT', 'service');
    // Agreeing with the path is fine.
    const ok = await put('/v1/services/web/instances/ok-1', { ...good, id: 'ok-1', service: 'web' });
    assert.equal(ok.status, 201);
    assert.equal((await api(base, 'DELETE', '/v1/services/web/instances/ok-1')).status, 200);
  });

  test('unknown or repeated query parameters, bad wait and index', async () => {
    await refused(() => get('/v1/services/web/instances?foo=1'), 400, 'SKEIN_E_BAD_QUERY', 'foo');
    await refused(() => put('/v1/services/web/instances/bad-1?force=true', good), 400, 'SKEIN_E_BAD_QUERY', 'force');
    await refused(() => get('/v1/services/web/instances?all=true&all=false'), 400, 'SKEIN_E_BAD_QUERY', 'all');
    await refused(() => get('/v1/services/web/instances?all=maybe'), 400, 'SKEIN_E_BAD_QUERY', 'all');
    await refused(() => get('/v1/services/web/instances?index=1&wait=abc'), 400, 'SKEIN_E_BAD_QUERY', 'wait');
    await refused(() => get('/v1/services/web/instances?index=1&wait=-5s'), 400, 'SKEIN_E_BAD_QUERY', 'wait');
    await refused(() => get('/v1/services/web/instances?index=1&wait=11m'), 400, 'SKEIN_E_BAD_QUERY', 'wait');
    await refused(() => get('/v1/services/web/instances?index=-1'), 400, 'SKEIN_E_BAD_QUERY', 'index');
    await refused(() => get('/v1/services?index=abc'), 400, 'SKEIN_E_BAD_QUERY', 'index');
    await refused(() => get('/v1/watch?since=x'), 400, 'SKEIN_E_BAD_QUERY', 'since');
    await refused(() => get('/v1/watch?format=xml'), 400, 'SKEIN_E_BAD_QUERY', 'format');
    await refused(() => get('/v1/health?verbose=1'), 400, 'SKEIN_E_BAD_QUERY', 'verbose');
  });

  test('non-JSON content type (415)', async () => {
    await refused(() => put('/v1/services/web/instances/bad-1', '<instance/>', { 'content-type': 'application/xml' }), 415, 'SKEIN_E_UNSUPPORTED_MEDIA_TYPE');
    await refused(() => put('/v1/services/web/instances/bad-1', JSON.stringify(good), { 'content-type': 'text/plain' }), 415, 'SKEIN_E_UNSUPPORTED_MEDIA_TYPE');
    await refused(() => put('/v1/services/web/instances/bad-1', 'address=10.0.9.9&port=80', { 'content-type': 'application/x-www-form-urlencoded' }), 415, 'SKEIN_E_UNSUPPORTED_MEDIA_TYPE');
    // A JSON body with a charset is fine.
    const ok = await put('/v1/services/web/instances/ok-2', JSON.stringify(good), { 'content-type': 'application/json; charset=utf-8' });
    assert.equal(ok.status, 201);
    assert.equal((await api(base, 'DELETE', '/v1/services/web/instances/ok-2')).status, 200);
  });

  test('unknown route (404)', async () => {
    const r = await refused(() => get('/v1/nope'), 404, 'SKEIN_E_NOT_FOUND');
    assert.match(r.body.message, /\/v1\/nope/);
    await refused(() => api(base, 'POST', '/v1/services/web/instances/bad-1', good), 404, 'SKEIN_E_NOT_FOUND');
    await refused(() => get('/v2/services'), 404, 'SKEIN_E_NOT_FOUND');
  });

  test('__proto__ / constructor pollution attempts are rejected', async () => {
    await refused(() => put('/v1/services/web/instances/bad-1', '{"address":"10.0.9.9","port":80,"__proto__":{"polluted":true}}'), 400, 'SKEIN_E_BAD_JSON', 'body');
    await refused(() => put('/v1/services/web/instances/bad-1', '{"address":"10.0.9.9","port":80,"labels":{"__proto__":{"polluted":"yes"}}}'), 400, 'SKEIN_E_BAD_JSON', 'body');
    await refused(() => put('/v1/services/web/instances/bad-1', '{"address":"10.0.9.9","port":80,"constructor":{"prototype":{"polluted":true}}}'), 400, 'SKEIN_E_BAD_JSON', 'body');
    await refused(() => put('/v1/services/web', '{"defaults":{"__proto__":{"weight":3}}}'), 400, 'SKEIN_E_BAD_JSON', 'body');
    // The server still works and nothing picked up a polluted prototype.
    const r = await get('/v1/services/web/instances/web-1');
    assert.equal(r.status, 200);
    assert.equal(r.body.instance.polluted, undefined);
    assert.equal(({} as Record<string, unknown>)['polluted'], undefined);
  });

  test('a request body on a request whose socket is torn down mid-body writes nothing', async () => {
    const s0 = await state();
    const body = JSON.stringify({ ...good, labels: { a: 'x'.repeat(10_000) } });
    await new Promise<void>((resolve) => {
      const req = request({ host: '127.0.0.1', port: cp.httpPort, method: 'PUT', path: '/v1/services/web/instances/bad-1', headers: { 'content-type': 'application/json', 'content-length': String(body.length) } });
      req.on('error', () => resolve());
      req.write(body.slice(0, 5000), () => {
        req.destroy();
        resolve();
      });
    });
    // The server keeps serving, and the half-sent registration is not there.
    assert.deepEqual(await state(), s0);
  });
});

describe('traffic policy and routes', () => {
  test('a Service carries its traffic policy; a bad one is refused naming the field and the one in force stays', async () => {
    const ok = await put('/v1/services/shop', { timeouts: { request: '2s' }, retries: { maxRetries: 1 } });
    assert.equal(ok.status, 201, JSON.stringify(ok.body));
    assert.equal(ok.body.service.traffic.routes[0].requestTimeoutMs, 2000);
    const before = await state();
    for (const [body, field] of [
      [{ timeouts: { request: '-5s' } }, 'timeouts.request'],
      [{ retries: { budget: { ratio: 1.5 } } }, 'retries.budget.ratio'],
      [{ retries: { on: ['sometimes'] } }, 'retries.on[0]'],
      [{ routes: [{ name: 'a' }, { name: 'a' }] }, 'routes[1].name'],
    ] as const) {
      assertError(await put('/v1/services/shop', body), 400, 'SKEIN_E_VALIDATION', field);
    }
    assert.deepEqual(await state(), before, 'nothing written');
    const now = await get('/v1/services/shop');
    assert.equal(now.body.definition.traffic.routes[0].requestTimeoutMs, 2000, 'the policy in force is unchanged');
  });

  test('routes one at a time: put, list, replace, delete; the Service keeps them when put without routes', async () => {
    const r1 = await put('/v1/services/shop/routes/checkout', { match: { pathPrefix: '/checkout' }, timeouts: { request: '30s' } });
    assert.equal(r1.status, 201, JSON.stringify(r1.body));
    assert.equal(r1.body.created, true);
    const r2 = await put('/v1/services/shop/routes/search', { service: 'shop', name: 'search', match: { path: '/search' } });
    assert.equal(r2.status, 201, JSON.stringify(r2.body));
    const r3 = await put('/v1/services/shop/routes/checkout', { match: { pathPrefix: '/checkout' }, timeouts: { request: '40s' } });
    assert.equal(r3.status, 200, 'replaced');
    let list = await get('/v1/services/shop/routes');
    assert.deepEqual(list.body.routes.map((r: { name: string }) => r.name), ['checkout', 'search']);
    assert.equal(list.body.routes[0].timeouts.request, '40s');
    // Re-applying the Service without `routes` keeps them; the routes land in the parsed policy.
    const svc = await put('/v1/services/shop', { timeouts: { request: '3s' } });
    assert.deepEqual(svc.body.service.traffic.routes.map((r: { name: string }) => r.name), ['checkout', 'search', 'default']);
    assert.equal(svc.body.service.traffic.routes[0].requestTimeoutMs, 40_000);
    const del = await api(base, 'DELETE', '/v1/services/shop/routes/search');
    assert.equal(del.status, 200, JSON.stringify(del.body));
    list = await get('/v1/services/shop/routes');
    assert.deepEqual(list.body.routes.map((r: { name: string }) => r.name), ['checkout']);
    assertError(await api(base, 'DELETE', '/v1/services/shop/routes/search'), 404, 'SKEIN_E_UNKNOWN_ROUTE', 'name');
    const cleared = await put('/v1/services/shop', { routes: [] });
    assert.deepEqual(cleared.body.service.traffic.routes.map((r: { name: string }) => r.name), ['default'], 'routes: [] removes them');
  });

  test('bad routes: an unknown service, a bad field, a conflicting name, a route that does not fit its service', async () => {
    assert.equal((await put('/v1/services/shop', { timeouts: { request: '3s' } })).status, 200);
    const before = await state();
    assertError(await put('/v1/services/nosuch/routes/a', { match: { path: '/a' } }), 404, 'SKEIN_E_UNKNOWN_SERVICE', 'service');
    assertError(await put('/v1/services/shop/routes/a', { retries: { on: ['nope'] } }), 400, 'SKEIN_E_VALIDATION', 'retries.on[0]');
    assertError(await put('/v1/services/shop/routes/a', { name: 'b' }), 409, 'SKEIN_E_CONFLICT', 'name');
    assertError(await put('/v1/services/shop/routes/Bad_Name', {}), 400, 'SKEIN_E_VALIDATION', 'name');
    // The service's request timeout is 3 s: a per-try timeout of 5 s does not fit it.
    assertError(await put('/v1/services/shop/routes/a', { timeouts: { perTry: '5s' } }), 400, 'SKEIN_E_VALIDATION', /timeouts\.perTry/);
    assert.deepEqual(await state(), before, 'nothing written');
  });
});
