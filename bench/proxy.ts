/**
 * Proxy benchmark: the same backend reached directly, through `skein proxy`, through HAProxy and
 * through nginx, side by side in one run; `skein-bare` is the same proxy with the service's
 * retries, timeouts, breakers and outlier detection off, and `skein-nometrics` with `--metrics off`,
 * to measure what each costs.
 *
 *   bash scripts/bench-proxy.sh [options]          # installs haproxy/nginx/wrk/hey, builds, runs this
 *   node dist/bench/proxy.js [--duration 10s] [--latency-duration 10s] [--warmup 1s] [--quick] [--rounds 1]
 *                            [--connections 32] [--rps 1000] [--latency-connections 10]
 *                            [--latency-client wrk|hey] [--paths direct,skein,skein-bare,skein-nometrics,haproxy,nginx]
 *                            [--pin auto|off] [--latency-cpus same|split] [--proxy-log-level info]
 *                            [--json results.json]
 *
 * The backend is one nginx worker answering `200 "hello from the backend\n"`. In front of it, on
 * ports the OS picked: HAProxy (mode http, one thread, server keep-alive with `http-reuse
 * always`), nginx (one worker, an upstream with `keepalive 64`) and `skein proxy` (a control plane
 * with the backend registered as service `bench`, and a proxy whose outbound listener routes
 * `Host: bench` to it). For each path, one after the other (order reversed every other round):
 *
 *   1. warm-up: `wrk -t1 -c<connections>` for --warmup (1 s);
 *   2. throughput: `wrk -t1 -c<connections> -d<duration>`: requests/s, and the CPU the proxy's
 *      process tree used (per-thread run time from /proc/<pid>/task/<tid>/schedstat; utime +
 *      stime from /proc/<pid>/stat where schedstat is missing) divided by the requests completed;
 *   3. latency at a fixed rate: `wrk -t1 -c10` paced by a Lua `delay()` to <rps> requests/s in
 *      all (random gaps, so that the connections do not fire in step), p50/p99 in microseconds
 *      from wrk's histogram; added latency = the path's figure minus the direct path's.
 *      (`--latency-client hey` uses `hey -z <d> -c 10 -q <rps/10>` instead; hey prints latencies
 *      to 0.1 ms only, too coarse for a +300 µs target, hence wrk by default.)
 *   4. memory: VmRSS and VmHWM (peak) of the proxy's process tree from /proc/<pid>/status.
 *
 * On 2 cores (`--pin auto`, the default, when taskset is there): the load generator, the backend
 * and the control plane share the first allowed CPU, and the proxy under test gets the second to
 * itself, the same single core for all three proxies (HAProxy nbthread 1, nginx
 * worker_processes 1, skein's Node process with its helper threads). With 3 or more CPUs the
 * client, the backend (with the control plane) and the proxy each get their own. For the
 * fixed-rate run (`--latency-cpus same`, the default) the backend and the proxy are moved to the
 * load generator's CPU: on a VM, waking an idle vCPU costs ~100 µs per hop, which would otherwise
 * dominate every proxy's "added latency"; `--latency-cpus split` keeps the throughput pinning.
 *
 * When `skein proxy` cannot be started, the skein path is reported "not available (reason)" and
 * the other three are still measured. Every process is stopped at the end (SIGTERM, then SIGKILL
 * after a deadline, whole process trees, also on errors and Ctrl-C) and the temp dir removed.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { createServer } from 'node:net';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { SKEIN_BIN, ROOT, api, machine, percentile, processCpuSeconds, printResult, round, runMain, startControl, table, tempDir, track, waitUntil, warnIfBusy, type Control } from './lib.js';

const PATHS = ['direct', 'skein', 'skein-bare', 'skein-nometrics', 'haproxy', 'nginx'] as const;
type PathName = (typeof PATHS)[number];
const LABEL: Record<PathName, string> = {
  direct: 'direct (no proxy)',
  skein: 'skein proxy',
  'skein-bare': 'skein proxy, resilience off',
  'skein-nometrics': 'skein proxy, metrics off',
  haproxy: 'HAProxy',
  nginx: 'nginx',
};
/**
 * The `skein-bare` path: the same proxy with the service's retries, timeouts, breakers and outlier
 * detection turned off, to measure what they cost (the `skein` path runs with the defaults, all on).
 */
const RESILIENCE_OFF = { retries: { maxRetries: 0 }, timeouts: { request: '0s' }, breaker: { enabled: false }, outlierDetection: { enabled: false } };
/** Issue "Fault tolerance": with them on, at most 10% more proxy CPU per request. */
const RESILIENCE_CPU_TARGET = 1.1;
/** Issue "Monitoring": full per-request metrics on cost at most 10% more proxy CPU per request than off (`--metrics off`). */
const METRICS_CPU_TARGET = 1.1;
const isSkein = (n: PathName) => n === 'skein' || n === 'skein-bare' || n === 'skein-nometrics';
const BODY = 'hello from the backend\n';

/** Targets from the issue. */
const TARGET = { cpuRatioVsHaproxy: 1.5, addedP50Us: 300, addedP99Us: 600, rssMB: 60 };

const { values: argv } = parseArgs({
  options: {
    duration: { type: 'string', default: '10s' },
    warmup: { type: 'string', default: '1s' },
    'latency-duration': { type: 'string' },
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string', default: '1' },
    connections: { type: 'string', default: '32' },
    rps: { type: 'string', default: '1000' },
    'latency-connections': { type: 'string', default: '10' },
    'latency-client': { type: 'string', default: 'wrk' },
    paths: { type: 'string', default: PATHS.join(',') },
    pin: { type: 'string', default: 'auto' },
    'latency-cpus': { type: 'string', default: 'same' },
    'proxy-log-level': { type: 'string', default: 'info' },
    json: { type: 'string' },
  },
});

/** "10s" or "10" -> 10 (whole seconds: wrk takes no fractions). */
function seconds(v: string, flag: string): number {
  const m = /^(\d+)s?$/.exec(v.trim());
  if (!m || Number(m[1]) < 1) throw new Error(`${flag} must be a whole number of seconds such as 10s, got "${v}"`);
  return Number(m[1]);
}

function posInt(v: string, flag: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} must be a positive integer, got "${v}"`);
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
function procTable(): Map<number, string[]> {
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
function treePids(root: number, procs = procTable()): number[] {
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
function treeCpuSeconds(root: number, procs = procTable()): number {
  let total = 0;
  for (const pid of treePids(root, procs)) total += processCpuSeconds(pid);
  return total;
}

/** CPU seconds of this process and of the children it has reaped (wrk, hey): cutime + cstime. */
function selfCpuSeconds(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / TICK;
}

/** Machine-wide busy CPU seconds (all cores). */
function machineBusySeconds(): number {
  const f = (readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] as string).trim().split(/\s+/).slice(1).map(Number);
  return (f.slice(0, 8).reduce((a, b) => a + b, 0) - (f[3] ?? 0) - (f[4] ?? 0)) / TICK;
}

/** Sum over a process tree of VmRSS and VmHWM (peak), in bytes. */
function treeMemory(root: number): { rss: number; hwm: number } {
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
const roots = new Set<number>();

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
async function stopTree(child: ChildProcess, graceMs = 5000): Promise<void> {
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
function allowedCpus(): number[] {
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

interface Pinning {
  client: number | null;
  backend: number | null;
  proxy: number | null;
  text: string;
}

function pinning(mode: string): Pinning {
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
function spawnPinned(cpu: number | null, cmd: string, args: string[], server = false): ChildProcess {
  const [c, a] = cpu === null ? [cmd, args] : ['taskset', ['-c', String(cpu), cmd, ...args]];
  const child = track(spawn(c, a, { stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT, detached: server }));
  if (server && child.pid !== undefined) roots.add(child.pid);
  return child;
}

/** Moves every thread of every process of a tree to one CPU. */
function setAffinity(root: number, cpu: number): void {
  for (const pid of treePids(root)) {
    try {
      execFileSync('taskset', ['-a', '-pc', String(cpu), String(pid)], { stdio: 'ignore' });
    } catch {
      /* exited meanwhile */
    }
  }
}

/** Keeps the last lines a child printed (its pipes drained all along). */
function tailOf(child: ChildProcess, keep = 30): () => string {
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
async function freePort(): Promise<number> {
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
function probe(port: number, timeoutMs = 2000): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
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
async function waitServing(port: number, child: ChildProcess | null, what: string, tail: () => string, timeoutMs = 20_000): Promise<void> {
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

interface Started {
  child: ChildProcess;
  port: number;
  tail: () => string;
}

async function startNginx(dir: string, cpu: number | null, http: (port: number) => string, what: string): Promise<Started> {
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

async function startHaproxy(dir: string, cpu: number | null, backendPort: number): Promise<Started> {
  const port = await freePort();
  const conf = join(dir, 'haproxy.cfg');
  writeFileSync(
    conf,
    `# generated by bench/proxy.ts
global
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

frontend bench
  bind 127.0.0.1:${port}
  default_backend backend

backend backend
  http-reuse always
  server b1 127.0.0.1:${backendPort}
`,
  );
  const child = spawnPinned(cpu, 'haproxy', ['-db', '-f', conf], true);
  const tail = tailOf(child);
  await waitServing(port, child, 'haproxy', tail);
  return { child, port, tail };
}

interface SkeinStarted extends Started {
  control: Control;
  admin: string;
}

/** The control plane (backend registered as service "bench"), then `skein proxy`; throws the reason it is not available. */
async function stopControl(control: Control): Promise<void> {
  await control.stop();
  roots.delete(control.pid);
}

async function startSkein(pin: Pinning, backendPort: number, logLevel: string, policy: object | null, extraArgs: string[] = []): Promise<SkeinStarted> {
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

  const child = spawnPinned(pin.proxy, process.execPath, [
    SKEIN_BIN,
    'proxy',
    '--control',
    control.url,
    '--admin',
    '127.0.0.1:0',
    '--workload',
    'name=bench-client,outbound=127.0.0.1:0',
    '--log-level',
    logLevel,
    ...extraArgs,
  ], true);
  const lines: string[] = [];
  const keep = (l: string) => {
    lines.push(l);
    if (lines.length > 30) lines.shift();
  };
  const tail = () => lines.join('\n');
  const ready = new Promise<{ admin: string; outbound: string }>((resolve, reject) => {
    let found = false;
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      keep(line);
      if (found || !line.includes('proxy ready')) return;
      try {
        const j = JSON.parse(line) as { msg?: string; admin?: string; workloads?: Array<{ name?: string; outbound?: string | null }> };
        const w = j.workloads?.find((x) => x.name === 'bench-client');
        if (j.msg === 'proxy ready' && typeof w?.outbound === 'string') {
          found = true;
          resolve({ admin: j.admin ?? '', outbound: w.outbound });
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
    const { admin, outbound } = await Promise.race([ready, timeout]);
    const port = Number(outbound.slice(outbound.lastIndexOf(':') + 1));
    // The proxy learns the endpoint from the control plane's watch stream: poll until it routes.
    await waitServing(port, child, 'skein proxy (route to service bench)', tail, 30_000);
    return { child, port, tail, control, admin };
  } catch (e) {
    await stopTree(child);
    await stopControl(control);
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------- load generators

interface WrkOut {
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

const DONE_LUA = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('SKEIN_WRK {"requests":%d,"durationUs":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean))
end
`;

/** Runs a command to its end; resolves with its output (rejects on a non-zero exit). */
function run(cpu: number | null, cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawnPinned(cpu, cmd, args);
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} exited with ${code}:\n${out}`))));
  });
}

async function wrk(cpu: number | null, port: number, script: string, connections: number, secs: number): Promise<WrkOut> {
  const out = await run(cpu, 'wrk', ['-t1', `-c${connections}`, `-d${secs}s`, '--timeout', '5s', '-s', script, '-H', 'Host: bench', `http://127.0.0.1:${port}/`]);
  const line = out.split('\n').find((l) => l.startsWith('SKEIN_WRK '));
  if (line === undefined) throw new Error(`wrk printed no result:\n${out}`);
  return JSON.parse(line.slice('SKEIN_WRK '.length)) as WrkOut;
}

interface LatencyOut {
  requests: number;
  rps: number;
  p50Us: number;
  p99Us: number;
  errors: number;
}

/** hey: latencies to 0.1 ms (its "Latency distribution" section). */
async function hey(cpu: number | null, port: number, rps: number, connections: number, secs: number): Promise<LatencyOut> {
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

interface Measure {
  path: PathName;
  round: number;
  /** Throughput run (wrk, max rate). */
  rps: number;
  requests: number;
  errors: number;
  proxyCpuUsPerReq: number;
  proxyCpuPercent: number;
  backendCpuUsPerReq: number;
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
  /** After the load. */
  rssMB: number;
  peakRssMB: number;
}

interface Path {
  name: PathName;
  port: number;
  /** Root of the proxy's process tree; null for the direct path. */
  pid: number | null;
  /** skein's control plane (not on the data path: its CPU is reported apart, as a check). */
  controlPid?: number;
}

async function measure(p: Path, round: number, ctx: { pin: Pinning; backendPid: number; ourRoots: () => number[]; wrkScript: string; pacedScript: string; o: Options }): Promise<Measure> {
  const { pin, o } = ctx;
  const cpuOf = (procs: Map<number, string[]>) => ({
    at: performance.now(),
    proxy: p.pid === null ? 0 : treeCpuSeconds(p.pid, procs),
    backend: treeCpuSeconds(ctx.backendPid, procs),
    control: p.controlPid === undefined ? NaN : treeCpuSeconds(p.controlPid, procs),
    ours: ctx.ourRoots().reduce((n, r) => n + treeCpuSeconds(r, procs), 0) + selfCpuSeconds(),
    machine: machineBusySeconds(),
  });

  await wrk(pin.client, p.port, ctx.wrkScript, o.connections, o.warmup); // warm-up: JIT, pools, caches

  const a = cpuOf(procTable());
  const t = await wrk(pin.client, p.port, ctx.wrkScript, o.connections, o.duration);
  const b = cpuOf(procTable());
  const wallS = (b.at - a.at) / 1000;
  const errors = t.errors.connect + t.errors.read + t.errors.write + t.errors.status + t.errors.timeout;

  // The fixed-rate run: with --latency-cpus same (the default), the backend and the proxy join the
  // load generator's CPU for it, so that no hop wakes an idle CPU (see docs/benchmarks.md#proxy).
  const same = o.latencyCpus === 'same' && pin.client !== null;
  if (same) {
    setAffinity(ctx.backendPid, pin.client as number);
    if (p.pid !== null) setAffinity(p.pid, pin.client as number);
  }
  let c: ReturnType<typeof cpuOf>;
  let d: ReturnType<typeof cpuOf>;
  let l: LatencyOut;
  try {
    c = cpuOf(procTable());
    l =
      o.latencyClient === 'hey'
        ? await hey(pin.client, p.port, o.rps, o.latencyConnections, o.latencyDuration)
        : await wrk(pin.client, p.port, ctx.pacedScript, o.latencyConnections, o.latencyDuration).then((w) => ({
            requests: w.requests,
            rps: w.requests / (w.durationUs / 1e6),
            p50Us: w.p50,
            p99Us: w.p99,
            errors: w.errors.connect + w.errors.read + w.errors.write + w.errors.status + w.errors.timeout,
          }));
    d = cpuOf(procTable());
  } finally {
    if (same) {
      setAffinity(ctx.backendPid, pin.backend as number);
      if (p.pid !== null) setAffinity(p.pid, pin.proxy as number);
    }
  }
  const mem = p.pid === null ? { rss: NaN, hwm: NaN } : treeMemory(p.pid);

  return {
    path: p.name,
    round,
    rps: t.requests / (t.durationUs / 1e6),
    requests: t.requests,
    errors,
    proxyCpuUsPerReq: p.pid === null ? NaN : ((b.proxy - a.proxy) / t.requests) * 1e6,
    proxyCpuPercent: p.pid === null ? NaN : ((b.proxy - a.proxy) / wallS) * 100,
    backendCpuUsPerReq: ((b.backend - a.backend) / t.requests) * 1e6,
    controlCpuPercent: ((b.control - a.control) / wallS) * 100,
    otherCpuPercent: Math.max(0, ((b.machine - a.machine - (b.ours - a.ours)) / wallS) * 100),
    otherCpuPercentFixed: Math.max(0, ((d.machine - c.machine - (d.ours - c.ours)) / ((d.at - c.at) / 1000)) * 100),
    fixedRps: l.rps,
    p50Us: l.p50Us,
    p99Us: l.p99Us,
    fixedErrors: l.errors,
    proxyCpuUsPerReqFixed: p.pid === null ? NaN : ((d.proxy - c.proxy) / l.requests) * 1e6,
    rssMB: mem.rss / 1e6,
    peakRssMB: mem.hwm / 1e6,
  };
}

// ---------------------------------------------------------------- main

interface Options {
  duration: number;
  warmup: number;
  latencyDuration: number;
  rounds: number;
  connections: number;
  rps: number;
  latencyConnections: number;
  latencyClient: 'wrk' | 'hey';
  paths: PathName[];
  /** Where the fixed-rate run runs: every process on the load generator's CPU, or as pinned for throughput. */
  latencyCpus: 'same' | 'split';
}

function options(): Options {
  const duration = argv.quick ? 3 : seconds(argv.duration, '--duration');
  const latencyDuration = argv.quick ? 3 : seconds(argv['latency-duration'] ?? argv.duration, '--latency-duration');
  const paths = argv.paths.split(',').map((s) => s.trim());
  for (const name of paths) if (!(PATHS as readonly string[]).includes(name)) throw new Error(`--paths: unknown path "${name}" (known: ${PATHS.join(', ')})`);
  if (!paths.includes('direct')) paths.unshift('direct'); // the baseline of "added latency"
  const latencyCpus = argv['latency-cpus'];
  if (latencyCpus !== 'same' && latencyCpus !== 'split') throw new Error(`--latency-cpus must be same or split, got "${latencyCpus}"`);
  const client = argv['latency-client'];
  if (client !== 'wrk' && client !== 'hey') throw new Error(`--latency-client must be wrk or hey, got "${client}"`);
  const o: Options = {
    duration,
    warmup: seconds(argv.warmup, '--warmup'),
    latencyDuration,
    rounds: posInt(argv.rounds, '--rounds'),
    connections: posInt(argv.connections, '--connections'),
    rps: posInt(argv.rps, '--rps'),
    latencyConnections: posInt(argv['latency-connections'], '--latency-connections'),
    latencyClient: client,
    paths: PATHS.filter((x) => paths.includes(x)),
    latencyCpus,
  };
  if (o.rps % o.latencyConnections !== 0 && o.latencyClient === 'hey') throw new Error('--rps must be a multiple of --latency-connections with hey (its -q is per worker)');
  return o;
}

function requireTools(o: Options): void {
  const need = ['wrk', 'nginx', ...(o.paths.includes('haproxy') ? ['haproxy'] : []), ...(o.latencyClient === 'hey' ? ['hey'] : [])];
  const missing = need.filter((t) => {
    try {
      execFileSync('sh', ['-c', `command -v ${t} || test -x /usr/sbin/${t}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
  if (missing.length > 0) throw new Error(`missing: ${missing.join(', ')} (bash scripts/bench-proxy.sh installs them)`);
  // Debian puts nginx and haproxy in /usr/sbin, which a non-root PATH may lack.
  if (!(process.env['PATH'] ?? '').split(':').includes('/usr/sbin')) process.env['PATH'] = `${process.env['PATH'] ?? ''}:/usr/sbin`;
}

async function main(): Promise<void> {
  const o = options();
  requireTools(o);
  const info = machine();
  warnIfBusy(info);
  const pin = pinning(argv.pin);
  const dir = tempDir('skein-bench-proxy-');
  const say = (s: string) => process.stdout.write(s + '\n');
  say(`proxy benchmark on ${info.cpus} x ${info.cpuModel}, node ${info.node}; ${pin.text}`);
  const latencyWhere = pin.client === null ? '' : o.latencyCpus === 'same' ? ` (backend and proxy moved to CPU ${pin.client}, the load generator's, for it)` : ' (pinned as for throughput)';
  say(`throughput: wrk -t1 -c${o.connections} -d${o.duration}s; latency: ${o.latencyClient} at ${o.rps} req/s over ${o.latencyConnections} connections for ${o.latencyDuration}s${latencyWhere}; ${o.rounds} round(s)`);

  const wrkScript = join(dir.path, 'done.lua');
  writeFileSync(wrkScript, DONE_LUA);
  // Each connection waits a random whole number of ms before each request, so that the connections
  // do not fire in step: 0..2*gap-1 (mean gap - 0.5 ms, as wrk's timers fire up to 1 ms late and the
  // response time adds to each connection's cycle), <rps> in all.
  const gapMs = (o.latencyConnections * 1000) / o.rps;
  if (gapMs < 2) throw new Error(`--latency-connections ${o.latencyConnections} for ${o.rps} req/s leaves ${gapMs} ms between a connection's requests: use more connections`);
  const pacedScript = join(dir.path, 'paced.lua');
  writeFileSync(pacedScript, `math.randomseed(os.time())\ndelay = function() return math.random(0, ${Math.round(2 * gapMs) - 1}) end\n${DONE_LUA}`);

  const started: Array<{ child: ChildProcess }> = [];
  const controls: Control[] = [];
  const unavailable = new Map<PathName, string>();
  try {
    const backend = await startNginx(join(dir.path, 'backend'), pin.backend, (port) => `  server {\n    listen 127.0.0.1:${port} backlog=4096;\n    location / { return 200 "${BODY.replace('\n', '\\n')}"; }\n  }`, 'backend nginx');
    started.push(backend);
    const paths: Path[] = [{ name: 'direct', port: backend.port, pid: null }];

    for (const name of o.paths) {
      if (name === 'direct') continue;
      try {
        if (name === 'haproxy') {
          const h = await startHaproxy(dir.path, pin.proxy, backend.port);
          started.push(h);
          paths.push({ name, port: h.port, pid: h.child.pid as number });
        } else if (name === 'nginx') {
          const n = await startNginx(
            join(dir.path, 'nginx-proxy'),
            pin.proxy,
            (port) => `  upstream backend {
    server 127.0.0.1:${backend.port};
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
  }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
    }
  }`,
            'nginx proxy',
          );
          started.push(n);
          paths.push({ name, port: n.port, pid: n.child.pid as number });
        } else {
          const s = await startSkein(pin, backend.port, argv['proxy-log-level'], name === 'skein-bare' ? RESILIENCE_OFF : null, name === 'skein-nometrics' ? ['--metrics', 'off'] : []);
          started.push(s);
          controls.push(s.control);
          paths.push({ name, port: s.port, pid: s.child.pid as number, controlPid: s.control.pid });
          say(`${LABEL[name]}: outbound 127.0.0.1:${s.port}, admin ${s.admin}`);
        }
      } catch (e) {
        const reason = (e as Error).message;
        if (!isSkein(name)) throw e;
        unavailable.set(name, reason);
        say(`skein proxy: not available (${reason.split('\n')[0]})`);
      }
    }

    const ourRoots = () => [...roots];
    const all: Measure[] = [];
    for (let round = 0; round < o.rounds; round++) {
      const order = round % 2 === 0 ? [...paths] : [...paths].reverse();
      for (const p of order) {
        process.stdout.write(`round ${round + 1}/${o.rounds}: ${LABEL[p.name]} ... `);
        try {
          const m = await measure(p, round, { pin, backendPid: backend.child.pid as number, ourRoots, wrkScript, pacedScript, o });
          all.push(m);
          say(`${Math.round(m.rps)} req/s, p50 ${m.p50Us} µs, p99 ${m.p99Us} µs${m.errors + m.fixedErrors > 0 ? `, ${m.errors + m.fixedErrors} errors` : ''}`);
        } catch (e) {
          say('failed');
          if (!isSkein(p.name)) throw e;
          unavailable.set(p.name, `failed during the run: ${(e as Error).message.split('\n')[0]}`);
          paths.splice(paths.indexOf(p), 1);
        }
      }
    }
    report(o, info, pin, all, unavailable);
  } finally {
    for (const s of started.reverse()) await stopTree(s.child, 10_000); // skein drains for up to 5 s
    for (const c of controls) await stopControl(c);
    dir.remove();
  }
}

// ---------------------------------------------------------------- reporting

type Summary = Omit<Measure, 'path' | 'round'> & { addedP50Us: number; addedP99Us: number };

function summarize(list: Measure[], direct: Measure[] | undefined): Summary {
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
  return { ...s, addedP50Us: added((m) => m.p50Us), addedP99Us: added((m) => m.p99Us) };
}

const r0 = (v: number) => (Number.isFinite(v) ? Math.round(v) : NaN);
const r1 = (v: number) => (Number.isFinite(v) ? round(v, 1) : NaN);
const r2 = (v: number) => (Number.isFinite(v) ? round(v, 2) : NaN);
const dash = (v: number, f: (x: number) => number = r1) => (Number.isFinite(v) ? f(v) : '-');
const signed = (v: number) => (Number.isFinite(v) ? `${v >= 0 ? '+' : ''}${Math.round(v)}` : '-');
const thousands = (v: number) => (Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : '-');

function report(o: Options, info: ReturnType<typeof machine>, pin: Pinning, all: Measure[], unavailable: Map<PathName, string>): void {
  const by = new Map<PathName, Measure[]>();
  for (const m of all) by.set(m.path, [...(by.get(m.path) ?? []), m]);
  const sums = new Map<PathName, Summary>();
  for (const [name, list] of by) sums.set(name, summarize(list, by.get('direct')));
  const rows = o.paths.map((name): Array<string | number> => {
    const s = sums.get(name);
    if (s === undefined) return [LABEL[name], 'n/a', '', '', '', '', '', '', '', '', ''];
    return [
      LABEL[name],
      r0(s.rps),
      name === 'direct' ? '-' : r1(s.proxyCpuUsPerReq),
      name === 'direct' ? '-' : r0(s.proxyCpuPercent),
      name === 'direct' ? '-' : r1(s.proxyCpuUsPerReqFixed),
      r0(s.p50Us),
      r0(s.p99Us),
      name === 'direct' ? '-' : signed(s.addedP50Us),
      name === 'direct' ? '-' : signed(s.addedP99Us),
      name === 'direct' ? '-' : `${r1(s.rssMB)} / ${r1(s.peakRssMB)}`,
      `${r0(s.otherCpuPercent)} / ${r0(s.otherCpuPercentFixed)}`,
    ];
  });
  table(
    `Proxies: wrk -t1 -c${o.connections} -d${o.duration}s (throughput, CPU), ${o.latencyClient} at ${o.rps} req/s x ${o.latencyDuration}s (latency${pin.client !== null ? `, CPUs ${o.latencyCpus}` : ''}); ${o.rounds > 1 ? `medians of ${o.rounds} rounds; ` : ''}${info.cpus} cores (${info.cpuModel}); ${pin.text}`,
    ['path', 'req/s', 'proxy CPU µs/req', 'proxy CPU %', `µs/req @${o.rps}`, 'p50 µs', 'p99 µs', 'added p50', 'added p99', 'RSS / peak MB', `other CPU % (max load / @${o.rps})`],
    rows,
  );
  const errs = [...sums].filter(([, s]) => s.errors + s.fixedErrors > 0);
  for (const [name, s] of errs) process.stdout.write(`warning: ${LABEL[name]}: ${s.errors} errors (throughput), ${s.fixedErrors} (fixed rate): see wrk's socket/status errors\n`);
  const cp = sums.get('skein')?.controlCpuPercent ?? NaN;
  if (cp > 10) process.stdout.write(`note: skein's control plane used ${r0(cp)}% of a core during the skein throughput run (not counted above): is the proxy asking it per request?\n`);
  const rateOff = [...sums].filter(([, s]) => Math.abs(s.fixedRps - o.rps) / o.rps > 0.05);
  for (const [name, s] of rateOff) process.stdout.write(`note: ${LABEL[name]}: fixed-rate run achieved ${r0(s.fixedRps)} req/s (asked ${o.rps})\n`);

  // Ratios and targets.
  const sk = sums.get('skein');
  const ha = sums.get('haproxy');
  const ng = sums.get('nginx');
  const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined && b > 0 ? a / b : NaN);
  const ratios = {
    cpuPerReqSkeinVsHaproxy: ratio(sk?.proxyCpuUsPerReq, ha?.proxyCpuUsPerReq),
    cpuPerReqSkeinVsNginx: ratio(sk?.proxyCpuUsPerReq, ng?.proxyCpuUsPerReq),
    cpuPerReqAtFixedRateSkeinVsHaproxy: ratio(sk?.proxyCpuUsPerReqFixed, ha?.proxyCpuUsPerReqFixed),
    rpsSkeinVsHaproxy: ratio(sk?.rps, ha?.rps),
    rpsSkeinVsNginx: ratio(sk?.rps, ng?.rps),
    peakRssSkeinVsHaproxy: ratio(sk?.peakRssMB, ha?.peakRssMB),
    nginxVsHaproxyCpuPerReq: ratio(ng?.proxyCpuUsPerReq, ha?.proxyCpuUsPerReq),
    cpuPerReqResilienceOnVsOff: ratio(sk?.proxyCpuUsPerReq, sums.get('skein-bare')?.proxyCpuUsPerReq),
    cpuPerReqResilienceOnVsOffFixed: ratio(sk?.proxyCpuUsPerReqFixed, sums.get('skein-bare')?.proxyCpuUsPerReqFixed),
    cpuPerReqMetricsOnVsOff: ratio(sk?.proxyCpuUsPerReq, sums.get('skein-nometrics')?.proxyCpuUsPerReq),
    cpuPerReqMetricsOnVsOffFixed: ratio(sk?.proxyCpuUsPerReqFixed, sums.get('skein-nometrics')?.proxyCpuUsPerReqFixed),
  };
  const verdict = (ok: boolean | null) => (ok === null ? '-' : ok ? 'met' : 'MISSED');
  const targets = sk === undefined
    ? null
    : {
        cpuPerReq: { value: ratios.cpuPerReqSkeinVsHaproxy, target: TARGET.cpuRatioVsHaproxy, met: Number.isFinite(ratios.cpuPerReqSkeinVsHaproxy) ? ratios.cpuPerReqSkeinVsHaproxy <= TARGET.cpuRatioVsHaproxy : null },
        addedP50Us: { value: sk.addedP50Us, target: TARGET.addedP50Us, met: sk.addedP50Us <= TARGET.addedP50Us },
        addedP99Us: { value: sk.addedP99Us, target: TARGET.addedP99Us, met: sk.addedP99Us <= TARGET.addedP99Us },
        peakRssMB: { value: sk.peakRssMB, target: TARGET.rssMB, met: sk.peakRssMB <= TARGET.rssMB },
      };
  const skeinNote = sk === undefined ? 'skein n/a' : '';
  if (sk === undefined && o.paths.includes('skein')) process.stdout.write(`\nskein proxy: not available (${(unavailable.get('skein') ?? 'not run').split('\n')[0]})\n`);
  table('Skein against the targets', ['measure', 'skein', 'HAProxy', 'nginx', 'skein / HAProxy', 'skein / nginx', 'target', 'verdict'], [
    ['proxy CPU µs per request (max load)', dash(sk?.proxyCpuUsPerReq ?? NaN) , dash(ha?.proxyCpuUsPerReq ?? NaN), dash(ng?.proxyCpuUsPerReq ?? NaN), dash(ratios.cpuPerReqSkeinVsHaproxy, r2), dash(ratios.cpuPerReqSkeinVsNginx, r2), `<= ${TARGET.cpuRatioVsHaproxy}x HAProxy`, targets === null ? skeinNote : verdict(targets.cpuPerReq.met)],
    [`proxy CPU µs per request (${o.rps} req/s)`, dash(sk?.proxyCpuUsPerReqFixed ?? NaN), dash(ha?.proxyCpuUsPerReqFixed ?? NaN), dash(ng?.proxyCpuUsPerReqFixed ?? NaN), dash(ratios.cpuPerReqAtFixedRateSkeinVsHaproxy, r2), dash(ratio(sk?.proxyCpuUsPerReqFixed, ng?.proxyCpuUsPerReqFixed), r2), '-', '-'],
    ['requests/s (max load)', dash(sk?.rps ?? NaN, r0), dash(ha?.rps ?? NaN, r0), dash(ng?.rps ?? NaN, r0), dash(ratios.rpsSkeinVsHaproxy, r2), dash(ratios.rpsSkeinVsNginx, r2), '-', '-'],
    [`added p50 µs at ${o.rps} req/s`, sk ? signed(sk.addedP50Us) : '-', ha ? signed(ha.addedP50Us) : '-', ng ? signed(ng.addedP50Us) : '-', '', '', `<= +${TARGET.addedP50Us}`, targets === null ? '-' : verdict(targets.addedP50Us.met)],
    [`added p99 µs at ${o.rps} req/s`, sk ? signed(sk.addedP99Us) : '-', ha ? signed(ha.addedP99Us) : '-', ng ? signed(ng.addedP99Us) : '-', '', '', `<= +${TARGET.addedP99Us}`, targets === null ? '-' : verdict(targets.addedP99Us.met)],
    ['peak RSS MB (VmHWM)', dash(sk?.peakRssMB ?? NaN), dash(ha?.peakRssMB ?? NaN), dash(ng?.peakRssMB ?? NaN), dash(ratios.peakRssSkeinVsHaproxy, r2), dash(ratio(sk?.peakRssMB, ng?.peakRssMB), r2), `<= ${TARGET.rssMB}`, targets === null ? '-' : verdict(targets.peakRssMB.met)],
  ]);

  const bare = sums.get('skein-bare');
  if (sk !== undefined && bare !== undefined) {
    const r = ratios.cpuPerReqResilienceOnVsOff;
    table('What the resilience policies cost (defaults on vs. retries, timeouts, breakers, outlier detection off)', ['measure', 'on', 'off', 'on / off', 'target', 'verdict'], [
      ['proxy CPU µs per request (max load)', dash(sk.proxyCpuUsPerReq), dash(bare.proxyCpuUsPerReq), dash(r, r2), `<= ${RESILIENCE_CPU_TARGET}x`, Number.isFinite(r) ? verdict(r <= RESILIENCE_CPU_TARGET) : '-'],
      [`proxy CPU µs per request (${o.rps} req/s)`, dash(sk.proxyCpuUsPerReqFixed), dash(bare.proxyCpuUsPerReqFixed), dash(ratios.cpuPerReqResilienceOnVsOffFixed, r2), '-', '-'],
      ['requests/s (max load)', dash(sk.rps, r0), dash(bare.rps, r0), dash(ratio(sk.rps, bare.rps), r2), '-', '-'],
    ]);
  }

  const noMetrics = sums.get('skein-nometrics');
  if (sk !== undefined && noMetrics !== undefined) {
    const r = ratios.cpuPerReqMetricsOnVsOff;
    table('What the per-request metrics cost (metrics on, the default, vs. --metrics off)', ['measure', 'on', 'off', 'on / off', 'target', 'verdict'], [
      ['proxy CPU µs per request (max load)', dash(sk.proxyCpuUsPerReq), dash(noMetrics.proxyCpuUsPerReq), dash(r, r2), `<= ${METRICS_CPU_TARGET}x`, Number.isFinite(r) ? verdict(r <= METRICS_CPU_TARGET) : '-'],
      [`proxy CPU µs per request (${o.rps} req/s)`, dash(sk.proxyCpuUsPerReqFixed), dash(noMetrics.proxyCpuUsPerReqFixed), dash(ratios.cpuPerReqMetricsOnVsOffFixed, r2), '-', '-'],
      ['requests/s (max load)', dash(sk.rps, r0), dash(noMetrics.rps, r0), dash(ratio(sk.rps, noMetrics.rps), r2), '-', '-'],
    ]);
  }

  // Markdown for docs/benchmarks.md.
  const md: string[] = [
    '',
    'Markdown for docs/benchmarks.md:',
    '',
    `| path | req/s (wrk -c${o.connections}) | proxy CPU µs/req | proxy CPU µs/req at ${o.rps} req/s | p50 µs | p99 µs | added p50 µs | added p99 µs | peak RSS MB |`,
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const name of o.paths) {
    const s = sums.get(name);
    if (s === undefined) {
      md.push(`| ${LABEL[name]} | not available | | | | | | | |`);
      continue;
    }
    const d = name === 'direct';
    md.push(`| ${LABEL[name]} | ${thousands(s.rps)} | ${d ? '-' : dash(s.proxyCpuUsPerReq)} | ${d ? '-' : dash(s.proxyCpuUsPerReqFixed)} | ${r0(s.p50Us)} | ${r0(s.p99Us)} | ${d ? '-' : signed(s.addedP50Us)} | ${d ? '-' : signed(s.addedP99Us)} | ${d ? '-' : dash(s.peakRssMB)} |`);
  }
  if (targets !== null && sk !== undefined) {
    md.push(
      '',
      '| target | skein | verdict |',
      '| --- | ---: | --- |',
      `| proxy CPU per request <= ${TARGET.cpuRatioVsHaproxy}x HAProxy's | ${dash(ratios.cpuPerReqSkeinVsHaproxy, r2)}x (nginx: ${dash(ratios.nginxVsHaproxyCpuPerReq, r2)}x) | ${verdict(targets.cpuPerReq.met)} |`,
      `| added latency at ${o.rps} req/s: p50 <= +${TARGET.addedP50Us} µs | ${signed(sk.addedP50Us)} µs | ${verdict(targets.addedP50Us.met)} |`,
      `| added latency at ${o.rps} req/s: p99 <= +${TARGET.addedP99Us} µs | ${signed(sk.addedP99Us)} µs | ${verdict(targets.addedP99Us.met)} |`,
      `| RSS under load <= ${TARGET.rssMB} MB | ${dash(sk.peakRssMB)} MB peak | ${verdict(targets.peakRssMB.met)} |`,
    );
  }
  process.stdout.write(md.join('\n') + '\n\n');

  const result = {
    machine: info,
    pinning: pin,
    options: o,
    unavailable: Object.fromEntries(unavailable),
    summary: Object.fromEntries(sums),
    ratios,
    targets,
    runs: all,
  };
  if (argv.json !== undefined) {
    writeFileSync(argv.json, JSON.stringify(result, null, 2) + '\n');
    process.stdout.write(`results written to ${argv.json}\n`);
  }
  printResult('proxy', result);
}

runMain(main);
