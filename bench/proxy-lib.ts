/**
 * What the proxy benchmarks share (bench/proxy.ts, bench/proxy-mtls.ts, bench/http2.ts, bench/grpc.ts): process trees (CPU from
 * the scheduler, memory, stopping a whole tree), pinning to CPUs, starting nginx, HAProxy and
 * `skein proxy`, wrk and hey as load generators, and measuring one path (throughput with the
 * proxies' CPU per request, then latency at a fixed rate) with medians over rounds.
 *
 * It is one file because each piece leans on the ones before it (a measurement needs the trees,
 * the pinning and wrk); it holds no benchmark of its own.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { connect, createServer } from 'node:net';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { SKEIN_BIN, ROOT, adminTokenOf, machineBusySeconds, percentile, processCpuSeconds, round, track, waitUntil, type Control } from './lib.js';
import { api, startControl } from './lib.js';

/** What the backend nginx of the proxy benchmarks answers to every request. */
export const BODY = 'hello from the backend\n';

export function seconds(v: string, flag: string): number {
  const m = /^(\d+)s?$/.exec(v.trim());
  if (!m || Number(m[1]) < 1) throw new Error(`${flag} must be a whole number of seconds such as 10s, got "${v}"`);
  return Number(m[1]);
}

export function posInt(v: string, flag: string, min = 1): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`${flag} must be an integer of at least ${min}, got "${v}"`);
  return n;
}

// ---------------------------------------------------------------- processes: trees, CPU, memory

const TICK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** pid -> fields of /proc/<pid>/stat after the command name (index 0 = state, 1 = ppid, 11 = utime). */
export function procTable(): Map<number, string[]> {
  const out = new Map<number, string[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      out.set(Number(name), stat.slice(stat.lastIndexOf(')') + 2).split(' '));
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

/** A process and all its descendants. */
export function treePids(root: number, procs = procTable()): number[] {
  const children = new Map<number, number[]>();
  for (const [pid, f] of procs) {
    const ppid = Number(f[1]);
    const list = children.get(ppid) ?? [];
    list.push(pid);
    children.set(ppid, list);
  }
  const out: number[] = [];
  const stack = [root];
  while (stack.length > 0) {
    const pid = stack.pop() as number;
    if (!procs.has(pid)) continue;
    out.push(pid);
    stack.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** CPU seconds used so far by a process tree (each process as `processCpuSeconds` counts it). */
export function treeCpuSeconds(root: number, procs = procTable()): number {
  let total = 0;
  for (const pid of treePids(root, procs)) total += processCpuSeconds(pid);
  return total;
}

/** CPU seconds of this process and of the children it has reaped (wrk, hey): cutime + cstime. */
export function selfCpuSeconds(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / TICK;
}

/** Sum over a process tree of VmRSS and VmHWM (peak), in bytes. */
export function treeMemory(root: number): { rss: number; hwm: number } {
  let rss = 0;
  let hwm = 0;
  for (const pid of treePids(root)) {
    try {
      const s = readFileSync(`/proc/${pid}/status`, 'utf8');
      rss += Number(/VmRSS:\s+(\d+) kB/.exec(s)?.[1] ?? 0) * 1024;
      hwm += Number(/VmHWM:\s+(\d+) kB/.exec(s)?.[1] ?? 0) * 1024;
    } catch {
      /* exited meanwhile */
    }
  }
  return { rss, hwm };
}

/** Roots of the process trees started here (nginx masters fork workers that outlive a SIGKILLed master). */
export const roots = new Set<number>();

/**
 * SIGKILLs every tree: its process group (servers are started as group leaders), then every pid
 * of the tree, parents first (an nginx master that outlived its worker by a moment would fork a
 * new one).
 */
function killTree(root: number, pids: number[]): void {
  for (const target of [-root, ...pids]) {
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      /* gone, or not a group leader */
    }
  }
}

function killTreesNow(): void {
  const procs = procTable();
  const trees = [...roots].map((root) => [root, treePids(root, procs)] as const);
  for (const [root, pids] of trees) killTree(root, pids);
  roots.clear();
}
// Before bench/lib.ts's own handlers (which SIGKILL direct children only and exit).
process.prependListener('exit', killTreesNow);
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.prependOnceListener(sig, killTreesNow);

/** SIGTERM to the root, wait for it, then SIGKILL whatever is left of the tree. */
export async function stopTree(child: ChildProcess, graceMs = 5000): Promise<void> {
  const root = child.pid;
  if (root === undefined) return;
  const pids = treePids(root);
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, graceMs))]);
  }
  const deadline = Date.now() + graceMs;
  for (;;) {
    const procs = procTable();
    const alive = pids.filter((p) => procs.has(p) && procs.get(p)?.[0] !== 'Z');
    if (alive.length === 0) break;
    if (Date.now() > deadline) {
      killTree(root, alive);
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  killTree(root, []); // anything left in its process group
  roots.delete(root);
}

// ---------------------------------------------------------------- starting things

/** CPUs this process may run on (from taskset), e.g. [0, 1]. */
export function allowedCpus(): number[] {
  try {
    const out = execFileSync('taskset', ['-pc', String(process.pid)], { encoding: 'utf8' });
    const list = out.slice(out.lastIndexOf(':') + 1).trim();
    const cpus: number[] = [];
    for (const part of list.split(',')) {
      const [a, b] = part.split('-').map(Number) as [number, number | undefined];
      for (let c = a; c <= (b ?? a); c++) cpus.push(c);
    }
    return cpus;
  } catch {
    return [];
  }
}

export interface Pinning {
  client: number | null;
  backend: number | null;
  proxy: number | null;
  text: string;
}

export function pinning(mode: string): Pinning {
  const none = { client: null, backend: null, proxy: null };
  if (mode === 'off') return { ...none, text: 'not pinned (--pin off)' };
  if (mode !== 'auto') throw new Error(`--pin must be auto or off, got "${mode}"`);
  const cpus = allowedCpus();
  if (cpus.length < 2) return { ...none, text: cpus.length === 0 ? 'not pinned (taskset not found)' : 'not pinned (one CPU)' };
  if (cpus.length === 2) {
    const [a, b] = cpus as [number, number];
    return { client: a, backend: a, proxy: b, text: `load generator + backend + control plane on CPU ${a}, proxy under test on CPU ${b}` };
  }
  const [a, b, c] = cpus as [number, number, number];
  return { client: a, backend: b, proxy: c, text: `load generator on CPU ${a}, backend + control plane on CPU ${b}, proxy under test on CPU ${c}` };
}

/**
 * spawn(), under `taskset -c cpu` when pinned (taskset execs: the pid is the command's). A server
 * gets a process group of its own (`detached`), so that its whole tree can be killed at once.
 */
export function spawnPinned(cpu: number | null, cmd: string, args: string[], server = false, env: NodeJS.ProcessEnv = {}): ChildProcess {
  const [c, a] = cpu === null ? [cmd, args] : ['taskset', ['-c', String(cpu), cmd, ...args]];
  const child = track(spawn(c, a, { stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT, detached: server, env: { ...process.env, ...env } }));
  if (server && child.pid !== undefined) roots.add(child.pid);
  return child;
}

/** Moves every thread of every process of a tree to one CPU. */
export function setAffinity(root: number, cpu: number): void {
  for (const pid of treePids(root)) {
    try {
      execFileSync('taskset', ['-a', '-pc', String(cpu), String(pid)], { stdio: 'ignore' });
    } catch {
      /* exited meanwhile */
    }
  }
}

/** Keeps the last lines a child printed (its pipes drained all along). */
export function tailOf(child: ChildProcess, keep = 30): () => string {
  const lines: string[] = [];
  const add = (l: string) => {
    lines.push(l);
    if (lines.length > keep) lines.shift();
  };
  if (child.stdout) createInterface({ input: child.stdout }).on('line', add);
  if (child.stderr) createInterface({ input: child.stderr }).on('line', add);
  return () => lines.join('\n');
}

/** A TCP port free right now on 127.0.0.1 (bind port 0, read it, close). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/** One GET with `Host: bench` on a fresh connection (closed after): status and body. */
export function probe(port: number, timeoutMs = 2000): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path: '/', agent: false, headers: { host: 'bench', connection: 'close' }, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/** Polls until the port answers 200 with the backend's body, or the child exits, or the deadline. */
export async function waitServing(port: number, child: ChildProcess | null, what: string, tail: () => string, timeoutMs = 20_000): Promise<void> {
  let last = 'no answer';
  let exited = false;
  await waitUntil(
    async () => {
      if (child !== null && (child.exitCode !== null || child.signalCode !== null)) {
        exited = true;
        throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before serving:\n${tail()}`);
      }
      try {
        const r = await probe(port);
        if (r.status === 200 && r.body === BODY) return true;
        last = `HTTP ${r.status}: ${r.body.slice(0, 200)}`;
      } catch (e) {
        last = (e as Error).message;
      }
      return false;
    },
    timeoutMs,
    `${what} to answer 200 on 127.0.0.1:${port}`,
    50,
  ).catch((e: Error) => {
    throw exited ? e : new Error(`${e.message} (last: ${last})\n${tail()}`);
  });
}

const isRoot = process.getuid?.() === 0;

/** The parts every nginx here shares: one worker, files in the temp dir, no access log. */
function nginxConf(dir: string, http: string): string {
  return `# generated by bench/proxy.ts
worker_processes 1;
${isRoot ? 'user root;' : `# running as ${userInfo().username}: no "user" directive`}
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  server_tokens off;
  default_type text/plain;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
${http}
}
`;
}

export interface Started {
  child: ChildProcess;
  port: number;
  tail: () => string;
}

export async function startNginx(dir: string, cpu: number | null, http: (port: number) => string, what: string): Promise<Started> {
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  writeFileSync(conf, nginxConf(dir, http(port)));
  const child = spawnPinned(cpu, 'nginx', ['-e', join(dir, 'error.log'), '-p', dir, '-c', conf, '-g', 'daemon off;'], true);
  const tail0 = tailOf(child);
  const tail = () => {
    let log = '';
    try {
      log = readFileSync(join(dir, 'error.log'), 'utf8').split('\n').slice(-20).join('\n');
    } catch {
      /* none yet */
    }
    return `${tail0()}\n${log}`;
  };
  await waitServing(port, child, what, tail);
  return { child, port, tail };
}

/** The global and defaults sections of every HAProxy here: one thread, HTTP keep-alive on both sides. */
const HAPROXY_HEAD = `global
  nbthread 1
  maxconn 4096

defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 75s
  timeout http-request 10s
`;

/**
 * Starts `haproxy -db` on one CPU with `sections(port)` (frontends, backends) after the shared head,
 * and waits until 127.0.0.1:<port> answers like the backend.
 */
export async function startHaproxy(dir: string, name: string, cpu: number | null, sections: (port: number) => string, ready: 'serving' | 'listening' = 'serving'): Promise<Started> {
  const port = await freePort();
  const conf = join(dir, `${name}.cfg`);
  writeFileSync(conf, `# generated by the proxy benchmarks (bench/proxy-lib.ts)\n${HAPROXY_HEAD}\n${sections(port)}`);
  const child = spawnPinned(cpu, 'haproxy', ['-db', '-f', conf], true);
  const tail = tailOf(child);
  if (ready === 'serving') await waitServing(port, child, name, tail);
  else await waitListening(port, child, name, tail);
  return { child, port, tail };
}

/** Polls until 127.0.0.1:<port> accepts a TCP connection (for a listener that speaks TLS only), or the child exits. */
export async function waitListening(port: number, child: ChildProcess, what: string, tail: () => string, timeoutMs = 20_000): Promise<void> {
  await waitUntil(
    () => {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before listening:\n${tail()}`);
      return new Promise<boolean>((resolve) => {
        const s = connect(port, '127.0.0.1');
        s.once('connect', () => {
          s.destroy();
          resolve(true);
        });
        s.once('error', () => resolve(false));
      });
    },
    timeoutMs,
    `${what} to listen on 127.0.0.1:${port}`,
    50,
  );
}

/** Stops a control plane started with lib.ts's startControl whose pid was added to `roots`. */
export async function stopControl(control: Control): Promise<void> {
  await control.stop();
  roots.delete(control.pid);
}

export interface SkeinProxy {
  child: ChildProcess;
  /** The admin listener, host:port. */
  admin: string;
  /** From the ready line: each workload's listeners (host:port, or null). */
  workloads: Array<{ name: string; outbound: string | null; inbound: string | null }>;
  tail: () => string;
}

/**
 * Starts `skein proxy --admin 127.0.0.1:0 --log-level <level> <args>` on one CPU (a process group
 * of its own) and waits for its "proxy ready" line; throws the reason when it exits first or
 * prints none within 30 s (and stops what it started).
 */
export async function startSkeinProxy(cpu: number | null, args: string[], logLevel: string, env: Record<string, string> = {}): Promise<SkeinProxy> {
  // The proxy announces itself to the control plane (a write): with its admin token, unless SKEIN_TOKEN says otherwise.
  const at = args.indexOf('--control');
  const token = process.env['SKEIN_TOKEN'] ?? (at < 0 || args[at + 1] === undefined ? null : await adminTokenOf(args[at + 1] as string));
  const child = spawnPinned(cpu, process.execPath, [SKEIN_BIN, 'proxy', '--admin', '127.0.0.1:0', '--log-level', logLevel, ...args], true, token === null ? env : { SKEIN_TOKEN: token, ...env });
  const lines: string[] = [];
  const keep = (l: string) => {
    lines.push(l);
    if (lines.length > 30) lines.shift();
  };
  const tail = () => lines.join('\n');
  const ready = new Promise<Omit<SkeinProxy, 'child' | 'tail'>>((resolve, reject) => {
    let found = false;
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      keep(line);
      if (found || !line.includes('proxy ready')) return;
      try {
        const j = JSON.parse(line) as { msg?: string; admin?: string; workloads?: SkeinProxy['workloads'] };
        if (j.msg === 'proxy ready' && Array.isArray(j.workloads)) {
          found = true;
          resolve({ admin: j.admin ?? '', workloads: j.workloads.map((w) => ({ name: w.name, outbound: w.outbound ?? null, inbound: w.inbound ?? null })) });
        }
      } catch {
        /* not JSON */
      }
    });
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', keep);
    child.once('exit', (code, sig) => reject(new Error(`skein proxy exited (${code ?? sig}) before it was ready: ${lines.filter((l) => l.trim() !== '').slice(0, 3).join(' | ')}`)));
    child.once('error', reject);
  });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no "proxy ready" line within 30 s (at --log-level ${logLevel}):\n${tail()}`)), 30_000);
  });
  try {
    return { child, tail, ...(await Promise.race([ready, timeout])) };
  } catch (e) {
    await stopTree(child);
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/** The port of a `host:port` a proxy printed. */
export const portOf = (hostPort: string): number => Number(hostPort.slice(hostPort.lastIndexOf(':') + 1));

/**
 * Throws naming what is missing of `tools` (found on PATH or in /usr/sbin), and puts /usr/sbin on
 * PATH (Debian installs nginx and haproxy there, which a non-root PATH may lack).
 */
export function requireTools(tools: string[]): void {
  const missing = tools.filter((t) => {
    try {
      execFileSync('sh', ['-c', `command -v ${t} || test -x /usr/sbin/${t}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
  if (missing.length > 0) throw new Error(`missing: ${missing.join(', ')} (bash scripts/bench-proxy.sh installs them)`);
  if (!(process.env['PATH'] ?? '').split(':').includes('/usr/sbin')) process.env['PATH'] = `${process.env['PATH'] ?? ''}:/usr/sbin`;
}

/**
 * Resolves with `pick(line)` for the first JSON line a child prints on stdout for which `pick`
 * returns non-null (e.g. a backend's `{"port":N}`); rejects when the child exits first.
 */
export function firstJsonLine<T>(child: ChildProcess, pick: (j: Record<string, unknown>) => T | null): Promise<T> {
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (l) => {
      try {
        const v = pick(JSON.parse(l) as Record<string, unknown>);
        if (v !== null) resolve(v);
      } catch {
        /* not JSON */
      }
    });
    child.once('exit', (c) => reject(new Error(`exited (${c}) before it was ready`)));
  });
}

/**
 * `skein proxy --no-control` with one workload (`name=<service>-1`) whose inbound listener fronts
 * the app at 127.0.0.1:<appPort> (bench/http2.ts, bench/grpc.ts): the proxy and its inbound port.
 */
export async function startSkeinInbound(cpu: number | null, appPort: number, service: string): Promise<SkeinProxy & { port: number }> {
  const proxy = await startSkeinProxy(cpu, ['--no-control', '--access-log', 'off', '--workload', `name=${service}-1,service=${service},inbound=127.0.0.1:0,app=127.0.0.1:${appPort}`], 'info');
  const inbound = proxy.workloads[0]?.inbound;
  if (inbound == null) {
    await stopTree(proxy.child);
    throw new Error(`the proxy reported no inbound listener:\n${proxy.tail()}`);
  }
  return { ...proxy, port: portOf(inbound) };
}

/** HAProxy in h2 mode on both sides (`proto h2` on its bind and its server) to 127.0.0.1:<backendPort>. */
export function startHaproxyH2(dir: string, cpu: number | null, backendPort: number): Promise<Started> {
  return startHaproxy(dir, 'h2', cpu, (port) => `frontend f\n  bind 127.0.0.1:${port} proto h2\n  default_backend b\n\nbackend b\n  server s1 127.0.0.1:${backendPort} proto h2\n`, 'listening');
}

/** The app behind the proxies: one nginx worker answering 200 with BODY to every request. */
export function startApp(dir: string, cpu: number | null, what = 'backend nginx'): Promise<Started> {
  return startNginx(dir, cpu, (port) => `  server {\n    listen 127.0.0.1:${port} backlog=4096;\n    location / { return 200 "${BODY.replace('\n', '\\n')}"; }\n  }`, what);
}

// ---------------------------------------------------------------- load generators

export interface WrkOut {
  requests: number;
  durationUs: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

export const DONE_LUA = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('SKEIN_WRK {"requests":%d,"durationUs":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean))
end
`;

/** Runs a command to its end; resolves with its output (rejects on a non-zero exit). */
export function run(cpu: number | null, cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawnPinned(cpu, cmd, args);
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} exited with ${code}:\n${out}`))));
  });
}

export async function wrk(cpu: number | null, port: number, script: string, connections: number, secs: number): Promise<WrkOut> {
  const out = await run(cpu, 'wrk', ['-t1', `-c${connections}`, `-d${secs}s`, '--timeout', '5s', '-s', script, '-H', 'Host: bench', `http://127.0.0.1:${port}/`]);
  const line = out.split('\n').find((l) => l.startsWith('SKEIN_WRK '));
  if (line === undefined) throw new Error(`wrk printed no result:\n${out}`);
  return JSON.parse(line.slice('SKEIN_WRK '.length)) as WrkOut;
}

export interface LatencyOut {
  requests: number;
  rps: number;
  p50Us: number;
  p99Us: number;
  errors: number;
}

/** hey: latencies to 0.1 ms (its "Latency distribution" section). */
export async function hey(cpu: number | null, port: number, rps: number, connections: number, secs: number): Promise<LatencyOut> {
  const perWorker = rps / connections;
  const out = await run(cpu, 'hey', ['-z', `${secs}s`, '-c', String(connections), '-q', String(perWorker), '-host', 'bench', `http://127.0.0.1:${port}/`]);
  const pct = (p: number) => Number(new RegExp(`\\s${p}% in ([\\d.]+) secs`).exec(out)?.[1] ?? NaN) * 1e6;
  const ok = Number(/\[200\]\s+(\d+) responses/.exec(out)?.[1] ?? 0);
  let all = 0;
  for (const m of out.matchAll(/\[\d+\]\s+(\d+) responses/g)) all += Number(m[1]);
  const errs = Number(/Error distribution:[\s\S]*?\[(\d+)\]/.exec(out)?.[1] ?? 0);
  return { requests: all, rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN), p50Us: pct(50), p99Us: pct(99), errors: all - ok + errs };
}

// ---------------------------------------------------------------- measuring one path

/** One path's figures from one round. */
export interface Measure<N extends string = string> {
  path: N;
  round: number;
  /** Throughput run (wrk, max rate). */
  rps: number;
  requests: number;
  errors: number;
  /** The proxies' CPU (every process tree of the path, summed) per request, and in percent of one core. */
  proxyCpuUsPerReq: number;
  proxyCpuPercent: number;
  backendCpuUsPerReq: number;
  /** Closed loop: the throughput run's latency percentiles (wrk's histogram, µs). */
  closedP50Us: number;
  closedP99Us: number;
  /** skein only: the control plane's CPU during the throughput run, percent of one core (~0: it is not on the data path). */
  controlCpuPercent: number;
  /** CPU other processes used during the throughput run (percent of one core). */
  otherCpuPercent: number;
  /** ... and during the fixed-rate run (its p99 is what they disturb most). */
  otherCpuPercentFixed: number;
  /** Fixed-rate run. */
  fixedRps: number;
  p50Us: number;
  p99Us: number;
  fixedErrors: number;
  proxyCpuUsPerReqFixed: number;
  /** After the load (summed over the path's proxies). */
  rssMB: number;
  peakRssMB: number;
}

/** A path under test: the port the load generator calls and the proxies on the way. */
export interface LoadPath<N extends string = string> {
  name: N;
  port: number;
  /** Roots of the proxies' process trees (two for a two-hop path); empty for the direct path. */
  pids: number[];
  /** skein's control plane (not on the data path: its CPU is reported apart, as a check). */
  controlPid?: number;
}

/** How a path is loaded. */
export interface LoadOptions {
  duration: number;
  warmup: number;
  latencyDuration: number;
  connections: number;
  rps: number;
  latencyConnections: number;
  latencyClient: 'wrk' | 'hey';
  /** Where the fixed-rate run runs: every process on the load generator's CPU, or as pinned for throughput. */
  latencyCpus: 'same' | 'split';
}

/** The command-line options every proxy benchmark takes (for node:util parseArgs). */
export const LOAD_ARGS = {
  duration: { type: 'string', default: '10s' },
  warmup: { type: 'string', default: '1s' },
  'latency-duration': { type: 'string' },
  quick: { type: 'boolean', default: false },
  rounds: { type: 'string', default: '1' },
  connections: { type: 'string', default: '32' },
  rps: { type: 'string', default: '1000' },
  'latency-connections': { type: 'string', default: '10' },
  pin: { type: 'string', default: 'auto' },
  'latency-cpus': { type: 'string', default: 'same' },
  'proxy-log-level': { type: 'string', default: 'info' },
  json: { type: 'string' },
} as const;

/** LOAD_ARGS as parsed, checked (`--quick`: 3 s runs). */
export function loadOptions(v: { duration: string; warmup: string; 'latency-duration'?: string | undefined; quick: boolean; rounds: string; connections: string; rps: string; 'latency-connections': string; 'latency-cpus': string }, latencyClient: 'wrk' | 'hey'): LoadOptions & { rounds: number } {
  const latencyCpus = v['latency-cpus'];
  if (latencyCpus !== 'same' && latencyCpus !== 'split') throw new Error(`--latency-cpus must be same or split, got "${latencyCpus}"`);
  return {
    duration: v.quick ? 3 : seconds(v.duration, '--duration'),
    warmup: seconds(v.warmup, '--warmup'),
    latencyDuration: v.quick ? 3 : seconds(v['latency-duration'] ?? v.duration, '--latency-duration'),
    rounds: posInt(v.rounds, '--rounds'),
    connections: posInt(v.connections, '--connections'),
    rps: posInt(v.rps, '--rps'),
    latencyConnections: posInt(v['latency-connections'], '--latency-connections'),
    latencyClient,
    latencyCpus,
  };
}

export interface WrkScripts {
  /** Prints wrk's summary as one JSON line (`SKEIN_WRK {...}`). */
  wrkScript: string;
  /** The same, paced to <rps> requests/s in all over <latencyConnections> connections. */
  pacedScript: string;
}

/**
 * Writes the wrk scripts into `dir`. In the paced one each connection waits a random whole number
 * of ms before each request, so that the connections do not fire in step: 0..2*gap-1 (mean gap -
 * 0.5 ms, as wrk's timers fire up to 1 ms late and the response time adds to each connection's
 * cycle), <rps> in all.
 */
export function writeWrkScripts(dir: string, o: Pick<LoadOptions, 'rps' | 'latencyConnections'>): WrkScripts {
  const wrkScript = join(dir, 'done.lua');
  writeFileSync(wrkScript, DONE_LUA);
  const gapMs = (o.latencyConnections * 1000) / o.rps;
  if (gapMs < 2) throw new Error(`--latency-connections ${o.latencyConnections} for ${o.rps} req/s leaves ${gapMs} ms between a connection's requests: use more connections`);
  const pacedScript = join(dir, 'paced.lua');
  writeFileSync(pacedScript, `math.randomseed(os.time())\ndelay = function() return math.random(0, ${Math.round(2 * gapMs) - 1}) end\n${DONE_LUA}`);
  return { wrkScript, pacedScript };
}

const wrkErrors = (w: WrkOut) => w.errors.connect + w.errors.read + w.errors.write + w.errors.status + w.errors.timeout;

/**
 * One path, one round: a warm-up, the throughput run (wrk at max rate: requests/s, closed-loop
 * latency, the proxies' CPU per request), then the fixed-rate run (latency, CPU per request).
 */
export async function measure<N extends string>(p: LoadPath<N>, round: number, ctx: { pin: Pinning; backendPid: number; ourRoots: () => number[]; scripts: WrkScripts; o: LoadOptions }): Promise<Measure<N>> {
  const { pin, o } = ctx;
  const direct = p.pids.length === 0;
  const cpuOf = (procs: Map<number, string[]>) => ({
    at: performance.now(),
    proxy: p.pids.reduce((n, pid) => n + treeCpuSeconds(pid, procs), 0),
    backend: treeCpuSeconds(ctx.backendPid, procs),
    control: p.controlPid === undefined ? NaN : treeCpuSeconds(p.controlPid, procs),
    ours: ctx.ourRoots().reduce((n, r) => n + treeCpuSeconds(r, procs), 0) + selfCpuSeconds(),
    machine: machineBusySeconds(),
  });

  await wrk(pin.client, p.port, ctx.scripts.wrkScript, o.connections, o.warmup); // warm-up: JIT, pools, caches

  const a = cpuOf(procTable());
  const t = await wrk(pin.client, p.port, ctx.scripts.wrkScript, o.connections, o.duration);
  const b = cpuOf(procTable());
  const wallS = (b.at - a.at) / 1000;

  // The fixed-rate run: with --latency-cpus same (the default), the backend and the proxies join
  // the load generator's CPU for it, so that no hop wakes an idle CPU (see docs/benchmarks.md#proxy).
  const same = o.latencyCpus === 'same' && pin.client !== null;
  if (same) {
    setAffinity(ctx.backendPid, pin.client as number);
    for (const pid of p.pids) setAffinity(pid, pin.client as number);
  }
  let c: ReturnType<typeof cpuOf>;
  let d: ReturnType<typeof cpuOf>;
  let l: LatencyOut;
  try {
    c = cpuOf(procTable());
    l =
      o.latencyClient === 'hey'
        ? await hey(pin.client, p.port, o.rps, o.latencyConnections, o.latencyDuration)
        : await wrk(pin.client, p.port, ctx.scripts.pacedScript, o.latencyConnections, o.latencyDuration).then((w) => ({
            requests: w.requests,
            rps: w.requests / (w.durationUs / 1e6),
            p50Us: w.p50,
            p99Us: w.p99,
            errors: wrkErrors(w),
          }));
    d = cpuOf(procTable());
  } finally {
    if (same) {
      setAffinity(ctx.backendPid, pin.backend as number);
      for (const pid of p.pids) setAffinity(pid, pin.proxy as number);
    }
  }
  const mem = p.pids.reduce((m, pid) => {
    const x = treeMemory(pid);
    return { rss: m.rss + x.rss, hwm: m.hwm + x.hwm };
  }, direct ? { rss: NaN, hwm: NaN } : { rss: 0, hwm: 0 });

  return {
    path: p.name,
    round,
    rps: t.requests / (t.durationUs / 1e6),
    requests: t.requests,
    errors: wrkErrors(t),
    proxyCpuUsPerReq: direct ? NaN : ((b.proxy - a.proxy) / t.requests) * 1e6,
    proxyCpuPercent: direct ? NaN : ((b.proxy - a.proxy) / wallS) * 100,
    backendCpuUsPerReq: ((b.backend - a.backend) / t.requests) * 1e6,
    closedP50Us: t.p50,
    closedP99Us: t.p99,
    controlCpuPercent: ((b.control - a.control) / wallS) * 100,
    otherCpuPercent: Math.max(0, ((b.machine - a.machine - (b.ours - a.ours)) / wallS) * 100),
    otherCpuPercentFixed: Math.max(0, ((d.machine - c.machine - (d.ours - c.ours)) / ((d.at - c.at) / 1000)) * 100),
    fixedRps: l.rps,
    p50Us: l.p50Us,
    p99Us: l.p99Us,
    fixedErrors: l.errors,
    proxyCpuUsPerReqFixed: direct ? NaN : ((d.proxy - c.proxy) / l.requests) * 1e6,
    rssMB: mem.rss / 1e6,
    peakRssMB: mem.hwm / 1e6,
  };
}

// ---------------------------------------------------------------- summaries and printing

export const r0 = (v: number) => (Number.isFinite(v) ? Math.round(v) : NaN);
export const r1 = (v: number) => (Number.isFinite(v) ? round(v, 1) : NaN);
export const r2 = (v: number) => (Number.isFinite(v) ? round(v, 2) : NaN);
export const dash = (v: number, f: (x: number) => number = r1) => (Number.isFinite(v) ? f(v) : '-');
export const signed = (v: number) => (Number.isFinite(v) ? `${v >= 0 ? '+' : ''}${Math.round(v)}` : '-');
export const thousands = (v: number) => (Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : '-');

/** A path's figures over its rounds: medians (maxima for peaks and disturbance, sums for errors). */
export type Summary = Omit<Measure, 'path' | 'round'> & { addedP50Us: number; addedP99Us: number; addedClosedP50Us: number; addedClosedP99Us: number };

/** Medians over rounds; added latency is the path minus the direct path of the same round. */
export function summarize(list: Measure[], direct: Measure[] | undefined): Summary {
  const med = (f: (m: Measure) => number) => percentile(list.map(f), 50);
  const s = {
    rps: med((m) => m.rps),
    requests: med((m) => m.requests),
    errors: list.reduce((n, m) => n + m.errors, 0),
    proxyCpuUsPerReq: med((m) => m.proxyCpuUsPerReq),
    proxyCpuPercent: med((m) => m.proxyCpuPercent),
    backendCpuUsPerReq: med((m) => m.backendCpuUsPerReq),
    controlCpuPercent: med((m) => m.controlCpuPercent),
    otherCpuPercent: Math.max(...list.map((m) => m.otherCpuPercent)),
    otherCpuPercentFixed: Math.max(...list.map((m) => m.otherCpuPercentFixed)),
    fixedRps: med((m) => m.fixedRps),
    p50Us: med((m) => m.p50Us),
    p99Us: med((m) => m.p99Us),
    closedP50Us: med((m) => m.closedP50Us),
    closedP99Us: med((m) => m.closedP99Us),
    fixedErrors: list.reduce((n, m) => n + m.fixedErrors, 0),
    proxyCpuUsPerReqFixed: med((m) => m.proxyCpuUsPerReqFixed),
    rssMB: med((m) => m.rssMB),
    peakRssMB: Math.max(...list.map((m) => m.peakRssMB)),
  };
  // Added latency: the path minus the direct path of the same round (median over rounds).
  const added = (f: (m: Measure) => number) =>
    percentile(
      list.map((m) => {
        const d = direct?.find((x) => x.round === m.round);
        return d === undefined ? NaN : f(m) - f(d);
      }).filter((v) => !Number.isNaN(v)),
      50,
    );
  return { ...s, addedP50Us: added((m) => m.p50Us), addedP99Us: added((m) => m.p99Us), addedClosedP50Us: added((m) => m.closedP50Us), addedClosedP99Us: added((m) => m.closedP99Us) };
}

/** Every path's summary, from all rounds' measurements (`direct` is the baseline of added latency). */
export function summarizeAll<N extends string>(all: Array<Measure<N>>): Map<N, Summary> {
  const by = new Map<N, Array<Measure<N>>>();
  for (const m of all) by.set(m.path, [...(by.get(m.path) ?? []), m]);
  const sums = new Map<N, Summary>();
  for (const [name, list] of by) sums.set(name, summarize(list, by.get('direct' as N)));
  return sums;
}

// ---------------------------------------------------------------- the skein path of the proxy benchmarks

export interface SkeinStarted extends Started {
  control: Control;
  admin: string;
}

/**
 * The skein path of bench/proxy.ts and bench/proxy-profile.ts: a control plane (in-memory store)
 * with the backend registered as instance `backend-1` of service `bench` (after `policy`, the
 * service's definition, when given), then `skein proxy` with an outbound listener for workload
 * `bench-client` and `extraArgs`, polled until `Host: bench` reaches the backend. `proxyEnv` is
 * added to the proxy's environment only (e.g. NODE_OPTIONS). Throws the reason it is not available.
 */
export async function startSkeinService(pin: Pinning, backendPort: number, logLevel: string, policy: object | null = null, extraArgs: string[] = [], proxyEnv: Record<string, string> = {}): Promise<SkeinStarted> {
  const control = await startControl({ dataDir: 'none' });
  roots.add(control.pid);
  try {
    if (pin.backend !== null) execFileSync('taskset', ['-a', '-pc', String(pin.backend), String(control.pid)], { stdio: 'ignore' });
    if (policy !== null) {
      const def = await api(control.url, 'PUT', '/v1/services/bench', policy);
      if (def.status !== 201 && def.status !== 200) throw new Error(`setting the service policy: HTTP ${def.status} ${JSON.stringify(def.body)}`);
    }
    const reg = await api(control.url, 'PUT', '/v1/services/bench/instances/backend-1', { address: '127.0.0.1', port: backendPort });
    if (reg.status !== 201 && reg.status !== 200) throw new Error(`registering the backend: HTTP ${reg.status} ${JSON.stringify(reg.body)}`);
  } catch (e) {
    await stopControl(control);
    throw e;
  }
  try {
    const proxy = await startSkeinProxy(pin.proxy, ['--control', control.url, '--workload', 'name=bench-client,outbound=127.0.0.1:0', ...extraArgs], logLevel, proxyEnv);
    const outbound = proxy.workloads.find((w) => w.name === 'bench-client')?.outbound;
    try {
      if (outbound == null) throw new Error(`the proxy reported no outbound listener for bench-client:\n${proxy.tail()}`);
      const port = portOf(outbound);
      // The proxy learns the endpoint from the control plane's watch stream: poll until it routes.
      await waitServing(port, proxy.child, 'skein proxy (route to service bench)', proxy.tail, 30_000);
      return { child: proxy.child, port, tail: proxy.tail, control, admin: proxy.admin };
    } catch (e) {
      await stopTree(proxy.child);
      throw e;
    }
  } catch (e) {
    await stopControl(control);
    throw e;
  }
}
