/**
 * The SDK's mTLS: the proxy's own code (src/proxy/tls), driven from the app's process. The SDK
 * holds one workload identity (`spiffe://<td>/ns/default/sa/<service>`): it makes its key, spends
 * its join token on the first certificate (ControlCa, as `skein proxy --join-token` does), renews
 * it and follows the CA's trust bundle (Identities), and connects to a peer's inbound proxy with
 * mTLS when the peer's service mode asks for it, checking that the peer is the identity the
 * registry gives the endpoint (OutboundTls). Nothing here is TLS logic of its own: it only turns
 * a Link into an undici connector and a TLS refusal into the error the Call reports.
 *
 * Loaded only with mTLS on (its modules parse certificates: docs/benchmarks.md, "Memory after
 * (issue 16)").
 */
import { randomBytes } from 'node:crypto';
import { connect as tlsConnect } from 'node:tls';
import type { Socket } from 'node:net';
import type { buildConnector } from 'undici';
import type { MtlsMode } from '../api/mtls.js';
import { SdkTlsRefused } from './request.js';
import { Backoff, type Rng } from '../core/backoff.js';
import type { Clock } from '../core/clock.js';
import type { ControlReplicas } from '../discovery/control-replicas.js';
import type { Endpoint } from '../discovery/endpoint.js';
import type { WatchLogger } from '../discovery/watch-client.js';
import type { Refusal } from '../engine/service-client.js';
import { ControlCa } from '../identity/mtls/ca-client.js';
import { Identities, type IdentityEvent } from '../identity/mtls/identities.js';
import { OutboundTls, type UpstreamTls } from '../identity/mtls/outbound.js';
import { watchHandshake } from '../identity/mtls/handshake.js';
import { handshakeRefusal } from '../identity/mtls/refusal.js';
import type { ControlCall } from '../telemetry/announce.js';
import type { WorkloadTls } from '../api/ca.js';

export interface SdkTlsOptions {
  readonly control: ControlReplicas;
  /** The identity the SDK holds: its service's. */
  readonly service: string;
  readonly joinToken: string;
  /** The mode of a destination service (its own, over the SDK's `mtls.mode`). */
  readonly modeOf: (service: string) => MtlsMode;
  readonly clock: Clock;
  readonly rng: Rng;
  readonly logger?: WatchLogger | undefined;
}

export class SdkTls {
  /** The SDK's identity; until GET /v1/ca named the trust domain, one that holds nothing. */
  identities: Identities;
  private outbound: OutboundTls;
  private readonly source: ControlCa;
  private stopped = false;
  private retry: NodeJS.Timeout | null = null;
  /** Settles once the certificate is held. */
  readonly held: Promise<void>;

  constructor(private readonly o: SdkTlsOptions) {
    // As `skein proxy --join-token`: the token buys the first certificate; renewals prove the certificate itself.
    this.source = new ControlCa({ control: o.control, joinToken: async () => o.joinToken });
    this.identities = this.identitiesOf('');
    this.outbound = new OutboundTls(this.identities, o.modeOf);
    this.held = this.obtain();
    // Seen by ready(); not a crash of the app.
    this.held.catch(() => undefined);
  }

  private identitiesOf(trustDomain: string): Identities {
    return new Identities({ source: this.source, trustDomain, clock: this.o.clock, rng: this.o.rng, ticketKeys: randomBytes(48), onEvent: (e) => this.event(e) });
  }

  /** Asks for the trust domain, then the certificate, until the CA answers (with backoff while the control plane is away). */
  private async obtain(): Promise<void> {
    const backoff = new Backoff({ baseMs: 500, capMs: 30_000, rng: this.o.rng });
    for (;;) {
      if (this.stopped) throw new Error('the SDK was closed');
      try {
        if (this.identities.trustDomain === '') {
          const info = await this.source.info(true);
          if (this.stopped) throw new Error('the SDK was closed');
          this.identities = this.identitiesOf(info.trustDomain);
          this.outbound = new OutboundTls(this.identities, this.o.modeOf);
        }
        await this.identities.obtain([this.o.service]);
        this.identities.startTrustPolling();
        return;
      } catch (e) {
        if (this.stopped) throw e;
        const waitMs = backoff.next();
        this.o.logger?.warn({ service: this.o.service, err: (e as Error).message, retryInMs: waitMs }, 'the SDK could not get its mesh certificate; asking again');
        await new Promise<void>((r) => {
          this.retry = setTimeout(r, waitMs);
          this.retry.unref();
        });
      }
    }
  }

  private event(e: IdentityEvent): void {
    const log = this.o.logger;
    if (log === undefined) return;
    if (e.type === 'issued' || e.type === 'renewed') log.info({ identity: e.identity, serial: e.serial, notAfter: new Date(e.notAfter).toISOString() }, `the SDK ${e.type === 'issued' ? 'got' : 'renewed'} its mesh certificate`);
    else if (e.type === 'renewal-failed') log.warn({ identity: e.identity, err: e.error, retryInMs: e.retryInMs }, 'renewing the SDK\'s mesh certificate failed');
    else if (e.type === 'trust') log.info({ roots: e.roots, removed: e.removed }, 'trust bundle changed');
    else if (e.type === 'trust-poll-failed') log.warn({ err: e.error }, 'could not ask the mesh CA for its trust bundle (asking again later)');
  }

  /** How the SDK connects to `e`: mTLS (the link), plaintext (null), or not at all (strict, and no certificate yet). */
  forEndpoint(e: Endpoint): UpstreamTls | Refusal | null {
    return this.outbound.forEndpoint(this.o.service, e);
  }

  /** What the announcement says of the SDK's certificate (null: none held). */
  report(): WorkloadTls | null {
    return this.identities.report(this.o.service);
  }

  /** The control plane's API with the SDK's certificate (its announcements); null while it holds none. */
  controlCall(): ControlCall | null {
    return this.identities.controlCall();
  }

  stop(): void {
    this.stopped = true;
    if (this.retry !== null) clearTimeout(this.retry);
    this.identities.stop();
  }
}

/**
 * An undici connector that makes an mTLS connection to `e` over `link` (the proxy's Upstream does
 * the same for its own connections): the socket is handed to undici once the peer passed the
 * link's check; a refused peer or a failed handshake is an SdkTlsRefused with the proxy's reason.
 */
export function meshConnector(e: Endpoint, link: UpstreamTls, timeoutMs: number): buildConnector.connector {
  return (_opts, callback) => {
    const socket = tlsConnect({ host: e.address, port: e.port, ...link.options() });
    let done = false;
    const finish = (err: Error | null) => {
      if (done) return;
      done = true;
      socket.setTimeout(0);
      if (err === null) callback(null, socket as Socket);
      else {
        socket.destroy();
        callback(err, null);
      }
    };
    const hs = watchHandshake(socket, link, (check) => finish(check.ok ? null : new SdkTlsRefused(check.reason, check.detail)));
    socket.setTimeout(timeoutMs, () => finish(new Error(`${hs.handshaking ? 'TLS handshake' : 'connect'} timeout after ${timeoutMs} ms`)));
    socket.once('error', (err: Error & { code?: string }) => {
      if (!hs.handshaking) return finish(err);
      const r = handshakeRefusal(err);
      finish(r.ok ? err : new SdkTlsRefused(r.reason, r.detail));
    });
  };
}
