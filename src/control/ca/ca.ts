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
 * Root rotation (rotation.ts) changes the trust bundle and the issuer while the CA runs: `add`
 * keeps the new authority under `ca/rotation`, `switch` moves it to `ca/root` and `ca/issuer`
 * (keeping the old root in the bundle), `remove` drops the old root; each in one store commit, so
 * a restart mid-rotation continues where it was. Subscribers (`subscribe`: the mTLS listener,
 * the mesh event feed) hear each change.
 *
 * Every certificate issued, renewed or refused, every join token minted, used or refused, and
 * every rotation step goes through `securityEvent` (the one hook the audit log, metrics and the
 * log hang on).
 */
import type { Logger } from 'pino';
import { CA_DEFAULTS, certFingerprint, type CaInfo, type IssuedCertificate, type RotationPhase, type RotationStatus, type RotationStep, type SecurityEvent } from '../../api/ca.js';
import type { Clock } from '../../core/clock.js';
import { SkeinError, isSkeinError } from '../../core/errors.js';
import { assertIssuerValid, caTrustDomain, checkCsr, createIntermediate, createRoot, describeCert, issueLeaf, loadIssuer, type Issuer, type Leaf, type LeafOptions } from '../../identity/certs.js';
import { DEFAULT_NAMESPACE, validTrustDomain, workloadId } from '../../identity/spiffe.js';
import type { Store } from '../store/store.js';
import { JoinTokens } from './tokens.js';
import type { KnownProxy } from '../proxies.js';
import type { MeshEventInput } from '../signals/events.js';
import { nextStep, proxyTrust, stepRefusal, type StoredRotation } from './rotation.js';

export const CA_PREFIX = 'ca/';
const ROOT_KEY = 'ca/root';
const ISSUER_KEY = 'ca/issuer';
const ROTATION_KEY = 'ca/rotation';

/** A change of the bundle or the issuer (a rotation step), as subscribers hear it. */
export interface CaChange {
  readonly step: RotationStep;
  readonly forced: boolean;
  /** ms since the epoch. */
  readonly time: number;
  /** Fingerprints of the roots trusted after the step, old first. */
  readonly roots: readonly string[];
  /** The serial of the issuer after the step. */
  readonly issuerSerial: string;
  readonly message: string;
}

/** A rotation step as an event of the mesh's feed (type `certificate`, no service). */
export function rotationMeshEvent(c: CaChange): MeshEventInput {
  return { time: c.time, type: 'certificate', service: null, message: c.message, step: c.step, forced: c.forced, roots: [...c.roots], issuer: c.issuerSerial };
}

export interface RotateOptions {
  force?: boolean;
  /** `add`: the new root or intermediate (default: a generated root). */
  operator?: OperatorCa | null;
  /** The proxies that announced themselves (their workloads' trust and leaves). */
  proxies: readonly KnownProxy[];
  /** The caller's address, for the security event. */
  source?: string;
}

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
  private readonly subscribers = new Set<(c: CaChange) => void>();
  /** One rotation step at a time. */
  private busy = false;

  private constructor(
    readonly trustDomain: string,
    readonly leafLifetimeMs: number,
    /** Issues the leaves; when it is not valid now, every issue is refused (SKEIN_E_CA_UNAVAILABLE). */
    private issuer: Issuer,
    /** The rotation under way (null: none), as stored. */
    private rotation: StoredRotation | null,
    readonly tokens: JoinTokens,
    private readonly store: Store,
    /** Rotation is for the CA kept in the store; an operator's CA comes from files at each start. */
    private readonly operatorCa: boolean,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly hook: ((e: SecurityEvent) => void) | undefined,
  ) {}

  /** The trust bundle: PEMs of the roots to trust, old first. */
  get roots(): readonly string[] {
    const r = this.rotation;
    if (r === null) return [this.issuer.rootPem];
    return r.phase === 'added' ? [this.issuer.rootPem, r.next.rootPem] : [r.oldRootPem, this.issuer.rootPem];
  }

  get rotationPhase(): RotationPhase {
    return this.rotation?.phase ?? 'none';
  }

  /** The new root's fingerprint while a rotation is under way. */
  private get newRoot(): string | null {
    const r = this.rotation;
    if (r === null) return null;
    return certFingerprint(r.phase === 'added' ? r.next.rootPem : this.issuer.rootPem);
  }

  /** Hears every rotation step; returns the unsubscribe function. */
  subscribe(fn: (c: CaChange) => void): () => void {
    this.subscribers.add(fn);
    return () => {
      this.subscribers.delete(fn);
    };
  }

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
        if (td !== o.trustDomain && (td !== null || s.keyPem !== '')) {
          throw new SkeinError('SKEIN_E_BAD_CA', `the CA kept in the data dir is for trust domain "${td}", not "${o.trustDomain}": start with --trust-domain ${td}, or with a new data dir for a new trust domain`, { field: '--trust-domain' });
        }
      } else {
        root = await createRoot(o.trustDomain, { now, lifetimeMs: CA_DEFAULTS.rootLifetimeMs });
        try {
          // Only if no other control-plane replica stored one meanwhile (the etcd store): one mesh, one root.
          await o.store.commit([{ type: 'put', key: ROOT_KEY, value: JSON.stringify({ certPem: root.certPem, keyPem: root.keyPem }), expect: null }]);
          log.info({ trustDomain: o.trustDomain, serial: root.serial, notAfter: root.notAfter.toISOString() }, 'CA root generated');
        } catch (e) {
          if (!isSkeinError(e) || e.code !== 'SKEIN_E_CONCURRENT_CHANGE') throw e;
          return CertificateAuthority.open(o);
        }
      }
    }
    if (issuer === null && root !== null) {
      const s = kept.get(ISSUER_KEY);
      const old = s === undefined ? null : toIssuer(JSON.parse(s) as StoredIssuer);
      const sameRoot = old !== null && old.rootPem.trim() === root.rootPem.trim();
      if (old !== null && sameRoot && now.getTime() >= old.notBefore.getTime() && !worn(old, now.getTime())) {
        issuer = old;
      } else if (old !== null && sameRoot && root.keyPem === '') {
        // A root given to `skein ca rotate` without its key kept: its intermediate cannot be replaced here.
        log.error({ serial: old.serial, notAfter: old.notAfter.toISOString() }, 'the CA intermediate is worn, and the root it chains to was given without keeping its key: rotate to a new root (skein ca rotate)');
        issuer = old;
      } else {
        try {
          issuer = await createIntermediate(root, { now, lifetimeMs: CA_DEFAULTS.intermediateLifetimeMs, trustDomain: o.trustDomain });
          // Only over the one read (another replica may have replaced it meanwhile: then take that one).
          await o.store.commit([{ type: 'put', key: ISSUER_KEY, value: stored(issuer), expect: s ?? null }]);
          log.info({ serial: issuer.serial, notAfter: issuer.notAfter.toISOString(), replaced: old?.serial ?? null }, 'CA intermediate generated');
        } catch (e) {
          if (isSkeinError(e) && e.code === 'SKEIN_E_CONCURRENT_CHANGE') return CertificateAuthority.open(o);
          if (!isSkeinError(e) || e.code !== 'SKEIN_E_CA_UNAVAILABLE') throw e;
          log.error({ err: e }, 'the CA root is not valid: no certificate can be issued');
          issuer = old ?? root;
        }
      }
    }
    const theIssuer = issuer as Issuer;
    const tokens = await JoinTokens.open(o.store, o.clock, entries);
    const r = kept.get(ROTATION_KEY);
    let rotation: StoredRotation | null = null;
    if (r !== undefined && o.operator !== null) {
      log.warn('a root rotation kept in the data dir is ignored: the CA comes from --ca-cert/--ca-key');
    } else if (r !== undefined) {
      rotation = JSON.parse(r) as StoredRotation;
      log.info({ phase: rotation.phase }, 'CA root rotation under way');
    }
    return new CertificateAuthority(o.trustDomain, o.leafLifetimeMs, theIssuer, rotation, tokens, o.store, o.operator !== null, o.clock, log, o.onSecurityEvent);
  }

  /** Where the rotation stands, with every announced proxy's trust and leaves. */
  rotationStatus(proxies: readonly KnownProxy[]): RotationStatus {
    const phase = this.rotationPhase;
    const newRoot = this.newRoot;
    const trust = proxies.map((p) => proxyTrust(p, newRoot));
    const next = nextStep(phase);
    const why = stepRefusal(next, phase, newRoot, trust);
    const r = this.rotation;
    const current = certFingerprint(this.issuer.rootPem);
    const iso = (ms: number | null | undefined) => (ms === null || ms === undefined ? null : new Date(ms).toISOString());
    return {
      phase,
      next,
      blocked: why?.message ?? null,
      roots: this.roots.map((pem) => {
        const d = describeCert(pem);
        const fp = certFingerprint(pem);
        return { fingerprint: fp, subject: d.subject, serial: d.serial, notAfter: d.notAfter.toISOString(), role: r === null ? 'current' : fp === newRoot ? 'new' : 'old' };
      }),
      issuer: { serial: this.issuer.serial, root: current, notAfter: this.issuer.notAfter.toISOString() },
      addedAt: iso(r?.addedAt),
      switchedAt: iso(r?.phase === 'switched' ? r.switchedAt : null),
      oldLeavesExpireAt: iso(r?.phase === 'switched' ? r.switchedAt + this.leafLifetimeMs : null),
      proxies: trust,
    };
  }

  /**
   * Takes one rotation step (rotation.ts): refused with SKEIN_E_CA_ROTATION, naming why, when it is
   * out of order or (unless `force`) when an announced proxy is not ready for it. Stored in one
   * commit before anything changes in memory; then a security event and the subscribers.
   */
  async rotate(step: RotationStep, o: RotateOptions): Promise<RotationStatus> {
    const source = o.source === undefined ? {} : { source: o.source };
    const force = o.force === true;
    /** Whether `force` overrode the proxies' condition. */
    let forced: boolean;
    try {
      if (this.operatorCa) {
        throw new SkeinError('SKEIN_E_CA_ROTATION', 'this control plane takes its CA from --ca-cert/--ca-key at each start, so it cannot rotate it: start it without them (a CA kept in the data dir), or replace the files and restart', { field: 'step' });
      }
      if (this.busy) throw new SkeinError('SKEIN_E_CA_ROTATION', 'another rotation step is being taken; try again', { field: 'step' });
      if (o.operator != null && step !== 'add') throw new SkeinError('SKEIN_E_VALIDATION', `a CA certificate and key are given with --step add only, not ${step}`, { field: 'caCert' });
      const why = stepRefusal(step, this.rotationPhase, this.newRoot, o.proxies.map((p) => proxyTrust(p, this.newRoot)));
      if (why !== null && (!why.forceable || !force)) throw new SkeinError('SKEIN_E_CA_ROTATION', why.message, { field: 'step' });
      forced = why !== null;
      if (forced) this.logger.warn({ step, overridden: why?.message }, 'CA rotation step forced');
      this.busy = true;
      try {
        await this.take(step, o.operator ?? null);
      } finally {
        this.busy = false;
      }
    } catch (e) {
      throw this.refused('ca-rotation-refused', e, { step, forced: false, ...source });
    }
    const roots = this.roots.map(certFingerprint);
    const message =
      step === 'add'
        ? `root rotation: new root ${roots[1]?.slice(0, 16)} added to the trust bundle; issuing stays on the old root until the switch`
        : step === 'switch'
          ? `root rotation: issuing switched to the new intermediate (serial ${this.issuer.serial}); proxies renew onto it`
          : `root rotation: the old root left the trust bundle; trusted now: ${roots.map((f) => f.slice(0, 16)).join(', ')}`;
    this.securityEvent({ type: 'ca-rotation', step, forced, roots, serial: this.issuer.serial, reason: message, ...source });
    const change: CaChange = { step, forced, time: this.clock.now(), roots, issuerSerial: this.issuer.serial, message };
    for (const fn of [...this.subscribers]) {
      try {
        fn(change);
      } catch (err) {
        this.logger.error({ err }, 'a CA rotation subscriber failed');
      }
    }
    return this.rotationStatus(o.proxies);
  }

  private async take(step: RotationStep, given: OperatorCa | null): Promise<void> {
    const now = this.clock.now();
    if (step === 'add') {
      const next = await this.newAuthority(given, new Date(now));
      const rotation: StoredRotation = { phase: 'added', next, addedAt: now };
      await this.store.commit([{ type: 'put', key: ROTATION_KEY, value: JSON.stringify(rotation) }]);
      this.rotation = rotation;
      return;
    }
    const r = this.rotation as StoredRotation;
    if (step === 'switch' && r.phase === 'added') {
      const issuer = toIssuer({ certPem: r.next.certPem, keyPem: r.next.keyPem, chainPem: r.next.chainPem, rootPem: r.next.rootPem });
      const rotation: StoredRotation = { phase: 'switched', oldRootPem: this.issuer.rootPem, addedAt: r.addedAt, switchedAt: now };
      await this.store.commit([
        { type: 'put', key: ROOT_KEY, value: JSON.stringify({ certPem: r.next.rootPem, keyPem: r.next.rootKeyPem }) },
        { type: 'put', key: ISSUER_KEY, value: stored(issuer) },
        { type: 'put', key: ROTATION_KEY, value: JSON.stringify(rotation) },
      ]);
      this.issuer = issuer;
      this.rotation = rotation;
      return;
    }
    await this.store.commit([{ type: 'del', key: ROTATION_KEY }]);
    this.rotation = null;
  }

  /** The authority `add` brings: a generated root and intermediate, or the operator's root (an intermediate made under it) or intermediate. */
  private async newAuthority(given: OperatorCa | null, now: Date): Promise<Extract<StoredRotation, { phase: 'added' }>['next']> {
    let root: Issuer | null = null;
    let issuer: Issuer | null = null;
    let rootKeyPem = '';
    if (given === null) {
      root = await createRoot(this.trustDomain, { now, lifetimeMs: CA_DEFAULTS.rootLifetimeMs });
      rootKeyPem = root.keyPem;
    } else {
      const op = await loadIssuer(given.certPem, given.keyPem, given.chainPem);
      const td = caTrustDomain(op.certPem);
      if (td !== null && td !== this.trustDomain) throw new SkeinError('SKEIN_E_BAD_CA', `the new CA certificate is for trust domain "${td}", not "${this.trustDomain}"`, { field: 'caCert' });
      if (op.certPem === op.rootPem) root = op;
      else issuer = op;
    }
    const i = issuer ?? (await createIntermediate(root as Issuer, { now, lifetimeMs: CA_DEFAULTS.intermediateLifetimeMs, trustDomain: this.trustDomain }));
    assertIssuerValid(i, now);
    if (this.roots.some((r) => certFingerprint(r) === certFingerprint(i.rootPem))) {
      throw new SkeinError('SKEIN_E_CA_ROTATION', 'the new CA chains to a root the mesh trusts already: give a new root', { field: 'caCert' });
    }
    return { certPem: i.certPem, keyPem: i.keyPem, chainPem: i.chainPem, rootPem: i.rootPem, rootKeyPem };
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

  /** The control plane's own SPIFFE ID (its mTLS listener's certificate). */
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
      issuer: { subject: i.subject, notBefore: i.notBefore.toISOString(), notAfter: i.notAfter.toISOString(), serial: i.serial, root: certFingerprint(this.issuer.rootPem) },
      rotation: this.rotationPhase,
      pollMs: Math.max(1000, Math.min(CA_DEFAULTS.trustPollMs, Math.round(this.leafLifetimeMs * CA_DEFAULTS.trustPollLeafFraction))),
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
  refused(type: 'certificate-refused' | 'token-refused' | 'ca-rotation-refused', e: unknown, fields: Omit<SecurityEvent, 'time' | 'type' | 'code' | 'reason'> = {}): unknown {
    const code = isSkeinError(e) ? e.code : 'SKEIN_E_INTERNAL';
    this.securityEvent({ type, ...fields, code, reason: (e as Error).message });
    return e;
  }
}
