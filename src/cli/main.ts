/** The `skein` CLI: one file per command; errors are one line and a non-zero exit code. */
import { Command, CommanderError } from 'commander';
import { withToken } from './common.js';
import { SkeinError } from '../core/errors.js';
import { VERSION } from '../version.js';

/**
 * Every command, by name, with the module that defines it: a command's module (and what it
 * imports: the proxy's, the control plane's, YAML, schemas...) is loaded only when that command
 * runs, or for the help that lists them all. `skein proxy` then loads the proxy's modules alone
 * (its memory: docs/benchmarks.md).
 */
const COMMANDS: ReadonlyArray<readonly [string, () => Promise<Command>]> = [
  ['control', async () => (await import('./control.js')).controlCommand()],
  ['proxy', async () => (await import('./proxy.js')).proxyCommand()],
  ['up', async () => (await import('./up.js')).upCommand()],
  ['scale', async () => (await import('./up.js')).scaleCommand()],
  ['rollout', async () => (await import('./rollout.js')).rolloutCommand()],
  ['register', async () => (await import('./registry-commands.js')).registerCommand()],
  ['deregister', async () => (await import('./registry-commands.js')).deregisterCommand()],
  ['heartbeat', async () => (await import('./registry-commands.js')).heartbeatCommand()],
  ['apply', async () => (await import('./registry-commands.js')).applyCommand()],
  ['services', async () => (await import('./registry-commands.js')).servicesCommand()],
  ['endpoints', async () => (await import('./registry-commands.js')).endpointsCommand()],
  ['watch', async () => (await import('./watch.js')).watchCommand()],
  ['events', async () => (await import('./registry-commands.js')).eventsCommand()],
  ['stat', async () => (await import('./monitor.js')).statCommand()],
  ['top', async () => (await import('./monitor.js')).topCommand()],
  ['tap', async () => (await import('./monitor.js')).tapCommand()],
  ['dashboard', async () => (await import('./monitor.js')).dashboardCommand()],
  ['prometheus-config', async () => (await import('./prometheus-config.js')).prometheusConfigCommand()],
  ['schema', async () => (await import('./schema.js')).schemaCommand()],
  ['validate', async () => (await import('./schema.js')).validateCommand()],
  ['ca', async () => (await import('./ca.js')).caCommand()],
  ['token', async () => (await import('./tokens.js')).tokenCommand()],
  ['audit', async () => (await import('./audit.js')).auditCommand()],
];

/**
 * The CLI for `argv`: only the command it names when it names one (its aliases and options are
 * its module's), every command otherwise (help, a typo: commander then suggests the nearest).
 */
export async function program(argv: readonly string[] = []): Promise<Command> {
  const p = new Command('skein')
    .description('Skein: a lightweight service mesh. Discovery, DNS, health checks and more, from one binary.')
    .version(VERSION, '-V, --version')
    .showSuggestionAfterError(true)
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  const named = COMMANDS.find(([name]) => name === argv[2]);
  for (const c of await Promise.all((named === undefined ? COMMANDS : [named]).map(([, load]) => load()))) p.addCommand(c);
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
    await (await program(argv)).parseAsync(argv);
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
