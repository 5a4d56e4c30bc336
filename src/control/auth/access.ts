/**
 * Who may call which route of the control plane's API: decided here, in one place, by method and
 * route pattern, before any route runs (a fastify onRequest hook, after the Host guard).
 *
 * - Reads (GET, HEAD) from a loopback address are open; from anywhere else they need a token of
 *   any scope (`read` is the least). Exceptions: GET /v1/tokens needs admin; a tap with headers or
 *   bodies (GET /v1/tap?headers=1 or bodies=1) needs `tap` or admin, even from loopback.
 * - Writes (PUT, POST, DELETE, PATCH) need the scopes of WRITE_ACCESS; a write route that is not in
 *   the table needs admin, so a new write route is protected until someone decides otherwise.
 *   The admin token may do everything.
 *
 * The token comes in `authorization: Bearer <token>`; for reads also in the dashboard's cookie
 * (a browser's EventSource cannot set headers; a cookie never authorizes a write, so a page of
 * another site cannot make the browser write with it).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { ADMIN_TOKEN_NAME, TOKEN_COOKIE, scopeList, type TokenScope } from '../../api/auth.js';
import { SkeinError } from '../../core/errors.js';
import { isLoopbackAddress } from '../../core/loopback-host.js';
import type { Principal, TokenStore } from './tokens.js';

/** What a request needs. */
export type Access =
  | { readonly kind: 'open' }
  /** The route authenticates the caller itself (the CA's join tokens): this hook stays out. */
  | { readonly kind: 'route'; readonly by: string }
  /** A token of one of `scopes` (admin always qualifies); `service`: a proxy token must be bound to it. */
  | { readonly kind: 'token'; readonly scopes: readonly TokenScope[]; readonly service?: string; readonly what: string };

interface WriteRule {
  readonly method: string;
  /** The fastify route pattern with parameter names left out: `/v1/services/:/instances/:`. */
  readonly route: string;
  readonly scopes?: readonly TokenScope[];
  /** proxy tokens only for the service of this route parameter. */
  readonly proxyService?: string;
  /** Authenticated by the route itself (what with). */
  readonly byRoute?: string;
}

/** Every write route that needs less than admin. Not listed: admin only. */
export const WRITE_ACCESS: readonly WriteRule[] = Object.freeze([
  { method: 'PUT', route: '/v1/services/:', scopes: ['automation'] },
  { method: 'DELETE', route: '/v1/services/:', scopes: ['automation'] },
  { method: 'PUT', route: '/v1/services/:/routes/:', scopes: ['automation'] },
  { method: 'DELETE', route: '/v1/services/:/routes/:', scopes: ['automation'] },
  { method: 'PUT', route: '/v1/services/:/policies/:', scopes: ['automation'] },
  { method: 'DELETE', route: '/v1/services/:/policies/:', scopes: ['automation'] },
  { method: 'PUT', route: '/v1/services/:/instances/:', scopes: ['automation', 'proxy'], proxyService: 'service' },
  { method: 'DELETE', route: '/v1/services/:/instances/:', scopes: ['automation', 'proxy'], proxyService: 'service' },
  { method: 'PUT', route: '/v1/services/:/instances/:/heartbeat', scopes: ['automation', 'proxy'], proxyService: 'service' },
  { method: 'PUT', route: '/v1/mesh/services/:/replicas', scopes: ['automation'] },
  { method: 'PUT', route: '/v1/proxies/:', scopes: ['proxy'] },
  { method: 'DELETE', route: '/v1/proxies/:', scopes: ['proxy'] },
  { method: 'POST', route: '/v1/ca/certificates', byRoute: 'a join token, checked by the CA' },
]);

const READ_METHODS = new Set(['GET', 'HEAD']);
/** Every scope may read; "read" is named first as the one to mint for it. */
const ANY_SCOPE: readonly TokenScope[] = ['read', 'tap', 'proxy', 'automation'];

/** `/v1/services/:service/instances/:id` -> `/v1/services/:/instances/:`. */
const shape = (route: string) => route.replace(/:[^/]+/g, ':').replace(/(.)\/+$/, '$1');

const truthy = (v: unknown) => v !== undefined && v !== '0' && v !== 'false';

/**
 * What a request needs: `route` is the fastify route it matched (undefined: none), `params` its
 * parameters, `query` its query, `loopback` whether it comes from a loopback address.
 */
export function accessFor(method: string, route: string | undefined, params: Record<string, string>, query: Record<string, unknown>, loopback: boolean): Access {
  const what = `${method} ${route ?? 'this path'}`;
  if (READ_METHODS.has(method)) {
    const r = route === undefined ? undefined : shape(route);
    if (r === '/v1/tokens') return { kind: 'token', scopes: [], what };
    if (r === '/v1/tap' && (truthy(query['headers']) || truthy(query['bodies']))) return { kind: 'token', scopes: ['tap'], what: `${method} /v1/tap with headers or bodies` };
    return loopback ? { kind: 'open' } : { kind: 'token', scopes: ANY_SCOPE, what: `${what} from beyond loopback` };
  }
  const rule = route === undefined ? undefined : WRITE_ACCESS.find((w) => w.method === method && w.route === shape(route));
  if (rule?.byRoute !== undefined) return { kind: 'route', by: rule.byRoute };
  if (rule === undefined) return { kind: 'token', scopes: [], what };
  const service = rule.proxyService === undefined ? undefined : params[rule.proxyService];
  return { kind: 'token', scopes: rule.scopes ?? [], what, ...(service === undefined ? {} : { service }) };
}

/** Null when `p` may do what `a` needs; otherwise why not. */
export function refusal(p: Principal, a: Access & { kind: 'token' }): string | null {
  if (p.scope === 'admin') return null;
  if (!a.scopes.includes(p.scope)) return `the token "${p.name}" has scope "${p.scope}"; ${a.what} needs a token with scope ${scopeList([...a.scopes, 'admin'])}`;
  if (p.scope === 'proxy' && a.service !== undefined && !(p.services ?? []).includes(a.service)) {
    return `the proxy token "${p.name}" may change instances of ${(p.services ?? []).map((s) => `"${s}"`).join(', ')} only, not of "${a.service}"`;
  }
  return null;
}

/** The token a request presents: the bearer token, or (for reads) the dashboard's cookie; null for none. */
export function presentedToken(req: Pick<FastifyRequest, 'headers' | 'method'>): string | null {
  const h = req.headers.authorization;
  if (typeof h === 'string') {
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(h);
    return m === null ? '' : (m[1] as string);
  }
  if (!READ_METHODS.has(req.method)) return null;
  const cookies = req.headers.cookie;
  if (typeof cookies !== 'string') return null;
  for (const part of cookies.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === TOKEN_COOKIE) return decodeURIComponent(part.slice(eq + 1).trim());
  }
  return null;
}

export interface AccessControlOptions {
  readonly tokens: TokenStore;
  readonly logger: Logger;
}

/** Adds the hook. Refusals: 401 SKEIN_E_UNAUTHENTICATED (no or unknown token), 403 SKEIN_E_FORBIDDEN (wrong scope). */
export function accessControl(app: FastifyInstance, o: AccessControlOptions): void {
  app.addHook('onRequest', async (req, reply) => {
    const a = accessFor(req.method, req.routeOptions.url, (req.params ?? {}) as Record<string, string>, (req.query ?? {}) as Record<string, unknown>, isLoopbackAddress(req.socket.remoteAddress ?? ''));
    if (a.kind !== 'token') return;
    const scopes = [...a.scopes, 'admin'] as TokenScope[];
    const details = { scopes };
    const token = presentedToken(req);
    const path = req.url.split('?')[0];
    if (token === null || token === '') {
      reply.header('www-authenticate', `Bearer realm="skein", scope="${scopes.join(' ')}"`);
      o.logger.warn({ method: req.method, path, from: req.socket.remoteAddress, needs: scopes }, 'request refused: no token');
      const sent = token === '' ? 'the authorization header is not "Bearer <token>"' : 'none was sent';
      throw new SkeinError('SKEIN_E_UNAUTHENTICATED', `${a.what} needs a token with scope ${scopeList(scopes)}: ${sent}`, { details });
    }
    const v = o.tokens.verify(token);
    if (!v.ok) {
      reply.header('www-authenticate', `Bearer realm="skein", error="invalid_token", scope="${scopes.join(' ')}"`);
      o.logger.warn({ method: req.method, path, from: req.socket.remoteAddress, needs: scopes, reason: v.reason }, 'request refused: bad token');
      throw new SkeinError('SKEIN_E_UNAUTHENTICATED', `${a.what} needs a token with scope ${scopeList(scopes)}: ${v.reason}`, { details });
    }
    const why = refusal(v.principal, a);
    if (why !== null) {
      o.logger.warn({ method: req.method, path, from: req.socket.remoteAddress, token: v.principal.name, scope: v.principal.scope }, `request refused: ${why}`);
      throw new SkeinError('SKEIN_E_FORBIDDEN', why, { details });
    }
    if (!READ_METHODS.has(req.method)) {
      // Who changed what (heartbeats are routine: debug).
      const level = path?.endsWith('/heartbeat') === true ? 'debug' : 'info';
      o.logger[level]({ method: req.method, path, from: req.socket.remoteAddress, token: v.principal.name, scope: v.principal.scope, admin: v.principal.name === ADMIN_TOKEN_NAME }, 'control-plane write');
    }
  });
}
