/**
 * One parse step: raw JSON/YAML values -> frozen domain objects, or a SkeinError whose `field`
 * names the path of the first problem and whose `details` list every problem.
 */
import { isIP } from 'node:net';
import { buildBalancer } from './balancer.js';
import { buildTraffic, frozenCopy, pickTraffic } from './traffic.js';
import { authorizationToRaw, buildAuthorization, buildPolicy } from './authz/build.js';
import type { AuthorizationPolicyResource } from './authz/model.js';
import type { RawAuthorizationPolicy } from './authz/schema.js';
import { SkeinError } from '../core/errors.js';
import { durationAt } from './duration.js';
import { check, joinPath, validationError, type FieldProblem } from './validate.js';
import { yamlDocuments } from './yaml.js';
import {
  API_VERSION,
  InstanceBodySchema,
  InstanceSchema,
  RESOURCE_KINDS,
  ServiceBodySchema,
  ServiceSchema,
  RouteBodySchema,
  RouteResourceSchema,
  AuthorizationPolicyBodySchema,
  AuthorizationPolicyResourceSchema,
  HealthCheckSchema,
  type RawHealthCheck,
  type RawInstance,
  type RawService,
} from './schema.js';
import { HEALTH_CHECK_DEFAULTS, INSTANCE_DEFAULTS, resourceKey, DEFAULT_PROTOCOL, type HealthCheck, type Instance, type Protocol, type Resource, type Route, type Service, type ServiceDefaults } from './types.js';

export { validationError, type FieldProblem };

function freezeRecord(r: Record<string, string> | undefined): Readonly<Record<string, string>> {
  return Object.freeze({ ...(r ?? {}) });
}

function buildCheck(raw: RawHealthCheck, prefix: string, problems: FieldProblem[]): HealthCheck | null {
  const at = (f: string) => joinPath(prefix, f);
  const push = (field: string, message: string) => problems.push({ field, message });
  const H = HEALTH_CHECK_DEFAULTS;
  const isTtl = raw.type === 'ttl';
  const interval = durationAt(raw.interval, H.intervalMs, at('interval'), push, { min: 100 });
  const timeout = durationAt(raw.timeout, H.timeoutMs, at('timeout'), push, { min: 1 });
  const ttl = durationAt(raw.ttl, undefined, at('ttl'), push, { min: 1000 });
  const deregisterAfter = durationAt(raw.deregisterAfter, undefined, at('deregisterAfter'), push, { min: 1000 });
  if (isTtl) {
    if (raw.ttl === undefined) problems.push({ field: at('ttl'), message: 'is required for a ttl check' });
    for (const f of ['path', 'method', 'expectedStatus', 'port', 'interval', 'timeout', 'healthyThreshold', 'unhealthyThreshold'] as const) {
      if (raw[f] !== undefined) problems.push({ field: at(f), message: 'applies to http and tcp checks, not ttl' });
    }
  } else {
    if (raw.ttl !== undefined) problems.push({ field: at('ttl'), message: 'applies to ttl checks only' });
    if (raw.type === 'tcp') {
      for (const f of ['path', 'method', 'expectedStatus'] as const) {
        if (raw[f] !== undefined) problems.push({ field: at(f), message: 'applies to http checks only' });
      }
    }
  }
  let min: number = H.expectedStatus.min;
  let max: number = H.expectedStatus.max;
  if (raw.expectedStatus !== undefined) {
    const [a, b] = raw.expectedStatus.split('-');
    min = Number(a);
    max = b === undefined ? min : Number(b);
    if (min > max) problems.push({ field: at('expectedStatus'), message: 'range start is above its end' });
  }
  return {
    type: raw.type,
    path: raw.path ?? H.path,
    method: raw.method ?? H.method,
    expectedStatus: Object.freeze({ min, max }),
    port: raw.port ?? null,
    intervalMs: interval,
    timeoutMs: timeout,
    ttlMs: ttl ?? 0,
    healthyThreshold: raw.healthyThreshold ?? H.healthyThreshold,
    unhealthyThreshold: isTtl ? 1 : (raw.unhealthyThreshold ?? H.unhealthyThreshold),
    initialState: raw.initialState ?? (isTtl ? H.initialState.ttl : H.initialState.probe),
    deregisterAfterMs: deregisterAfter ?? null,
  };
}

export interface InstanceContext {
  /** From the URL path: the body may omit these, and must agree when it has them. */
  service?: string;
  id?: string;
  /** Defaults of the service, merged under the instance's own values. */
  defaults?: ServiceDefaults;
  /** Prefix for field paths (a file name and index, say). */
  prefix?: string;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Raw instance (API body or file resource without its envelope) -> frozen Instance. */
export function parseInstance(raw: unknown, ctx: InstanceContext = {}): Instance {
  const prefix = ctx.prefix ?? '';
  const fromPath = ctx.service !== undefined || ctx.id !== undefined;
  const problems: FieldProblem[] = check(fromPath ? InstanceBodySchema : InstanceSchema, raw, prefix);
  if (problems.length > 0) throw validationError(problems, 'invalid instance');
  const body = raw as Partial<RawInstance> & Pick<RawInstance, 'address' | 'port'>;
  for (const f of ['service', 'id'] as const) {
    const expected = ctx[f];
    if (expected !== undefined && body[f] !== undefined && body[f] !== expected) {
      throw new SkeinError('SKEIN_E_CONFLICT', `${f} in the body (${body[f]}) differs from the path (${expected})`, {
        field: joinPath(prefix, f),
      });
    }
  }
  const d = ctx.defaults ?? {};
  if (!isIP(body.address)) problems.push({ field: joinPath(prefix, 'address'), message: 'must be an IPv4 or IPv6 address' });
  let checkRaw: unknown = body.check ?? d.check;
  let checkPrefix = joinPath(prefix, 'check');
  if (body.check === undefined && d.check !== undefined) {
    checkPrefix = 'defaults.check (of the service)';
    const p = check(HealthCheckSchema, d.check, checkPrefix);
    if (p.length > 0) {
      problems.push(...p);
      checkRaw = undefined;
    }
  }
  const hc = checkRaw === undefined ? null : buildCheck(checkRaw as RawHealthCheck, checkPrefix, problems);
  if (problems.length > 0) throw validationError(problems, 'invalid instance');
  const inst: Instance = {
    id: (body.id ?? ctx.id) as string,
    service: (body.service ?? ctx.service) as string,
    address: body.address,
    port: body.port,
    weight: body.weight ?? d.weight ?? INSTANCE_DEFAULTS.weight,
    zone: body.zone ?? d.zone ?? INSTANCE_DEFAULTS.zone,
    version: body.version ?? d.version ?? INSTANCE_DEFAULTS.version,
    labels: freezeRecord({ ...(d.labels ?? {}), ...(body.labels ?? {}) }),
    check: hc === null ? null : Object.freeze(hc),
  };
  return Object.freeze(inst);
}

export function parseService(raw: unknown, ctx: { name?: string; prefix?: string } = {}): Service {
  const prefix = ctx.prefix ?? '';
  const problems: FieldProblem[] = check(ctx.name !== undefined ? ServiceBodySchema : ServiceSchema, raw, prefix);
  if (problems.length > 0) throw validationError(problems, 'invalid service');
  const body = raw as Partial<RawService>;
  if (ctx.name !== undefined && body.name !== undefined && body.name !== ctx.name) {
    throw new SkeinError('SKEIN_E_CONFLICT', `name in the body (${body.name}) differs from the path (${ctx.name})`, {
      field: joinPath(prefix, 'name'),
    });
  }
  const ports = body.ports ?? [];
  const seen = new Set<string>();
  ports.forEach((p, i) => {
    if (seen.has(p.name)) problems.push({ field: joinPath(prefix, `ports[${i}].name`), message: `duplicates port name "${p.name}"` });
    seen.add(p.name);
  });
  const defaults = body.defaults ?? {};
  if (defaults.check !== undefined) buildCheck(defaults.check, joinPath(prefix, 'defaults.check'), problems);
  const push = (field: string, message: string) => problems.push({ field: joinPath(prefix, field), message });
  const balancer = buildBalancer(body.balancer, push);
  const trafficRaw = pickTraffic(body as Record<string, unknown>);
  const traffic = buildTraffic(trafficRaw, push);
  const authorization = buildAuthorization(body.authorization, push);
  if (problems.length > 0) throw validationError(problems, 'invalid service');
  return Object.freeze({
    name: (body.name ?? ctx.name) as string,
    ports: Object.freeze(ports.map((p) => Object.freeze({ name: p.name, port: p.port, protocol: p.protocol ?? DEFAULT_PROTOCOL }))),
    labels: freezeRecord(body.labels),
    defaults: Object.freeze({ ...defaults }) as ServiceDefaults,
    balancer,
    traffic,
    trafficRaw: frozenCopy(trafficRaw),
    authorization,
    mtlsMode: body.mtls?.mode ?? null,
    protocol: body.protocol ?? portsProtocol(ports) ?? DEFAULT_PROTOCOL,
  });
}

/** The protocol every one of `ports` declares (http when one declares none), or undefined: none, or they differ. */
function portsProtocol(ports: ReadonlyArray<{ readonly protocol?: Protocol }>): Protocol | undefined {
  const first = ports[0];
  if (first === undefined) return undefined;
  const p = first.protocol ?? DEFAULT_PROTOCOL;
  return ports.every((x) => (x.protocol ?? DEFAULT_PROTOCOL) === p) ? p : undefined;
}

/** What a service's instances speak (its definition's `protocol`; http without a definition or before the field existed). */
export function serviceProtocol(def: Service | null | undefined): Protocol {
  return def?.protocol ?? DEFAULT_PROTOCOL;
}

/** A Service back in its raw form (what parseService accepts), e.g. to store it. */
export function serviceToRaw(def: Service): RawService {
  const { kind, hashKey } = def.balancer;
  // Absent in a definition from before authorization existed.
  const authorization = def.authorization === undefined ? undefined : authorizationToRaw(def.authorization);
  return {
    name: def.name,
    ports: def.ports.map((p) => ({ ...p })),
    labels: { ...def.labels },
    defaults: def.defaults as RawService['defaults'],
    balancer: hashKey === null ? { kind } : { kind, hashKey: { ...hashKey } },
    ...structuredClone(def.trafficRaw),
    ...(authorization === undefined ? {} : { authorization }),
    ...(def.mtlsMode == null ? {} : { mtls: { mode: def.mtlsMode } }),
    ...(def.protocol === undefined || def.protocol === DEFAULT_PROTOCOL ? {} : { protocol: def.protocol }),
  };
}

/**
 * A route on its own (a Route resource, or the body of `PUT /v1/services/{service}/routes/{name}`
 * when `ctx` names them). Checked as a route of a service with no other settings; checked again
 * with its service when applied.
 */
export function parseRoute(raw: unknown, ctx: { service?: string; name?: string; prefix?: string } = {}): Route {
  const prefix = ctx.prefix ?? '';
  const fromPath = ctx.service !== undefined || ctx.name !== undefined;
  const problems: FieldProblem[] = check(fromPath ? RouteBodySchema : RouteResourceSchema, fromPath ? raw : { kind: 'Route', ...(raw as object) }, prefix);
  if (problems.length > 0) throw validationError(problems, 'invalid route');
  const body = { ...(raw as Record<string, unknown>) };
  for (const f of ['service', 'name'] as const) {
    const expected = ctx[f];
    if (expected !== undefined && body[f] !== undefined && body[f] !== expected) {
      throw new SkeinError('SKEIN_E_CONFLICT', `${f} in the body (${String(body[f])}) differs from the path (${expected})`, { field: joinPath(prefix, f) });
    }
  }
  const service = (body['service'] ?? ctx.service) as string;
  const name = (body['name'] ?? ctx.name) as string;
  delete body['service'];
  body['name'] = name;
  // Checked as a route of a service without a request timeout: how it fits its service is checked when applied.
  buildTraffic({ timeouts: { request: '0s' }, routes: [body as never] }, (field, message) => problems.push({ field: joinPath(prefix, field.replace(/^routes\[0\]\.?/, '')), message }));
  if (problems.length > 0) throw validationError(problems, 'invalid route');
  return Object.freeze({ service, name, raw: frozenCopy(body) });
}

/**
 * An authorization policy on its own (an AuthorizationPolicy resource, or the body of
 * `PUT /v1/services/{service}/policies/{name}` when `ctx` names them). It lands in its service's
 * `authorization.policies`, replacing the policy of the same name.
 */
export function parseAuthorizationPolicy(raw: unknown, ctx: { service?: string; name?: string; prefix?: string } = {}): AuthorizationPolicyResource {
  const prefix = ctx.prefix ?? '';
  const fromPath = ctx.service !== undefined || ctx.name !== undefined;
  const what = 'invalid authorization policy';
  const problems: FieldProblem[] = check(
    fromPath ? AuthorizationPolicyBodySchema : AuthorizationPolicyResourceSchema,
    fromPath ? raw : { kind: 'AuthorizationPolicy', ...(raw as object) },
    prefix,
  );
  if (problems.length > 0) throw validationError(problems, what);
  const body = raw as Partial<RawAuthorizationPolicy> & { service?: string; rules: RawAuthorizationPolicy['rules']; action: RawAuthorizationPolicy['action'] };
  for (const f of ['service', 'name'] as const) {
    const expected = ctx[f];
    if (expected !== undefined && body[f] !== undefined && body[f] !== expected) {
      throw new SkeinError('SKEIN_E_CONFLICT', `${f} in the body (${String(body[f])}) differs from the path (${expected})`, { field: joinPath(prefix, f) });
    }
  }
  const { service: s, ...fields } = body;
  const policy = buildPolicy({ ...fields, name: (body.name ?? ctx.name) as string }, '', (field, message) => problems.push({ field: joinPath(prefix, field), message }));
  if (problems.length > 0) throw validationError(problems, what);
  return Object.freeze({ service: (s ?? ctx.service) as string, ...policy });
}

/** A resource with its envelope (`kind`, optional `apiVersion`). */
export function parseResource(raw: unknown, prefix = ''): Resource {
  if (!isPlainObject(raw)) throw validationError([{ field: prefix || '(root)', message: 'must be an object' }], 'invalid resource');
  const kind = raw['kind'];
  if (typeof kind !== 'string' || !(kind in RESOURCE_KINDS)) {
    throw validationError(
      [{ field: joinPath(prefix, 'kind'), message: `must be one of ${Object.keys(RESOURCE_KINDS).map((k) => JSON.stringify(k)).join(', ')}` }],
      'invalid resource',
    );
  }
  const apiVersion = raw['apiVersion'];
  if (apiVersion !== undefined && apiVersion !== API_VERSION) {
    throw validationError([{ field: joinPath(prefix, 'apiVersion'), message: `must be "${API_VERSION}"` }], 'invalid resource');
  }
  const { kind: _k, apiVersion: _v, ...rest } = raw;
  if (kind === 'Service') return Object.freeze({ kind: 'Service' as const, ...parseService(rest, { prefix }) });
  if (kind === 'Route') return Object.freeze({ kind: 'Route' as const, ...parseRoute(rest, { prefix }) });
  if (kind === 'AuthorizationPolicy') return Object.freeze({ kind: 'AuthorizationPolicy' as const, ...parseAuthorizationPolicy(rest, { prefix }) });
  return Object.freeze({ kind: 'Instance' as const, ...parseInstance(rest, { prefix }) });
}

/**
 * Parses a resource file's text (YAML, possibly multi-document, or JSON; one resource or a
 * list). Errors name the file, the resource (by index and kind/name) and the field.
 */
export function parseResourceFile(text: string, fileName: string): Resource[] {
  return loadResourceFile(text, fileName).map((x) => x.resource);
}

/** Like parseResourceFile, keeping each resource's raw fields (without its envelope) beside it. */
export function loadResourceFile(text: string, fileName: string): Array<{ resource: Resource; raw: Record<string, unknown> }> {
  const items: unknown[] = [];
  for (const v of yamlDocuments(text, fileName)) {
    if (Array.isArray(v)) items.push(...v);
    else items.push(v);
  }
  const out: Array<{ resource: Resource; raw: Record<string, unknown> }> = [];
  const names = new Set<string>();
  items.forEach((item, i) => {
    const label = isPlainObject(item) && typeof item['kind'] === 'string' ? `[${i}] ${item['kind']}` : `[${i}]`;
    try {
      const r = parseResource(item);
      const key = resourceKey(r);
      if (names.has(key)) throw validationError([{ field: r.kind === 'Instance' ? 'id' : 'name', message: `duplicates ${key}` }], 'invalid resource');
      names.add(key);
      const { kind: _k, apiVersion: _v, ...raw } = item as Record<string, unknown>;
      out.push({ resource: r, raw });
    } catch (e) {
      if (e instanceof SkeinError) {
        const field = e.field === undefined ? `${fileName}: resource ${label}` : `${fileName}: resource ${label}: ${e.field}`;
        const named = isPlainObject(item) && typeof (item['name'] ?? item['id']) === 'string' ? ` "${String(item['name'] ?? item['id'])}"` : '';
        throw new SkeinError(e.code, `${fileName}: resource ${label}${named}: ${e.message}`, { field, details: e.details });
      }
      throw e;
    }
  });
  return out;
}
