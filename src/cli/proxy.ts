/** `skein proxy`: runs the data-plane proxy for one or more local workloads until SIGINT/SIGTERM. */
import { PROXY_LIMITS_DEFAULTS } from '../api/proxy-limits.js';
import { Command, Option } from 'commander';
import { parseHostPort } from '../core/address.js';
import { SkeinError } from '../core/errors.js';
import type { WorkloadSpec } from '../proxy/proxy.js';
import { PROTOCOLS, type Protocol } from '../api/types.js';
import { controlOption, controlUrl } from './common.js';
import { durationFlag, intFlag } from './flags.js';
import { availableParallelism, hostname } from 'node:os';
import { systemClock } from '../core/clock.js';
import { PROXY_ID } from '../api/names.js';
import { Announcer, wakeService } from '../telemetry/announce.js';
import { PROXY_TAP_LIMITS, TAP_LIMIT_BOUNDS, parseHeaderNames } from '../api/tap.js';
import { TOKEN_ENV } from '../api/auth.js';
import { MTLS_DEFAULT_MODE, MTLS_MODES, type MtlsMode } from '../api/mtls.js';
import { AUTHZ_DEFAULTS } from '../api/authz/model.js';
import { AUTHZ_DEFAULT_VALUES, type AuthzDefault } from '../api/authz/schema.js';
import { PROXY_STATE_DEFAULTS, type ProxyStateFile } from '../api/proxy-state.js';
import type { ControlReplicas } from '../discovery/control-replicas.js';
import type { ControlCall } from '../identity/mtls/identities.js';
import { formatDuration } from '../core/duration.js';
import { startTracer } from '../proxy/workers/tracer.js';
import { WORKERS_BOUNDS } from '../proxy/workers/protocol.js';
import type { Logger } from 'pino';

export { startTracer };

/** Collects a repeatable flag's values. */
export const repeat = (v: string, acc: string[]) => [...acc, v];

/** --tap-redact of `skein proxy` and `skein up`. */
export const TAP_REDACT_HELP = 'header names (comma-separated, repeatable) whose values taps hide, beyond authorization, cookies, API keys and tokens';

/** --trace-sample: a number from 0 to 1. */
export function ratioFlag(flag: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < 0 || n > 1) throw new SkeinError('SKEIN_E_USAGE', `${flag} must be a number from 0 to 1, got "${v}"`, { field: flag });
    return n;
  };
}

/** --trace-otlp: an http(s) URL. */
export function otlpUrl(v: string): string {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new SkeinError('SKEIN_E_USAGE', `--trace-otlp must be a URL such as http://127.0.0.1:4318/v1/traces, got "${v}"`, { field: '--trace-otlp' });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new SkeinError('SKEIN_E_USAGE', `--trace-otlp must use http or https, got "${u.protocol}"`, { field: '--trace-otlp' });
  return u.href;
}

/** --workers N|auto: worker threads sharing the listeners (auto: one per core the process may use). */
export function workersFlag(v: string): number {
  const bounds = `${WORKERS_BOUNDS.min} to ${WORKERS_BOUNDS.max}`;
  if (v === 'auto') return Math.min(WORKERS_BOUNDS.max, Math.max(WORKERS_BOUNDS.min, availableParallelism()));
  const n = Number(v);
  if (!/^\d{1,3}$/.test(v) || n < WORKERS_BOUNDS.min || n > WORKERS_BOUNDS.max) throw new SkeinError('SKEIN_E_USAGE', `--workers must be "auto" or a whole number from ${bounds}, got "${v.slice(0, 40)}"`, { field: '--workers' });
  return n;
}

export const DEFAULT_ADMIN = '127.0.0.1:4191';
export const DEFAULT_OUTBOUND = '127.0.0.1:4140';
const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

const WORKLOAD_KEYS = ['name', 'service', 'outbound', 'inbound', 'app', 'pin', 'protocol'] as const;

/** `name=web,outbound=127.0.0.1:4140,inbound=127.0.0.1:4143,app=127.0.0.1:8080[,service=web][,pin=db][,protocol=tcp]`. */
export function parseWorkload(text: string): WorkloadSpec {
  const flag = '--workload';
  const kv = new Map<string, string>();
  const keys = WORKLOAD_KEYS.join(', ');
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new SkeinError('SKEIN_E_USAGE', `${flag}: "${part}" is not KEY=VALUE (keys: ${keys})`, { field: flag });
    const k = part.slice(0, eq).trim();
    if (!(WORKLOAD_KEYS as readonly string[]).includes(k)) throw new SkeinError('SKEIN_E_USAGE', `${flag}: unknown key "${k}" (keys: ${keys})`, { field: flag });
    if (kv.has(k)) throw new SkeinError('SKEIN_E_USAGE', `${flag}: "${k}" given twice`, { field: flag });
    kv.set(k, part.slice(eq + 1).trim());
  }
  const name = kv.get('name');
  if (name === undefined || !NAME.test(name)) throw new SkeinError('SKEIN_E_USAGE', `${flag}: name= is required and must be a DNS label, got ${JSON.stringify(name ?? '')}`, { field: flag });
  const service = kv.get('service');
  if (service !== undefined && !NAME.test(service)) throw new SkeinError('SKEIN_E_USAGE', `${flag}: service must be a DNS label, got "${service}"`, { field: flag });
  const addr = (k: string) => {
    const v = kv.get(k);
    return v === undefined ? null : parseHostPort(v, `${flag} ${k}`);
  };
  const pin = kv.get('pin');
  if (pin !== undefined && !NAME.test(pin)) throw new SkeinError('SKEIN_E_USAGE', `${flag}: pin must be a service name (a DNS label), got "${pin.slice(0, 80)}"`, { field: flag });
  const protocol = kv.get('protocol');
  if (protocol !== undefined && !(PROTOCOLS as readonly string[]).includes(protocol)) throw new SkeinError('SKEIN_E_USAGE', `${flag}: protocol must be one of ${PROTOCOLS.join(', ')}, got "${protocol.slice(0, 40)}"`, { field: flag });
  const spec = {
    name,
    ...(service === undefined ? {} : { service }),
    outbound: addr('outbound'),
    inbound: addr('inbound'),
    app: addr('app'),
    ...(pin === undefined ? {} : { pin }),
    ...(protocol === undefined ? {} : { protocol: protocol as Protocol }),
  };
  if (pin !== undefined && spec.outbound === null) throw new SkeinError('SKEIN_E_USAGE', `${flag} ${name}: pin= pins an outbound listener: give outbound= too`, { field: flag });
  if (protocol === 'tcp' && spec.outbound !== null && pin === undefined) throw new SkeinError('SKEIN_E_USAGE', `${flag} ${name}: an outbound listener of protocol tcp carries streams to one service: give pin=SERVICE`, { field: flag });
  if ((spec.inbound === null) !== (spec.app === null)) throw new SkeinError('SKEIN_E_USAGE', `${flag} ${name}: inbound= and app= go together (the inbound listener forwards to the app)`, { field: flag });
  if (spec.inbound === null && spec.outbound === null) throw new SkeinError('SKEIN_E_USAGE', `${flag} ${name}: give outbound=, or inbound= and app=`, { field: flag });
  return spec;
}

/** --control URL[,URL...]: the control-plane replicas, in the order to try them. */
export function controlUrls(text: string): string[] {
  const urls = text.split(',').map((u) => u.trim()).filter((u) => u !== '').map(controlUrl);
  if (urls.length === 0) throw new SkeinError('SKEIN_E_USAGE', '--control: give at least one URL, e.g. http://10.0.0.1:7400,http://10.0.0.2:7400', { field: '--control' });
  const dup = urls.find((u, i) => urls.indexOf(u) !== i);
  if (dup !== undefined) throw new SkeinError('SKEIN_E_USAGE', `--control: ${dup} is given twice`, { field: '--control' });
  return urls;
}

export function proxyCommand(): Command {
  const control = controlOption();
  control.description = 'control plane HTTP address, or its replicas\' comma-separated (the proxy fails over between them)';
  return new Command('proxy')
    .description('run the proxy: outbound listeners that route by service, inbound listeners in front of local apps')
    .addOption(control)
    .addOption(new Option('--token <token>', 'control-plane token of scope "proxy" (skein token create), sent when the proxy announces itself; not needed with --mtls strict or permissive: the proxy announces with its certificate').env(TOKEN_ENV))
    .option('--no-control', 'run without a control plane (inbound listeners only)')
    .option('--workload <spec>', 'a workload: name=N[,outbound=HOST:PORT][,inbound=HOST:PORT,app=HOST:PORT][,service=S] (repeatable)', repeat, [] as string[])
    .option('--outbound <host:port>', `shorthand for one workload named "default" with this outbound listener (default ${DEFAULT_OUTBOUND} when no --workload is given)`)
    .option('--admin <host:port>', 'admin server: /live /ready /metrics /debug/endpoints ("off" disables it)', DEFAULT_ADMIN)
    .option('--insecure-admin', 'with --admin beyond loopback: answer taps and /debug to other hosts too (no TLS, no tokens; taps show headers and bodies); without it other hosts get /live /ready /metrics /stats only')
    .option('--domain <domain>', 'accept <service>.service.<domain> as a Host', 'skein')
    .option('--max-head <bytes>', 'largest request head (431 above)', intFlag('--max-head', 1024, 1024 * 1024), PROXY_LIMITS_DEFAULTS.maxHeadBytes)
    .option('--header-timeout <duration>', 'time a client has to send a request head', durationFlag('--header-timeout'), PROXY_LIMITS_DEFAULTS.headersTimeoutMs)
    .option('--idle-timeout <duration>', 'close client connections idle this long', durationFlag('--idle-timeout'), PROXY_LIMITS_DEFAULTS.idleTimeoutMs)
    .option('--upstream-idle-timeout <duration>', 'close pooled upstream connections idle this long', durationFlag('--upstream-idle-timeout'), PROXY_LIMITS_DEFAULTS.upstreamIdleTimeoutMs)
    .option('--connect-timeout <duration>', 'time to connect to an endpoint', durationFlag('--connect-timeout'), PROXY_LIMITS_DEFAULTS.connectTimeoutMs)
    .option('--max-connections <n>', 'client connections per listener', intFlag('--max-connections', 1, 1_000_000), PROXY_LIMITS_DEFAULTS.maxConnections)
    .option('--access-log <target>', 'one JSON line per request: "stdout", a file path (appended to), or "off"', 'off')
    .option('--audit-log <target>', 'the audit log (docs/security.md#audit-log): one JSON line per authorization deny, dry-run deny and audit match, and per refused mTLS handshake: "stdout", a file path (appended to), or "off"', 'off')
    .addOption(new Option('--metrics <on|off>', 'per-request metrics (requests, latency, bytes by source, destination, route and status)').choices(['on', 'off']).default('on'))
    .option('--id <id>', 'names this proxy to the control plane (metrics, tap); default <hostname>-<pid>')
    .option('--tap-redact <names>', TAP_REDACT_HELP, repeat, [] as string[])
    .option('--max-taps <n>', 'taps open at once on the admin server (one more: 429 SKEIN_E_TOO_MANY_TAPS)', intFlag('--max-taps', ...TAP_LIMIT_BOUNDS.maxTaps), PROXY_TAP_LIMITS.maxTaps)
    .option('--tap-stall-timeout <duration>', 'end a tap whose reader took nothing for this long while lines waited', durationFlag('--tap-stall-timeout', ...TAP_LIMIT_BOUNDS.stallTimeoutMs), PROXY_TAP_LIMITS.stallTimeoutMs)
    .option('--trace-otlp <url>', 'export a span per hop and attempt over OTLP/HTTP to this URL (e.g. http://127.0.0.1:4318/v1/traces); off by default')
    .option('--trace-sample <ratio>', 'share of new traces sampled, 0..1 (requests that arrive with a sampled trace context are always followed)', ratioFlag('--trace-sample'), 1)
    .addOption(new Option('--mtls <mode>', 'mTLS between proxies (docs/security.md): strict (mTLS only), permissive (mTLS and plaintext), off').choices([...MTLS_MODES]).default(MTLS_DEFAULT_MODE))
    .addOption(new Option('--authz-default <allow|deny>', 'what inbound listeners decide for a service with no ALLOW policy and no default of its own (docs/authorization.md); deny is the production recommendation').choices([...AUTHZ_DEFAULT_VALUES]).default(AUTHZ_DEFAULTS.meshDefault))
    .option('--state-dir <dir>', 'persist the last-known state (endpoints, service definitions and policies; certificates with mTLS) here, and serve from it when no control plane answers at start (static stability; e.g. /var/lib/skein/proxy); off by default')
    .option('--state-max-age <duration>', 'a persisted state older than this is not served', durationFlag('--state-max-age', 1000), PROXY_STATE_DEFAULTS.maxAgeMs)
    .option('--join-token <token>', 'a join token from the mesh CA (`skein ca token`), bound to the services of --workload; with --mtls strict or permissive (or SKEIN_JOIN_TOKEN)')
    .option('--workers <n|auto>', `worker threads, each a proxy on the same listeners (SO_REUSEPORT: the kernel spreads connections), ${WORKERS_BOUNDS.min} to ${WORKERS_BOUNDS.max}, or auto (one per core); one admin server reports their sum (docs/proxy.md#workers)`, workersFlag, 1)
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .action(
      async (o: {
        control: string | false;
        workload: string[];
        outbound?: string;
        admin: string;
        domain: string;
        maxHead: number;
        headerTimeout: number;
        idleTimeout: number;
        upstreamIdleTimeout: number;
        connectTimeout: number;
        maxConnections: number;
        accessLog: string;
        auditLog: string;
        logLevel: string;
        metrics: 'on' | 'off';
        id?: string;
        traceOtlp?: string;
        traceSample: number;
        tapRedact: string[];
        maxTaps: number;
        tapStallTimeout: number;
        token?: string;
        mtls: MtlsMode;
        joinToken?: string;
        insecureAdmin?: boolean;
        authzDefault: AuthzDefault;
        stateDir?: string;
        stateMaxAge: number;
        workers: number;
      }) => {
        const specs = o.workload.map(parseWorkload);
        if (o.outbound !== undefined || specs.length === 0) specs.unshift({ name: 'default', outbound: parseHostPort(o.outbound ?? DEFAULT_OUTBOUND, '--outbound') });
        const names = new Set<string>();
        for (const s of specs) {
          if (names.has(s.name)) throw new SkeinError('SKEIN_E_USAGE', `--workload: the name "${s.name}" is used twice`, { field: '--workload' });
          names.add(s.name);
        }
        const admin = adminAddress(o.admin);
        const control = o.control === false ? null : controlUrls(o.control);
        if (o.stateDir !== undefined && (control === null || o.stateDir.trim() === '')) {
          throw new SkeinError('SKEIN_E_USAGE', control === null ? '--state-dir: without a control plane there is no state to keep' : '--state-dir: give a directory', { field: '--state-dir' });
        }
        if (control === null && specs.some((s) => s.outbound != null)) {
          throw new SkeinError('SKEIN_E_USAGE', '--no-control: outbound listeners need a control plane to route by service', { field: '--no-control' });
        }
        if (o.accessLog.trim() === '') throw new SkeinError('SKEIN_E_USAGE', '--access-log: give "stdout", a file path or "off"', { field: '--access-log' });
        const id = o.id ?? `${hostname()}-${process.pid}`;
        if (!PROXY_ID.test(id)) throw new SkeinError('SKEIN_E_USAGE', `--id: "${id}" must match ${PROXY_ID.source}`, { field: '--id' });
        const traceUrl = o.traceOtlp === undefined ? null : otlpUrl(o.traceOtlp);
        const tapRedact = parseHeaderNames(o.tapRedact, '--tap-redact');
        if (o.workers > 1) {
          // Not yet with workers: every worker would write the same state file.
          if (o.stateDir !== undefined) throw new SkeinError('SKEIN_E_USAGE', `--workers ${o.workers}: not yet with --state-dir (every worker would write the same state); use --workers 1`, { field: '--workers' });
        }
        const [{ default: pino }, { Proxy }, { startAdmin, proxyView }, { openAccessLog }, { openAuditLog }] = await Promise.all([
          import('pino'),
          import('../proxy/proxy.js'),
          import('../proxy/admin.js'),
          import('../proxy/access-log.js'),
          import('../telemetry/audit-log.js'),
        ]);
        const logger = pino({ level: o.logLevel, base: { component: 'proxy' } });
        const [{ ControlReplicas }, { readState }] = await Promise.all([import('../discovery/control-replicas.js'), import('../proxy/state-file.js')]);
        const replicas = control === null ? null : new ControlReplicas(control, systemClock, { token: o.token ?? null });
        const adminOpts = { tapRedact, tapLimits: { maxTaps: o.maxTaps, stallTimeoutMs: o.tapStallTimeout }, insecure: o.insecureAdmin === true };
        const limits = { maxHeadBytes: o.maxHead, headersTimeoutMs: o.headerTimeout, idleTimeoutMs: o.idleTimeout, upstreamIdleTimeoutMs: o.upstreamIdleTimeout, connectTimeoutMs: o.connectTimeout, maxConnections: o.maxConnections };
        if (o.workers > 1) {
          const { ProxyWorkers } = await import('../proxy/workers.js');
          // mTLS: the main thread spends the join token on certificates of its own, which prove the workers' (src/proxy/workers/ca.ts).
          const mtls = o.mtls === 'off' ? null : await meshCa(replicas, o.joinToken ?? process.env['SKEIN_JOIN_TOKEN'], o.mtls, null, logger);
          let failed: ((why: string) => void) | null = null;
          const workers = await ProxyWorkers.start({
            count: o.workers,
            clock: systemClock,
            logger,
            init: {
              id,
              logLevel: o.logLevel,
              workloads: specs,
              control,
              token: o.token ?? null,
              domain: o.domain,
              requestMetrics: o.metrics === 'on',
              authzDefault: o.authzDefault,
              limits,
              accessLog: o.accessLog === 'off' ? null : o.accessLog,
              auditLog: o.auditLog === 'off' ? null : o.auditLog,
              trace: traceUrl === null ? null : { url: traceUrl, sampleRatio: o.traceSample },
              mtls: mtls === null ? null : { trustDomain: mtls.trustDomain, mode: mtls.mode, info: mtls.info },
            },
            ca: mtls === null ? null : { source: mtls.source, trustDomain: mtls.trustDomain },
            onColdStart: control === null ? undefined : wake(replicas, o.token ?? null, () => workers.controlCall(), logger),
            onExit: (worker, code) => failed?.(`proxy worker ${worker} exited with ${code}`),
          });
          let adminServer: Awaited<ReturnType<typeof startAdmin>> | null = null;
          try {
            adminServer = admin === null ? null : await startAdmin(workers, admin, adminOpts);
          } catch (e) {
            await workers.stop(0);
            throw e;
          }
          const announcer = replicas === null || adminServer === null ? null : new Announcer({ control: replicas, id, admin: adminServer.address, workloads: () => workers.workloadInfo(), logger, token: o.token ?? null, viaCertificate: () => workers.controlCall() });
          announcer?.start();
          const ready = () => logger.info({ id, admin: adminServer?.address ?? null, control, workers: workers.workers, workloads: workers.workloadInfo(), tracing: traceUrl }, 'proxy ready');
          await untilStopped(logger, ready, [() => announcer?.stop(), () => workers.stop(5000), () => adminServer?.close()], (stop) => {
            failed = (why) => {
              logger.error({ err: why }, 'a proxy worker failed: stopping the proxy');
              process.exitCode = 1;
              stop('worker-exit');
            };
          });
          return;
        }
        // The persisted state, checked now (corrupt, another mesh, too old: refused, said once).
        let loaded: ProxyStateFile | null = null;
        if (o.stateDir !== undefined && control !== null) {
          const r = await readState(o.stateDir, { control, now: Date.now(), maxAgeMs: o.stateMaxAge });
          if (r.kind === 'refused') logger.error({ code: 'SKEIN_E_PROXY_STATE', stateDir: o.stateDir }, `${r.reason}; not using it`);
          if (r.kind === 'ok') loaded = r.state;
          logger.info({ stateDir: o.stateDir, found: r.kind, savedAt: loaded?.savedAt ?? null, maxAge: formatDuration(o.stateMaxAge) }, 'static stability: proxy state');
        }
        const mtls = o.mtls === 'off' ? null : await meshCa(replicas, o.joinToken ?? process.env['SKEIN_JOIN_TOKEN'], o.mtls, loaded, logger);
        const accessLog = o.accessLog === 'off' ? null : openAccessLog(o.accessLog);
        const audit = o.auditLog === 'off' ? null : openAuditLog(o.auditLog);
        const tracer = traceUrl === null ? null : await startTracer(traceUrl, o.traceSample, id, logger);
        const proxy = new Proxy({
          accessLog,
          audit,
          id,
          tracer,
          requestMetrics: o.metrics === 'on',
          controlUrl: control,
          control: replicas,
          state: o.stateDir === undefined ? null : { dir: o.stateDir, loaded },
          domain: o.domain,
          logger,
          mtls,
          authzDefault: o.authzDefault,
          // A request held for a service scaled to zero: ask the control plane (skein up's runtime) to wake it.
          onColdStart: control === null ? undefined : wake(replicas, o.token ?? null, (): ControlCall | null => proxy.controlCall(), logger),
          limits,
        });
        let adminServer: Awaited<ReturnType<typeof startAdmin>> | null = null;
        try {
          // The certificates kept in the state first (no CA may answer); then one CA request for
          // every identity still missing: a join token is spent by its first use.
          const ids = await proxy.tlsReady();
          const kept = loaded?.tls === null || loaded?.tls === undefined ? [] : (ids?.restore(loaded.tls.credentials) ?? []);
          if (kept.length > 0) logger.info({ services: kept }, 'certificates restored from the proxy state (renewed when the CA answers)');
          await ids?.obtain(specs.map((s) => s.service ?? s.name));
          for (const s of specs) await proxy.addWorkload(s);
          adminServer = admin === null ? null : await startAdmin(proxyView(proxy), admin, adminOpts);
        } catch (e) {
          await proxy.stop(0);
          await adminServer?.close();
          throw e;
        }
        proxy.start();
        const announcer = replicas === null || adminServer === null ? null : new Announcer({ control: replicas, id, admin: adminServer.address, workloads: () => proxy.workloadInfo(), logger, token: o.token ?? null, viaCertificate: () => proxy.controlCall() });
        announcer?.start();
        const ready = () => logger.info({ id, admin: adminServer?.address ?? null, control, workloads: proxy.workloadInfo(), tracing: traceUrl }, 'proxy ready');
        await untilStopped(logger, ready, [() => announcer?.stop(), () => proxy.stop(5000), () => adminServer?.close(), () => tracer?.shutdown(), () => accessLog?.close(), () => audit?.close()]);
      },
    );
}

/** A request held for a service scaled to zero: ask the control plane (skein up's runtime) to wake it. */
function wake(replicas: ControlReplicas | null, token: string | null, viaCertificate: () => ControlCall | null, logger: Logger): (service: string) => void {
  return (service) => wakeService({ control: replicas ?? undefined, token, viaCertificate }, service, logger);
}

/**
 * Runs until SIGINT or SIGTERM (or `onStop`'s stop is called), then the shutdown steps in order.
 * A step that fails is logged, and the rest are skipped. `ready` (the "proxy ready" line) is said
 * once the signal handlers are in place: a supervisor that stops the proxy as soon as it reads that
 * line gets a drain, not a process ended by the signal's default action.
 */
function untilStopped(logger: Logger, ready: () => void, steps: ReadonlyArray<() => unknown>, onStop?: (stop: (why: string) => void) => void): Promise<void> {
  return new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (why: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal: why }, 'draining');
      steps
        .reduce<Promise<unknown>>((p, step) => p.then(() => step()), Promise.resolve())
        .then(
          () => resolve(),
          (e: unknown) => {
            logger.error({ err: e }, 'shutdown failed');
            resolve();
          },
        );
    };
    onStop?.(stop);
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
    ready();
  });
}

/**
 * --admin: where the admin server listens (null: off). Beyond loopback it serves other hosts
 * /live, /ready, /metrics and /stats only, unless --insecure-admin (admin.ts).
 */
export function adminAddress(text: string) {
  return text === 'off' ? null : parseHostPort(text, '--admin');
}

/**
 * `--mtls strict|permissive`: the mesh CA of the control plane, with the proxy's one join token.
 * No replica answers and the persisted state has the CA's answer and certificates: those, until one does.
 */
async function meshCa(control: ControlReplicas | null, token: string | undefined, mode: MtlsMode, loaded: ProxyStateFile | null, logger: { warn(obj: object, msg: string): void }) {
  if (control === null) throw new SkeinError('SKEIN_E_USAGE', `--mtls ${mode} needs a control plane (its CA issues the proxy's certificates)`, { field: '--mtls' });
  if (token === undefined || token.trim() === '') {
    throw new SkeinError('SKEIN_E_USAGE', `--mtls ${mode} needs a join token: mint one with \`skein ca token --proxy ID --service S\` and pass --join-token (or SKEIN_JOIN_TOKEN)`, { field: '--join-token' });
  }
  const { ControlCa } = await import('../identity/mtls/ca-client.js');
  let spent = false;
  const source = new ControlCa({
    control,
    joinToken: async () => {
      if (spent) throw new Error('the join token was spent on the first certificates: restart the proxy with a new --join-token to serve a new service');
      spent = true;
      return token.trim();
    },
  });
  let info;
  try {
    info = await source.info();
  } catch (e) {
    const kept = loaded?.tls ?? null;
    if (kept === null) throw new SkeinError('SKEIN_E_CONTROL_UNREACHABLE', `--mtls ${mode}: could not read the mesh CA at ${control.urls.map((u) => `${u}/v1/ca`).join(', ')}: ${(e as Error).message}`, { field: '--control' });
    logger.warn({ err: (e as Error).message, trustDomain: kept.ca.trustDomain }, 'no mesh CA answers: using the one of the persisted state until one does');
    source.remember(control.current, kept.ca);
    info = kept.ca;
  }
  return { source, trustDomain: info.trustDomain, mode, info };
}
