/**
 * Authorization decisions, Istio's order: an enforced DENY match denies (naming the policy and
 * the rule); otherwise, without an enforced ALLOW policy the service's default applies;
 * otherwise only an ALLOW match allows. Dry-run policies are decided and reported but never
 * block; AUDIT policies only report their matches.
 *
 * Letter case of paths: DENY and AUDIT rules compare paths without regard to ASCII case (as
 * routes do, src/core/path.ts pathKey: many apps, Express by default, route `/ADMIN` like
 * `/admin`), ALLOW rules compare them exactly. Both fail closed: `/ADMIN` cannot slip past a
 * DENY on `/admin`, and an ALLOW on `/public` does not let `/PUBLIC` through to an app that
 * tells them apart.
 *
 * Policies are compiled once per definition change (compilePolicies): sets and prefix lists,
 * no regular expressions, so evaluating a request is a few lookups and allocates only its
 * decision (and, on a deny, its reason).
 */
import { pathKey } from '../core/path.js';
import type { AuthorizationPolicy } from '../api/authz/model.js';
import type { AuthzAction, AuthzDefault, AuthzMode } from '../api/authz/schema.js';

/** What a decision is made on. `path` is normalized (normalizePath); header names are asked in lowercase. */
export interface AuthzRequest {
  /** The SPIFFE ID mTLS proved, or null (plaintext, permissive mode). */
  identity: string | null;
  /** The namespace and service of that identity (`/ns/<ns>/sa/<service>`), or null. */
  namespace: string | null;
  service: string | null;
  sourceAddress: string;
  method: string;
  /** Normalized: what normalizePath returned (without the query). */
  path: string;
  /** The destination port (the inbound listener's, or the service port the request is for). */
  port: number;
  header(name: string): string | null;
}

export interface AuthzDecision {
  allowed: boolean;
  /** The policy that decided, or null when the default did; on "no ALLOW policy matched", the names of those considered, comma-separated. */
  policy: string | null;
  /** Index of the rule that matched (from 0, like `rules[0]`), or null. */
  rule: number | null;
  /** A sentence for logs, the audit line and the 403 (`x-skein-error` body). */
  reason: string;
  /** What dry-run policies would have decided, when that is a deny: the policy (or, for "no dry-run ALLOW policy matched", their names) and the rule (null then). */
  dryRunDenied: { policy: string; rule: number | null } | null;
  /** Every AUDIT policy that matched, with its first matching rule. */
  audited: Array<{ policy: string; rule: number }>;
}

/** A compiled match list: exact values, prefixes (a trailing "*"), or anything ("*"). */
interface Matcher {
  readonly any: boolean;
  readonly exact: ReadonlySet<string>;
  readonly prefixes: readonly string[];
}

interface CompiledRule {
  readonly identities: Matcher | null;
  readonly namespaces: Matcher | null;
  readonly services: Matcher | null;
  readonly methods: ReadonlySet<string> | null;
  readonly paths: Matcher | null;
  readonly ports: ReadonlySet<number> | null;
  readonly when: ReadonlyArray<{ readonly header: string; readonly values: Matcher }>;
}

export interface CompiledPolicy {
  readonly name: string;
  readonly action: AuthzAction;
  readonly mode: AuthzMode;
  /** DENY and AUDIT compare paths without regard to ASCII case (pathKey); ALLOW exactly. */
  readonly foldCase: boolean;
  /** @internal */
  readonly rules: readonly CompiledRule[];
}

function matcher(values: readonly string[] | undefined, fold: (v: string) => string = (v) => v): Matcher | null {
  if (values === undefined) return null;
  const exact = new Set<string>();
  const prefixes: string[] = [];
  let any = false;
  for (const raw of values) {
    const v = fold(raw);
    if (v === '*') any = true;
    else if (v.endsWith('*')) prefixes.push(v.slice(0, -1));
    else exact.add(v);
  }
  return Object.freeze({ any, exact, prefixes: Object.freeze(prefixes) });
}

function hits(m: Matcher, v: string | null): boolean {
  if (v === null) return false;
  if (m.any || m.exact.has(v)) return true;
  for (const p of m.prefixes) if (v.startsWith(p)) return true;
  return false;
}

/** Compiles a service's policies (parsed and checked by src/api): once per definition change. */
export function compilePolicies(policies: readonly AuthorizationPolicy[]): readonly CompiledPolicy[] {
  return Object.freeze(
    policies.map((p) => {
      const foldCase = p.action !== 'ALLOW';
      return Object.freeze({
        name: p.name,
        action: p.action,
        mode: p.mode,
        foldCase,
        rules: Object.freeze(
          p.rules.map((r) =>
            Object.freeze({
              identities: matcher(r.from?.identities),
              namespaces: matcher(r.from?.namespaces),
              services: matcher(r.from?.services),
              methods: r.to?.methods === undefined ? null : new Set(r.to.methods),
              paths: matcher(r.to?.paths, foldCase ? pathKey : undefined),
              ports: r.to?.ports === undefined ? null : new Set(r.to.ports),
              when: Object.freeze((r.when ?? []).map((c) => Object.freeze({ header: c.header.toLowerCase(), values: matcher(c.values) as Matcher }))),
            }),
          ),
        ),
      });
    }),
  );
}

/** `path`: the request's path, case-folded for the policies that fold it. */
function ruleMatches(r: CompiledRule, req: AuthzRequest, path: string): boolean {
  if (r.identities !== null && !hits(r.identities, req.identity)) return false;
  if (r.namespaces !== null && !hits(r.namespaces, req.namespace)) return false;
  if (r.services !== null && !hits(r.services, req.service)) return false;
  if (r.methods !== null && !r.methods.has(req.method)) return false;
  if (r.ports !== null && !r.ports.has(req.port)) return false;
  if (r.paths !== null && !hits(r.paths, path)) return false;
  for (const c of r.when) if (!hits(c.values, req.header(c.header))) return false;
  return true;
}

/** Index of the policy's first matching rule, or -1. */
function firstMatch(p: CompiledPolicy, req: AuthzRequest, path: string): number {
  for (let i = 0; i < p.rules.length; i++) if (ruleMatches(p.rules[i] as CompiledRule, req, path)) return i;
  return -1;
}

const NONE_AUDITED: Array<{ policy: string; rule: number }> = [];

const names = (ps: readonly CompiledPolicy[], action: AuthzAction, mode: AuthzMode): string[] => ps.filter((p) => p.action === action && p.mode === mode).map((p) => p.name);

/** The decision on one request. `def`: the service's default (effectiveDefault in src/api/authz/model.ts). */
export function evaluate(policies: readonly CompiledPolicy[], def: AuthzDefault, req: AuthzRequest): AuthzDecision {
  let deny: CompiledPolicy | null = null;
  let denyRule = -1;
  let allow: CompiledPolicy | null = null;
  let allowRule = -1;
  let hasAllow = false;
  let dryDeny: { policy: string; rule: number | null } | null = null;
  let hasDryAllow = false;
  let dryAllowMatched = false;
  let audited = NONE_AUDITED;
  let folded: string | null = null;
  for (const p of policies) {
    const path = p.foldCase ? (folded ??= pathKey(req.path)) : req.path;
    if (p.action === 'AUDIT') {
      const i = firstMatch(p, req, path);
      if (i >= 0) {
        if (audited === NONE_AUDITED) audited = [];
        audited.push({ policy: p.name, rule: i });
      }
    } else if (p.action === 'DENY') {
      if (p.mode === 'enforce' ? deny !== null : dryDeny !== null) continue;
      const i = firstMatch(p, req, path);
      if (i < 0) continue;
      if (p.mode === 'enforce') {
        deny = p;
        denyRule = i;
      } else dryDeny = { policy: p.name, rule: i };
    } else if (p.mode === 'enforce') {
      hasAllow = true;
      if (allow !== null || deny !== null) continue;
      const i = firstMatch(p, req, path);
      if (i >= 0) {
        allow = p;
        allowRule = i;
      }
    } else {
      hasDryAllow = true;
      if (!dryAllowMatched && firstMatch(p, req, path) >= 0) dryAllowMatched = true;
    }
  }
  // Dry-run ALLOW policies would only deny what the default lets through now.
  if (dryDeny === null && deny === null && !hasAllow && def === 'allow' && hasDryAllow && !dryAllowMatched) {
    dryDeny = { policy: names(policies, 'ALLOW', 'dry-run').join(', '), rule: null };
  }
  if (deny !== null) {
    return { allowed: false, policy: deny.name, rule: denyRule, reason: `denied by DENY policy "${deny.name}" rule ${denyRule}`, dryRunDenied: dryDeny, audited };
  }
  if (!hasAllow) {
    return { allowed: def === 'allow', policy: null, rule: null, reason: `no ALLOW policy applies to the service; its default is ${def}`, dryRunDenied: dryDeny, audited };
  }
  if (allow !== null) {
    return { allowed: true, policy: allow.name, rule: allowRule, reason: `allowed by ALLOW policy "${allow.name}" rule ${allowRule}`, dryRunDenied: dryDeny, audited };
  }
  const considered = names(policies, 'ALLOW', 'enforce');
  return {
    allowed: false,
    policy: considered.join(', '),
    rule: null,
    reason: `no ALLOW policy matched (considered: ${considered.map((n) => `"${n}"`).join(', ')})`,
    dryRunDenied: dryDeny,
    audited,
  };
}
