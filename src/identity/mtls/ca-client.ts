/**
 * The proxy's side of the mesh CA (the control plane's /v1/ca API, docs/security.md): first
 * certificates with a join token over the control plane's HTTP API; then, over the control
 * plane's mTLS listener with a certificate the proxy holds as its credential, renewals (of that
 * certificate) and any other API call (`request`: the proxy's announcements). The listener must
 * present the control plane's own SPIFFE ID, checked like any peer (peer.ts).
 */
import { request } from 'node:https';
import { systemClock } from '../../core/clock.js';
import { ControlReplicas } from '../../discovery/control-replicas.js';
import type { TLSSocket } from 'node:tls';
import { CA_RENEW_PATH, type CaInfo, type IssuedCertificate, type IssueManyResponse } from '../../api/ca.js';
import { parseSpiffeId } from '../spiffe.js';
import { checkPeer } from './peer.js';
import { pemBundle, type CertificateSource, type ControlAnswer, type Credential } from './identities.js';

export interface ControlCaOptions {
  /** One control plane; or `control`, several replicas (the proxy's, shared with its watch): each call fails over between them. */
  readonly controlUrl?: string;
  readonly control?: ControlReplicas;
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
  /** GET /v1/ca of each replica (each has its own mTLS listener, named in `renewUrl`). */
  private readonly infos = new Map<string, CaInfo>();
  private readonly timeoutMs: number;
  readonly replicas: ControlReplicas;

  constructor(private readonly o: ControlCaOptions) {
    this.timeoutMs = o.timeoutMs ?? 10_000;
    this.replicas = o.control ?? new ControlReplicas([o.controlUrl ?? ''], systemClock);
  }

  /** GET /v1/ca: the trust domain, roots and renewal address (fetched again with `fresh`), from the current replica or the next that answers. */
  async info(fresh = false): Promise<CaInfo> {
    return await this.replicas.call((url) => this.infoAt(url, fresh));
  }

  /** What a replica's GET /v1/ca said, kept until asked `fresh` (a state restored at start gives it too: `remember`). */
  private async infoAt(url: string, fresh: boolean): Promise<CaInfo> {
    const cached = this.infos.get(url);
    if (cached !== undefined && !fresh) return cached;
    const res = await fetch(`${url}/v1/ca`, { headers: this.replicas.headers, signal: AbortSignal.timeout(this.timeoutMs) });
    if (!res.ok) throw await failure(res, `GET ${url}/v1/ca`);
    const info = (await res.json()) as CaInfo;
    this.infos.set(url, info);
    return info;
  }

  /** A GET /v1/ca answer from before (the persisted state), used until a replica answers. */
  remember(url: string, info: CaInfo): void {
    if (!this.infos.has(url)) this.infos.set(url, info);
  }

  async issue(requests: ReadonlyArray<{ service: string; csr: string }>): Promise<IssuedCertificate[]> {
    // Asked for once: `skein proxy`'s join token is spent by its first use.
    const token = await this.o.joinToken(requests.map((r) => r.service));
    const res = await this.replicas.call(
      (url) =>
        fetch(`${url}/v1/ca/certificates`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
          body: JSON.stringify({ requests }),
          signal: AbortSignal.timeout(this.timeoutMs),
        }),
      { unavailable: (r) => (r.status === 502 || r.status === 503 || r.status === 504 ? `HTTP ${r.status}` : null) },
    );
    if (!res.ok) throw await failure(res, 'the mesh CA refused the certificates');
    return ((await res.json()) as IssueManyResponse).certificates;
  }

  async renew(current: Credential, csr: string): Promise<IssuedCertificate> {
    const res = await this.request(current, 'POST', CA_RENEW_PATH, { csr });
    if (res.status !== 201) throw new Error(`the mesh CA refused the renewal: HTTP ${res.status}: ${res.text.slice(0, 400)}`);
    try {
      return JSON.parse(res.text) as IssuedCertificate;
    } catch (e) {
      throw new Error(`the mesh CA's renewal answer is not JSON: ${(e as Error).message}`, { cause: e });
    }
  }

  /**
   * A call to the control plane's API over its mTLS listener, authenticated by `current` (the
   * client certificate). Rejects when the listener is not there, is not the mesh's control plane,
   * or does not answer in time; an HTTP error is an answer (its status and text).
   */
  async request(current: Credential, method: string, path: string, body?: unknown): Promise<ControlAnswer> {
    return await this.replicas.call(async (base) => this.requestVia(await this.infoAt(base, false), current, method, path, body));
  }

  private async requestVia(info: CaInfo, current: Credential, method: string, path: string, body?: unknown): Promise<ControlAnswer> {
    if (info.renewUrl === '') throw new Error("the control plane's mTLS listener is not running (its CA has no valid issuer)");
    const url = new URL(path, info.renewUrl);
    const payload = body === undefined ? null : JSON.stringify(body);
    const trustDomain = parseSpiffeId(info.identity).trustDomain;
    return await new Promise((resolve, reject) => {
      const req = request(
        url,
        {
          method,
          key: current.keyPem,
          cert: pemBundle([current.certPem, ...current.chainPem]),
          ca: [...current.roots],
          minVersion: 'TLSv1.3',
          rejectUnauthorized: false,
          checkServerIdentity: () => undefined,
          agent: false,
          timeout: this.timeoutMs,
          headers: payload === null ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        },
      );
      req.on('socket', (s) => {
        (s as TLSSocket).once('secureConnect', () => {
          // The listener must be the control plane of this trust domain, or its answer is not taken.
          const check = checkPeer(s as TLSSocket, trustDomain, info.identity);
          if (!check.ok) req.destroy(new Error(`the mTLS listener at ${url.host} is not the mesh's control plane: ${check.detail}`));
        });
      });
      req.on('timeout', () => req.destroy(new Error(`no answer from the control plane's mTLS listener at ${url.host} within ${this.timeoutMs} ms`)));
      req.on('error', reject);
      req.end(payload ?? undefined);
    });
  }
}
