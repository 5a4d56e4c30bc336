/**
 * What a client certificate on the control plane's mTLS listener proves (mtls-listener.ts): the
 * workload identity of a verified leaf of this mesh, or a refusal naming why not (no certificate,
 * a chain that does not reach the mesh's roots, an expired leaf, no valid SPIFFE ID, another
 * trust domain). Read by the renewal route and by the API's access hook (a proxy authenticates
 * with its certificate: docs/security.md).
 */
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { SkeinError } from '../../core/errors.js';
import { peerIdentity } from '../../identity/certs.js';
import type { SpiffeId } from '../../identity/spiffe.js';

/** True for a connection of the mTLS listener (a TLS socket), whatever its client presented. */
export function overMtls(socket: Socket): socket is TLSSocket {
  return (socket as Partial<TLSSocket>).encrypted === true && typeof (socket as Partial<TLSSocket>).getPeerCertificate === 'function';
}

/** Whether the connection presented a client certificate at all. */
export function presentedCertificate(socket: Socket): boolean {
  if (!overMtls(socket)) return false;
  const peer = socket.getPeerCertificate();
  return peer !== null && peer !== undefined && Object.keys(peer).length > 0;
}

/**
 * The identity the connection's client certificate proves; a SkeinError (401) naming why not.
 * `what`: what needs it, for the message ("renewal", "this request").
 */
export function clientIdentity(socket: Socket, trustDomain: string, what: string): SpiffeId {
  if (!presentedCertificate(socket)) {
    throw new SkeinError(
      'SKEIN_E_CLIENT_CERT_REQUIRED',
      overMtls(socket)
        ? `${what} needs a mesh certificate as the TLS client certificate; none was presented`
        : `${what} needs a mesh certificate as the TLS client certificate, on the control plane's mTLS listener (GET /v1/ca: renewUrl), not on its HTTP API`,
    );
  }
  const tls = socket as TLSSocket;
  if (!tls.authorized) {
    const why = String(tls.authorizationError ?? 'unknown reason');
    throw new SkeinError('SKEIN_E_CLIENT_CERT_REFUSED', `the client certificate was refused: ${why}${why === 'CERT_HAS_EXPIRED' ? ' (an expired leaf cannot renew: join again with a new token)' : why.includes('ISSUER') ? " (it does not chain to this mesh's roots)" : ''}`, {
      details: { tls: why },
    });
  }
  const r = peerIdentity(tls.getPeerCertificate().raw);
  if ('error' in r) throw new SkeinError('SKEIN_E_CLIENT_CERT_REFUSED', r.error);
  if (r.id.trustDomain !== trustDomain) throw new SkeinError('SKEIN_E_CLIENT_CERT_REFUSED', `the client certificate is for trust domain "${r.id.trustDomain}", not "${trustDomain}"`);
  return r.id;
}
