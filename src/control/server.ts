/**
 * The control plane's HTTP API, versioned under /v1. Every error is JSON {code, message, field}
 * with the status from the code table; bodies over 1 MiB and unknown fields are refused. Bound to
 * loopback, it answers only loopback `Host`s (src/core/loopback-host.ts), the dashboard included.
 */
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { SkeinError, type ErrorCode } from '../core/errors.js';
import { parseDuration } from '../core/duration.js';
import type { Clock } from '../core/clock.js';
import { parseRoute, parseService, serviceToRaw } from '../api/parse.js';
import { DNS_LABEL_PATTERN, INSTANCE_ID_PATTERN } from '../api/schema.js';
import type { Registry } from './registry/registry.js';
import type { HealthManager } from './health/manager.js';
import { wireInstance, type Publisher, type WatchFormat } from './publisher.js';
import type { ControlMetrics } from './metrics.js';
import type { Logger } from 'pino';
import { exposition } from '../telemetry/exposition.js';
import { foreignHost } from '../core/loopback-host.js';

export const BODY_LIMIT = 1024 * 1024;
const MAX_WAIT_MS = 10 * 60_000;
const DEFAULT_WAIT_MS = 5 * 60_000;

export interface ApiDeps {
  registry: Registry;
  health: HealthManager;
  publisher: Publisher;
  metrics: ControlMetrics;
  clock: Clock;
  logger: Logger;
  version: string;
  startedAt: number;
  /** Extra facts for GET /v1/health (listen addresses, store kind). */
  info: () => Record<string, unknown>;
}

const labelRe = new RegExp(DNS_LABEL_PATTERN);
const idRe = new RegExp(INSTANCE_ID_PATTERN);

export function serviceParam(v: string): string {
  if (!labelRe.test(v)) throw new SkeinError('SKEIN_E_VALIDATION', `service name "${v}" is not a DNS label (${DNS_LABEL_PATTERN})`, { field: 'service' });
  return v;
}

function idParam(v: string): string {
  if (!idRe.test(v)) throw new SkeinError('SKEIN_E_VALIDATION', `instance id "${v}" must match ${INSTANCE_ID_PATTERN}`, { field: 'id' });
  return v;
}

type Query = Record<string, string | string[] | undefined>;

/** Validates query parameters: only the allowed names, each at most once. */
export function query(req: FastifyRequest, allowed: string[]): Record<string, string> {
  const q = (req.query ?? {}) as Query;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(q)) {
    if (!allowed.includes(k)) {
      throw new SkeinError('SKEIN_E_BAD_QUERY', `unknown query parameter "${k}"${allowed.length ? ` (allowed: ${allowed.join(', ')})` : ''}`, { field: k });
    }
    if (Array.isArray(v)) throw new SkeinError('SKEIN_E_BAD_QUERY', `query parameter "${k}" is given more than once`, { field: k });
    if (v !== undefined) out[k] = v;
  }
  return out;
}

function boolQ(q: Record<string, string>, name: string): boolean {
  const v = q[name];
  if (v === undefined) return false;
  if (v === '' || v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw new SkeinError('SKEIN_E_BAD_QUERY', `query parameter "${name}" must be true or false`, { field: name });
}

function revQ(q: Record<string, string>, name: string): number | null {
  const v = q[name];
  if (v === undefined) return null;
  if (!/^\d{1,15}$/.test(v)) throw new SkeinError('SKEIN_E_BAD_QUERY', `query parameter "${name}" must be a non-negative integer revision`, { field: name });
  return Number(v);
}

function waitQ(q: Record<string, string>): number {
  const v = q['wait'];
  if (v === undefined) return DEFAULT_WAIT_MS;
  const ms = parseDuration(v);
  if (ms === undefined) throw new SkeinError('SKEIN_E_BAD_QUERY', `query parameter "wait" must be a duration such as "30s" (got "${v}")`, { field: 'wait' });
  if (ms > MAX_WAIT_MS) throw new SkeinError('SKEIN_E_BAD_QUERY', 'query parameter "wait" must be at most 10m', { field: 'wait' });
  return ms;
}

/** Every error: the code's status, the code in `x-skein-error` (as the proxy's own answers), a JSON body. */
function sendError(reply: FastifyReply, e: SkeinError): FastifyReply {
  return reply.code(e.status).header('content-type', 'application/json; charset=utf-8').header('x-skein-error', e.code).send(e.toJSON());
}

/** Maps fastify's own errors (body parsing, limits) onto the code table. */
function toSkeinError(e: unknown): SkeinError {
  if (e instanceof SkeinError) return e;
  const err = e as { code?: string; statusCode?: number; message?: string };
  const code = err.code ?? '';
  const status = err.statusCode ?? 500;
  let c: ErrorCode = 'SKEIN_E_INTERNAL';
  let message = 'internal error';
  if (code === 'FST_ERR_CTP_BODY_TOO_LARGE' || status === 413) {
    c = 'SKEIN_E_BODY_TOO_LARGE';
    message = `request body is larger than ${BODY_LIMIT} bytes`;
  } else if (code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || status === 415) {
    c = 'SKEIN_E_UNSUPPORTED_MEDIA_TYPE';
    message = 'request body must be application/json';
  } else if (code === 'FST_ERR_CTP_INVALID_JSON_BODY' || code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || e instanceof SyntaxError) {
    // SyntaxError: malformed JSON, or prototype poisoning refused by the parser.
    c = 'SKEIN_E_BAD_JSON';
    message = `request body is not valid JSON: ${err.message ?? ''}`.trim();
  } else if (status >= 400 && status < 500) {
    c = 'SKEIN_E_VALIDATION';
    message = err.message ?? 'bad request';
  }
  return new SkeinError(c, message, c === 'SKEIN_E_INTERNAL' ? {} : { field: 'body' });
}

export function createApiServer(deps: ApiDeps): FastifyInstance {
  const { registry, health, publisher, metrics, clock } = deps;
  const app = Fastify({
    bodyLimit: BODY_LIMIT,
    logger: false,
    forceCloseConnections: true,
    return503OnClosing: false,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 256 },
  });
  const watchSinks = new Set<FastifyReply['raw']>();
  // Only JSON bodies: fastify's built-in text/plain parser would let a non-JSON type through (415 instead).
  app.removeContentTypeParser('text/plain');
  // JSON as fastify parses it (prototype poisoning refused), but an empty body is no body: a
  // heartbeat sent with `content-type: application/json` and nothing else is fine.
  const jsonParser = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    const text = body.toString();
    if (text.trim() === '') return done(null, undefined);
    jsonParser(req, text, done);
  });

  app.addHook('onResponse', (req, reply, done) => {
    const route = req.routeOptions.url ?? 'unmatched';
    metrics.apiDuration.observe({ method: req.method, route, status: String(reply.statusCode) }, reply.elapsedTime / 1000);
    done();
  });
  app.setErrorHandler((e, req, reply) => {
    const se = toSkeinError(e);
    if (se.code === 'SKEIN_E_INTERNAL') deps.logger.error({ err: e, url: req.url }, 'internal error');
    void sendError(reply, se);
  });
  app.setNotFoundHandler((req, reply) => {
    void sendError(reply, new SkeinError('SKEIN_E_NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`));
  });
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
    for (const raw of watchSinks) raw.destroy();
  });
  app.addHook('onRequest', async (_req, reply) => {
    if (closing) return sendError(reply.header('connection', 'close'), new SkeinError('SKEIN_E_SHUTTING_DOWN', 'the control plane is shutting down'));
  });
  hostGuard(app);

  // ---- health and metrics ----
  app.get('/v1/health', async (req) => {
    query(req, []);
    return {
      status: 'ok',
      version: deps.version,
      revision: registry.revision,
      services: registry.serviceCount,
      instances: registry.instanceCount,
      healthyInstances: registry.healthyCount,
      watchSubscribers: publisher.subscriberCount,
      uptimeSeconds: Math.round((clock.now() - deps.startedAt) / 1000),
      ...deps.info(),
    };
  });
  app.get('/metrics', async (req, reply) => {
    const { contentType, text } = await exposition(metrics.registry, req.headers.accept);
    return reply.header('content-type', contentType).send(text);
  });

  // ---- services ----
  app.get('/v1/services', async (req, reply) => {
    const q = query(req, ['index', 'wait']);
    const index = revQ(q, 'index');
    if (index !== null) await publisher.waitForChange(null, index, waitQ(q), clock);
    reply.header('x-skein-index', String(registry.revision));
    return {
      revision: registry.revision,
      services: registry.listServices().map((s) => ({
        name: s.name,
        instances: s.instances,
        healthy: s.healthy,
        revision: s.revision,
        defined: s.definition !== null,
        labels: s.definition?.labels ?? {},
        ports: s.definition?.ports ?? [],
      })),
    };
  });

  app.get<{ Params: { service: string } }>('/v1/services/:service', async (req) => {
    query(req, []);
    const name = serviceParam(req.params.service);
    const st = registry.service(name);
    if (st === undefined) throw new SkeinError('SKEIN_E_UNKNOWN_SERVICE', `service "${name}" is not registered`, { field: 'service' });
    return { name, revision: st.revision, definition: st.definition, instances: st.instances.size, healthy: st.healthy };
  });

  app.put<{ Params: { service: string } }>('/v1/services/:service', async (req, reply) => {
    query(req, []);
    const name = serviceParam(req.params.service);
    let body: unknown = req.body ?? {};
    // A Service put without `routes` keeps the routes it has (managed as Route resources, say).
    const prevRoutes = registry.service(name)?.definition?.trafficRaw.routes;
    if (prevRoutes !== undefined && typeof body === 'object' && body !== null && !Array.isArray(body) && !('routes' in body)) body = { ...body, routes: prevRoutes };
    const def = parseService(body, { name });
    const r = await registry.putService(def);
    return reply.code(r.created ? 201 : 200).send({ service: def, created: r.created, changed: r.changed, revision: registry.revision });
  });

  // ---- routes (kept in their service's `routes`) ----
  const definitionOf = (name: string) => {
    const def = registry.service(name)?.definition ?? null;
    if (def === null) throw new SkeinError('SKEIN_E_UNKNOWN_SERVICE', `service "${name}" has no definition: create the Service before its routes`, { field: 'service' });
    return def;
  };
  const routeParam = (v: string) => {
    if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(v)) throw new SkeinError('SKEIN_E_VALIDATION', `route name "${v.slice(0, 80)}" is not a DNS label`, { field: 'name' });
    return v;
  };

  app.get<{ Params: { service: string } }>('/v1/services/:service/routes', async (req) => {
    query(req, []);
    const name = serviceParam(req.params.service);
    return { service: name, routes: definitionOf(name).trafficRaw.routes ?? [], revision: registry.revision };
  });

  app.put<{ Params: { service: string; route: string } }>('/v1/services/:service/routes/:route', async (req, reply) => {
    query(req, []);
    const service = serviceParam(req.params.service);
    const routeName = routeParam(req.params.route);
    const route = parseRoute(req.body ?? {}, { service, name: routeName });
    const def = definitionOf(service);
    const raw = serviceToRaw(def);
    const routes = [...(raw.routes ?? [])];
    const at = routes.findIndex((r) => r.name === routeName);
    const created = at < 0;
    if (created) routes.push(route.raw as never);
    else routes[at] = route.raw as never;
    const next = parseService({ ...raw, routes }, { name: service });
    const r = await registry.putService(next);
    return reply.code(created ? 201 : 200).send({ route: route.raw, service, created, changed: r.changed, revision: registry.revision });
  });

  app.delete<{ Params: { service: string; route: string } }>('/v1/services/:service/routes/:route', async (req) => {
    query(req, []);
    const service = serviceParam(req.params.service);
    const routeName = routeParam(req.params.route);
    const raw = serviceToRaw(definitionOf(service));
    const routes = raw.routes ?? [];
    if (!routes.some((r) => r.name === routeName)) throw new SkeinError('SKEIN_E_UNKNOWN_ROUTE', `service "${service}" has no route "${routeName}"`, { field: 'name' });
    await registry.putService(parseService({ ...raw, routes: routes.filter((r) => r.name !== routeName) }, { name: service }));
    return { deleted: routeName, service, revision: registry.revision };
  });

  app.delete<{ Params: { service: string } }>('/v1/services/:service', async (req) => {
    query(req, []);
    const name = serviceParam(req.params.service);
    await registry.deleteService(name);
    return { deleted: name, revision: registry.revision };
  });

  // ---- instances ----
  app.get<{ Params: { service: string } }>('/v1/services/:service/instances', async (req, reply) => {
    const q = query(req, ['all', 'index', 'wait']);
    const service = serviceParam(req.params.service);
    const all = boolQ(q, 'all');
    const index = revQ(q, 'index');
    if (index !== null) await publisher.waitForChange(service, index, waitQ(q), clock);
    const instances = registry.listInstances(service, { all }).map(wireInstance);
    const rev = registry.serviceRevision(service);
    reply.header('x-skein-index', String(rev));
    return { service, revision: rev, instances };
  });

  app.get<{ Params: { service: string; id: string } }>('/v1/services/:service/instances/:id', async (req) => {
    query(req, []);
    const rec = registry.mustGet(serviceParam(req.params.service), idParam(req.params.id));
    return { instance: wireInstance(rec) };
  });

  app.put<{ Params: { service: string; id: string } }>('/v1/services/:service/instances/:id', async (req, reply) => {
    query(req, []);
    const service = serviceParam(req.params.service);
    const id = idParam(req.params.id);
    if (req.body === undefined || req.body === null) throw new SkeinError('SKEIN_E_VALIDATION', 'request body is required (an Instance)', { field: 'body' });
    const instance = registry.parseInstanceFor(service, id, req.body);
    const r = await registry.register(instance);
    return reply.code(r.created ? 201 : 200).send({ instance: wireInstance(r.record), created: r.created, changed: r.changed, revision: r.record.modRevision });
  });

  app.delete<{ Params: { service: string; id: string } }>('/v1/services/:service/instances/:id', async (req) => {
    query(req, []);
    const rec = await registry.deregister(serviceParam(req.params.service), idParam(req.params.id));
    return { deregistered: wireInstance(rec), revision: registry.revision };
  });

  app.put<{ Params: { service: string; id: string } }>('/v1/services/:service/instances/:id/heartbeat', async (req) => {
    query(req, []);
    const service = serviceParam(req.params.service);
    const id = idParam(req.params.id);
    const report = parseHeartbeat(req.body);
    const rec = await health.heartbeat(service, id, report);
    return { instance: wireInstance(rec), ttlRemainingMs: health.ttlRemaining(service, id) ?? null };
  });

  // ---- events: GET /v1/events is the mesh event feed (signals/routes.ts, meshEventsRoute) ----

  // ---- watch ----
  app.get('/v1/watch', (req, reply) => {
    const q = query(req, ['service', 'since', 'format']);
    const service = q['service'] === undefined || q['service'] === '' ? null : serviceParam(q['service']);
    let since = revQ(q, 'since');
    const lastEventId = req.headers['last-event-id'];
    if (since === null && typeof lastEventId === 'string' && /^\d{1,15}$/.test(lastEventId)) since = Number(lastEventId);
    const fmt = q['format'] ?? (String(req.headers.accept ?? '').includes('text/event-stream') ? 'sse' : 'ndjson');
    if (fmt !== 'ndjson' && fmt !== 'sse') throw new SkeinError('SKEIN_E_BAD_QUERY', 'query parameter "format" must be ndjson or sse', { field: 'format' });
    const format = fmt as WatchFormat;
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, {
      'content-type': format === 'sse' ? 'text/event-stream; charset=utf-8' : 'application/x-ndjson; charset=utf-8',
      'cache-control': 'no-cache, no-store',
      'x-skein-index': String(registry.revision),
      'x-accel-buffering': 'no',
    });
    raw.flushHeaders();
    raw.socket?.setNoDelay(true);
    watchSinks.add(raw);
    raw.once('close', () => watchSinks.delete(raw));
    publisher.subscribe({ service, since, format, sink: raw });
  });

  return app;
}

/** The DNS-rebinding guard: bound to loopback, only loopback `Host`s (before any route, the dashboard's too). */
function hostGuard(app: FastifyInstance): void {
  // The address is known once listening; null until then (inject() in tests: no guard).
  let bound: string | null = null;
  app.addHook('onRequest', async (req, reply) => {
    if (bound === null) {
      const a = app.server.address();
      bound = a !== null && typeof a === 'object' ? a.address : null;
    }
    const why = foreignHost(bound, req.headers.host);
    if (why !== null) return sendError(reply, new SkeinError('SKEIN_E_FOREIGN_HOST', why, { field: 'host' }));
  });
}

function parseHeartbeat(body: unknown): { status?: 'healthy' | 'unhealthy'; reason?: string } {
  if (body === undefined || body === null || body === '') return {};
  if (typeof body !== 'object' || Array.isArray(body)) throw new SkeinError('SKEIN_E_VALIDATION', 'heartbeat body must be an object', { field: 'body' });
  const out: { status?: 'healthy' | 'unhealthy'; reason?: string } = {};
  for (const [k, v] of Object.entries(body)) {
    if (k === 'status') {
      if (v !== 'healthy' && v !== 'unhealthy') throw new SkeinError('SKEIN_E_VALIDATION', 'status must be "healthy" or "unhealthy"', { field: 'status' });
      out.status = v;
    } else if (k === 'reason') {
      if (typeof v !== 'string' || v.length > 1024) throw new SkeinError('SKEIN_E_VALIDATION', 'reason must be a string of at most 1024 characters', { field: 'reason' });
      out.reason = v;
    } else throw new SkeinError('SKEIN_E_VALIDATION', `${k} is not a known field`, { field: k });
  }
  return out;
}

