/** Shared pieces of the CLI: the control-plane client, output formats, errors as one line. */
import { readFile } from 'node:fs/promises';
import { Option } from 'commander';
import { SkeinError } from '../core/errors.js';

export const DEFAULT_HTTP = '127.0.0.1:7400';
export const DEFAULT_DNS = '127.0.0.1:7453';

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

export interface ApiResult<T = any> {
  status: number;
  body: T;
}

/** Calls the control plane; API errors become SkeinErrors carrying the server's code and field. */
export async function call<T = any>(base: string, method: string, path: string, body?: unknown, opts: { signal?: AbortSignal } = {}): Promise<T> {
  let res: Response;
  try {
    const init: RequestInit = { method, headers: body === undefined ? {} : { 'content-type': 'application/json' } };
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
