/**
 * `skein up FILE`: the whole mesh on this machine in one process: the control plane (embedded
 * store), one proxy for every workload, and the services of the mesh file as supervised child
 * processes. Ctrl-C drains and stops everything. `skein scale SERVICE N` changes replicas of a
 * running mesh (through the control plane's /v1/mesh routes).
 */
import { Command, Option } from 'commander';
import { CONTROL_DEFAULTS } from '../api/control.js';
import { parseHostPort } from '../core/address.js';
import { SkeinError } from '../core/errors.js';
import { call, controlOption, DEFAULT_DNS, DEFAULT_HTTP, outputOption, print, printJson, readText, table, withToken, type OutputFormat } from './common.js';
import { adminAddress, DEFAULT_ADMIN, DEFAULT_OUTBOUND, TAP_REDACT_HELP, otlpUrl, ratioFlag, repeat, startTracer } from './proxy.js';
import { parseHeaderNames } from '../api/tap.js';
import { MTLS_MODES, MTLS_UP_MODE, type MtlsMode } from '../api/mtls.js';
import { AUTHZ_DEFAULTS } from '../api/authz/model.js';
import { AUTHZ_DEFAULT_VALUES, type AuthzDefault } from '../api/authz/schema.js';
import { OUTSIDE_CALLER } from '../api/names.js';
import { trustDomainFor, validTrustDomain } from '../identity/spiffe.js';
import { durationFlag, intFlag } from './flags.js';

export function upCommand(): Command {
  return new Command('up')
    .description('run a mesh file: control plane, proxy and every service, until Ctrl-C')
    .argument('<file>', 'mesh file (YAML or JSON, kind: Mesh)')
    .option('--http <host:port>', 'control plane HTTP API (overrides the file\'s control.http)')
    .option('--insecure-listen', 'allow --http beyond loopback although the API has no TLS (tokens cross the network in clear)')
    .option('--dns <host:port>', 'DNS server, or "off" (overrides the file\'s control.dns)')
    .option('--data-dir <dir>', 'directory of the embedded store; "none" (default) keeps the registry in memory', 'none')
    .option('--outbound <host:port>', 'an outbound listener for callers outside the mesh (curl -x)', DEFAULT_OUTBOUND)
    .option('--admin <host:port>', 'the proxy admin server ("off" disables it, and with it the golden signals and taps)', DEFAULT_ADMIN)
    .option('--insecure-admin', 'allow --admin beyond loopback although it has no TLS and no tokens (taps show headers and bodies)')
    .option('--tap-redact <names>', TAP_REDACT_HELP, repeat, [] as string[])
    .option('--access-log <target>', 'the proxy\'s access log: one JSON line per request to "stdout", a file path (appended to), or "off"', 'off')
    .option('--audit-log <target>', 'the audit log of the control plane and the proxy (docs/security.md#audit-log): "stdout", a file path (appended to), or "off"', 'off')
    .option('--trace-otlp <url>', 'the proxy exports a span per hop and attempt over OTLP/HTTP to this URL (e.g. http://127.0.0.1:4318/v1/traces); off by default')
    .option('--trace-sample <ratio>', 'share of new traces sampled, 0..1', ratioFlag('--trace-sample'), 1)
    .addOption(new Option('--mtls <mode>', 'mTLS between the mesh\'s proxies (docs/security.md): strict, permissive or off').choices([...MTLS_MODES]).default(MTLS_UP_MODE))
    .addOption(new Option('--authz-default <allow|deny>', "what a service's inbound decides when it has no ALLOW policy and no default of its own (docs/authorization.md): allow for a dev mesh, deny in production").choices([...AUTHZ_DEFAULT_VALUES]).default(AUTHZ_DEFAULTS.meshDefault))
    .option('--trust-domain <domain>', "SPIFFE trust domain of the mesh's identities (default: the mesh name)")
    .option('--scrape-interval <duration>', 'how often the control plane scrapes the proxy for the golden signals (1s to 1m)', durationFlag('--scrape-interval', 1000, 60_000), CONTROL_DEFAULTS.scrapeIntervalMs)
    .addOption(new Option('--log-level <level>', 'log level of the control plane and proxy (JSON lines on stderr)').choices(['fatal', 'error', 'warn', 'info', 'debug']).default('warn'))
    .action(async (file: string, o: { http?: string; dns?: string; dataDir: string; outbound: string; admin: string; accessLog: string; auditLog: string; traceOtlp?: string; traceSample: number; scrapeInterval: number; logLevel: string; tapRedact: string[]; insecureListen?: boolean; insecureAdmin?: boolean; mtls: MtlsMode; trustDomain?: string; authzDefault: AuthzDefault }) => {
      // Everything is checked before anything starts.
      const { parseMeshFile } = await import('../api/mesh.js');
      const mesh = parseMeshFile(await readText(file), file);
      const http = parseHostPort(o.http ?? mesh.control.http ?? DEFAULT_HTTP, '--http');
      const dnsText = o.dns ?? mesh.control.dns ?? DEFAULT_DNS;
      const dns = dnsText === 'off' ? null : parseHostPort(dnsText, '--dns');
      const outbound = o.outbound === 'off' ? null : parseHostPort(o.outbound, '--outbound');
      const admin = adminAddress(o.admin, o.insecureAdmin === true);
      const trustDomain = o.trustDomain ?? trustDomainFor(mesh.name);
      const tdProblem = validTrustDomain(trustDomain);
      if (tdProblem !== null) throw new SkeinError('SKEIN_E_USAGE', `${o.trustDomain === undefined ? `the mesh name "${mesh.name}" makes no trust domain` : '--trust-domain'}: ${tdProblem}`, { field: '--trust-domain' });
      if (o.accessLog.trim() === '') throw new SkeinError('SKEIN_E_USAGE', '--access-log: give "stdout", a file path or "off"', { field: '--access-log' });
      const tapRedact = parseHeaderNames(o.tapRedact, '--tap-redact');

      const [{ default: pino }, { startControlPlane }, { Proxy }, { startAdmin }, { MeshRunner }, { meshRoutes }, { openAccessLog }, { Announcer }, { ControlCa }, { openAuditLog }] = await Promise.all([
        import('pino'),
        import('../control/control-plane.js'),
        import('../proxy/proxy.js'),
        import('../proxy/admin.js'),
        import('../runtime/mesh-runner.js'),
        import('../runtime/mesh-routes.js'),
        import('../proxy/access-log.js'),
        import('../proxy/announce.js'),
        import('../proxy/tls/ca-client.js'),
        import('../telemetry/audit-log.js'),
      ]);
      const traceUrl = o.traceOtlp === undefined ? null : otlpUrl(o.traceOtlp);
      const accessLog = o.accessLog === 'off' ? null : openAccessLog(o.accessLog);
      // One audit log for the control plane and the proxy: one writer, lines in order.
      const audit = o.auditLog === 'off' ? null : openAuditLog(o.auditLog);
      const logger = pino({ level: o.logLevel, base: { mesh: mesh.name } }, pino.destination(2));
      const say = (line: string) => process.stdout.write(`[skein] ${line}\n`);
      let runner: InstanceType<typeof MeshRunner> | null = null;
      // The tracer checks its settings (OTEL_BSP_SCHEDULE_DELAY) before anything listens.
      const proxyId = `skein-up-${process.pid}`;
      const tracer = traceUrl === null ? null : await startTracer(traceUrl, o.traceSample, proxyId, logger);
      const cp = await startControlPlane({
        dataDir: o.dataDir === 'none' ? null : o.dataDir,
        http,
        dns,
        ...(mesh.control.domain === null ? {} : { domain: mesh.control.domain }),
        logger: logger.child({ component: 'control' }),
        routes: meshRoutes(() => runner),
        scrapeIntervalMs: o.scrapeInterval,
        insecureListen: o.insecureListen === true,
        trustDomain,
        audit,
      });
      // Its own proxy announces itself with a proxy token (the runtime writes with the admin token).
      const proxyTokenName = 'skein-up-proxy';
      if (cp.tokens.list().some((t) => t.name === proxyTokenName)) await cp.tokens.revoke(proxyTokenName);
      const proxyToken = (await cp.tokens.mint({ scope: 'proxy', name: proxyTokenName, services: mesh.services.map((s) => s.name), ttlMs: null })).token;
      // mTLS (on by default): the mesh's own proxy gets its certificates from the embedded CA, with a
      // join token minted for each request (the services of the workloads it adds as replicas start).
      const mtls =
        o.mtls === 'off'
          ? null
          : {
              mode: o.mtls,
              trustDomain: cp.ca.trustDomain,
              source: new ControlCa({ controlUrl: cp.url, joinToken: async (services) => (await cp.ca.tokens.mint(proxyId, services)).token }),
            };
      // A request held for a service scaled to zero wakes it through the runtime (in-process).
      let wake: (service: string) => void = () => undefined;
      const proxy = new Proxy({
        controlUrl: cp.url,
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
      let adminServer: Awaited<ReturnType<typeof startAdmin>> | null = null;
      let announcer: InstanceType<typeof Announcer> | null = null;
      let outboundAt: string | null = null;
      const r = new MeshRunner({ mesh, file, controlUrl: cp.url, token: cp.adminToken, proxy, say, scrapeIntervalMs: o.scrapeInterval, onMeshEvent: (e) => cp.events.add(e) });
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
          await cp.tokens.revoke(proxyTokenName).catch(() => undefined);
          await cp.close();
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

      try {
        proxy.start();
        if (outbound !== null) outboundAt = (await proxy.addWorkload({ name: 'local', service: OUTSIDE_CALLER, outbound })).outbound;
        adminServer = admin === null ? null : await startAdmin(proxy, admin, { tapRedact });
        if (adminServer !== null) {
          announcer = new Announcer({ controlUrl: cp.url, id: proxyId, admin: adminServer.address, workloads: () => proxy.workloadInfo(), everyMs: 5000, token: proxyToken, viaCertificate: () => proxy.controlCall() });
          await announcer.announce();
          announcer.start();
        }
        say(`mesh "${mesh.name}": control plane at ${cp.url}${cp.dns === null ? '' : `, DNS at ${cp.dns.host}:${cp.dns.port}`}${adminServer === null ? '' : `, proxy admin at http://${adminServer.address}`}${outboundAt === null ? '' : `, outbound proxy at http://${outboundAt}`}`);
        await waitReady(proxy);
        runner = r;
        await r.start();
      } catch (e) {
        await shutdown('start-up failed');
        throw e;
      }
      if (stopping === null) {
        const rows = r.status().map((s) => [s.name, `${s.ready}/${s.replicas}`, s.servicePort === null ? '' : `http://${s.servicePort}/`, s.outbound ?? '']);
        print(table(['SERVICE', 'READY', 'REACH IT AT', 'ITS HTTP_PROXY'], rows));
        const first = r.status().at(-1);
        if (outboundAt !== null && first !== undefined) say(`through the mesh by name: curl -x http://${outboundAt} http://${first.name}/`);
        say(`dashboard: ${cp.url}/dashboard/${adminServer === null ? ' (no golden signals: the proxy admin server is off)' : ''}`);
        say(`admin token: ${cp.adminTokenFile ?? cp.localTokenFile ?? 'not written (see the log)'} (skein commands on this host find it by themselves)`);
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

async function waitReady(proxy: { ready: boolean }): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!proxy.ready) {
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
