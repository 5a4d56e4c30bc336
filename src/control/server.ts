/**
 * The control plane's HTTP API, versioned under /v1. Every error is JSON {code, message, field}
 * with the status from the code table; bodies over 1 MiB and unknown fields are refused. Bound to
 * loopback, it answers only loopback `Host`s (src/core/loopback-host.ts), the dashboard included.
 *
 * This file builds the fastify instance and what every route shares (body parsing, errors,
 * metrics, shutdown, the Host guard); each resource is a plugin of its own under api/, like
 * fastify's one-concept-per-file lib/: health.ts, services.ts, routes.ts, instances.ts, watch.ts.
 * GET /v1/events, /v1/mesh, /v1/proxies, /v1/tap, /v1/ca (api/ca.ts) and the dashboard are added by
 * control-plane.ts. Who may call what (tokens and their scopes) is decided before any route, by
 * one hook: auth/access.ts; /v1/tokens is auth/routes.ts.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { SkeinError } from '../core/errors.js';
import { BODY_LIMIT, sendError, toSkeinError } from './api/errors.js';
import type { ApiDeps } from './api/deps.js';
import { healthRoutes } from './api/health.js';
import { hostGuard } from './api/host-guard.js';
import { instanceRoutes } from './api/instances.js';
import { policyRoutes } from './api/policies.js';
import { routeRoutes } from './api/routes.js';
import { serviceRoutes } from './api/services.js';
import { watchRoutes } from './api/watch.js';
import { accessControl } from './auth/access.js';
import { tokenRoutes } from './auth/routes.js';
import { TokenStore } from './auth/tokens.js';

export { BODY_LIMIT, type ApiDeps };
export { query, serviceParam } from './api/params.js';

/** What the API authenticates callers with. */
export interface ApiAuth {
  readonly tokens: TokenStore;
  /** The mesh's trust domain: its certificates are credentials on the mTLS listener (access.ts). */
  readonly trustDomain?: string;
}

/**
 * A fastify instance answering as the control plane's API does: JSON bodies only (an empty one is
 * no body), errors as SkeinErrors with the code table's status, unknown routes 404
 * SKEIN_E_NOT_FOUND. What `skein up --join`'s own API is built on too.
 */
export function createBaseApp(logger: Pick<Logger, 'error'>): FastifyInstance {
  const app = Fastify({
    bodyLimit: BODY_LIMIT,
    logger: false,
    forceCloseConnections: true,
    return503OnClosing: false,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 256 },
  });
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
  app.setErrorHandler((e, req, reply) => {
    const se = toSkeinError(e);
    if (se.code === 'SKEIN_E_INTERNAL') logger.error({ err: e, url: req.url }, 'internal error');
    void sendError(reply, se);
  });
  app.setNotFoundHandler((req, reply) => {
    void sendError(reply, new SkeinError('SKEIN_E_NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`));
  });
  return app;
}

/** `auth` left out: no token is known, so every write is refused (what a unit test of reads wants). */
export function createApiServer(deps: ApiDeps, auth: ApiAuth = { tokens: TokenStore.inMemory(deps.clock) }): FastifyInstance {
  const app = createBaseApp(deps.logger);
  app.addHook('onResponse', (req, reply, done) => {
    const route = req.routeOptions.url ?? 'unmatched';
    deps.metrics.apiRequest(req.method, route, reply.statusCode, reply.elapsedTime / 1000);
    done();
  });
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', async (_req, reply) => {
    if (closing) return sendError(reply.header('connection', 'close'), new SkeinError('SKEIN_E_SHUTTING_DOWN', 'the control plane is shutting down'));
  });
  hostGuard(app);
  // Every route registered anywhere (plugins below, control-plane.ts, skein up's) is behind it.
  accessControl(app, { tokens: auth.tokens, logger: deps.logger, ...(auth.trustDomain === undefined ? {} : { trustDomain: auth.trustDomain }) });
  void app.register(tokenRoutes, { tokens: auth.tokens, logger: deps.logger });

  void app.register(healthRoutes, deps);
  void app.register(serviceRoutes, deps);
  void app.register(routeRoutes, deps);
  void app.register(policyRoutes, deps);
  void app.register(instanceRoutes, deps);
  // GET /v1/events is the mesh event feed (signals/routes.ts, meshEventsRoute).
  void app.register(watchRoutes, deps);
  return app;
}
