/**
 * `skein proxy`: one process serving one or more local workloads.
 *
 * Per workload:
 * - an *outbound* listener the workload's app calls other services through, as an HTTP proxy
 *   (`HTTP_PROXY=http://127.0.0.1:4140`, absolute-form requests) or by Host header
 *   (`user-service`, `user-service.service.skein`); each request goes to an endpoint of that
 *   service chosen by the service's balancer;
 * - an *inbound* listener in front of the workload's app: what the registry points other
 *   proxies at; it forwards to the app on its local port.
 *
 * The proxy keeps its own view of the mesh from the control plane's watch stream (WatchClient:
 * snapshot, then diffs; reconnects with backoff and resumes by revision) and keeps serving from
 * the last state it saw while the control plane is away.
 *
 * The listeners are listener.ts. Why this file is still ~760 lines: the proxy is what its
 * workloads share (the watch and its services' clients, the certificates and their renewal, the
 * persisted state, the pools, metrics and taps), and each of those is wired to the others here.
 */
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { DNS_LABEL_PATTERN } from '../api/names.js';
import type { Direction } from '../api/stats.js';
import { DEFAULT_BALANCER_POLICY } from '../api/balancer.js';
import type { HostPort } from '../core/address.js';
import { preciseClock, systemClock, type Clock } from '../core/clock.js';
import type { Rng } from '../core/backoff.js';
import { SkeinError } from '../core/errors.js';
import { makeEndpoint, type EndpointSet } from '../discovery/endpoint.js';
import { WatchClient } from '../discovery/watch-client.js';
import { ControlReplicas } from '../discovery/control-replicas.js';
import { PROXY_STATE_DEFAULTS, PROXY_STATE_FORMAT, type PersistedCredential, type ProxyStateFile } from '../api/proxy-state.js';
import { Listener } from './listener.js';
import { StateWriter } from './state-file.js';
import type { TimerHandle } from '../core/clock.js';
import { coarseNow } from './http1/coarse-clock.js';
import { Mirrors } from '../engine/mirror.js';
import { H2Pools } from './http2/pool.js';
import { HTTP2_DEFAULTS, parseHttp2, type Http2Settings, type RawHttp2 } from '../api/http2.js';
import type { Tracer } from '../engine/observe.js';
import { DEFAULT_LIMITS, type Limits, type RouteError } from './http1/types.js';
import { localDestination, ServiceClient, type Destination } from '../engine/service-client.js';
import { TapHub } from '../telemetry/tap.js';
import { Pools } from './http1/upstream.js';
import { ProxyMetrics } from './metrics.js';
import { ActiveChecker } from '../engine/active-check.js';
import { meshProbe } from '../identity/mtls/probe.js';
import type { AccessLog } from './access-log.js';
import type { AuditSink } from '../api/audit.js';
import { ProxyAudit } from '../telemetry/audit-log.js';
import { DEFAULT_TRAFFIC, inboundTraffic } from '../api/traffic.js';
import { TrafficState, type TrafficEvent } from '../resilience/traffic-state.js';
import type { MtlsMode } from '../api/mtls.js';
import type { Protocol, Service } from '../api/types.js';
import { serviceProtocol } from '../api/parse.js';
import type { CaInfo, WorkloadTls } from '../api/ca.js';
import { AUTHZ_DEFAULTS } from '../api/authz/model.js';
import type { AuthzDefault } from '../api/authz/schema.js';
import { ServiceAuthz } from '../engine/authorization.js';
import type { Endpoint } from '../discovery/endpoint.js';
import type { Refusal } from '../engine/service-client.js';
import { randomBytes } from 'node:crypto';
import type { CertificateSource, ControlCall, Identities, IdentityEvent } from '../identity/mtls/identities.js';
import type { InboundTls, InboundTlsServer, PeerIdentity } from './tls/inbound.js';
import type { OutboundTls, UpstreamTls } from '../identity/mtls/outbound.js';

export type { HostPort };

export interface WorkloadSpec {
  /** Names the workload in metrics and logs (a replica id such as `web-1`, or a service name). */
  readonly name: string;
  /** The service the inbound listener serves (default: the name). */
  readonly service?: string;
  readonly outbound?: HostPort | null;
  readonly inbound?: HostPort | null;
  /** The local app behind the inbound listener (required with inbound). */
  readonly app?: HostPort | null;
  /** The app's version: its inbound requests are counted under it (per-version golden signals, a canary's analysis). */
  readonly version?: string;
  /**
   * Pins the outbound listener to one service: every request goes to it whatever its Host
   * (a stable local port for a service, for browsers and other clients that cannot set Host).
   */
  readonly pin?: string | null;
  /**
   * What the workload's listeners carry: `tcp`, opaque streams (the inbound one to its app, a
   * pinned outbound one to its service; src/proxy/tcp); anything else, HTTP. Absent: what the
   * service's definition declares (the served service inbound, the pinned one outbound), looked up
   * at each new connection; an outbound listener that is not pinned always speaks HTTP.
   */
  readonly protocol?: Protocol;
}

export interface WorkloadInfo {
  readonly name: string;
  readonly service: string;
  readonly outbound: string | null;
  readonly inbound: string | null;
  readonly app: string | null;
  readonly pin: string | null;
  /** The protocol the workload was given (absent: its service's, looked up per connection). */
  readonly protocol?: Protocol;
  /** With mTLS: what the workload's certificate trusts and chains to (announced, for root rotation). */
  readonly tls?: WorkloadTls | null;
}

/** Static stability (docs/proxy.md#static-stability): where the state is kept, and what was read there at start. */
export interface ProxyStateOptions {
  /** --state-dir: written after every change once the proxy is live. */
  readonly dir: string;
  /** The state read at start (checked: src/proxy/state-file.ts), served if no control plane answers within `waitMs`; null: none. */
  readonly loaded: ProxyStateFile | null;
  /** Default PROXY_STATE_DEFAULTS.waitMs. */
  readonly waitMs?: number;
  /** Default PROXY_STATE_DEFAULTS.debounceMs. */
  readonly debounceMs?: number;
}

/** Where the proxy's view of the mesh comes from (`/ready`, `/debug/endpoints`). */
export type ViewSource = 'live' | 'stale' | 'none';

export interface ProxyOptions {
  /**
   * The control plane's base URL, or its replicas' (the proxy fails over between them:
   * src/discovery/control-replicas.ts); null: no discovery (inbound only).
   */
  readonly controlUrl: string | readonly string[] | null;
  /** The replicas to use (shared with the CLI's ControlCa and Announcer); absent: made from `controlUrl`. */
  readonly control?: ControlReplicas | null;
  /** --state-dir: persist the last-known state, and serve from it when no control plane answers at start. Null or absent: off. */
  readonly state?: ProxyStateOptions | null;
  /** DNS zone of service names: `<service>.service.<domain>` is accepted as a Host. Default "skein". */
  readonly domain?: string;
  readonly limits?: Partial<Limits>;
  /** HTTP/2 settings (src/api/http2.ts: defaults and bounds); absent: the defaults. */
  readonly http2?: RawHttp2;
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** One JSON line per finished request (see access-log.ts); null or absent: off. */
  readonly accessLog?: AccessLog | null;
  /** The audit log (src/telemetry/audit-log.ts): authorization denies, dry-run denies, audit matches, refused mTLS handshakes. Null or absent: off. */
  readonly audit?: AuditSink | null;
  /** Per-request metrics (default true); false keeps only the counters that are not per request. */
  readonly requestMetrics?: boolean;
  /** Spans per hop and attempt (src/telemetry/trace.ts); null or absent: off. */
  readonly tracer?: Tracer | null;
  /** Names the proxy to the control plane (its metrics, `skein tap`). Default: proxy-<pid>. */
  readonly id?: string;
  /** Randomness of calls (backoff jitter, fault injection; uniform in [0, 1)). Default Math.random; tests seed it. */
  readonly rng?: Rng;
  /**
   * mTLS between proxies (docs/security.md): where certificates come from (the mesh CA), the
   * trust domain and the mesh's mode. Absent or null: off.
   */
  readonly mtls?: { readonly source: CertificateSource; readonly trustDomain: string; readonly mode: MtlsMode; readonly info?: CaInfo } | null;
  /** What inbound listeners decide for a service without ALLOW policies or a default of its own. Default AUTHZ_DEFAULTS.meshDefault (allow). */
  readonly authzDefault?: AuthzDefault;
  /**
   * A service scaled to zero got a request (its policy's `coldStart`): the proxy holds it and
   * calls this to have the service woken (skein up: its runtime; skein proxy: the control plane's
   * POST /v1/mesh/services/{service}/wake). At most once a second per service while requests wait.
   */
  readonly onColdStart?: (service: string) => void;
  /**
   * Listen with SO_REUSEPORT (`skein proxy --workers N`: one Proxy per worker thread on the same
   * ports, the kernel spreading new connections among them; src/proxy/workers.ts). Default false.
   */
  readonly reusePort?: boolean;
  /**
   * mTLS: TLS session-ticket keys (48 bytes) shared with the other proxies on the same ports (a
   * worker of `--workers N`: its main thread's), replaced only by `identities.setTicketKeys`.
   * Absent: the proxy's own, new ones when a root leaves the trust bundle.
   */
  readonly ticketKeys?: Buffer;
}

/** One listener's connections: open now, and accepted since it started (a worker's share: /debug/endpoints). */
export interface ListenerConnections {
  readonly workload: string;
  readonly direction: Direction;
  readonly open: number;
  readonly accepted: number;
}

const SERVICE_NAME = new RegExp(DNS_LABEL_PATTERN);

/**
 * The mTLS modules: certificates, CSRs and their parsing (@peculiar/x509 and its ASN.1 schemas,
 * ~200 modules and ~10 MB of RSS), loaded only by a proxy with mTLS on (docs/benchmarks.md,
 * "Memory after (issue 16)"). The constructor starts loading them; `addWorkload` waits for them.
 */
async function loadTls() {
  const [{ Identities }, { InboundTlsServer }, { OutboundTls }] = await Promise.all([import('../identity/mtls/identities.js'), import('./tls/inbound.js'), import('../identity/mtls/outbound.js')]);
  return { Identities, InboundTlsServer, OutboundTls };
}
type TlsModules = Awaited<ReturnType<typeof loadTls>>;

/** The path callers' proxies probe a service on (its http active health check), or null. */
function probePathOf(def: Service | null | undefined): string | null {
  const c = def?.traffic.activeHealthCheck;
  return c != null && c.type === 'http' ? c.path : null;
}

interface Workload {
  readonly spec: WorkloadSpec;
  readonly info: WorkloadInfo;
  readonly listeners: Listener[];
}

export class Proxy {
  readonly limits: Limits;
  readonly pools: Pools;
  /** HTTP/2 settings (src/api/http2.ts) and the upstream HTTP/2 sessions. */
  readonly http2: Http2Settings;
  readonly h2Pools: H2Pools;
  readonly metrics: ProxyMetrics;
  /** Copies of requests to their routes' mirrors, for every outbound listener (src/engine/mirror.ts). */
  readonly mirrors: Mirrors;
  readonly watch: WatchClient | null;
  /** The control-plane replicas every call of the proxy goes to (null: no control plane). */
  readonly control: ControlReplicas | null;
  readonly domainSuffix: string;
  readonly accessLog: AccessLog | null;
  readonly audit: ProxyAudit | null;
  readonly tap = new TapHub();
  readonly tracer: Tracer | null;
  /** Randomness of calls: backoff jitter and fault injection. */
  readonly rng: Rng;
  readonly requestMetrics: boolean;
  /** Listeners bind with SO_REUSEPORT (ProxyOptions.reusePort). */
  readonly reusePort: boolean;
  private readonly clock: Clock;
  readonly logger: Logger | undefined;
  private readonly services = new Map<string, ServiceClient>();
  /** The inbound listeners' authorization, by the service they serve. */
  private readonly authzs = new Map<string, ServiceAuthz>();
  private readonly authzDefault: AuthzDefault;
  /** The inbound listeners' traffic state, by the service they serve (for its inbound rate limits). */
  private readonly inbound = new Map<string, TrafficState[]>();
  /** Authority -> service name (or null), for the few authorities a proxy sees over and over. */
  private readonly serviceNames = new Map<string, string | null>();
  private readonly workloads = new Map<string, Workload>();
  private sweeper: NodeJS.Timeout | null = null;
  private stopped = false;
  /** mTLS on: the proxy's certificates (null until the mTLS modules are loaded: `tlsReady`), and how outbound connections use them. */
  private ids: Identities | null = null;
  private readonly mtlsMode: MtlsMode;
  private outboundTls: OutboundTls | null = null;
  /** The mTLS modules once loaded (null: mTLS off, or not loaded yet). */
  private tlsModules: TlsModules | null = null;
  /** Settles once the mTLS modules are loaded and the identities made (at once with mTLS off). */
  private readonly tlsLoaded: Promise<void>;
  private started = false;
  private readonly onColdStart: ((service: string) => void) | null;
  private readonly stateOpts: ProxyStateOptions | null;
  private readonly stateWriter: StateWriter | null;
  /** While serving from the persisted state: when it was saved (ISO); null when live or never restored. */
  private staleSavedAt: string | null = null;
  private stateTimer: TimerHandle | null = null;
  /** With mTLS: GET /v1/ca as the proxy last saw it (persisted with the certificates). */
  private caInfo: CaInfo | null = null;

  constructor(opts: ProxyOptions) {
    this.onColdStart = opts.onColdStart ?? null;
    this.limits = Object.freeze({ ...DEFAULT_LIMITS, ...opts.limits });
    this.pools = new Pools(this.limits.maxIdlePerEndpoint);
    // Validated only when given: the schema checker (Ajv) loads only when something is checked.
    this.http2 = opts.http2 === undefined ? HTTP2_DEFAULTS : parseHttp2(opts.http2);
    this.h2Pools = new H2Pools(this.http2);
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger;
    this.accessLog = opts.accessLog ?? null;
    this.tracer = opts.tracer ?? null;
    this.rng = opts.rng ?? Math.random;
    this.requestMetrics = opts.requestMetrics ?? true;
    this.reusePort = opts.reusePort ?? false;
    this.domainSuffix = `.service.${opts.domain ?? 'skein'}`;
    this.metrics = new ProxyMetrics({
      connections: () => this.connections(),
      idleUpstreams: () => this.pools.idleConnections(),
      endpoints: () => [...this.services.values()].map((s) => ({ service: s.service, count: s.balancer.set.size })),
      watchConnected: () => this.watch?.connected ?? false,
      traffic: () => [...this.services.values()].map((s) => s.traffic),
      certificates: () => this.identities?.list() ?? [],
    }, opts.id, (e) => {
      // A certificate issued or renewed is routine; everything else the proxy raises is a warning.
      const routine = (e.type === 'certificate' && !e.detail.startsWith('renewing')) || e.type === 'cold-start';
      this.logger?.[routine ? 'info' : 'warn']({ service: e.service, instance: e.instance, type: e.type }, e.detail);
    });
    const byName = this.outboundResolver(null);
    this.mirrors = new Mirrors(this.metrics, preciseClock, this.rng, (service) => {
      const d = byName(service);
      return 'error' in d ? null : d;
    });
    this.authzDefault = opts.authzDefault ?? AUTHZ_DEFAULTS.meshDefault;
    this.audit = opts.audit == null ? null : new ProxyAudit(opts.audit, this.clock, () => this.watch?.revision ?? null, (service) => this.identities?.identityOf(service) ?? null);
    const mtls = opts.mtls ?? null;
    this.mtlsMode = mtls?.mode ?? 'off';
    this.caInfo = mtls?.info ?? null;
    if (mtls === null || mtls.mode === 'off') this.tlsLoaded = Promise.resolve();
    else {
      this.tlsLoaded = loadTls().then((m) => {
        this.tlsModules = m;
        this.ids = new m.Identities({ source: mtls.source, trustDomain: mtls.trustDomain, clock: this.clock, rng: this.rng, ticketKeys: opts.ticketKeys ?? randomBytes(48), ticketKeysShared: opts.ticketKeys !== undefined, onEvent: (e) => this.identityEvent(e) });
        this.outboundTls = new m.OutboundTls(this.ids, (service) => this.modeOf(service));
        if (this.started && !this.stopped) this.ids.startTrustPolling();
      });
      // Awaited by addWorkload and tlsReady; not a crash before either is called.
      this.tlsLoaded.catch(() => undefined);
    }
    this.stateOpts = opts.state ?? null;
    if (opts.controlUrl === null) {
      this.watch = null;
      this.control = null;
      this.stateWriter = null;
    } else {
      const log = this.logger;
      const control = opts.control ?? new ControlReplicas(typeof opts.controlUrl === 'string' ? [opts.controlUrl] : opts.controlUrl, this.clock);
      this.control = control;
      control.on('switch', (from, to, reason) => log?.warn({ from, to, reason }, 'control plane replica failed; moving to the next'));
      this.watch = new WatchClient({ control, clock: this.clock, ...(log === undefined ? {} : { logger: log }) });
      const so = this.stateOpts;
      this.stateWriter =
        so === null
          ? null
          : new StateWriter({
              dir: so.dir,
              clock: this.clock,
              debounceMs: so.debounceMs ?? PROXY_STATE_DEFAULTS.debounceMs,
              collect: () => this.collectState(),
              onError: (e) => log?.warn({ dir: so.dir, err: e.message }, 'could not write the proxy state (static stability)'),
            });
      // Only a live state is written: the persisted one keeps the time it was saved.
      this.watch.on('changed', () => {
        if (this.staleSavedAt === null) this.stateWriter?.changed();
      });
      this.watch.on('update', (service, set) => this.services.get(service)?.update(set));
      this.watch.on('service', (service, def) => {
        this.services.get(service)?.setDefinition(def);
        for (const t of this.inbound.get(service) ?? []) t.setPolicy(inboundTraffic(def?.traffic ?? DEFAULT_TRAFFIC));
        this.authzs.get(service)?.update(def?.authorization, probePathOf(def));
      });
      this.watch.on('connected', () => {
        log?.info({ control: control.current }, 'watching the control plane');
        if (this.staleSavedAt !== null) {
          log?.info({ control: control.current, stateSavedAt: this.staleSavedAt }, 'a control plane answers: live again (no longer serving the persisted state)');
          this.staleSavedAt = null;
          this.stateWriter?.changed();
        }
      });
      this.watch.on('disconnected', (err) => log?.warn({ control: control.current, err: err.message }, 'lost the control plane; serving from the last state seen'));
    }
  }

  start(): void {
    this.watch?.start();
    const loaded = this.stateOpts?.loaded ?? null;
    if (loaded !== null && this.watch !== null) {
      this.stateTimer = this.clock.setTimeout(() => this.restore(loaded), this.stateOpts?.waitMs ?? PROXY_STATE_DEFAULTS.waitMs);
    }
    this.started = true;
    this.ids?.startTrustPolling();
    this.sweeper = setInterval(() => this.sweep(), 1000);
    this.sweeper.unref();
  }

  /** mTLS on: the proxy's certificates (null while the mTLS modules load: see `tlsReady`); null with mTLS off. */
  get identities(): Identities | null {
    return this.ids;
  }

  /**
   * The proxy's certificates once the mTLS modules are loaded (null: mTLS off). `addWorkload`
   * waits for them itself; a caller that restores or obtains certificates first awaits this.
   */
  async tlsReady(): Promise<Identities | null> {
    await this.tlsLoaded;
    return this.ids;
  }

  /** True once the proxy can route: it has had a snapshot, or serves the persisted state (or needs none). */
  get ready(): boolean {
    return this.watch === null || this.watch.revision !== null;
  }

  /** Where the view comes from: the control plane (live), the persisted state (stale), or nowhere yet. */
  get viewSource(): ViewSource {
    if (this.watch === null || this.watch.revision === null) return this.watch === null ? 'live' : 'none';
    return this.staleSavedAt === null ? 'live' : 'stale';
  }

  /** While stale: when the state served was saved (ISO). */
  get stateSavedAt(): string | null {
    return this.staleSavedAt;
  }

  /** No control plane answered in time: serve the persisted state until one does. */
  private restore(state: ProxyStateFile): void {
    this.stateTimer = null;
    const w = this.watch;
    // A replica that answered already (its snapshot on the way) is worth more than the file.
    if (w === null || w.revision !== null || w.connected || this.stopped) return;
    this.staleSavedAt = state.savedAt;
    if (!w.restore(state.watch)) {
      this.staleSavedAt = null;
      return;
    }
    this.logger?.warn(
      { stateSavedAt: state.savedAt, revision: state.watch.revision, services: w.services().length, control: this.control?.urls },
      'no control plane answered: serving the persisted state (stale) until one does',
    );
  }

  /** The state to persist (null before the first snapshot). */
  private collectState(): ProxyStateFile | null {
    const w = this.watch;
    if (w === null || w.revision === null || this.control === null) return null;
    return {
      format: PROXY_STATE_FORMAT,
      savedAt: new Date(this.clock.now()).toISOString(),
      control: this.control.urls,
      watch: w.snapshot(),
      tls: this.tlsState(),
    };
  }

  /** With mTLS: the certificates held (keys included: the file is 0600) and what the CA said. */
  private tlsState(): ProxyStateFile['tls'] {
    const ids = this.identities;
    const info = this.caInfo;
    if (ids === null || info === null) return null;
    const credentials: PersistedCredential[] = ids.list().map((c) => ({ service: c.service, keyPem: c.keyPem, certPem: c.certPem, chainPem: c.chainPem, roots: c.roots }));
    return { ca: info, credentials };
  }

  private *listeners(): Iterable<Listener> {
    for (const w of this.workloads.values()) yield* w.listeners;
  }

  private sweep(): void {
    const now = coarseNow();
    for (const l of this.listeners()) l.sweep(now);
    this.pools.sweep(now, this.limits.upstreamIdleTimeoutMs);
  }

  // ---- authorization ----

  /** The authorization of `service`'s inbound listeners (one per service, kept while the proxy runs). */
  authzOf(service: string): ServiceAuthz {
    let a = this.authzs.get(service);
    if (a === undefined) {
      a = new ServiceAuthz(service, this.authzDefault);
      const def = this.watch?.definition(service);
      a.update(def?.authorization, probePathOf(def));
      this.authzs.set(service, a);
    }
    return a;
  }

  // ---- mTLS ----

  /**
   * The mTLS mode of a service: its own, over the mesh's. A proxy without identities (mesh mode
   * off) has none to present: off whatever the service says.
   */
  modeOf(service: string): MtlsMode {
    if (this.identities === null) return 'off';
    return this.watch?.definition(service)?.mtlsMode ?? this.mtlsMode;
  }

  /** How an inbound listener of `service` takes connections, calling `serve` with each connection ready for HTTP; null: plaintext. */
  inboundTlsServer(service: string, serve: (socket: Socket, peer: PeerIdentity | null) => void): InboundTlsServer | null {
    const tls = this.inboundTls(service);
    const m = this.tlsModules;
    return tls === null || m === null ? null : new m.InboundTlsServer(tls, serve);
  }

  /** What an inbound listener of `service` needs of the proxy for mTLS; null: plaintext. */
  private inboundTls(service: string): InboundTls | null {
    const ids = this.identities;
    if (ids === null) return null;
    return {
      mode: () => this.modeOf(service),
      service,
      identities: ids,
      handshakeTimeoutMs: this.limits.headersTimeoutMs,
      onRefused: (reason, detail, peer) => {
        this.metrics.tlsRefused('inbound', reason, detail, null, peer);
        this.audit?.tlsRefused('inbound', reason, detail, peer, service);
      },
      onAccepted: (kind) => this.metrics.inboundConnection(kind),
    };
  }

  /**
   * The control plane's API authenticated by a certificate the proxy holds (over its mTLS
   * listener), for the proxy's own calls (its announcements); null while it holds none.
   */
  controlCall(): ControlCall | null {
    return this.identities?.controlCall() ?? null;
  }

  /**
   * How an active check reaches `e`: over mTLS as any identity the proxy holds (the callee's
   * proxy lets any mesh identity GET its service's probe path: see ServiceAuthz).
   */
  private probeTls(e: Endpoint): UpstreamTls | Refusal | null {
    const any = this.identities?.list()[0];
    return any === undefined ? null : this.upstreamTls(any.service, e);
  }

  upstreamTls(caller: string, e: Endpoint): UpstreamTls | Refusal | null {
    return this.outboundTls?.forEndpoint(caller, e) ?? null;
  }

  /** What the identities report: metrics, events and the log. */
  private identityEvent(e: IdentityEvent): void {
    const metrics = this.metrics;
    if (e.type !== 'trust-poll-failed' && e.type !== 'renewal-failed' && this.staleSavedAt === null) this.stateWriter?.changed();
    if (e.type === 'trust-poll-failed') {
      this.logger?.warn({ err: e.error }, 'could not ask the mesh CA for its trust bundle (asking again later)');
      return;
    }
    if (e.type === 'trust') {
      const detail = `trust bundle changed: trusts roots ${e.roots.map((r) => r.slice(0, 16)).join(', ')}${e.removed.length === 0 ? '' : `; removed ${e.removed.map((r) => r.slice(0, 16)).join(', ')} (TLS ticket keys rotated, sessions forgotten)`}`;
      for (const c of this.identities?.list() ?? []) metrics.certificate(c.service, true, detail, false);
      this.logger?.info({ roots: e.roots, removed: e.removed }, 'trust bundle changed');
      return;
    }
    if (e.type === 'renewal-failed') metrics.certificate(e.service, false, `renewing the certificate of ${e.identity} failed (next try in ${Math.round(e.retryInMs / 1000)} s): ${e.error}`, true);
    else metrics.certificate(e.service, true, `${e.type === 'issued' ? 'got' : 'renewed'} the certificate of ${e.identity} (serial ${e.serial}, valid until ${new Date(e.notAfter).toISOString()})`, e.type === 'renewed');
  }

  // ---- routing ----

  /** The service a Host / authority names: `name`, `name:port`, `name.service.<domain>`. */
  serviceOf(authority: string): string | null {
    const cached = this.serviceNames.get(authority);
    if (cached !== undefined) return cached;
    const name = this.parseServiceName(authority);
    if (this.serviceNames.size >= 1024) this.serviceNames.clear();
    this.serviceNames.set(authority, name);
    return name;
  }

  private parseServiceName(authority: string): string | null {
    let host = authority;
    if (host.charCodeAt(0) === 0x5b) return null; // [IPv6]
    const colon = host.lastIndexOf(':');
    if (colon >= 0) host = host.slice(0, colon);
    host = host.toLowerCase();
    if (host.endsWith('.')) host = host.slice(0, -1);
    if (host.endsWith(this.domainSuffix)) host = host.slice(0, -this.domainSuffix.length);
    return SERVICE_NAME.test(host) ? host : null;
  }

  private serviceState(name: string): ServiceClient | null {
    let s = this.services.get(name);
    if (s !== undefined) return s;
    const w = this.watch;
    if (w === null || !w.knows(name)) return null;
    s = new ServiceClient(name, w.definition(name), w.endpoints(name), this.clock, (e) => this.trafficEvent(e), (traffic, policy, clock) => new ActiveChecker(traffic, policy, clock, meshProbe(this.outboundTls === null ? null : (e) => this.probeTls(e))));
    this.services.set(name, s);
    return s;
  }

  private outboundResolver(pin: string | null): (authority: string | null) => Destination | RouteError {
    return (authority) => {
      let name = pin;
      if (name === null) {
        if (authority === null || authority === '') return { error: 'SKEIN_E_NO_ROUTE', message: 'the request names no service (no Host header)' };
        name = this.serviceOf(authority);
        if (name === null) return { error: 'SKEIN_E_NO_ROUTE', message: `"${authority.slice(0, 200)}" is not a service name (use <service> or <service>${this.domainSuffix})` };
      }
      const cached = this.services.get(name);
      if (cached !== undefined) return cached;
      if (!this.ready) return { error: 'SKEIN_E_DISCOVERY_UNAVAILABLE', message: 'the proxy has not yet heard from the control plane' };
      const s = this.serviceState(name);
      if (s === null) return { error: 'SKEIN_E_UNKNOWN_SERVICE', message: `no service "${name}" is registered`, status: 503 };
      return s;
    };
  }

  private trafficEvent(e: TrafficEvent): void {
    this.metrics.trafficEvent(e);
    if (e.type === 'cold-start') {
      try {
        this.onColdStart?.(e.service);
      } catch (err) {
        this.logger?.warn({ service: e.service, err }, 'could not ask for the service to be woken');
      }
      return;
    }
    const log = this.logger;
    if (log === undefined) return;
    if (e.type === 'eject') log.warn({ service: e.service, endpoint: e.endpoint, reason: e.reason, ejections: e.ejections, until: e.untilMs === null ? null : new Date(e.untilMs).toISOString() }, 'outlier ejected');
    else if (e.type === 'return') log.info({ service: e.service, endpoint: e.endpoint, reason: e.reason }, 'outlier returned');
    else if (e.type === 'breaker') log[e.to === 'closed' ? 'info' : 'warn']({ service: e.service, endpoint: e.endpoint, from: e.from, to: e.to, reason: e.reason }, 'breaker');
    else if (e.type === 'active-check') log[e.healthy ? 'info' : 'warn']({ service: e.service, endpoint: e.endpoint, healthy: e.healthy, reason: e.reason }, 'active health check');
    else if (e.type === 'panic') log[e.panicking ? 'warn' : 'info']({ service: e.service, endpoints: e.endpoints, available: e.available, ejected: e.ejected, failingActiveChecks: e.failingActiveChecks, threshold: e.threshold }, e.panicking ? 'panic mode entered' : 'panic mode left');
  }

  private inboundDestination(l: Listener, service: string, app: HostPort, version: string): Destination {
    const e = makeEndpoint({ service, id: l.workload, address: app.host, port: app.port, version });
    const traffic = new TrafficState({ service, policy: inboundTraffic(this.watch?.definition(service)?.traffic ?? DEFAULT_TRAFFIC), clock: this.clock });
    let list = this.inbound.get(service);
    if (list === undefined) this.inbound.set(service, (list = []));
    list.push(traffic);
    return localDestination(service, e, traffic);
  }

  // ---- workloads ----

  async addWorkload(spec: WorkloadSpec): Promise<WorkloadInfo> {
    if (this.stopped) throw new SkeinError('SKEIN_E_PROXY_DRAINING', 'the proxy is stopping');
    if (this.workloads.has(spec.name)) throw new SkeinError('SKEIN_E_USAGE', `workload "${spec.name}" exists already`, { field: 'name' });
    const service = spec.service ?? spec.name;
    await this.tlsLoaded;
    if (this.identities !== null && this.mtlsMode !== 'off') {
      try {
        await this.identities.obtain([service]);
      } catch (e) {
        throw new SkeinError('SKEIN_E_USAGE', `workload "${spec.name}": no certificate for service "${service}" from the mesh CA: ${(e as Error).message}`, { field: 'workload', cause: e });
      }
    }
    const listeners: Listener[] = [];
    let outbound: string | null = null;
    let inbound: string | null = null;
    try {
      if (spec.outbound != null) {
        const pin = spec.pin ?? null;
        if (spec.protocol === 'tcp' && pin === null) throw new SkeinError('SKEIN_E_USAGE', `workload "${spec.name}": an outbound listener of protocol tcp carries streams to one service: pin it (pin=SERVICE)`, { field: 'pin' });
        const out: Listener = new Listener(this, spec.name, service, 'outbound', this.outboundResolver(pin), pin === null ? () => false : this.tcpOf(spec, pin), pin !== null);
        listeners.push(out);
        outbound = await out.listen(spec.outbound);
      }
      if (spec.inbound != null) {
        const app = spec.app;
        if (app == null) throw new SkeinError('SKEIN_E_USAGE', `workload "${spec.name}": an inbound listener needs the app's address (app=HOST:PORT)`, { field: 'app' });
        const inb: Listener = new Listener(this, spec.name, service, 'inbound', () => inb.destination(service, () => this.inboundDestination(inb, service, app, spec.version ?? '')), this.tcpOf(spec, service));
        listeners.push(inb);
        inbound = await inb.listen(spec.inbound);
      }
    } catch (e) {
      for (const l of listeners) await l.drain(0);
      throw e;
    }
    const info: WorkloadInfo = { name: spec.name, service, outbound, inbound, app: spec.app == null ? null : `${spec.app.host}:${spec.app.port}`, pin: spec.pin ?? null, ...(spec.protocol === undefined ? {} : { protocol: spec.protocol }) };
    this.workloads.set(spec.name, { spec, info, listeners });
    return info;
  }

  /** Whether a new connection of `spec`'s listener for `service` is a TCP stream: as the spec says, else as the service's definition declares. */
  private tcpOf(spec: WorkloadSpec, service: string): () => boolean {
    if (spec.protocol !== undefined) {
      const tcp = spec.protocol === 'tcp';
      return () => tcp;
    }
    return () => this.isTcpService(service);
  }

  /** Whether `service`'s definition declares protocol tcp (as the watch last said). */
  isTcpService(service: string): boolean {
    return serviceProtocol(this.watch?.definition(service)) === 'tcp';
  }

  /** Stops a workload's listeners, letting requests in flight finish for up to `graceMs`. */
  async removeWorkload(name: string, graceMs = 5000): Promise<void> {
    const w = this.workloads.get(name);
    if (w === undefined) return;
    this.workloads.delete(name);
    await Promise.all(w.listeners.map((l) => l.drain(graceMs)));
    for (const l of w.listeners) {
      if (l.direction !== 'inbound') continue;
      for (const d of l.allDestinations()) {
        const list = this.inbound.get(d.service);
        const i = list?.indexOf(d.traffic) ?? -1;
        if (list !== undefined && i >= 0) list.splice(i, 1);
        if (list?.length === 0) this.inbound.delete(d.service);
      }
    }
  }

  workloadInfo(): WorkloadInfo[] {
    const ids = this.identities;
    return [...this.workloads.values()].map((w) => (ids === null ? w.info : { ...w.info, tls: ids.report(w.info.service) }));
  }

  /** Whether the proxy's view of `service` includes an endpoint with this key. */
  hasEndpoint(service: string, key: string): boolean {
    const set = this.watch?.endpoints(service);
    return set !== undefined && set.get(key) !== undefined;
  }

  /**
   * Resolves once the proxy no longer routes `service` to the endpoint `key` (at once if it does
   * not), or after `timeoutMs`; true when it is gone.
   */
  whenEndpointGone(service: string, key: string, timeoutMs: number): Promise<boolean> {
    const w = this.watch;
    if (w === null || !this.hasEndpoint(service, key)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const onUpdate = (s: string, set: EndpointSet) => {
        if (s === service && !set.has(key)) done(true);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      const done = (gone: boolean) => {
        clearTimeout(timer);
        w.off('update', onUpdate);
        resolve(gone);
      };
      w.on('update', onUpdate);
    });
  }

  /** Each listener's connections: open now and accepted so far. */
  connections(): ListenerConnections[] {
    return [...this.listeners()].map((l) => ({ workload: l.workload, direction: l.direction, open: l.conns.size, accepted: l.accepted }));
  }

  /** Requests in flight from this proxy's outbound listeners to `service`; null when it has no client for it. */
  inFlight(service: string): number | null {
    return this.services.get(service)?.traffic.active ?? null;
  }

  /** What the proxy believes about each service (the admin's /debug/endpoints). */
  debugEndpoints(): object {
    const w = this.watch;
    const services: Record<string, object> = {};
    if (w !== null) {
      for (const name of w.services()) {
        const state = this.services.get(name);
        const def = w.definition(name);
        services[name] = {
          balancer: state?.policy ?? def?.balancer ?? DEFAULT_BALANCER_POLICY,
          inUse: state !== undefined,
          ...(state === undefined ? {} : { traffic: state.traffic.debug(), splits: state.debugSplits(), held: state.held }),
          endpoints: w.endpoints(name).list().map((e) => ({ id: e.id, address: e.address, port: e.port, weight: e.weight, zone: e.zone, version: e.version })),
        };
      }
    }
    return {
      ready: this.ready,
      control:
        w === null || this.control === null
          ? null
          : {
              url: w.controlUrl,
              urls: this.control.report(),
              connected: w.connected,
              status: this.staleSavedAt === null ? w.status : 'stale',
              stateSavedAt: this.staleSavedAt,
              revision: w.revision,
              lastContact: w.lastContact === null ? null : new Date(w.lastContact).toISOString(),
            },
      workloads: this.workloadInfo(),
      services,
    };
  }

  /** Drains every listener (up to `graceMs`), stops watching, closes pooled connections. */
  async stop(graceMs = 5000): Promise<void> {
    this.stopped = true;
    await Promise.all([...this.workloads.keys()].map((n) => this.removeWorkload(n, graceMs)));
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.stateTimer?.cancel();
    this.watch?.stop();
    await this.stateWriter?.stop();
    this.identities?.stop();
    for (const s of this.services.values()) s.stop();
    this.pools.closeAll();
    this.h2Pools.closeAll();
  }
}
