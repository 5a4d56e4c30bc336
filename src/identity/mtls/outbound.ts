/**
 * The TLS side of an outbound connection: whether a connection to an endpoint is mTLS, with which
 * of the proxy's identities, and what the peer must prove.
 *
 * An endpoint gets mTLS when it is a peer proxy's inbound listener (registered with
 * INBOUND_PROXY_LABEL) and its service's mode is not `off`. The caller presents the identity of
 * the workload whose outbound listener took the request; the peer must present the identity the
 * registry gives the endpoint's service (`spiffe://<td>/ns/default/sa/<service>`). Connections are
 * pooled apart per caller identity (a connection made as one workload never carries another's
 * request), and each (caller, endpoint) keeps its last TLS session ticket to resume with, until a
 * root leaves the trust bundle (a new session epoch of the identities).
 */
import type { ConnectionOptions, TLSSocket } from 'node:tls';
import { INBOUND_PROXY_LABEL } from '../../api/names.js';
import type { MtlsMode } from '../../api/mtls.js';
import type { Endpoint } from '../../discovery/endpoint.js';
import { checkPeer, type PeerCheck } from './peer.js';
import { MESH_TLS, type Identities } from './identities.js';

/** No mTLS connection can be made (strict, and no certificate to present): a refusal of the engine's (its Refusal). */
export interface NoUpstreamTls {
  readonly code: 'SKEIN_E_UPSTREAM_TLS';
  readonly message: string;
}

/** What an upstream connection needs to be mTLS. */
export interface UpstreamTls {
  /** Keeps pools apart: connections made as different callers, or to different peer identities, are never shared. */
  readonly poolKey: string;
  /** The options for `tls.connect` now (the current certificate, a session to resume). */
  options(): ConnectionOptions;
  /** The peer after the handshake. */
  verify(socket: TLSSocket): PeerCheck;
  /** A session ticket the peer sent on a connection that passed `verify`: the next connection resumes with it. */
  remember(session: Buffer): void;
}

class Link implements UpstreamTls {
  private session: Buffer | undefined;
  /** What the last full handshake of this link proved about the peer. */
  private verified: PeerCheck | null = null;
  /** The identities' session epoch the ticket belongs to. */
  private epoch: number;
  readonly poolKey: string;

  constructor(
    private readonly ids: Identities,
    private readonly caller: string,
    private readonly expected: string,
  ) {
    // Apart per caller identity, and per identity the peer must prove: a connection checked as
    // one service's proxy never carries a request for another registered at the same address.
    this.poolKey = `${ids.identityOf(caller)} ${expected}`;
    this.epoch = ids.sessionEpoch;
  }

  options(): ConnectionOptions {
    // A root left the bundle since the ticket was kept: it is not used again (nor what it proved).
    if (this.epoch !== this.ids.sessionEpoch) {
      this.epoch = this.ids.sessionEpoch;
      this.session = undefined;
      this.verified = null;
    }
    const cred = this.ids.credential(this.caller);
    return { secureContext: cred?.context, ...MESH_TLS, checkServerIdentity: () => undefined, ...(this.session === undefined ? {} : { session: this.session }) };
  }

  verify(socket: TLSSocket): PeerCheck {
    // A resumed session carries no certificate on the client's side: it was made by a connection
    // of this link whose peer was checked (only those are remembered), so it is that peer.
    if (socket.isSessionReused() && this.verified !== null) return this.verified;
    const check = checkPeer(socket, this.ids.trustDomain, this.expected);
    if (check.ok) this.verified = check;
    return check;
  }

  remember(session: Buffer): void {
    if (this.verified !== null) this.session = session;
  }
}

export class OutboundTls {
  /** By caller, then by endpoint (Endpoint objects are immutable: a changed endpoint is a new one). */
  private readonly links = new Map<string, WeakMap<Endpoint, Link>>();

  constructor(
    readonly identities: Identities,
    /** The mode of a service (its own, or the mesh's). */
    private readonly modeOf: (service: string) => MtlsMode,
  ) {}

  /**
   * How `caller` connects to `e`: mTLS (the link), plaintext (null), or not at all (a refusal:
   * strict mode and no certificate to present).
   */
  forEndpoint(caller: string, e: Endpoint): UpstreamTls | NoUpstreamTls | null {
    if (e.labels[INBOUND_PROXY_LABEL] !== 'true') return null;
    const mode = this.modeOf(e.service);
    if (mode === 'off') return null;
    if (this.identities.credential(caller) === undefined) {
      if (mode === 'permissive') return null;
      return { code: 'SKEIN_E_UPSTREAM_TLS', message: `this proxy holds no certificate for "${caller}" to present to "${e.service}" (mtls mode strict); see its log for why it has none` };
    }
    let byEndpoint = this.links.get(caller);
    if (byEndpoint === undefined) this.links.set(caller, (byEndpoint = new WeakMap()));
    let l = byEndpoint.get(e);
    if (l === undefined) {
      l = new Link(this.identities, caller, this.identities.identityOf(e.service));
      byEndpoint.set(e, l);
    }
    return l;
  }
}
