/**
 * The proxyless client: an undici Dispatcher that sends requests for `http://<service>` origins
 * through the mesh in-process, with the proxy's engine (route match, admission, deadlines,
 * retries and the budget, breakers, outlier detection, panic threshold, the same errors), and
 * every other origin to undici's Agent unchanged.
 *
 *   import { setGlobalDispatcher } from 'undici';
 *   import { createMeshDispatcher } from 'skein/sdk';
 *   setGlobalDispatcher(createMeshDispatcher({ control: 'http://127.0.0.1:7400', service: 'web' }));
 *   const res = await fetch('http://user-service/users/1');
 *
 * Its view of the mesh is the proxy's (mesh.ts: the watch stream, kept while the control plane is
 * away); each request is a MeshRequest (request.ts) driving an engine Call over an undici Pool per
 * endpoint (the Pools are this file's).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent, Dispatcher, Pool } from 'undici';
import { formatHostPort, parseHostPort, type HostPort } from '../core/address.js';
import { Announcer, wakeService } from '../telemetry/announce.js';
import { preciseClock, systemClock, type Clock } from '../core/clock.js';
import type { Rng } from '../core/backoff.js';
import { SkeinError } from '../core/errors.js';
import type { Endpoint } from '../discovery/endpoint.js';
import type { WatchLogger } from '../discovery/watch-client.js';
import type { TrafficEvent } from '../resilience/traffic-state.js';
import { MeshView } from './mesh.js';
import { ActiveChecker } from '../engine/active-check.js';
import { meshProbe } from '../identity/mtls/probe.js';
import { Mirrors } from '../engine/mirror.js';
import { MeshRequest, type FinishedRequest, type RequestContext } from './request.js';
import { SdkMetrics } from './metrics.js';
import type { meshConnector, SdkTls } from './tls.js';
import { JOIN_TOKEN_ENV, MTLS_DEFAULT_MODE, MTLS_ENV, MTLS_MODES, type MtlsMode } from '../api/mtls.js';
import { TOKEN_ENV } from '../api/auth.js';
import { TRAFFIC_DEFAULTS } from '../api/traffic.js';
import type { Refusal } from '../engine/service-client.js';

export interface MeshDispatcherOptions {
  /** The control plane's base URL (e.g. `http://127.0.0.1:7400`), or its replicas'. */
  readonly control: string | readonly string[];
  /**
   * The calling service: sent as `x-skein-caller` (the callee's metrics name it), the source of
   * the SDK's metrics. Default: none.
   */
  readonly service?: string;
  /** Names the calling workload (per-caller rate limits, metrics). Default: the service, else `sdk-<pid>`. */
  readonly workload?: string;
  /** The DNS zone of service names (`<service>.service.<domain>`). Default "skein". */
  readonly domain?: string;
  /** Where requests for other origins go. Default: a new undici Agent. */
  readonly fallback?: Dispatcher;
  /** Options of the Pool per endpoint (connections, keep-alive, ...). */
  readonly pool?: Pool.Options;
  /** Randomness of calls (backoff jitter, fault injection): tests seed it. Default Math.random. */
  readonly rng?: Rng;
  /** Time of the watch stream and the resilience state. Default the system clock. */
  readonly clock?: Clock;
  /** Time and timers of calls (deadlines, backoff). Default the precise clock. */
  readonly callClock?: Clock;
  readonly logger?: WatchLogger;
  /** Told of ejections, breaker changes and panic mode (as the proxy logs them). */
  readonly onEvent?: (e: TrafficEvent) => void;
  /**
   * Metrics (metrics.ts): `listen` ("host:port", port 0 for any) starts a server for /metrics,
   * /stats, /live and the taps (/tap, /debug/taps: this host only); `advertise` ("host:port") is where the control plane reaches them (default:
   * the listen address; give it when the app mounts `metricsHandler()` itself). With either, the
   * SDK announces itself to the control plane like a proxy (PUT /v1/proxies/{id}), so the golden
   * signals and `skein stat` count its requests. Default: neither (metrics kept, not served).
   */
  readonly metrics?: { readonly listen?: string; readonly advertise?: string };
  /** Names the SDK to the control plane. Default `sdk-<workload>-<pid>`. */
  readonly id?: string;
  /** A control-plane token of scope "proxy" for announcing. Default SKEIN_TOKEN. */
  readonly token?: string;
  /**
   * mTLS to the peers' inbound proxies (docs/sdk.md#mtls): `mode` is the mesh's (a destination
   * service's own `mtls.mode` wins), default SKEIN_MTLS, else "off"; with "strict" or
   * "permissive", `joinToken` (default SKEIN_JOIN_TOKEN) buys the certificate of the SDK's
   * identity (its service's, else its workload's) from the control plane's CA, as
   * `skein proxy --join-token` does; the SDK renews it and announces with it.
   */
  readonly mtls?: { readonly mode?: MtlsMode; readonly joinToken?: string };
}

/** The SDK's mTLS settings, checked: the mesh's mode and the join token (null with mode "off"). */
function mtlsOf(o: MeshDispatcherOptions): { mode: MtlsMode; joinToken: string | null } {
  const envMode = process.env[MTLS_ENV];
  const mode = o.mtls?.mode ?? (envMode === undefined || envMode === '' ? MTLS_DEFAULT_MODE : envMode);
  const field = o.mtls?.mode === undefined && envMode !== undefined && envMode !== '' ? MTLS_ENV : 'mtls.mode';
  if (!(MTLS_MODES as readonly string[]).includes(mode)) throw new SkeinError('SKEIN_E_USAGE', `createMeshDispatcher: ${field} must be one of ${MTLS_MODES.join(', ')}, got "${String(mode).slice(0, 40)}"`, { field });
  if (mode === 'off') return { mode, joinToken: null };
  const token = (o.mtls?.joinToken ?? process.env[JOIN_TOKEN_ENV] ?? '').trim();
  if (token === '') throw new SkeinError('SKEIN_E_USAGE', `createMeshDispatcher: mtls mode ${mode} needs a join token for the SDK's certificate: mint one with \`skein ca token --proxy ID --service S\` and pass mtls.joinToken (or ${JOIN_TOKEN_ENV})`, { field: 'mtls.joinToken' });
  return { mode: mode as MtlsMode, joinToken: token };
}

interface PoolEntry {
  readonly pool: Pool;
  readonly service: string;
  readonly key: string;
  /** Its key in the pools: endpoint, and the TLS link's (connections as another identity, or plaintext, are apart). */
  readonly mapKey: string;
}

export class MeshDispatcher extends Dispatcher {
  readonly mesh: MeshView;
  readonly metrics: SdkMetrics;
  private readonly fallback: Dispatcher;
  private readonly ownFallback: boolean;
  private readonly pools = new Map<string, PoolEntry>();
  private readonly ctx: RequestContext;
  private closed = false;
  private server: Server | null = null;
  private serving: Promise<string> | null = null;
  private announcer: Announcer | null = null;
  /** The mesh's mTLS mode for the SDK (a service's own wins: modeOf). */
  private readonly mtlsMode: MtlsMode;
  /** mTLS on: the SDK's certificate and links (null: off, or its modules still loading: `tlsLoading`). */
  private tls: SdkTls | null = null;
  private tlsLoading: Promise<void> | null = null;
  private tlsConnector: typeof meshConnector | null = null;
  /** The identity the SDK holds with mTLS: its service's, else its workload's. */
  private readonly identity: string;

  constructor(private readonly o: MeshDispatcherOptions) {
    super();
    if (o.control === undefined || (typeof o.control !== 'string' && !Array.isArray(o.control)) || o.control.length === 0) {
      throw new SkeinError('SKEIN_E_USAGE', 'createMeshDispatcher: "control" must be the control plane\'s URL (or a list of its replicas\' URLs)', { field: 'control' });
    }
    // Checked before anything starts: a bad option throws and leaves nothing running.
    const listenAt = o.metrics?.listen === undefined ? null : parseHostPort(o.metrics.listen, 'metrics.listen');
    if (o.metrics?.advertise !== undefined) parseHostPort(o.metrics.advertise, 'metrics.advertise');
    const clock = o.clock ?? systemClock;
    const workload = o.workload ?? o.service ?? `sdk-${process.pid}`;
    const mtls = mtlsOf(o);
    this.mtlsMode = mtls.mode;
    this.identity = o.service ?? workload;
    this.metrics = new SdkMetrics(o.id ?? `sdk-${workload}-${process.pid}`, workload, o.service ?? null);
    this.mesh = new MeshView({
      control: o.control,
      domain: o.domain ?? 'skein',
      clock,
      logger: o.logger,
      onEvent: (e) => {
        this.metrics.engine.trafficEvent(e);
        // A request held for a service scaled to zero: ask the control plane to wake it, as the proxy does.
        if (e.type === 'cold-start') wakeService({ control: this.mesh.control, token: this.token(), viaCertificate: () => this.tls?.controlCall() ?? null }, e.service, o.logger);
        o.onEvent?.(e);
      },
      // A peer proxy's inbound side is probed over the SDK's mTLS link, as the proxy probes it.
      checks: (traffic, policy, checkClock) => new ActiveChecker(traffic, policy, checkClock, meshProbe((e) => this.tls?.forEndpoint(e) ?? null)),
    });
    this.mesh.watch.on('update', (service, set) => {
      for (const p of this.pools.values()) {
        if (p.service === service && !set.has(p.key)) {
          this.pools.delete(p.mapKey);
          void p.pool.close();
        }
      }
    });
    this.ownFallback = o.fallback === undefined;
    this.fallback = o.fallback ?? new Agent();
    const metrics = this.metrics;
    this.ctx = {
      workload,
      service: o.service ?? null,
      clock: o.callClock ?? preciseClock,
      rng: o.rng ?? Math.random,
      counters: metrics.engine,
      mirrors: new Mirrors(metrics.engine, o.callClock ?? preciseClock, o.rng ?? Math.random, (s) => {
        const d = this.mesh.resolve(s);
        return 'error' in d ? null : d;
      }),
      pool: (e) => this.poolOf(e),
      tlsRefused: (e, err) => o.logger?.warn({ service: e.service, instance: e.id, address: `${e.address}:${e.port}`, reason: err.reason }, `the SDK refused ${e.id} [${err.reason}]: ${err.message}`),
      finished: (r: FinishedRequest) => metrics.finished(r),
      tap: metrics.tap,
    };
    this.mesh.start();
    if (mtls.joinToken !== null) {
      const joinToken = mtls.joinToken;
      // The mTLS modules (certificate parsing) load only with mTLS on; requests wait for them (not for the certificate).
      this.tlsLoading = import('./tls.js').then(
        ({ SdkTls, meshConnector }) => {
          this.tlsLoading = null;
          if (this.closed) return;
          this.tlsConnector = meshConnector;
          this.tls = new SdkTls({ control: this.mesh.control, service: this.identity, joinToken, modeOf: (s) => this.modeOf(s), clock, rng: o.rng ?? Math.random, logger: o.logger });
        },
        (e: unknown) => {
          this.tlsLoading = null;
          o.logger?.error({ err: (e as Error).message }, 'the SDK could not load its mTLS modules');
        },
      );
    }
    const m = o.metrics;
    if (listenAt !== null) {
      this.serving = this.serveMetrics(listenAt);
      // Seen by metricsAddress(); not a crash of the app.
      this.serving.catch(() => undefined);
    }
    else if (m?.advertise !== undefined) this.announce(m.advertise);
  }

  /** Where the metrics server listens ("host:port"), once it does; null: none started. */
  async metricsAddress(): Promise<string | null> {
    return this.serving;
  }

  /** /metrics, /stats, /live and the taps, for an app that serves them itself (see `metrics.advertise`). */
  metricsHandler(): (req: IncomingMessage, res: ServerResponse) => void {
    return this.metrics.handler();
  }

  private async serveMetrics(at: HostPort): Promise<string> {
    const listen = formatHostPort(at.host, at.port);
    const server = createServer(this.metrics.handler());
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new SkeinError('SKEIN_E_ADDRESS_IN_USE', `the SDK's metrics server cannot listen on ${listen}: ${(e as NodeJS.ErrnoException).code ?? e.message}`, { field: 'metrics.listen' })));
      server.listen(at.port, at.host, resolve);
    });
    server.unref();
    const a = server.address() as AddressInfo;
    const addr = formatHostPort(a.address, a.port);
    this.announce(this.o.metrics?.advertise ?? addr);
    return addr;
  }

  /**
   * Tells the control plane where the metrics are (as a proxy announces its admin server), with
   * its mesh certificate (mTLS) or a token of scope "proxy"; without either nothing is announced
   * (the control plane would refuse it), and the metrics are only served.
   */
  private announce(admin: string): void {
    if (this.closed) return;
    const token = this.token();
    if (token === null && this.mtlsMode === 'off') {
      this.o.logger?.info({ metrics: admin }, 'SDK metrics served, not announced: no token of scope "proxy" (token or SKEIN_TOKEN)');
      return;
    }
    if (token === null) {
      // mTLS without a token: it announces with its certificate once it holds one (before, the
      // control plane would only refuse it, and log that); still none after a minute, it tries.
      const start = () => this.startAnnouncer(admin, null);
      void this.ready(60_000).then(start, start);
      return;
    }
    this.startAnnouncer(admin, token);
  }

  private startAnnouncer(admin: string, token: string | null): void {
    if (this.closed || this.announcer !== null) return;
    const service = this.o.service ?? null;
    this.announcer = new Announcer({
      control: this.mesh.control,
      id: this.metrics.id,
      admin,
      token,
      workloads: () => (service === null ? [] : [{ name: this.ctx.workload, service, inbound: null, outbound: null, tls: this.tls?.report() ?? null }]),
      // Once it holds its certificate, the SDK announces with it (as a proxy does): no token needed.
      viaCertificate: () => this.tls?.controlCall() ?? null,
    });
    this.announcer.start();
  }

  /** The control-plane token of scope "proxy" (announcements, wakes; with mTLS the certificate does instead); null: none. */
  private token(): string | null {
    const t = this.o.token ?? process.env[TOKEN_ENV] ?? '';
    return t === '' ? null : t;
  }

  /**
   * Resolves once the first snapshot came and, with mTLS, the SDK holds its certificate (at once
   * if both are so), or rejects after `timeoutMs` naming what is missing.
   */
  async ready(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    if (!this.mesh.ready) {
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => {
          this.mesh.watch.off('snapshot', ok);
          reject(new SkeinError('SKEIN_E_DISCOVERY_UNAVAILABLE', `no snapshot from the control plane (${this.mesh.control.current}) within ${timeoutMs} ms`));
        }, timeoutMs);
        const ok = () => {
          clearTimeout(t);
          resolve();
        };
        this.mesh.watch.once('snapshot', ok);
      });
    }
    await this.tlsLoading;
    const tls = this.tls;
    if (tls === null) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        tls.held,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new SkeinError('SKEIN_E_CA_UNAVAILABLE', `the SDK got no mesh certificate for "${this.identity}" from the control plane's CA (${this.mesh.control.current}) within ${timeoutMs} ms: see its log for why`)), Math.max(0, deadline - Date.now()));
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The mesh certificate the SDK holds (mTLS on): its identity, serial and end; null: none (yet). */
  certificate(): { identity: string; serial: string; notAfter: Date } | null {
    const c = this.tls?.identities.credential(this.identity);
    return c === undefined ? null : { identity: c.identity, serial: c.serial, notAfter: new Date(c.notAfter) };
  }

  /** The mTLS mode of calls to `service`: its own, over the mesh's (off when the SDK holds no identity, as a proxy without mTLS). */
  modeOf(service: string): MtlsMode {
    if (this.mtlsMode === 'off') return 'off';
    return this.mesh.watch.definition(service)?.mtlsMode ?? this.mtlsMode;
  }

  override dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const origin = opts.origin;
    let url: URL | null = null;
    if (origin !== undefined) {
      try {
        url = typeof origin === 'string' ? new URL(origin) : origin;
      } catch {
        url = null;
      }
    }
    const service = url !== null && url.protocol === 'http:' && !this.closed ? this.mesh.serviceOf(url.hostname) : null;
    if (service === null || url === null) return this.fallback.dispatch(opts, handler);
    if (opts.upgrade != null && opts.upgrade !== false) {
      handler.onResponseError?.(noController(), new SkeinError('SKEIN_E_SDK_UNSUPPORTED', `the SDK does not carry protocol upgrades (${String(opts.upgrade)}) to "${service}" yet: call it through the proxy`));
      return true;
    }
    const loading = this.tlsLoading;
    if (loading === null) new MeshRequest(this.ctx, service, this.mesh.resolve(service), url.host, opts, handler).start();
    else void loading.then(() => new MeshRequest(this.ctx, service, this.mesh.resolve(service), url.host, opts, handler).start());
    return true;
  }

  /** The pool of connections to `e` (mTLS when its service's mode says so), or why there is none. */
  private poolOf(e: Endpoint): Pool | Refusal {
    const link = this.tls?.forEndpoint(e) ?? null;
    if (link !== null && 'code' in link) return link;
    const k = `${e.service}\u0000${e.key}\u0000${link?.poolKey ?? ''}`;
    let p = this.pools.get(k);
    if (p === undefined) {
      const host = e.address.includes(':') ? `[${e.address}]` : e.address;
      // The service's connect timeout, as the proxy's outbound connections have it.
      const connectTimeout = this.o.pool?.connectTimeout ?? this.mesh.services.get(e.service)?.traffic.policy.connectTimeoutMs ?? TRAFFIC_DEFAULTS.connectTimeoutMs;
      const tls = this.tlsConnector;
      const pool = new Pool(`http://${host}:${e.port}`, { connectTimeout, ...this.o.pool, ...(link === null || tls === null ? {} : { connect: tls(e, link, connectTimeout) }) });
      const traffic = () => this.mesh.services.get(e.service)?.traffic;
      pool.on('connect', () => {
        const t = traffic();
        if (t !== undefined) t.connections.open++;
        this.metrics.engine.upstreamConnect(true);
      });
      pool.on('disconnect', () => {
        const t = traffic();
        if (t !== undefined) t.connections.open = Math.max(0, t.connections.open - 1);
      });
      pool.on('connectionError', () => this.metrics.engine.upstreamConnect(false));
      p = { pool, service: e.service, key: e.key, mapKey: k };
      this.pools.set(k, p);
    }
    return p.pool;
  }

  /** Pooled connections waiting for a request. */
  idleConnections(): number {
    let n = 0;
    for (const p of this.pools.values()) n += p.pool.stats.free;
    return n;
  }

  private async shutdown(destroy: boolean): Promise<void> {
    this.closed = true;
    this.mesh.stop();
    this.tls?.stop();
    await this.serving?.catch(() => null);
    await this.announcer?.stop();
    const server = this.server;
    if (server !== null) await new Promise<void>((r) => server.close(() => r()));
    const pools = [...this.pools.values()].map((p) => (destroy ? p.pool.destroy() : p.pool.close()));
    this.pools.clear();
    await Promise.all(pools);
    if (this.ownFallback) await (destroy ? this.fallback.destroy() : this.fallback.close());
  }

  override close(): Promise<void>;
  override close(callback: () => void): void;
  override close(callback?: () => void): Promise<void> | void {
    const p = this.shutdown(false);
    if (callback === undefined) return p;
    void p.then(callback);
  }

  override destroy(): Promise<void>;
  override destroy(err: Error | null): Promise<void>;
  override destroy(callback: () => void): void;
  override destroy(err: Error | null, callback: () => void): void;
  override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    const cb = typeof a === 'function' ? a : b;
    const p = this.shutdown(true);
    if (cb === undefined) return p;
    void p.then(cb);
  }
}

/** A controller for an answer given before anything started. */
function noController(): Dispatcher.DispatchController {
  return { aborted: false, paused: false, reason: null, abort: () => {}, pause: () => {}, resume: () => {} };
}

/** A dispatcher for `setGlobalDispatcher` (or a client's `dispatcher` option): see MeshDispatcher. */
export function createMeshDispatcher(o: MeshDispatcherOptions): MeshDispatcher {
  return new MeshDispatcher(o);
}
