/**
 * The runtime's routes, registered by `skein up` on its embedded control plane's API, or with
 * `--join` on the host's own mesh API (src/cli/up.ts startHostApi; docs/api.md,
 * docs/deployments.md, docs/operations.md#managing-a-joined-hosts-services):
 *
 *   GET  /v1/mesh                                     the services, their replicas and revisions
 *   PUT  /v1/mesh                                     apply a mesh file (JSON): roll out what changed
 *   PUT  /v1/mesh/services/:service/replicas          scale
 *   GET  /v1/mesh/services/:service/rollout           the rollout's status
 *   GET  /v1/mesh/services/:service/revisions         the revision history
 *   POST /v1/mesh/services/:service/rollout/undo      {toRevision?}
 *   POST /v1/mesh/services/:service/rollout/pause
 *   POST /v1/mesh/services/:service/rollout/resume
 *   POST /v1/mesh/services/:service/wake               a proxy holds requests: wake it from zero
 */
import type { FastifyInstance } from 'fastify';
import { parseMesh } from '../api/mesh.js';
import { SkeinError } from '../core/errors.js';
import type { MeshRunner } from './mesh-runner.js';

function objectBody(body: unknown, shape: string, allowed: readonly string[]): Record<string, unknown> {
  if (body === undefined || body === null) return {};
  if (typeof body !== 'object' || Array.isArray(body)) throw new SkeinError('SKEIN_E_VALIDATION', `body must be ${shape}`, { field: 'body' });
  const extra = Object.keys(body).filter((k) => !allowed.includes(k));
  if (extra.length > 0) throw new SkeinError('SKEIN_E_VALIDATION', `${extra[0]} is not a known field (the body is ${shape})`, { field: extra[0] as string });
  return body as Record<string, unknown>;
}

export function meshRoutes(runner: () => MeshRunner | null): (app: FastifyInstance) => void {
  return (app) => {
    const need = (): MeshRunner => {
      const r = runner();
      if (r === null) throw new SkeinError('SKEIN_E_SHUTTING_DOWN', 'the mesh is still starting');
      return r;
    };
    type P = { Params: { service: string } };
    app.get('/v1/mesh', async () => {
      const r = need();
      return { name: r.name, services: r.status() };
    });
    app.put('/v1/mesh', async (req, reply) => {
      const r = need();
      // The same checks as `skein up FILE`: errors name the field (services.web.replicas).
      const mesh = parseMesh(req.body, 'the mesh file');
      const results = await r.apply(mesh);
      reply.code(202);
      return { name: r.name, services: results };
    });
    app.put<P>('/v1/mesh/services/:service/replicas', async (req, reply) => {
      const r = need();
      const body = req.body as { replicas?: unknown } | null;
      if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new SkeinError('SKEIN_E_VALIDATION', 'body must be {"replicas": N}', { field: 'body' });
      objectBody(body, '{"replicas": N}', ['replicas']);
      if (typeof body.replicas !== 'number') throw new SkeinError('SKEIN_E_VALIDATION', 'replicas is required and must be an integer from 0 to 100', { field: 'replicas' });
      // Validates and starts at once; the surplus replicas drain in the background.
      const done = r.scale(req.params.service, body.replicas);
      await Promise.race([done, new Promise((res) => setImmediate(res))]);
      done.catch(() => undefined);
      reply.code(202);
      return { service: req.params.service, replicas: body.replicas, services: r.status().filter((s) => s.name === req.params.service) };
    });
    app.get<P>('/v1/mesh/services/:service/rollout', async (req) => {
      const rt = need().service(req.params.service);
      return { service: req.params.service, ...rt.rolloutStatus(), ...rt.replicaStatus() };
    });
    app.get<P>('/v1/mesh/services/:service/revisions', async (req) => {
      const rt = need().service(req.params.service);
      return { service: req.params.service, revisions: rt.revisions() };
    });
    app.post<P>('/v1/mesh/services/:service/rollout/undo', async (req, reply) => {
      const rt = need().service(req.params.service);
      const body = objectBody(req.body, '{"toRevision": N} or empty', ['toRevision']);
      const to = body['toRevision'];
      if (to !== undefined && (typeof to !== 'number' || !Number.isInteger(to) || to < 1)) {
        throw new SkeinError('SKEIN_E_VALIDATION', `toRevision must be a revision number (a whole number from 1), got ${JSON.stringify(to)}`, { field: 'toRevision' });
      }
      const rev = rt.undo(to as number | undefined);
      reply.code(202);
      return { service: req.params.service, cause: rev.cause, ...rt.rolloutStatus() };
    });
    app.post<P>('/v1/mesh/services/:service/wake', async (req, reply) => {
      const r = need();
      objectBody(req.body, 'empty', []);
      const woken = r.wake(req.params.service);
      reply.code(woken ? 202 : 200);
      return { service: req.params.service, woken };
    });
    for (const op of ['pause', 'resume'] as const) {
      app.post<P>(`/v1/mesh/services/:service/rollout/${op}`, async (req) => {
        const rt = need().service(req.params.service);
        objectBody(req.body, 'empty', []);
        rt[op]();
        return { service: req.params.service, ...rt.rolloutStatus() };
      });
    }
  };
}
