/**
 * Why a TLS connection between proxies was refused, as the proxy reports it (metrics labels, log
 * fields, error messages: TLS_REFUSALS). Apart from peer.ts, which parses certificates
 * (src/identity/certs.ts: @peculiar/x509), because every proxy's upstream connections need
 * `handshakeRefusal` and only a proxy with mTLS on needs the certificate parsing: a plaintext
 * proxy does not load it (its memory: docs/benchmarks.md, "Memory after (issue 16)").
 */
import { TLS_REFUSALS, type TlsRefusal } from '../../api/mtls.js';

export type PeerCheck =
  | { readonly ok: true; readonly identity: string; readonly namespace: string | null; readonly service: string | null }
  | { readonly ok: false; readonly reason: TlsRefusal; readonly detail: string };

/** OpenSSL's verification codes, by the refusal they are. */
export const VERIFY_ERRORS: Readonly<Record<string, TlsRefusal>> = {
  CERT_HAS_EXPIRED: 'expired',
  CERT_NOT_YET_VALID: 'expired',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'unknown-issuer',
  UNABLE_TO_GET_ISSUER_CERT: 'unknown-issuer',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'unknown-issuer',
  SELF_SIGNED_CERT_IN_CHAIN: 'unknown-issuer',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'unknown-issuer',
  // Names a trusted issuer but was not signed by it: another CA's certificate (or a forgery).
  CERT_SIGNATURE_FAILURE: 'unknown-issuer',
};

/** A refusal: its reason, and a detail that starts with the reason's sentence. */
export function refused(reason: TlsRefusal, detail: string): PeerCheck {
  return { ok: false, reason, detail: `${TLS_REFUSALS[reason]}: ${detail}` };
}

/** The refusal a handshake error is (the error Node gives when the handshake itself fails). */
export function handshakeRefusal(err: Error & { code?: string }): PeerCheck {
  const code = err.code ?? '';
  if (code in VERIFY_ERRORS) return refused(VERIFY_ERRORS[code] as TlsRefusal, code);
  return refused('handshake', `${code === '' ? '' : `${code}: `}${err.message}`);
}
