/**
 * Mutual TLS between proxies: the modes, the mesh's ALPN value, the header that carries a caller's
 * verified identity to the app, and the reasons a TLS connection is refused (metrics labels, log
 * fields and error messages use these words). See docs/security.md.
 */

import { Enum, Obj } from './fields.js';

/** `strict`: mTLS only; `permissive`: mTLS and plaintext (counted, for migration); `off`: plaintext. */
export const MTLS_MODES = ['strict', 'permissive', 'off'] as const;
export type MtlsMode = (typeof MTLS_MODES)[number];

/** A service's own mode (a Service's and a mesh-file service's `mtls`), over the mesh's. */
export const MtlsFields = {
  mtls: Obj(
    { mode: Enum(MTLS_MODES, 'strict: its inbound takes mTLS only; permissive: mTLS and plaintext (counted), for migrating; off: plaintext. Unset: the mesh\'s mode (skein proxy/up --mtls).') },
    "How the service's callers reach it: its own mTLS mode, over the mesh's (docs/security.md#mtls-modes).",
  ),
};

/**
 * The mode of a mesh that says nothing: `off` for a bare `skein proxy` without a CA, which has no
 * identity to present; `skein up` turns it to `strict` (its CA issues every proxy's identities).
 */
export const MTLS_DEFAULT_MODE: MtlsMode = 'off';
/** What `skein up` runs its mesh with unless told otherwise. */
export const MTLS_UP_MODE: MtlsMode = 'strict';

/** The environment variables of a workload's mTLS: the mesh's mode (`skein up` sets it for its services) and its join token. */
export const MTLS_ENV = 'SKEIN_MTLS';
export const JOIN_TOKEN_ENV = 'SKEIN_JOIN_TOKEN';

/**
 * The ALPN protocol a meshed proxy offers and an inbound listener requires: it tells a peer proxy
 * from a stray TLS client (Istio's `istio-peer-exchange`, Linkerd's `transport.l5d.io/v1`).
 */
export const MESH_ALPN = 'skein-mesh/1';

/**
 * skein-mesh/1 and, on a TCP stream, the inbound proxy's status before its app's first byte
 * (src/proxy/tcp/peer-status.ts). Proxies offer and take both, this first: a proxy of an older
 * release (/1 only) still talks to a newer one during an upgrade, without the status.
 */
export const MESH_ALPN_STATUS = 'skein-mesh/2';

/** What a proxy offers and an inbound listener takes, preferred first. */
export const MESH_ALPNS: readonly string[] = Object.freeze([MESH_ALPN_STATUS, MESH_ALPN]);

/** The header an inbound proxy sets to the caller's verified SPIFFE ID (any copy the request carried is removed). */
export const CLIENT_ID_HEADER = 'x-skein-client-id';

/** Why a TLS connection between proxies was refused: the `reason` label and log field. */
export const TLS_REFUSALS = {
  'no-certificate': 'the peer presented no certificate',
  expired: 'the peer certificate has expired (or is not yet valid)',
  'unknown-issuer': 'the peer certificate was not issued by a root this proxy trusts',
  untrusted: 'the peer certificate chain does not verify',
  'bad-identity': 'the peer certificate does not carry exactly one valid SPIFFE ID',
  'trust-domain': "the peer's identity belongs to another trust domain",
  'wrong-identity': 'the peer is not the identity the registry says the endpoint has',
  plaintext: 'a plaintext connection reached a port that takes mTLS only',
  'no-identity': 'this proxy holds no certificate for the caller to present',
  handshake: 'the TLS handshake failed',
} as const;
export type TlsRefusal = keyof typeof TLS_REFUSALS;
