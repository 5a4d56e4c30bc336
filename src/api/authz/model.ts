/**
 * The authorization policy's domain form (what the control plane stores in a Service and sends
 * to every proxy over the watch stream; plain JSON, compiled by src/authz at the proxy) and its
 * defaults, written once.
 */
import type { AuthzAction, AuthzDefault, AuthzMode, RawAuthzRule } from './schema.js';

export const AUTHZ_DEFAULTS = Object.freeze({
  /**
   * What a request gets when its service has no enforced ALLOW policy and sets no `default`:
   * `allow` (dev meshes, `skein up`); `deny` is the production recommendation
   * (docs/authorization.md). Mesh-wide; a service overrides it with `authorization.default`.
   */
  meshDefault: 'allow' as AuthzDefault,
  /** A policy's mode when it does not say. */
  mode: 'enforce' as AuthzMode,
});

/** A rule as written (fields left out match anything); checked by build.ts. */
export type AuthzRule = Readonly<RawAuthzRule>;

export interface AuthorizationPolicy {
  readonly name: string;
  readonly action: AuthzAction;
  /** Filled in (AUTHZ_DEFAULTS.mode). */
  readonly mode: AuthzMode;
  /** At least one. Rules are numbered from 0 in decisions, like `rules[0]` in error messages. */
  readonly rules: readonly AuthzRule[];
}

/** A Service's `authorization`: its policies, in the order written, and its own default. */
export interface ServiceAuthorization {
  /** null: the mesh default (AUTHZ_DEFAULTS.meshDefault). */
  readonly default: AuthzDefault | null;
  readonly policies: readonly AuthorizationPolicy[];
}

/** An AuthorizationPolicy resource: one policy, managed on its own; it lands in its service's `authorization.policies`. */
export interface AuthorizationPolicyResource extends AuthorizationPolicy {
  readonly service: string;
}

/** A service that says nothing about authorization. */
export const NO_AUTHORIZATION: ServiceAuthorization = Object.freeze({ default: null, policies: Object.freeze([]) });

/** The default that applies to a service: its own, else the mesh's. */
export function effectiveDefault(a: ServiceAuthorization | null | undefined, meshDefault: AuthzDefault = AUTHZ_DEFAULTS.meshDefault): AuthzDefault {
  return a?.default ?? meshDefault;
}
