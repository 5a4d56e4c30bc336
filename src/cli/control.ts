/** `skein control`: runs the control plane until SIGINT/SIGTERM. */
import { Command, Option } from 'commander';
import { CONTROL_DEFAULTS } from '../api/control.js';
import { DNS_DEFAULTS } from '../api/dns.js';
import { DOMAIN_PATTERN, patternMessage } from '../api/names.js';
import { parseHostPort } from '../core/address.js';
import { SkeinError } from '../core/errors.js';
import { DEFAULT_DATA_DIR, DEFAULT_DNS, DEFAULT_HTTP } from './common.js';
import { durationFlag, intFlag } from './flags.js';
import { caControlOptions, caControlSettings, type CaFlags } from './ca.js';
import { ETCD_DEFAULTS, parseEtcdEndpoints } from '../api/etcd.js';

export function controlCommand(): Command {
  return caControlOptions(new Command('control')
    .description('run the control plane: registry, health checks, watch stream, HTTP API and DNS server')
    .option('--data-dir <dir>', 'directory of the embedded store and of admin.token ("none" keeps everything in memory); with --store etcd, of admin.token only', DEFAULT_DATA_DIR)
    .addOption(new Option('--store <kind>', 'where the registry, policies, tokens and the CA are kept: the embedded store (one machine) or an etcd cluster shared by several control-plane replicas (docs/operations.md)').choices(['embedded', 'etcd']).default('embedded'))
    .option('--etcd <urls>', 'with --store etcd: the client URLs of the etcd members, comma-separated (http://10.0.0.1:2379,...)')
    .option('--etcd-prefix <prefix>', 'with --store etcd: the key prefix of this mesh in etcd (several meshes may share a cluster)', ETCD_DEFAULTS.prefix)
    .option('--replica <name>', 'with --store etcd: this replica\'s name in the leader election (who runs the health checks); default control-<pid>')
    .option('--http <host:port>', 'HTTP API listen address', DEFAULT_HTTP)
    .option('--advertise <host>', 'with --store etcd: the address the other replicas reach this one\'s API at, on the --http port (they forward reads of the golden signals to the leader); default the --http host, needed when that is 0.0.0.0 or ::')
    .option('--insecure-listen', 'allow --http beyond loopback although the API has no TLS (tokens cross the network in clear)')
    .option('--dns <host:port>', 'DNS listen address (UDP and TCP); "off" disables DNS', DEFAULT_DNS)
    .option('--domain <domain>', 'DNS zone served: <service>.service.<domain>', DNS_DEFAULTS.domain)
    .option('--dns-ttl <seconds>', 'TTL of DNS answers', intFlag('--dns-ttl', 0, 3600), DNS_DEFAULTS.ttlSeconds)
    .option(
      '--dns-rate-limit <per-second>',
      `UDP responses per second to each source network (/24, /56), bursts of twice that; 0 turns it off (default: ${DNS_DEFAULTS.rateLimit.responsesPerSecond}, only when --dns listens beyond loopback)`,
      intFlag('--dns-rate-limit', 0, 1_000_000),
    )
    .option('--ttl-grace <duration>', 'extra time TTL instances get to heartbeat after a restart', durationFlag('--ttl-grace'), CONTROL_DEFAULTS.ttlGraceMs)
    .option('--history <events>', 'events kept for resuming watches with since=', intFlag('--history', 1, 10_000_000), CONTROL_DEFAULTS.historySize)
    .option('--max-queue <messages>', 'messages a watch subscriber may fall behind before its stream is closed', intFlag('--max-queue', 1, 10_000_000), CONTROL_DEFAULTS.maxQueue)
    .option('--scrape-interval <duration>', 'how often the proxies\' /stats are scraped for the golden signals (1s to 1m)', durationFlag('--scrape-interval', 1000, 60_000), CONTROL_DEFAULTS.scrapeIntervalMs)
    .option('--audit-log <target>', 'the audit log (docs/security.md#audit-log): one JSON line per CA event, token refused, minted or revoked, policy change and accepted write: "stdout", a file path (appended to), or "off"', 'off')
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .action(async (o: { dataDir: string; store: 'embedded' | 'etcd'; etcd?: string; etcdPrefix: string; replica?: string; advertise?: string; http: string; dns: string; domain: string; dnsTtl: number; dnsRateLimit?: number; ttlGrace: number; history: number; maxQueue: number; scrapeInterval: number; logLevel: string; insecureListen?: boolean; auditLog: string } & CaFlags) => {
      if (!new RegExp(DOMAIN_PATTERN).test(o.domain)) {
        throw new SkeinError('SKEIN_E_USAGE', `--domain ${patternMessage(DOMAIN_PATTERN)}, got "${o.domain}"`, { field: '--domain' });
      }
      const http = parseHostPort(o.http, '--http');
      if (o.store === 'etcd' && o.etcd === undefined) throw new SkeinError('SKEIN_E_USAGE', '--store etcd needs --etcd URL[,URL...]: the client URLs of the etcd members', { field: '--etcd' });
      if (o.store !== 'etcd' && o.advertise !== undefined) throw new SkeinError('SKEIN_E_USAGE', '--advertise applies with --store etcd only (one replica forwards nothing)', { field: '--advertise' });
      if (o.advertise !== undefined && !/^[A-Za-z0-9.:-]{1,253}$/.test(o.advertise)) throw new SkeinError('SKEIN_E_USAGE', `--advertise must be a host name or an IP address (no scheme, no port), got "${o.advertise}"`, { field: '--advertise' });
      if (o.store !== 'etcd' && o.etcd !== undefined) throw new SkeinError('SKEIN_E_USAGE', '--etcd applies with --store etcd only', { field: '--etcd' });
      const etcd = o.store === 'etcd' ? { endpoints: parseEtcdEndpoints(o.etcd ?? ''), prefix: o.etcdPrefix, ...(o.replica === undefined ? {} : { replica: o.replica }) } : null;
      const dns = o.dns === 'off' ? null : parseHostPort(o.dns, '--dns');
      // Loaded here, so that the other commands (and --help) do not pay for the server's modules.
      const [{ default: pino }, { startControlPlane }, { openAuditLog }] = await Promise.all([import('pino'), import('../control/control-plane.js'), import('../telemetry/audit-log.js')]);
      const logger = pino({ level: o.logLevel, base: { component: 'control' } });
      const audit = o.auditLog === 'off' ? null : openAuditLog(o.auditLog);
      const cp = await startControlPlane({
        dataDir: o.dataDir === 'none' ? null : o.dataDir,
        etcd,
        ...(o.advertise === undefined ? {} : { advertise: o.advertise }),
        http,
        dns,
        domain: o.domain,
        dnsTtlSeconds: o.dnsTtl,
        ...(o.dnsRateLimit === undefined ? {} : { dnsRateLimit: o.dnsRateLimit }),
        ttlGraceMs: o.ttlGrace,
        historySize: o.history,
        maxQueue: o.maxQueue,
        scrapeIntervalMs: o.scrapeInterval,
        insecureListen: o.insecureListen === true,
        logger,
        audit,
        ...(await caControlSettings(o)),
      });
      const httpText = `${cp.http.host.includes(':') ? `[${cp.http.host}]` : cp.http.host}:${cp.http.port}`;
      const dnsText = cp.dns === null ? 'off' : `${cp.dns.host.includes(':') ? `[${cp.dns.host}]` : cp.dns.host}:${cp.dns.port}`;
      await new Promise<void>((resolve) => {
        const stop = (sig: string) => {
          logger.info({ signal: sig }, 'shutting down');
          cp.close()
            .then(() => audit?.close())
            .then(resolve, (e: unknown) => {
              logger.error({ err: e }, 'shutdown failed');
              resolve();
            });
        };
        process.once('SIGINT', () => stop('SIGINT'));
        process.once('SIGTERM', () => stop('SIGTERM'));
        // Said once the handlers are in place (a SIGTERM sent on reading it drains), with where the
        // admin token is (never the token itself: logs travel).
        logger.info({ http: httpText, dns: dnsText, ca: cp.renewUrl, trustDomain: cp.ca.trustDomain, store: o.store, etcd: etcd?.endpoints ?? null, dataDir: o.dataDir, revision: cp.registry.revision, instances: cp.registry.instanceCount, adminToken: cp.adminTokenFile, adminTokenLocalCopy: cp.localTokenFile }, 'control plane ready');
      });
    }));
}
