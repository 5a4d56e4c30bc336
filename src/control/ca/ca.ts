/**
 * The control plane's CA. At start it has a root and an intermediate (the issuer):
 *
 * - generated: an ECDSA P-256 root (10 years) and an intermediate (1 year) are made once and
 *   kept in the store under `ca/root` and `ca/issuer`, so a restart on the same data dir keeps
 *   the same root; an intermediate that expired or is past 90% of its life is replaced at start;
 * - operator-supplied (`skein control --ca-cert --ca-key [--ca-chain]`): a self-signed root signs
 *   an intermediate kept in the store (the root key stays in the operator's file); an
 *   intermediate is used as the issuer as it is, its chain leading to the root.
 *
 * Every certificate issued, renewed or refused and every join token minted, used or refused goes
 * through `securityEvent` (the one hook the audit log, metrics and the log hang on).
 */
import type { Logger } from 'pino';
import { CA_DEFAULTS, type CaInfo, type IssuedCertificate, type SecurityEvent } from '../../api/ca.js';
import type { Clock } from '../../core/clock.js';
import { SkeinError, isSkeinError } from '../../core/errors.js';
import { assertIssuerValid, caTrustDomain, checkCsr, createIntermediate, createRoot, describeCert, issueLeaf, loadIssuer, type Issuer, type Leaf, type LeafOptions } from '../../identity/certs.js';
import { DEFAULT_NAMESPACE, validTrustDomain, workloadId } from '../../identity/spiffe.js';
import type { Store } from '../store/store.js';
import { JoinTokens } from './tokens.js';

export const CA_PREFIX = 'ca/';
const ROOT_KEY = 'ca/root';
const ISSUER_KEY = 'ca/issuer';

export interface OperatorCa {
  certPem: string;
  keyPem: string;
  chainPem: string[];
}

export interface CaOptions {
  store: Store;
  clock: Clock;
  trustDomain: string;
  leafLifetimeMs: number;
  /** An operator-supplied root or intermediate; null: generated and kept in the store. */
  operator: OperatorCa | null;
  logger: Logger;
  /** Where security events go besides the log (the audit log, metrics). */
  onSecurityEvent?: (e: SecurityEvent) => void;
}

interface StoredIssuer {
  certPem: string;
  keyPem: string;
  chainPem: string[];
  rootPem: string;
}

const toIssuer = (s: StoredIssuer): Issuer => {
  const d = describeCert(s.certPem);
  return { ...s, notBefore: d.notBefore, notAfter: d.notAfter, serial: d.serial };
};
const stored = (i: Issuer): string => JSON.stringify({ certPem: i.certPem, keyPem: i.keyPem, chainPem: i.chainPem, rootPem: i.rootPem } satisfies StoredIssuer);
const worn = (i: Issuer, now: number) => now >= i.notBefore.getTime() + CA_DEFAULTS.renewNowFraction * (i.notAfter.getTime() - i.notBefore.getTime());

/** Checks a leaf lifetime (ms) against CA_DEFAULTS' bounds; `field` names it in the error. */
export function checkLeafLifetime(ms: number, field = 'leafLifetimeMs'): number {
  if (!Number.isInteger(ms) || ms < CA_DEFAULTS.minLeafLifetimeMs || ms > CA_DEFAULTS.maxLeafLifetimeMs) {
    throw new SkeinError('SKEIN_E_VALIDATION', `${field} must be from ${CA_DEFAULTS.minLeafLifetimeMs} ms (1 minute) to ${CA_DEFAULTS.maxLeafLifetimeMs} ms (90 days), got ${ms}`, { field });
  }
  return ms;
}

export class CertificateAuthority {
  private constructor(
    readonly trustDomain: string,
    readonly leafLifetimeMs: number,
    readonly roots: readonly string[],
    /** Issues the leaves; when it is not valid now, every issue is refused (SKEIN_E_CA_UNAVAILABLE). */
    private readonly issuer: Issuer,
    readonly tokens: JoinTokens,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly hook: ((e: SecurityEvent) => void) | undefined,
  ) {}

  static async open(o: CaOptions): Promise<CertificateAuthority> {
    const tdProblem = validTrustDomain(o.trustDomain);
    if (tdProblem !== null) throw new SkeinError('SKEIN_E_BAD_IDENTITY', `trust domain: ${tdProblem}`, { field: 'trustDomain' });
    checkLeafLifetime(o.leafLifetimeMs);
    const entries = (await o.store.load()).filter(([k]) => k.startsWith(CA_PREFIX));
    const kept = new Map(entries);
    const now = new Date(o.clock.now());
    const log = o.logger;
    let root: Issuer | null = null;
    let issuer: Issuer | null = null;
    if (o.operator !== null) {
      const op = await loadIssuer(o.operator.certPem, o.operator.keyPem, o.operator.chainPem);
      const td = caTrustDomain(op.certPem);
      if (td !== null && td !== o.trustDomain) {
        throw new SkeinError('SKEIN_E_BAD_CA', `the CA certificate is for trust domain "${td}" (its URI SAN spiffe://${td}), but the trust domain is "${o.trustDomain}": give --trust-domain ${td}`, { field: '--trust-domain' });
      }
      if (op.certPem === op.rootPem) root = op;
      else issuer = op;
    } else {
      const r = kept.get(ROOT_KEY);
      if (r !== undefined) {
        const s = JSON.parse(r) as StoredIssuer;
        root = toIssuer({ ...s, chainPem: [], rootPem: s.certPem });
        const td = caTrustDomain(root.certPem);
        if (td !== o.trustDomain) {
          throw new SkeinError('SKEIN_E_BAD_CA', `the CA kept in the data dir is for trust domain "${td}", not "${o.trustDomain}": start with --trust-domain ${td}, or with a new data dir for a new trust domain`, { field: '--trust-domain' });
        }
      } else {
        root = await createRoot(o.trustDomain, { now, lifetimeMs: CA_DEFAULTS.rootLifetimeMs });
        await o.store.commit([{ type: 'put', key: ROOT_KEY, value: JSON.stringify({ certPem: root.certPem, keyPem: root.keyPem }) }]);
        log.info({ trustDomain: o.trustDomain, serial: root.serial, notAfter: root.notAfter.toISOString() }, 'CA root generated');
      }
    }
    if (issuer === null && root !== null) {
      const s = kept.get(ISSUER_KEY);
      const old = s === undefined ? null : toIssuer(JSON.parse(s) as StoredIssuer);
      if (old !== null && old.rootPem.trim() === root.rootPem.trim() && now.getTime() >= old.notBefore.getTime() && !worn(old, now.getTime())) {
        issuer = old;
      } else {
        try {
          issuer = await createIntermediate(root, { now, lifetimeMs: CA_DEFAULTS.intermediateLifetimeMs, trustDomain: o.trustDomain });
          await o.store.commit([{ type: 'put', key: ISSUER_KEY, value: stored(issuer) }]);
          log.info({ serial: issuer.serial, notAfter: issuer.notAfter.toISOString(), replaced: old?.serial ?? null }, 'CA intermediate generated');
        } catch (e) {
          if (!isSkeinError(e) || e.code !== 'SKEIN_E_CA_UNAVAILABLE') throw e;
          log.error({ err: e }, 'the CA root is not valid: no certificate can be issued');
          issuer = old ?? root;
        }
      }
    }
    const theIssuer = issuer as Issuer;
    const tokens = await JoinTokens.open(o.store, o.clock, entries);
    return new CertificateAuthority(o.trustDomain, o.leafLifetimeMs, [theIssuer.rootPem], theIssuer, tokens, o.clock, log, o.onSecurityEvent);
  }

  /** The issuer's certificate and dates (public). */
  get issuerCert(): Pick<Issuer, 'certPem' | 'notBefore' | 'notAfter' | 'serial'> {
    const i = this.issuer;
    return { certPem: i.certPem, notBefore: i.notBefore, notAfter: i.notAfter, serial: i.serial };
  }

  /** The SPIFFE ID of a service of the mesh. */
  identityOf(service: string): string {
    return workloadId(this.trustDomain, DEFAULT_NAMESPACE, service);
  }

  /** The control plane's own SPIFFE ID (its renewal listener's certificate). */
  get controlIdentity(): string {
    return workloadId(this.trustDomain, CA_DEFAULTS.controlNamespace, CA_DEFAULTS.controlService);
  }

  /** Refuses (SKEIN_E_CA_UNAVAILABLE) while the issuer is not valid. */
  assertCanIssue(): void {
    assertIssuerValid(this.issuer, new Date(this.clock.now()));
  }

  /** Checks CSRs before anything is issued (so a request is answered in full or not at all). */
  async checkCsrs(csrs: readonly string[]): Promise<void> {
    for (const c of csrs) await checkCsr(c);
  }

  /** A leaf for `identity` over the CSR's key. Reports nothing: the caller reports what it did. */
  async issue(identity: string, csrPem: string, extra: Pick<LeafOptions, 'dnsNames' | 'ipAddresses'> = {}, lifetimeMs = this.leafLifetimeMs): Promise<Leaf> {
    return issueLeaf(this.issuer, csrPem, identity, { now: new Date(this.clock.now()), lifetimeMs, ...extra });
  }

  /** A leaf as the API answers it. */
  wire(leaf: Leaf, service?: string): IssuedCertificate {
    return {
      ...(service === undefined ? {} : { service }),
      certificate: leaf.certPem,
      chain: leaf.chainPem,
      roots: [...this.roots],
      identity: leaf.identity,
      notBefore: leaf.notBefore.toISOString(),
      notAfter: leaf.notAfter.toISOString(),
      serial: leaf.serial,
    };
  }

  info(renewUrl: string | null): CaInfo {
    const i = describeCert(this.issuer.certPem);
    return {
      trustDomain: this.trustDomain,
      roots: [...this.roots],
      renewUrl: renewUrl ?? '',
      identity: this.controlIdentity,
      leafLifetimeMs: this.leafLifetimeMs,
      issuer: { subject: i.subject, notBefore: i.notBefore.toISOString(), notAfter: i.notAfter.toISOString(), serial: i.serial },
    };
  }

  /** The one place security events go: the log, then the hook (audit log, metrics). */
  securityEvent(e: Omit<SecurityEvent, 'time'>): void {
    const event: SecurityEvent = { time: new Date(this.clock.now()).toISOString(), ...e };
    const refused = e.type.endsWith('-refused');
    this.logger[refused ? 'warn' : 'info']({ security: event }, `security: ${e.type}`);
    try {
      this.hook?.(event);
    } catch (err) {
      this.logger.error({ err }, 'the security event hook failed');
    }
  }

  /** Reports a refusal of `type` for the error `e` and returns the error to throw. */
  refused(type: 'certificate-refused' | 'token-refused', e: unknown, fields: Omit<SecurityEvent, 'time' | 'type' | 'code' | 'reason'> = {}): unknown {
    const code = isSkeinError(e) ? e.code : 'SKEIN_E_INTERNAL';
    this.securityEvent({ type, ...fields, code, reason: (e as Error).message });
    return e;
  }
}
