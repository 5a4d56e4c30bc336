/**
 * A service's revision: the part of its mesh-file spec that a replica is started and registered
 * with. Changing any of these fields makes a new revision and a rolling update; changing anything
 * else (replicas, rollout, balancer, traffic policy, authorization, mtls, dependsOn) does not
 * restart a replica. docs/deployments.md lists the fields.
 */
import { createHash } from 'node:crypto';
import type { MeshService } from './model.js';

/** The fields of a MeshService that make its revision, in the order they are hashed. */
export const REVISION_FIELDS = ['command', 'args', 'cwd', 'env', 'port', 'readiness', 'version', 'labels', 'weight', 'zone', 'restart', 'stopTimeoutMs'] as const;

export type RevisionField = (typeof REVISION_FIELDS)[number];
export type RevisionSpec = Pick<MeshService, RevisionField>;

/** JSON with object keys sorted, so that the order of `env` or `labels` in a file does not matter. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .filter((k) => o[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/** The revision fields of a service (a plain copy). */
export function revisionSpec(svc: RevisionSpec): RevisionSpec {
  return Object.fromEntries(REVISION_FIELDS.map((f) => [f, svc[f]])) as unknown as RevisionSpec;
}

/** The revision's hash: the first 10 hex digits of SHA-256 over the revision fields' canonical JSON. */
export function revisionHash(svc: RevisionSpec): string {
  return createHash('sha256').update(canonical(revisionSpec(svc))).digest('hex').slice(0, 10);
}

/** The revision fields whose values differ between two specs (empty: the same revision). */
export function revisionChanges(a: RevisionSpec, b: RevisionSpec): RevisionField[] {
  return REVISION_FIELDS.filter((f) => canonical(a[f]) !== canonical(b[f]));
}
