/** The Route resource, kept in its service's `routes`: GET /v1/services/{service}/routes, PUT and DELETE .../routes/{route}. */
import type { FastifyPluginAsync } from 'fastify';
import { parseRoute, parseService, serviceToRaw } from '../../api/parse.js';
import { SkeinError } from '../../core/errors.js';
import type { ApiDeps } from './deps.js';
import { definitionOf, query, routeParam, serviceParam } from './params.js';

export const routeRoutes: FastifyPluginAsync<ApiDeps> = async (app, { registry }) => {
  app.get<{ Params: { service: string } }>('/v1/services/:service/routes', async (req) => {
    query(req, []);
    const name = serviceParam(req.params.service);
    return { service: name, routes: definitionOf(registry, name, 'routes').trafficRaw.routes ?? [], revision: registry.revision };
  });

  app.put<{ Params: { service: string; route: string } }>('/v1/services/:service/routes/:route', async (req, reply) => {
    query(req, []);
    const service = serviceParam(req.params.service);
    const routeName = routeParam(req.params.route);
    const route = parseRoute(req.body ?? {}, { service, name: routeName });
    const raw = serviceToRaw(definitionOf(registry, service, 'routes'));
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
    const raw = serviceToRaw(definitionOf(registry, service, 'routes'));
    const routes = raw.routes ?? [];
    if (!routes.some((r) => r.name === routeName)) throw new SkeinError('SKEIN_E_UNKNOWN_ROUTE', `service "${service}" has no route "${routeName}"`, { field: 'name' });
    await registry.putService(parseService({ ...raw, routes: routes.filter((r) => r.name !== routeName) }, { name: service }));
    return { deleted: routeName, service, revision: registry.revision };
  });
};
