/**
 * `skein token create|list|revoke`: the control plane's API tokens from the command line
 * (POST/GET/DELETE /v1/tokens, admin only; docs/security.md#control-plane-tokens). A minted token
 * is printed once, alone on stdout, so `--token "$(skein token create ...)"` works in scripts.
 */
import { Command, Option } from 'commander';
import { TOKEN_SCOPES, type WireToken } from '../api/auth.js';
import { call, controlOption, outputOption, print, printJson, table } from './common.js';
import { listFlag } from './flags.js';

const MINTABLE = TOKEN_SCOPES.filter((s) => s !== 'admin');

export function tokenCommand(): Command {
  const t = new Command('token').description('API tokens of the control plane: mint, list and revoke them (admin)');
  t.addCommand(
    new Command('create')
      .description('mint a token (shown once): proxy (its services only), automation (apply, scale), read, tap (headers and bodies)')
      .addOption(new Option('--scope <scope>', 'what it may do').choices([...MINTABLE]).makeOptionMandatory())
      .requiredOption('--name <name>', 'a unique name (a DNS label): what logs and the audit log call it')
      .option('--service <names>', 'proxy tokens: the services whose instances it may register (comma-separated, repeatable)', listFlag)
      .option('--ttl <duration>', 'how long it is valid (default: until revoked)')
      .addOption(controlOption())
      .addOption(outputOption())
      .action(async (o: { scope: string; name: string; service?: string[]; ttl?: string; control: string; output: 'table' | 'json' }) => {
        const r = await call<WireToken & { token: string }>(o.control, 'POST', '/v1/tokens', {
          scope: o.scope,
          name: o.name,
          ...(o.service === undefined ? {} : { services: o.service }),
          ...(o.ttl === undefined ? {} : { ttl: o.ttl }),
        });
        if (o.output === 'json') return printJson(r);
        print(`${r.token}\n`);
        process.stderr.write(`token "${r.name}" (scope ${r.scope}${r.services === null ? '' : `: ${r.services.join(', ')}`}), ${r.expiresAt === null ? 'valid until revoked' : `expires ${r.expiresAt}`}; it is not shown again\n`);
      }),
  );
  t.addCommand(
    new Command('list')
      .description('the tokens (names and scopes, never a secret)')
      .addOption(controlOption())
      .addOption(outputOption())
      .action(async (o: { control: string; output: 'table' | 'json' }) => {
        const r = await call<{ tokens: WireToken[] }>(o.control, 'GET', '/v1/tokens');
        if (o.output === 'json') return printJson(r);
        print(table(['NAME', 'SCOPE', 'SERVICES', 'CREATED', 'EXPIRES'], r.tokens.map((x) => [x.name, x.scope, x.services?.join(',') ?? '-', x.createdAt ?? '-', x.expiresAt ?? 'never'])));
      }),
  );
  t.addCommand(
    new Command('revoke')
      .description('revoke a token by name: refused from now on')
      .argument('<name>')
      .addOption(controlOption())
      .action(async (name: string, o: { control: string }) => {
        const r = await call<{ revoked: string; scope: string }>(o.control, 'DELETE', `/v1/tokens/${encodeURIComponent(name)}`);
        print(`revoked ${r.revoked} (scope ${r.scope})\n`);
      }),
  );
  return t;
}
