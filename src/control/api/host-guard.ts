/** The DNS-rebinding guard: bound to loopback, only loopback `Host`s (before any route, the dashboard's too). */
import type { FastifyInstance } from 'fastify';
import { foreignHost } from '../../core/loopback-host.js';
import { SkeinError } from '../../core/errors.js';
import { sendError } from './errors.js';

export function hostGuard(app: FastifyInstance): void {
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
