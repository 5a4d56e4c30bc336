import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SkeinError } from '../core/errors.js';
import { parseResourceFile, parseRoute, parseService } from './parse.js';
import { DEFAULT_TRAFFIC, inboundTraffic, TRAFFIC_DEFAULTS } from './traffic.js';

function fails(fn: () => unknown, field: string, message?: RegExp): SkeinError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof SkeinError, String(e));
    assert.equal(e.code, 'SKEIN_E_VALIDATION', e.message);
    assert.equal(e.field, field, e.message);
    if (message !== undefined) assert.match(e.message, message);
    return e;
  }
  assert.fail(`expected a validation error at ${field}`);
}

test('a service without traffic fields gets the documented defaults', () => {
  const t = parseService({ name: 'web' }).traffic;
  assert.deepEqual(t, DEFAULT_TRAFFIC);
  assert.equal(t.connectTimeoutMs, 3000);
  assert.equal(t.idleTimeoutMs, 4000);
  assert.deepEqual(t.budget, { ratio: 0.2, minRetriesPerSecond: 10, windowMs: 10_000 });
  assert.deepEqual(t.limits, { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024 });
  assert.deepEqual(t.breaker, { consecutiveFailures: 7, failureRate: null, backoffMinMs: 1000, backoffMaxMs: 10_000 });
  assert.equal(t.outlier?.consecutive5xx, 5);
  assert.equal(t.outlier?.baseEjectionMs, 30_000);
  assert.equal(t.outlier?.maxEjectionPercent, 10);
  assert.equal(t.activeHealthCheck, null);
  assert.equal(t.routes.length, 1);
  const d = t.routes[0];
  assert.equal(d?.name, 'default');
  assert.equal(d?.requestTimeoutMs, 15_000);
  assert.equal(d?.perTryTimeoutMs, 0);
  assert.deepEqual(d?.retries, TRAFFIC_DEFAULTS.retries);
  assert.deepEqual(d?.retries.on, ['connect-failure', 'reset', 'refused-stream', 'per-try-timeout', 'unavailable']);
  assert.deepEqual(d?.retries.statuses, [503]);
  assert.equal(d?.retries.maxBodyBytes, 65_536);
  assert.deepEqual(d?.rateLimit, { outbound: null, inbound: null });
  assert.equal(d?.fault, null);
});

test('every section is read, durations in ms; routes inherit what they do not set', () => {
  const s = parseService({
    name: 'web',
    timeouts: { connect: '500ms', request: '2s', perTry: '400ms', idle: '1m' },
    retries: { maxRetries: 3, on: ['reset'], statuses: [503], backoff: { base: '10ms', max: '80ms' }, budget: { ratio: 0.5, minRetriesPerSecond: 0, window: '5s' } },
    limits: { maxRequests: 2 },
    breaker: { consecutiveFailures: 3, failureRate: { threshold: 0.5 }, backoff: { min: '100ms', max: '1s' } },
    outlierDetection: { consecutive5xx: 2, successRate: {}, failurePercentage: { threshold: 50 } },
    activeHealthCheck: { type: 'tcp', interval: '200ms' },
    rateLimit: { outbound: { requestsPerSecond: 2.5 }, inbound: { requestsPerSecond: 10, burst: 3, algorithm: 'gcra', perCaller: true } },
    routes: [
      { name: 'slow', match: { pathPrefix: '/slow/', methods: ['POST'], headers: { 'X-Tenant': 'a' } }, timeouts: { request: '30s' }, retries: { nonIdempotent: true } },
      { name: 'chaos', fault: { delay: { duration: '50ms', percent: 10 }, abort: { status: 418, percent: 1 } }, rateLimit: { outbound: { requestsPerSecond: 1 } } },
    ],
  });
  const t = s.traffic;
  assert.equal(t.connectTimeoutMs, 500);
  assert.equal(t.idleTimeoutMs, 60_000);
  assert.deepEqual(t.budget, { ratio: 0.5, minRetriesPerSecond: 0, windowMs: 5000 });
  assert.deepEqual(t.limits, { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 2 });
  assert.deepEqual(t.breaker, { consecutiveFailures: 3, failureRate: { threshold: 0.5, minRequests: 20, windowMs: 10_000 }, backoffMinMs: 100, backoffMaxMs: 1000 });
  assert.deepEqual(t.outlier?.successRate, { minimumHosts: 5, requestVolume: 100, stdevFactor: 1.9 });
  assert.deepEqual(t.outlier?.failurePercentage, { threshold: 50, minimumHosts: 5, requestVolume: 50 });
  assert.deepEqual(t.activeHealthCheck, { type: 'tcp', path: '/health', intervalMs: 200, timeoutMs: 200, unhealthyThreshold: 2, healthyThreshold: 1 });
  const [slow, chaos, dflt] = t.routes;
  assert.equal(slow?.name, 'slow');
  assert.deepEqual(slow?.match, { path: null, pathPrefix: '/slow', methods: ['POST'], headers: [['x-tenant', 'a']] });
  assert.equal(slow?.requestTimeoutMs, 30_000);
  assert.equal(slow?.perTryTimeoutMs, 400, 'inherited from the service');
  assert.equal(slow?.retries.nonIdempotent, true);
  assert.equal(slow?.retries.maxRetries, 3, 'inherited from the service');
  assert.deepEqual(slow?.retries.on, ['reset']);
  assert.deepEqual(slow?.rateLimit.outbound, { scope: 'service', requestsPerSecond: 2.5, burst: 3, algorithm: 'token-bucket', perCaller: false });
  assert.deepEqual(chaos?.fault, { delay: { ms: 50, percent: 10 }, abort: { status: 418, percent: 1 } });
  assert.deepEqual(chaos?.rateLimit.outbound, { scope: 'route:chaos', requestsPerSecond: 1, burst: 1, algorithm: 'token-bucket', perCaller: false });
  assert.deepEqual(chaos?.rateLimit.inbound, { scope: 'service', requestsPerSecond: 10, burst: 3, algorithm: 'gcra', perCaller: true }, "the service's inbound limit (its bucket too)");
  assert.equal(dflt?.name, 'default');
  assert.equal(dflt?.requestTimeoutMs, 2000);
  // As written, for storage; the parsed form survives a JSON round trip (the watch stream).
  assert.deepEqual(s.trafficRaw.limits, { maxRequests: 2 });
  assert.deepEqual(JSON.parse(JSON.stringify(t)), t);
});

test('sections can be turned off', () => {
  const t = parseService({ name: 'web', breaker: { enabled: false }, outlierDetection: { enabled: false }, retries: { maxRetries: 0 }, timeouts: { request: '0s' } }).traffic;
  assert.equal(t.breaker, null);
  assert.equal(t.outlier, null);
  assert.equal(t.routes[0]?.retries.maxRetries, 0);
  assert.equal(t.routes[0]?.requestTimeoutMs, 0);
  const i = inboundTraffic(parseService({ name: 'web', activeHealthCheck: { type: 'tcp' } }).traffic);
  assert.equal(i.breaker, null);
  assert.equal(i.outlier, null);
  assert.equal(i.activeHealthCheck, null);
});

test('bad policy values are refused, naming the field', () => {
  const svc = (extra: object) => () => parseService({ name: 'web', ...extra });
  fails(svc({ timeouts: { request: '-1s' } }), 'timeouts.request', /must be a duration such as "500ms", "10s" or "1m30s"/);
  fails(svc({ timeouts: { connect: '0ms' } }), 'timeouts.connect', /at least 1ms/);
  fails(svc({ timeouts: { request: '1s', perTry: '2s' } }), 'timeouts.perTry', /not be longer than timeouts.request/);
  fails(svc({ retries: { budget: { ratio: 1.5 } } }), 'retries.budget.ratio', /<= 1/);
  fails(svc({ retries: { on: ['reset', 'gateway-error'] } }), 'retries.on[1]');
  fails(svc({ retries: { statuses: [404] } }), 'retries.statuses[0]');
  fails(svc({ retries: { backoff: { base: '1s', max: '10ms' } } }), 'retries.backoff.max', /at least retries.backoff.base/);
  fails(svc({ retries: { maxRetries: -1 } }), 'retries.maxRetries');
  fails(svc({ limits: { maxRequests: 0 } }), 'limits.maxRequests');
  fails(svc({ breaker: { failureRate: { threshold: 0 } } }), 'breaker.failureRate.threshold');
  fails(svc({ breaker: { backoff: { min: '5s', max: '1s' } } }), 'breaker.backoff.max');
  fails(svc({ outlierDetection: { maxEjectionPercent: 101 } }), 'outlierDetection.maxEjectionPercent');
  fails(svc({ outlierDetection: { baseEjectionTime: '1m', maxEjectionTime: '10s' } }), 'outlierDetection.maxEjectionTime');
  fails(svc({ activeHealthCheck: { type: 'tcp', path: '/x' } }), 'activeHealthCheck.path', /http checks only/);
  fails(svc({ activeHealthCheck: { type: 'http', interval: '1s', timeout: '2s' } }), 'activeHealthCheck.timeout');
  fails(svc({ rateLimit: { outbound: { requestsPerSecond: 0 } } }), 'rateLimit.outbound.requestsPerSecond');
  fails(svc({ rateLimit: { inbound: { requestsPerSecond: 1, algorithm: 'leaky' } } }), 'rateLimit.inbound.algorithm');
  fails(svc({ routes: [{ name: 'a' }, { name: 'a' }] }), 'routes[1].name', /duplicates the name of routes\[0\]/);
  fails(svc({ routes: [{ name: 'default' }] }), 'routes[0].name', /reserved|implicit/);
  fails(svc({ routes: [{ name: 'a', match: { path: '/a', pathPrefix: '/b' } }] }), 'routes[0].match.pathPrefix');
  fails(svc({ routes: [{ name: 'a', match: { path: 'a' } }] }), 'routes[0].match.path');
  fails(svc({ routes: [{ name: 'a', match: { pathPrefix: '/api//v1' } }] }), 'routes[0].match.pathPrefix', /write "\/api\/v1"/);
  fails(svc({ routes: [{ name: 'a', match: { path: '/x/../admin' } }] }), 'routes[0].match.path', /write "\/admin"/);
  fails(svc({ routes: [{ name: 'a', match: { path: '/%61dmin' } }] }), 'routes[0].match.path', /write "\/admin"/);
  fails(svc({ routes: [{ name: 'a', match: { pathPrefix: '/a%zz' } }] }), 'routes[0].match.pathPrefix', /"%zz" at offset 2/);
  fails(svc({ routes: [{ name: 'a', fault: { abort: { status: 503, percent: 120 } } }] }), 'routes[0].fault.abort.percent');
  fails(svc({ routes: [{ name: 'a', retries: { budget: {} } }] }), 'routes[0].retries.budget', /not a known field/);
  fails(svc({ routes: [{ name: 'a', timeouts: { perTry: '20s' } }] }), 'routes[0].timeouts.perTry', /request timeout/);
  fails(svc({ retry: {} }), 'retry', /not a known field/);
});

test('Route resources: parsed on their own, in files, with errors relative to the route', () => {
  const r = parseRoute({ service: 'web', name: 'slow', match: { pathPrefix: '/slow' }, timeouts: { perTry: '20s' } });
  assert.equal(r.service, 'web');
  assert.equal(r.name, 'slow');
  assert.deepEqual(r.raw, { name: 'slow', match: { pathPrefix: '/slow' }, timeouts: { perTry: '20s' } });
  assert.ok(Object.isFrozen(r.raw));
  fails(() => parseRoute({ service: 'web', name: 'x', retries: { on: ['nope'] } }), 'retries.on[0]');
  fails(() => parseRoute({ name: 'x' }), 'service', /required/);
  const fromPath = parseRoute({ match: { path: '/a' } }, { service: 'web', name: 'a' });
  assert.deepEqual(fromPath.raw, { name: 'a', match: { path: '/a' } });
  const file = parseResourceFile('kind: Service\nname: web\n---\nkind: Route\nservice: web\nname: slow\nmatch: { pathPrefix: /slow }\n', 'routes.yaml');
  assert.deepEqual(file.map((x) => x.kind), ['Service', 'Route']);
  assert.throws(
    () => parseResourceFile('kind: Route\nservice: web\nname: slow\nfault: { abort: { status: 99, percent: 1 } }\n', 'bad.yaml'),
    (e: unknown) => e instanceof SkeinError && e.field === 'bad.yaml: resource [0] Route: fault.abort.status' && /bad\.yaml: resource \[0\] Route "slow"/.test(e.message),
  );
});
