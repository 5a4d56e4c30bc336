/**
 * Raw authorization (already checked against the schema) -> the frozen domain form, with the
 * checks the schema cannot word well: empty lists (which would match nothing, so they are
 * mistakes, not "match anything"), "*" anywhere but at the end, identities that are not SPIFFE
 * IDs, rule paths that are not in normalized form (a request path is normalized before it is
 * matched, so such a rule could never match), duplicate policy names, AUDIT in dry-run.
 */
import { normalizePath } from '../../core/path.js';
import { frozenCopy } from '../traffic.js';
import { DNS_LABEL_PATTERN, HTTP_TOKEN_PATTERN } from '../names.js';
import type { Push } from '../validate.js';
import { AUTHZ_DEFAULTS, NO_AUTHORIZATION, type AuthorizationPolicy, type ServiceAuthorization } from './model.js';
import type { RawAuthorizationPolicy, RawAuthzRule, RawServiceAuthorization } from './schema.js';

const EMPTY = 'is empty, which would match no request: leave the field out to match any';
const NAMESPACE = new RegExp(DNS_LABEL_PATTERN);
const TOKEN = new RegExp(HTTP_TOKEN_PATTERN);

/** Problems of one match string (exact, prefix "abc*", or "*"): none, or a message. */
function matchProblem(v: string): string | null {
  const star = v.indexOf('*');
  if (star >= 0 && star !== v.length - 1) return `has "*" at offset ${star}: "*" may only end a value (a prefix), never stand inside it`;
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(v)) return 'contains a control character';
  return null;
}

function identityProblem(v: string): string | null {
  if (v === '*') return null;
  if (!v.startsWith('spiffe://')) return `must be a SPIFFE ID ("spiffe://<trust-domain>/ns/<namespace>/sa/<service>"), a prefix of one ending in "*", or "*"`;
  if (/\s/.test(v)) return 'contains white space';
  return null;
}

/** A namespace or service name in a rule: a DNS label, a prefix of one ending in "*", or "*". */
function labelProblem(v: string, what: 'namespace' | 'service'): string | null {
  if (v === '*') return null;
  const stem = v.endsWith('*') ? v.slice(0, -1) : v;
  if (v.endsWith('*') ? !/^[a-z0-9-]*$/.test(stem) : !NAMESPACE.test(stem)) return `must be a ${what} (a DNS label), a prefix of one ending in "*", or "*"`;
  return null;
}

/**
 * Why a rule path (without its trailing "*") can never equal a request's normalized path
 * (src/authz/normalize.ts: src/core/path.ts, then `;` parameters dropped), or null.
 */
export function rulePathProblem(p: string): string | null {
  if (!p.startsWith('/')) return 'must start with "/"';
  for (let i = 0; i < p.length; i++) {
    const c = p.charCodeAt(i);
    if (c <= 0x20 || c === 0x7f) return `contains a control character or space at offset ${i}`;
  }
  for (const [ch, why] of [
    ['?', 'a query'],
    ['#', 'a fragment'],
    [';', 'a ";" parameter (requests are matched, and forwarded, without them)'],
    ['%00', 'an encoded NUL (requests with one are refused)'],
  ] as const) {
    if (p.includes(ch)) return `contains ${why}: rules match the normalized path only (docs/authorization.md#path-normalization)`;
  }
  const n = normalizePath(p);
  if (typeof n !== 'string') return n.error;
  return n === p ? null : `requests are matched by their normalized path, which "${p}" never is: write "${n}"`;
}

function list<T>(v: readonly T[] | undefined, field: string, push: Push, each?: (x: T) => string | null): void {
  if (v === undefined) return;
  if (v.length === 0) push(field, EMPTY);
  if (each === undefined) return;
  v.forEach((x, i) => {
    const m = each(x);
    if (m !== null) push(`${field}[${i}]`, m);
  });
}

function checkRule(r: RawAuthzRule, at: string, push: Push): void {
  const f = `${at}.from`;
  list(r.from?.identities, `${f}.identities`, push, (v) => matchProblem(v) ?? identityProblem(v));
  list(r.from?.namespaces, `${f}.namespaces`, push, (v) => matchProblem(v) ?? labelProblem(v, 'namespace'));
  list(r.from?.services, `${f}.services`, push, (v) => matchProblem(v) ?? labelProblem(v, 'service'));
  const t = `${at}.to`;
  list(r.to?.methods, `${t}.methods`, push, (m) => (TOKEN.test(m) ? null : 'must be an HTTP method (a token such as GET; methods are case-sensitive)'));
  list(r.to?.ports, `${t}.ports`, push);
  list(r.to?.paths, `${t}.paths`, push, (v) => {
    if (v === '*') return null;
    return matchProblem(v) ?? rulePathProblem(v.endsWith('*') ? v.slice(0, -1) : v);
  });
  list(r.when, `${at}.when`, push);
  r.when?.forEach((c, i) => list(c.values, `${at}.when[${i}].values`, push, matchProblem));
}

/** One policy: `at` prefixes its fields (`authorization.policies[0]`, or '' for a resource). */
export function buildPolicy(raw: RawAuthorizationPolicy, at: string, push: Push): AuthorizationPolicy {
  const field = (f: string) => (at === '' ? f : `${at}.${f}`);
  if (raw.rules.length === 0) push(field('rules'), 'is empty: a policy without rules matches no request (write `rules: [{}]` to match every request)');
  raw.rules.forEach((r, i) => checkRule(r, field(`rules[${i}]`), push));
  if (raw.action === 'AUDIT' && raw.mode === 'dry-run') push(field('mode'), 'does not apply to AUDIT policies, which only log matches and never block (leave mode out)');
  return frozenCopy({ name: raw.name, action: raw.action, mode: raw.mode ?? AUTHZ_DEFAULTS.mode, rules: raw.rules });
}

/** A Service's `authorization` (undefined: none). Fields are reported under `authorization.`. */
export function buildAuthorization(raw: RawServiceAuthorization | undefined, push: Push): ServiceAuthorization {
  if (raw === undefined) return NO_AUTHORIZATION;
  const seen = new Map<string, number>();
  const policies = (raw.policies ?? []).map((p, i) => {
    const at = `authorization.policies[${i}]`;
    const first = seen.get(p.name);
    if (first !== undefined) push(`${at}.name`, `duplicates policy "${p.name}" (policies[${first}])`);
    else seen.set(p.name, i);
    return buildPolicy(p, at, push);
  });
  return Object.freeze({ default: raw.default ?? null, policies: Object.freeze(policies) });
}

/** The raw form of a service's authorization (what buildAuthorization accepts), or undefined when it says nothing. */
export function authorizationToRaw(a: ServiceAuthorization): RawServiceAuthorization | undefined {
  if (a.default === null && a.policies.length === 0) return undefined;
  const out: RawServiceAuthorization = {};
  if (a.default !== null) out.default = a.default;
  if (a.policies.length > 0) out.policies = a.policies.map(policyToRaw);
  return out;
}

/** A policy back in its raw form (a mutable copy). */
export function policyToRaw(p: AuthorizationPolicy): RawAuthorizationPolicy {
  return structuredClone({ name: p.name, action: p.action, mode: p.mode, rules: p.rules }) as RawAuthorizationPolicy;
}
