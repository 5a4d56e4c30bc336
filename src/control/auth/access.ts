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
 * another site cannot make the browser write with it). On the mTLS listener a request without a
 * token may present a mesh certificate instead: a verified leaf of the mesh is a principal of
 * scope "proxy" bound to its workload's service (certificatePrincipal), so a proxy that holds a
 * certificate needs no API token to announce itself or register its service's instances.
 *
 * What the hook decided is also what the audit log gets (observeAccess): each refusal, and each
 * accepted write with the token that made it, once its response is sent (so with its status).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { ADMIN_TOKEN_NAME, TOKEN_COOKIE, scopeList, type TokenScope } from '../../api/auth.js';
import { auditRecord, type AuditRecord } from '../../api/audit.js';
import { SkeinError } from '../../core/errors.js';
import { isLoopbackAddress } from '../../core/loopback-host.js';
import type { SpiffeId } from '../../identity/spiffe.js';
import { clientIdentity, presentedCertificate } from '../ca/client-cert.js';
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
  { method: 'PUT', route: '/v1/mesh', scopes: ['automation'] },
  { method: 'POST', route: '/v1/mesh/services/:/rollout/undo', scopes: ['automation'] },
  { method: 'POST', route: '/v1/mesh/services/:/rollout/pause', scopes: ['automation'] },
  { method: 'POST', route: '/v1/mesh/services/:/rollout/resume', scopes: ['automation'] },
  // Any proxy may wake any service: its callers hold requests for it (docs/deployments.md#scale-to-zero).
  { method: 'POST', route: '/v1/mesh/services/:/wake', scopes: ['automation', 'proxy'] },
  // A joined host's runtime reports its rollouts, scaling and autoscaler decisions to the event feed.
  { method: 'POST', route: '/v1/events', scopes: ['automation'] },
  { method: 'PUT', route: '/v1/proxies/:', scopes: ['proxy'] },
  { method: 'DELETE', route: '/v1/proxies/:', scopes: ['proxy'] },
  { method: 'POST', route: '/v1/ca/certificates', byRoute: 'a join token, checked by the CA' },
  { method: 'POST', route: '/v1/ca/renew', byRoute: 'the client certificate being renewed, checked by the CA' },
]);

/** The principal a verified mesh certificate is: scope "proxy", bound to its workload's service. */
export function certificatePrincipal(id: SpiffeId): Principal {
  return { name: id.uri, scope: 'proxy', services: id.service === null ? [] : [id.service] };
}

const READ_METHODS = new Set(['GET', 'HEAD']);
/** Every scope may read; "read" is named first as the one to mint for it. */
const ANY_SCOPE: readonly TokenScope[] = ['read', 'tap', 'proxy', 'automation'];

/** `/v1/services/:service/instances/:id` -> `/v1/services/:/instances/:`. */
const shape = (route: string) => route.replace(/:[^/]+/g, ':').replace(/(.)\/+$/, '$1');

const truthy = (v: unknown) => v !== undefined && v !== '0' && v !== 'false';

/** Writes that repeat every few seconds to say nothing changed: logged at debug, not audited. */
function routine(method: string, route: string | undefined): boolean {
  if (route === undefined) return false;
  const r = shape(route);
  return (method === 'PUT' && r === '/v1/services/:/instances/:/heartbeat') || (method === 'PUT' && r === '/v1/proxies/:');
}

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

/** `the token "ci"`, or `the mesh certificate of spiffe://...` (a token's name is a DNS label: never a SPIFFE ID). */
function credentialOf(p: Principal, kind = ''): string {
  return p.name.startsWith('spiffe://') ? `the mesh certificate of ${p.name}` : `the ${kind}token "${p.name}"`;
}

/** Null when `p` may do what `a` needs; otherwise why not. */
export function refusal(p: Principal, a: Access & { kind: 'token' }): string | null {
  if (p.scope === 'admin') return null;
  if (!a.scopes.includes(p.scope)) return `${credentialOf(p)} has scope "${p.scope}"; ${a.what} needs a token with scope ${scopeList([...a.scopes, 'admin'])}`;
  if (p.scope === 'proxy' && a.service !== undefined && !(p.services ?? []).includes(a.service)) {
    return `${credentialOf(p, 'proxy ')} may change instances of ${(p.services ?? []).map((s) => `"${s}"`).join(', ')} only, not of "${a.service}"`;
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

/** What the hook decided about one request, as observeAccess reports it. */
export type AccessOutcome =
  /** 401 or 403: `token` is the presented token's principal when it was valid (a wrong scope). */
  | { readonly kind: 'refused'; readonly code: 'SKEIN_E_UNAUTHENTICATED' | 'SKEIN_E_FORBIDDEN'; readonly reason: string; readonly token: Principal | null }
  /** A write the token may make (its response may still be an error: `status` says). */
  | { readonly kind: 'write'; readonly token: Principal };

/** One request the hook refused, or one write it let through, once answered. */
export interface AccessEvent {
  readonly outcome: AccessOutcome;
  readonly method: string;
  /** Without the query string. */
  readonly path: string;
  /** The fastify route pattern (undefined: none matched). */
  readonly route: string | undefined;
  readonly params: Readonly<Record<string, string>>;
  readonly body: unknown;
  /** The caller's address. */
  readonly from: string | null;
  /** The response's status. */
  readonly status: number;
  readonly requestId: string;
}

const outcomes = new WeakMap<FastifyRequest, AccessOutcome>();
const principals = new WeakMap<FastifyRequest, Principal>();

/** Who the access hook found behind a request that needed a credential (null: none was needed, or no hook). */
export function principalOf(req: FastifyRequest): Principal | null {
  return principals.get(req) ?? null;
}

/**
 * Reports, after each response, what the access hook decided: refusals, and writes other than
 * the routine ones (heartbeats, proxy announcements). The control plane writes them to its audit log.
 */
export function observeAccess(app: FastifyInstance, on: (e: AccessEvent) => void): void {
  app.addHook('onResponse', async (req, reply) => {
    const outcome = outcomes.get(req);
    if (outcome === undefined) return;
    on({
      outcome,
      method: req.method,
      path: req.url.split('?')[0] as string,
      route: req.routeOptions.url,
      params: (req.params ?? {}) as Record<string, string>,
      body: req.body,
      from: req.socket.remoteAddress ?? null,
      status: reply.statusCode,
      requestId: req.id,
    });
  });
}

const param = (e: AccessEvent, name: string): string | null => e.params[name] ?? null;

/**
 * The audit lines of an access event: `api-token-refused` for a refusal; for an accepted write
 * `control-write` naming the token, and besides, once it succeeded, `policy-changed` (PUT or
 * DELETE of an AuthorizationPolicy), `api-token-minted` or `api-token-revoked`.
 * `revision`: the registry's, after the write.
 */
export function accessAuditRecords(e: AccessEvent, now: number, revision: number): AuditRecord[] {
  const o = e.outcome;
  const common = { sourceAddress: e.from, method: e.method, rawPath: e.path, requestId: e.requestId, revision, actor: o.token?.name ?? null, scope: o.token?.scope ?? null };
  if (o.kind === 'refused') return [auditRecord('security', now, { ...common, event: 'api-token-refused', reason: o.reason, code: o.code, details: { status: e.status } })];
  const out = [auditRecord('security', now, { ...common, event: 'control-write', service: param(e, 'service'), details: { status: e.status } })];
  if (e.status >= 300) return out;
  const r = e.route === undefined ? '' : shape(e.route);
  if (r === '/v1/services/:/policies/:') {
    const what = e.method === 'DELETE' ? 'deleted' : 'put';
    out.push(auditRecord('security', now, { ...common, event: 'policy-changed', service: param(e, 'service'), policy: param(e, 'policy'), reason: `AuthorizationPolicy ${what} by "${o.token.name}"`, details: { status: e.status } }));
  } else if (r === '/v1/tokens' && e.method === 'POST') {
    const b = (e.body ?? {}) as { name?: unknown; scope?: unknown };
    out.push(auditRecord('security', now, { ...common, event: 'api-token-minted', reason: `token "${String(b.name)}" (scope ${String(b.scope)}) minted by "${o.token.name}"`, details: { token: b.name ?? null, tokenScope: b.scope ?? null } }));
  } else if (r === '/v1/tokens/:' && e.method === 'DELETE') {
    out.push(auditRecord('security', now, { ...common, event: 'api-token-revoked', reason: `token "${param(e, 'name') ?? ''}" revoked by "${o.token.name}"`, details: { token: param(e, 'name') } }));
  }
  return out;
}

export interface AccessControlOptions {
  readonly tokens: TokenStore;
  readonly logger: Logger;
  /** The mesh's trust domain: a certificate of it on the mTLS listener is a credential. Undefined: certificates are not. */
  readonly trustDomain?: string;
}

type Verified = { readonly ok: true; readonly principal: Principal } | { readonly ok: false; readonly reason: string };

/** The credential a request presents: its bearer token, else (on the mTLS listener) its mesh certificate; null: none. */
function credential(req: FastifyRequest, o: AccessControlOptions, what: string): Verified | null | '' {
  const token = presentedToken(req);
  if (token !== null) return token === '' ? '' : o.tokens.verify(token);
  if (o.trustDomain === undefined || !presentedCertificate(req.raw.socket)) return null;
  try {
    return { ok: true, principal: certificatePrincipal(clientIdentity(req.raw.socket, o.trustDomain, what)) };
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
}

/** Adds the hook. Refusals: 401 SKEIN_E_UNAUTHENTICATED (no or unknown token), 403 SKEIN_E_FORBIDDEN (wrong scope). */
export function accessControl(app: FastifyInstance, o: AccessControlOptions): void {
  app.addHook('onRequest', async (req, reply) => {
    const a = accessFor(req.method, req.routeOptions.url, (req.params ?? {}) as Record<string, string>, (req.query ?? {}) as Record<string, unknown>, isLoopbackAddress(req.socket.remoteAddress ?? ''));
    if (a.kind !== 'token') return;
    const scopes = [...a.scopes, 'admin'] as TokenScope[];
    const details = { scopes };
    const v = credential(req, o, a.what);
    const path = req.url.split('?')[0];
    // A proxy's certificate stands for a proxy token (on the mTLS listener): say so where it would do.
    const orCert = o.trustDomain !== undefined && a.scopes.includes('proxy') ? ", or a mesh certificate on the control plane's mTLS listener" : '';
    if (v === null || v === '') {
      reply.header('www-authenticate', `Bearer realm="skein", scope="${scopes.join(' ')}"`);
      o.logger.warn({ method: req.method, path, from: req.socket.remoteAddress, needs: scopes }, 'request refused: no token');
      const sent = v === '' ? 'the authorization header is not "Bearer <token>"' : 'none was sent';
      const message = `${a.what} needs a token with scope ${scopeList(scopes)}${orCert}: ${sent}`;
      outcomes.set(req, { kind: 'refused', code: 'SKEIN_E_UNAUTHENTICATED', reason: message, token: null });
      throw new SkeinError('SKEIN_E_UNAUTHENTICATED', message, { details });
    }
    if (!v.ok) {
      reply.header('www-authenticate', `Bearer realm="skein", error="invalid_token", scope="${scopes.join(' ')}"`);
      o.logger.warn({ method: req.method, path, from: req.socket.remoteAddress, needs: scopes, reason: v.reason }, 'request refused: bad token');
      const message = `${a.what} needs a token with scope ${scopeList(scopes)}${orCert}: ${v.reason}`;
      outcomes.set(req, { kind: 'refused', code: 'SKEIN_E_UNAUTHENTICATED', reason: message, token: null });
      throw new SkeinError('SKEIN_E_UNAUTHENTICATED', message, { details });
    }
    const why = refusal(v.principal, a);
    if (why !== null) {
      o.logger.warn({ method: req.method, path, from: req.socket.remoteAddress, token: v.principal.name, scope: v.principal.scope }, `request refused: ${why}`);
      outcomes.set(req, { kind: 'refused', code: 'SKEIN_E_FORBIDDEN', reason: why, token: v.principal });
      throw new SkeinError('SKEIN_E_FORBIDDEN', why, { details });
    }
    principals.set(req, v.principal);
    if (!READ_METHODS.has(req.method)) {
      // Who changed what (heartbeats are routine: debug; they and announcements are not audited).
      if (!routine(req.method, req.routeOptions.url)) outcomes.set(req, { kind: 'write', token: v.principal });
      const level = path?.endsWith('/heartbeat') === true ? 'debug' : 'info';
      o.logger[level]({ method: req.method, path, from: req.socket.remoteAddress, token: v.principal.name, scope: v.principal.scope, admin: v.principal.name === ADMIN_TOKEN_NAME }, 'control-plane write');
    }
  });
}
