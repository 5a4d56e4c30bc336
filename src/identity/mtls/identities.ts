/**
 * The proxy's workload identities: one X.509-SVID per service it serves or calls from, each with
 * its own key pair, which never leaves this process. The proxy makes the key and a CSR; the
 * control plane's CA stamps the identity it authenticated (a join token first, then the current
 * certificate over mTLS) and ignores what the CSR asks for.
 *
 * Each certificate is renewed at a random point between 50% and 70% of its lifetime (at once past
 * 90%), with a new key; failed renewals are retried with backoff while the old one is valid. A
 * renewed certificate gets a new SecureContext: connections made from now on use it, open ones
 * keep theirs, so nothing is dropped. Every context is built by one function
 * (`secureContextOptions`) from the whole credential, so no option is ever left out of a swap.
 *
 * Root rotation (docs/security.md#rotation): the proxy asks the CA (`CertificateSource.info`)
 * every `pollMs` for the trust bundle and the current issuer, and at once when a renewal's answer
 * carries other roots. A new bundle rebuilds every context and renews every leaf at once (a new
 * leaf is what makes an inbound listener swap its context); a root that left the bundle also
 * rotates the session-ticket keys and starts a new session epoch (outbound links forget their
 * tickets), so no session made before the removal resumes. A leaf whose issuer is not the CA's
 * current one is renewed at once (the switch step).
 */
import { generateKeyPair, randomBytes, X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureContext } from 'node:tls';
import { promisify } from 'node:util';
import { Backoff, type Rng } from '../../core/backoff.js';
import type { Clock, TimerHandle } from '../../core/clock.js';
import { createCsr, describeCert } from '../certs.js';
import { renewalDelayMs } from '../renewal.js';
import { DEFAULT_NAMESPACE, workloadId } from '../spiffe.js';
import { MESH_ALPNS } from '../../api/mtls.js';
import { certFingerprint, type CaInfo, type IssuedCertificate, type WorkloadTls } from '../../api/ca.js';

const generateKeyPairAsync = promisify(generateKeyPair);

/** How the proxy gets certificates: the control plane's CA, over HTTP(S). */
export interface CertificateSource {
  /** First certificates, one per service, proven by the proxy's join token. */
  issue(requests: ReadonlyArray<{ service: string; csr: string }>): Promise<IssuedCertificate[]>;
  /** A new certificate for the identity of `current`, proven by `current` itself over mTLS. */
  renew(current: Credential, csr: string): Promise<IssuedCertificate>;
  /** GET /v1/ca, asked again (the trust bundle and the current issuer); absent: no trust polling. */
  info?(fresh: boolean): Promise<CaInfo>;
  /** A call to the control plane's API authenticated by `current` (its mTLS listener); absent: none. */
  request?(current: Credential, method: string, path: string, body?: unknown): Promise<ControlAnswer>;
}

/** An answer of the control plane's API (to a call authenticated by a certificate, or the announcer's with a token). */
export interface ControlAnswer {
  readonly status: number;
  readonly text: string;
}

/** A call to the control plane's API with a certificate the caller holds. */
export type ControlCall = (method: string, path: string, body?: unknown) => Promise<ControlAnswer>;

/** One identity the proxy holds: key, certificate and the TLS context built from them. */
export interface Credential {
  readonly service: string;
  readonly identity: string;
  readonly keyPem: string;
  readonly certPem: string;
  readonly chainPem: readonly string[];
  readonly roots: readonly string[];
  /** ms since the epoch. */
  readonly notBefore: number;
  readonly notAfter: number;
  readonly serial: string;
  /** The serial of the leaf's issuer, and the fingerprint of the root the leaf chains to. */
  readonly issuerSerial: string;
  readonly leafRoot: string;
  /**
   * The roots every context of this credential trusts: those of the answer that installed it. A new
   * bundle rebuilds the context (`roots`) at once, but an inbound listener swaps its context only
   * when the leaf changes, so what is announced waits for the renewal that follows.
   */
  readonly trustedRoots: readonly string[];
  readonly context: SecureContext;
}

export type IdentityEvent =
  | { readonly type: 'issued' | 'renewed'; readonly service: string; readonly identity: string; readonly serial: string; readonly notAfter: number }
  | { readonly type: 'renewal-failed'; readonly service: string; readonly identity: string; readonly error: string; readonly retryInMs: number }
  /** A new trust bundle was applied (fingerprints, old first); `removed`: roots that left it (ticket keys rotated, sessions forgotten). */
  | { readonly type: 'trust'; readonly roots: readonly string[]; readonly removed: readonly string[] }
  | { readonly type: 'trust-poll-failed'; readonly error: string };

export interface IdentitiesOptions {
  readonly source: CertificateSource;
  readonly trustDomain: string;
  readonly clock: Clock;
  readonly rng?: Rng;
  /** 48 bytes: the session-ticket keys every context shares (so sessions resume across renewals). */
  readonly ticketKeys: Buffer;
  /**
   * The keys are shared with other proxies on the same ports (the workers of `--workers N`) and
   * change only by `setTicketKeys` (their main thread rotates them): a root that leaves the bundle
   * starts a new session epoch here but makes no keys. Default false: new random keys then.
   */
  readonly ticketKeysShared?: boolean;
  readonly onEvent?: (e: IdentityEvent) => void;
}

/** The fingerprint of the root in `roots` that `top` (the last certificate of a chain) was issued by ('' for none). */
function issuingRoot(topPem: string, roots: readonly string[]): string {
  const top = new X509Certificate(topPem);
  for (const r of roots) {
    const root = new X509Certificate(r);
    if (top.checkIssued(root) && top.verify(root.publicKey)) return certFingerprint(r);
  }
  return '';
}

const sameRoots = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((x, i) => x.trim() === b[i]?.trim());

/** The options of every TLS context a proxy builds: all of them, every time (see the file's comment). */
export function secureContextOptions(c: { keyPem: string; certPem: string; chainPem: readonly string[]; roots: readonly string[] }, ticketKeys: Buffer) {
  return {
    key: c.keyPem,
    cert: pemBundle([c.certPem, ...c.chainPem]),
    ca: [...c.roots],
    minVersion: 'TLSv1.3' as const,
    ticketKeys,
  };
}

/** PEM blocks as one bundle, one per line (a PEM as a library writes it may lack its final newline). */
export function pemBundle(pems: readonly string[]): string {
  return `${pems.map((p) => p.trim()).join('\n')}\n`;
}

/** What a TLS socket of the mesh is given besides its context, on both sides. */
export const MESH_TLS = { ALPNProtocols: [...MESH_ALPNS], rejectUnauthorized: false } as const;

async function newKey(): Promise<string> {
  const { privateKey } = await generateKeyPairAsync('ec', {
    namedCurve: 'prime256v1',
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  return privateKey;
}

export class Identities {
  private readonly held = new Map<string, Credential>();
  private readonly timers = new Map<string, TimerHandle>();
  private readonly backoffs = new Map<string, Backoff>();
  /** Services asked for and not yet issued: one request at a time per service. */
  private readonly pending = new Map<string, Promise<void>>();
  /** Renewals under way, so that a timer, a new bundle and a new issuer do not renew one service twice at once. */
  private readonly renewing = new Set<string>();
  private stopped = false;
  readonly trustDomain: string;
  private keys: Buffer;
  /** The trust bundle (PEMs, old first): from the first answer, then from the CA's polls. */
  private bundle: readonly string[] | null = null;
  private poll: TimerHandle | null = null;
  private polling = false;
  private epoch = 0;

  constructor(private readonly o: IdentitiesOptions) {
    this.trustDomain = o.trustDomain;
    this.keys = o.ticketKeys;
  }

  /** The session-ticket keys of every context (servers resume sessions across renewals, not across a root removal). */
  /** Where certificates come from (the control plane's CA). */
  get source(): CertificateSource {
    return this.o.source;
  }

  get ticketKeys(): Buffer {
    return this.keys;
  }

  /** Shared keys (`ticketKeysShared`) replaced: every context is built again with them (an inbound listener swaps at its next connection). */
  setTicketKeys(keys: Buffer): void {
    if (keys.length !== 48) throw new Error(`TLS session-ticket keys are 48 bytes, got ${keys.length}`);
    if (keys.equals(this.keys)) return;
    this.keys = keys;
    for (const c of this.held.values()) this.held.set(c.service, { ...c, context: createSecureContext(secureContextOptions(c, keys)) });
  }

  /** Goes up when a root leaves the bundle: a session ticket kept from an earlier epoch is not used again. */
  get sessionEpoch(): number {
    return this.epoch;
  }

  /** What the announcement says of `service`'s certificate (null: none held). */
  report(service: string): WorkloadTls | null {
    const c = this.held.get(service);
    if (c === undefined) return null;
    return { roots: c.trustedRoots.map(certFingerprint), leafRoot: c.leafRoot, leafIssuer: c.issuerSerial };
  }

  /** Asks the CA for the bundle and issuer now, then every `pollMs` it says (needs `source.info`). */
  startTrustPolling(): void {
    if (this.o.source.info === undefined || this.stopped) return;
    this.pollNow();
  }

  private pollNow(): void {
    this.poll?.cancel();
    this.poll = null;
    if (this.polling || this.stopped) return;
    this.polling = true;
    let next = 10_000;
    (this.o.source.info as (fresh: boolean) => Promise<CaInfo>)(true)
      .then((info) => {
        next = info.pollMs;
        this.trust(info);
      })
      .catch((e: unknown) => this.o.onEvent?.({ type: 'trust-poll-failed', error: (e as Error).message }))
      .finally(() => {
        this.polling = false;
        if (!this.stopped && this.poll === null) this.poll = this.o.clock.setTimeout(() => this.pollNow(), next);
      });
  }

  /**
   * Applies what the CA says: a new bundle rebuilds every context and renews every leaf (a root
   * that left also rotates the ticket keys and the session epoch); a leaf of another issuer than
   * the current one is renewed.
   */
  trust(info: Pick<CaInfo, 'roots' | 'issuer'>): void {
    if (this.stopped || info.roots.length === 0) return;
    const before = this.bundle;
    if (before === null || !sameRoots(before, info.roots)) {
      const removed = before === null ? [] : before.filter((r) => !info.roots.some((n) => n.trim() === r.trim()));
      this.bundle = [...info.roots];
      if (removed.length > 0) {
        if (this.o.ticketKeysShared !== true) this.keys = randomBytes(48);
        this.epoch++;
      }
      for (const c of this.held.values()) {
        const parts = { keyPem: c.keyPem, certPem: c.certPem, chainPem: c.chainPem, roots: [...info.roots] };
        this.held.set(c.service, { ...c, roots: parts.roots, context: createSecureContext(secureContextOptions(parts, this.keys)) });
      }
      if (before !== null) {
        this.o.onEvent?.({ type: 'trust', roots: info.roots.map(certFingerprint), removed: removed.map(certFingerprint) });
        for (const s of this.held.keys()) void this.renew(s);
        return;
      }
    }
    for (const c of this.held.values()) if (c.issuerSerial.toLowerCase() !== info.issuer.serial.toLowerCase()) void this.renew(c.service);
  }

  /** The SPIFFE ID the endpoints of `service` present. */
  identityOf(service: string): string {
    return workloadId(this.trustDomain, DEFAULT_NAMESPACE, service);
  }

  credential(service: string): Credential | undefined {
    return this.held.get(service);
  }

  /**
   * The control plane's API authenticated by the first certificate held (over its mTLS listener),
   * for the proxy's own calls (its announcements); null while none is held.
   */
  controlCall(): ControlCall | null {
    const request = this.o.source.request?.bind(this.o.source);
    const current = this.list()[0];
    if (request === undefined || current === undefined) return null;
    return (method, path, body) => request(current, method, path, body);
  }

  list(): Credential[] {
    return [...this.held.values()];
  }

  /**
   * Installs certificates kept from before (the proxy's persisted state, static stability), as if
   * just issued: renewed on the usual schedule (or at once when past their renewal point), with
   * backoff while no CA answers. A certificate that has expired, or is not this trust domain's
   * identity of its service, is left out. Returns the services installed.
   */
  restore(creds: ReadonlyArray<{ service: string; keyPem: string; certPem: string; chainPem: readonly string[]; roots: readonly string[] }>): string[] {
    const out: string[] = [];
    for (const c of creds) {
      if (this.held.has(c.service)) continue;
      try {
        const d = describeCert(c.certPem);
        const identity = d.uris[0] ?? '';
        if (identity !== this.identityOf(c.service) || d.notAfter.getTime() <= this.o.clock.now()) continue;
        const got: IssuedCertificate = { certificate: c.certPem, chain: [...c.chainPem], roots: [...c.roots], identity, notBefore: d.notBefore.toISOString(), notAfter: d.notAfter.toISOString(), serial: d.serial };
        this.install(c.service, c.keyPem, got, 'issued');
        out.push(c.service);
      } catch {
        /* unreadable: left out, the CA issues a new one when it answers */
      }
    }
    return out;
  }

  /** Gets certificates for the services not held yet (one CA request for all of them). */
  async obtain(services: readonly string[]): Promise<void> {
    const wanted = [...new Set(services)].filter((s) => !this.held.has(s));
    const waits = wanted.filter((s) => this.pending.has(s)).map((s) => this.pending.get(s) as Promise<void>);
    const fresh = wanted.filter((s) => !this.pending.has(s));
    if (fresh.length > 0) {
      const p = this.issue(fresh);
      for (const s of fresh) this.pending.set(s, p);
      waits.push(
        p.finally(() => {
          for (const s of fresh) if (this.pending.get(s) === p) this.pending.delete(s);
        }),
      );
    }
    await Promise.all(waits);
  }

  private async issue(services: string[]): Promise<void> {
    const keys = await Promise.all(services.map(() => newKey()));
    const csrs = await Promise.all(keys.map((k) => createCsr(k)));
    const issued = await this.o.source.issue(services.map((service, i) => ({ service, csr: csrs[i] as string })));
    services.forEach((service, i) => {
      const got = issued[i];
      if (got === undefined) throw new Error(`the CA answered ${issued.length} certificates for ${services.length} services`);
      this.install(service, keys[i] as string, got, 'issued');
    });
  }

  private install(service: string, keyPem: string, got: IssuedCertificate, type: 'issued' | 'renewed'): void {
    if (this.stopped) return;
    const expected = this.identityOf(service);
    if (got.identity !== expected) throw new Error(`the CA issued ${got.identity} for service "${service}", expected ${expected}`);
    const parts = { keyPem, certPem: got.certificate, chainPem: [...got.chain], roots: [...got.roots] };
    const cred: Credential = {
      service,
      identity: got.identity,
      ...parts,
      notBefore: Date.parse(got.notBefore),
      notAfter: Date.parse(got.notAfter),
      serial: got.serial,
      issuerSerial: describeCert(got.chain[0] ?? got.certificate).serial,
      leafRoot: issuingRoot(got.chain.at(-1) ?? got.certificate, got.roots),
      trustedRoots: parts.roots,
      context: createSecureContext(secureContextOptions(parts, this.keys)),
    };
    this.held.set(service, cred);
    if (this.bundle === null) this.bundle = [...got.roots];
    // The answer carries the CA's bundle: another one means a rotation step; ask for it now.
    else if (!sameRoots(this.bundle, got.roots)) this.pollNow();
    this.backoffs.get(service)?.reset();
    this.o.onEvent?.({ type, service, identity: cred.identity, serial: cred.serial, notAfter: cred.notAfter });
    this.schedule(cred, renewalDelayMs(cred.notBefore, cred.notAfter, this.o.clock.now(), this.o.rng ?? Math.random));
  }

  private schedule(cred: Credential, ms: number): void {
    this.timers.get(cred.service)?.cancel();
    if (this.stopped) return;
    this.timers.set(
      cred.service,
      this.o.clock.setTimeout(() => void this.renew(cred.service), Math.max(0, ms)),
    );
  }

  /** Renews now (also what the timer does). */
  async renew(service: string): Promise<void> {
    const cur = this.held.get(service);
    if (cur === undefined || this.stopped || this.renewing.has(service)) return;
    this.renewing.add(service);
    try {
      const key = await newKey();
      const got = await this.o.source.renew(cur, await createCsr(key));
      this.install(service, key, got, 'renewed');
    } catch (e) {
      let b = this.backoffs.get(service);
      if (b === undefined) this.backoffs.set(service, (b = new Backoff({ baseMs: 1000, capMs: 30_000, ...(this.o.rng === undefined ? {} : { rng: this.o.rng }) })));
      // Never wait past the certificate's end for the next try.
      const retryInMs = Math.max(100, Math.min(b.next(), cur.notAfter - this.o.clock.now()));
      this.o.onEvent?.({ type: 'renewal-failed', service, identity: cur.identity, error: (e as Error).message, retryInMs });
      this.schedule(cur, retryInMs);
    } finally {
      this.renewing.delete(service);
    }
  }

  stop(): void {
    this.stopped = true;
    this.poll?.cancel();
    for (const t of this.timers.values()) t.cancel();
    this.timers.clear();
  }
}
