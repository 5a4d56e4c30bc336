/**
 * The TLS side of an inbound listener. The first byte of a new connection tells a TLS
 * ClientHello (0x16) from plaintext HTTP, so one port serves both in `permissive` mode; in
 * `strict` mode plaintext is answered with SKEIN_E_MTLS_REQUIRED and closed (never silently
 * served). A TLS connection gets the served service's certificate, must offer the mesh's ALPN
 * value, and must present a client certificate that `checkPeer` accepts; a refused peer gets an
 * HTTP 403 over the TLS connection that names the reason, not a bare reset.
 */
import type { Socket } from 'node:net';
import { createServer, type SecureContext, type Server, type TLSSocket } from 'node:tls';
import { MESH_ALPN, MESH_ALPNS, type MtlsMode, type TlsRefusal } from '../../api/mtls.js';
import { errorResponse } from '../http1/local-reply.js';
import { checkPeer } from '../../identity/mtls/peer.js';
import { handshakeRefusal, type PeerCheck } from '../../identity/mtls/refusal.js';
import { MESH_TLS, secureContextOptions, type Identities } from '../../identity/mtls/identities.js';

/** Who is on the other end of an inbound connection. */
export interface PeerIdentity {
  /** The caller's verified SPIFFE ID. */
  readonly identity: string;
  /** Its namespace and service (from the ID's `/ns/<ns>/sa/<service>`), or null for another shape of ID. */
  readonly namespace: string | null;
  readonly service: string | null;
}

export interface InboundTls {
  /** The service's mode now (its definition may change it while the listener runs). */
  readonly mode: () => MtlsMode;
  readonly service: string;
  readonly identities: Identities;
  /** Bounds the first byte and the handshake (the listener's header timeout). */
  readonly handshakeTimeoutMs: number;
  readonly onRefused: (reason: TlsRefusal, detail: string, peer: string) => void;
  /** Counts each accepted connection by what it carries. */
  readonly onAccepted: (kind: 'mtls' | 'plaintext') => void;
}

const TLS_HANDSHAKE = 0x16;

function refuse(socket: Socket, check: Extract<PeerCheck, { ok: false }>, code: 'SKEIN_E_MTLS_REQUIRED' | 'SKEIN_E_MTLS_REFUSED'): void {
  socket.end(errorResponse(code, check.detail, { close: true, origin: 'inbound', details: { reason: check.reason } }), 'latin1');
  socket.setTimeout(1000, () => socket.destroy());
}

/**
 * The TLS server of one inbound listener. Sockets are handed to a `tls.Server` (which does the
 * client-certificate verification, session tickets and ALPN) without it listening itself. Its
 * context follows the served service's certificate: swapped, with every option, at the first
 * connection after a renewal; connections already open keep theirs.
 */
export class InboundTlsServer {
  private readonly server: Server;
  /** The credential context the server's context was last built from. */
  private context: SecureContext | null = null;

  constructor(
    private readonly tls: InboundTls,
    private readonly serve: (s: Socket, peer: PeerIdentity | null) => void,
  ) {
    // allowHalfOpen: a caller's FIN leaves the answer's direction open (a TCP stream's half-close;
    // the HTTP/1 driver closes a half-closed connection itself, as on a plaintext listener).
    this.server = createServer({ requestCert: true, allowHalfOpen: true, ...MESH_TLS });
    this.server.on('secureConnection', (t: TLSSocket) => this.secured(t));
    this.server.on('tlsClientError', (e: Error & { code?: string }, t: TLSSocket) => {
      const check = handshakeRefusal(e) as Extract<PeerCheck, { ok: false }>;
      tls.onRefused(check.reason, check.detail, t.remoteAddress ?? '');
      t.destroy();
    });
  }

  /** Takes a new connection through the mode's rules. */
  accept(socket: Socket): void {
    const tls = this.tls;
    const mode = tls.mode();
    if (mode === 'off') {
      this.serve(socket, null);
      return;
    }
    const peerAddr = socket.remoteAddress ?? '';
    socket.setTimeout(tls.handshakeTimeoutMs, () => socket.destroy());
    socket.on('error', () => socket.destroy());
    socket.once('data', (first: Buffer) => {
      socket.pause();
      socket.unshift(first);
      if (first[0] !== TLS_HANDSHAKE) {
        if (mode === 'permissive') {
          socket.setTimeout(0);
          tls.onAccepted('plaintext');
          this.serve(socket, null);
          socket.resume();
          return;
        }
        const check = { ok: false, reason: 'plaintext', detail: `this port of "${tls.service}" takes mutual TLS only (mtls mode strict): plaintext refused` } as const;
        tls.onRefused(check.reason, check.detail, peerAddr);
        refuse(socket, check, 'SKEIN_E_MTLS_REQUIRED');
        return;
      }
      const cred = tls.identities.credential(tls.service);
      if (cred === undefined) {
        tls.onRefused('no-identity', `no certificate for "${tls.service}" yet`, peerAddr);
        socket.destroy();
        return;
      }
      if (cred.context !== this.context) {
        // A renewed leaf, or a new trust bundle (rotation): every option again.
        this.server.setSecureContext(secureContextOptions(cred, tls.identities.ticketKeys));
        this.context = cred.context;
      }
      this.server.emit('connection', socket);
    });
  }

  private secured(t: TLSSocket): void {
    const tls = this.tls;
    t.setTimeout(0);
    const check: PeerCheck =
      typeof t.alpnProtocol === 'string' && MESH_ALPNS.includes(t.alpnProtocol) ? checkPeer(t, tls.identities.trustDomain, null) : { ok: false, reason: 'handshake', detail: `the client did not offer ALPN "${MESH_ALPN}": not a proxy of the mesh` };
    if (!check.ok) {
      tls.onRefused(check.reason, check.detail, t.remoteAddress ?? '');
      t.on('error', () => t.destroy());
      refuse(t, check, 'SKEIN_E_MTLS_REFUSED');
      return;
    }
    tls.onAccepted('mtls');
    this.serve(t, { identity: check.identity, namespace: check.namespace, service: check.service });
  }
}
