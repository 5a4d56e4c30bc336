/**
 * The proxies the control plane knows: each proxy with an admin server announces itself
 * (`PUT /v1/proxies/{id}`) and renews every few seconds; one that stops renewing is forgotten
 * after `ttlMs`. The control plane scrapes them for the golden signals, relays `skein tap` to
 * them, and hands them to Prometheus (`GET /v1/prometheus/targets`, http_sd).
 */
import type { FastifyInstance } from 'fastify';
import type { Clock } from '../core/clock.js';
import { parseHostPort } from '../core/address.js';
import { SkeinError } from '../core/errors.js';
import { query } from './server.js';
import { principalOf } from './auth/access.js';

import { PROXY_ID } from '../api/names.js';
import type { WorkloadTls } from '../api/ca.js';
const FINGERPRINT = /^[0-9a-f]{64}$/;
const SERIAL = /^[0-9a-f]{1,64}$/i;
const MAX_ROOTS = 16;
const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** How long a proxy stays known without renewing (it renews every ANNOUNCE_EVERY_MS). */
export const PROXY_TTL_MS = 30_000;
export const ANNOUNCE_EVERY_MS = 10_000;
const MAX_PROXIES = 10_000;
const MAX_WORKLOADS = 1000;

export interface ProxyWorkload {
  readonly name: string;
  readonly service: string;
  readonly inbound: string | null;
  readonly outbound: string | null;
  /** Its certificate: the roots it trusts and the root its leaf chains to (null: no mTLS). For root rotation. */
  readonly tls: WorkloadTls | null;
}

export interface KnownProxy {
  readonly id: string;
  /** host:port of its admin server. */
  readonly admin: string;
  readonly workloads: readonly ProxyWorkload[];
  readonly lastSeen: number;
  /**
   * The credential of its last announcement: a token's name, or the SPIFFE ID of the mesh
   * certificate it announced with (on the mTLS listener); null when nothing was asked.
   */
  readonly announcedBy: string | null;
}

function fail(message: string, field: string): never {
  throw new SkeinError('SKEIN_E_VALIDATION', message, { field });
}

function address(v: unknown, field: string): string {
  if (typeof v !== 'string') fail(`${field} must be a host:port string`, field);
  let hp;
  try {
    hp = parseHostPort(v, field);
  } catch (e) {
    fail((e as Error).message, field);
  }
  if (hp.port === 0) fail(`${field} must name a port (not 0)`, field);
  return v;
}

/** Checks a workload's `tls` report: {roots: [fingerprint], leafRoot: fingerprint, leafIssuer: serial}. */
function workloadTls(v: unknown, at: string): WorkloadTls {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(`${at} must be an object {roots, leafRoot, leafIssuer}`, at);
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!['roots', 'leafRoot', 'leafIssuer'].includes(k)) fail(`${at}.${k} is not a known field (roots, leafRoot, leafIssuer)`, `${at}.${k}`);
  const fp = (x: unknown, f: string) => {
    if (typeof x !== 'string' || !FINGERPRINT.test(x)) fail(`${f} must be a certificate's SHA-256 fingerprint (64 lowercase hex digits), got ${JSON.stringify(x)?.slice(0, 80)}`, f);
    return x;
  };
  const roots = o['roots'];
  if (!Array.isArray(roots) || roots.length === 0 || roots.length > MAX_ROOTS) fail(`${at}.roots must be a list of 1 to ${MAX_ROOTS} root fingerprints`, `${at}.roots`);
  const leafIssuer = o['leafIssuer'];
  if (typeof leafIssuer !== 'string' || !SERIAL.test(leafIssuer)) fail(`${at}.leafIssuer must be a certificate serial (hex), got ${JSON.stringify(leafIssuer)?.slice(0, 80)}`, `${at}.leafIssuer`);
  return { roots: roots.map((r, i) => fp(r, `${at}.roots[${i}]`)), leafRoot: fp(o['leafRoot'], `${at}.leafRoot`), leafIssuer };
}

/** Checks an announcement body; errors name the field. */
export function parseAnnouncement(body: unknown): { admin: string; workloads: ProxyWorkload[] } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) fail('the body must be an object {admin, workloads}', 'body');
  const b = body as Record<string, unknown>;
  for (const k of Object.keys(b)) if (k !== 'admin' && k !== 'workloads') fail(`${k} is not a known field (admin, workloads)`, k);
  const admin = address(b['admin'], 'admin');
  const raw = b['workloads'] ?? [];
  if (!Array.isArray(raw) || raw.length > MAX_WORKLOADS) fail(`workloads must be an array of at most ${MAX_WORKLOADS}`, 'workloads');
  const workloads = raw.map((w: unknown, i): ProxyWorkload => {
    const at = `workloads[${i}]`;
    if (typeof w !== 'object' || w === null || Array.isArray(w)) fail(`${at} must be an object {name, service, inbound, outbound}`, at);
    const o = w as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!['name', 'service', 'inbound', 'outbound', 'tls'].includes(k)) fail(`${at}.${k} is not a known field`, `${at}.${k}`);
    if (typeof o['name'] !== 'string' || !NAME.test(o['name'])) fail(`${at}.name must be a DNS label`, `${at}.name`);
    if (typeof o['service'] !== 'string' || !NAME.test(o['service'])) fail(`${at}.service must be a DNS label`, `${at}.service`);
    const opt = (k: string) => (o[k] === null || o[k] === undefined ? null : address(o[k], `${at}.${k}`));
    return { name: o['name'], service: o['service'], inbound: opt('inbound'), outbound: opt('outbound'), tls: o['tls'] === undefined || o['tls'] === null ? null : workloadTls(o['tls'], `${at}.tls`) };
  });
  return { admin, workloads };
}

/**
 * Where several control-plane replicas share the directory (the etcd store: each announcement a
 * key bound to a lease of the TTL, kept alive by the next one; etcd-store.ts).
 */
export interface SharedDirectory {
  announce(id: string, value: string, ttlMs: number): Promise<void>;
  withdraw(id: string): Promise<void>;
}

/**
 * The proxies that announced themselves. Alone, a control plane keeps them in memory and forgets
 * one after `ttlMs` without an announcement. With a `shared` directory (replicas on etcd) every
 * announcement goes to the store and every replica learns of it (`applyStored`): a proxy that
 * announces to one replica is known to all (scraped, tapped, counted in a root rotation), and
 * it is forgotten when its lease runs out in etcd, not by a replica's clock.
 */
export class ProxyDirectory {
  private readonly proxies = new Map<string, KnownProxy>();

  constructor(
    private readonly clock: Clock,
    private readonly ttlMs = PROXY_TTL_MS,
    private readonly shared: SharedDirectory | null = null,
  ) {}

  /** Known at once alone; shared, once the store has it. */
  put(id: string, a: { admin: string; workloads: ProxyWorkload[] }, announcedBy: string | null = null): Promise<KnownProxy> {
    if (!PROXY_ID.test(id)) fail(`proxy id "${id.slice(0, 140)}" must match ${PROXY_ID.source}`, 'id');
    this.expire();
    if (!this.proxies.has(id) && this.proxies.size >= MAX_PROXIES) throw new SkeinError('SKEIN_E_VALIDATION', `the control plane knows ${MAX_PROXIES} proxies already`, { field: 'id' });
    const p: KnownProxy = Object.freeze({ id, admin: a.admin, workloads: Object.freeze(a.workloads.map((w) => Object.freeze(w))), lastSeen: this.clock.now(), announcedBy });
    if (this.shared === null) {
      this.proxies.set(id, p);
      return Promise.resolve(p);
    }
    return this.shared.announce(id, JSON.stringify({ admin: p.admin, workloads: p.workloads, announcedBy }), this.ttlMs).then(() => {
      this.proxies.set(id, p);
      return p;
    });
  }

  remove(id: string): Promise<boolean> {
    const known = this.proxies.delete(id);
    return known && this.shared !== null ? this.shared.withdraw(id).then(() => true) : Promise.resolve(known);
  }

  /** Shared: another replica (or this one) stored `id`'s announcement, or etcd dropped it (null). */
  applyStored(id: string, value: string | null): void {
    if (value === null) {
      this.proxies.delete(id);
      return;
    }
    try {
      const v = JSON.parse(value) as { admin: string; workloads: ProxyWorkload[]; announcedBy: string | null };
      const prev = this.proxies.get(id);
      this.proxies.set(id, Object.freeze({ id, admin: v.admin, workloads: Object.freeze(v.workloads.map((w) => Object.freeze(w))), lastSeen: Math.max(prev?.lastSeen ?? 0, this.clock.now()), announcedBy: v.announcedBy }));
    } catch {
      /* not an announcement this version wrote: ignored */
    }
  }

  /** Shared, after a compaction: the store's announcements are all there is. */
  resetStored(present: ReadonlyArray<[string, string]>): void {
    const ids = new Set(present.map(([id]) => id));
    for (const id of [...this.proxies.keys()]) if (!ids.has(id)) this.proxies.delete(id);
    for (const [id, value] of present) this.applyStored(id, value);
  }

  /** The proxies that renewed within the TTL. */
  list(): KnownProxy[] {
    this.expire();
    return [...this.proxies.values()];
  }

  get size(): number {
    this.expire();
    return this.proxies.size;
  }

  private expire(): void {
    // Shared: etcd's leases decide (an announcement kept alive on another replica writes nothing here).
    if (this.shared !== null) return;
    const oldest = this.clock.now() - this.ttlMs;
    for (const [id, p] of this.proxies) if (p.lastSeen < oldest) this.proxies.delete(id);
  }
}

const PROXY_DIRECTORY = 'skeinProxyDirectory';

/** The directory `proxyRoutes` registered on `app` (null: none). */
export function proxyDirectoryOf(app: FastifyInstance): ProxyDirectory | null {
  return ((app as unknown as Record<string, unknown>)[PROXY_DIRECTORY] as ProxyDirectory | undefined) ?? null;
}

/** The /v1/proxies routes and the Prometheus http_sd targets. `self`: the control plane's own host:port. */
export function proxyRoutes(app: FastifyInstance, dir: ProxyDirectory, self: () => string): void {
  // Other plugins that need the announced proxies (the CA's rotation preconditions) find them here.
  app.decorate(PROXY_DIRECTORY, dir);
  const wire = (p: KnownProxy) => ({ ...p, lastSeen: new Date(p.lastSeen).toISOString() });
  app.get('/v1/proxies', async (req) => {
    query(req, []);
    return { proxies: dir.list().map(wire) };
  });
  app.put<{ Params: { id: string } }>('/v1/proxies/:id', async (req) => {
    query(req, []);
    return { proxy: wire(await dir.put(req.params.id, parseAnnouncement(req.body), principalOf(req)?.name ?? null)), renewEveryMs: ANNOUNCE_EVERY_MS, ttlMs: PROXY_TTL_MS };
  });
  app.delete<{ Params: { id: string } }>('/v1/proxies/:id', async (req) => {
    query(req, []);
    if (!(await dir.remove(req.params.id))) throw new SkeinError('SKEIN_E_NOT_FOUND', `no proxy "${req.params.id.slice(0, 140)}" is known`, { field: 'id' });
    return { removed: req.params.id };
  });
  // Prometheus http_sd: https://prometheus.io/docs/prometheus/latest/http_sd/
  app.get('/v1/prometheus/targets', async (req) => {
    query(req, []);
    return [
      { targets: [self()], labels: { job: 'skein-control' } },
      ...dir.list().map((p) => ({
        targets: [p.admin],
        labels: { job: 'skein-proxy', skein_proxy: p.id },
      })),
    ];
  });
}
