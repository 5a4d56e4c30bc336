/**
 * The dashboard on the control plane: the built web UI (dashboard/dist, from
 * `npx vite build dashboard`) at /dashboard/, and GET / redirecting there. The UI reads only the
 * public API (/v1/signals..., /v1/events). When the UI is not built the routes answer 503 with a
 * JSON error saying how to build it, instead of failing to start.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fastifyStatic from '@fastify/static';

/** The package root: this file is dist/src/control/dashboard.js. */
const PACKAGE_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** Where `npx vite build dashboard` writes the UI. */
export const DEFAULT_DASHBOARD_ROOT = join(PACKAGE_ROOT, 'dashboard', 'dist');

export const DASHBOARD_NOT_BUILT = 'the dashboard is not built: run npx vite build dashboard';

// The UI loads nothing from anywhere else; styles are set inline by the chart library.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'none'";

export interface DashboardOptions {
  /** The built UI (a directory with index.html). Default: dashboard/dist of the package. */
  root?: string;
}

/** Adds GET / (a redirect), GET /dashboard and everything under /dashboard/. */
export function dashboardRoutes(app: FastifyInstance, opts: DashboardOptions = {}): void {
  const root = opts.root ?? DEFAULT_DASHBOARD_ROOT;
  const built = existsSync(join(root, 'index.html'));

  app.get('/', (_req, reply) => reply.redirect('/dashboard/', 302));

  if (!built) {
    const notBuilt = (_req: FastifyRequest, reply: FastifyReply) =>
      reply.code(503).header('content-type', 'application/json; charset=utf-8').header('cache-control', 'no-store').send({ code: 'SKEIN_E_DASHBOARD_NOT_BUILT', message: DASHBOARD_NOT_BUILT });
    app.get('/dashboard/', notBuilt);
    app.get('/dashboard/*', notBuilt);
    return;
  }

  void app.register(async (scope) => {
    scope.addHook('onSend', async (_req, reply) => {
      reply.header('content-security-policy', CSP);
      reply.header('x-content-type-options', 'nosniff');
      reply.header('referrer-policy', 'no-referrer');
    });
    await scope.register(fastifyStatic, {
      root,
      prefix: '/dashboard/',
      index: false,
      decorateReply: true,
      wildcard: true,
      // Built assets carry a content hash in their names: cache them for good; index.html never.
      cacheControl: false,
      setHeaders: (reply, path) => {
        reply.header('cache-control', /[\\/]assets[\\/]/.test(path) ? 'public, max-age=31536000, immutable' : 'no-cache');
      },
    });
    // The page itself. The router ignores trailing slashes, so "/dashboard" lands here too: send it
    // to "/dashboard/", where the page's relative asset URLs ("./assets/...") resolve.
    scope.get('/dashboard/', (req, reply) => {
      const path = req.url.split('?')[0] ?? '';
      if (!path.endsWith('/')) return reply.redirect('/dashboard/', 301);
      return reply.header('cache-control', 'no-cache').sendFile('index.html');
    });
  });
}
