/**
 * The CA's renewal listener: HTTPS (TLS 1.3 only) on its own port, where a proxy renews a leaf
 * with the leaf it still holds. The TLS stack asks for a client certificate but lets the handshake
 * finish without one (`requestCert: true, rejectUnauthorized: false`), so that a refusal is an
 * answer naming its reason rather than a reset: no certificate, a chain that does not reach the
 * mesh's roots (a foreign CA presenting the same SPIFFE ID), an expired leaf (OpenSSL's
 * `CERT_HAS_EXPIRED`), or a certificate that names no valid workload identity (peerIdentity).
 * A renewal gets a new leaf for the identity of the presented certificate only.
 *
 * The listener's own certificate is a leaf of the intermediate for the control plane's identity
 * (`spiffe://<td>/ns/skein-system/sa/control`, plus IP 127.0.0.1 and DNS localhost), renewed on the
 * renewal schedule (renewal.ts) and swapped in with setSecureContext. A rotation step swaps the
 * context too: the roots it trusts follow the bundle, and at `switch` its certificate is issued
 * again by the new intermediate.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { CA_DEFAULTS, CA_RENEW_PATH } from '../../api/ca.js';
import type { Clock, TimerHandle } from '../../core/clock.js';
import { formatHostPort, type HostPort } from '../../core/address.js';
import { SkeinError } from '../../core/errors.js';
import { createCsr, generateKeyPair, peerIdentity } from '../../identity/certs.js';
import { renewalDelayMs } from '../../identity/renewal.js';
import type { SpiffeId } from '../../identity/spiffe.js';
import { sendError, toSkeinError } from '../api/errors.js';
import type { CertificateAuthority } from './ca.js';

export interface RenewServer {
  readonly address: HostPort;
  /** `https://HOST:PORT` */
  readonly url: string;
  close(): Promise<void>;
}

export interface RenewServerOptions {
  ca: CertificateAuthority;
  listen: HostPort;
  clock: Clock;
  logger: Logger;
}

async function servingCredentials(ca: CertificateAuthority): Promise<{ key: string; cert: string; notBefore: number; notAfter: number }> {
  const kp = await generateKeyPair();
  const leaf = await ca.issue(ca.controlIdentity, await createCsr(kp.privateKeyPem), { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1', '::1'] }, CA_DEFAULTS.servingLifetimeMs);
  ca.securityEvent({ type: 'certificate-issued', kind: 'serving', identity: leaf.identity, serial: leaf.serial, notAfter: leaf.notAfter.toISOString() });
  return { key: kp.privateKeyPem, cert: [leaf.certPem, ...leaf.chainPem].join(''), notBefore: leaf.notBefore.getTime(), notAfter: leaf.notAfter.getTime() };
}

function parseRenewBody(body: unknown): string {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new SkeinError('SKEIN_E_VALIDATION', 'the body must be an object {csr}', { field: 'body' });
  for (const k of Object.keys(body)) if (k !== 'csr') throw new SkeinError('SKEIN_E_VALIDATION', `${k} is not a known field (csr)`, { field: k });
  const csr = (body as { csr?: unknown }).csr;
  if (typeof csr !== 'string') throw new SkeinError('SKEIN_E_VALIDATION', 'csr must be a PEM certificate request (a string)', { field: 'csr' });
  return csr;
}

/** The identity the connection's client certificate proves, or a refusal naming why not. */
function clientIdentity(socket: TLSSocket, trustDomain: string): SpiffeId {
  const peer = socket.getPeerCertificate();
  if (peer === null || peer === undefined || Object.keys(peer).length === 0) {
    throw new SkeinError('SKEIN_E_CLIENT_CERT_REQUIRED', 'renewal needs the current certificate as the TLS client certificate; none was presented');
  }
  if (!socket.authorized) {
    const why = String(socket.authorizationError ?? 'unknown reason');
    throw new SkeinError('SKEIN_E_CLIENT_CERT_REFUSED', `the client certificate was refused: ${why}${why === 'CERT_HAS_EXPIRED' ? ' (an expired leaf cannot renew: join again with a new token)' : why.includes('ISSUER') ? " (it does not chain to this mesh's roots)" : ''}`, {
      details: { tls: why },
    });
  }
  const r = peerIdentity(peer.raw);
  if ('error' in r) throw new SkeinError('SKEIN_E_CLIENT_CERT_REFUSED', r.error);
  if (r.id.trustDomain !== trustDomain) throw new SkeinError('SKEIN_E_CLIENT_CERT_REFUSED', `the client certificate is for trust domain "${r.id.trustDomain}", not "${trustDomain}"`);
  return r.id;
}

export async function startRenewServer(o: RenewServerOptions): Promise<RenewServer> {
  const { ca, clock, logger } = o;
  let creds = await servingCredentials(ca);
  const tlsOptions = () => ({
    key: creds.key,
    cert: creds.cert,
    ca: [...ca.roots],
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: 'TLSv1.3' as const,
  });
  const app: FastifyInstance = Fastify({ https: tlsOptions(), logger: false, bodyLimit: 64 * 1024, forceCloseConnections: true }) as unknown as FastifyInstance;
  app.setErrorHandler((e, _req, reply) => {
    const se = toSkeinError(e);
    if (se.code === 'SKEIN_E_INTERNAL') logger.error({ err: e }, 'renewal: internal error');
    void sendError(reply, se);
  });
  app.setNotFoundHandler((req, reply) => {
    void sendError(reply, new SkeinError('SKEIN_E_NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]} on the renewal listener (only POST ${CA_RENEW_PATH})`));
  });
  app.post(CA_RENEW_PATH, async (req, reply) => {
    const source = req.socket.remoteAddress;
    let identity: string | undefined;
    try {
      const id = clientIdentity(req.socket as TLSSocket, ca.trustDomain);
      identity = id.uri;
      const csr = parseRenewBody(req.body);
      ca.assertCanIssue();
      const leaf = await ca.issue(identity, csr);
      ca.securityEvent({ type: 'certificate-renewed', kind: 'renew', identity, serial: leaf.serial, notAfter: leaf.notAfter.toISOString(), ...(source === undefined ? {} : { source }) });
      return reply.code(201).send(ca.wire(leaf, id.service ?? undefined));
    } catch (e) {
      const se = toSkeinError(e);
      ca.refused('certificate-refused', se, { kind: 'renew', ...(identity === undefined ? {} : { identity }), ...(source === undefined ? {} : { source }) });
      throw se;
    }
  });
  await app.listen({ host: o.listen.host, port: o.listen.port });
  const a = app.server.address();
  const address: HostPort = { host: o.listen.host, port: a !== null && typeof a === 'object' ? a.port : o.listen.port };

  // The serving certificate is renewed like a proxy's leaf; setSecureContext resets every option
  // it is not given, so it gets them all.
  let timer: TimerHandle | null = null;
  let closed = false;
  const schedule = () => {
    if (closed) return;
    const delay = renewalDelayMs(creds.notBefore, creds.notAfter, clock.now(), Math.random);
    timer = clock.setTimeout(() => {
      servingCredentials(ca)
        .then((c) => {
          creds = c;
          (app.server as unknown as { setSecureContext(o: object): void }).setSecureContext(tlsOptions());
          logger.info({ notAfter: new Date(c.notAfter).toISOString() }, 'renewal listener certificate renewed');
        })
        .catch((e: unknown) => logger.error({ err: e }, 'renewal listener certificate could not be renewed; retrying in a minute'))
        .finally(() => {
          if (closed) return;
          if (clock.now() >= creds.notBefore + CA_DEFAULTS.renewNowFraction * (creds.notAfter - creds.notBefore)) timer = clock.setTimeout(schedule, 60_000);
          else schedule();
        });
    }, delay);
  };
  schedule();
  const swap = () => (app.server as unknown as { setSecureContext(o: object): void }).setSecureContext(tlsOptions());
  const unsubscribe = ca.subscribe((c) => {
    if (c.step !== 'switch') {
      swap();
      return;
    }
    servingCredentials(ca)
      .then((next) => {
        creds = next;
        swap();
        logger.info({ notAfter: new Date(next.notAfter).toISOString() }, 'renewal listener certificate issued by the new intermediate');
      })
      .catch((e: unknown) => {
        swap();
        logger.error({ err: e }, 'renewal listener certificate could not be issued by the new intermediate; it keeps the old one');
      });
  });
  return {
    address,
    url: `https://${formatHostPort(address.host, address.port)}`,
    close: async () => {
      closed = true;
      unsubscribe();
      timer?.cancel();
      await app.close();
    },
  };
}
