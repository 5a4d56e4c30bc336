/** Shared helpers for integration tests: start real processes, poll with deadlines, clean up. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

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

/** Small JSON HTTP client over fetch (undici) for tests. */
export async function api(base: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any; headers: Headers }> {
  const init: RequestInit = { method, headers: { ...headers } };
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
export function run(cmd: string, args: string[], opts: { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
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
    child.stdin.end(opts.input ?? '');
  });
}

/** Runs the skein CLI. */
export function skein(args: string[], opts: { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv } = {}) {
  return run(process.execPath, [SKEIN_BIN, ...args], opts);
}
