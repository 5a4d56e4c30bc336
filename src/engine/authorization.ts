/**
 * Authorization at a service's inbound side, for every driver: the service's policies compiled
 * once per definition change, a decision per request (src/authz/evaluate.ts: Istio's order), and
 * what a denied request is answered with. A driver gives the request's facts (the caller's
 * verified identity, method, normalized path, port, headers) and acts on the verdict; it decides
 * nothing itself.
 */
import { AUTHZ_DEFAULTS, effectiveDefault, type ServiceAuthorization } from '../api/authz/model.js';
import type { AuthzDefault } from '../api/authz/schema.js';
import { compilePolicies, evaluate, type AuthzDecision, type AuthzRequest, type CompiledPolicy } from '../authz/evaluate.js';
import type { Refusal } from './service-client.js';

export type { AuthzDecision, AuthzRequest };

/** The inbound authorization of one service. */
export class ServiceAuthz {
  private policies: readonly CompiledPolicy[] = [];
  private def: AuthzDefault;
  /** Some policy exists or the default denies: requests are evaluated (otherwise all are allowed at no cost). */
  active = false;
  /**
   * The path of the service's own active health check (http), or null: callers' proxies probe it,
   * so any identity of the mesh may GET it unless a DENY names it (Linkerd authorizes probes the
   * same way; a default of deny must not fail every active check).
   */
  private probePath: string | null = null;

  constructor(
    readonly service: string,
    private readonly meshDefault: AuthzDefault = AUTHZ_DEFAULTS.meshDefault,
  ) {
    this.def = meshDefault;
    this.active = this.def === 'deny';
  }

  /** The service's definition changed (null: it has none). `probePath`: its active health check's path, if http. */
  update(a: ServiceAuthorization | null | undefined, probePath: string | null = null): void {
    this.probePath = probePath;
    this.policies = compilePolicies(a?.policies ?? []);
    this.def = effectiveDefault(a, this.meshDefault);
    this.active = this.policies.length > 0 || this.def === 'deny';
  }

  decide(req: AuthzRequest): AuthzDecision {
    const d = evaluate(this.policies, this.def, req);
    // Denied by no ALLOW match or by the default (not by a DENY rule: `rule` is null): a mesh
    // identity's GET of the probe path goes through.
    if (d.allowed || d.rule !== null || req.identity === null || req.method !== 'GET' || req.path !== this.probePath) return d;
    return { ...d, allowed: true, policy: null, reason: `${this.probePath} is the service's active health check path, open to every identity of the mesh` };
  }
}

/** Who hears of each decision: the metrics, and the audit log (which asks the driver for the request's facts only when it writes a line). */
export interface AuthzObserver {
  authz(service: string, d: AuthzDecision): void;
}

/**
 * The inbound authorization step of every driver: decide, report, and say what to do: null to
 * go on, or the refusal (403) to answer with. A service without policies and an allow default
 * costs one property read.
 */
export function authorize(a: ServiceAuthz, service: string, req: () => AuthzRequest, observer: AuthzObserver, audit: ((d: AuthzDecision) => void) | null): Refusal | null {
  if (!a.active) return null;
  const d = a.decide(req());
  observer.authz(service, d);
  audit?.(d);
  return d.allowed ? null : denied(service, d);
}

/** The 403 a denied request gets: names the service, the policy and the rule (never a bare "RBAC: access denied"). */
export function denied(service: string, d: AuthzDecision): Refusal {
  return { code: 'SKEIN_E_AUTHZ_DENIED', message: `RBAC: access to "${service}" denied: ${d.reason}`, details: { service, policy: d.policy, rule: d.rule } };
}
