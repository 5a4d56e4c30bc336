/**
 * The proxy's side of the mesh CA (the control plane's /v1/ca API, docs/security.md): first
 * certificates with a join token over the control plane's HTTP API, renewals over mTLS on the
 * CA's renewal listener, authenticated by the certificate being renewed. The renewal listener
 * must present the control plane's own SPIFFE ID, checked like any peer (peer.ts).
 */
import { request } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { CA_RENEW_PATH, type CaInfo, type IssuedCertificate, type IssueManyResponse } from '../../api/ca.js';
import { parseSpiffeId } from '../../identity/spiffe.js';
import { checkPeer } from './peer.js';
import { pemBundle, type CertificateSource, type Credential } from './identities.js';

export interface ControlCaOptions {
  readonly controlUrl: string;
  /** A join token bound to the services asked for (`skein up` mints one per request; `skein proxy` has the one it was given). */
  readonly joinToken: (services: readonly string[]) => Promise<string>;
  /** Bounds each call to the CA. Default 10 s. */
  readonly timeoutMs?: number;
}

/** An error answer of the control plane: its code and message. */
async function failure(res: Response, what: string): Promise<Error> {
  const text = await res.text();
  let detail = text.slice(0, 400);
  try {
    const body = JSON.parse(text) as { code?: string; message?: string };
    if (typeof body.message === 'string') detail = `${body.message}${body.code === undefined ? '' : ` [${body.code}]`}`;
  } catch {
    /* not JSON: the text as it came */
  }
  return new Error(`${what}: HTTP ${res.status}: ${detail}`);
}

export class ControlCa implements CertificateSource {
  private cached: CaInfo | null = null;
  private readonly timeoutMs: number;

  constructor(private readonly o: ControlCaOptions) {
    this.timeoutMs = o.timeoutMs ?? 10_000;
  }

  /** GET /v1/ca: the trust domain, roots and renewal address (fetched again with `fresh`). */
  async info(fresh = false): Promise<CaInfo> {
    if (this.cached !== null && !fresh) return this.cached;
    const res = await fetch(`${this.o.controlUrl}/v1/ca`, { signal: AbortSignal.timeout(this.timeoutMs) });
    if (!res.ok) throw await failure(res, `GET ${this.o.controlUrl}/v1/ca`);
    this.cached = (await res.json()) as CaInfo;
    return this.cached;
  }

  async issue(requests: ReadonlyArray<{ service: string; csr: string }>): Promise<IssuedCertificate[]> {
    const token = await this.o.joinToken(requests.map((r) => r.service));
    const res = await fetch(`${this.o.controlUrl}/v1/ca/certificates`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ requests }),
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    if (!res.ok) throw await failure(res, 'the mesh CA refused the certificates');
    return ((await res.json()) as IssueManyResponse).certificates;
  }

  async renew(current: Credential, csr: string): Promise<IssuedCertificate> {
    const info = await this.info();
    const url = new URL(CA_RENEW_PATH, info.renewUrl);
    const body = JSON.stringify({ csr });
    const trustDomain = parseSpiffeId(info.identity).trustDomain;
    return await new Promise<IssuedCertificate>((resolve, reject) => {
      const req = request(
        url,
        {
          method: 'POST',
          key: current.keyPem,
          cert: pemBundle([current.certPem, ...current.chainPem]),
          ca: [...current.roots],
          minVersion: 'TLSv1.3',
          rejectUnauthorized: false,
          checkServerIdentity: () => undefined,
          agent: false,
          timeout: this.timeoutMs,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            if (res.statusCode !== 200 && res.statusCode !== 201) {
              reject(new Error(`the mesh CA refused the renewal: HTTP ${res.statusCode}: ${text.slice(0, 400)}`));
              return;
            }
            try {
              resolve(JSON.parse(text) as IssuedCertificate);
            } catch (e) {
              reject(new Error(`the mesh CA's renewal answer is not JSON: ${(e as Error).message}`));
            }
          });
        },
      );
      req.on('socket', (s) => {
        (s as TLSSocket).once('secureConnect', () => {
          // The CA must be the control plane of this trust domain, or its answer is not taken.
          const check = checkPeer(s as TLSSocket, trustDomain, info.identity);
          if (!check.ok) req.destroy(new Error(`the renewal listener at ${url.host} is not the mesh CA: ${check.detail}`));
        });
      });
      req.on('timeout', () => req.destroy(new Error(`no answer from the mesh CA at ${url.host} within ${this.timeoutMs} ms`)));
      req.on('error', reject);
      req.end(body);
    });
  }
}
