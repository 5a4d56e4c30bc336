/**
 * mTLS with `skein proxy --workers N`: the main thread holds the proxy's join token and a set of
 * identities of its own (one certificate per service, proven once by the token); each worker's
 * Identities gets its certificates through a CertificateSource proxied over its MessagePort
 * (`MainThreadCa`), which the main thread answers (`answerCa`) by renewing with its own
 * certificate of the service: every worker holds its own key (made in its thread, never sent),
 * the join token is spent once, and renewals, trust polls and the workers' calls to the control
 * plane's API go through the main thread. The CA issues N + 1 certificates per service.
 *
 * TLS session tickets: every worker's contexts use the main thread's ticket keys (WorkerInit), so
 * a session made with one worker resumes on another. Only the main thread rotates them: a trust
 * poll's answer is applied to its identities before it goes to the worker, so a worker that sees
 * a root leave the bundle already holds the keys made after it.
 */
import type { IssuedCertificate, CaInfo } from '../../api/ca.js';
import type { CertificateSource, ControlAnswer, Credential, Identities } from '../../identity/mtls/identities.js';

/** A worker's question to the main thread's CA (only services and CSRs: a Credential's key stays in its thread). */
export type CaQuestion =
  | { readonly op: 'issue'; readonly requests: ReadonlyArray<{ service: string; csr: string }> }
  | { readonly op: 'renew'; readonly service: string; readonly csr: string }
  | { readonly op: 'info'; readonly fresh: boolean }
  | { readonly op: 'request'; readonly service: string; readonly method: string; readonly path: string; readonly body?: unknown };

export type CaAnswer = IssuedCertificate[] | IssuedCertificate | CaInfo | ControlAnswer;

/** The worker's side: a CertificateSource whose every call is a question to the main thread. */
export class MainThreadCa implements CertificateSource {
  constructor(private readonly ask: (q: CaQuestion) => Promise<CaAnswer>) {}

  async issue(requests: ReadonlyArray<{ service: string; csr: string }>): Promise<IssuedCertificate[]> {
    return (await this.ask({ op: 'issue', requests: requests.map((r) => ({ service: r.service, csr: r.csr })) })) as IssuedCertificate[];
  }

  async renew(current: Credential, csr: string): Promise<IssuedCertificate> {
    return (await this.ask({ op: 'renew', service: current.service, csr })) as IssuedCertificate;
  }

  async info(fresh: boolean): Promise<CaInfo> {
    return (await this.ask({ op: 'info', fresh })) as CaInfo;
  }

  async request(current: Credential, method: string, path: string, body?: unknown): Promise<ControlAnswer> {
    return (await this.ask({ op: 'request', service: current.service, method, path, ...(body === undefined ? {} : { body }) })) as ControlAnswer;
  }
}

/** The main thread's side: answers a worker with the real source, proven by the main thread's certificate of the service. */
export async function answerCa(source: CertificateSource, identities: Identities, q: CaQuestion): Promise<CaAnswer> {
  const proof = (service: string) => {
    const c = identities.credential(service);
    if (c === undefined) throw new Error(`the proxy holds no certificate for service "${service}" (its join token was bound to ${identities.list().map((x) => x.service).join(', ') || 'none'})`);
    return c;
  };
  switch (q.op) {
    case 'issue':
      return Promise.all(q.requests.map((r) => source.renew(proof(r.service), r.csr)));
    case 'renew':
      return source.renew(proof(q.service), q.csr);
    case 'info': {
      if (source.info === undefined) throw new Error('the mesh CA answers no trust polls');
      const info = await source.info(q.fresh);
      // Applied here first: a root that left rotates the main thread's session-ticket keys, which
      // reach every worker before this answer does (ProxyWorkers.shareTicketKeys).
      identities.trust(info);
      return info;
    }
    case 'request':
      if (source.request === undefined) throw new Error('the mesh CA takes no calls with a certificate');
      return source.request(proof(q.service), q.method, q.path, q.body);
  }
}
