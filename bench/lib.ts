/**
 * Shared helpers of the control-plane benchmarks: start `skein control` as a child process on an
 * OS-chosen port, stop everything that was started (also on error and on SIGINT/SIGTERM), scrape
 * and parse /metrics, read a process's CPU time and RSS from /proc, percentiles, and printing
 * (a human table plus one JSON line of results per benchmark).
 *
 * Speed is measured and printed, never asserted.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { request } from 'undici';
import { WRITE_ACCESS } from '../src/control/auth/access.js';
import { readLocalToken } from '../src/control/auth/token-files.js';

/** Repository root (this file runs as dist/bench/lib.js). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The skein CLI the benchmarks start; SKEIN_BENCH_BIN points them at another build (A/B). */
export const SKEIN_BIN = process.env['SKEIN_BENCH_BIN'] ?? join(ROOT, 'bin', 'skein.js');

// ---------------------------------------------------------------- cleanup of what we started

const children = new Set<ChildProcess>();
const dirs = new Set<string>();

function killAll(): void {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      try {
        c.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
  for (const d of dirs) {
    try {
      rmSync(d, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  }
}

process.once('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    killAll();
    process.exit(130);
  });
}

/** Registers a child process so it is killed when the benchmark exits, however it exits. */
export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** A temporary directory (on the same file system as os.tmpdir()), removed at exit. */
export function tempDir(prefix: string): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  dirs.add(path);
  return {
    path,
    remove: () => {
      dirs.delete(path);
      rmSync(path, { recursive: true, force: true });
    },
  };
}

/** Stops a child: SIGTERM, then SIGKILL after `graceMs`. Resolves with its exit code. */
export async function stopChild(child: ChildProcess, graceMs = 10_000): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
  const code = await exited;
  clearTimeout(t);
  return code;
}

// ---------------------------------------------------------------- the control plane

export interface Control {
  child: ChildProcess;
  pid: number;
  /** e.g. http://127.0.0.1:40123 */
  url: string;
  /** The last lines it printed (for error messages). */
  tail(): string;
  stop(): Promise<number | null>;
}

export interface StartControlOptions {
  /** A directory, or "none" for the in-memory store. */
  dataDir: string;
  args?: string[];
  /** Flags for node itself (e.g. --cpu-prof). */
  nodeArgs?: string[];
  timeoutMs?: number;
}

/**
 * Starts `node bin/skein.js control --http 127.0.0.1:0 --dns off --log-level info` and waits for
 * its "control plane ready" line. Its output is drained all along (a full pipe would block its
 * logger) and only the last lines are kept.
 */
export async function startControl(opts: StartControlOptions): Promise<Control> {
  const child = track(
    spawn(
      process.execPath,
      [...(opts.nodeArgs ?? []), SKEIN_BIN, 'control', '--data-dir', opts.dataDir, '--http', '127.0.0.1:0', '--dns', 'off', '--log-level', 'info', ...(opts.args ?? [])],
      { stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT },
    ),
  );
  const lines: string[] = [];
  const keep = (l: string) => {
    lines.push(l);
    if (lines.length > 40) lines.shift();
  };
  const tail = () => lines.join('\n');
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = new Promise<string>((resolve, reject) => {
    let found = false;
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      keep(line);
      if (found || !line.includes('control plane ready')) return;
      try {
        const j = JSON.parse(line) as { msg?: string; http?: string };
        if (j.msg === 'control plane ready' && typeof j.http === 'string') {
          found = true;
          resolve(j.http);
        }
      } catch {
        /* not JSON */
      }
    });
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', keep);
    void exited.then((code) => reject(new Error(`skein control exited with ${code} before it was ready:\n${tail()}`)));
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
  let http: string;
  try {
    http = await ready;
  } finally {
    clearTimeout(timer);
  }
  return { child, pid: child.pid as number, url: `http://${http}`, tail, stop: () => stopChild(child) };
}

// ---------------------------------------------------------------- HTTP and metrics

/** A small JSON request (one connection from undici's global dispatcher); `headers` such as an authorization. */
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
 * A JSON call to the control plane. A write without an `authorization` header is sent with the
 * admin token (writes need one), except to a route that checks its own credentials (the CA's
 * join tokens).
 */
export async function api(base: string, method: 'GET' | 'PUT' | 'POST' | 'DELETE', path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  const h: Record<string, string> = { ...headers };
  const ownAuth = WRITE_ACCESS.some((w) => w.byRoute !== undefined && w.method === method && w.route === path.split('?')[0]);
  if (method !== 'GET' && !ownAuth && !Object.keys(h).some((k) => k.toLowerCase() === 'authorization')) {
    const token = await adminTokenOf(base);
    if (token !== null) h['authorization'] = `Bearer ${token}`;
  }
  const res = await request(base + path, {
    method,
    headers: body === undefined ? h : { ...h, 'content-type': 'application/json' },
    body: body === undefined ? null : JSON.stringify(body),
  });
  const text = await res.body.text();
  let parsed: unknown = text;
  try {
    parsed = text === '' ? null : JSON.parse(text);
  } catch {
    /* keep the text */
  }
  return { status: res.statusCode, body: parsed };
}

/** Prometheus text exposition parsed into `name{labels}` -> value (labels as printed). */
export type Samples = Map<string, number>;

export function parseMetrics(text: string): Samples {
  const out: Samples = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    if (sp < 0) continue;
    const v = Number(line.slice(sp + 1));
    if (!Number.isNaN(v)) out.set(line.slice(0, sp), v);
  }
  return out;
}

/** Scrapes /metrics; also returns how long the scrape took (an API probe under load). */
export async function scrape(base: string): Promise<{ samples: Samples; ms: number }> {
  const t0 = performance.now();
  const res = await request(base + '/metrics');
  const text = await res.body.text();
  const ms = performance.now() - t0;
  if (res.statusCode !== 200) throw new Error(`GET /metrics: ${res.statusCode}`);
  return { samples: parseMetrics(text), ms };
}

export function metric(s: Samples, name: string): number {
  return s.get(name) ?? NaN;
}

// ---------------------------------------------------------------- processes: CPU and RSS

let clkTck = 0;
function ticksPerSecond(): number {
  if (clkTck === 0) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

export interface ProcSample {
  /** performance.now() when read. */
  at: number;
  /** User + system CPU seconds used so far. */
  cpuSeconds: number;
  rssBytes: number;
}

/** Reads /proc/<pid>/stat (utime, stime) and /proc/<pid>/status (VmRSS). */
export function procSample(pid: number): ProcSample {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields after the command name start at field 3 (state); utime is field 14, stime 15.
  const cpuSeconds = (Number(f[11]) + Number(f[12])) / ticksPerSecond();
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return { at: performance.now(), cpuSeconds, rssBytes: m ? Number(m[1]) * 1024 : NaN };
}

const SCHEDSTAT = existsSync('/proc/self/schedstat');

/**
 * CPU seconds a process has used so far: the sum over its threads of the scheduler's run time
 * (/proc/<pid>/task/<tid>/schedstat, nanoseconds, user + system), which is exact where utime +
 * stime (/proc/<pid>/stat) are counted in clock ticks (10 ms); those are the fallback. 0 for a
 * process that is gone.
 */
export function processCpuSeconds(pid: number): number {
  if (!SCHEDSTAT) {
    try {
      return procSample(pid).cpuSeconds;
    } catch {
      return 0; // exited
    }
  }
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return 0; // exited
  }
  let total = 0;
  for (const tid of tids) {
    try {
      total += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]) / 1e9;
    } catch {
      /* thread exited meanwhile */
    }
  }
  return total;
}

/** Machine-wide CPU time (all cores, seconds) spent busy so far, from the first line of /proc/stat. */
export function machineBusySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] as string;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait.
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return (total - (f[3] ?? 0) - (f[4] ?? 0)) / ticksPerSecond();
}

/**
 * Measures the CPU used by every process on the machine except `pids` (percent of one core)
 * between now and `stop()`: how much other work disturbed a measurement.
 */
export function otherCpuMeter(pids: number[]): { stop: () => number } {
  const read = () => ({ at: performance.now(), machine: machineBusySeconds(), ours: pids.reduce((n, pid) => n + procSample(pid).cpuSeconds, 0) });
  const a = read();
  return {
    stop: () => {
      const b = read();
      return Math.max(0, ((b.machine - a.machine - (b.ours - a.ours)) / ((b.at - a.at) / 1000)) * 100);
    },
  };
}

/** CPU use between two samples, in percent of one core. */
export function cpuPercent(a: ProcSample, b: ProcSample): number {
  return ((b.cpuSeconds - a.cpuSeconds) / ((b.at - a.at) / 1000)) * 100;
}

// ---------------------------------------------------------------- statistics

/** Nearest-rank percentile (q in 0..100) of unsorted values; NaN when empty. */
export function percentile(values: ArrayLike<number>, q: number): number {
  if (values.length === 0) return NaN;
  const sorted = Float64Array.from(values).sort();
  const rank = Math.max(1, Math.ceil((q / 100) * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1] as number;
}

export function mean(values: ArrayLike<number>): number {
  if (values.length === 0) return NaN;
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i] as number;
  return s / values.length;
}

export function max(values: ArrayLike<number>): number {
  let m = -Infinity;
  for (let i = 0; i < values.length; i++) m = Math.max(m, values[i] as number);
  return values.length === 0 ? NaN : m;
}

/** Rounds for printing and JSON: 3 significant decimals for small numbers, fewer for big ones. */
export function round(v: number, digits?: number): number {
  if (!Number.isFinite(v)) return v;
  const d = digits ?? (Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2);
  const f = 10 ** d;
  return Math.round(v * f) / f;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls until `fn` returns true or the deadline passes. */
export async function waitUntil(fn: () => boolean | Promise<boolean>, timeoutMs: number, what: string, intervalMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

// ---------------------------------------------------------------- the machine and printing

export interface MachineInfo {
  cpus: number;
  cpuModel: string;
  node: string;
  loadavg1: number;
  platform: string;
}

export function machine(): MachineInfo {
  return {
    cpus: availableParallelism(),
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    node: process.version,
    loadavg1: round(loadavg()[0] ?? NaN, 2),
    platform: `${process.platform}-${process.arch}`,
  };
}

/** Prints a note when other work is running on the machine (the figures may be disturbed). */
export function warnIfBusy(info: MachineInfo): void {
  if (info.loadavg1 > 0.5 * info.cpus) {
    process.stdout.write(`note: 1-minute load average is ${info.loadavg1} on ${info.cpus} cores: other work is running; figures may be disturbed\n`);
  }
}

/** Prints rows as an aligned text table. */
export function table(title: string, header: string[], rows: Array<Array<string | number>>): void {
  const cells = [header, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number))).join('  ');
  const out = [`\n${title}`, line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)];
  process.stdout.write(out.join('\n') + '\n');
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const r = round(v);
  return Math.abs(r) >= 10_000 ? r.toLocaleString('en-US') : String(r);
}

/** The last line of every benchmark: `{"bench": name, ...}` for bench/all.ts and for CI. */
export function printResult(name: string, result: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ bench: name, ...result }) + '\n');
}

/** Runs a benchmark's main, stops what it started, and sets the exit code on error. */
export function runMain(main: () => Promise<void>): void {
  main().then(
    () => {
      killAll();
      process.exit(0);
    },
    (e: unknown) => {
      process.stderr.write(`benchmark failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      killAll();
      process.exit(1);
    },
  );
}
