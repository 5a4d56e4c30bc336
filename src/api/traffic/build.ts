/**
 * Raw traffic fields -> the frozen TrafficPolicy, one builder per section. Each checks what the
 * schema cannot (durations in range, the order of a min and a max, duplicate route names, a route
 * that can never match), fills in TRAFFIC_DEFAULTS and pushes problems with fields relative to
 * the service.
 */
import { deepFreeze } from '../../core/freeze.js';
import { normalizePath } from '../../core/path.js';
import { durationAt, type DurationBounds } from '../duration.js';
import type { Push } from '../validate.js';
import {
  defaultBurst,
  TRAFFIC_DEFAULTS as D,
  type ActiveCheckPolicy,
  type BackendPolicy,
  type BreakerPolicy,
  type ColdStartPolicy,
  type MirrorPolicy,
  type OutlierPolicy,
  type RateLimitPolicy,
  type RateLimits,
  type RetryPolicy,
  type RoutePolicy,
  type TrafficPolicy,
} from './policy.js';
import { TRAFFIC_FIELD_NAMES, type RawBackend, type RawMirror, type RawRateLimit, type RawRateLimits, type RawRetries, type RawRoute, type RawTraffic } from './schema.js';

/** A duration checker bound to one `push`: `dur(text, default, field, min)` (at most 24h). */
type Dur = (text: string | undefined, dflt: number, field: string, min?: number) => number;

function durations(push: Push): Dur {
  return (text, dflt, field, min = 0) => durationAt(text, dflt, field, push, { min } satisfies DurationBounds);
}

/** What a route inherits from its service. */
interface RouteBase {
  readonly requestTimeoutMs: number;
  readonly perTryTimeoutMs: number;
  readonly retries: RetryPolicy;
  readonly rateLimit: RateLimits;
  readonly backends: readonly BackendPolicy[];
  readonly mirror: MirrorPolicy | null;
}

const NO_RATE_LIMITS: RateLimits = Object.freeze({ outbound: null, inbound: null });

/**
 * Checks what the schema cannot and returns the frozen policy. `push(field, message)` collects
 * problems; fields are relative to the service.
 */
export function buildTraffic(raw: RawTraffic, push: Push): TrafficPolicy {
  const dur = durations(push);
  const t = raw.timeouts ?? {};
  const requestTimeoutMs = dur(t.request, D.requestTimeoutMs, 'timeouts.request');
  const perTryTimeoutMs = dur(t.perTry, 0, 'timeouts.perTry', 1);
  if (requestTimeoutMs > 0 && perTryTimeoutMs > requestTimeoutMs) push('timeouts.perTry', `must not be longer than timeouts.request (${requestTimeoutMs}ms)`);
  const retries = buildRetries(raw.retries, D.retries, 'retries', dur, push);
  const budget = buildBudget(raw.retries?.budget, dur);
  const limits = buildLimits(raw.limits);
  const breaker = buildBreaker(raw.breaker, dur, push);
  const outlier = buildOutlier(raw.outlierDetection, dur, push);
  const activeHealthCheck = buildActiveCheck(raw.activeHealthCheck, dur, push);
  const base: RouteBase = {
    requestTimeoutMs,
    perTryTimeoutMs,
    retries,
    rateLimit: buildRateLimits(raw.rateLimit, NO_RATE_LIMITS, 'service'),
    backends: buildBackends(raw.backends, 'backends', push),
    mirror: buildMirror(raw.mirror, 'mirror', requestTimeoutMs, dur, push),
  };
  const routes = buildRoutes(raw.routes ?? [], base, dur, push);
  return Object.freeze({
    connectTimeoutMs: dur(t.connect, D.connectTimeoutMs, 'timeouts.connect', 1),
    idleTimeoutMs: dur(t.idle, D.idleTimeoutMs, 'timeouts.idle', 1),
    tcpIdleTimeoutMs: dur(t.tcpIdle, D.tcpIdleTimeoutMs, 'timeouts.tcpIdle', 1),
    budget,
    limits,
    breaker,
    outlier,
    activeHealthCheck,
    coldStart: buildColdStart(raw.coldStart, dur),
    routes,
    panicThreshold: raw.panicThreshold ?? D.panicThreshold,
  });
}

function buildBudget(b: NonNullable<RawRetries['budget']> | undefined, dur: Dur): TrafficPolicy['budget'] {
  return Object.freeze({
    ratio: b?.ratio ?? D.budget.ratio,
    minRetriesPerSecond: b?.minRetriesPerSecond ?? D.budget.minRetriesPerSecond,
    windowMs: dur(b?.window, D.budget.windowMs, 'retries.budget.window', 1000),
  });
}

function buildLimits(l: RawTraffic['limits']): TrafficPolicy['limits'] {
  return Object.freeze({
    maxConnections: l?.maxConnections ?? D.limits.maxConnections,
    maxPendingRequests: l?.maxPendingRequests ?? D.limits.maxPendingRequests,
    maxRequests: l?.maxRequests ?? D.limits.maxRequests,
  });
}

function buildBreaker(br: RawTraffic['breaker'], dur: Dur, push: Push): BreakerPolicy | null {
  if (br?.enabled === false) return null;
  const fr = br?.failureRate;
  const backoffMinMs = dur(br?.backoff?.min, D.breaker.backoffMinMs, 'breaker.backoff.min', 1);
  const backoffMaxMs = dur(br?.backoff?.max, Math.max(D.breaker.backoffMaxMs, backoffMinMs), 'breaker.backoff.max', 1);
  if (backoffMaxMs < backoffMinMs) push('breaker.backoff.max', `must be at least breaker.backoff.min (${backoffMinMs}ms)`);
  const breaker: BreakerPolicy = Object.freeze({
    consecutiveFailures: br?.consecutiveFailures ?? D.breaker.consecutiveFailures,
    failureRate:
      fr === undefined
        ? null
        : Object.freeze({ threshold: fr.threshold, minRequests: fr.minRequests ?? D.failureRate.minRequests, windowMs: dur(fr.window, D.failureRate.windowMs, 'breaker.failureRate.window', 100) }),
    backoffMinMs,
    backoffMaxMs,
  });
  return breaker.consecutiveFailures === 0 && breaker.failureRate === null ? null : breaker;
}

function buildOutlier(od: RawTraffic['outlierDetection'], dur: Dur, push: Push): OutlierPolicy | null {
  if (od?.enabled === false) return null;
  const O = D.outlier;
  const baseEjectionMs = dur(od?.baseEjectionTime, O.baseEjectionMs, 'outlierDetection.baseEjectionTime', 1);
  const maxEjectionMs = dur(od?.maxEjectionTime, Math.max(O.maxEjectionMs, baseEjectionMs), 'outlierDetection.maxEjectionTime', 1);
  if (maxEjectionMs < baseEjectionMs) push('outlierDetection.maxEjectionTime', `must be at least outlierDetection.baseEjectionTime (${baseEjectionMs}ms)`);
  const sr = od?.successRate;
  const fp = od?.failurePercentage;
  return Object.freeze({
    consecutive5xx: od?.consecutive5xx ?? O.consecutive5xx,
    consecutiveGatewayFailure: od?.consecutiveGatewayFailure ?? O.consecutiveGatewayFailure,
    consecutiveLocalOriginFailure: od?.consecutiveLocalOriginFailure ?? O.consecutiveLocalOriginFailure,
    intervalMs: dur(od?.interval, O.intervalMs, 'outlierDetection.interval', 100),
    baseEjectionMs,
    maxEjectionMs,
    maxEjectionPercent: od?.maxEjectionPercent ?? O.maxEjectionPercent,
    successRate: sr === undefined ? null : Object.freeze({ ...D.successRate, ...sr }),
    failurePercentage: fp === undefined ? null : Object.freeze({ ...D.failurePercentage, ...fp }),
  });
}

function buildColdStart(c: RawTraffic['coldStart'], dur: Dur): ColdStartPolicy | null {
  if (c === undefined || c.enabled === false) return null;
  return Object.freeze({ queue: c.queue ?? D.coldStart.queue, timeoutMs: dur(c.timeout, D.coldStart.timeoutMs, 'coldStart.timeout', 1) });
}

function buildActiveCheck(ac: RawTraffic['activeHealthCheck'], dur: Dur, push: Push): ActiveCheckPolicy | null {
  if (ac === undefined) return null;
  const A = D.activeHealthCheck;
  if (ac.type === 'tcp' && ac.path !== undefined) push('activeHealthCheck.path', 'applies to http checks only');
  const intervalMs = dur(ac.interval, A.intervalMs, 'activeHealthCheck.interval', 100);
  const timeoutMs = dur(ac.timeout, Math.min(A.timeoutMs, intervalMs), 'activeHealthCheck.timeout', 1);
  if (timeoutMs > intervalMs) push('activeHealthCheck.timeout', `must not be longer than activeHealthCheck.interval (${intervalMs}ms)`);
  return Object.freeze({
    type: ac.type,
    path: ac.path ?? A.path,
    intervalMs,
    timeoutMs,
    unhealthyThreshold: ac.unhealthyThreshold ?? A.unhealthyThreshold,
    healthyThreshold: ac.healthyThreshold ?? A.healthyThreshold,
  });
}

function buildRateLimits(r: RawRateLimits | undefined, base: RateLimits, scope: string): RateLimits {
  if (r === undefined) return base;
  const one = (x: RawRateLimit | undefined, dflt: RateLimitPolicy | null): RateLimitPolicy | null =>
    x === undefined
      ? dflt
      : Object.freeze({ scope, requestsPerSecond: x.requestsPerSecond, burst: x.burst ?? defaultBurst(x.requestsPerSecond), algorithm: x.algorithm ?? D.rateLimitAlgorithm, perCaller: x.perCaller ?? D.rateLimitPerCaller });
  return Object.freeze({ outbound: one(r.outbound, base.outbound), inbound: one(r.inbound, base.inbound) });
}

/** The routes in match order, then the implicit "default" route with the service's settings. */
function buildRoutes(raw: readonly RawRoute[], base: RouteBase, dur: Dur, push: Push): readonly RoutePolicy[] {
  const routes: RoutePolicy[] = [];
  const names = new Map<string, number>();
  raw.forEach((r, i) => {
    const at = `routes[${i}]`;
    const prev = names.get(r.name);
    if (prev !== undefined) push(`${at}.name`, `duplicates the name of routes[${prev}]`);
    if (r.name === 'default') push(`${at}.name`, '"default" is the name of the implicit route that matches what no other route does');
    names.set(r.name, i);
    routes.push(buildRoute(r, at, base, dur, push));
  });
  routes.push(
    Object.freeze({
      name: 'default',
      match: Object.freeze({ path: null, pathPrefix: null, methods: null, headers: Object.freeze([]) }),
      ...base,
      fault: null,
    }),
  );
  return Object.freeze(routes);
}

/** Requests are matched by their normalized path (src/core/path.ts): a route path must be one. */
function normalized(p: string | undefined, field: string, push: Push): void {
  if (p === undefined) return;
  const n = normalizePath(p);
  if (typeof n !== 'string') push(field, n.error);
  else if (n !== p) push(field, `requests are matched by their normalized path, which "${p}" never is: write "${n}"`);
}

function buildRoute(r: RawRoute, at: string, base: RouteBase, dur: Dur, push: Push): RoutePolicy {
  const m = r.match ?? {};
  if (m.path !== undefined && m.pathPrefix !== undefined) push(`${at}.match.pathPrefix`, 'cannot be given with match.path');
  normalized(m.path, `${at}.match.path`, push);
  normalized(m.pathPrefix, `${at}.match.pathPrefix`, push);
  let prefix = m.pathPrefix ?? null;
  if (prefix !== null && prefix.length > 1 && prefix.endsWith('/')) prefix = prefix.slice(0, -1);
  const requestTimeoutMs = dur(r.timeouts?.request, base.requestTimeoutMs, `${at}.timeouts.request`);
  const perTryTimeoutMs = dur(r.timeouts?.perTry, base.perTryTimeoutMs, `${at}.timeouts.perTry`, 1);
  if (requestTimeoutMs > 0 && perTryTimeoutMs > requestTimeoutMs) push(`${at}.timeouts.perTry`, `must not be longer than the request timeout (${requestTimeoutMs}ms)`);
  const f = r.fault;
  return Object.freeze({
    name: r.name,
    match: Object.freeze({
      path: m.path ?? null,
      pathPrefix: prefix,
      methods: m.methods === undefined ? null : Object.freeze([...m.methods]),
      headers: Object.freeze(Object.entries(m.headers ?? {}).map(([k, v]) => Object.freeze([k.toLowerCase(), v] as const))),
    }),
    requestTimeoutMs,
    perTryTimeoutMs,
    retries: buildRetries(r.retries, base.retries, `${at}.retries`, dur, push),
    rateLimit: buildRateLimits(r.rateLimit, base.rateLimit, `route:${r.name}`),
    backends: r.backends === undefined ? base.backends : buildBackends(r.backends, `${at}.backends`, push),
    mirror: r.mirror === undefined ? base.mirror : buildMirror(r.mirror, `${at}.mirror`, requestTimeoutMs, dur, push),
    fault:
      f === undefined
        ? null
        : Object.freeze({
            delay: f.delay === undefined ? null : Object.freeze({ ms: dur(f.delay.duration, 0, `${at}.fault.delay.duration`), percent: f.delay.percent }),
            abort: f.abort === undefined ? null : Object.freeze({ status: f.abort.status, percent: f.abort.percent }),
          }),
  });
}

/** A mirror (`at`: where it is, for errors); `requestTimeoutMs`: its route's, the default of its timeout. */
function buildMirror(m: RawMirror | undefined, at: string, requestTimeoutMs: number, dur: Dur, push: Push): MirrorPolicy | null {
  if (m === undefined) return null;
  const M = D.mirror;
  if (m.service === undefined && m.subset === undefined) push(at, "names neither a service nor a subset: the copies would go to the instances the requests go to; give `service` (another service) or `subset` (another version of this one)");
  const subset = m.subset === undefined ? null : (buildBackends([{ subset: m.subset }], `${at}.subset`, push)[0] ?? null);
  return Object.freeze({
    service: m.service ?? null,
    subset,
    percent: m.percent ?? M.percent,
    hostSuffix: m.hostSuffix ?? M.hostSuffix,
    nonIdempotent: m.nonIdempotent ?? M.nonIdempotent,
    maxInFlight: m.maxInFlight ?? M.maxInFlight,
    timeoutMs: dur(m.timeout, requestTimeoutMs > 0 ? requestTimeoutMs : D.requestTimeoutMs, `${at}.timeout`, 1),
  });
}

const NO_BACKENDS: readonly BackendPolicy[] = Object.freeze([]);

/**
 * A split's backends: each subset sorted by key, named, and told apart from the others; a single
 * backend takes 100, two or more give every weight and sum to 100 (a weight of 0 is allowed: the
 * backend takes requests only when the others have no instance to take them).
 */
function buildBackends(raw: readonly RawBackend[] | undefined, at: string, push: Push): readonly BackendPolicy[] {
  if (raw === undefined) return NO_BACKENDS;
  const seen = new Map<string, number>();
  let sum = 0;
  let missing = false;
  const out = raw.map((b, i) => {
    const subset = Object.freeze(
      Object.entries(b.subset)
        .sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0))
        .map(([k, v]) => Object.freeze([k, v] as const)),
    );
    const name = subsetName(subset);
    const same = JSON.stringify(subset);
    const prev = seen.get(same);
    if (prev !== undefined) push(`${at}[${i}].subset`, `duplicates the subset of ${at}[${prev}] (${name}): give each subset once`);
    seen.set(same, i);
    if (b.weight === undefined && raw.length > 1) {
      push(`${at}[${i}].weight`, `is required when there are ${raw.length} backends (their weights sum to 100)`);
      missing = true;
    }
    const weight = b.weight ?? 100;
    sum += weight;
    return Object.freeze({ subset, weight, name });
  });
  if (!missing && sum !== 100) push(at, `weights must sum to 100, not ${sum} (${out.map((b) => `${b.name}: ${b.weight}`).join(', ')})`);
  return Object.freeze(out);
}

/** "tier=gold,version=v2": a subset as text. */
export function subsetName(subset: ReadonlyArray<readonly [string, string]>): string {
  return subset.map(([k, v]) => `${k}=${v}`).join(',');
}

/** What a subset is matched against: an instance's version and labels (an Endpoint has both). */
export interface SubsetFacts {
  readonly version: string;
  readonly labels: Readonly<Record<string, string>>;
}

/** Whether an instance is in a subset: every label has the value given ("version" is the instance's version). */
export function inSubset(subset: ReadonlyArray<readonly [string, string]>, x: SubsetFacts): boolean {
  for (const [k, v] of subset) if ((k === 'version' ? x.version : x.labels[k]) !== v) return false;
  return true;
}

/**
 * Where the instances are known (a mesh file: each service's version and labels), a split that
 * names a subset none of them is in can only be a mistake: pushes `backends[i].subset` (or
 * `routes[j].backends[i].subset`) naming the subset and what the instances have. The API accepts
 * such a split (the version may start later); /debug/endpoints and x-skein-explain show it.
 */
export function checkSubsetsKnown(raw: RawTraffic, instances: readonly SubsetFacts[], push: Push): void {
  const versions = [...new Set(instances.map((x) => JSON.stringify(x.version)))].join(', ') || 'none';
  const check = (backends: readonly RawBackend[] | undefined, at: string) =>
    backends?.forEach((b, i) => {
      const subset = Object.entries(b.subset);
      if (!instances.some((x) => inSubset(subset, x))) push(`${at}[${i}].subset`, `names ${subsetName(subset)}, which no instance of the service is in (their versions: ${versions})`);
    });
  check(raw.backends, 'backends');
  raw.routes?.forEach((r, j) => check(r.backends, `routes[${j}].backends`));
}

function buildRetries(r: Omit<RawRetries, 'budget'> | undefined, base: RetryPolicy, at: string, dur: Dur, push: Push): RetryPolicy {
  if (r === undefined) return base;
  const backoffBaseMs = dur(r.backoff?.base, base.backoffBaseMs, `${at}.backoff.base`, 1);
  const backoffMaxMs = dur(r.backoff?.max, Math.max(base.backoffMaxMs, backoffBaseMs), `${at}.backoff.max`, 1);
  if (backoffMaxMs < backoffBaseMs) push(`${at}.backoff.max`, `must be at least ${at}.backoff.base (${backoffBaseMs}ms)`);
  return Object.freeze({
    maxRetries: r.maxRetries ?? base.maxRetries,
    on: r.on === undefined ? base.on : Object.freeze([...r.on]),
    statuses: r.statuses === undefined ? base.statuses : Object.freeze([...r.statuses]),
    nonIdempotent: r.nonIdempotent ?? base.nonIdempotent,
    maxBodyBytes: r.maxBodyBytes ?? base.maxBodyBytes,
    backoffBaseMs,
    backoffMaxMs,
  });
}

/** A deep copy of a JSON value, deeply frozen. */
export function frozenCopy<T>(v: T): T {
  return deepFreeze(structuredClone(v));
}

/** The traffic fields of a raw service, as given (kept to store and send the service as it was written). */
export function pickTraffic(raw: Record<string, unknown>): RawTraffic {
  const out: Record<string, unknown> = {};
  for (const k of TRAFFIC_FIELD_NAMES) if (raw[k] !== undefined) out[k] = raw[k];
  return out as RawTraffic;
}

/** The policy of a service that sets none of the traffic fields. */
export const DEFAULT_TRAFFIC: TrafficPolicy = buildTraffic({}, (field, message) => {
  throw new Error(`the traffic defaults are invalid: ${field} ${message}`);
});

/** What a service's own (inbound) proxy applies of its policy: routes and rate limits only. */
export function inboundTraffic(p: TrafficPolicy): TrafficPolicy {
  return Object.freeze({ ...p, breaker: null, outlier: null, activeHealthCheck: null, coldStart: null });
}
