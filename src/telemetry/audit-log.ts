/**
 * The audit log's writer (one JSON line per record, src/api/audit.ts, to a file or stdout through
 * the asynchronous line writer: never blocking a request) and what the proxy writes to it: the
 * authorization decisions that are not plain allows, and refused mTLS handshakes.
 */
import { plainAddress } from '../core/address.js';
import { auditLine, auditRecord, type AuditRecord, type AuditSink } from '../api/audit.js';
import { TLS_REFUSALS, type TlsRefusal } from '../api/mtls.js';
import type { Direction } from '../api/stats.js';
import type { Clock } from '../core/clock.js';
import type { AuthzDecision } from '../engine/authorization.js';
import { openLineWriter } from './line-writer.js';

export interface AuditLog extends AuditSink {
  /** Resolves once every line written before is written (later lines are dropped). */
  close(): Promise<void>;
}

/** `stdout` or a file path (appended to; created if missing). Throws SKEIN_E_FILE naming the path when it cannot be written. */
export function openAuditLog(target: string, flag = '--audit-log'): AuditLog {
  const out = openLineWriter(target, flag);
  return {
    write: (r) => out.write(auditLine(r)),
    close: () => out.close(),
  };
}

/** What an inbound request was, for its audit lines. */
export interface AuthzFacts {
  readonly service: string;
  /** The caller's verified SPIFFE ID, or null. */
  readonly sourceIdentity: string | null;
  readonly sourceAddress: string;
  readonly tls: 'mtls' | 'plaintext';
  /** The served service's identity (null with mTLS off). */
  readonly destinationIdentity: string | null;
  readonly port: number;
  readonly method: string;
  /** The target's path as it came, without the query. */
  readonly rawPath: string;
  /** The normalized path the policies matched. */
  readonly path: string;
  readonly requestId: string | null;
  readonly revision: number | null;
}

/** Whether a decision has anything to write: a deny, a dry-run deny or an audit match. */
export function audited(d: AuthzDecision): boolean {
  return !d.allowed || d.dryRunDenied !== null || d.audited.length > 0;
}

/** The lines of one decision (none for a plain allow): the deny, the dry-run deny, each AUDIT match. */
export function authzRecords(d: AuthzDecision, f: AuthzFacts, now: number): AuditRecord[] {
  const common = {
    sourceIdentity: f.sourceIdentity,
    sourceAddress: f.sourceAddress,
    tls: f.tls,
    destinationIdentity: f.destinationIdentity,
    service: f.service,
    port: f.port,
    method: f.method,
    rawPath: f.rawPath,
    path: f.path,
    requestId: f.requestId,
    revision: f.revision,
  };
  const out: AuditRecord[] = [];
  if (!d.allowed) out.push(auditRecord('authz', now, { ...common, decision: 'deny', mode: 'enforce', policy: d.policy, rule: d.rule, reason: d.reason, code: 'SKEIN_E_AUTHZ_DENIED' }));
  const dry = d.dryRunDenied;
  if (dry !== null) {
    const reason = dry.rule === null ? `no dry-run ALLOW policy matched (considered: ${dry.policy}): would deny` : `dry-run DENY policy "${dry.policy}" rule ${dry.rule} would deny`;
    out.push(auditRecord('authz', now, { ...common, decision: 'dry-run-deny', mode: 'dry-run', policy: dry.policy, rule: dry.rule, reason }));
  }
  for (const a of d.audited) {
    out.push(auditRecord('authz', now, { ...common, decision: 'audit', mode: 'audit', policy: a.policy, rule: a.rule, reason: `matched AUDIT policy "${a.policy}" rule ${a.rule}` }));
  }
  return out;
}

/** What the proxy writes: its Clock's time, its registry revision, its services' identities. */
export class ProxyAudit {
  constructor(
    private readonly sink: AuditSink,
    private readonly clock: Clock,
    /** The registry revision of the proxy's last watch message (null: none yet, or no control plane). */
    private readonly revision: () => number | null,
    /** The SPIFFE ID of a service (null: mTLS off). */
    private readonly identityOf: (service: string) => string | null,
  ) {}

  /** The lines of a decision, if it has any (`facts` is only built then: allows cost nothing). */
  authz(d: AuthzDecision, facts: () => Omit<AuthzFacts, 'revision' | 'destinationIdentity'>): void {
    if (!audited(d)) return;
    const f = facts();
    for (const r of authzRecords(d, { ...f, revision: this.revision(), destinationIdentity: this.identityOf(f.service) }, this.clock.now())) this.sink.write(r);
  }

  /**
   * A refused mTLS handshake: inbound (`service`: the listener's; `peer`: the caller's address) or
   * outbound (`service`: the peer's; `peer`: its address).
   */
  tlsRefused(direction: Direction, reason: TlsRefusal, detail: string, peer: string, service: string | null, port: number | null = null): void {
    // Inbound: the identity the listener serves; outbound: the one the peer had to prove.
    const identity = service === null ? null : this.identityOf(service);
    this.sink.write(
      auditRecord('security', this.clock.now(), {
        event: 'mtls-refused',
        reason: `${TLS_REFUSALS[reason]}: ${detail}`,
        code: reason,
        sourceAddress: direction === 'inbound' ? peerAddress(peer) : null,
        tls: reason === 'plaintext' ? 'plaintext' : 'mtls',
        tlsError: reason,
        destinationIdentity: identity,
        service,
        port,
        revision: this.revision(),
        details: { direction, ...(direction === 'outbound' ? { peer } : {}) },
      }),
    );
  }
}

/** A peer address for the log: null when there is none. */
function peerAddress(a: string): string | null {
  return a === '' ? null : plainAddress(a);
}
