/**
 * Every "Default X" a schema description states is the default in force: the descriptions are
 * built from the *_DEFAULTS constants, and this test walks every schema (resources and mesh
 * files) and checks each stated default against its constant, so a changed default cannot leave a
 * stale description, and a default written as a literal in a new description fails here until
 * it is taken from its constant.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatDuration } from '../core/duration.js';
import { AUTHZ_DEFAULTS } from './authz/model.js';
import { DEFAULT_BALANCER } from './balancer.js';
import { CANARY_DEFAULTS } from './canary.js';
import { DNS_DEFAULTS } from './dns.js';
import { DURATION_EXAMPLES } from './duration.js';
import { AUTOSCALE_DEFAULTS } from './mesh/autoscale.js';
import { MESH_DEFAULTS } from './mesh/model.js';
import { ROLLOUT_DEFAULTS, type RolloutAmount } from './mesh/rollout.js';
import { MeshFileSchema } from './mesh/schema.js';
import { RESOURCE_KINDS } from './schema.js';
import { TRAFFIC_DEFAULTS } from './traffic.js';
import { DEFAULT_PROTOCOL, HEALTH_CHECK_DEFAULTS, INSTANCE_DEFAULTS } from './types.js';

const ms = formatDuration;
const T = TRAFFIC_DEFAULTS;
const H = HEALTH_CHECK_DEFAULTS;
const M = MESH_DEFAULTS;
const A = AUTOSCALE_DEFAULTS;
const C = CANARY_DEFAULTS;
const amount = (a: RolloutAmount) => ('percent' in a ? `"${a.percent}%"` : String(a.count));

/**
 * What each description must state, by the end of the field's path (the longest matching suffix
 * wins: `check.interval` is a health check's, `readiness.interval` a mesh readiness's).
 */
const EXPECTED: Readonly<Record<string, string>> = {
  // traffic (Service resources, mesh-file services, routes)
  'timeouts.connect': ms(T.connectTimeoutMs),
  'timeouts.request': ms(T.requestTimeoutMs),
  'timeouts.idle': ms(T.idleTimeoutMs),
  'timeouts.tcpIdle': ms(T.tcpIdleTimeoutMs),
  'budget.ratio': String(T.budget.ratio),
  'budget.minRetriesPerSecond': String(T.budget.minRetriesPerSecond),
  'budget.window': ms(T.budget.windowMs),
  'retries.maxRetries': String(T.retries.maxRetries),
  'retries.statuses': JSON.stringify(T.retries.statuses),
  'retries.nonIdempotent': String(T.retries.nonIdempotent),
  'retries.maxBodyBytes': String(T.retries.maxBodyBytes),
  'retries.backoff.base': ms(T.retries.backoffBaseMs),
  'retries.backoff.max': ms(T.retries.backoffMaxMs),
  'limits.maxConnections': String(T.limits.maxConnections),
  'limits.maxPendingRequests': String(T.limits.maxPendingRequests),
  'limits.maxRequests': String(T.limits.maxRequests),
  'breaker.enabled': String(T.breaker !== null),
  'breaker.consecutiveFailures': String(T.breaker.consecutiveFailures),
  'failureRate.minRequests': String(T.failureRate.minRequests),
  'failureRate.window': ms(T.failureRate.windowMs),
  'breaker.backoff.min': ms(T.breaker.backoffMinMs),
  'breaker.backoff.max': ms(T.breaker.backoffMaxMs),
  'outlierDetection.enabled': String(T.outlier !== null),
  'outlierDetection.consecutive5xx': String(T.outlier.consecutive5xx),
  'outlierDetection.consecutiveGatewayFailure': String(T.outlier.consecutiveGatewayFailure),
  'outlierDetection.consecutiveLocalOriginFailure': String(T.outlier.consecutiveLocalOriginFailure),
  'outlierDetection.interval': ms(T.outlier.intervalMs),
  'outlierDetection.baseEjectionTime': ms(T.outlier.baseEjectionMs),
  'outlierDetection.maxEjectionTime': ms(T.outlier.maxEjectionMs),
  'outlierDetection.maxEjectionPercent': String(T.outlier.maxEjectionPercent),
  'successRate.minimumHosts': String(T.successRate.minimumHosts),
  'successRate.requestVolume': String(T.successRate.requestVolume),
  'successRate.stdevFactor': String(T.successRate.stdevFactor),
  'failurePercentage.threshold': String(T.failurePercentage.threshold),
  'failurePercentage.minimumHosts': String(T.failurePercentage.minimumHosts),
  'failurePercentage.requestVolume': String(T.failurePercentage.requestVolume),
  'activeHealthCheck.path': JSON.stringify(T.activeHealthCheck.path),
  'activeHealthCheck.interval': ms(T.activeHealthCheck.intervalMs),
  'activeHealthCheck.timeout': ms(T.activeHealthCheck.timeoutMs),
  'activeHealthCheck.unhealthyThreshold': String(T.activeHealthCheck.unhealthyThreshold),
  'activeHealthCheck.healthyThreshold': String(T.activeHealthCheck.healthyThreshold),
  'coldStart.queue': String(T.coldStart.queue),
  'coldStart.timeout': ms(T.coldStart.timeoutMs),
  'rateLimit.outbound.algorithm': T.rateLimitAlgorithm,
  'rateLimit.inbound.algorithm': T.rateLimitAlgorithm,
  'rateLimit.outbound.perCaller': String(T.rateLimitPerCaller),
  'rateLimit.inbound.perCaller': String(T.rateLimitPerCaller),
  panicThreshold: String(T.panicThreshold),
  'mirror.percent': String(T.mirror.percent),
  'mirror.hostSuffix': JSON.stringify(T.mirror.hostSuffix),
  'mirror.nonIdempotent': String(T.mirror.nonIdempotent),
  'mirror.maxInFlight': String(T.mirror.maxInFlight),
  'balancer.kind': DEFAULT_BALANCER,
  // instances and the control plane's health checks
  weight: String(INSTANCE_DEFAULTS.weight),
  'check.path': JSON.stringify(H.path),
  'check.method': H.method,
  'check.expectedStatus': `"${H.expectedStatus.min}-${H.expectedStatus.max}"`,
  'check.interval': ms(H.intervalMs),
  'check.timeout': ms(H.timeoutMs),
  'check.healthyThreshold': String(H.healthyThreshold),
  'check.unhealthyThreshold': String(H.unhealthyThreshold),
  'check.initialState': H.initialState.probe,
  'ports.protocol': DEFAULT_PROTOCOL,
  // authorization policies
  mode: AUTHZ_DEFAULTS.mode,
  // mesh files
  'readiness.type': M.readiness.type,
  'readiness.path': JSON.stringify(M.readiness.path),
  'readiness.interval': ms(M.readiness.intervalMs),
  'readiness.timeout': ms(M.readiness.timeoutMs),
  'readiness.initialDelay': ms(M.readiness.initialDelayMs),
  'readiness.deadline': ms(M.readiness.deadlineMs),
  'restart.backoff.base': ms(M.restart.baseMs),
  'restart.backoff.cap': ms(M.restart.capMs),
  'restart.resetAfter': ms(M.restart.resetAfterMs),
  replicas: String(M.replicas),
  'port.env': M.portEnv,
  stopTimeout: ms(M.stopTimeoutMs),
  'control.domain': JSON.stringify(DNS_DEFAULTS.domain),
  'rollout.maxSurge': amount(ROLLOUT_DEFAULTS.maxSurge),
  'rollout.maxUnavailable': amount(ROLLOUT_DEFAULTS.maxUnavailable),
  'rollout.minReady': ms(ROLLOUT_DEFAULTS.minReadyMs),
  'rollout.progressDeadline': ms(ROLLOUT_DEFAULTS.progressDeadlineMs),
  'canary.interval': ms(C.intervalMs),
  'canary.stepWeight': String(C.stepWeight),
  'canary.maxWeight': String(C.maxWeight),
  'canary.threshold': String(C.threshold),
  'canary.successRate': String(C.minSuccessRate),
  'canary.p99': ms(C.maxP99Ms),
  'canary.minRequests': String(C.minRequests),
  'canary.abortErrorRate': String(C.abortErrorRate),
  'webhooks.timeout': ms(C.webhookTimeoutMs),
  'autoscale.min': String(A.min),
  'autoscale.tolerance': String(A.tolerance * 100),
  'autoscale.interval': ms(A.intervalMs),
  'autoscale.window': ms(A.windowMs),
  'scaleUp.pods': String(A.scaleUp.pods),
  'scaleUp.percent': String(A.scaleUp.percent),
  'scaleUp.period': ms(A.scaleUp.periodMs),
  'scaleUp.stabilization': ms(A.scaleUp.stabilizationMs),
  'autoscale.coolDown': ms(A.coolDownMs),
  'scaleDown.stabilization': ms(A.scaleDown.stabilizationMs),
};

interface Node {
  description?: string;
  properties?: Record<string, Node>;
  items?: Node;
  anyOf?: Node[];
  oneOf?: Node[];
  allOf?: Node[];
  patternProperties?: Record<string, Node>;
  additionalProperties?: Node | boolean;
  enum?: unknown[];
  const?: unknown;
}

interface Stated {
  readonly path: string;
  readonly value: string;
  readonly description: string;
}

/** The node's own values, when it is an enumeration (Enum's `enum`, a union of literals). */
function enumValues(n: Node): string[] {
  const own = (n.enum ?? []).map(String);
  const union = (n.anyOf ?? []).filter((x) => x.const !== undefined).map((x) => String(x.const));
  return [...own, ...union];
}

const LITERAL = /^(-?\d+(\.\d+)?(ms|s|m|h)?|"[^"]*"|\[[^\]]*\]|true|false|[A-Z][A-Z0-9_]*)$/;

/** Every "Default X" of a description where X is a value (not prose such as "Default off" or "Default: ..."). */
function statedDefaults(description: string, n: Node): string[] {
  const out: string[] = [];
  for (const m of description.matchAll(/\bDefault (\S+)/g)) {
    const raw = m[1] as string;
    const token = raw.startsWith('"') ? raw.slice(0, raw.indexOf('"', 1) + 1) : raw.replace(/[.;,)]+$/, '');
    if (LITERAL.test(token) || enumValues(n).includes(token)) out.push(token);
  }
  return out;
}

function walk(n: Node, path: readonly string[], out: Stated[]): void {
  if (typeof n !== 'object' || n === null) return;
  if (typeof n.description === 'string') {
    for (const value of statedDefaults(n.description, n)) out.push({ path: path.join('.'), value, description: n.description });
  }
  for (const [k, child] of Object.entries(n.properties ?? {})) walk(child, [...path, k], out);
  for (const child of Object.values(n.patternProperties ?? {})) walk(child, path, out);
  if (typeof n.additionalProperties === 'object') walk(n.additionalProperties, path, out);
  if (n.items !== undefined) walk(n.items, path, out);
  for (const child of [...(n.anyOf ?? []), ...(n.oneOf ?? []), ...(n.allOf ?? [])]) walk(child, path, out);
}

function expectedFor(path: string): { key: string; value: string } | undefined {
  let best: string | undefined;
  for (const key of Object.keys(EXPECTED)) {
    if ((path === key || path.endsWith(`.${key}`)) && (best === undefined || key.length > best.length)) best = key;
  }
  return best === undefined ? undefined : { key: best, value: EXPECTED[best] as string };
}

function everyStatedDefault(): Stated[] {
  const out: Stated[] = [];
  for (const [kind, schema] of Object.entries(RESOURCE_KINDS)) walk(schema as Node, [kind], out);
  walk(MeshFileSchema as Node, ['Mesh'], out);
  return out;
}

test('every default a schema description states is the one in its *_DEFAULTS constant', () => {
  const stated = everyStatedDefault();
  assert.ok(stated.length >= 80, `found only ${stated.length} stated defaults: the walk misses schemas`);
  const used = new Set<string>();
  const wrong: string[] = [];
  for (const s of stated) {
    const e = expectedFor(s.path);
    if (e === undefined) {
      wrong.push(`${s.path}: "Default ${s.value}" is not checked: build it from its *_DEFAULTS constant and add the field to EXPECTED (${s.description})`);
      continue;
    }
    used.add(e.key);
    if (s.value !== e.value) wrong.push(`${s.path}: the description says "Default ${s.value}", the constant is ${e.value}`);
  }
  assert.deepEqual(wrong, []);
  assert.deepEqual(
    Object.keys(EXPECTED).filter((k) => !used.has(k)),
    [],
    'fields of EXPECTED that no description states (renamed or removed?)',
  );
});

test('the statement of defaults is read as intended: a stale description is caught', () => {
  const n: Node = { description: 'Time to connect. Default 3s; at most 1h. A duration such as "500ms".' };
  assert.deepEqual(statedDefaults(n.description as string, n), ['3s']);
  assert.deepEqual(statedDefaults('Default "/health".', {}), ['"/health"']);
  assert.deepEqual(statedDefaults('Default off. Default: the request timeout.', {}), [], 'prose is not a value');
  assert.deepEqual(statedDefaults('Default tcp.', { enum: ['http', 'tcp'] }), ['tcp']);
  assert.equal(expectedFor('Service.routes.retries.backoff.base')?.key, 'retries.backoff.base');
  assert.equal(expectedFor('Mesh.services.readiness.interval')?.key, 'readiness.interval');
});

test('a duration field describes its form with DURATION_EXAMPLES', () => {
  const connect = (RESOURCE_KINDS.Service as Node).properties?.timeouts?.properties?.connect?.description ?? '';
  assert.ok(connect.endsWith(` A duration such as ${DURATION_EXAMPLES}.`), connect);
});
