import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_TRAFFIC } from './traffic.js';
import { resourceKey } from './types.js';
import { Ajv } from 'ajv';
import { SkeinError, type ErrorCode } from '../core/errors.js';
import { loadResourceFile, parseInstance, parseResource, parseResourceFile, parseService, serviceToRaw } from './parse.js';
import { resourceFileJsonSchema } from './schema.js';
import type { HealthCheck, Instance } from './types.js';

const base = { id: 'web-1', service: 'web', address: '10.0.0.1', port: 8080 };

function deepFrozen(v: unknown, path = '(root)'): void {
  if (typeof v !== 'object' || v === null) return;
  assert.ok(Object.isFrozen(v), `${path} is not frozen`);
  for (const [k, x] of Object.entries(v)) deepFrozen(x, `${path}.${k}`);
}

/** Asserts fn throws a SkeinError with this code and field; returns it for further checks. */
function fails(fn: () => unknown, code: ErrorCode, field?: string): SkeinError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof SkeinError, `expected a SkeinError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (field !== undefined) assert.equal(caught.field, field, caught.message);
  return caught;
}

function problemFields(e: SkeinError): string[] {
  return (e.details as Array<{ field: string }>).map((p) => p.field);
}

// ---- instances ----

test('a minimal instance gets its defaults', () => {
  const i = parseInstance(base);
  assert.deepEqual(i, { ...base, weight: 1, zone: '', version: '', labels: {}, check: null });
});

test('an instance keeps the values it sets', () => {
  const i = parseInstance({ ...base, address: '::1', weight: 0, zone: 'eu-1a', version: 'v2', labels: { team: 'shop', 'app.kubernetes.io/name': 'web' } });
  assert.equal(i.address, '::1');
  assert.equal(i.weight, 0, 'weight 0 (drain) is kept, not defaulted');
  assert.equal(i.zone, 'eu-1a');
  assert.equal(i.version, 'v2');
  assert.deepEqual(i.labels, { team: 'shop', 'app.kubernetes.io/name': 'web' });
});

test('http and tcp check defaults', () => {
  for (const type of ['http', 'tcp'] as const) {
    const c = parseInstance({ ...base, check: { type } }).check as HealthCheck;
    assert.deepEqual(c, {
      type,
      path: '/health',
      method: 'GET',
      expectedStatus: { min: 200, max: 399 },
      port: null,
      intervalMs: 10_000,
      timeoutMs: 2_000,
      ttlMs: 0,
      healthyThreshold: 1,
      unhealthyThreshold: 3,
      initialState: 'unhealthy',
      deregisterAfterMs: null,
    });
  }
});

test('ttl check defaults: healthy at registration', () => {
  const c = parseInstance({ ...base, check: { type: 'ttl', ttl: '30s' } }).check as HealthCheck;
  assert.equal(c.type, 'ttl');
  assert.equal(c.ttlMs, 30_000);
  assert.equal(c.initialState, 'healthy');
  assert.equal(c.healthyThreshold, 1);
  assert.equal(c.unhealthyThreshold, 1);
  assert.equal(c.deregisterAfterMs, null);
});

test('check values are converted: durations to ms, status ranges to min/max', () => {
  const c = parseInstance({
    ...base,
    check: {
      type: 'http',
      path: '/ready?x=1',
      method: 'HEAD',
      expectedStatus: '204',
      port: 9000,
      interval: '1m30s',
      timeout: '250ms',
      healthyThreshold: 2,
      unhealthyThreshold: 5,
      initialState: 'healthy',
      deregisterAfter: '1h',
    },
  }).check as HealthCheck;
  assert.equal(c.path, '/ready?x=1');
  assert.equal(c.method, 'HEAD');
  assert.deepEqual(c.expectedStatus, { min: 204, max: 204 });
  assert.equal(c.port, 9000);
  assert.equal(c.intervalMs, 90_000);
  assert.equal(c.timeoutMs, 250);
  assert.equal(c.healthyThreshold, 2);
  assert.equal(c.unhealthyThreshold, 5);
  assert.equal(c.initialState, 'healthy');
  assert.equal(c.deregisterAfterMs, 3_600_000);
  const range = parseInstance({ ...base, check: { type: 'http', expectedStatus: '200-204' } }).check as HealthCheck;
  assert.deepEqual(range.expectedStatus, { min: 200, max: 204 });
});

test('parsed instances are deeply frozen', () => {
  const i = parseInstance({ ...base, labels: { a: 'b' }, check: { type: 'http' } });
  deepFrozen(i);
  assert.throws(() => {
    (i as { port: number }).port = 1;
  }, TypeError);
  assert.throws(() => {
    (i.labels as Record<string, string>)['a'] = 'c';
  }, TypeError);
});

test('the input object is not frozen or aliased', () => {
  const raw = { ...base, labels: { a: 'b' } };
  const i = parseInstance(raw);
  assert.ok(!Object.isFrozen(raw));
  assert.ok(!Object.isFrozen(raw.labels));
  raw.labels.a = 'changed';
  assert.equal(i.labels['a'], 'b');
});

test('service defaults are merged under the instance values', () => {
  const defaults = { weight: 5, zone: 'z1', version: 'v1', labels: { team: 'a', tier: 'front' }, check: { type: 'tcp', interval: '5s' } };
  const inherited = parseInstance(base, { defaults });
  assert.equal(inherited.weight, 5);
  assert.equal(inherited.zone, 'z1');
  assert.equal(inherited.version, 'v1');
  assert.deepEqual(inherited.labels, { team: 'a', tier: 'front' });
  assert.equal(inherited.check?.type, 'tcp');
  assert.equal(inherited.check?.intervalMs, 5000);

  const own = parseInstance({ ...base, weight: 0, zone: 'z2', version: 'v2', labels: { team: 'b' }, check: { type: 'ttl', ttl: '10s' } }, { defaults });
  assert.equal(own.weight, 0);
  assert.equal(own.zone, 'z2');
  assert.equal(own.version, 'v2');
  assert.deepEqual(own.labels, { team: 'b', tier: 'front' }, 'labels merge key by key, the instance winning');
  assert.equal(own.check?.type, 'ttl', 'the instance check replaces the default check whole');
  assert.equal(own.check?.ttlMs, 10_000);
});

test('an invalid default check is reported as coming from the service', () => {
  const e = fails(() => parseInstance(base, { defaults: { check: { type: 'tcp', bogus: 1 } } }), 'SKEIN_E_VALIDATION');
  assert.match(String(e.field), /^defaults\.check \(of the service\)/);
  assert.match(e.message, /bogus is not a known field/);
});

test('id and service may come from the path; the body must agree', () => {
  const i = parseInstance({ address: '10.0.0.1', port: 1 }, { service: 'web', id: 'w1' });
  assert.equal(i.service, 'web');
  assert.equal(i.id, 'w1');
  assert.equal(parseInstance({ ...base }, { service: 'web', id: 'web-1' }).id, 'web-1');
  const e = fails(() => parseInstance({ ...base, service: 'api' }, { service: 'web', id: 'web-1' }), 'SKEIN_E_CONFLICT', 'service');
  assert.match(e.message, /\(api\) differs from the path \(web\)/);
  fails(() => parseInstance({ ...base, id: 'other' }, { service: 'web', id: 'web-1' }), 'SKEIN_E_CONFLICT', 'id');
  assert.equal(new SkeinError('SKEIN_E_CONFLICT', 'x').status, 409);
});

test('unknown fields are named by their path', () => {
  let e = fails(() => parseInstance({ ...base, colour: 'red' }), 'SKEIN_E_VALIDATION', 'colour');
  assert.match(e.message, /colour is not a known field/);
  e = fails(() => parseInstance({ ...base, check: { type: 'http', foo: 1 } }), 'SKEIN_E_VALIDATION', 'check.foo');
  assert.match(e.message, /^invalid instance: check\.foo is not a known field/);
});

test('wrong types are named by their path', () => {
  let e = fails(() => parseInstance({ ...base, port: '8080' }), 'SKEIN_E_VALIDATION', 'port');
  assert.match(e.message, /port must be an integer/);
  fails(() => parseInstance({ ...base, weight: 1.5 }), 'SKEIN_E_VALIDATION', 'weight');
  fails(() => parseInstance({ ...base, labels: { a: 1 } }), 'SKEIN_E_VALIDATION', 'labels.a');
  fails(() => parseInstance({ ...base, check: { type: 'http', healthyThreshold: 'two' } }), 'SKEIN_E_VALIDATION', 'check.healthyThreshold');
  e = fails(() => parseInstance({ ...base, check: { type: 'grpc' } }), 'SKEIN_E_VALIDATION', 'check.type');
  assert.match(e.message, /must be one of "http", "tcp", "ttl"/);
  fails(() => parseInstance('not an object'), 'SKEIN_E_VALIDATION', '(root)');
});

test('missing required fields are named', () => {
  for (const f of ['id', 'service', 'address', 'port'] as const) {
    const raw: Record<string, unknown> = { ...base };
    delete raw[f];
    const e = fails(() => parseInstance(raw), 'SKEIN_E_VALIDATION', f);
    assert.match(e.message, new RegExp(`${f} is required`));
  }
  fails(() => parseInstance({ ...base, check: { interval: '1s' } }), 'SKEIN_E_VALIDATION', 'check.type');
});

test('every problem is listed in details, the first in field and message', () => {
  const e = fails(() => parseInstance({ ...base, port: 0, weight: -1, extra: true }), 'SKEIN_E_VALIDATION');
  assert.deepEqual(problemFields(e).sort(), ['extra', 'port', 'weight']);
  assert.match(e.message, /\(and 2 more\)$/);
});

test('ports out of range', () => {
  for (const port of [0, 65536, -1]) {
    const e = fails(() => parseInstance({ ...base, port }), 'SKEIN_E_VALIDATION', 'port');
    assert.match(e.message, /port must be [<>]=/);
  }
  assert.equal(parseInstance({ ...base, port: 1 }).port, 1);
  assert.equal(parseInstance({ ...base, port: 65535 }).port, 65535);
  fails(() => parseInstance({ ...base, check: { type: 'tcp', port: 65536 } }), 'SKEIN_E_VALIDATION', 'check.port');
});

test('service names must be DNS labels', () => {
  for (const service of ['User_Service', '-a', 'a-', 'Web', 'a.b', '', 'a'.repeat(64)]) {
    const e = fails(() => parseInstance({ ...base, service }), 'SKEIN_E_VALIDATION', 'service');
    assert.match(e.message, /service must be a DNS label \(a-z, 0-9/);
    fails(() => parseService({ name: service }), 'SKEIN_E_VALIDATION', 'name');
  }
  for (const service of ['a', 'a-b', '0web', 'a'.repeat(63)]) assert.equal(parseInstance({ ...base, service }).service, service);
});

test('instance ids: letters, digits, . _ -', () => {
  assert.equal(parseInstance({ ...base, id: 'Web_1.a-b' }).id, 'Web_1.a-b');
  for (const id of ['-x', 'x-', 'a b', 'a/b', '']) fails(() => parseInstance({ ...base, id }), 'SKEIN_E_VALIDATION', 'id');
});

test('bad durations are named', () => {
  let e = fails(() => parseInstance({ ...base, check: { type: 'http', interval: '10 seconds' } }), 'SKEIN_E_VALIDATION', 'check.interval');
  assert.match(e.message, /check\.interval must be a duration such as "500ms"/);
  fails(() => parseInstance({ ...base, check: { type: 'http', timeout: '5' } }), 'SKEIN_E_VALIDATION', 'check.timeout');
  e = fails(() => parseInstance({ ...base, check: { type: 'http', interval: '50ms' } }), 'SKEIN_E_VALIDATION', 'check.interval');
  assert.match(e.message, /at least 100ms/);
  e = fails(() => parseInstance({ ...base, check: { type: 'ttl', ttl: '500ms' } }), 'SKEIN_E_VALIDATION', 'check.ttl');
  assert.match(e.message, /at least 1s/);
  e = fails(() => parseInstance({ ...base, check: { type: 'http', timeout: '25h' } }), 'SKEIN_E_VALIDATION', 'check.timeout');
  assert.match(e.message, /at most 24h/);
});

test('a ttl check needs ttl, and takes no http/tcp fields', () => {
  let e = fails(() => parseInstance({ ...base, check: { type: 'ttl' } }), 'SKEIN_E_VALIDATION', 'check.ttl');
  assert.match(e.message, /check\.ttl is required for a ttl check/);
  e = fails(() => parseInstance({ ...base, check: { type: 'ttl', ttl: '10s', interval: '5s' } }), 'SKEIN_E_VALIDATION', 'check.interval');
  assert.match(e.message, /not ttl/);
  fails(() => parseInstance({ ...base, check: { type: 'http', ttl: '10s' } }), 'SKEIN_E_VALIDATION', 'check.ttl');
});

test('http-only fields on a tcp check are refused', () => {
  for (const [f, v] of [['path', '/x'], ['method', 'HEAD'], ['expectedStatus', '200']] as const) {
    const e = fails(() => parseInstance({ ...base, check: { type: 'tcp', [f]: v } }), 'SKEIN_E_VALIDATION', `check.${f}`);
    assert.match(e.message, /applies to http checks only/);
  }
});

test('expectedStatus must be a status or an ascending range', () => {
  fails(() => parseInstance({ ...base, check: { type: 'http', expectedStatus: '600' } }), 'SKEIN_E_VALIDATION', 'check.expectedStatus');
  fails(() => parseInstance({ ...base, check: { type: 'http', expectedStatus: '2xx' } }), 'SKEIN_E_VALIDATION', 'check.expectedStatus');
  const e = fails(() => parseInstance({ ...base, check: { type: 'http', expectedStatus: '399-200' } }), 'SKEIN_E_VALIDATION', 'check.expectedStatus');
  assert.match(e.message, /range start is above its end/);
});

test('the address must be an IP address', () => {
  for (const address of ['localhost', 'example.com', '10.0.0', '10.0.0.256', '::g']) {
    const e = fails(() => parseInstance({ ...base, address }), 'SKEIN_E_VALIDATION', 'address');
    assert.match(e.message, /address must be an IPv4 or IPv6 address/);
  }
  fails(() => parseInstance({ ...base, address: '' }), 'SKEIN_E_VALIDATION', 'address');
});

test('a prefix is prepended to field paths', () => {
  const e = fails(() => parseInstance({ ...base, check: { type: 'http', foo: 1 } }, { prefix: 'items[2]' }), 'SKEIN_E_VALIDATION', 'items[2].check.foo');
  assert.match(e.message, /items\[2\]\.check\.foo/);
});

// ---- services ----

test('a service gets its defaults and is deeply frozen', () => {
  const s = parseService({ name: 'web' });
  assert.deepEqual(s, { name: 'web', ports: [], labels: {}, defaults: {}, balancer: { kind: 'peak-ewma', hashKey: null }, traffic: DEFAULT_TRAFFIC, trafficRaw: {}, authorization: { default: null, policies: [] }, mtlsMode: null, protocol: 'http' });
  const full = parseService({
    name: 'web',
    ports: [{ name: 'http', port: 80 }, { name: 'grpc', port: 81, protocol: 'grpc' }],
    labels: { team: 'x' },
    defaults: { weight: 3, check: { type: 'http' } },
  });
  assert.deepEqual(full.ports, [{ name: 'http', port: 80, protocol: 'http' }, { name: 'grpc', port: 81, protocol: 'grpc' }]);
  assert.deepEqual(full.defaults, { weight: 3, check: { type: 'http' } });
  deepFrozen(s);
  deepFrozen(full.ports);
  deepFrozen(full.labels);
  assert.ok(Object.isFrozen(full.defaults));
});

test('service errors name the field', () => {
  fails(() => parseService({ name: 'web', ports: [{ name: 'http', port: 0 }] }), 'SKEIN_E_VALIDATION', 'ports[0].port');
  fails(() => parseService({ name: 'web', ports: [{ name: 'http', port: 80, tls: true }] }), 'SKEIN_E_VALIDATION', 'ports[0].tls');
  const e = fails(() => parseService({ name: 'web', ports: [{ name: 'a', port: 1 }, { name: 'a', port: 2 }] }), 'SKEIN_E_VALIDATION', 'ports[1].name');
  assert.match(e.message, /duplicates port name "a"/);
  fails(() => parseService({ name: 'web', defaults: { check: { type: 'ttl' } } }), 'SKEIN_E_VALIDATION', 'defaults.check.ttl');
  fails(() => parseService({ name: 'web', defaults: { check: { type: 'tcp', foo: 1 } } }), 'SKEIN_E_VALIDATION', 'defaults.check.foo');
  fails(() => parseService({ name: 'web', defaults: { address: '1.2.3.4' } }), 'SKEIN_E_VALIDATION', 'defaults.address');
  fails(() => parseService({}), 'SKEIN_E_VALIDATION', 'name');
});

test('a service name may come from the path; the body must agree', () => {
  assert.equal(parseService({}, { name: 'web' }).name, 'web');
  fails(() => parseService({ name: 'api' }, { name: 'web' }), 'SKEIN_E_CONFLICT', 'name');
});

// ---- resources and files ----

test('parseResource reads the envelope', () => {
  const r = parseResource({ apiVersion: 'skein/v1', kind: 'Instance', ...base });
  assert.equal(r.kind, 'Instance');
  deepFrozen(r);
  assert.equal(parseResource({ kind: 'Service', name: 'web' }).kind, 'Service');
  fails(() => parseResource({ kind: 'Gateway', name: 'x' }), 'SKEIN_E_VALIDATION', 'kind');
  fails(() => parseResource({ name: 'x' }), 'SKEIN_E_VALIDATION', 'kind');
  fails(() => parseResource({ apiVersion: 'skein/v2', kind: 'Service', name: 'x' }), 'SKEIN_E_VALIDATION', 'apiVersion');
  fails(() => parseResource([]), 'SKEIN_E_VALIDATION', '(root)');
});

const YAML_FILE = `apiVersion: skein/v1
kind: Service
name: web
defaults:
  weight: 2
---
kind: Instance
id: web-1
service: web
address: 10.0.0.1
port: 8080
check:
  type: http
  path: /healthz
---
# an empty document is skipped
---
- kind: Instance
  id: web-2
  service: web
  address: 10.0.0.2
  port: 8080
- kind: Service
  name: api
`;

test('parseResourceFile reads multi-document YAML, lists included', () => {
  const rs = parseResourceFile(YAML_FILE, 'mesh.yaml');
  assert.deepEqual(
    rs.map((r) => resourceKey(r)),
    ['Service/web', 'Instance/web/web-1', 'Instance/web/web-2', 'Service/api'],
  );
  const inst = rs[1] as { kind: 'Instance' } & Instance;
  assert.equal(inst.check?.path, '/healthz');
  assert.equal(inst.weight, 1, 'file resources are parsed on their own (defaults apply at registration)');
  for (const r of rs) deepFrozen(r);
});

test('parseResourceFile reads JSON, one resource or an array', () => {
  const one = parseResourceFile(JSON.stringify({ kind: 'Service', name: 'web' }), 'one.json');
  assert.equal(one.length, 1);
  const many = parseResourceFile(JSON.stringify([{ kind: 'Service', name: 'web' }, { kind: 'Instance', ...base }]), 'many.json');
  assert.deepEqual(many.map((r) => r.kind), ['Service', 'Instance']);
  assert.deepEqual(parseResourceFile('', 'empty.yaml'), []);
});

test('loadResourceFile keeps the raw fields without the envelope', () => {
  const [first] = loadResourceFile('kind: Instance\napiVersion: skein/v1\nid: a\nservice: web\naddress: 10.0.0.1\nport: 1\n', 'f.yaml');
  assert.deepEqual(first?.raw, { id: 'a', service: 'web', address: '10.0.0.1', port: 1 });
});

test('malformed YAML: SKEIN_E_BAD_YAML naming the file', () => {
  for (const text of ['kind: Service\nname: [unclosed\n', 'a: 1\na: 2\n', '{"kind": "Service",', 'kind: Service\n  name: bad-indent\n']) {
    const e = fails(() => parseResourceFile(text, 'broken.yaml'), 'SKEIN_E_BAD_YAML', 'broken.yaml');
    assert.match(e.message, /^broken\.yaml: /);
    assert.equal(e.status, 400);
  }
});

test('file errors name the file, the resource (index, kind, name) and the field', () => {
  const text = `kind: Service
name: web
---
kind: Instance
id: web-1
service: web
address: 10.0.0.1
port: 8080
check:
  type: http
  foo: 1
`;
  const e = fails(() => parseResourceFile(text, 'shop.yaml'), 'SKEIN_E_VALIDATION', 'shop.yaml: resource [1] Instance: check.foo');
  assert.match(e.message, /^shop\.yaml: resource \[1\] Instance "web-1": invalid instance: check\.foo is not a known field/);
  assert.deepEqual(problemFields(e), ['check.foo']);

  const svc = fails(() => parseResourceFile('- kind: Service\n  name: User_Service\n', 'svc.yaml'), 'SKEIN_E_VALIDATION', 'svc.yaml: resource [0] Service: name');
  assert.match(svc.message, /^svc\.yaml: resource \[0\] Service "User_Service": invalid service: name must be a DNS label/);

  const notObj = fails(() => parseResourceFile('- 42\n', 'n.yaml'), 'SKEIN_E_VALIDATION', 'n.yaml: resource [0]: (root)');
  assert.match(notObj.message, /^n\.yaml: resource \[0\]: /);

  fails(() => parseResourceFile('kind: Thing\nname: x\n', 'k.yaml'), 'SKEIN_E_VALIDATION', 'k.yaml: resource [0] Thing: kind');
});

test('duplicate resources in a file are refused', () => {
  const dupInst = JSON.stringify([
    { kind: 'Instance', ...base },
    { kind: 'Instance', ...base, port: 9090 },
  ]);
  let e = fails(() => parseResourceFile(dupInst, 'd.json'), 'SKEIN_E_VALIDATION', 'd.json: resource [1] Instance: id');
  assert.match(e.message, /duplicates Instance\/web\/web-1/);
  e = fails(() => parseResourceFile('kind: Service\nname: web\n---\nkind: Service\nname: web\n', 'd.yaml'), 'SKEIN_E_VALIDATION', 'd.yaml: resource [1] Service: name');
  assert.match(e.message, /duplicates Service\/web/);
  // the same id in two services is no duplicate
  assert.equal(parseResourceFile(JSON.stringify([{ kind: 'Instance', ...base }, { kind: 'Instance', ...base, service: 'api' }]), 'ok.json').length, 2);
});

// ---- JSON Schema ----

test('resourceFileJsonSchema compiles and agrees with parse on valid and unknown fields', () => {
  // The schema declares draft-07, what editors (yaml-language-server) support best.
  const ajv = new Ajv({ strict: false });
  const validate = ajv.compile(resourceFileJsonSchema());
  const good = [
    { apiVersion: 'skein/v1', kind: 'Service', name: 'web', ports: [{ name: 'http', port: 80 }], defaults: { weight: 2 } },
    { kind: 'Instance', ...base, check: { type: 'ttl', ttl: '10s' } },
  ];
  assert.ok(validate(good), JSON.stringify(validate.errors));
  assert.equal(parseResourceFile(JSON.stringify(good), 'good.json').length, 2);
  assert.ok(validate(good[0]), 'one resource alone is a valid file');

  const unknownTop = [{ ...good[0], colour: 'red' }];
  assert.equal(validate(unknownTop), false);
  fails(() => parseResourceFile(JSON.stringify(unknownTop), 'bad.json'), 'SKEIN_E_VALIDATION', 'bad.json: resource [0] Service: colour');

  const unknownNested = { kind: 'Instance', ...base, check: { type: 'http', foo: 1 } };
  assert.equal(validate(unknownNested), false);
  assert.equal(validate({ kind: 'Gateway', name: 'x' }), false);
  assert.equal(validate({ kind: 'Instance', ...base, port: 65536 }), false);
});

test('label keys must match the label key pattern', () => {
  assert.throws(
    () => parseInstance({ id: 'a', service: 'web', address: '127.0.0.1', port: 80, labels: { 'bad key!': 'x' } }),
    (e: unknown) => e instanceof SkeinError && e.field === 'labels.bad key!' && /is not a label key \(letters, digits/.test(e.message),
  );
});

test('a Service chooses its balancer: default peak-ewma; hash key required for ring-hash and maglev', () => {
  assert.deepEqual(parseService({ name: 'web' }).balancer, { kind: 'peak-ewma', hashKey: null });
  const ring = parseService({ name: 'web', balancer: { kind: 'ring-hash', hashKey: { type: 'header', name: 'x-user' } } });
  assert.deepEqual(ring.balancer, { kind: 'ring-hash', hashKey: { type: 'header', name: 'x-user' } });
  assert.ok(Object.isFrozen(ring.balancer));
  const field = (raw: unknown) => {
    try {
      parseService(raw);
    } catch (e) {
      return (e as SkeinError).field;
    }
    return 'no error';
  };
  assert.equal(field({ name: 'web', balancer: { kind: 'maglev' } }), 'balancer.hashKey');
  assert.equal(field({ name: 'web', balancer: { kind: 'round-robin', hashKey: { type: 'source-address' } } }), 'balancer.hashKey');
  assert.equal(field({ name: 'web', balancer: { kind: 'ring-hash', hashKey: { type: 'cookie' } } }), 'balancer.hashKey.name');
  assert.equal(field({ name: 'web', balancer: { kind: 'fastest' } }), 'balancer.kind');
});

test('serviceToRaw round-trips through parseService', () => {
  const def = parseService({
    name: 'web',
    ports: [{ name: 'http', port: 80 }],
    labels: { team: 'a' },
    defaults: { weight: 3 },
    balancer: { kind: 'maglev', hashKey: { type: 'source-address' } },
  });
  assert.deepEqual(parseService(serviceToRaw(def)), def);
  const plain = parseService({ name: 'api' });
  assert.deepEqual(parseService(serviceToRaw(plain)), plain);
});

test("a service's protocol: its own field, else its ports' when they all agree, else http; written back only when not http", () => {
  assert.equal(parseService({ name: 'db', protocol: 'tcp' }).protocol, 'tcp');
  assert.equal(parseService({ name: 'db', ports: [{ name: 'mysql', port: 3306, protocol: 'tcp' }] }).protocol, 'tcp');
  assert.equal(parseService({ name: 'db', ports: [{ name: 'mysql', port: 3306, protocol: 'tcp' }, { name: 'admin', port: 8080 }] }).protocol, 'http');
  assert.equal(parseService({ name: 'db', protocol: 'http', ports: [{ name: 'mysql', port: 3306, protocol: 'tcp' }] }).protocol, 'http');
  assert.equal(serviceToRaw(parseService({ name: 'db', protocol: 'tcp' })).protocol, 'tcp');
  assert.equal('protocol' in serviceToRaw(parseService({ name: 'web' })), false);
  assert.throws(() => parseService({ name: 'db', protocol: 'udp' }), (e: SkeinError) => e.code === 'SKEIN_E_VALIDATION' && JSON.stringify(e.details).includes('protocol'));
  assert.equal(parseService({ name: 'db', timeouts: { tcpIdle: '90s' } }).traffic.tcpIdleTimeoutMs, 90_000);
  assert.equal(parseService({ name: 'db' }).traffic.tcpIdleTimeoutMs, 3_600_000);
});
