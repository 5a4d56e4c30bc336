/**
 * `skein control`: the registry over its store, health checks, the watch publisher, the HTTP API
 * and the DNS server, started and stopped as one.
 */
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { systemClock, type Clock, type TimerHandle } from '../core/clock.js';
import { SkeinError } from '../core/errors.js';
import { formatHostPort, type HostPort } from '../core/address.js';
import { Registry } from './registry/registry.js';
import { EmbeddedStore } from './store/embedded.js';
import { MemoryStore, type Store } from './store/store.js';
import { EtcdStore } from './store/etcd-store.js';
import { HealthManager } from './health/manager.js';
import { Publisher } from './publisher.js';
import { ControlMetrics } from './metrics.js';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from './server.js';
import { DnsServer } from './dns/server.js';
import { DNS_DEFAULTS } from '../api/dns.js';
import { VERSION } from '../version.js';
import { PROXY_TTL_MS, ProxyDirectory, proxyRoutes } from './proxies.js';
import { tapRoutes } from './tap-relay.js';
import { CONTROL_DEFAULTS } from '../api/control.js';
import { createSignals, knownService, meshEventsRoute, type MeshEvents } from './signals/index.js';
import { dashboardRoutes } from './dashboard.js';
import { beyondLoopback } from '../core/loopback-host.js';
import { TokenStore, newToken } from './auth/tokens.js';
import { loadOrCreateAdminToken, removeLocalToken, writeLocalToken } from './auth/token-files.js';
import { CA_DEFAULTS, type SecurityEvent } from '../api/ca.js';
import { trustDomainFor } from '../identity/spiffe.js';
import { CertificateAuthority, rotationMeshEvent, type OperatorCa } from './ca/ca.js';
import { startMtlsListener, type MtlsListener } from './ca/mtls-listener.js';
import { caRoutes, type CaAuthorize } from './api/ca.js';
import { caAuditRecord, type AuditSink } from '../api/audit.js';
import { accessAuditRecords, observeAccess } from './auth/access.js';
import { forwardLeaderReads } from './leader-reads.js';
import { ETCD_DEFAULTS } from '../api/etcd.js';

const isWildcard = (host: string) => host === '0.0.0.0' || host === '::' || host === '[::]';

export interface ControlPlaneOptions {
  /** Directory of the embedded store (and of admin.token); null keeps everything in memory. */
  dataDir: string | null;
  /**
   * The etcd store instead of the embedded one (docs/operations.md): several replicas share it.
   * `dataDir` then keeps only admin.token (give every replica the same one).
   */
  etcd?: { endpoints: readonly string[]; prefix?: string; replica?: string; electionTtlSeconds?: number; compactEveryMs?: number; watchIdleMs?: number } | null;
  /**
   * With etcd: the host (address or name) the other replicas reach this one's API at, on its
   * port (they forward the leader's reads to it: leader-reads.ts). Default: the `http` host,
   * which a wildcard address cannot be.
   */
  advertise?: string;
  http: HostPort;
  /** null: no DNS server. */
  dns: HostPort | null;
  domain?: string;
  dnsTtlSeconds?: number;
  /**
   * UDP responses per second to each source network, bursts of twice that; 0 turns the limiter
   * off. Unset: DNS_DEFAULTS.rateLimit, only when DNS listens beyond loopback.
   */
  dnsRateLimit?: number;
  ttlGraceMs?: number;
  historySize?: number;
  maxQueue?: number;
  logger?: Logger;
  clock?: Clock;
  /** More routes on the HTTP API (what `skein up` adds: the mesh runtime's /v1/mesh). */
  routes?: (app: FastifyInstance) => void;
  /** How often the proxies' /stats are scraped for the golden signals. Default 2 s. */
  scrapeIntervalMs?: number;
  /** The built dashboard (a directory with index.html). Default: dashboard/dist of the package. */
  dashboardRoot?: string;
  /**
   * Listen beyond loopback although the API has no TLS (tokens then cross the network in clear).
   * Without it such an `http` address is refused with SKEIN_E_INSECURE_LISTEN.
   */
  insecureListen?: boolean;
  /** The mesh's SPIFFE trust domain. Default trustDomainFor('skein'); `skein up` passes its mesh's. */
  trustDomain?: string;
  /** Lifetime of workload certificates, ms: 1 minute to 90 days. Default CA_DEFAULTS.leafLifetimeMs (24 h). */
  leafLifetimeMs?: number;
  /** An operator-supplied CA root or intermediate (PEMs); unset: generated once and kept in the store. */
  caIssuer?: OperatorCa;
  /** The mTLS listener (HTTPS; the API for certificate holders: renewal, proxies' announcements). Default: the HTTP API's host, a port the OS picks. */
  caListen?: HostPort;
  /** Where the CA's security events go besides the log, metrics and the audit log. */
  onSecurityEvent?: (e: SecurityEvent) => void;
  /**
   * The audit log (docs/security.md#audit-log): the CA's events, API tokens refused, minted and
   * revoked, policy changes and every other accepted write with its token. Null or absent: off.
   */
  audit?: AuditSink | null;
  /** Who may mint join tokens (default: every caller of the API). */
  caAuthorize?: CaAuthorize;
}

export interface ControlPlane {
  readonly http: HostPort;
  readonly dns: HostPort | null;
  readonly registry: Registry;
  /** The proxies that announced themselves. */
  readonly proxies: ProxyDirectory;
  /** The mesh event feed (GET /v1/events, the dashboard): health, ejections, breakers, scaling. */
  readonly events: MeshEvents;
  readonly ca: CertificateAuthority;
  /** `https://HOST:PORT` of the mTLS listener; null when it could not start (no valid issuer). */
  readonly renewUrl: string | null;
  readonly url: string;
  /** The admin token (docs/security.md#control-plane-tokens). */
  readonly adminToken: string;
  /** `<data-dir>/admin.token`; null with no data dir. */
  readonly adminTokenFile: string | null;
  /** This user's local copy of the admin token, found by the CLI by port; null when it could not be written. */
  readonly localTokenFile: string | null;
  /** The minted tokens (what `skein up` mints its proxy's token with). */
  readonly tokens: TokenStore;
  close(): Promise<void>;
}

/** `s` whose close also runs `more` (the etcd store's kv view closes the store). */
function withClose(s: Store, more: () => Promise<void>): Store {
  return { kind: s.kind, load: () => s.load(), commit: (ops) => s.commit(ops), close: async () => (await s.close(), await more()) };
}

/** Null when the API may listen on `host`; otherwise why not. */
export function insecureListenRefusal(host: string): string | null {
  return beyondLoopback(host, 'the HTTP API (--http)', '--insecure-listen', 'tokens would cross the network in clear');
}

function listenError(e: unknown, what: string, addr: HostPort): SkeinError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
    return new SkeinError('SKEIN_E_ADDRESS_IN_USE', `${what} cannot listen on ${formatHostPort(addr.host, addr.port)}: ${code}`, { cause: e });
  }
  return e instanceof SkeinError ? e : new SkeinError('SKEIN_E_INTERNAL', `${what}: ${(e as Error).message}`, { cause: e });
}

export async function startControlPlane(opts: ControlPlaneOptions): Promise<ControlPlane> {
  const clock = opts.clock ?? systemClock;
  const logger = opts.logger ?? pino({ level: 'info' });
  const startedAt = clock.now();
  const insecure = insecureListenRefusal(opts.http.host);
  if (insecure !== null && opts.insecureListen !== true) throw new SkeinError('SKEIN_E_INSECURE_LISTEN', insecure, { field: '--http' });
  if (insecure !== null) logger.warn({ http: opts.http.host }, 'listening beyond loopback without TLS (--insecure-listen): tokens cross the network in clear');
  if (opts.etcd != null && opts.advertise === undefined && isWildcard(opts.http.host)) {
    throw new SkeinError('SKEIN_E_USAGE', `--http ${opts.http.host} listens on every address: with --store etcd give --advertise HOST, the address the other replicas reach this one at (they forward the golden signals' reads to the leader)`, { field: '--advertise' });
  }
  const replica = opts.etcd?.replica ?? `control-${process.pid}`;
  const etcd =
    opts.etcd == null
      ? null
      : await EtcdStore.open({
          endpoints: opts.etcd.endpoints,
          replica,
          clock,
          logger: logger.child({ component: 'store' }),
          ...(opts.etcd.prefix === undefined ? {} : { prefix: opts.etcd.prefix }),
          ...(opts.etcd.electionTtlSeconds === undefined ? {} : { electionTtlSeconds: opts.etcd.electionTtlSeconds }),
          ...(opts.etcd.compactEveryMs === undefined ? {} : { compactEveryMs: opts.etcd.compactEveryMs }),
          ...(opts.etcd.watchIdleMs === undefined ? {} : { watchIdleMs: opts.etcd.watchIdleMs }),
        });
  // Tokens and the CA keep their keys in the same store as the registry.
  const store: Store = etcd !== null ? withClose(etcd.store.kv(), () => etcd.store.close()) : opts.dataDir === null ? new MemoryStore() : await EmbeddedStore.open(join(opts.dataDir, 'store'));
  let fatal: ((e: unknown) => void) | null = null;
  let admin: { token: string; path: string | null; created: boolean };
  let tokens: TokenStore;
  try {
    admin = opts.dataDir === null ? { token: newToken('admin'), path: null, created: true } : await loadOrCreateAdminToken(opts.dataDir);
    tokens = await TokenStore.open({ store, clock, adminToken: admin.token });
  } catch (e) {
    await store.close();
    throw e;
  }
  if (admin.created && admin.path !== null) logger.info({ file: admin.path }, 'admin token created');
  const registry =
    etcd === null
      ? await Registry.open({ clock, store, onFatal: (e) => fatal?.(e) })
      : Registry.replicated({ clock, log: etcd.store.registryLog() }, etcd.entries, etcd.revision);
  const metrics = new ControlMetrics();
  let caMetrics: ((e: SecurityEvent) => void) | null = null;
  const audit = opts.audit ?? null;
  const ca = await CertificateAuthority.open({
    store,
    clock,
    trustDomain: opts.trustDomain ?? trustDomainFor('skein'),
    leafLifetimeMs: opts.leafLifetimeMs ?? CA_DEFAULTS.leafLifetimeMs,
    operator: opts.caIssuer ?? null,
    logger: logger.child({ component: 'ca' }),
    onSecurityEvent: (e) => {
      caMetrics?.(e);
      audit?.write(caAuditRecord(e));
      opts.onSecurityEvent?.(e);
    },
  }).catch(async (e: unknown) => {
    await store.close();
    throw e;
  });
  caMetrics = metrics.observeCa(() => ca.issuerCert.notAfter.getTime());
  const health = new HealthManager({
    registry,
    clock,
    ttlGraceMs: opts.ttlGraceMs ?? CONTROL_DEFAULTS.ttlGraceMs,
    onResult: (c, ok) => metrics.checkResult(c, ok),
    onError: (e) => logger.warn({ err: e }, 'health status change failed'),
    ...(etcd === null ? {} : { heartbeats: etcd.store.heartbeats() }),
  });
  // Replicated: every replica follows the store; only the elected one runs the health checks.
  let leading = etcd === null;
  const publisher = new Publisher({ registry, clock, historySize: opts.historySize, maxQueue: opts.maxQueue });
  metrics.observe({ registry, publisher, health, store });
  registry.onHealthEvent((e) => {
    metrics.healthTransition(e.to);
    // A registration's initial status is routine (100k registrations would be 100k lines): debug.
    const level = e.from === 'new' ? 'debug' : 'info';
    logger[level]({ service: e.service, id: e.id, from: e.from, to: e.to, reason: e.reason, revision: e.revision }, 'instance status changed');
  });

  // A replica that cannot follow etcd for ETCD_DEFAULTS.cutOffAfterMs ends its watch streams and
  // refuses new ones, so proxies move to a replica that follows the store (reads stay answered).
  let cutOff: string | null = null;
  let cutOffTimer: TimerHandle | null = null;
  const storeConnection = (broken: string | null) => {
    if (broken === null) {
      cutOffTimer?.cancel();
      cutOffTimer = null;
      if (cutOff !== null) logger.info('following etcd again: watches are served again');
      cutOff = null;
      return;
    }
    if (cutOff !== null || cutOffTimer !== null) return;
    cutOffTimer = clock.setTimeout(() => {
      cutOffTimer = null;
      cutOff = `this control-plane replica has not followed etcd for ${ETCD_DEFAULTS.cutOffAfterMs} ms (${broken}): its view may be stale`;
      logger.warn({ why: broken }, 'cut off from etcd: ending the watch streams (proxies move to another replica); reads answer from the last view');
      publisher.endAll();
    }, ETCD_DEFAULTS.cutOffAfterMs);
  };

  let dnsServer: DnsServer | null = null;
  let dnsAddr: HostPort | null = null;
  const app = createApiServer({
    registry,
    health,
    publisher,
    metrics,
    clock,
    logger,
    version: VERSION,
    startedAt,
    stale: () => cutOff,
    info: () => ({
      store: store.kind,
      ...(etcd === null ? {} : { etcd: { endpoints: opts.etcd?.endpoints ?? [], prefix: etcd.store.prefix, replica, leader: leading, leaderReplica: etcd.store.leader?.replica ?? null, leaderUrl: etcd.store.leader?.url ?? null, following: cutOff === null, stale: cutOff } }),
      dataDir: opts.dataDir,
      http: formatHostPort(httpAddr.host, httpAddr.port),
      dns: dnsAddr === null ? null : formatHostPort(dnsAddr.host, dnsAddr.port),
      domain: opts.domain ?? DNS_DEFAULTS.domain,
    }),
  }, { tokens, trustDomain: ca.trustDomain });
  // Replicated: the golden signals and the event feed are the leader's; the others forward their reads.
  if (etcd !== null) forwardLeaderReads(app, { replica, credential: admin.token, leading: () => leading, leader: () => etcd.store.leader });
  if (audit !== null) {
    observeAccess(app, (e) => {
      for (const r of accessAuditRecords(e, clock.now(), registry.revision)) audit.write(r);
    });
  }
  const proxies = new ProxyDirectory(clock, PROXY_TTL_MS, etcd?.store.proxyDirectory() ?? null);
  if (etcd !== null) proxies.resetStored(EtcdStore.proxiesIn(etcd.entries));
  // Replicated: every replica follows the store from the revision it read.
  etcd?.store.follow(etcd.revision, {
    registry,
    health: () => (leading ? health : null),
    proxy: (id, value) => proxies.applyStored(id, value),
    proxiesReset: (present) => proxies.resetStored(present),
    kv: (key, value) => {
      tokens.applyStored(key, value);
      ca.tokens.applyStored(key, value);
      ca.applyStored(key, value);
    },
    connection: storeConnection,
  });

  metrics.observeProxies(proxies);
  proxyRoutes(app, proxies, () => formatHostPort(httpAddr.host, httpAddr.port));
  const signals = createSignals({
    registry,
    proxies: () => proxies.list(),
    clock,
    logger: logger.child({ component: 'signals' }),
    ...(opts.scrapeIntervalMs === undefined ? {} : { intervalMs: opts.scrapeIntervalMs }),
  });
  metrics.observeSignals(signals.scraper, signals.events, signals.store);
  // Each root rotation step is a mesh event (skein events, the dashboard).
  const unsubscribeCa = ca.subscribe((c) => signals.events.add(rotationMeshEvent(c)));
  signals.routes(app);
  meshEventsRoute(app, { registry, store: signals.store, events: signals.events, clock });
  tapRoutes(app, { proxies, knownService: (s) => knownService({ registry, store: signals.store }, s) });
  let mtlsListener: MtlsListener | null = null;
  caRoutes(app, { ca, renewUrl: () => mtlsListener?.url ?? null, proxies: () => proxies.list(), ...(opts.caAuthorize === undefined ? {} : { authorize: opts.caAuthorize }) });
  dashboardRoutes(app, opts.dashboardRoot === undefined ? {} : { root: opts.dashboardRoot });
  opts.routes?.(app);
  let httpAddr: HostPort = opts.http;
  let closed = false;
  let localTokenFile: string | null = null;
  const close = async () => {
    if (closed) return;
    closed = true;
    if (localTokenFile !== null) await removeLocalToken(localTokenFile, admin.token);
    unsubscribeCa();
    cutOffTimer?.cancel();
    signals.stop();
    health.stop();
    ca.stopIssuerRenewal();
    publisher.close();
    await app.close();
    await mtlsListener?.close();
    await dnsServer?.stop();
    await store.close();
  };
  try {
    await app.listen({ host: opts.http.host, port: opts.http.port });
    const a = app.server.address();
    if (a !== null && typeof a === 'object') httpAddr = { host: opts.http.host, port: a.port };
  } catch (e) {
    await close();
    throw listenError(e, 'the HTTP API', opts.http);
  }
  if (opts.dns !== null) {
    const dnsOpts: ConstructorParameters<typeof DnsServer>[0] = {
      registry,
      host: opts.dns.host,
      port: opts.dns.port,
      metrics: metrics.registry,
      logger,
    };
    if (opts.domain !== undefined) dnsOpts.domain = opts.domain;
    if (opts.dnsTtlSeconds !== undefined) dnsOpts.ttlSeconds = opts.dnsTtlSeconds;
    if (opts.dnsRateLimit !== undefined) {
      dnsOpts.rateLimit = opts.dnsRateLimit === 0 ? { enabled: false } : { enabled: true, responsesPerSecond: opts.dnsRateLimit, burst: 2 * opts.dnsRateLimit };
    }
    dnsServer = new DnsServer(dnsOpts);
    try {
      dnsAddr = await dnsServer.start();
    } catch (e) {
      await close();
      throw listenError(e, 'the DNS server', opts.dns);
    }
  }
  try {
    localTokenFile = await writeLocalToken(httpAddr.port, admin.token);
  } catch (e) {
    if (admin.path === null) {
      // With no data dir the local copy is the only one: without it nobody could ever write.
      await close();
      throw new SkeinError('SKEIN_E_FILE', `cannot write the admin token's local copy (${(e as Error).message}); with --data-dir none it is the only copy: give a --data-dir, or set XDG_RUNTIME_DIR to a directory of your own`);
    }
    logger.warn({ err: (e as Error).message }, 'could not write the local copy of the admin token: the CLI on this host needs --token, SKEIN_TOKEN or --data-dir');
  }
  const caListen = opts.caListen ?? { host: httpAddr.host, port: 0 };
  try {
    mtlsListener = await startMtlsListener({ ca, listen: caListen, clock, logger: logger.child({ component: 'ca' }), handler: (req, res) => app.routing(req, res) });
  } catch (e) {
    if ((e as SkeinError).code !== 'SKEIN_E_CA_UNAVAILABLE') {
      await close();
      throw listenError(e, 'the mTLS listener', caListen);
    }
    logger.error({ err: e }, 'the mTLS listener is not started: the CA has no valid issuer (proxies cannot renew, nor authenticate with their certificates)');
  }
  // Duties that run once: here (one replica), or on the elected one.
  if (etcd === null) {
    health.start();
    signals.start();
    ca.startIssuerRenewal();
  } else {
    const advertised = opts.advertise === undefined ? `http://${formatHostPort(httpAddr.host, httpAddr.port)}` : `http://${formatHostPort(opts.advertise, httpAddr.port)}`;
    etcd.store.lead(advertised, (elected) => {
      leading = elected;
      if (elected) {
        health.start();
        // Scraping the proxies (the other replicas forward reads here) and the CA's issuing key rotation.
        signals.start();
        ca.startIssuerRenewal();
      } else {
        health.stop();
        signals.pause();
        ca.stopIssuerRenewal();
      }
    });
  }
  fatal = (e) => {
    logger.fatal({ err: e }, 'store write failed: stopping (nothing unacknowledged was lost; restart to recover)');
    void close().finally(() => process.exit(1));
  };
  const url = `http://${formatHostPort(httpAddr.host, httpAddr.port)}`;
  return { http: httpAddr, dns: dnsAddr, registry, proxies, events: signals.events, ca, renewUrl: mtlsListener?.url ?? null, url, adminToken: admin.token, adminTokenFile: admin.path, localTokenFile, tokens, close };
}
