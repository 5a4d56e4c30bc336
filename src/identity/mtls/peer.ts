/**
 * What a proxy checks of its peer after a TLS handshake, on either side. Node's own checks are
 * off (`rejectUnauthorized: false`, no `checkServerIdentity`): they ignore URI SANs and let a
 * certificate with two of them through, and a refusal they make is a bare reset whose reason is
 * lost. Instead: the chain must verify against the trusted roots (`socket.authorized`), the
 * certificate must carry exactly one valid SPIFFE ID of this trust domain, and, where the
 * registry says who the peer should be, it must be that identity.
 */
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { peerIdentity } from '../certs.js';
import { refused, VERIFY_ERRORS, type PeerCheck } from './refusal.js';

export type { PeerCheck };

/** Identities of certificates seen lately, by SHA-256 fingerprint: a handshake parses none twice. */
const seen = new Map<string, ReturnType<typeof peerIdentity>>();

function identityOf(cert: PeerCertificate): ReturnType<typeof peerIdentity> {
  const key = cert.fingerprint256;
  let id = seen.get(key);
  if (id === undefined) {
    id = peerIdentity(cert.raw);
    if (seen.size >= 1024) seen.clear();
    seen.set(key, id);
  }
  return id;
}

/**
 * Checks the peer of a TLS socket whose handshake is done. `trustDomain`: the only one accepted;
 * `expected`: the SPIFFE ID the peer must have (null: any identity of the trust domain).
 */
export function checkPeer(socket: TLSSocket, trustDomain: string, expected: string | null): PeerCheck {
  // The plain-object form: Node hands out getPeerX509Certificate() once per socket.
  const cert = socket.getPeerCertificate();
  if (cert === null || cert.raw === undefined) return refused('no-certificate', 'none was sent');
  if (!socket.authorized) {
    const code = String(socket.authorizationError ?? 'unknown');
    return refused(VERIFY_ERRORS[code] ?? 'untrusted', code);
  }
  const id = identityOf(cert);
  if ('error' in id) return refused('bad-identity', id.error);
  if (id.id.trustDomain !== trustDomain) return refused('trust-domain', `${id.identity} is not in ${trustDomain}`);
  if (expected !== null && id.identity !== expected) return refused('wrong-identity', `${id.identity}, expected ${expected}`);
  return { ok: true, identity: id.identity, namespace: id.id.namespace, service: id.id.service };
}
