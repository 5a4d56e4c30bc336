/** POST /v1/tokens (mint: the token is in this answer only), GET /v1/tokens, DELETE /v1/tokens/{name}; admin only (access.ts). */
import type { FastifyPluginAsync } from 'fastify';
import type { Logger } from 'pino';
import { parseTokenRequest } from '../../api/auth.js';
import { query } from '../api/params.js';
import type { TokenStore } from './tokens.js';

export const tokenRoutes: FastifyPluginAsync<{ tokens: TokenStore; logger: Logger }> = async (app, { tokens, logger }) => {
  app.get('/v1/tokens', async (req) => {
    query(req, []);
    return { tokens: tokens.list() };
  });
  app.post('/v1/tokens', async (req, reply) => {
    query(req, []);
    const r = await tokens.mint(parseTokenRequest(req.body));
    logger.info({ token: r.record.name, scope: r.record.scope, services: r.record.services, expiresAt: r.record.expiresAt }, 'token minted');
    return reply.code(201).header('cache-control', 'no-store').send({ token: r.token, ...r.record });
  });
  app.delete<{ Params: { name: string } }>('/v1/tokens/:name', async (req) => {
    query(req, []);
    const r = await tokens.revoke(req.params.name);
    logger.info({ token: r.name, scope: r.scope }, 'token revoked');
    return { revoked: r.name, scope: r.scope };
  });
};
