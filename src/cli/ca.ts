/**
 * The CA from the command line: `skein ca status`, `skein ca token`, `skein ca rotate`, and the CA
 * flags of `skein control` (--trust-domain, --leaf-lifetime, --ca-cert/--ca-key/--ca-chain, --ca-listen).
 */
import { Command, Option } from 'commander';
import { CA_DEFAULTS, ROTATION_STEPS, type CaInfo, type MintTokenResponse, type RotateRequest, type RotationStatus } from '../api/ca.js';
import { parseHostPort, type HostPort } from '../core/address.js';
import { formatDuration } from '../core/duration.js';
import { SkeinError } from '../core/errors.js';
import { trustDomainFor, validTrustDomain } from '../identity/spiffe.js';
import type { OperatorCa } from '../control/ca/ca.js';
import { call, controlOption, outputOption, print, printJson, readText, table } from './common.js';
import { durationFlag, listFlag } from './flags.js';

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
    .option('--ca-listen <host:port>', 'listen address of the mTLS listener (HTTPS: renewal, and the API for proxies with their certificates; default: the --http host, a port the OS picks)');
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

const day = (d: Date) => d.toISOString().replace('.000Z', 'Z');
const fp = (f: string) => f.slice(0, 16);
const yesNo = (v: boolean | null) => (v === null ? '-' : v ? 'yes' : 'NO');

/** The rotation part of `skein ca status`: the step, and per proxy workload what it trusts and holds. */
function rotationText(r: RotationStatus): string {
  const phase = r.phase === 'none' ? 'none (one root; `skein ca rotate --step add` starts one)' : `${r.phase} (next: --step ${r.next})`;
  const lines = [`rotation        ${phase}`];
  if (r.addedAt !== null) lines.push(`added           ${r.addedAt}`);
  if (r.switchedAt !== null) lines.push(`switched        ${r.switchedAt} (leaves of the old root all expired by ${r.oldLeavesExpireAt})`);
  if (r.phase !== 'none') lines.push(`next step       ${r.blocked === null ? 'ready' : `blocked: ${r.blocked}`}`);
  const rows = r.proxies.flatMap((p) =>
    p.workloads.length === 0
      ? [[p.proxy, '-', '-', '-', '-', '-']]
      : p.workloads.map((w) => [p.proxy, w.name, w.roots.map(fp).join(','), fp(w.leafRoot), yesNo(r.phase === 'none' ? null : w.roots.includes(newRootOf(r))), yesNo(r.phase === 'none' ? null : w.leafRoot === newRootOf(r))]),
  );
  const proxies = rows.length === 0 ? 'no proxy with mTLS has announced itself\n' : table(['PROXY', 'WORKLOAD', 'TRUSTS ROOTS', 'LEAF ROOT', 'TRUSTS NEW', 'ON NEW'], rows);
  return `${lines.join('\n')}\n\n${proxies}`;
}

const newRootOf = (r: RotationStatus) => r.roots.find((x) => x.role === 'new')?.fingerprint ?? '';

export function caCommand(): Command {
  const ca = new Command('ca').description("the mesh's certificate authority: status and join tokens");
  ca.addCommand(
    new Command('status')
      .description('trust domain, roots, issuer and their expiry, leaf lifetime, renewal URL')
      .addOption(controlOption())
      .addOption(outputOption())
      .action(async (o: { control: string; output: 'table' | 'json' }) => {
        const [info, rotation] = await Promise.all([call<CaInfo>(o.control, 'GET', '/v1/ca'), call<RotationStatus>(o.control, 'GET', '/v1/ca/rotation')]);
        if (o.output === 'json') return printJson({ ...info, rotation });
        print(
          `trust domain    ${info.trustDomain}\n` +
            `control plane   ${info.identity}\n` +
            `leaf lifetime   ${formatDuration(info.leafLifetimeMs)}\n` +
            `mTLS listener   ${info.renewUrl === '' ? '(none: the CA has no valid issuer)' : info.renewUrl}\n` +
            `issuer          ${info.issuer.subject}  serial ${info.issuer.serial}  root ${fp(info.issuer.root)}  valid ${day(new Date(info.issuer.notBefore))} to ${day(new Date(info.issuer.notAfter))}\n\n` +
            table(
              ['ROOT', 'SERIAL', 'NOT AFTER', 'FINGERPRINT', 'ROLE'],
              rotation.roots.map((r) => [r.subject, r.serial, day(new Date(r.notAfter)), fp(r.fingerprint), r.role]),
            ) +
            '\n' +
            rotationText(rotation),
        );
      }),
  );
  ca.addCommand(
    new Command('token')
      .description('mint a join token for a proxy and the services it serves (shown once)')
      .requiredOption('--proxy <id>', 'the proxy id the token is for')
      .requiredOption('--service <names>', 'services the token may get certificates for (comma-separated, repeatable)', listFlag)
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
  ca.addCommand(
    new Command('rotate')
      .description('take one step of a root rotation: add (trust a new root), switch (issue from it), remove (drop the old root)')
      .addOption(new Option('--step <step>', 'the step').choices([...ROTATION_STEPS]).makeOptionMandatory())
      .option('--force', 'take the step although an announced proxy is not ready for it (switch, remove)', false)
      .option('--ca-cert <file>', 'with --step add: PEM certificate of the new root or intermediate (default: a generated root)')
      .option('--ca-key <file>', 'PEM private key (ECDSA P-256) of --ca-cert')
      .option('--ca-chain <file>', "PEM certificates from --ca-cert's issuer up to and including the root (for an intermediate)")
      .addOption(controlOption())
      .addOption(outputOption())
      .action(async (o: { step: RotateRequest['step']; force: boolean; caCert?: string; caKey?: string; caChain?: string; control: string; output: 'table' | 'json' }) => {
        const body: RotateRequest = { step: o.step, ...(o.force ? { force: true } : {}) };
        if (o.caCert !== undefined || o.caKey !== undefined || o.caChain !== undefined) {
          if (o.step !== 'add') throw new SkeinError('SKEIN_E_USAGE', `--ca-cert, --ca-key and --ca-chain go with --step add, not ${o.step}`, { field: '--ca-cert' });
          const given = await caControlSettings({ leafLifetime: CA_DEFAULTS.leafLifetimeMs, ...(o.caCert === undefined ? {} : { caCert: o.caCert }), ...(o.caKey === undefined ? {} : { caKey: o.caKey }), ...(o.caChain === undefined ? {} : { caChain: o.caChain }) });
          const ca = given.caIssuer as OperatorCa;
          Object.assign(body, { caCert: ca.certPem, caKey: ca.keyPem, ...(ca.chainPem.length === 0 ? {} : { caChain: ca.chainPem }) });
        }
        const r = await call<RotationStatus>(o.control, 'POST', '/v1/ca/rotate', body);
        if (o.output === 'json') return printJson(r);
        const done = o.step === 'add' ? 'new root added to the trust bundle; issuing stays on the old root' : o.step === 'switch' ? `issuing switched to the new intermediate (serial ${r.issuer.serial}); proxies renew onto it` : 'old root removed from the trust bundle';
        print(`${done}${o.force ? ' (forced)' : ''}\n\n${rotationText(r)}`);
      }),
  );
  return ca;
}
