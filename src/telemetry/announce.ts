/**
 * A data plane with an admin server (a proxy, or the SDK with its metrics endpoint) tells the
 * control plane where it is (`PUT /v1/proxies/{id}`), and
 * again every `everyMs`, so the control plane can scrape it (golden signals), relay taps to it,
 * and list it for Prometheus. Best effort: a control plane that is away is tried again next time.
 * With mTLS each workload's `tls` (the roots it trusts, the root its leaf chains to) goes along.
 * A change of what is announced (a workload added or removed, a `tls` that changed) is announced
 * within a second, not at the next interval: root rotation's steps and `skein up`'s callers wait
 * on it.
 *
 * Once the proxy holds a mesh certificate, it announces with it, over the control plane's mTLS
 * listener (`viaCertificate`); before that (or with mTLS off) over the HTTP API with its token.
 */
import type { Logger } from 'pino';
import type { ControlReplicas } from '../discovery/control-replicas.js';
import type { WorkloadTls } from '../api/ca.js';
import type { ControlAnswer, ControlCall } from '../identity/mtls/identities.js';

/** What a data plane announces of one workload (the proxy's WorkloadInfo fits it; the SDK's caller too). */
export interface AnnouncedWorkload {
  readonly name: string;
  readonly service: string;
  readonly inbound: string | null;
  readonly outbound: string | null;
  readonly tls?: WorkloadTls | null;
}

/** An answer of the control plane's API, and a call with a certificate the caller holds (defined with the identities: src/identity/mtls/identities.ts). */
export type { ControlAnswer, ControlCall } from '../identity/mtls/identities.js';

export interface AnnouncerOptions {
  /** One control plane; or `control`, several replicas (the proxy's, shared with its watch). */
  readonly controlUrl?: string;
  readonly control?: ControlReplicas;
  readonly id: string;
  /** host:port of the admin server. */
  readonly admin: string;
  readonly workloads: () => readonly AnnouncedWorkload[];
  /** A control-plane token of scope "proxy" (or admin), sent as `authorization: Bearer`; null: none. */
  readonly token?: string | null;
  /** The API over the mTLS listener with a certificate the proxy holds; null while it holds none. */
  readonly viaCertificate?: () => ControlCall | null;
  readonly everyMs?: number;
  readonly logger?: Logger;
}

/** How a proxy reaches the control plane's API. */
export type ControlAccess = Pick<AnnouncerOptions, 'controlUrl' | 'control' | 'token' | 'viaCertificate'>;

/** A replica answering this is up but cannot serve now (its store is away, say): another one is tried. */
const UNAVAILABLE = new Set([502, 503, 504]);

/** Where a proxy's calls go now (for logs). */
export const controlOf = (o: ControlAccess): string => o.control?.current ?? o.controlUrl ?? '';

/**
 * One call to the control plane as a proxy: with its mesh certificate once it holds one, else with
 * its token. With several replicas (`control`), a replica that refuses, breaks, does not answer
 * within `attemptTimeoutMs` or answers 502/503/504 is left for the next (control-replicas.ts); the
 * certificate's way fails over in ControlCa.request.
 */
export async function proxyControlCall(o: ControlAccess, method: string, path: string, body?: unknown, signal?: AbortSignal, attemptTimeoutMs = 5000): Promise<ControlAnswer & { via: 'token' | 'certificate' }> {
  const cert = o.viaCertificate?.() ?? null;
  if (cert !== null) return { ...(await cert(method, path, body)), via: 'certificate' };
  const auth: Record<string, string> = o.token === undefined || o.token === null || o.token === '' ? {} : { authorization: `Bearer ${o.token}` };
  const once = async (base: string): Promise<ControlAnswer> => {
    const timeout = AbortSignal.timeout(attemptTimeoutMs);
    const res = await fetch(`${base}${path}`, {
      method,
      headers: body === undefined ? auth : { 'content-type': 'application/json', ...auth },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: signal === undefined ? timeout : AbortSignal.any([signal, timeout]),
    });
    return { status: res.status, text: await res.text() };
  };
  const answer =
    o.control === undefined
      ? await once(o.controlUrl ?? '')
      : await o.control.call(once, { unavailable: (r) => (UNAVAILABLE.has(r.status) ? `HTTP ${r.status}` : null), ...(signal === undefined ? {} : { signal }) });
  return { ...answer, via: 'token' };
}

/**
 * A request is held for a service scaled to zero: asks the control plane (`skein up`'s runtime) to
 * wake it (`POST /v1/mesh/services/{s}/wake`), as a proxy or the SDK: best effort, a refusal logged.
 */
export function wakeService(o: ControlAccess, service: string, logger?: { warn(obj: object, msg: string): void }): void {
  proxyControlCall(o, 'POST', `/v1/mesh/services/${encodeURIComponent(service)}/wake`, {}, AbortSignal.timeout(5000))
    .then((r) => {
      if (r.status >= 300) logger?.warn({ service, status: r.status, answer: r.text.slice(0, 300) }, 'the control plane did not wake the service');
    })
    .catch((e: unknown) => logger?.warn({ service, err: (e as Error).message }, 'could not ask the control plane to wake the service'));
}

export class Announcer {
  private timer: NodeJS.Timeout | null = null;
  private watcher: NodeJS.Timeout | null = null;
  /** The body last announced (JSON). */
  private lastBody = '';
  private inFlight: AbortController | null = null;
  private failing = false;

  private readonly path: string;
  /** How the last announcement that went through was authenticated. */
  via: 'token' | 'certificate' | null = null;

  constructor(private readonly o: AnnouncerOptions) {
    this.path = `/v1/proxies/${encodeURIComponent(o.id)}`;
  }

  start(): void {
    void this.announce();
    this.timer = setInterval(() => void this.announce(), this.o.everyMs ?? 10_000);
    this.timer.unref();
    this.watcher = setInterval(() => {
      if (JSON.stringify(this.body()) !== this.lastBody) void this.announce();
    }, 1000);
    this.watcher.unref();
  }

  private body(): { admin: string; workloads: unknown[] } {
    return {
      admin: this.o.admin,
      workloads: this.o.workloads().map((w) => ({ name: w.name, service: w.service, inbound: w.inbound, outbound: w.outbound, ...(w.tls == null ? {} : { tls: w.tls }) })),
    };
  }

  /** Announces now (also what start() does first). */
  async announce(): Promise<boolean> {
    this.inFlight?.abort();
    const ac = new AbortController();
    this.inFlight = ac;
    const t = setTimeout(() => ac.abort(), 5000);
    const body = this.body();
    try {
      const res = await proxyControlCall(this.o, 'PUT', this.path, body, ac.signal);
      if (res.status === 401 || res.status === 403) {
        const hint = res.via === 'token' ? ' (give the proxy a token of scope "proxy": --token or SKEIN_TOKEN; or mTLS and a join token, and it announces with its certificate)' : ' (with its mesh certificate)';
        throw new Error(`${res.status} ${res.text.slice(0, 300)}${hint}`);
      }
      if (res.status < 200 || res.status > 299) throw new Error(`${res.status} ${res.text.slice(0, 300)}`);
      this.via = res.via;
      if (this.failing) this.o.logger?.info({ control: controlOf(this.o), via: this.via }, 'announced to the control plane again');
      this.failing = false;
      this.lastBody = JSON.stringify(body);
      return true;
    } catch (e) {
      if (!this.failing) this.o.logger?.warn({ control: controlOf(this.o), err: (e as Error).message }, 'could not announce this proxy to the control plane (its metrics and taps are not collected until it can)');
      this.failing = true;
      return false;
    } finally {
      clearTimeout(t);
      if (this.inFlight === ac) this.inFlight = null;
    }
  }

  /** Stops renewing and tells the control plane the proxy is gone. */
  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    if (this.watcher !== null) clearInterval(this.watcher);
    this.timer = null;
    this.watcher = null;
    this.inFlight?.abort();
    try {
      const gone = proxyControlCall(this.o, 'DELETE', this.path, undefined, AbortSignal.timeout(1000));
      await Promise.race([gone, new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
    } catch {
      /* the control plane forgets it after the TTL */
    }
  }
}
