/** The `skein` CLI: one file per command; errors are one line and a non-zero exit code. */
import { Command, CommanderError } from 'commander';
import { withToken } from './common.js';
import { SkeinError } from '../core/errors.js';
import { VERSION } from '../version.js';
import { controlCommand } from './control.js';
import { proxyCommand } from './proxy.js';
import { scaleCommand, upCommand } from './up.js';
import { rolloutCommand } from './rollout.js';
import { applyCommand, deregisterCommand, endpointsCommand, eventsCommand, heartbeatCommand, registerCommand, servicesCommand } from './registry-commands.js';
import { watchCommand } from './watch.js';
import { dashboardCommand, statCommand, tapCommand, topCommand } from './monitor.js';
import { tokenCommand } from './tokens.js';
import { prometheusConfigCommand } from './prometheus-config.js';
import { schemaCommand, validateCommand } from './schema.js';
import { caCommand } from './ca.js';
import { auditCommand } from './audit.js';

export function program(): Command {
  const p = new Command('skein')
    .description('Skein: a lightweight service mesh. Discovery, DNS, health checks and more, from one binary.')
    .version(VERSION, '-V, --version')
    .showSuggestionAfterError(true)
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  for (const c of [
    controlCommand(),
    proxyCommand(),
    upCommand(),
    scaleCommand(),
    rolloutCommand(),
    registerCommand(),
    deregisterCommand(),
    heartbeatCommand(),
    applyCommand(),
    servicesCommand(),
    endpointsCommand(),
    watchCommand(),
    eventsCommand(),
    statCommand(),
    topCommand(),
    tapCommand(),
    dashboardCommand(),
    prometheusConfigCommand(),
    schemaCommand(),
    validateCommand(),
    caCommand(),
    tokenCommand(),
    auditCommand(),
  ]) {
    p.addCommand(c);
  }
  const strict = (c: Command) => {
    // Every command that talks to a control plane takes --token and --data-dir (common.ts: withToken).
    if (c.options.some((x) => x.long === '--control')) withToken(c);
    c.exitOverride();
    c.allowExcessArguments(false);
    c.commands.forEach(strict);
  };
  strict(p);
  return p;
}

/** Runs the CLI; resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander has printed its message (or the help); help and version exit 0, usage errors 2.
      return e.exitCode === 0 ? 0 : 2;
    }
    if (e instanceof SkeinError) {
      // The field is added when the message does not name it already (a file's errors name it as
      // "FILE: resource [i] KIND: FIELD" while the message reads `FILE: resource [i] KIND "name": ... FIELD ...`).
      const field = e.field?.split(': ').pop();
      process.stderr.write(`skein: ${e.message}${field !== undefined && !e.message.includes(field) ? ` (${e.field})` : ''} [${e.code}]\n`);
      return e.code === 'SKEIN_E_USAGE' ? 2 : 1;
    }
    process.stderr.write(`skein: ${(e as Error).message}\n`);
    return 1;
  }
}
