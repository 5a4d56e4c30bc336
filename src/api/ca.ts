/**
 * The CA's defaults and the wire formats of its API (/v1/ca on the control plane's HTTP API and
 * /v1/ca/renew on its mTLS listener), shared by the control plane, the proxy and the CLI.
 * docs/security.md describes them.
 */
import { X509Certificate } from 'node:crypto';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export const CA_DEFAULTS = Object.freeze({
  /** A generated root's lifetime: 10 years. */
  rootLifetimeMs: 3650 * DAY,
  /** A generated intermediate's lifetime: 1 year (capped at the root's expiry). */
  intermediateLifetimeMs: 365 * DAY,
  /** A workload leaf's lifetime unless configured (Linkerd and Istio: 24 h). */
  leafLifetimeMs: DAY,
  /** The shortest leaf lifetime that may be configured (for tests). */
  minLeafLifetimeMs: 60_000,
  /** The longest leaf lifetime that may be configured. */
  maxLeafLifetimeMs: 90 * DAY,
  /** A leaf's NotBefore is this far before the moment it is issued (clock skew between hosts). */
  backdateMs: 20_000,
  /** The control plane's serving certificate on the mTLS listener, ms (capped at the issuer's expiry). */
  servingLifetimeMs: 30 * DAY,
  /** A join token's lifetime unless the request says `ttl`. */
  tokenTtlMs: 10 * 60_000,
  /** The shortest and longest `ttl` a join token may be given. */
  minTokenTtlMs: 1000,
  maxTokenTtlMs: HOUR,
  /** How long a spent or expired join token is remembered past its expiry (a replay is told "already used", not "unknown"). */
  tokenRetainMs: DAY,
  /** Random bits of a join token. */
  tokenBits: 256,
  /** The most services one join token may be bound to. */
  maxTokenServices: 256,
  /** The namespace and service of the control plane's own identity. */
  controlNamespace: 'skein-system',
  controlService: 'control',
  /** Renewal: at a random point between these fractions of a leaf's lifetime; at once past `renewNowFraction`. */
  renewFromFraction: 0.5,
  renewToFraction: 0.7,
  renewNowFraction: 0.9,
  /** How often a proxy asks GET /v1/ca for the trust bundle and the current issuer (root rotation). */
  trustPollMs: 10_000,
  /** ... or this fraction of the leaf lifetime when that is shorter (a 1-minute leaf: every 5 s). */
  trustPollLeafFraction: 1 / 12,
  /**
   * How often the issuer renewal duty (one replica: the elected one with etcd) checks whether the
   * intermediate is worn (past `renewNowFraction` of its life) and replaces it under the same root...
   */
  issuerCheckMs: HOUR,
  /** ... or this fraction of the intermediate's lifetime when that is shorter (never under a second). */
  issuerCheckLifetimeFraction: 1 / 100,
});

/** The steps of a root rotation, in order (docs/security.md#rotation). */
export const ROTATION_STEPS = ['add', 'switch', 'remove'] as const;
export type RotationStep = (typeof ROTATION_STEPS)[number];

/**
 * Where a rotation stands: `none` (one root), `added` (the bundle is [old, new], issuing on the
 * old), `switched` (the bundle is [old, new], issuing on the new).
 */
export type RotationPhase = 'none' | 'added' | 'switched';

/** The SHA-256 fingerprint of a certificate (PEM), lowercase hex without separators: how roots are named on the wire. */
export function certFingerprint(pem: string): string {
  return new X509Certificate(pem).fingerprint256.replace(/:/g, '').toLowerCase();
}

/** POST /v1/ca/rotate */
export interface RotateRequest {
  step: RotationStep;
  /** Do the step although its precondition does not hold (`switch`, `remove`). */
  force?: boolean;
  /** `add` only: the new root or intermediate (PEM) and its key, instead of a generated root. */
  caCert?: string;
  caKey?: string;
  /** With an intermediate `caCert`: from its issuer up to and including the root. */
  caChain?: string[];
}

/** What a proxy reports of one workload's certificate in its announcement (PUT /v1/proxies/{id}). */
export interface WorkloadTls {
  /** Fingerprints (certFingerprint) of the roots the workload's TLS contexts trust. */
  roots: string[];
  /** Fingerprint of the root the workload's leaf chains to. */
  leafRoot: string;
  /** Serial of the leaf's issuer (the intermediate). */
  leafIssuer: string;
}

/** One proxy as the rotation sees it (GET /v1/ca/rotation). */
export interface ProxyTrust {
  proxy: string;
  /** ISO 8601: its last announcement. */
  lastSeen: string;
  /** The workloads with a certificate and what they trust and hold. */
  workloads: Array<{ name: string; service: string } & WorkloadTls>;
  /** Every workload trusts the new root / every leaf chains to it (null: no rotation under way). */
  trustsNew: boolean | null;
  onNew: boolean | null;
}

/** GET /v1/ca/rotation: the rotation step, roots, issuers and every announced proxy. */
export interface RotationStatus {
  phase: RotationPhase;
  /** The step that may come next (null: none, e.g. no rotation under way: `add` starts one). */
  next: RotationStep | null;
  /** Why `next` would be refused now (null: it would be done). */
  blocked: string | null;
  /** The bundle, in order: old first. */
  roots: Array<{ fingerprint: string; subject: string; serial: string; notAfter: string; role: 'current' | 'old' | 'new' }>;
  issuer: { serial: string; root: string; notAfter: string };
  /** ISO 8601 of each step done in this rotation. */
  addedAt: string | null;
  switchedAt: string | null;
  /** When every leaf of the old root will have expired (switchedAt + the leaf lifetime): null before the switch. */
  oldLeavesExpireAt: string | null;
  proxies: ProxyTrust[];
}

/** POST /v1/ca/tokens */
export interface MintTokenRequest {
  proxy: string;
  services: string[];
  /** A duration such as "10m" (default CA_DEFAULTS.tokenTtlMs). */
  ttl?: string;
}

export interface MintTokenResponse {
  /** Shown once: the control plane keeps only its SHA-256 hash. */
  token: string;
  proxy: string;
  services: string[];
  /** ISO 8601. */
  expiresAt: string;
}

/** One certificate asked for: a PEM PKCS#10 CSR for one service (its SANs and subject are ignored). */
export interface CertificateRequest {
  service: string;
  csr: string;
}

/**
 * POST /v1/ca/certificates with `authorization: Bearer <join token>`: either one CSR
 * (`{service, csr}`, answered with one IssuedCertificate) or all the proxy's services at once
 * (`{requests: [...]}`, answered with `{certificates: [...]}` in the same order). The token is
 * spent by the first request that is issued certificates: ask for every service in one request.
 */
export type IssueRequest = CertificateRequest | { requests: CertificateRequest[] };

export interface IssuedCertificate {
  service?: string;
  /** PEM of the leaf. */
  certificate: string;
  /** PEMs of the issuer chain, leaf's issuer first, up to and excluding the root. */
  chain: string[];
  /** PEMs of the roots to trust (the trust bundle). */
  roots: string[];
  identity: string;
  /** ISO 8601. */
  notBefore: string;
  notAfter: string;
  /** Hex. */
  serial: string;
}

export interface IssueManyResponse {
  certificates: IssuedCertificate[];
}

/** POST /v1/ca/renew on the mTLS listener, authenticated by the current leaf over mTLS. */
export interface RenewRequest {
  csr: string;
}

/** GET /v1/ca (public information). */
export interface CaInfo {
  trustDomain: string;
  roots: string[];
  /** `https://HOST:PORT` of the mTLS listener; "" when it is not running (the CA has no valid issuer). */
  renewUrl: string;
  /** The control plane's own SPIFFE ID, the URI SAN of the mTLS listener's certificate. */
  identity: string;
  leafLifetimeMs: number;
  /** `root`: the fingerprint of the root the issuer chains to. A proxy whose leaf has another issuer renews at once. */
  issuer: { subject: string; notBefore: string; notAfter: string; serial: string; root: string };
  /** Where a root rotation stands. */
  rotation: RotationPhase;
  /** How often a proxy should ask again (ms). */
  pollMs: number;
}

/** The path of the renewal route on the mTLS listener. */
export const CA_RENEW_PATH = '/v1/ca/renew';

/** What the CA reports through its one security-event hook (the audit log, metrics, the log). */
export type SecurityEventType = 'certificate-issued' | 'certificate-renewed' | 'certificate-refused' | 'token-minted' | 'token-used' | 'token-refused' | 'ca-rotation' | 'ca-rotation-refused';

export interface SecurityEvent {
  type: SecurityEventType;
  /** ISO 8601, from the control plane's Clock. */
  time: string;
  /** The identity issued, renewed or asked for. */
  identity?: string;
  proxy?: string;
  services?: string[];
  serial?: string;
  notAfter?: string;
  /**
   * How a certificate was obtained: with a join token, by renewal, the control plane's own
   * (`serving`), or the CA's intermediate replaced by the issuer renewal duty (`intermediate`).
   */
  kind?: 'join' | 'renew' | 'serving' | 'intermediate';
  /** The first 12 hex digits of a join token's SHA-256 (never the token). */
  token?: string;
  /** A refusal's error code and message. */
  code?: string;
  reason?: string;
  /** The caller's address. */
  source?: string;
  /** A root rotation step (done or refused), whether it was forced, and the roots (fingerprints) trusted after it. */
  step?: RotationStep;
  forced?: boolean;
  roots?: string[];
}
