/**
 * Watching an mTLS connect to a peer proxy, the same for every driver (the HTTP/1 upstream, the
 * TCP stream, the SDK's connector). Light on purpose: it imports types only, so that a proxy with
 * mTLS off loads no certificate module (src/proxy/tls/lazy.test.ts).
 */
import type { TLSSocket } from 'node:tls';
import type { UpstreamTls } from './outbound.js';
import type { PeerCheck } from './peer.js';

/** An mTLS connect in progress (`watchHandshake`): TCP is up and the TLS handshake is not done (an 'error' now is the handshake's: handshakeRefusal). */
export interface HandshakeWatch {
  readonly handshaking: boolean;
}

/**
 * Watches an mTLS connect over `link`, the same for every driver: once TCP is up the handshake
 * begins (Nagle off); once it is done the peer is checked (`done` with the check); the session
 * tickets the peer sends are kept for the next connect. The caller handles errors and timeouts,
 * asking the watch whether the handshake was under way.
 */
export function watchHandshake(socket: TLSSocket, link: UpstreamTls, done: (check: PeerCheck) => void): HandshakeWatch {
  const w = { handshaking: false };
  socket.once('connect', () => {
    w.handshaking = true;
    socket.setNoDelay(true);
  });
  socket.once('secureConnect', () => {
    w.handshaking = false;
    done(link.verify(socket));
  });
  socket.on('session', (t: Buffer) => link.remember(t));
  return w;
}
