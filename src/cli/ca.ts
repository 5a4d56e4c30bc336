/**
 * The CA from the command line: `skein ca status`, `skein ca token`, and the CA flags of
 * `skein control` (--trust-domain, --leaf-lifetime, --ca-cert/--ca-key/--ca-chain, --ca-listen).
 */
import { Command, Option } from 'commander';
import { CA_DEFAULTS, type CaInfo, type MintTokenResponse } from '../api/ca.js';
import { parseHostPort, type HostPort } from '../core/address.js';
import { formatDuration } from '../core/duration.js';
import { SkeinError } from '../core/errors.js';
import { trustDomainFor, validTrustDomain } from '../identity/spiffe.js';
import type { OperatorCa } from '../control/ca/ca.js';
import { call, controlOption, outputOption, print, printJson, readText, table } from './common.js';
import { durationFlag } from './flags.js';

export interface CaFlags {
  trustDomain?: string;
  leafLifetime: number;
  caCert?: string;
  caKey?: string;
  caChain?: string;
  caListen?: string;
}

/** Adds the CA's flags to `skein control`. */
export function caControlOptions(cmd: Command): Command {
  return cmd
    .option('--trust-domain <domain>', `SPIFFE trust domain of the mesh's identities (default: ${trustDomainFor('skein')})`)
    .option(
      '--leaf-lifetime <duration>',
      'lifetime of workload certificates (1m to 90d; proxies renew at 50-70% of it)',
      durationFlag('--leaf-lifetime', CA_DEFAULTS.minLeafLifetimeMs, CA_DEFAULTS.maxLeafLifetimeMs),
      CA_DEFAULTS.leafLifetimeMs,
    )
    .option('--ca-cert <file>', 'PEM certificate of an operator-supplied CA root or intermediate (default: a root generated once and kept in the data dir)')
    .option('--ca-key <file>', 'PEM private key (ECDSA P-256) of --ca-cert')
    .option('--ca-chain <file>', "PEM certificates from --ca-cert's issuer up to and including the root (for an intermediate)")
    .option('--ca-listen <host:port>', 'listen address of the CA renewal listener (HTTPS, mTLS; default: the --http host, a port the OS picks)');
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g;

/** The CA part of the control plane's options, from the flags (files read, errors naming the flag). */
export async function caControlSettings(o: CaFlags): Promise<{ trustDomain?: string; leafLifetimeMs: number; caIssuer?: OperatorCa; caListen?: HostPort }> {
  const out: { trustDomain?: string; leafLifetimeMs: number; caIssuer?: OperatorCa; caListen?: HostPort } = { leafLifetimeMs: o.leafLifetime };
  if (o.trustDomain !== undefined) {
    const problem = validTrustDomain(o.trustDomain);
    if (problem !== null) throw new SkeinError('SKEIN_E_USAGE', `--trust-domain: ${problem}`, { field: '--trust-domain' });
    out.trustDomain = o.trustDomain;
  }
  if ((o.caCert === undefined) !== (o.caKey === undefined)) {
    throw new SkeinError('SKEIN_E_USAGE', '--ca-cert and --ca-key go together (the certificate of the CA and its key)', { field: o.caCert === undefined ? '--ca-cert' : '--ca-key' });
  }
  if (o.caChain !== undefined && o.caCert === undefined) throw new SkeinError('SKEIN_E_USAGE', '--ca-chain needs --ca-cert and --ca-key', { field: '--ca-chain' });
  if (o.caCert !== undefined && o.caKey !== undefined) {
    const chainText = o.caChain === undefined ? '' : await readText(o.caChain);
    const chainPem = chainText.match(PEM_CERT) ?? [];
    if (o.caChain !== undefined && chainPem.length === 0) throw new SkeinError('SKEIN_E_USAGE', `--ca-chain ${o.caChain} holds no PEM certificate`, { field: '--ca-chain' });
    out.caIssuer = { certPem: await readText(o.caCert), keyPem: await readText(o.caKey), chainPem };
  }
  if (o.caListen !== undefined) out.caListen = parseHostPort(o.caListen, '--ca-listen');
  return out;
}

function serviceList(v: string, prev: string[] = []): string[] {
  return [...prev, ...v.split(',').map((s) => s.trim()).filter((s) => s !== '')];
}

const day = (d: Date) => d.toISOString().replace('.000Z', 'Z');

export function caCommand(): Command {
  const ca = new Command('ca').description("the mesh's certificate authority: status and join tokens");
  ca.addCommand(
    new Command('status')
      .description('trust domain, roots, issuer and their expiry, leaf lifetime, renewal URL')
      .addOption(controlOption())
      .addOption(outputOption())
      .action(async (o: { control: string; output: 'table' | 'json' }) => {
        const info = await call<CaInfo>(o.control, 'GET', '/v1/ca');
        if (o.output === 'json') return printJson(info);
        // Loaded here: the X.509 library is not paid for by the other commands.
        const { describeCert } = await import('../identity/certs.js');
        const roots = info.roots.map((p) => describeCert(p));
        print(
          `trust domain    ${info.trustDomain}\n` +
            `control plane   ${info.identity}\n` +
            `leaf lifetime   ${formatDuration(info.leafLifetimeMs)}\n` +
            `renew URL       ${info.renewUrl === '' ? '(none: the CA has no valid issuer)' : info.renewUrl}\n` +
            `issuer          ${info.issuer.subject}  serial ${info.issuer.serial}  valid ${day(new Date(info.issuer.notBefore))} to ${day(new Date(info.issuer.notAfter))}\n\n` +
            table(
              ['ROOT', 'SERIAL', 'NOT AFTER'],
              roots.map((r) => [r.subject, r.serial, day(r.notAfter)]),
            ),
        );
      }),
  );
  ca.addCommand(
    new Command('token')
      .description('mint a join token for a proxy and the services it serves (shown once)')
      .requiredOption('--proxy <id>', 'the proxy id the token is for')
      .requiredOption('--service <names>', 'services the token may get certificates for (comma-separated, repeatable)', serviceList)
      .addOption(new Option('--ttl <duration>', `how long the token may be used (${formatDuration(CA_DEFAULTS.minTokenTtlMs)} to ${formatDuration(CA_DEFAULTS.maxTokenTtlMs)})`).default(formatDuration(CA_DEFAULTS.tokenTtlMs)))
      .addOption(controlOption())
      .addOption(outputOption())
      .action(async (o: { proxy: string; service: string[]; ttl: string; control: string; output: 'table' | 'json' }) => {
        const r = await call<MintTokenResponse>(o.control, 'POST', '/v1/ca/tokens', { proxy: o.proxy, services: o.service, ttl: o.ttl });
        if (o.output === 'json') return printJson(r);
        print(`${r.token}\n`);
        process.stderr.write(`join token for proxy ${r.proxy} (${r.services.join(', ')}), single use, expires ${r.expiresAt}; it is not shown again\n`);
      }),
  );
  return ca;
}
