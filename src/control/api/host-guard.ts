/**
 * The DNS-rebinding guard: bound to loopback, only loopback `Host`s (before any route, the
 * dashboard's too). Not on the mTLS listener: a page that rebinds a name of its own to it cannot
 * complete a TLS handshake with a certificate of the mesh's CA, and proxies of other hosts reach it
 * by whatever address it listens on.
 */
import type { FastifyInstance } from 'fastify';
import { foreignHost } from '../../core/loopback-host.js';
import { SkeinError } from '../../core/errors.js';
import { sendError } from './errors.js';
import { overMtls } from '../ca/client-cert.js';

export function hostGuard(app: FastifyInstance): void {
  // The address is known once listening; null until then (inject() in tests: no guard).
  let bound: string | null = null;
  app.addHook('onRequest', async (req, reply) => {
    if (overMtls(req.raw.socket)) return;
    if (bound === null) {
      const a = app.server.address();
      bound = a !== null && typeof a === 'object' ? a.address : null;
    }
    const why = foreignHost(bound, req.headers.host);
    if (why !== null) return sendError(reply, new SkeinError('SKEIN_E_FOREIGN_HOST', why, { field: 'host' }));
  });
}
