/** Shared pieces of the CLI: the control-plane client (and the token it sends), output formats, errors as one line. */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type Command, Option } from 'commander';
import { ADMIN_TOKEN_FILE, TOKEN_ENV, TOKEN_PATTERN, scopeList, type TokenScope } from '../api/auth.js';
import { DNS_DEFAULTS } from '../api/dns.js';
import { formatHostPort } from '../core/address.js';
import { SkeinError } from '../core/errors.js';
import { isLoopbackHost } from '../core/loopback-host.js';
import { readLocalToken } from '../control/auth/token-files.js';

export const DEFAULT_HTTP = '127.0.0.1:7400';
export const DEFAULT_DNS = formatHostPort(DNS_DEFAULTS.host, DNS_DEFAULTS.port);
/** `skein control`'s data dir when none is given (relative to the working directory). */
export const DEFAULT_DATA_DIR = '.skein/control';

export type OutputFormat = 'table' | 'json';

export const outputOption = () =>
  new Option('-o, --output <format>', 'output format: table (for people) or json (for scripts)').choices(['table', 'json']).default('table');

export const controlOption = () =>
  new Option('-c, --control <url>', 'control plane HTTP address').env('SKEIN_CONTROL').default(`http://${DEFAULT_HTTP}`);

/** Normalises --control: "127.0.0.1:7400" or "http://127.0.0.1:7400/" -> "http://127.0.0.1:7400". */
export function controlUrl(text: string): string {
  const withScheme = /^[a-z]+:\/\//i.test(text) ? text : `http://${text}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch {
    throw new SkeinError('SKEIN_E_USAGE', `--control must be a URL such as http://127.0.0.1:7400, got "${text}"`, { field: '--control' });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new SkeinError('SKEIN_E_USAGE', `--control must use http or https, got "${u.protocol}"`, { field: '--control' });
  }
  return `${u.protocol}//${u.host}`;
}

/** --token and --data-dir of this run (set by withToken's hook before the action). */
let tokenFlags: { token?: string; dataDir?: string } = {};

/**
 * Adds --token (or SKEIN_TOKEN) and --data-dir (where to find the admin token) to a command that
 * talks to the control plane; `call()` and `authHeaders()` use them.
 */
export function withToken(cmd: Command): Command {
  if (cmd.options.some((o) => o.long === '--token')) return cmd;
  return cmd
    .addOption(new Option('--token <token>', `control-plane token (default: ${TOKEN_ENV}, else the admin token of the control plane on this host)`))
    .addOption(new Option('--data-dir <dir>', `the control plane's data dir, to read its ${ADMIN_TOKEN_FILE} from (default: the copy it leaves for this user, else ${DEFAULT_DATA_DIR})`))
    .hook('preAction', (_cmd, action) => {
      const o = action.opts<{ token?: string; dataDir?: string }>();
      tokenFlags = { ...(o.token === undefined ? {} : { token: o.token }), ...(o.dataDir === undefined ? {} : { dataDir: o.dataDir }) };
    });
}

/** A token and where it came from (for messages). */
export interface FoundToken {
  readonly token: string;
  readonly from: string;
}

async function tokenFile(path: string): Promise<string | null> {
  try {
    const t = (await readFile(path, 'utf8')).trim();
    return TOKEN_PATTERN.test(t) ? t : null;
  } catch {
    return null;
  }
}

/**
 * The token to send to the control plane at `base`: --token, else SKEIN_TOKEN, else --data-dir's
 * admin.token; for a control plane on this host (a loopback address) also the copy it leaves for
 * this user (by port), else ./.skein/control/admin.token. Null: none found.
 */
export async function findToken(base: string, flags: { token?: string; dataDir?: string } = tokenFlags, env: NodeJS.ProcessEnv = process.env): Promise<FoundToken | null> {
  if (flags.token !== undefined && flags.token !== '') return { token: flags.token, from: '--token' };
  const fromEnv = env[TOKEN_ENV];
  if (fromEnv !== undefined && fromEnv !== '') return { token: fromEnv, from: TOKEN_ENV };
  if (flags.dataDir !== undefined) {
    const path = join(flags.dataDir, ADMIN_TOKEN_FILE);
    const t = await tokenFile(path);
    if (t !== null) return { token: t, from: path };
  }
  const u = new URL(controlUrl(base));
  if (!isLoopbackHost(u.host)) return null;
  const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
  const local = await readLocalToken(port, env);
  if (local !== null) return { token: local, from: `the local copy of the control plane on port ${port}` };
  const path = join(DEFAULT_DATA_DIR, ADMIN_TOKEN_FILE);
  const t = await tokenFile(path);
  return t === null ? null : { token: t, from: path };
}

const found = new Map<string, Promise<FoundToken | null>>();
const foundFor = (base: string) => {
  let f = found.get(base);
  if (f === undefined) found.set(base, (f = findToken(base)));
  return f;
};

/** The authorization header for requests to `base` (empty when no token is found). */
export async function authHeaders(base: string): Promise<Record<string, string>> {
  const t = await foundFor(base);
  return t === null ? {} : { authorization: `Bearer ${t.token}` };
}

/** A 401 or 403 of the control plane as one line that says which token the command needs. */
export function tokenError(code: 'SKEIN_E_UNAUTHENTICATED' | 'SKEIN_E_FORBIDDEN', message: string, scopes: readonly TokenScope[], sent: FoundToken | null): SkeinError {
  const need = `this command needs a token with scope ${scopeList(scopes)}`;
  const how = 'pass --token, set SKEIN_TOKEN or run it on the control plane\'s host';
  const text = sent === null ? `${need}: ${how}` : `${need}; the token from ${sent.from} was refused: ${message}`;
  return new SkeinError(code, text, { details: { scopes } });
}

/** A 401/403 error body of the control plane at `base` as tokenError's one line; null for any other body. */
export async function authRefusal(base: string, body: unknown): Promise<SkeinError | null> {
  const b = body as { code?: unknown; message?: unknown; details?: { scopes?: unknown } } | null;
  if ((b?.code !== 'SKEIN_E_UNAUTHENTICATED' && b?.code !== 'SKEIN_E_FORBIDDEN') || !Array.isArray(b.details?.scopes)) return null;
  return tokenError(b.code, String(b.message), b.details.scopes as TokenScope[], await foundFor(base));
}

export interface ApiResult<T = any> {
  status: number;
  body: T;
}

/** Calls the control plane; API errors become SkeinErrors carrying the server's code and field. */
export async function call<T = any>(base: string, method: string, path: string, body?: unknown, opts: { signal?: AbortSignal } = {}): Promise<T> {
  let res: Response;
  const auth = await authHeaders(base);
  try {
    const init: RequestInit = { method, headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...auth } };
    if (body !== undefined) init.body = JSON.stringify(body);
    if (opts.signal !== undefined) init.signal = opts.signal;
    res = await fetch(controlUrl(base) + path, init);
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw new SkeinError('SKEIN_E_CONTROL_UNREACHABLE', `cannot reach the control plane at ${controlUrl(base)}: ${cause?.code ?? cause?.message ?? (e as Error).message}`);
  }
  const text = await res.text();
  let parsed: any = null;
  try {
    parsed = text === '' ? null : JSON.parse(text);
  } catch {
    /* not JSON */
  }
  if (!res.ok) {
    const refused = await authRefusal(base, parsed);
    if (refused !== null) throw refused;
    if (parsed !== null && typeof parsed.code === 'string' && typeof parsed.message === 'string') {
      const err = new SkeinError(parsed.code, parsed.message, parsed.field === undefined ? {} : { field: parsed.field });
      throw err;
    }
    throw new SkeinError('SKEIN_E_INTERNAL', `control plane answered ${res.status}: ${text.slice(0, 200)}`);
  }
  return parsed as T;
}

export async function readText(file: string): Promise<string> {
  try {
    return file === '-' ? await readStdin() : await readFile(file, 'utf8');
  } catch (e) {
    throw new SkeinError('SKEIN_E_FILE', `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { field: file });
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Control characters out of text shown on a terminal (a header, path or message could carry escapes). */
// eslint-disable-next-line no-control-regex
export const printable = (s: unknown) => String(s).replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);

/** A plain text table: columns padded to their widest cell. */
export function table(headers: string[], rows: Array<Array<string | number>>): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd()).join('\n') + '\n';
}

export function print(text: string): void {
  process.stdout.write(text);
}

export function printJson(v: unknown): void {
  process.stdout.write(JSON.stringify(v, null, 2) + '\n');
}
