/**
 * The control plane's mTLS listener: HTTPS (TLS 1.3 only) on its own port, serving the same API
 * as the HTTP listener (the same fastify app: every route, hook and access rule), where a mesh
 * certificate is a credential. Proxies renew their leaves here (POST /v1/ca/renew, authenticated
 * by the leaf being renewed) and announce themselves with their certificate instead of an API
 * token (docs/security.md, "Control-plane tokens"). The TLS stack asks for a client certificate
 * but lets the handshake finish without one (`requestCert: true, rejectUnauthorized: false`), so
 * that a refusal is an answer naming its reason rather than a reset (client-cert.ts).
 *
 * The listener's own certificate is a leaf of the intermediate for the control plane's identity
 * (`spiffe://<td>/ns/skein-system/sa/control`, plus IP 127.0.0.1 and DNS localhost), renewed on the
 * renewal schedule (renewal.ts) and swapped in with setSecureContext. A rotation step swaps the
 * context too: the roots it trusts follow the bundle, and at `switch` its certificate is issued
 * again by the new intermediate.
 */
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { CA_DEFAULTS } from '../../api/ca.js';
import type { Clock, TimerHandle } from '../../core/clock.js';
import { formatHostPort, type HostPort } from '../../core/address.js';
import { createCsr, generateKeyPair } from '../../identity/certs.js';
import { renewalDelayMs } from '../../identity/renewal.js';
import type { CertificateAuthority } from './ca.js';

export interface MtlsListener {
  readonly address: HostPort;
  /** `https://HOST:PORT` */
  readonly url: string;
  close(): Promise<void>;
}

export interface MtlsListenerOptions {
  ca: CertificateAuthority;
  listen: HostPort;
  clock: Clock;
  logger: Logger;
  /** The API's request handler (the fastify app's `routing`). */
  handler: (req: IncomingMessage, res: ServerResponse) => void;
}

async function servingCredentials(ca: CertificateAuthority): Promise<{ key: string; cert: string; notBefore: number; notAfter: number }> {
  const kp = await generateKeyPair();
  const leaf = await ca.issue(ca.controlIdentity, await createCsr(kp.privateKeyPem), { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1', '::1'] }, CA_DEFAULTS.servingLifetimeMs);
  ca.securityEvent({ type: 'certificate-issued', kind: 'serving', identity: leaf.identity, serial: leaf.serial, notAfter: leaf.notAfter.toISOString() });
  return { key: kp.privateKeyPem, cert: [leaf.certPem, ...leaf.chainPem].join(''), notBefore: leaf.notBefore.getTime(), notAfter: leaf.notAfter.getTime() };
}

export async function startMtlsListener(o: MtlsListenerOptions): Promise<MtlsListener> {
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
  const server: Server = createServer(tlsOptions(), o.handler);
  // A handshake that fails (a stray plaintext client, a bad certificate) is the client's problem.
  server.on('tlsClientError', (e: Error) => logger.debug({ err: e.message }, 'mTLS listener: handshake failed'));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.listen.port, o.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const a = server.address();
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
          server.setSecureContext(tlsOptions());
          logger.info({ notAfter: new Date(c.notAfter).toISOString() }, 'mTLS listener certificate renewed');
        })
        .catch((e: unknown) => logger.error({ err: e }, 'mTLS listener certificate could not be renewed; retrying in a minute'))
        .finally(() => {
          if (closed) return;
          if (clock.now() >= creds.notBefore + CA_DEFAULTS.renewNowFraction * (creds.notAfter - creds.notBefore)) timer = clock.setTimeout(schedule, 60_000);
          else schedule();
        });
    }, delay);
  };
  schedule();
  const swap = () => server.setSecureContext(tlsOptions());
  const unsubscribe = ca.subscribe((c) => {
    // A new issuer (a rotation's switch, a worn intermediate replaced): a serving certificate under it.
    if (c.step !== 'switch' && c.step !== 'renew-issuer') {
      swap();
      return;
    }
    servingCredentials(ca)
      .then((next) => {
        creds = next;
        swap();
        logger.info({ notAfter: new Date(next.notAfter).toISOString() }, 'mTLS listener certificate issued by the new intermediate');
      })
      .catch((e: unknown) => {
        swap();
        logger.error({ err: e }, 'mTLS listener certificate could not be issued by the new intermediate; it keeps the old one');
      });
  });
  return {
    address,
    url: `https://${formatHostPort(address.host, address.port)}`,
    close: async () => {
      closed = true;
      unsubscribe();
      timer?.cancel();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
