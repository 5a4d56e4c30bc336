/**
 * Control-plane tokens as the API, the CLI and the proxy share them: the scopes, what a token
 * looks like, where it travels (header, environment, files) and the body of `POST /v1/tokens`.
 * What each route needs is decided in one place, src/control/auth/access.ts.
 */
import { DNS_LABEL_PATTERN, patternMessage } from './names.js';
import { parseDuration } from '../core/duration.js';
import { SkeinError } from '../core/errors.js';

/**
 * admin: everything, minting tokens included. automation: apply services, routes, policies and
 * instances, scale (CI/CD). proxy: announce itself; register, deregister and heartbeat instances of
 * the services it was minted for. read: reads (needed beyond loopback only). tap: reads, and taps
 * with headers or bodies. Every scope may read.
 */
export const TOKEN_SCOPES = ['admin', 'automation', 'proxy', 'read', 'tap'] as const;
export type TokenScope = (typeof TOKEN_SCOPES)[number];

/** Each scope's prefix, so that a leaked token is found by grep (and its scope seen at a glance). */
export const TOKEN_PREFIX: Readonly<Record<TokenScope, string>> = Object.freeze({
  admin: 'skein_adm_',
  automation: 'skein_aut_',
  proxy: 'skein_prx_',
  read: 'skein_rd_',
  tap: 'skein_tap_',
});

/** 256 random bits in base64url (43 characters) after the prefix. */
export const TOKEN_SECRET_BYTES = 32;
export const TOKEN_PATTERN = /^skein_(adm|aut|prx|rd|tap)_[A-Za-z0-9_-]{43}$/;

/** The environment variable the CLI and the proxy read a token from. */
export const TOKEN_ENV = 'SKEIN_TOKEN';
/** The admin token's file in the control plane's data dir (mode 0600). */
export const ADMIN_TOKEN_FILE = 'admin.token';
/** The name the admin token is listed under (GET /v1/tokens); not a name a minted token may take. */
export const ADMIN_TOKEN_NAME = 'admin';
/** The dashboard's cookie: honoured for reads (GET, HEAD) only, never for a write. */
export const TOKEN_COOKIE = 'skein_token';

export const TOKEN_LIMITS = Object.freeze({
  /** Minted tokens the control plane keeps. */
  maxTokens: 10_000,
  /** Services a proxy token may be bound to. */
  maxServices: 1000,
  minTtlMs: 1000,
  maxTtlMs: 366 * 24 * 3600 * 1000,
});

/** The body of POST /v1/tokens, checked. */
export interface TokenRequest {
  readonly scope: Exclude<TokenScope, 'admin'>;
  readonly name: string;
  /** proxy tokens: the services whose instances it may register (required); null for the others. */
  readonly services: readonly string[] | null;
  /** null: the token does not expire. */
  readonly ttlMs: number | null;
}

/** A token as GET /v1/tokens lists it: never its secret, never its hash. */
export interface WireToken {
  readonly name: string;
  readonly scope: TokenScope;
  readonly services: readonly string[] | null;
  readonly createdAt: string | null;
  readonly expiresAt: string | null;
}

const labelRe = new RegExp(DNS_LABEL_PATTERN);

function fail(message: string, field: string): never {
  throw new SkeinError('SKEIN_E_VALIDATION', message, { field });
}

/** `"automation" or "admin"`: the scopes a refusal names, in the order given. */
export function scopeList(scopes: readonly TokenScope[]): string {
  const q = scopes.map((s) => `"${s}"`);
  return q.length <= 1 ? (q[0] ?? '') : `${q.slice(0, -1).join(', ')} or ${q.at(-1) as string}`;
}

/** Checks a POST /v1/tokens body; errors name the field. */
export function parseTokenRequest(body: unknown): TokenRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) fail('the body must be an object {scope, name, services?, ttl?}', 'body');
  const b = body as Record<string, unknown>;
  for (const k of Object.keys(b)) if (!['scope', 'name', 'services', 'ttl'].includes(k)) fail(`${k} is not a known field (scope, name, services, ttl)`, k);
  const scope = b['scope'];
  const mintable = TOKEN_SCOPES.filter((s) => s !== 'admin');
  if (scope === 'admin') fail(`scope "admin" cannot be minted: there is one admin token, in the data dir's ${ADMIN_TOKEN_FILE}`, 'scope');
  if (typeof scope !== 'string' || !(mintable as readonly string[]).includes(scope)) fail(`scope must be one of ${scopeList(mintable)}`, 'scope');
  const name = b['name'];
  if (typeof name !== 'string' || !labelRe.test(name)) fail(`name ${patternMessage(DNS_LABEL_PATTERN)}`, 'name');
  if (name === ADMIN_TOKEN_NAME) fail(`name "${ADMIN_TOKEN_NAME}" is the admin token's`, 'name');
  let services: string[] | null = null;
  if (b['services'] !== undefined) {
    const s = b['services'];
    if (scope !== 'proxy') fail('services applies to proxy tokens only', 'services');
    if (!Array.isArray(s) || s.length === 0 || s.length > TOKEN_LIMITS.maxServices) fail(`services must be a list of 1 to ${TOKEN_LIMITS.maxServices} service names`, 'services');
    services = s.map((v: unknown, i) => (typeof v === 'string' && labelRe.test(v) ? v : fail(`services[${i}] ${patternMessage(DNS_LABEL_PATTERN)}`, `services[${i}]`)));
    services = [...new Set(services)].sort();
  } else if (scope === 'proxy') fail('services is required for a proxy token: the services whose instances the proxy may register', 'services');
  let ttlMs: number | null = null;
  if (b['ttl'] !== undefined) {
    const t = b['ttl'];
    const ms = typeof t === 'string' ? parseDuration(t) : undefined;
    if (ms === undefined || ms < TOKEN_LIMITS.minTtlMs || ms > TOKEN_LIMITS.maxTtlMs) fail('ttl must be a duration from 1s to 8784h (366 days) such as "24h"', 'ttl');
    ttlMs = ms;
  }
  return { scope: scope as TokenRequest['scope'], name, services, ttlMs };
}
