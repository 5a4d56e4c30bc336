/**
 * Monitoring commands: `skein stat` (golden signals per service), `skein top` (the busiest routes
 * and edges, redrawn like a small htop), `skein tap` (live requests of a service) and
 * `skein dashboard` (where the web UI is). They read the control plane's signals API (GET
 * /v1/signals, /v1/signals/services/S) and its tap relay (GET /v1/tap, NDJSON).
 */
import { spawn } from 'node:child_process';
import { Command, Option } from 'commander';
import { ERROR_CODES, SkeinError, type ErrorCode } from '../core/errors.js';
import { authHeaders, authRefusal, call, printable, controlOption, controlUrl, outputOption, print, printJson, table, type OutputFormat } from './common.js';
import { durationFlag, intFlag } from './flags.js';
import { forEachLine } from '../core/lines.js';
import { REDACTED, SECRET_HEADERS, isSecretHeader, parseHeaderNames } from '../api/tap.js';

// ---------------------------------------------------------------------------------------------
// The signals API (docs/api.md#golden-signals) as the CLI reads it
// ---------------------------------------------------------------------------------------------

// The control plane's own definitions: the windows it keeps, and the JSON it answers.
import { formatTarget } from '../api/mesh/autoscale.js';
import type { AutoscaleView } from '../runtime/autoscale.js';
import { healthyCount, WINDOWS, type MeshSignalsBody, type SignalWindow, type WireEdge, type WireInstance, type WireRoute, type WireService, type WireSignals } from '../api/signals.js';

export { WINDOWS, type SignalWindow };
export type Signals = WireSignals;
export type InstanceSignals = WireInstance;
export type ServiceSignals = WireService;
export type EdgeSignals = WireEdge;
export type RouteSignals = WireRoute;
export type MeshSignals = MeshSignalsBody;
export type OneServiceSignals = WireService & { window?: string; time?: string; edges: WireEdge[]; routes: WireRoute[] };

/** Parses --window: one of WINDOWS, else a usage error naming them. */
export function windowFlag(v: string): SignalWindow {
  if (!(WINDOWS as readonly string[]).includes(v)) {
    throw new SkeinError('SKEIN_E_USAGE', `--window must be one of ${WINDOWS.join(', ')}, got "${v}"`, { field: '--window' });
  }
  return v as SignalWindow;
}

const windowOption = (dflt: SignalWindow) => new Option('-w, --window <window>', `time window of the signals: ${WINDOWS.join(', ')}`).argParser(windowFlag).default(dflt);

// ---------------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------------

const DASH = '-';

/** Requests per second: "0", "0.35", "12.5", "1234". */
export function fmtRps(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return DASH;
  if (v === 0) return '0';
  if (v < 10) return v.toFixed(2);
  if (v < 1000) return v.toFixed(1);
  return v.toFixed(0);
}

/** A success rate (fraction 0..1) as a percentage: "99.50%"; null (no requests) is "-". */
export function fmtSuccess(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return DASH;
  return `${(v * 100).toFixed(2)}%`;
}

/** Milliseconds: "0.42", "3.1", "120"; null (no requests) is "-". */
export function fmtMs(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return DASH;
  if (v < 1) return v.toFixed(2);
  if (v < 100) return v.toFixed(1);
  return v.toFixed(0);
}

const latencyCells = (l: WireSignals['latencyMs'] | null | undefined) => [fmtMs(l?.p50), fmtMs(l?.p95), fmtMs(l?.p99)];
const LATENCY_HEADERS = ['P50(ms)', 'P95(ms)', 'P99(ms)'];

/** "healthy/total" of a service's instances. */
export function instanceCounts(s: ServiceSignals): string {
  const { healthy, total } = healthyCount(s);
  return `${healthy}/${total}`;
}

/** The `skein stat` table of services. */
export function statTable(services: ServiceSignals[]): string {
  return table(
    ['SERVICE', 'INSTANCES', 'RPS', 'SUCCESS', ...LATENCY_HEADERS],
    services.map((s) => [s.service, instanceCounts(s), fmtRps(s.rps), fmtSuccess(s.successRate), ...latencyCells(s.latencyMs)]),
  );
}

/** `skein stat SERVICE`: the service, its instances, the edges in and out of it and its routes. */
export function statServiceText(s: OneServiceSignals): string {
  let out = statTable([s]);
  const instances = s.instances ?? [];
  out += '\n';
  out +=
    instances.length === 0
      ? 'no instances\n'
      : table(
          ['INSTANCE', 'STATUS', 'ADDRESS', 'RPS', 'SUCCESS', ...LATENCY_HEADERS],
          instances.map((i) => [i.id, i.status, i.address ?? DASH, fmtRps(i.rps), fmtSuccess(i.successRate), ...latencyCells(i.latencyMs)]),
        );
  const edges = s.edges ?? [];
  out += '\n';
  out +=
    edges.length === 0
      ? 'no edges: no calls to or from other services in the window\n'
      : table(
          ['FROM', 'TO', 'MTLS', 'RPS', 'SUCCESS', ...LATENCY_HEADERS],
          edges.map((e) => [e.source, e.destination, e.mtls ?? '-', fmtRps(e.rps), fmtSuccess(e.successRate), ...latencyCells(e.latencyMs)]),
        );
  const routes = s.routes ?? [];
  if (routes.length > 0) {
    out += '\n';
    out += table(
      ['ROUTE', 'DIRECTION', 'RPS', 'SUCCESS', ...LATENCY_HEADERS],
      routes.map((r) => [r.route, r.direction, fmtRps(r.rps), fmtSuccess(r.successRate), ...latencyCells(r.latencyMs)]),
    );
  }
  return out;
}

/** `skein stat SERVICE`'s autoscaler lines: its policy, whether a rollout freezes it, and its last decision. */
export function autoscaleText(a: AutoscaleView): string {
  const head = `autoscale: ${a.min}..${a.max} replicas, target ${formatTarget(a)}${a.frozen ? ' (frozen: a rollout is in progress)' : ''}\n`;
  return head + (a.last === null ? 'last decision: none yet\n' : `last decision (${a.last.time}): ${a.last.message}\n`);
}

/** A service's autoscaler as `skein up` reports it (GET /v1/mesh); null when it is not autoscaled or no skein up serves the control plane. */
async function autoscaleOf(control: string, service: string): Promise<AutoscaleView | null> {
  try {
    const m = await call<{ services?: Array<{ name: string; autoscale?: AutoscaleView | null }> }>(control, 'GET', '/v1/mesh');
    return m.services?.find((s) => s.name === service)?.autoscale ?? null;
  } catch {
    return null;
  }
}

const byRps = <T extends Signals>(a: T, b: T) => (b.rps ?? 0) - (a.rps ?? 0) || (b.requests ?? 0) - (a.requests ?? 0);

/** The busiest routes and edges of a signals answer: those with requests in the window, by RPS, at most `limit` of each. */
export function busiest(sig: Pick<MeshSignals, 'routes' | 'edges'>, limit: number): { routes: RouteSignals[]; edges: EdgeSignals[] } {
  const busy = <T extends Signals>(xs: T[] | undefined) => (xs ?? []).filter((x) => (x.requests ?? 0) > 0 || (x.rps ?? 0) > 0).sort(byRps).slice(0, limit);
  return { routes: busy(sig.routes), edges: busy(sig.edges) };
}

/** One frame of `skein top`. */
export function topFrame(sig: MeshSignals, o: { limit: number; control: string; intervalMs?: number; note?: string }): string {
  const { routes, edges } = busiest(sig, o.limit);
  const time = (sig.time ?? new Date().toISOString()).slice(11, 19);
  const refresh = o.intervalMs === undefined ? '' : `, every ${o.intervalMs / 1000}s`;
  let out = `skein top  ${o.control}  window ${sig.window}${refresh}  ${time} UTC\n`;
  if (o.note !== undefined) out += `${o.note}\n`;
  out += '\n';
  if (routes.length === 0 && edges.length === 0) return out + `no traffic in the last ${sig.window}\n`;
  out += 'ROUTES\n';
  out +=
    routes.length === 0
      ? `no route traffic in the last ${sig.window}\n`
      : table(
          ['SERVICE', 'ROUTE', 'DIRECTION', 'RPS', 'SUCCESS', ...LATENCY_HEADERS, 'REQUESTS'],
          routes.map((r) => [r.service, r.route, r.direction, fmtRps(r.rps), fmtSuccess(r.successRate), ...latencyCells(r.latencyMs), r.requests ?? 0]),
        );
  out += '\nEDGES\n';
  out +=
    edges.length === 0
      ? `no calls between services in the last ${sig.window}\n`
      : table(
          ['FROM', 'TO', 'MTLS', 'RPS', 'SUCCESS', ...LATENCY_HEADERS, 'REQUESTS'],
          edges.map((e) => [e.source, e.destination, e.mtls ?? '-', fmtRps(e.rps), fmtSuccess(e.successRate), ...latencyCells(e.latencyMs), e.requests ?? 0]),
        );
  return out;
}

// ---------------------------------------------------------------------------------------------
// Tap lines (contract E)
// ---------------------------------------------------------------------------------------------

export interface TapLine {
  time: string;
  proxy?: string;
  direction: string;
  workload?: string;
  source: string;
  destination: string;
  method: string;
  path: string;
  status: number;
  latencyMs: number;
  instance?: string | null;
  requestId?: string | null;
  error?: string | null;
  /** A TCP stream's (method "TCP"): its life and bytes from and to its client. */
  durationMs?: number;
  receivedBytes?: number;
  sentBytes?: number;
  requestHeaders?: Record<string, string | string[]>;
  responseHeaders?: Record<string, string | string[]>;
  requestBody?: string;
  responseBody?: string;
}

// Headers whose values never leave a proxy; the CLI redacts them again, in case.
export { REDACTED, SECRET_HEADERS };

function redactHeaders(h: unknown, extra?: ReadonlySet<string>): Record<string, string | string[]> | undefined {
  if (h === null || typeof h !== 'object' || Array.isArray(h)) return undefined;
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h as Record<string, unknown>)) {
    const value = Array.isArray(v) ? v.map(String) : String(v);
    out[k] = isSecretHeader(k.toLowerCase(), extra) ? (Array.isArray(value) ? value.map(() => REDACTED) : REDACTED) : value;
  }
  return out;
}

/** A tap line with the values of secret headers (and of `extra`, lower-case names) replaced, whatever the server sent. */
export function redactTap(line: TapLine, extra?: ReadonlySet<string>): TapLine {
  const out: TapLine = { ...line };
  if (line.requestHeaders !== undefined) {
    const h = redactHeaders(line.requestHeaders, extra);
    if (h === undefined) delete out.requestHeaders;
    else out.requestHeaders = h;
  }
  if (line.responseHeaders !== undefined) {
    const h = redactHeaders(line.responseHeaders, extra);
    if (h === undefined) delete out.responseHeaders;
    else out.responseHeaders = h;
  }
  return out;
}

/** How many requests a `{"missed":N}` line says the tap dropped (it fell behind); null for a request line. */
export function missedCount(line: unknown): number | null {
  const n = (line as { missed?: unknown }).missed;
  return typeof n === 'number' && Number.isSafeInteger(n) && n > 0 ? n : null;
}

/** The line for people that says requests were not shown. */
export function formatMissed(n: number, line: unknown): string {
  const proxy = (line as { proxy?: unknown }).proxy;
  const where = typeof proxy === 'string' ? `proxy ${printable(proxy)}` : 'the control plane';
  return `-- ${n} request${n === 1 ? '' : 's'} not shown: ${where} dropped them, this tap fell behind\n`;
}

/** One tapped request for people: time, direction, source -> destination, method, path, status, latency (+ headers, bodies). */
export function formatTap(line: TapLine): string {
  const t = typeof line.time === 'string' && line.time.length >= 23 ? line.time.slice(11, 23) : printable(line.time);
  const dir = line.direction === 'inbound' ? 'in ' : line.direction === 'outbound' ? 'out' : printable(line.direction);
  const status = line.status === 0 || line.status === undefined ? '---' : String(line.status);
  const err = line.error ? ` ${printable(line.error)}` : '';
  const at = line.instance ? ` @${printable(line.instance)}` : '';
  const lat = typeof line.latencyMs === 'number' ? `${fmtMs(line.latencyMs)}ms` : DASH;
  // A TCP stream: its latency is its time to connect; then how long it lived and what it carried.
  const stream = typeof line.durationMs === 'number' ? `  lived ${fmtMs(line.durationMs)}ms, ${Number(line.receivedBytes)} B in, ${Number(line.sentBytes)} B out` : '';
  let out = `${t}  ${dir}  ${printable(line.source ?? DASH)} -> ${printable(line.destination ?? DASH)}${at}  ${printable(line.method)} ${printable(line.path)}  ${status}${err}  ${lat}${stream}\n`;
  const headers = (h: Record<string, string | string[]> | undefined, mark: string) => {
    if (h === undefined) return;
    for (const [k, v] of Object.entries(h)) for (const one of Array.isArray(v) ? v : [v]) out += `    ${mark} ${printable(k)}: ${printable(one)}\n`;
  };
  const body = (b: string | undefined, mark: string) => {
    if (b === undefined || b === '') return;
    out += `    ${mark} body: ${JSON.stringify(b)}\n`;
  };
  headers(line.requestHeaders, '>');
  body(line.requestBody, '>');
  headers(line.responseHeaders, '<');
  body(line.responseBody, '<');
  return out;
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

interface Common {
  control: string;
  output: OutputFormat;
}

export function statCommand(): Command {
  return new Command('stat')
    .description('golden signals of every service (or one, with its instances and edges): request rate, success rate, latency percentiles')
    .argument('[service]', 'one service: with its instances, the calls in and out of it, its routes, and (under skein up) its autoscaler')
    .addOption(windowOption('1m'))
    .addOption(controlOption())
    .addOption(outputOption())
    .action(async (service: string | undefined, o: Common & { window: SignalWindow }) => {
      const q = `window=${encodeURIComponent(o.window)}`;
      if (service !== undefined) {
        const r = await call<OneServiceSignals>(o.control, 'GET', `/v1/signals/services/${encodeURIComponent(service)}?${q}`);
        const autoscale = await autoscaleOf(o.control, service);
        if (o.output === 'json') return printJson(autoscale === null ? r : { ...r, autoscale });
        return print(statServiceText(r) + (autoscale === null ? '' : `\n${autoscaleText(autoscale)}`));
      }
      const r = await call<MeshSignals>(o.control, 'GET', `/v1/signals?${q}`);
      if (o.output === 'json') return printJson(r);
      if ((r.services ?? []).length === 0) return print('no services\n');
      print(statTable(r.services));
    });
}

const ALT_SCREEN_ON = '\x1b[?1049h\x1b[?25l';
const ALT_SCREEN_OFF = '\x1b[?25h\x1b[?1049l';
const CLEAR = '\x1b[H\x1b[2J';

export function topCommand(): Command {
  return new Command('top')
    .description(
      'the busiest routes and calls between services, by request rate; on a terminal redrawn every --interval until q or Ctrl-C, otherwise printed once (or --count times)',
    )
    .addOption(windowOption('10s'))
    .addOption(new Option('-i, --interval <duration>', 'time between refreshes (at least 100ms)').argParser(durationFlag('--interval')).default(2000, '2s'))
    .option('--count <n>', 'print this many frames, one every --interval, then exit (no full-screen view)', intFlag('--count', 1, 1_000_000))
    .option('--once', 'print one frame and exit, as --count 1 (the default when stdout is not a terminal)')
    .addOption(new Option('-n, --limit <n>', 'rows of each table').argParser(intFlag('--limit', 1, 1000)).default(20))
    .addOption(controlOption())
    .addOption(outputOption())
    .action(async (o: Common & { window: SignalWindow; interval: number; count?: number; once?: boolean; limit: number }) => {
      if (o.interval < 100) throw new SkeinError('SKEIN_E_USAGE', `--interval must be at least 100ms, got ${o.interval}ms`, { field: '--interval' });
      if (o.once && o.count !== undefined && o.count !== 1) throw new SkeinError('SKEIN_E_USAGE', `--once and --count ${o.count} contradict each other`, { field: '--count' });
      const base = controlUrl(o.control);
      const fetchOnce = () => call<MeshSignals>(base, 'GET', `/v1/signals?window=${encodeURIComponent(o.window)}`);
      const json = (sig: MeshSignals) => JSON.stringify({ window: sig.window, time: sig.time, ...busiest(sig, o.limit) });
      // The first answer decides: an unreachable control plane or a refused query is an error at once.
      let sig = await fetchOnce();
      // Frames printed one after another: --count N, --once, -o json, or output that is not a terminal
      // (without --count: once, or for ever for -o json on a terminal).
      const frames = o.once ? 1 : (o.count ?? (process.stdout.isTTY ? (o.output === 'json' ? Infinity : undefined) : 1));
      if (frames !== undefined) {
        // A reader that went away (`skein top --count 100 | head`) ends it quietly.
        process.stdout.on('error', (e: NodeJS.ErrnoException) => {
          if (e.code !== 'EPIPE') throw e;
          process.exit(0);
        });
        for (let i = 0; ; ) {
          if (o.output === 'json') print(json(sig) + '\n');
          else print((i > 0 ? '\n' : '') + topFrame(sig, { limit: o.limit, control: base, ...(frames > 1 ? { intervalMs: o.interval } : {}) }));
          if (++i >= frames) return;
          await new Promise((r) => setTimeout(r, o.interval));
          sig = await fetchOnce();
        }
      }
      await runScreen(async (draw, stopped) => {
        let note: string | undefined;
        while (!stopped()) {
          draw(topFrame(sig, { limit: o.limit, control: base, intervalMs: o.interval, ...(note === undefined ? {} : { note }) }));
          await new Promise((r) => setTimeout(r, o.interval));
          if (stopped()) break;
          try {
            sig = await fetchOnce();
            note = undefined;
          } catch (e) {
            // Keep the last frame and say why it is not fresh; the next tick tries again.
            note = `! ${(e as Error).message} (showing the data of ${sig.time.slice(11, 19)} UTC; retrying)`;
          }
        }
      });
    });
}

/**
 * Runs a full-screen view on the terminal's alternate screen (as htop does): `draw` replaces the
 * screen; q, Ctrl-C or SIGTERM end it and restore the terminal.
 */
async function runScreen(body: (draw: (frame: string) => void, stopped: () => boolean) => Promise<void>): Promise<void> {
  let stop = false;
  let wake: () => void = () => undefined;
  const ended = new Promise<void>((r) => (wake = r));
  const quit = () => {
    stop = true;
    wake();
  };
  const stdin = process.stdin;
  const raw = stdin.isTTY === true;
  const onKey = (b: Buffer) => {
    const k = b.toString();
    if (k === 'q' || k === 'Q' || k === '\x03' || k === '\x1b') quit();
  };
  const restore = () => {
    process.stdout.write(ALT_SCREEN_OFF);
    if (raw) {
      stdin.setRawMode(false);
      stdin.off('data', onKey);
      stdin.pause();
    }
  };
  process.stdout.write(ALT_SCREEN_ON);
  if (raw) {
    stdin.setRawMode(true);
    stdin.resume();
    stdin.on('data', onKey);
  }
  process.once('SIGINT', quit);
  process.once('SIGTERM', quit);
  process.once('exit', () => {
    if (!stop) restore();
  });
  const draw = (frame: string) => {
    // Cut the frame to the window so the header stays in sight.
    const rows = process.stdout.rows ?? 0;
    const lines = frame.split('\n');
    const shown = rows > 1 && lines.length > rows ? lines.slice(0, rows - 1).join('\n') + '\n' : frame;
    process.stdout.write(CLEAR + shown);
  };
  try {
    await Promise.race([body(draw, () => stop), ended]);
  } finally {
    stop = true;
    restore();
    process.off('SIGINT', quit);
    process.off('SIGTERM', quit);
  }
  process.exit(0);
}

/** Opens a streaming GET on the control plane; API errors (answered before the stream) become SkeinErrors. */
async function openStream(base: string, path: string, signal: AbortSignal): Promise<ReadableStream<Uint8Array>> {
  let res: Response;
  const headers = await authHeaders(base);
  try {
    res = await fetch(base + path, { signal, headers });
  } catch (e) {
    if (signal.aborted) throw e;
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw new SkeinError('SKEIN_E_CONTROL_UNREACHABLE', `cannot reach the control plane at ${base}: ${cause?.code ?? cause?.message ?? (e as Error).message}`);
  }
  if (!res.ok || res.body === null) {
    const text = await res.text().catch(() => '');
    let b: { code?: unknown; message?: unknown; field?: unknown } = {};
    try {
      b = JSON.parse(text) as typeof b;
    } catch {
      /* not JSON */
    }
    const refused = await authRefusal(base, b);
    if (refused !== null) throw refused;
    if (typeof b.code === 'string' && typeof b.message === 'string' && Object.hasOwn(ERROR_CODES, b.code)) {
      throw new SkeinError(b.code as ErrorCode, b.message, typeof b.field === 'string' ? { field: b.field } : {});
    }
    throw new SkeinError('SKEIN_E_INTERNAL', `control plane answered ${res.status}: ${text.slice(0, 200)}`);
  }
  return res.body;
}

export function tapCommand(): Command {
  return new Command('tap')
    .description('watch the requests to and from a service live, as every proxy finishes them (Ctrl-C stops)')
    .argument('<service>')
    .option('--headers', 'show request and response headers (values of authorization, cookies, API keys and tokens are redacted)')
    .option('--redact <names>', 'header names (comma-separated, repeatable) whose values to hide too', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--bodies', 'show the first 4 KiB of request and response bodies')
    .option('-n, --limit <n>', 'stop after this many requests', intFlag('--limit', 1, 100_000))
    .option('--max-time <duration>', 'stop after this long', durationFlag('--max-time'))
    .addOption(controlOption())
    .addOption(outputOption())
    .action(async (service: string, o: Common & { headers?: boolean; bodies?: boolean; limit?: number; maxTime?: number; redact: string[] }) => {
      const base = controlUrl(o.control);
      const extra = new Set(parseHeaderNames(o.redact, '--redact'));
      const params = new URLSearchParams({ service });
      if (o.headers) params.set('headers', '1');
      if (o.bodies) params.set('bodies', '1');
      if (o.limit !== undefined) params.set('limit', String(o.limit));
      const ac = new AbortController();
      let why: 'limit' | 'time' | 'signal' | null = null;
      const stop = (w: 'limit' | 'time' | 'signal') => {
        why ??= w;
        ac.abort();
      };
      const onSignal = () => stop('signal');
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      let pipeClosed = false;
      // A reader that went away (`skein tap web | head`) ends the tap quietly.
      const onOutputError = (e: NodeJS.ErrnoException) => {
        if (e.code !== 'EPIPE') throw e;
        pipeClosed = true;
        stop('signal');
      };
      process.stdout.on('error', onOutputError);
      const timer = o.maxTime === undefined ? undefined : setTimeout(() => stop('time'), o.maxTime);
      let seen = 0;
      try {
        const body = await openStream(base, `/v1/tap?${params}`, ac.signal);
        const handle = (text: string) => {
          if (text.trim() === '' || why !== null) return;
          let line: TapLine;
          try {
            line = JSON.parse(text) as TapLine;
          } catch {
            return; // not a request line
          }
          if (pipeClosed) return;
          const missed = missedCount(line);
          if (missed !== null) {
            print(o.output === 'json' ? JSON.stringify(line) + '\n' : formatMissed(missed, line));
            return;
          }
          const safe = redactTap(line, extra);
          print(o.output === 'json' ? JSON.stringify(safe) + '\n' : formatTap(safe));
          seen++;
          if (o.limit !== undefined && seen >= o.limit) stop('limit');
        };
        await forEachLine(body, handle, () => why !== null);
      } catch (e) {
        if (why === null) {
          if (e instanceof SkeinError) throw e;
          throw new SkeinError('SKEIN_E_CONTROL_UNREACHABLE', `the tap stream from ${base} broke: ${(e as { cause?: { code?: string } }).cause?.code ?? (e as Error).message}`);
        }
      } finally {
        if (timer !== undefined) clearTimeout(timer);
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      if (pipeClosed) return;
      if (o.output !== 'json' && seen === 0 && why !== 'limit') process.stderr.write(`no requests to or from ${service} seen\n`);
    });
}

/** The command that opens a URL in a browser here, or why there is none. */
export function browserOpener(platform: NodeJS.Platform = process.platform, env: NodeJS.ProcessEnv = process.env): { cmd: string; args: string[] } | { reason: string } {
  if (platform === 'darwin') return { cmd: 'open', args: [] };
  if (platform === 'win32') return { cmd: 'cmd', args: ['/c', 'start', '""'] };
  if (!env['DISPLAY'] && !env['WAYLAND_DISPLAY']) return { reason: 'no graphical session (neither DISPLAY nor WAYLAND_DISPLAY is set)' };
  return { cmd: 'xdg-open', args: [] };
}

function openBrowser(url: string): Promise<string | null> {
  const how = browserOpener();
  if ('reason' in how) return Promise.resolve(how.reason);
  return new Promise((resolve) => {
    const child = spawn(how.cmd, [...how.args, url], { stdio: 'ignore', detached: true });
    child.once('error', (e) => resolve(`${how.cmd} could not run: ${(e as NodeJS.ErrnoException).code ?? e.message}`));
    child.once('spawn', () => {
      child.unref();
      resolve(null);
    });
  });
}

export function dashboardCommand(): Command {
  return new Command('dashboard')
    .description("print the URL of the control plane's web dashboard (after checking that the control plane answers)")
    .option('--open', 'also open it in a browser (xdg-open)')
    .addOption(controlOption())
    .addOption(outputOption())
    .action(async (o: Common & { open?: boolean }) => {
      const base = controlUrl(o.control);
      const health = await call<{ status?: string; version?: string }>(base, 'GET', '/v1/health');
      const url = `${base}/dashboard/`;
      let opened: boolean | undefined;
      let notOpened: string | null = null;
      if (o.open) {
        notOpened = await openBrowser(url);
        opened = notOpened === null;
      }
      if (o.output === 'json') return printJson({ url, control: base, version: health?.version ?? null, ...(o.open ? { opened, ...(notOpened === null ? {} : { reason: notOpened }) } : {}) });
      print(`${url}\n`);
      if (o.open) process.stderr.write(notOpened === null ? `opening ${url} in a browser\n` : `cannot open a browser: ${notOpened}; open ${url} yourself\n`);
    });
}
