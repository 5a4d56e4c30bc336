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

  constructor(
    readonly service: string,
    private readonly meshDefault: AuthzDefault = AUTHZ_DEFAULTS.meshDefault,
  ) {
    this.def = meshDefault;
    this.active = this.def === 'deny';
  }

  /** The service's definition changed (null: it has none). */
  update(a: ServiceAuthorization | null | undefined): void {
    this.policies = compilePolicies(a?.policies ?? []);
    this.def = effectiveDefault(a, this.meshDefault);
    this.active = this.policies.length > 0 || this.def === 'deny';
  }

  decide(req: AuthzRequest): AuthzDecision {
    return evaluate(this.policies, this.def, req);
  }
}

/** The 403 a denied request gets: names the service, the policy and the rule (never a bare "RBAC: access denied"). */
export function denied(service: string, d: AuthzDecision): Refusal {
  return { code: 'SKEIN_E_AUTHZ_DENIED', message: `RBAC: access to "${service}" denied: ${d.reason}`, details: { service, policy: d.policy, rule: d.rule } };
}
