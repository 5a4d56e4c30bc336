/**
 * The Instance resource: GET /v1/services/{service}/instances (blocking with ?index), GET, PUT
 * and DELETE .../instances/{id}, and PUT .../instances/{id}/heartbeat for ttl checks.
 */
import type { FastifyPluginAsync } from 'fastify';
import { SkeinError } from '../../core/errors.js';
import { wireInstance } from '../publisher.js';
import type { ApiDeps } from './deps.js';
import { boolQ, idParam, query, revQ, serviceParam, waitQ } from './params.js';

export const instanceRoutes: FastifyPluginAsync<ApiDeps> = async (app, { registry, health, publisher, clock }) => {
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
};

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
