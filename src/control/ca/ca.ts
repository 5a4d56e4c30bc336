/**
 * The control plane's CA. At start it has a root and an intermediate (the issuer):
 *
 * - generated: an ECDSA P-256 root (10 years) and an intermediate (1 year) are made once and
 *   kept in the store under `ca/root` and `ca/issuer`, so a restart on the same data dir keeps
 *   the same root; an intermediate that expired or is past 90% of its life is replaced at start
 *   and by the issuer renewal duty;
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
 * Several control-plane replicas (the etcd store) share the `ca/` keys. Each one holds the values
 * it last read or wrote (`held`); a step taken through another replica reaches it through the
 * store's watch (`applyStored`), which changes the bundle and the issuer as the step did and tells
 * the subscribers (`remote: true`), without writing anything. The issuing key's rotation is a duty
 * of one replica (`startIssuerRenewal`: the elected one): it replaces a worn intermediate with a
 * write that holds only over the value it read, so two replicas never both replace it.
 *
 * One file past 600 lines: the issuer, the rotation and the keys held change in three ways (a step
 * taken here, a change heard from the store, the renewal duty), which must see one another (one
 * at a time: `busy`; the echo of a write under way: `writing`). The decisions without I/O are in
 * rotation.ts.
 *
 * Every certificate issued, renewed or refused, every join token minted, used or refused, and
 * every rotation step goes through `securityEvent` (the one hook the audit log, metrics and the
 * log hang on).
 */
import type { Logger } from 'pino';
import { CA_DEFAULTS, certFingerprint, type CaInfo, type IssuedCertificate, type RotationPhase, type RotationStatus, type RotationStep, type SecurityEvent } from '../../api/ca.js';
import { Type, type Static } from '@sinclair/typebox';
import type { Clock, TimerHandle } from '../../core/clock.js';
import { SkeinError, isSkeinError } from '../../core/errors.js';
import { assertIssuerValid, caTrustDomain, checkCsr, createIntermediate, createRoot, describeCert, issueLeaf, loadIssuer, type Issuer, type Leaf, type LeafOptions } from '../../identity/certs.js';
import { DEFAULT_NAMESPACE, validTrustDomain, workloadId } from '../../identity/spiffe.js';
import type { Store, StoreOp } from '../store/store.js';
import { JoinTokens } from './tokens.js';
import type { KnownProxy } from '../proxies.js';
import type { MeshEventInput } from '../signals/events.js';
import { caChangeBetween, consistentState, nextStep, parseStored, parseStoredRotation, proxyTrust, stepRefusal, StoredPem, type CaChangeStep, type CaState, type StoredRotation } from './rotation.js';

export const CA_PREFIX = 'ca/';
const ROOT_KEY = 'ca/root';
const ISSUER_KEY = 'ca/issuer';
const ROTATION_KEY = 'ca/rotation';
/** The keys of the CA itself (the join tokens under `ca/tokens/` are JoinTokens'). */
const CA_KEYS: readonly string[] = [ROOT_KEY, ISSUER_KEY, ROTATION_KEY];

/** A change of the bundle or the issuer (a rotation step, or the intermediate renewed), as subscribers hear it. */
export interface CaChange {
  readonly step: CaChangeStep;
  readonly forced: boolean;
  /** Taken through another control-plane replica (applied from the store's watch), not this one. */
  readonly remote: boolean;
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
  return { time: c.time, type: 'certificate', service: null, message: c.message, step: c.step, forced: c.forced, remote: c.remote, roots: [...c.roots], issuer: c.issuerSerial };
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

/** `ca/root`: the root certificate and its key ('' when the CA does not hold it: a root given to `rotate` without its key). */
const StoredRootSchema = Type.Object({ certPem: StoredPem, keyPem: Type.String() }, { additionalProperties: false });
/** `ca/issuer`: the intermediate the leaves are issued by. */
const StoredIssuerSchema = Type.Object({ certPem: StoredPem, keyPem: StoredPem, chainPem: Type.Array(StoredPem), rootPem: StoredPem }, { additionalProperties: false });

type StoredIssuer = Static<typeof StoredIssuerSchema>;

/** `key`'s record as an Issuer (its dates and serial read from the certificate); SKEIN_E_BAD_CA naming the key when it is not one. */
function toIssuer(s: StoredIssuer, key: string): Issuer {
  try {
    const d = describeCert(s.certPem);
    certFingerprint(s.rootPem);
    return { ...s, notBefore: d.notBefore, notAfter: d.notAfter, serial: d.serial };
  } catch (e) {
    throw new SkeinError('SKEIN_E_BAD_CA', `${key} in the store holds a certificate that cannot be read: ${(e as Error).message}`, { field: key, cause: e });
  }
}
/** A stored `ca/root` as an Issuer (its own root). */
const parseRoot = (raw: string): Issuer => {
  const s = parseStored(ROOT_KEY, StoredRootSchema, raw);
  return toIssuer({ certPem: s.certPem, keyPem: s.keyPem, chainPem: [], rootPem: s.certPem }, ROOT_KEY);
};
const parseIssuer = (raw: string): Issuer => toIssuer(parseStored(ISSUER_KEY, StoredIssuerSchema, raw), ISSUER_KEY);
/** Why a stored root may not serve `trustDomain` (null: it may). */
function rootTrustDomainProblem(root: Issuer, trustDomain: string): string | null {
  const td = caTrustDomain(root.certPem);
  return td !== trustDomain && (td !== null || root.keyPem !== '') ? `the CA kept in the store is for trust domain "${td}", not "${trustDomain}"` : null;
}
const stored = (i: Issuer): string => JSON.stringify({ certPem: i.certPem, keyPem: i.keyPem, chainPem: i.chainPem, rootPem: i.rootPem } satisfies StoredIssuer);
const worn = (i: Issuer, now: number) => now >= i.notBefore.getTime() + CA_DEFAULTS.renewNowFraction * (i.notAfter.getTime() - i.notBefore.getTime());
/** How long the issuer renewal duty waits between two checks of `i`. */
export const issuerCheckPeriodMs = (i: Pick<Issuer, 'notBefore' | 'notAfter'>): number =>
  Math.max(1000, Math.min(CA_DEFAULTS.issuerCheckMs, Math.round(CA_DEFAULTS.issuerCheckLifetimeFraction * (i.notAfter.getTime() - i.notBefore.getTime()))));

/** Checks a leaf lifetime (ms) against CA_DEFAULTS' bounds; `field` names it in the error. */
export function checkLeafLifetime(ms: number, field = 'leafLifetimeMs'): number {
  if (!Number.isInteger(ms) || ms < CA_DEFAULTS.minLeafLifetimeMs || ms > CA_DEFAULTS.maxLeafLifetimeMs) {
    throw new SkeinError('SKEIN_E_VALIDATION', `${field} must be from ${CA_DEFAULTS.minLeafLifetimeMs} ms (1 minute) to ${CA_DEFAULTS.maxLeafLifetimeMs} ms (90 days), got ${ms}`, { field });
  }
  return ms;
}

export class CertificateAuthority {
  private readonly subscribers = new Set<(c: CaChange) => void>();
  /** One rotation step or issuer renewal at a time: what is being done (null: nothing). */
  private busy: string | null = null;
  /** The keys of this CA's own write under way (key -> value, null: deleted): their echo from the watch is not another replica's change. */
  private readonly writing = new Map<string, string | null>();
  /** Other replicas' changes heard while this CA's own write was under way, applied once it is done. */
  private deferred: Array<[string, string | null]> = [];
  /** The issuer renewal duty's run (null: stopped). */
  private renewal: { timer: TimerHandle | null } | null = null;

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
    /** The `ca/root`, `ca/issuer` and `ca/rotation` values this CA last read or wrote. */
    private readonly held: Map<string, string>,
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
    const held = new Map<string, string>();
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
        root = parseRoot(r);
        held.set(ROOT_KEY, r);
        if (rootTrustDomainProblem(root, o.trustDomain) !== null) {
          const td = caTrustDomain(root.certPem);
          throw new SkeinError('SKEIN_E_BAD_CA', `the CA kept in the data dir is for trust domain "${td}", not "${o.trustDomain}": start with --trust-domain ${td}, or with a new data dir for a new trust domain`, { field: '--trust-domain' });
        }
      } else {
        root = await createRoot(o.trustDomain, { now, lifetimeMs: CA_DEFAULTS.rootLifetimeMs });
        const value = JSON.stringify({ certPem: root.certPem, keyPem: root.keyPem });
        held.set(ROOT_KEY, value);
        try {
          // Only if no other control-plane replica stored one meanwhile (the etcd store): one mesh, one root.
          await o.store.commit([{ type: 'put', key: ROOT_KEY, value, expect: null }]);
          log.info({ trustDomain: o.trustDomain, serial: root.serial, notAfter: root.notAfter.toISOString() }, 'CA root generated');
        } catch (e) {
          if (!isSkeinError(e) || e.code !== 'SKEIN_E_CONCURRENT_CHANGE') throw e;
          return CertificateAuthority.open(o);
        }
      }
    }
    if (issuer === null && root !== null) {
      const s = kept.get(ISSUER_KEY);
      const old = s === undefined ? null : parseIssuer(s);
      if (s !== undefined) held.set(ISSUER_KEY, s);
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
          held.set(ISSUER_KEY, stored(issuer));
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
      rotation = parseStoredRotation(r);
      held.set(ROTATION_KEY, r);
      log.info({ phase: rotation.phase }, 'CA root rotation under way');
    }
    return new CertificateAuthority(o.trustDomain, o.leafLifetimeMs, theIssuer, rotation, tokens, o.store, o.operator !== null, o.clock, log, o.onSecurityEvent, held);
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
      if (this.busy !== null) throw new SkeinError('SKEIN_E_CA_ROTATION', `${this.busy}; try again`, { field: 'step' });
      if (o.operator != null && step !== 'add') throw new SkeinError('SKEIN_E_VALIDATION', `a CA certificate and key are given with --step add only, not ${step}`, { field: 'caCert' });
      const why = stepRefusal(step, this.rotationPhase, this.newRoot, o.proxies.map((p) => proxyTrust(p, this.newRoot)));
      if (why !== null && (!why.forceable || !force)) throw new SkeinError('SKEIN_E_CA_ROTATION', why.message, { field: 'step' });
      forced = why !== null;
      if (forced) this.logger.warn({ step, overridden: why?.message }, 'CA rotation step forced');
      this.busy = 'another rotation step is being taken';
      try {
        await this.take(step, o.operator ?? null);
      } finally {
        this.busy = null;
      }
    } catch (e) {
      throw this.refused('ca-rotation-refused', e, { step, forced: false, ...source });
    }
    const change = this.change(step, { forced, remote: false, previousSerial: null });
    this.securityEvent({ type: 'ca-rotation', step, forced, roots: [...change.roots], serial: this.issuer.serial, reason: change.message, ...source });
    this.notify(change);
    return this.rotationStatus(o.proxies);
  }

  /** The change `step` made, as subscribers hear it (after the CA holds it). */
  private change(step: CaChangeStep, o: { forced: boolean; remote: boolean; previousSerial: string | null }): CaChange {
    const roots = this.roots.map(certFingerprint);
    const serial = this.issuer.serial;
    const message =
      step === 'add'
        ? `root rotation: new root ${roots[1]?.slice(0, 16)} added to the trust bundle; issuing stays on the old root until the switch`
        : step === 'switch'
          ? `root rotation: issuing switched to the new intermediate (serial ${serial}); proxies renew onto it`
          : step === 'remove'
            ? `root rotation: the old root left the trust bundle; trusted now: ${roots.map((f) => f.slice(0, 16)).join(', ')}`
            : `the CA intermediate was renewed under the same root: serial ${serial}${o.previousSerial === null ? '' : ` replaces ${o.previousSerial}`}; proxies renew onto it`;
    return { step, forced: o.forced, remote: o.remote, time: this.clock.now(), roots, issuerSerial: serial, message: o.remote ? `${message} (taken through another control-plane replica)` : message };
  }

  private notify(change: CaChange): void {
    for (const fn of [...this.subscribers]) {
      try {
        fn(change);
      } catch (err) {
        this.logger.error({ err }, 'a CA change subscriber failed');
      }
    }
  }

  /**
   * Commits `ops` (this CA's own change of its keys), then `apply` updates what the CA holds.
   * Meanwhile the watch's echo of these values is ignored and other replicas' changes wait
   * (`applyStored`), to be applied after `apply`, in the order they came.
   */
  private async write(ops: StoreOp[], apply: () => void): Promise<void> {
    for (const op of ops) this.writing.set(op.key, op.type === 'put' ? op.value : null);
    try {
      await this.store.commit(ops);
      for (const op of ops) {
        if (op.type === 'put') this.held.set(op.key, op.value);
        else this.held.delete(op.key);
      }
      apply();
    } finally {
      this.writing.clear();
      const waiting = this.deferred;
      this.deferred = [];
      for (const [key, value] of waiting) this.applyStored(key, value);
    }
  }

  /**
   * A change of one of the CA's keys in the store, made through another control-plane replica
   * (the etcd store's watch): `ca/root`, `ca/issuer` or `ca/rotation` (null: deleted); other keys
   * are ignored. Parsed as `open` parses them. A value that equals what the CA holds is nothing
   * to do (the echo of its own write); a value that cannot be read is logged and ignored (this
   * never throws into the watch). Once the keys agree (a step writes several, which arrive one
   * by one), the CA takes the bundle and the issuer they hold and tells its subscribers, as
   * when it takes a step itself (`remote: true`). It writes nothing.
   */
  applyStored(key: string, value: string | null): void {
    if (!CA_KEYS.includes(key) || this.operatorCa) return;
    if (this.writing.size > 0) {
      if (this.writing.has(key) && this.writing.get(key) === value) return;
      this.deferred.push([key, value]);
      return;
    }
    if ((this.held.get(key) ?? null) === value) return;
    try {
      if (value === null && key !== ROTATION_KEY) throw new SkeinError('SKEIN_E_BAD_CA', `${key} was deleted from the store`, { field: key });
      if (value !== null) {
        if (key === ROOT_KEY) {
          const why = rootTrustDomainProblem(parseRoot(value), this.trustDomain);
          if (why !== null) throw new SkeinError('SKEIN_E_BAD_CA', why, { field: key });
        } else if (key === ISSUER_KEY) parseIssuer(value);
        else parseStoredRotation(value);
      }
    } catch (e) {
      this.logger.error({ err: e, key }, 'a CA key changed in the store cannot be used: ignored (the CA keeps what it holds)');
      return;
    }
    if (value === null) this.held.delete(key);
    else this.held.set(key, value);
    try {
      this.reconcile();
    } catch (err) {
      this.logger.error({ err, key }, 'the CA keys in the store cannot be taken together: the CA keeps what it holds');
    }
  }

  /** Takes what `held` says once its keys agree; tells the subscribers what changed. */
  private reconcile(): void {
    const rootRaw = this.held.get(ROOT_KEY);
    const issuerRaw = this.held.get(ISSUER_KEY);
    if (rootRaw === undefined || issuerRaw === undefined) return;
    const root = parseRoot(rootRaw);
    const issuer = parseIssuer(issuerRaw);
    const rotationRaw = this.held.get(ROTATION_KEY);
    const rotation = rotationRaw === undefined ? null : parseStoredRotation(rotationRaw);
    const after: CaState = { issuerSerial: issuer.serial, issuerRootPem: issuer.rootPem, rotation };
    if (issuer.rootPem.trim() !== root.certPem.trim() || !consistentState(after)) {
      this.logger.debug('CA keys changed in the store disagree (a step arriving key by key): waiting for the rest');
      return;
    }
    const before: CaState = { issuerSerial: this.issuer.serial, issuerRootPem: this.issuer.rootPem, rotation: this.rotation };
    const step = caChangeBetween(before, after);
    const previousSerial = this.issuer.serial;
    this.issuer = issuer;
    this.rotation = rotation;
    if (step === null) return;
    const change = this.change(step, { forced: false, remote: true, previousSerial });
    this.logger.info({ step, phase: this.rotationPhase, issuer: issuer.serial, roots: change.roots }, 'CA changed through another control-plane replica');
    this.notify(change);
  }

  private async take(step: RotationStep, given: OperatorCa | null): Promise<void> {
    const now = this.clock.now();
    if (step === 'add') {
      const next = await this.newAuthority(given, new Date(now));
      const rotation: StoredRotation = { phase: 'added', next, addedAt: now };
      // Only if no rotation was started through another replica meanwhile.
      await this.write([{ type: 'put', key: ROTATION_KEY, value: JSON.stringify(rotation), expect: null }], () => (this.rotation = rotation));
      return;
    }
    const r = this.rotation as StoredRotation;
    if (step === 'switch' && r.phase === 'added') {
      const issuer = toIssuer({ certPem: r.next.certPem, keyPem: r.next.keyPem, chainPem: r.next.chainPem, rootPem: r.next.rootPem }, ROTATION_KEY);
      const rotation: StoredRotation = { phase: 'switched', oldRootPem: this.issuer.rootPem, addedAt: r.addedAt, switchedAt: now };
      const ops: StoreOp[] = [
        { type: 'put', key: ROOT_KEY, value: JSON.stringify({ certPem: r.next.rootPem, keyPem: r.next.rootKeyPem }) },
        { type: 'put', key: ISSUER_KEY, value: stored(issuer) },
        // Only over the `added` this CA holds (not one another replica took further meanwhile).
        { type: 'put', key: ROTATION_KEY, value: JSON.stringify(rotation), expect: this.held.get(ROTATION_KEY) ?? null },
      ];
      await this.write(ops, () => {
        this.issuer = issuer;
        this.rotation = rotation;
      });
      return;
    }
    await this.write([{ type: 'del', key: ROTATION_KEY }], () => (this.rotation = null));
  }

  /**
   * The issuing key's rotation, a duty that runs on one replica (the elected one with the etcd
   * store): checks every `issuerCheckPeriodMs` (CA_DEFAULTS.issuerCheckMs, 1 h, or 1% of the
   * intermediate's lifetime when that is shorter), at once first, and replaces a worn intermediate
   * (`renewIssuerIfWorn`). Starting it again while it runs does nothing.
   */
  startIssuerRenewal(): void {
    if (this.renewal !== null) return;
    const run: { timer: TimerHandle | null } = { timer: null };
    this.renewal = run;
    const tick = () => {
      if (this.renewal !== run) return;
      this.renewIssuerIfWorn()
        .catch((err: unknown) => this.logger.error({ err }, 'the CA intermediate could not be renewed; trying again at the next check'))
        .finally(() => {
          if (this.renewal === run) run.timer = this.clock.setTimeout(tick, issuerCheckPeriodMs(this.issuer));
        });
    };
    tick();
  }

  /** Stops the duty (this replica no longer leads, or closes); a check under way finishes its one write. */
  stopIssuerRenewal(): void {
    this.renewal?.timer?.cancel();
    this.renewal = null;
  }

  /**
   * Replaces the intermediate under the same root once it is worn (past CA_DEFAULTS.renewNowFraction
   * of its life), with a write that holds only over the value it read: when another replica
   * replaced it first (SKEIN_E_CONCURRENT_CHANGE), the CA takes theirs from the watch. Nothing is
   * done during a root rotation, for an operator-supplied CA (its files are its state), or when
   * the root's key is not held (logged: rotate to a new root). Resolves whether it replaced it;
   * then a security event (`certificate-issued`, kind `intermediate`) and the subscribers
   * (`renew-issuer`).
   */
  async renewIssuerIfWorn(): Promise<boolean> {
    if (this.operatorCa || this.busy !== null || this.rotation !== null || !worn(this.issuer, this.clock.now())) return false;
    this.busy = 'the CA intermediate is being replaced';
    try {
      const kept = new Map((await this.store.load()).filter(([k]) => CA_KEYS.includes(k)));
      // What the store holds now (another replica may have replaced it already): a no-op when the watch is not behind.
      for (const k of CA_KEYS) this.applyStored(k, kept.get(k) ?? null);
      const now = this.clock.now();
      const rootRaw = kept.get(ROOT_KEY);
      const issuerRaw = kept.get(ISSUER_KEY);
      if (this.rotation !== null || !worn(this.issuer, now) || rootRaw === undefined || issuerRaw === undefined || issuerRaw !== this.held.get(ISSUER_KEY)) return false;
      const root = parseRoot(rootRaw);
      const old = this.issuer;
      if (root.keyPem === '') {
        this.logger.error({ serial: old.serial, notAfter: old.notAfter.toISOString() }, 'the CA intermediate is worn, and the root it chains to was given without keeping its key: rotate to a new root (skein ca rotate)');
        return false;
      }
      const next = await createIntermediate(root, { now: new Date(now), lifetimeMs: CA_DEFAULTS.intermediateLifetimeMs, trustDomain: this.trustDomain });
      try {
        await this.write([{ type: 'put', key: ISSUER_KEY, value: stored(next), expect: issuerRaw }], () => (this.issuer = next));
      } catch (e) {
        if (!isSkeinError(e) || e.code !== 'SKEIN_E_CONCURRENT_CHANGE') throw e;
        this.logger.info({ serial: old.serial }, 'another control-plane replica replaced the worn CA intermediate first: taking theirs from the store');
        return false;
      }
      this.logger.info({ serial: next.serial, notAfter: next.notAfter.toISOString(), replaced: old.serial }, 'CA intermediate renewed');
      const change = this.change('renew-issuer', { forced: false, remote: false, previousSerial: old.serial });
      this.securityEvent({ type: 'certificate-issued', kind: 'intermediate', serial: next.serial, notAfter: next.notAfter.toISOString(), reason: change.message });
      this.notify(change);
      return true;
    } finally {
      this.busy = null;
    }
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
