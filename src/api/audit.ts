/**
 * The audit log's format, defined once: what one line holds, and the builder every writer uses
 * (the proxy for authorization decisions and mTLS refusals, the control plane for the CA, its
 * tokens, policy changes and writes) and `skein audit` reads. docs/security.md#audit-log
 * describes it.
 *
 * One JSON object per line, every field present in this order (null when unknown or not
 * applicable), so that a line can be read with `jq` or a log shipper without a schema per event.
 * Never a token, a key or a request body: a join token appears as the first 12 hex digits of its
 * hash, an API token by its name.
 */
import type { SecurityEvent, SecurityEventType } from './ca.js';

/** `authz`: an authorization decision at an inbound proxy; `security`: everything else. */
export const AUDIT_KINDS = ['authz', 'security'] as const;
export type AuditKind = (typeof AUDIT_KINDS)[number];

/**
 * The authorization decisions that are written (allows are not): an enforced deny, what a
 * dry-run policy would have denied (the request went through), an AUDIT policy's match.
 */
export const AUDIT_DECISIONS = ['deny', 'dry-run-deny', 'audit'] as const;
export type AuditDecision = (typeof AUDIT_DECISIONS)[number];

/** The security events, by who writes them: the CA, the API's tokens and writes, the proxy's mTLS. */
export const AUDIT_EVENTS = [
  'certificate-issued',
  'certificate-renewed',
  'certificate-refused',
  'join-token-minted',
  'join-token-used',
  'join-token-refused',
  'api-token-minted',
  'api-token-revoked',
  'api-token-refused',
  'policy-changed',
  'control-write',
  'mtls-refused',
  'ca-rotation',
  'ca-rotation-refused',
] as const;
export type AuditEvent = (typeof AUDIT_EVENTS)[number];

export interface AuditRecord {
  /** ISO 8601, from the writer's Clock. */
  time: string;
  kind: AuditKind;
  /** kind `security`: what happened. */
  event: AuditEvent | null;
  /** kind `authz`: which decision. */
  decision: AuditDecision | null;
  /** The deciding policy's mode: `enforce`, `dry-run` or `audit`. */
  mode: 'enforce' | 'dry-run' | 'audit' | null;
  /** The policy that decided (comma-separated names for "no ALLOW policy matched"), null for the service's default. */
  policy: string | null;
  /** The index of the rule that matched (from 0). */
  rule: number | null;
  /** A sentence: why. */
  reason: string | null;
  /** An error code (SKEIN_E_..., or an mTLS refusal's reason word: `expired`, `plaintext`, ...). */
  code: string | null;
  /** The caller's verified SPIFFE ID (null: none proved, e.g. plaintext in permissive mode). */
  sourceIdentity: string | null;
  /** The caller's IP address. */
  sourceAddress: string | null;
  /** How the caller's connection came: `mtls` or `plaintext`. */
  tls: 'mtls' | 'plaintext' | null;
  /** The TLS refusal's reason word (src/api/mtls.ts TLS_REFUSALS), when a handshake was refused. */
  tlsError: string | null;
  /** The identity called, issued or renewed. */
  destinationIdentity: string | null;
  service: string | null;
  port: number | null;
  method: string | null;
  /** The request target's path as it came (without the query string). */
  rawPath: string | null;
  /** The path the decision was made on (normalized: what the app was or would have been sent). */
  path: string | null;
  requestId: string | null;
  /** The registry revision the decision was made under (the proxy's last watch revision, the control plane's registry). */
  revision: number | null;
  /** The API token that made the write or was refused (its name; `admin` for the admin token). */
  actor: string | null;
  /** That token's scope. */
  scope: string | null;
  /** What else the event carries (a serial, an expiry, a proxy, a status): small, never a secret. */
  details: Record<string, unknown> | null;
}

/** The fields that are null when not given, in the order a line has them. */
const FIELDS = [
  'event',
  'decision',
  'mode',
  'policy',
  'rule',
  'reason',
  'code',
  'sourceIdentity',
  'sourceAddress',
  'tls',
  'tlsError',
  'destinationIdentity',
  'service',
  'port',
  'method',
  'rawPath',
  'path',
  'requestId',
  'revision',
  'actor',
  'scope',
  'details',
] as const satisfies ReadonlyArray<keyof AuditRecord>;

export type AuditFields = Partial<Omit<AuditRecord, 'time' | 'kind'>>;

/** A record with every field in its place: what is not given is null. `at`: ms since the epoch (a Clock's now()), or ISO 8601. */
export function auditRecord(kind: AuditKind, at: number | string, fields: AuditFields): AuditRecord {
  const r: Record<string, unknown> = { time: typeof at === 'string' ? at : new Date(at).toISOString(), kind };
  for (const f of FIELDS) r[f] = fields[f] ?? null;
  return r as unknown as AuditRecord;
}

/** A record as one line of the log (with its newline). */
export function auditLine(r: AuditRecord): string {
  return `${JSON.stringify(r)}\n`;
}

/** Where records go: a file or stdout (src/telemetry/audit-log.ts), or a test's array. */
export interface AuditSink {
  write(r: AuditRecord): void;
}

const CA_EVENTS: Readonly<Record<SecurityEventType, AuditEvent>> = Object.freeze({
  'certificate-issued': 'certificate-issued',
  'certificate-renewed': 'certificate-renewed',
  'certificate-refused': 'certificate-refused',
  'token-minted': 'join-token-minted',
  'token-used': 'join-token-used',
  'token-refused': 'join-token-refused',
  'ca-rotation': 'ca-rotation',
  'ca-rotation-refused': 'ca-rotation-refused',
});

/** The line of one of the CA's security events (its `time` is the CA's Clock's). */
export function caAuditRecord(e: SecurityEvent): AuditRecord {
  const details: Record<string, unknown> = {};
  if (e.proxy !== undefined) details['proxy'] = e.proxy;
  if (e.services !== undefined) details['services'] = e.services;
  if (e.serial !== undefined) details['serial'] = e.serial;
  if (e.notAfter !== undefined) details['notAfter'] = e.notAfter;
  if (e.kind !== undefined) details['via'] = e.kind;
  if (e.token !== undefined) details['token'] = e.token;
  if (e.step !== undefined) details['step'] = e.step;
  if (e.forced !== undefined) details['forced'] = e.forced;
  if (e.roots !== undefined) details['roots'] = e.roots;
  return auditRecord('security', e.time, {
    event: CA_EVENTS[e.type],
    reason: e.reason ?? null,
    code: e.code ?? null,
    sourceAddress: e.source ?? null,
    destinationIdentity: e.identity ?? null,
    details: Object.keys(details).length === 0 ? null : details,
  });
}
