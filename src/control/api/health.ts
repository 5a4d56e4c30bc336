/** GET /v1/health (the control plane's own state) and GET /metrics (its Prometheus exposition). */
import type { FastifyPluginAsync } from 'fastify';
import { exposition } from '../../telemetry/exposition.js';
import type { ApiDeps } from './deps.js';
import { query } from './params.js';

export const healthRoutes: FastifyPluginAsync<ApiDeps> = async (app, deps) => {
  const { registry, publisher, clock, metrics } = deps;
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
};
