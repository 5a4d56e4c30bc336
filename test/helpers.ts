/** Shared helpers for integration tests: start real processes, poll with deadlines, clean up. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { readLocalToken } from '../src/control/auth/token-files.js';
import { WRITE_ACCESS } from '../src/control/auth/access.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SKEIN_BIN = join(ROOT, 'bin', 'skein.js');

/** Polls `fn` until it returns a truthy value or the deadline passes. */
export async function waitFor<T>(fn: () => T | Promise<T>, opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {}): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${opts.what ?? 'condition'}${last ? `: ${(last as Error).message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 20));
  }
}

export async function tempDir(prefix = 'skein-test-'): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

export interface ControlProcess {
  child: ChildProcess;
  http: string; // e.g. http://127.0.0.1:12345
  httpPort: number;
  dnsPort: number;
  dataDir: string;
  logs: string[];
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `skein control` as a child process on OS-chosen ports and waits until it is ready. */
export async function startControl(opts: { dataDir: string; args?: string[]; env?: NodeJS.ProcessEnv } ): Promise<ControlProcess> {
  const child = spawn(
    process.execPath,
    [SKEIN_BIN, 'control', '--data-dir', opts.dataDir, '--http', '127.0.0.1:0', '--dns', '127.0.0.1:0', '--log-level', 'info', ...(opts.args ?? [])],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } },
  );
  const logs: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = new Promise<{ http: string; dns: string }>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    rl.on('line', (line) => {
      logs.push(line);
      try {
        const j = JSON.parse(line) as { msg?: string; http?: string; dns?: string };
        if (j.msg === 'control plane ready' && j.http && j.dns) resolve({ http: j.http, dns: j.dns });
      } catch {
        /* not JSON */
      }
    });
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (l) => logs.push(l));
    void exited.then((code) => reject(new Error(`skein control exited with ${code} before it was ready:\n${logs.join('\n')}`)));
  });
  const timeout = setTimeout(() => child.kill('SIGKILL'), 20_000);
  let addr: { http: string; dns: string };
  try {
    addr = await ready;
  } finally {
    clearTimeout(timeout);
  }
  const httpPort = Number(addr.http.split(':').pop());
  const dnsPort = Number(addr.dns.split(':').pop());
  return {
    child,
    http: `http://${addr.http}`,
    httpPort,
    dnsPort,
    dataDir: opts.dataDir,
    logs,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

/**
 * The admin token of the control plane at `base` (a loopback URL): the copy it leaves for this
 * user (src/control/auth/token-files.ts). Null when there is none.
 */
export async function adminTokenOf(base: string): Promise<string | null> {
  const u = new URL(base);
  if (!/^(127\.|\[::1\]|localhost)/.test(u.host)) return null;
  return readLocalToken(Number(u.port));
}

/**
 * Small JSON HTTP client over fetch (undici) for tests. A write without an `authorization` header
 * is sent with the control plane's admin token (found by itself: most tests are not about tokens).
 */
export async function api(base: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any; headers: Headers }> {
  const init: RequestInit = { method, headers: { ...headers } };
  // Not to a route that checks its own credentials (the CA's join tokens): the test says what it sends there.
  const ownAuth = WRITE_ACCESS.some((w) => w.byRoute !== undefined && w.method === method && w.route === path.split('?')[0]);
  if (method !== 'GET' && method !== 'HEAD' && !ownAuth && !Object.keys(headers).some((k) => k.toLowerCase() === 'authorization')) {
    const token = await adminTokenOf(base);
    if (token !== null) (init.headers as Record<string, string>)['authorization'] = `Bearer ${token}`;
  }
  if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
    (init.headers as Record<string, string>)['content-type'] ??= 'application/json';
  }
  const res = await fetch(base + path, init);
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text === '' ? null : JSON.parse(text);
  } catch {
    /* keep text */
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

/** Runs a command, returning its exit code and output. */
export function run(cmd: string, args: string[], opts: { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...opts.env }, ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }) });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
    // A child that exits before reading its input (ip, dig) must not fail the test with EPIPE.
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

/** Runs the skein CLI. */
export function skein(args: string[], opts: { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {}) {
  return run(process.execPath, [SKEIN_BIN, ...args], opts);
}

// ---- added for the control-plane integration tests (api, durability, watch, health, cli) ----

/** A port that was free a moment ago and has nothing listening on it (bind, read, close). */
export async function closedPort(): Promise<number> {
  const { createServer } = await import('node:net');
  const srv = createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/** Runs `fn` over `items` with at most `limit` calls in flight; results keep the input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** The value of one sample in Prometheus text (`name` or `name{a="b"}` exactly as exposed); undefined if absent. */
export function metricSample(text: string, sample: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    if (sp > 0 && line.slice(0, sp) === sample) return Number(line.slice(sp + 1));
  }
  return undefined;
}

/** One message of a watch stream: NDJSON lines parsed; SSE events with their id and event name. */
export interface StreamMessage {
  type: string;
  revision: number;
  [k: string]: any;
}

export interface SseEvent {
  id: string | undefined;
  event: string | undefined;
  data: any;
}

/** A watch stream read over node:http: messages are collected as they arrive (pings dropped). */
export interface WatchStream {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** NDJSON messages (or, for SSE, each event's parsed data). */
  messages: StreamMessage[];
  /** SSE events, in order (empty for NDJSON). */
  events: SseEvent[];
  /** Set once the server ends or resets the stream. */
  ended: boolean;
  /** Raw bytes received. */
  bytes: number;
  /** Waits until at least `n` messages arrived; returns them all. */
  waitForCount(n: number, timeoutMs?: number): Promise<StreamMessage[]>;
  close(): void;
}

/** Opens `GET base + path` as a streaming watch; resolves once the response headers arrived. */
export async function openWatch(base: string, path: string, opts: { headers?: Record<string, string> } = {}): Promise<WatchStream> {
  const http = await import('node:http');
  const url = new URL(base + path);
  return new Promise<WatchStream>((resolve, reject) => {
    const req = http.get({ host: url.hostname, port: url.port, path: url.pathname + url.search, headers: opts.headers ?? {}, agent: false }, (res) => {
      const sse = String(res.headers['content-type'] ?? '').startsWith('text/event-stream');
      const s: WatchStream = {
        status: res.statusCode ?? 0,
        headers: res.headers,
        messages: [],
        events: [],
        ended: false,
        bytes: 0,
        waitForCount: (n, timeoutMs = 10_000) =>
          waitFor<StreamMessage[] | null>(() => (s.messages.length >= n ? s.messages : null), {
            timeoutMs,
            what: `${n} watch message(s)`,
          }).then((m) => m as StreamMessage[]),
        close: () => {
          req.destroy();
          res.destroy();
        },
      };
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        s.bytes += Buffer.byteLength(chunk);
        buf += chunk;
        if (sse) {
          let i: number;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const ev: SseEvent = { id: undefined, event: undefined, data: undefined };
            const data: string[] = [];
            for (const line of block.split('\n')) {
              if (line.startsWith(':')) continue;
              const c = line.indexOf(':');
              const field = c < 0 ? line : line.slice(0, c);
              const value = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
              if (field === 'id') ev.id = value;
              else if (field === 'event') ev.event = value;
              else if (field === 'data') data.push(value);
            }
            if (data.length === 0) continue; // comment-only block (ping)
            ev.data = JSON.parse(data.join('\n'));
            s.events.push(ev);
            s.messages.push(ev.data as StreamMessage);
          }
        } else {
          let i: number;
          while ((i = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, i);
            buf = buf.slice(i + 1);
            if (line === '') continue;
            const m = JSON.parse(line) as StreamMessage;
            if (m.type !== 'ping') s.messages.push(m);
          }
        }
      });
      const end = () => {
        s.ended = true;
      };
      res.on('end', end);
      res.on('close', end);
      res.on('error', end);
      resolve(s);
    });
    req.on('error', reject);
  });
}
