import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ajv } from 'ajv';
import { SkeinError, type ErrorCode } from '../core/errors.js';
import { MESH_BALANCER_KINDS, meshFileJsonSchema, parseMesh, parseMeshFile, replicaInstance, serviceCwd, startOrder, type MeshFile } from './mesh.js';
import { parseInstance } from './parse.js';
import { INBOUND_PROXY_LABEL } from './names.js';

function deepFrozen(v: unknown, path = '(root)'): void {
  if (typeof v !== 'object' || v === null) return;
  assert.ok(Object.isFrozen(v), `${path} is not frozen`);
  for (const [k, x] of Object.entries(v)) deepFrozen(x, `${path}.${k}`);
}

function fails(fn: () => unknown, code: ErrorCode = 'SKEIN_E_VALIDATION'): SkeinError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof SkeinError, `expected a SkeinError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  return caught;
}

/** A mesh file with one service "web" whose fields are `svc` (YAML flow text is JSON). */
function meshWith(svc: Record<string, unknown>, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ apiVersion: 'skein/v1', kind: 'Mesh', name: 'shop', services: { web: { command: 'node', ...svc } }, ...extra });
}

function message(text: string): string {
  return fails(() => parseMeshFile(text, 'shop.yaml')).message;
}

const SHOP = `
apiVersion: skein/v1
kind: Mesh
name: shop
control:
  http: 127.0.0.1:7400
  dns: "off"
  domain: shop.internal
services:
  user-service:
    command: python3
    args: [user_service.py]
    cwd: examples/shop
    env: { PYTHONUNBUFFERED: "1" }
    replicas: 3
    readiness: { type: http, path: /ready, interval: 200ms, timeout: 1s, initialDelay: 100ms, deadline: 30s }
    balancer: { kind: ring-hash, hashKey: { type: header, name: x-user-id } }
    weight: 5
    zone: eu-1
    version: v1
    labels: { team: accounts }
    restart: { backoff: { base: 200ms, cap: 10s }, resetAfter: 1m, maxRestarts: 5 }
    stopTimeout: 5s
  product-service:
    command: python3
    args: [product_service.py]
    port: { env: LISTEN_PORT }
    balancer: { kind: maglev, hashKey: { type: source-address } }
  frontend:
    command: node
    args: [frontend.js, --verbose]
    dependsOn: [user-service, product-service]
`;

test('a full mesh file parses into frozen objects, in file order', () => {
  const m = parseMeshFile(SHOP, 'shop.yaml');
  deepFrozen(m);
  assert.equal(m.name, 'shop');
  assert.deepEqual(m.control, { http: '127.0.0.1:7400', dns: 'off', domain: 'shop.internal' });
  assert.deepEqual(
    m.services.map((s) => s.name),
    ['user-service', 'product-service', 'frontend'],
  );
  const [user, product, frontend] = m.services;
  assert.deepEqual(user, {
    name: 'user-service',
    command: 'python3',
    args: ['user_service.py'],
    cwd: 'examples/shop',
    env: { PYTHONUNBUFFERED: '1' },
    replicas: 3,
    port: { env: 'PORT' },
    readiness: { type: 'http', path: '/ready', intervalMs: 200, timeoutMs: 1000, initialDelayMs: 100, deadlineMs: 30_000 },
    balancer: { kind: 'ring-hash', hashKey: { type: 'header', name: 'x-user-id' } },
    weight: 5,
    zone: 'eu-1',
    version: 'v1',
    labels: { team: 'accounts' },
    restart: { baseMs: 200, capMs: 10_000, resetAfterMs: 60_000, maxRestarts: 5 },
    stopTimeoutMs: 5000,
    rollout: { maxSurge: { percent: 25 }, maxUnavailable: { percent: 25 }, minReadyMs: 0, progressDeadlineMs: 600000 },
    canary: null,
    traffic: {},
    authorization: null,
    mtlsMode: null,
    protocol: 'http',
    dependsOn: [],
  });
  assert.deepEqual(product?.port, { env: 'LISTEN_PORT' });
  assert.deepEqual(product?.balancer, { kind: 'maglev', hashKey: { type: 'source-address' } });
  assert.deepEqual(frontend?.args, ['frontend.js', '--verbose']);
  assert.deepEqual(frontend?.dependsOn, ['user-service', 'product-service']);
});

test('a minimal service gets every default', () => {
  const m = parseMeshFile('kind: Mesh\nname: m\nservices:\n  web:\n    command: ./server\n', 'm.yaml');
  assert.deepEqual(m.control, { http: null, dns: null, domain: null });
  assert.deepEqual(m.services[0], {
    name: 'web',
    command: './server',
    args: [],
    cwd: null,
    env: {},
    replicas: 1,
    port: { env: 'PORT' },
    readiness: { type: 'tcp', path: '/health', intervalMs: 500, timeoutMs: 1000, initialDelayMs: 0, deadlineMs: 60_000 },
    balancer: { kind: 'peak-ewma', hashKey: null },
    weight: 1,
    zone: '',
    version: '',
    labels: {},
    restart: { baseMs: 1000, capMs: 30_000, resetAfterMs: 30_000, maxRestarts: null },
    stopTimeoutMs: 10_000,
    rollout: { maxSurge: { percent: 25 }, maxUnavailable: { percent: 25 }, minReadyMs: 0, progressDeadlineMs: 600000 },
    canary: null,
    traffic: {},
    authorization: null,
    mtlsMode: null,
    protocol: 'http',
    dependsOn: [],
  });
});

test('errors name the file, the service and the field', () => {
  const e = fails(() => parseMeshFile(meshWith({ replicas: 101 }).replace('"web"', '"user-service"'), 'shop.yaml'));
  assert.equal(e.message, 'shop.yaml: service "user-service": replicas must be <= 100');
  assert.equal(e.field, 'services.user-service.replicas');
  assert.deepEqual(e.details, [{ field: 'services.user-service.replicas', message: 'must be <= 100', service: 'user-service' }]);
  assert.equal(message(meshWith({ replicas: -1 })), 'shop.yaml: service "web": replicas must be >= 0');
  assert.equal(message(meshWith({ replicas: 1.5 })), 'shop.yaml: service "web": replicas must be an integer');
  assert.equal(message(meshWith({ colour: 'blue' })), 'shop.yaml: service "web": colour is not a known field');
  assert.equal(message(meshWith({ readiness: { type: 'http', extra: 1 } })), 'shop.yaml: service "web": readiness.extra is not a known field');
  assert.equal(message(meshWith({ args: ['-p', 8080] })), 'shop.yaml: service "web": args[1] must be a string (quote numbers and booleans in YAML)');
  assert.equal(message(meshWith({ env: { DEBUG: true } })), 'shop.yaml: service "web": env.DEBUG must be a string (quote numbers and booleans in YAML)');
});

test('a missing command, a bad service name and top-level mistakes', () => {
  const noCommand = JSON.stringify({ kind: 'Mesh', name: 'm', services: { web: { args: [] } } });
  assert.equal(message(noCommand), 'shop.yaml: service "web": command is required');
  const badName = JSON.stringify({ kind: 'Mesh', name: 'm', services: { User_Service: { command: 'x' } } });
  assert.match(message(badName), /^shop\.yaml: services\.User_Service names the service "User_Service", which must be a DNS label/);
  assert.equal(message(JSON.stringify({ kind: 'Service', name: 'm', services: { a: { command: 'x' } } })), 'shop.yaml: kind must be "Mesh"');
  assert.equal(message(JSON.stringify({ apiVersion: 'skein/v2', kind: 'Mesh', name: 'm', services: { a: { command: 'x' } } })), 'shop.yaml: apiVersion must be "skein/v1"');
  assert.equal(message(JSON.stringify({ kind: 'Mesh', services: { a: { command: 'x' } } })), 'shop.yaml: name is required');
  assert.equal(message(JSON.stringify({ kind: 'Mesh', name: 'm', services: {} })), 'shop.yaml: services must have at least 1 entry');
  assert.equal(message(JSON.stringify({ kind: 'Mesh', name: 'm', services: { a: { command: 'x' } }, proxy: {} })), 'shop.yaml: proxy is not a known field');
  assert.equal(message('- a\n- b\n'), 'shop.yaml: (root) must be a mapping (apiVersion, kind: Mesh, name, services)');
});

test('several problems: the first in the message, all in details', () => {
  const e = fails(() => parseMeshFile(meshWith({ replicas: 1000, stopTimeout: 'soon', weight: -1 }), 'shop.yaml'));
  assert.match(e.message, /^shop\.yaml: service "web": .* \(and 2 more\)$/);
  assert.deepEqual((e.details as Array<{ field: string }>).map((d) => d.field).sort(), [
    'services.web.replicas',
    'services.web.stopTimeout',
    'services.web.weight',
  ]);
});

test('durations are checked for form and bounds', () => {
  assert.equal(message(meshWith({ readiness: { interval: '5' } })), 'shop.yaml: service "web": readiness.interval must be a duration such as "500ms", "10s" or "1m30s"');
  assert.equal(message(meshWith({ readiness: { interval: '10ms' } })), 'shop.yaml: service "web": readiness.interval must be at least 100ms');
  assert.equal(message(meshWith({ readiness: { deadline: '25h' } })), 'shop.yaml: service "web": readiness.deadline must be at most 24h');
  assert.equal(message(meshWith({ readiness: { initialDelay: '2m', deadline: '1m' } })), 'shop.yaml: service "web": readiness.initialDelay must be shorter than readiness.deadline (1m)');
  assert.equal(message(meshWith({ stopTimeout: '11m' })), 'shop.yaml: service "web": stopTimeout must be at most 10m');
  assert.equal(parseMesh(JSON.parse(meshWith({ stopTimeout: '0s' })), 'x').services[0]?.stopTimeoutMs, 0);
  assert.equal(
    message(meshWith({ restart: { backoff: { base: '10s', cap: '1s' } } })),
    'shop.yaml: service "web": restart.backoff.cap must be at least restart.backoff.base (10s)',
  );
  const big = parseMesh(JSON.parse(meshWith({ restart: { backoff: { base: '1m' } } })), 'x').services[0];
  assert.deepEqual([big?.restart.baseMs, big?.restart.capMs], [60_000, 60_000], 'the default cap grows to a larger base');
});

test('readiness: path applies to http only; type must be http or tcp', () => {
  assert.equal(message(meshWith({ readiness: { path: '/ready' } })), 'shop.yaml: service "web": readiness.path applies to http readiness only');
  assert.equal(message(meshWith({ readiness: { type: 'grpc' } })), 'shop.yaml: service "web": readiness.type must be one of "http", "tcp"');
  assert.equal(message(meshWith({ readiness: { type: 'http', path: 'ready' } })), 'shop.yaml: service "web": readiness.path must match ^/[\\x21-\\x7e]*$');
  const http = parseMesh(JSON.parse(meshWith({ readiness: { type: 'http' } })), 'x').services[0];
  assert.equal(http?.readiness.path, '/health');
});

test('balancer: kinds, and the hash key ring-hash and maglev need', () => {
  assert.equal(message(meshWith({ balancer: { kind: 'fastest' } })), `shop.yaml: service "web": balancer.kind must be one of ${MESH_BALANCER_KINDS.map((k) => `"${k}"`).join(', ')}`);
  assert.equal(message(meshWith({ balancer: { kind: 'ring-hash' } })), 'shop.yaml: service "web": balancer.hashKey is required for the ring-hash balancer');
  assert.equal(
    message(meshWith({ balancer: { kind: 'round-robin', hashKey: { type: 'source-address' } } })),
    'shop.yaml: service "web": balancer.hashKey applies to the ring-hash and maglev balancers only, not round-robin',
  );
  assert.equal(message(meshWith({ balancer: { kind: 'maglev', hashKey: { type: 'cookie' } } })), 'shop.yaml: service "web": balancer.hashKey.name is required for a cookie hash key');
  assert.equal(
    message(meshWith({ balancer: { kind: 'maglev', hashKey: { type: 'source-address', name: 'x' } } })),
    'shop.yaml: service "web": balancer.hashKey.name applies to header and cookie hash keys only',
  );
  assert.match(message(meshWith({ balancer: { kind: 'maglev', hashKey: { type: 'header', name: 'bad name' } } })), /balancer\.hashKey\.name must be a header or cookie name/);
  for (const kind of ['round-robin', 'weighted-round-robin', 'random', 'least-request', 'peak-ewma']) {
    assert.deepEqual(parseMesh(JSON.parse(meshWith({ balancer: { kind } })), 'x').services[0]?.balancer, { kind, hashKey: null });
  }
  const cookie = parseMesh(JSON.parse(meshWith({ balancer: { kind: 'ring-hash', hashKey: { type: 'cookie', name: 'session' } } })), 'x');
  assert.deepEqual(cookie.services[0]?.balancer.hashKey, { type: 'cookie', name: 'session' });
});

test('env: names are checked; Skein\'s own variables cannot be set', () => {
  assert.match(message(meshWith({ env: { '1X': 'a' } })), /service "web": env\.1X must be an environment variable name/);
  assert.equal(message(meshWith({ env: { PORT: '80' } })), 'shop.yaml: service "web": env.PORT is set by Skein to the assigned port (see port.env) and cannot be set here');
  assert.match(message(meshWith({ env: { SKEIN_SERVICE: 'x' } })), /env\.SKEIN_SERVICE is set by Skein/);
  assert.match(message(meshWith({ port: { env: 'HTTP_PORT' }, env: { HTTP_PORT: '1' } })), /env\.HTTP_PORT is set by Skein to the assigned port/);
  assert.match(message(meshWith({ port: { env: 'SKEIN_INSTANCE_ID' } })), /port\.env must not be SKEIN_INSTANCE_ID/);
  assert.match(message(meshWith({ port: { env: 'my-port' } })), /port\.env must be an environment variable name/);
  // PORT is free for the service when the port goes elsewhere
  const m = parseMesh(JSON.parse(meshWith({ port: { env: 'HTTP_PORT' }, env: { PORT: '1' } })), 'x');
  assert.deepEqual(m.services[0]?.env, { PORT: '1' });
});

test('labels keys are checked', () => {
  assert.match(message(meshWith({ labels: { 'bad key!': 'x' } })), /service "web": labels\.bad key! is not a label key \(letters, digits/);
});

test('dependsOn: unknown services, itself and cycles are errors; startOrder respects it', () => {
  const two = (a: unknown, b: unknown) =>
    JSON.stringify({ kind: 'Mesh', name: 'm', services: { a: { command: 'x', dependsOn: a }, b: { command: 'x', dependsOn: b } } });
  assert.equal(message(two(['c'], [])), 'shop.yaml: service "a": dependsOn[0] names unknown service "c"');
  assert.equal(message(two([], ['b'])), 'shop.yaml: service "b": dependsOn[0] names the service itself');
  assert.equal(message(two(['b'], ['a'])), 'shop.yaml: service "b": dependsOn[0] makes a cycle: a -> b -> a');
  assert.equal(message(two(['b', 'b'], [])), 'shop.yaml: service "a": dependsOn must not list the same value twice (items 0 and 1)');
  const order = (m: MeshFile) => startOrder(m).map((s) => s.name);
  assert.deepEqual(order(parseMeshFile(SHOP, 's.yaml')), ['user-service', 'product-service', 'frontend']);
  assert.deepEqual(order(parseMeshFile(two(['b'], []), 's.yaml')), ['b', 'a']);
  const chain = parseMeshFile(
    JSON.stringify({ kind: 'Mesh', name: 'm', services: { web: { command: 'x', dependsOn: ['api'] }, api: { command: 'x', dependsOn: ['db'] }, db: { command: 'x' }, cache: { command: 'x' } } }),
    's.yaml',
  );
  assert.deepEqual(order(chain), ['db', 'api', 'web', 'cache']);
});

test('control: addresses are HOST:PORT, dns may be off', () => {
  const ctl = (control: unknown) => JSON.stringify({ kind: 'Mesh', name: 'm', control, services: { a: { command: 'x' } } });
  assert.equal(message(ctl({ http: 'localhost' })), 'shop.yaml: control.http must be HOST:PORT (e.g. 127.0.0.1:7400 or [::1]:7400), not "localhost"');
  assert.match(message(ctl({ dns: 'nope' })), /^shop\.yaml: control\.dns must be HOST:PORT .* or "off", not "nope"$/);
  assert.match(message(ctl({ domain: 'Bad_Domain' })), /control\.domain must be a DNS name/);
  assert.deepEqual(parseMeshFile(ctl({ http: '[::1]:0', dns: '127.0.0.1:5353' }), 'x').control, { http: '[::1]:0', dns: '127.0.0.1:5353', domain: null });
});

test('malformed YAML, several documents and empty files name the file', () => {
  const bad = fails(() => parseMeshFile('kind: Mesh\nservices: [\n', 'shop.yaml'), 'SKEIN_E_BAD_YAML');
  assert.match(bad.message, /^shop\.yaml: /);
  const dup = fails(() => parseMeshFile('kind: Mesh\nkind: Mesh\n', 'shop.yaml'), 'SKEIN_E_BAD_YAML');
  assert.match(dup.message, /^shop\.yaml: .*[Uu]nique/);
  assert.equal(message('kind: Mesh\n---\nkind: Mesh\n'), 'shop.yaml: (root) holds 2 documents; a mesh file is one');
  assert.equal(message('# nothing\n'), 'shop.yaml: (root) is empty; a mesh file has apiVersion, kind: Mesh, name and services');
});

test('JSON text is accepted too', () => {
  const m = parseMeshFile(meshWith({ replicas: 2 }), 'shop.json');
  assert.equal(m.services[0]?.replicas, 2);
});

test('replicaInstance is a valid instance registration', () => {
  const m = parseMeshFile(SHOP, 'shop.yaml');
  const body = replicaInstance(m.services[0]!, { id: 'user-service-1', address: '127.0.0.1', port: 40001 });
  const inst = parseInstance(body);
  assert.deepEqual(
    { ...inst },
    { id: 'user-service-1', service: 'user-service', address: '127.0.0.1', port: 40001, weight: 5, zone: 'eu-1', version: 'v1', labels: { team: 'accounts', [INBOUND_PROXY_LABEL]: 'true' }, check: null },
  );
  const plain = replicaInstance(m.services[2]!, { id: 'frontend-1', address: '127.0.0.1', port: 1 });
  assert.deepEqual(plain, { id: 'frontend-1', service: 'frontend', address: '127.0.0.1', port: 1, weight: 1, labels: { [INBOUND_PROXY_LABEL]: 'true' } });
});

test('serviceCwd resolves against the mesh file\'s directory', () => {
  assert.equal(serviceCwd('/srv/shop/mesh.yaml', { cwd: null }), '/srv/shop');
  assert.equal(serviceCwd('/srv/shop/mesh.yaml', { cwd: 'users' }), '/srv/shop/users');
  assert.equal(serviceCwd('/srv/shop/mesh.yaml', { cwd: '../bin' }), '/srv/bin');
  assert.equal(serviceCwd('/srv/shop/mesh.yaml', { cwd: '/opt/x' }), '/opt/x');
  assert.equal(serviceCwd('mesh.yaml', { cwd: null }), process.cwd());
});

test('the JSON schema compiles and accepts the example', async () => {
  const ajv = new Ajv({ strict: false });
  const validate = ajv.compile(meshFileJsonSchema());
  const { parse } = await import('yaml');
  assert.ok(validate(parse(SHOP)), JSON.stringify(validate.errors));
  assert.ok(!validate({ kind: 'Mesh', name: 'm', services: { a: { command: 'x', replicas: 101 } } }));
});

test('a split in a mesh file may only name versions the file runs', () => {
  const split = { backends: [{ subset: { version: 'v1' }, weight: 90 }, { subset: { version: 'v2' }, weight: 10 }] };
  assert.equal(message(meshWith({ version: 'v1', ...split })), 'shop.yaml: service "web": backends[1].subset names version=v2, which no instance of the service is in (their versions: "v1")');
  const ok = parseMeshFile(meshWith({ version: 'v1', backends: [{ subset: { version: 'v1' } }] }), 'shop.yaml');
  assert.equal(ok.services[0]?.name, 'web');
});

test('a canary spec out of bounds is refused with the field named', () => {
  assert.equal(message(meshWith({ version: 'v1', canary: { maxWeight: 120 } })), 'shop.yaml: service "web": canary.maxWeight must be <= 100');
  assert.equal(message(meshWith({ version: 'v1', canary: { stepWeight: 0 } })), 'shop.yaml: service "web": canary.stepWeight must be >= 1');
  assert.equal(message(meshWith({ version: 'v1', canary: { stepWeight: 30, maxWeight: 20 } })), 'shop.yaml: service "web": canary.stepWeight must be at most maxWeight (20)');
  assert.equal(message(meshWith({ version: 'v1', canary: { interval: '100ms' } })), 'shop.yaml: service "web": canary.interval must be at least 1s');
  assert.equal(message(meshWith({ version: 'v1', canary: { webhooks: [{ name: 'x', type: 'later', url: 'http://127.0.0.1/' }] } })).startsWith('shop.yaml: service "web": canary.webhooks[0].type must be one of'), true);
  const ok = parseMeshFile(meshWith({ version: 'v1', canary: { interval: '2s', stepWeight: 25 } }), 'shop.yaml');
  assert.deepEqual([ok.services[0]?.canary?.intervalMs, ok.services[0]?.canary?.stepWeight, ok.services[0]?.canary?.maxWeight], [2000, 25, 50]);
});

test('a mirror names a service of the file, and names a service or a subset', () => {
  assert.equal(
    message(meshWith({ mirror: { service: 'web-next' } })),
    'shop.yaml: service "web": mirror.service names unknown service "web-next" (the file\'s: web)',
  );
  assert.equal(
    message(meshWith({ routes: [{ name: 'api', mirror: { service: 'nope', percent: 5 } }] })),
    'shop.yaml: service "web": routes[0].mirror.service names unknown service "nope" (the file\'s: web)',
  );
  assert.match(message(meshWith({ mirror: { percent: 5 } })), /^shop\.yaml: service "web": mirror names neither a service nor a subset/);
  assert.equal(message(meshWith({ mirror: { service: 'web', percent: 101 } })), 'shop.yaml: service "web": mirror.percent must be <= 100');
});
