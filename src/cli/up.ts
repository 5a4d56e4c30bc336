/**
 * `skein up FILE`: the whole mesh on this machine in one process: the control plane (embedded
 * store), one proxy for every workload, and the services of the mesh file as supervised child
 * processes. Ctrl-C drains and stops everything. `skein scale SERVICE N` changes replicas of a
 * running mesh (through the control plane's /v1/mesh routes).
 *
 * `skein up FILE --join URL[,URL...]` runs the file's services on this host under a shared control
 * plane instead (docs/operations.md#a-mesh-across-hosts): no embedded control plane; inbound
 * listeners on the host's `--advertise` address, instances registered with it, and checked on
 * this host with TTL heartbeats. The runtime's own API (`/v1/mesh`: `skein scale`, `skein rollout`,
 * autoscaler status, wake) is then served on a small API of this host (`--http`, startHostApi below),
 * which takes only the token this host joined with.
 */
import { Command, Option } from 'commander';
import { CONTROL_DEFAULTS } from '../api/control.js';
import { formatHostPort, parseHostPort } from '../core/address.js';
import { SkeinError } from '../core/errors.js';
import { call, controlOption, DEFAULT_DNS, DEFAULT_HTTP, outputOption, print, printJson, readText, table, withToken, type OutputFormat } from './common.js';
import { adminAddress, DEFAULT_ADMIN, DEFAULT_OUTBOUND, TAP_REDACT_HELP, otlpUrl, ratioFlag, repeat, startTracer, workersFlag } from './proxy.js';
import { WORKERS_BOUNDS } from '../proxy/workers/protocol.js';
import { DNS_DEFAULTS } from '../api/dns.js';
import type { MeshProxy } from '../proxy/mesh-proxy.js';
import type { WorkloadInfo } from '../proxy/proxy.js';
import type { AdminView } from '../proxy/admin.js';
import type { ControlCall } from '../identity/mtls/identities.js';
import { parseHeaderNames } from '../api/tap.js';
import { JOIN_TOKEN_ENV, MTLS_ENV, MTLS_MODES, MTLS_UP_MODE, type MtlsMode } from '../api/mtls.js';
import { AUTHZ_DEFAULTS } from '../api/authz/model.js';
import { AUTHZ_DEFAULT_VALUES, type AuthzDefault } from '../api/authz/schema.js';
import { OUTSIDE_CALLER } from '../api/names.js';
import { trustDomainFor, validTrustDomain } from '../identity/spiffe.js';
import { durationFlag, intFlag } from './flags.js';
import { isIP, type AddressInfo } from 'node:net';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import type { HostPort } from '../core/address.js';
import type { MeshFile } from '../api/mesh.js';
import type { AuditSink } from '../api/audit.js';
import type { MeshRunnerOptions } from '../runtime/mesh-runner.js';
import type { CertificateSource } from '../identity/mtls/identities.js';
import { parseBaseUrls } from '../api/etcd.js';
import { TOKEN_ENV, TOKEN_PREFIX, type TokenScope } from '../api/auth.js';
import { isLoopbackHost } from '../core/loopback-host.js';
import { ControlReplicas } from '../discovery/control-replicas.js';
import { controlUnavailable } from '../runtime/autoscale-signals.js';
import { systemClock } from '../core/clock.js';

export function upCommand(): Command {
  return new Command('up')
    .description('run a mesh file: control plane, proxy and every service, until Ctrl-C')
    .argument('<file>', 'mesh file (YAML or JSON, kind: Mesh)')
    .option('--http <host:port>', 'control plane HTTP API (overrides the file\'s control.http); with --join: this host\'s mesh API (skein scale, skein rollout)')
    .option('--insecure-listen', 'allow --http beyond loopback although the API has no TLS (tokens cross the network in clear)')
    .option('--dns <host:port>', 'DNS server, or "off" (overrides the file\'s control.dns)')
    .option('--data-dir <dir>', 'directory of the embedded store; "none" (default) keeps the registry in memory', 'none')
    .option('--outbound <host:port>', 'an outbound listener for callers outside the mesh (curl -x)', DEFAULT_OUTBOUND)
    .option('--admin <host:port>', `the proxy admin server ("off" disables it, and with it the golden signals and taps) (default: ${DEFAULT_ADMIN}; with --join, the --advertise address on its port, where the control plane scrapes it)`)
    .option('--insecure-admin', 'with --admin beyond loopback: answer taps and /debug to other hosts too (no TLS, no tokens; taps show headers and bodies); without it other hosts get /live /ready /metrics /stats only')
    .option('--tap-redact <names>', TAP_REDACT_HELP, repeat, [] as string[])
    .option('--access-log <target>', 'the proxy\'s access log: one JSON line per request to "stdout", a file path (appended to), or "off"', 'off')
    .option('--audit-log <target>', 'the audit log of the control plane and the proxy (docs/security.md#audit-log): "stdout", a file path (appended to), or "off"', 'off')
    .option('--trace-otlp <url>', 'the proxy exports a span per hop and attempt over OTLP/HTTP to this URL (e.g. http://127.0.0.1:4318/v1/traces); off by default')
    .option('--trace-sample <ratio>', 'share of new traces sampled, 0..1', ratioFlag('--trace-sample'), 1)
    .addOption(new Option('--mtls <mode>', 'mTLS between the mesh\'s proxies (docs/security.md): strict, permissive or off').choices([...MTLS_MODES]).default(MTLS_UP_MODE))
    .addOption(new Option('--authz-default <allow|deny>', "what a service's inbound decides when it has no ALLOW policy and no default of its own (docs/authorization.md): allow for a dev mesh, deny in production").choices([...AUTHZ_DEFAULT_VALUES]).default(AUTHZ_DEFAULTS.meshDefault))
    .option('--trust-domain <domain>', "SPIFFE trust domain of the mesh's identities (default: the mesh name)")
    .option('--scrape-interval <duration>', 'how often the control plane scrapes the proxy for the golden signals (1s to 1m)', durationFlag('--scrape-interval', 1000, 60_000), CONTROL_DEFAULTS.scrapeIntervalMs)
    .option('--join <urls>', 'run the services on this host under a shared control plane (its replicas\' URLs, comma-separated) instead of an embedded one')
    .addOption(new Option('--token <token>', `with --join: a control-plane token of scope "admin" (it mints this host's join token for the mesh CA; "automation" with --mtls off) (default: ${TOKEN_ENV})`).env(TOKEN_ENV))
    .option('--advertise <host>', 'with --join: the address other hosts reach this host at (inbound listeners bind it; instances are registered with it); default 127.0.0.1 when the control plane is on loopback')
    .option('--heartbeat-ttl <duration>', 'with --join: the TTL of this host\'s instances: replicas are checked here and reported every ttl/3; a host that stops reporting (a partition) loses its instances after it', durationFlag('--heartbeat-ttl', 2000, 600_000), UP_DEFAULTS.heartbeatTtlMs)
    .option('--workers <n|auto>', `the proxy's worker threads, each a proxy on the same listeners (SO_REUSEPORT), ${WORKERS_BOUNDS.min} to ${WORKERS_BOUNDS.max}, or auto (one per core), as skein proxy --workers (docs/proxy.md#workers)`, workersFlag, 1)
    .addOption(new Option('--log-level <level>', 'log level of the control plane and proxy (JSON lines on stderr)').choices(['fatal', 'error', 'warn', 'info', 'debug']).default('warn'))
    .action(async (file: string, o: { join?: string; token?: string; advertise?: string; heartbeatTtl: number; http?: string; dns?: string; dataDir: string; outbound: string; admin?: string; accessLog: string; auditLog: string; traceOtlp?: string; traceSample: number; scrapeInterval: number; logLevel: string; tapRedact: string[]; insecureListen?: boolean; insecureAdmin?: boolean; mtls: MtlsMode; trustDomain?: string; authzDefault: AuthzDefault; workers: number }) => {
      // Everything is checked before anything starts.
      const { parseMeshFile } = await import('../api/mesh.js');
      const mesh = parseMeshFile(await readText(file), file);
      const http = parseHostPort(o.http ?? mesh.control.http ?? DEFAULT_HTTP, '--http');
      const dnsText = o.dns ?? mesh.control.dns ?? DEFAULT_DNS;
      const dns = dnsText === 'off' ? null : parseHostPort(dnsText, '--dns');
      const outbound = o.outbound === 'off' ? null : parseHostPort(o.outbound, '--outbound');
      const trustDomain = o.trustDomain ?? trustDomainFor(mesh.name);
      const tdProblem = validTrustDomain(trustDomain);
      if (tdProblem !== null) throw new SkeinError('SKEIN_E_USAGE', `${o.trustDomain === undefined ? `the mesh name "${mesh.name}" makes no trust domain` : '--trust-domain'}: ${tdProblem}`, { field: '--trust-domain' });
      if (o.accessLog.trim() === '') throw new SkeinError('SKEIN_E_USAGE', '--access-log: give "stdout", a file path or "off"', { field: '--access-log' });
      const tapRedact = parseHeaderNames(o.tapRedact, '--tap-redact');
      const join = o.join === undefined ? null : joinSettings(o);
      // Joined, the control plane's leader scrapes this host's proxy from another host: its admin
      // server listens on the host's address (serving other hosts its metrics only: admin.ts).
      const admin = adminAddress(o.admin ?? (join === null || isLoopbackHost(join.advertise) ? DEFAULT_ADMIN : formatHostPort(join.advertise, parseHostPort(DEFAULT_ADMIN, '--admin').port)));

      const [{ default: pino }, { startControlPlane, insecureListenRefusal }, { Proxy }, { startAdmin, proxyView }, { MeshRunner }, { meshRoutes }, { openAccessLog }, { Announcer }, { ControlCa }, { openAuditLog }] = await Promise.all([
        import('pino'),
        import('../control/control-plane.js'),
        import('../proxy/proxy.js'),
        import('../proxy/admin.js'),
        import('../runtime/mesh-runner.js'),
        import('../runtime/mesh-routes.js'),
        import('../proxy/access-log.js'),
        import('../telemetry/announce.js'),
        import('../identity/mtls/ca-client.js'),
        import('../telemetry/audit-log.js'),
      ]);
      // Joined, --http is this host's mesh API: beyond loopback only as the control plane's would be.
      const insecure = join === null || o.insecureListen === true ? null : insecureListenRefusal(http.host);
      if (insecure !== null) throw new SkeinError('SKEIN_E_INSECURE_LISTEN', insecure, { field: '--http' });
      const traceUrl = o.traceOtlp === undefined ? null : otlpUrl(o.traceOtlp);
      // With workers, each worker opens the access log (and the tracer) itself.
      const workers = o.workers > 1 ? o.workers : null;
      const accessLog = o.accessLog === 'off' || workers !== null ? null : openAccessLog(o.accessLog);
      // One audit log for the control plane and the proxy: one writer, lines in order.
      const audit = o.auditLog === 'off' ? null : openAuditLog(o.auditLog);
      const logger = pino({ level: o.logLevel, base: { mesh: mesh.name } }, pino.destination(2));
      const say = (line: string) => process.stdout.write(`[skein] ${line}\n`);
      let runner: InstanceType<typeof MeshRunner> | null = null;
      // The tracer checks its settings (OTEL_BSP_SCHEDULE_DELAY) before anything listens.
      const proxyId = `skein-up-${process.pid}`;
      const tracer = traceUrl === null || workers !== null ? null : await startTracer(traceUrl, o.traceSample, proxyId, logger);
      const control: MeshControl =
        join === null
          ? await embeddedControl({ startControlPlane, ControlCa, meshRoutes, runner: () => runner, mesh, http, dns, dataDir: o.dataDir, logger, scrapeIntervalMs: o.scrapeInterval, insecureListen: o.insecureListen === true, trustDomain, audit, proxyId })
          : await joinedControl({ ControlCa, meshRoutes, runner: () => runner, meshName: mesh.name, join, http, proxyId, mtls: o.mtls !== 'off', logger });
      const mtls = o.mtls === 'off' ? null : { mode: o.mtls, trustDomain: control.trustDomain, source: control.ca };
      // A request held for a service scaled to zero wakes it through the runtime (in-process).
      let wake: (service: string) => void = () => undefined;
      let onWorkerExit: (why: string) => void = () => undefined;
      let proxy: UpProxy;
      if (workers === null) {
        const p = new Proxy({
          controlUrl: control.replicas?.urls ?? control.url,
          control: control.replicas,
          id: proxyId,
          accessLog,
          audit,
          tracer,
          mtls,
          authzDefault: o.authzDefault,
          logger: logger.child({ component: 'proxy' }),
          onColdStart: (service) => wake(service),
          ...(mesh.control.domain === null ? {} : { domain: mesh.control.domain }),
        });
        p.start();
        proxy = { mesh: p, admin: proxyView(p), ready: async () => p.ready, workloads: () => p.workloadInfo(), controlCall: () => p.controlCall(), stop: (ms) => p.stop(ms) };
      } else {
        try {
          proxy = await workersProxy({ count: workers, proxyId, control, mtls, join, domain: mesh.control.domain, trace: traceUrl === null ? null : { url: traceUrl, sampleRatio: o.traceSample }, o, logger, wake: (service) => wake(service), onExit: (why) => onWorkerExit(why) });
        } catch (e) {
          await control.close();
          await audit?.close();
          throw e;
        }
      }
      let adminServer: Awaited<ReturnType<typeof startAdmin>> | null = null;
      let announcer: InstanceType<typeof Announcer> | null = null;
      let outboundAt: string | null = null;
      const r = new MeshRunner({
        mesh,
        file,
        controlUrl: control.url,
        ...(control.replicas === null ? {} : { control: control.replicas }),
        token: control.token,
        credentials: sdkCredentials(control, o.mtls, logger),
        proxy: proxy.mesh,
        say,
        scrapeIntervalMs: o.scrapeInterval,
        onMeshEvent: (e) => control.event(e),
        ...(join === null ? {} : { advertise: join.advertise, heartbeatTtlMs: o.heartbeatTtl }),
      });
      wake = (service) => {
        try {
          r.wake(service);
        } catch (e) {
          logger.warn({ service, err: (e as Error).message }, 'could not wake the service');
        }
      };
      let stopping: Promise<void> | null = null;
      const shutdown = (why: string): Promise<void> => {
        stopping ??= (async () => {
          say(`${why}: draining and stopping (Ctrl-C again to kill at once)`);
          await r.stop();
          await announcer?.stop();
          await proxy.stop(1000);
          await adminServer?.close();
          await tracer?.shutdown();
          await accessLog?.close();
          await control.close();
          await audit?.close();
          say('stopped');
        })();
        return stopping;
      };
      let interrupts = 0;
      const onSignal = (sig: string) => {
        interrupts++;
        if (interrupts > 1) {
          r.killAll();
          process.exit(130);
        }
        void shutdown(sig);
      };
      process.on('SIGINT', () => onSignal('SIGINT'));
      process.on('SIGTERM', () => onSignal('SIGTERM'));
      process.on('exit', () => r.killAll());
      onWorkerExit = (why) => {
        logger.error({ err: why }, 'a proxy worker failed: stopping the mesh');
        process.exitCode = 1;
        void shutdown(why);
      };

      try {
        if (outbound !== null) outboundAt = (await proxy.mesh.addWorkload({ name: 'local', service: OUTSIDE_CALLER, outbound })).outbound;
        adminServer = admin === null ? null : await startAdmin(proxy.admin, admin, { tapRedact, insecure: o.insecureAdmin === true });
        if (adminServer !== null) {
          announcer = new Announcer({ ...(control.replicas === null ? { controlUrl: control.url } : { control: control.replicas }), id: proxyId, admin: adminServer.address, workloads: () => proxy.workloads(), everyMs: 5000, token: control.proxyToken, viaCertificate: () => proxy.controlCall() });
          await announcer.announce();
          announcer.start();
        }
        if (workers !== null) say(`proxy: ${workers} worker threads on the same listeners`);
        say(`mesh "${mesh.name}": ${control.where}${adminServer === null ? '' : `, proxy admin at http://${adminServer.address}`}${outboundAt === null ? '' : `, outbound proxy at http://${outboundAt}`}`);
        await waitReady(proxy);
        runner = r;
        await r.start();
      } catch (e) {
        await shutdown('start-up failed');
        throw e;
      }
      if (stopping === null) {
        const rows = r.status().map((s) => [s.name, `${s.ready}/${s.replicas}`, s.servicePort === null ? '' : s.protocol === 'tcp' ? `tcp://${s.servicePort}` : `http://${s.servicePort}/`, s.outbound ?? '']);
        print(table(['SERVICE', 'READY', 'REACH IT AT', 'ITS HTTP_PROXY'], rows));
        const first = r.status().at(-1);
        if (outboundAt !== null && first !== undefined) say(`through the mesh by name: curl -x http://${outboundAt} http://${first.name}/`);
        say(`dashboard: ${control.url}/dashboard/${adminServer === null ? ' (no golden signals: the proxy admin server is off)' : ''}`);
        if (control.tokenLine !== null) say(control.tokenLine);
        say('mesh is up; Ctrl-C stops it');
      }
      await (stopping ?? new Promise<void>((resolve) => {
        const t = setInterval(() => {
          if (stopping !== null) {
            clearInterval(t);
            void stopping.then(resolve);
          }
        }, 100);
      }));
    });
}

async function waitReady(proxy: { ready(): Promise<boolean> }): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await proxy.ready())) {
    if (Date.now() > deadline) throw new SkeinError('SKEIN_E_INTERNAL', 'the proxy got no snapshot from the embedded control plane within 10 s');
    await new Promise((r) => setTimeout(r, 10));
  }
}

export function scaleCommand(): Command {
  return withToken(new Command('scale'))
    .description('change the replicas of a service of a running mesh (skein up)')
    .argument('<service>', 'service name')
    .argument('<replicas>', 'replicas wanted (0..100)', intFlag('<replicas>', 0, 100))
    .addOption(controlOption())
    .option('--no-wait', 'return at once instead of waiting until the replicas are ready')
    .option('--timeout <duration>', 'how long to wait for readiness', durationFlag('--timeout'), 120_000)
    .addOption(outputOption())
    .action(async (service: string, replicas: number, o: { control: string; wait: boolean; timeout: number; output: OutputFormat }) => {
      try {
        await call(o.control, 'PUT', `/v1/mesh/services/${encodeURIComponent(service)}/replicas`, { replicas });
      } catch (e) {
        if (e instanceof SkeinError && e.code === 'SKEIN_E_NOT_FOUND') {
          throw new SkeinError('SKEIN_E_NOT_FOUND', `the control plane at ${o.control} runs no mesh (skein scale works with a mesh started by skein up)`);
        }
        throw e;
      }
      const deadline = Date.now() + o.timeout;
      type Status = { name: string; replicas: number; ready: number; instances: Array<{ id: string; state: string; pid: number | null; appPort: number | null }> };
      let svc: Status | undefined;
      for (;;) {
        const mesh = await call<{ services: Status[] }>(o.control, 'GET', '/v1/mesh');
        svc = mesh.services.find((s) => s.name === service);
        if (!o.wait || svc === undefined || (svc.replicas === replicas && svc.ready === replicas)) break;
        if (Date.now() > deadline) throw new SkeinError('SKEIN_E_INTERNAL', `${service}: ${svc.ready}/${replicas} replicas ready after ${o.timeout} ms`);
        await new Promise((r) => setTimeout(r, 100));
      }
      if (o.output === 'json') printJson(svc);
      else if (svc !== undefined) print(table(['INSTANCE', 'STATE', 'PID', 'APP PORT'], svc.instances.map((i) => [i.id, i.state, i.pid ?? '', i.appPort ?? ''])));
    });
}

/** skein up's proxy, on the main thread or as `--workers N` threads: what the command does with it. */
interface UpProxy {
  /** What the runtime adds workloads to. */
  readonly mesh: MeshProxy;
  /** What the admin server answers from. */
  readonly admin: AdminView;
  /** It has had the control plane's snapshot (every worker has). */
  ready(): Promise<boolean>;
  /** What the announcer says (with mTLS, each workload's certificate report). */
  workloads(): WorkloadInfo[];
  /** The control plane's API with a certificate the proxy holds (its announcements); null while none. */
  controlCall(): ControlCall | null;
  stop(graceMs: number): Promise<void>;
}

/**
 * `--workers N`: N worker threads on the same listeners (src/proxy/workers.ts), none to start
 * with (the runtime adds them). With mTLS, the main thread's identities get a certificate of each
 * workload's service from the mesh CA (control.ca) and prove the workers' with it (workers/ca.ts);
 * their session-ticket keys are every worker's, and a rotation reaches them all.
 */
async function workersProxy(d: {
  count: number;
  proxyId: string;
  control: MeshControl;
  mtls: { readonly mode: MtlsMode; readonly trustDomain: string; readonly source: CertificateSource } | null;
  join: JoinSettings | null;
  domain: string | null;
  trace: { readonly url: string; readonly sampleRatio: number } | null;
  o: { logLevel: string; authzDefault: AuthzDefault; accessLog: string; auditLog: string };
  logger: Logger;
  wake: (service: string) => void;
  onExit: (why: string) => void;
}): Promise<UpProxy> {
  const { ProxyWorkers } = await import('../proxy/workers.js');
  const { control, mtls, logger } = d;
  let info = null;
  if (mtls !== null) {
    if (mtls.source.info === undefined) throw new SkeinError('SKEIN_E_INTERNAL', 'the mesh CA answers no GET /v1/ca');
    info = await mtls.source.info(false);
  }
  const workers = await ProxyWorkers.start({
      count: d.count,
      clock: systemClock,
      logger: logger.child({ component: 'proxy' }),
      init: {
        id: d.proxyId,
        logLevel: d.o.logLevel,
        workloads: [],
        control: control.replicas?.urls ?? [control.url],
        token: d.join?.token ?? null,
        domain: d.domain ?? DNS_DEFAULTS.domain,
        requestMetrics: true,
        authzDefault: d.o.authzDefault,
        limits: {},
        accessLog: d.o.accessLog === 'off' ? null : d.o.accessLog,
        auditLog: d.o.auditLog === 'off' ? null : d.o.auditLog,
        trace: d.trace,
        mtls: mtls === null || info === null ? null : { trustDomain: mtls.trustDomain, mode: mtls.mode, info },
      },
      ca: mtls === null ? null : { source: mtls.source, trustDomain: mtls.trustDomain },
      onColdStart: d.wake,
      onExit: (worker, code) => d.onExit(`proxy worker ${worker} exited with ${code}`),
    });
  return { mesh: workers, admin: workers, ready: async () => (await workers.readiness()).ready, workloads: () => workers.workloadInfo(), controlCall: () => workers.controlCall(), stop: (ms) => workers.stop(ms) };
}

/**
 * What each replica `skein up` starts gets to join the mesh without a proxy (the SDK, docs/sdk.md#skein-up),
 * no more than a proxy of its workload holds: with mTLS, the mesh's mode and a join token bound to
 * its service, minted for each start (spent by the SDK's first certificate, which it then renews and
 * announces with); with mTLS off, a token of scope "proxy" bound to its service.
 */
/**
 * What each replica is given for the SDK at each start (a join token of its service, or with mTLS
 * off a proxy token of it). A replica starts without them when they cannot be had (the control
 * plane away): an app that does not use the SDK must not fail to start for them.
 */
function sdkCredentials(control: MeshControl, mode: MtlsMode, logger: Logger): NonNullable<MeshRunnerOptions['credentials']> {
  return async (service, replica): Promise<Record<string, string>> => {
    try {
      if (mode !== 'off') return { [MTLS_ENV]: mode, [JOIN_TOKEN_ENV]: await control.mintJoinToken(replica, [service]) };
      const token = await control.serviceToken(service);
      return token === null ? {} : { [TOKEN_ENV]: token };
    } catch (e) {
      logger.warn({ service, replica, err: (e as Error).message }, 'starting the replica without SDK credentials: the control plane did not give them');
      return {};
    }
  };
}

export const UP_DEFAULTS = Object.freeze({
  /** --join: instances expire this long after their host's last heartbeat (a partition). */
  heartbeatTtlMs: 6_000,
});

/** Where the mesh's control plane is: embedded in this process, or shared (joined). */
interface MeshControl {
  readonly url: string;
  /** Joined: the shared control plane's replicas (the proxy, its CA client, the announcer and the runtime fail over between them). */
  readonly replicas: ControlReplicas | null;
  /** What the runtime writes with. */
  readonly token: string | undefined;
  /** What the proxy announces itself with (before it holds a certificate). */
  readonly proxyToken: string | undefined;
  readonly trustDomain: string;
  /** The mesh CA, for the proxy's certificates. */
  readonly ca: CertificateSource;
  /** A join token of the mesh CA for `proxy`, bound to `services` (single use). */
  mintJoinToken(proxy: string, services: readonly string[]): Promise<string>;
  /** A control-plane token of scope "proxy" bound to `service` alone (mTLS off); null: none to give. */
  serviceToken(service: string): Promise<string | null>;
  /** "control plane at ..., DNS at ...". */
  readonly where: string;
  /** Where the admin token is, for the start-up lines; null: nothing to say. */
  readonly tokenLine: string | null;
  event(e: Parameters<NonNullable<MeshRunnerOptions['onMeshEvent']>>[0]): void;
  close(): Promise<void>;
}

interface JoinSettings {
  readonly urls: readonly string[];
  readonly token: string;
  readonly advertise: string;
}

/** --join and the flags that go with it; the flags of an embedded control plane are refused with it (--http is this host's mesh API). */
function joinSettings(o: { join?: string; token?: string; advertise?: string; dns?: string; dataDir: string; trustDomain?: string }): JoinSettings {
  const urls = parseBaseUrls(o.join ?? '', '--join', "the control plane's URLs (its replicas)", 'http://10.0.0.1:7400,http://10.0.0.2:7400');
  for (const [flag, given] of [['--dns', o.dns], ['--trust-domain', o.trustDomain], ['--data-dir', o.dataDir === 'none' ? undefined : o.dataDir]] as const) {
    if (given !== undefined) throw new SkeinError('SKEIN_E_USAGE', `${flag} configures an embedded control plane; with --join the mesh's control plane is the shared one`, { field: flag });
  }
  const token = o.token?.trim() ?? '';
  if (token === '') throw new SkeinError('SKEIN_E_USAGE', `--join needs a control-plane token: --token or ${TOKEN_ENV} (scope "admin": it mints this host's join token for the mesh CA)`, { field: '--token' });
  const loopback = urls.every((u) => isLoopbackHost(new URL(u).hostname));
  const advertise = o.advertise ?? (loopback ? '127.0.0.1' : null);
  if (advertise === null) throw new SkeinError('SKEIN_E_USAGE', '--join to a control plane on another host needs --advertise HOST: the address the other hosts reach this one at', { field: '--advertise' });
  if (!isIP(advertise)) throw new SkeinError('SKEIN_E_USAGE', `--advertise must be an IP address of this host, got "${advertise}"`, { field: '--advertise' });
  return { urls, token, advertise };
}

async function embeddedControl(d: {
  startControlPlane: typeof import('../control/control-plane.js').startControlPlane;
  ControlCa: typeof import('../identity/mtls/ca-client.js').ControlCa;
  meshRoutes: typeof import('../runtime/mesh-routes.js').meshRoutes;
  runner: () => import('../runtime/mesh-runner.js').MeshRunner | null;
  mesh: MeshFile;
  http: HostPort;
  dns: HostPort | null;
  dataDir: string;
  logger: Logger;
  scrapeIntervalMs: number;
  insecureListen: boolean;
  trustDomain: string;
  audit: AuditSink | null;
  proxyId: string;
}): Promise<MeshControl> {
  const cp = await d.startControlPlane({
    dataDir: d.dataDir === 'none' ? null : d.dataDir,
    http: d.http,
    dns: d.dns,
    ...(d.mesh.control.domain === null ? {} : { domain: d.mesh.control.domain }),
    logger: d.logger.child({ component: 'control' }),
    routes: d.meshRoutes(d.runner),
    scrapeIntervalMs: d.scrapeIntervalMs,
    insecureListen: d.insecureListen,
    trustDomain: d.trustDomain,
    audit: d.audit,
  });
  // Its own proxy announces itself with a proxy token (the runtime writes with the admin token).
  const proxyTokenName = 'skein-up-proxy';
  if (cp.tokens.list().some((t) => t.name === proxyTokenName)) await cp.tokens.revoke(proxyTokenName);
  const proxyToken = (await cp.tokens.mint({ scope: 'proxy', name: proxyTokenName, services: d.mesh.services.map((s) => s.name), ttlMs: null })).token;
  // mTLS off: each service's replicas get a proxy token of their service alone (one per service, revoked at the end).
  const serviceTokens = new Map<string, Promise<string>>();
  // "skein-up-svc-": no service name makes the proxy token's name (a service named "proxy" would).
  const serviceTokenName = (service: string) => (`skein-up-svc-${service}`.length <= 63 ? `skein-up-svc-${service}` : `skein-up-svc-${createHash('sha256').update(service).digest('hex').slice(0, 16)}`);
  const mintJoinToken = async (proxy: string, services: readonly string[]) => (await cp.ca.tokens.mint(proxy, services)).token;
  return {
    url: cp.url,
    replicas: null,
    token: cp.adminToken,
    proxyToken,
    trustDomain: cp.ca.trustDomain,
    // mTLS (on by default): the mesh's own proxy gets its certificates from the embedded CA, with a
    // join token minted for each request (the services of the workloads it adds as replicas start).
    ca: new d.ControlCa({ controlUrl: cp.url, joinToken: (services) => mintJoinToken(d.proxyId, services) }),
    mintJoinToken,
    serviceToken: (service) => {
      let t = serviceTokens.get(service);
      if (t === undefined) {
        const name = serviceTokenName(service);
        t = (async () => {
          if (cp.tokens.list().some((x) => x.name === name)) await cp.tokens.revoke(name);
          return (await cp.tokens.mint({ scope: 'proxy', name, services: [service], ttlMs: null })).token;
        })();
        serviceTokens.set(service, t);
        t.catch(() => serviceTokens.delete(service));
      }
      return t;
    },
    where: `control plane at ${cp.url}${cp.dns === null ? '' : `, DNS at ${cp.dns.host}:${cp.dns.port}`}`,
    tokenLine: `admin token: ${cp.adminTokenFile ?? cp.localTokenFile ?? 'not written (see the log)'} (skein commands on this host find it by themselves)`,
    event: (e) => cp.events.add(e),
    close: async () => {
      await cp.tokens.revoke(proxyTokenName).catch(() => undefined);
      for (const s of serviceTokens.keys()) await cp.tokens.revoke(serviceTokenName(s)).catch(() => undefined);
      await cp.close();
    },
  };
}

async function joinedControl(d: {
  ControlCa: typeof import('../identity/mtls/ca-client.js').ControlCa;
  meshRoutes: typeof import('../runtime/mesh-routes.js').meshRoutes;
  runner: () => import('../runtime/mesh-runner.js').MeshRunner | null;
  meshName: string;
  join: JoinSettings;
  http: HostPort;
  proxyId: string;
  mtls: boolean;
  logger: Logger;
}): Promise<MeshControl> {
  const url = d.join.urls[0] as string;
  const replicas = new ControlReplicas(d.join.urls, systemClock, { token: d.join.token });
  const auth = replicas.headers;
  const mintJoinToken = async (proxy: string, services: readonly string[]) => {
    const res = await replicas.call((base) => fetch(`${base}/v1/ca/tokens`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ proxy, services }), signal: AbortSignal.timeout(5000) }), { unavailable: controlUnavailable });
    const body = (await res.json()) as { token?: string; message?: string };
    if (!res.ok || body.token === undefined) throw new SkeinError('SKEIN_E_CONTROL_UNREACHABLE', `the shared control plane did not mint a join token for ${services.join(', ')}: ${res.status} ${body.message ?? ''}`);
    return body.token;
  };
  // This host's proxy asks the shared CA for its services' certificates with a join token it mints.
  const ca = new d.ControlCa({ control: replicas, joinToken: (services) => mintJoinToken(d.proxyId, services) });
  let trustDomain = '';
  try {
    const health = await replicas.call((base) => fetch(`${base}/v1/health`, { headers: auth, signal: AbortSignal.timeout(5000) }), { unavailable: controlUnavailable });
    if (!health.ok) throw new Error(`GET /v1/health: ${health.status} ${(await health.text()).slice(0, 200)}`);
    if (d.mtls) trustDomain = (await ca.info()).trustDomain;
  } catch (e) {
    throw new SkeinError('SKEIN_E_CONTROL_UNREACHABLE', `--join: no replica of the control plane at ${d.join.urls.join(', ')} answers: ${(e as Error).message}`, { field: '--join' });
  }
  const api = await startHostApi({ http: d.http, token: d.join.token, routes: d.meshRoutes(d.runner), meshName: d.meshName, started: () => d.runner() !== null, replicas, logger: d.logger.child({ component: 'host-api' }) });
  const events = d.logger.child({ component: 'runtime' });
  return {
    url,
    replicas,
    token: d.join.token,
    proxyToken: d.join.token,
    trustDomain,
    ca,
    mintJoinToken,
    // Minting one would need a name unique across the hosts that joined: with mTLS off, SDK apps of a joined host get no token.
    serviceToken: async () => null,
    where: `joined the control plane at ${d.join.urls.join(', ')}, this host's mesh API at ${api.url}`,
    tokenLine: `this host's mesh API (${api.url}) takes the token it joined with${api.localTokenFile === null ? '' : ' (skein commands on this host find it by themselves)'}`,
    // This host's runtime's events go to the shared control plane's feed (POST /v1/events: the
    // leader's, which every replica shows) and to this host's log.
    event: (e) => {
      events.info({ event: e }, 'mesh event');
      const { time: _time, ...posted } = e;
      replicas
        .call((base) => fetch(`${base}/v1/events`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(posted), signal: AbortSignal.timeout(5000) }), { unavailable: controlUnavailable })
        .then(async (r) => {
          if (!r.ok) events.warn({ status: r.status, answer: (await r.text()).slice(0, 300), event: e.message }, 'the control plane refused a mesh event');
        })
        .catch((err: unknown) => events.warn({ err: (err as Error).message, event: e.message }, 'no control-plane replica took a mesh event'));
    },
    close: () => api.close(),
  };
}

/**
 * A joined host's own API (`skein up --join --http`): the runtime's routes (`/v1/mesh`, the same
 * meshRoutes as on an embedded control plane) and `GET /v1/health`, with the control plane's
 * error answers and DNS-rebinding guard. Every route but the health check, reads included (the
 * mesh's status shows commands and env), needs `Authorization: Bearer` with the token this host
 * joined with: 401 SKEIN_E_UNAUTHENTICATED otherwise, with the scope in `details` as the control
 * plane's refusals carry it (the CLI turns it into one line). On loopback, the token is left
 * where the CLI finds a control plane's (by port), so `skein scale -c URL` needs no --token.
 */
async function startHostApi(d: {
  http: HostPort;
  token: string;
  routes: (app: import('fastify').FastifyInstance) => void;
  meshName: string;
  started: () => boolean;
  replicas: ControlReplicas;
  logger: Logger;
}): Promise<{ url: string; localTokenFile: string | null; close(): Promise<void> }> {
  const [{ createBaseApp }, { hostGuard }, { presentedToken }, { hashToken }, { writeLocalToken, removeLocalToken }, { VERSION }] = await Promise.all([
    import('../control/server.js'),
    import('../control/api/host-guard.js'),
    import('../control/auth/access.js'),
    import('../control/auth/tokens.js'),
    import('../control/auth/token-files.js'),
    import('../version.js'),
  ]);
  const app = createBaseApp(d.logger);
  hostGuard(app);
  const scope = (Object.keys(TOKEN_PREFIX) as TokenScope[]).find((s) => d.token.startsWith(TOKEN_PREFIX[s])) ?? 'admin';
  const expected = Buffer.from(hashToken(d.token), 'hex');
  app.addHook('onRequest', async (req, reply) => {
    if (req.method === 'GET' && req.routeOptions.url === '/v1/health') return;
    const presented = presentedToken(req);
    if (presented !== null && presented !== '' && timingSafeEqual(Buffer.from(hashToken(presented), 'hex'), expected)) return;
    const sent = presented === null ? 'none was sent' : presented === '' ? 'the authorization header is not "Bearer <token>"' : 'the token is not the one this host joined with';
    reply.header('www-authenticate', `Bearer realm="skein", scope="${scope}"`);
    d.logger.warn({ method: req.method, path: req.url.split('?')[0], from: req.socket.remoteAddress }, `request refused: ${sent}`);
    throw new SkeinError('SKEIN_E_UNAUTHENTICATED', `${req.method} ${req.routeOptions.url ?? 'this path'} on this host's mesh API needs the token this host joined with (skein up --join --token, or ${TOKEN_ENV}): ${sent}`, { details: { scopes: [scope] } });
  });
  app.get('/v1/health', async () => ({ status: 'ok', version: VERSION, mesh: d.meshName, started: d.started(), control: d.replicas.current }));
  d.routes(app);
  try {
    await app.listen({ host: d.http.host, port: d.http.port });
  } catch (e) {
    await app.close();
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new SkeinError('SKEIN_E_ADDRESS_IN_USE', `this host's mesh API (--http) cannot listen on ${formatHostPort(d.http.host, d.http.port)}: ${code}${code === 'EADDRINUSE' ? ' (a control plane on this host? give --http another address)' : ''}`, { field: '--http', cause: e });
  }
  const port = (app.server.address() as AddressInfo).port;
  let localTokenFile: string | null = null;
  if (isLoopbackHost(d.http.host)) {
    try {
      localTokenFile = await writeLocalToken(port, d.token);
    } catch (e) {
      d.logger.warn({ err: (e as Error).message }, "could not write the local copy of this host's token: the CLI on this host needs --token or SKEIN_TOKEN");
    }
  }
  return {
    url: `http://${formatHostPort(d.http.host, port)}`,
    localTokenFile,
    close: async () => {
      if (localTokenFile !== null) await removeLocalToken(localTokenFile, d.token);
      await app.close();
    },
  };
}
