/** The Service resource: GET /v1/services (blocking with ?index), GET, PUT and DELETE /v1/services/{service}. */
import type { FastifyPluginAsync } from 'fastify';
import { parseService } from '../../api/parse.js';
import { authorizationToRaw } from '../../api/authz/build.js';
import { SkeinError } from '../../core/errors.js';
import type { ApiDeps } from './deps.js';
import { query, revQ, serviceParam, waitQ } from './params.js';

export const serviceRoutes: FastifyPluginAsync<ApiDeps> = async (app, { registry, publisher, clock }) => {
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
    // A Service put without `routes` or `authorization` keeps the ones it has (managed as Route
    // and AuthorizationPolicy resources, say).
    const prev = registry.service(name)?.definition;
    if (prev != null && typeof body === 'object' && body !== null && !Array.isArray(body)) {
      const prevRoutes = prev.trafficRaw.routes;
      if (prevRoutes !== undefined && !('routes' in body)) body = { ...body, routes: prevRoutes };
      const prevAuthz = authorizationToRaw(prev.authorization);
      if (prevAuthz !== undefined && !('authorization' in (body as object))) body = { ...(body as object), authorization: prevAuthz };
    }
    const def = parseService(body, { name });
    const r = await registry.putService(def);
    return reply.code(r.created ? 201 : 200).send({ service: def, created: r.created, changed: r.changed, revision: registry.revision });
  });

  app.delete<{ Params: { service: string } }>('/v1/services/:service', async (req) => {
    query(req, []);
    const name = serviceParam(req.params.service);
    await registry.deleteService(name);
    return { deleted: name, revision: registry.revision };
  });
};
