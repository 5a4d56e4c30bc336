/**
 * The CA's defaults and the wire formats of its API (/v1/ca on the control plane's HTTP API and
 * /v1/ca/renew on its mTLS listener), shared by the control plane, the proxy and the CLI.
 * docs/security.md describes them.
 */

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
  /** The control plane's serving certificate on the renewal listener, ms (capped at the issuer's expiry). */
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
});

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

/** POST /v1/ca/renew on the renewal listener, authenticated by the current leaf over mTLS. */
export interface RenewRequest {
  csr: string;
}

/** GET /v1/ca (public information). */
export interface CaInfo {
  trustDomain: string;
  roots: string[];
  /** `https://HOST:PORT` of the renewal listener; "" when it is not running (the CA has no valid issuer). */
  renewUrl: string;
  /** The control plane's own SPIFFE ID, the URI SAN of the renewal listener's certificate. */
  identity: string;
  leafLifetimeMs: number;
  issuer: { subject: string; notBefore: string; notAfter: string; serial: string };
}

/** The path of the renewal route on the renewal listener. */
export const CA_RENEW_PATH = '/v1/ca/renew';

/** What the CA reports through its one security-event hook (the audit log, metrics, the log). */
export type SecurityEventType = 'certificate-issued' | 'certificate-renewed' | 'certificate-refused' | 'token-minted' | 'token-used' | 'token-refused';

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
  /** How a certificate was obtained: with a join token, by renewal, or the control plane's own. */
  kind?: 'join' | 'renew' | 'serving';
  /** The first 12 hex digits of a join token's SHA-256 (never the token). */
  token?: string;
  /** A refusal's error code and message. */
  code?: string;
  reason?: string;
  /** The caller's address. */
  source?: string;
}
