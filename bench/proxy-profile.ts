/**
 * Where the proxy's time goes per request (issue 16, "profile first"): the setup of bench/proxy.ts
 * (one nginx backend, `skein proxy` with the backend registered as service `bench`, HAProxy), and
 * for each proxy, at full load (`wrk -t1 -c32`) and at a fixed rate (paced wrk, 1,000 req/s):
 *
 *   1. CPU per request as bench/proxy.ts measures it (its `measure()`: schedstat of the whole
 *      process tree, no instrumentation), and peak RSS;
 *   2. user against kernel time per request (utime/stime of every thread) and which threads
 *      (skein: the main thread against V8's and libuv's helpers);
 *   3. skein only: a CPU profile of the main thread (the inspector's sampling profiler, started
 *      and stopped by bench/proxy-profile-probe.ts inside the proxy), summarised into buckets
 *      (our JS by layer, Node's JS by module, llhttp in WebAssembly, GC, native) with the top 25
 *      functions by self time at their TypeScript file:line (through the source maps); and the
 *      bytes allocated per request (every GC's heap before and after, v8.GCProfiler);
 *   4. `perf record -g -e cpu-clock` at full load (when perf is installed): the share of the
 *      proxy's CPU in the kernel, in the proxy's binary (node: V8, Node's C++, libuv), in libc
 *      and in JIT-compiled code (JS and WebAssembly), the kernel's time by path (sends, the
 *      loopback receive they run, waking the reader, reads, epoll, page faults), the top symbols;
 *   5. syscalls per request: `strace -c -f -p PID` over a fixed number of requests (wrk stops
 *      itself after N responses), the counts divided by N, HAProxy's beside skein's.
 *
 *   node dist/bench/proxy-profile.js [--duration 5s] [--requests 20000] [--fixed-requests 3000]
 *                                    [--connections 32] [--rps 1000] [--interval-us 200]
 *                                    [--paths skein,haproxy] [--no-perf] [--pin auto|off] [--json out.json]
 *
 * Each kind of measurement runs in a window of its own (strace slows a process ten times, the
 * profiler a few per cent), so the CPU figures of (1) are clean. The pinning is bench/proxy.ts's:
 * the proxy on its own CPU at full load, everything on the load generator's CPU at the fixed rate.
 * No assertions: it prints tables, markdown for docs/benchmarks.md and one JSON line.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { ROOT, machine, printResult, runMain, table, tempDir, track, waitUntil, warnIfBusy, type Control } from './lib.js';
import {
  DONE_LUA,
  LOAD_ARGS,
  loadOptions,
  measure,
  pinning,
  posInt,
  r1,
  r2,
  requireTools,
  roots,
  setAffinity,
  spawnPinned,
  startApp,
  startHaproxy,
  startSkeinService,
  stopControl,
  stopTree,
  wrk,
  writeWrkScripts,
  type LoadOptions,
  type Measure,
  type Pinning,
  type Started,
  type WrkOut,
  type WrkScripts,
} from './proxy-lib.js';

const PATHS = ['skein', 'haproxy'] as const;
type PathName = (typeof PATHS)[number];

const { values: argv } = parseArgs({
  options: {
    ...LOAD_ARGS,
    duration: { type: 'string', default: '5s' },
    requests: { type: 'string', default: '20000' },
    'fixed-requests': { type: 'string', default: '3000' },
    'interval-us': { type: 'string', default: '200' },
    paths: { type: 'string', default: PATHS.join(',') },
    'no-perf': { type: 'boolean', default: false },
  },
});

interface Options extends LoadOptions {
  paths: PathName[];
  /** Requests under strace at full load, and at the fixed rate. */
  straceRequests: number;
  straceFixedRequests: number;
  intervalUs: number;
  perf: boolean;
}

function options(): Options {
  const paths = argv.paths.split(',').map((s) => s.trim());
  for (const p of paths) if (!(PATHS as readonly string[]).includes(p)) throw new Error(`--paths: unknown path "${p}" (known: ${PATHS.join(', ')})`);
  const o = loadOptions({ ...argv, duration: argv.duration }, 'wrk');
  return {
    ...o,
    paths: PATHS.filter((p) => paths.includes(p)),
    straceRequests: posInt(argv.requests, '--requests'),
    straceFixedRequests: posInt(argv['fixed-requests'], '--fixed-requests'),
    intervalUs: posInt(argv['interval-us'], '--interval-us'),
    perf: !argv['no-perf'],
  };
}

// ---------------------------------------------------------------- threads: user, kernel, who

interface ThreadTimes {
  /** tid -> [comm, utime ticks, stime ticks, run ns]. */
  threads: Map<string, [string, number, number, number]>;
  /** Minor page faults of the process so far. */
  minflt: number;
}

const TICK_S = 1 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim() || 100);

function threadTimes(pid: number): ThreadTimes {
  const threads = new Map<string, [string, number, number, number]>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      const run = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      threads.set(tid, [comm, Number(f[11]), Number(f[12]), run]);
    } catch {
      /* exited meanwhile */
    }
  }
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return { threads, minflt: Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]) };
}

/** CPU of a window, per request: user and kernel (µs), and run time by thread kind (µs). */
export interface CpuSplit {
  requests: number;
  userUs: number;
  sysUs: number;
  /** Scheduler run time per request, by thread name ("node" is the main thread; helpers are named by Node and V8). */
  byThread: Record<string, number>;
  /** Minor page faults per request (each one is kernel time). */
  minorFaults: number;
}

function cpuSplit(pid: number, a: ThreadTimes, b: ThreadTimes, requests: number): CpuSplit {
  let user = 0;
  let sys = 0;
  const byThread: Record<string, number> = {};
  for (const [tid, [comm, u, s, run]] of b.threads) {
    const [, u0, s0, run0] = a.threads.get(tid) ?? [comm, 0, 0, 0];
    user += u - u0;
    sys += s - s0;
    const kind = tid === String(pid) ? `${comm} (main thread)` : comm.replace(/\d+$/, '').trim();
    byThread[kind] = (byThread[kind] ?? 0) + ((run - run0) / 1000 / requests);
  }
  return { requests, userUs: ((user * TICK_S) / requests) * 1e6, sysUs: ((sys * TICK_S) / requests) * 1e6, byThread, minorFaults: (b.minflt - a.minflt) / requests };
}

// ---------------------------------------------------------------- load for a window

interface LoadCtx {
  pin: Pinning;
  backendPid: number;
  port: number;
  pid: number;
  o: Options;
  dir: string;
  scripts: WrkScripts;
}

/**
 * Runs `load` with the fixed-rate pinning of bench/proxy.ts (the backend and the proxy on the load
 * generator's CPU) when `fixed`, or as pinned for throughput.
 */
async function pinnedFor<T>(c: LoadCtx, fixed: boolean, load: () => Promise<T>): Promise<T> {
  const same = fixed && c.o.latencyCpus === 'same' && c.pin.client !== null;
  if (same) {
    setAffinity(c.backendPid, c.pin.client as number);
    setAffinity(c.pid, c.pin.client as number);
  }
  try {
    return await load();
  } finally {
    if (same) {
      setAffinity(c.backendPid, c.pin.backend as number);
      setAffinity(c.pid, c.pin.proxy as number);
    }
  }
}

/** A wrk script that stops after `n` responses (for strace's fixed number of requests); paced when `gapMs` is given. */
function countingScript(dir: string, name: string, n: number, gapMs: number | null): string {
  const file = join(dir, `${name}.lua`);
  const pace = gapMs === null ? '' : `math.randomseed(os.time())\ndelay = function() return math.random(0, ${Math.round(2 * gapMs) - 1}) end\n`;
  writeFileSync(file, `${pace}local n = 0\nresponse = function(status, headers, body)\n  n = n + 1\n  if n == ${n} then\n    wrk.thread:stop()\n    io.write('${REACHED}\\n')\n    io.flush()\n  end\nend\n${DONE_LUA}`);
  return file;
}

const REACHED = 'SKEIN_COUNT_REACHED';

/**
 * wrk with a counting script: its thread stops at the count, but wrk's main thread sleeps out
 * -d; SIGINT ends that sleep, and wrk prints its summary as usual.
 */
function wrkUntilCount(cpu: number | null, port: number, script: string, connections: number, maxSecs: number): Promise<WrkOut> {
  return new Promise((resolve, reject) => {
    const child = spawnPinned(cpu, 'wrk', ['-t1', `-c${connections}`, `-d${maxSecs}s`, '--timeout', '5s', '-s', script, '-H', 'Host: bench', `http://127.0.0.1:${port}/`]);
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      const had = out.includes(REACHED);
      out += d.toString();
      if (!had && out.includes(REACHED)) child.kill('SIGINT');
    });
    child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('close', () => {
      const line = out.split('\n').find((l) => l.startsWith('SKEIN_WRK '));
      if (line === undefined) reject(new Error(`wrk printed no result:\n${out}`));
      else resolve(JSON.parse(line.slice('SKEIN_WRK '.length)) as WrkOut);
    });
  });
}

/** Full load for the window's duration, or the fixed rate; resolves with the requests completed. */
async function load(c: LoadCtx, fixed: boolean, secs = c.o.duration): Promise<number> {
  const s = c.scripts;
  const w = fixed ? await wrk(c.pin.client, c.port, s.pacedScript, c.o.latencyConnections, secs) : await wrk(c.pin.client, c.port, s.wrkScript, c.o.connections, secs);
  return w.requests;
}

// ---------------------------------------------------------------- strace

export interface Syscalls {
  requests: number;
  /** Calls per request, by syscall. */
  perRequest: Record<string, number>;
  totalPerRequest: number;
  /** Calls that failed (EAGAIN reads, ...), per request. */
  errorsPerRequest: number;
}

/** Parses `strace -c`'s table: calls and errors by syscall. */
export function parseStraceSummary(text: string): Map<string, { calls: number; errors: number }> {
  const out = new Map<string, { calls: number; errors: number }>();
  for (const line of text.split('\n')) {
    const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d+)?\s*([a-z_0-9]+)\s*$/.exec(line);
    if (m === null || m[3] === 'total') continue;
    out.set(m[3] as string, { calls: Number(m[1]), errors: Number(m[2] ?? 0) });
  }
  return out;
}

/** strace -c -f attached to every thread of `pid` while wrk sends exactly `n` requests. */
async function straceWindow(c: LoadCtx, fixed: boolean, n: number): Promise<Syscalls> {
  const out = join(c.dir, `strace-${c.pid}-${fixed ? 'fixed' : 'full'}.txt`);
  const child = track(spawn('strace', ['-c', '-f', '-p', String(c.pid), '-o', out], { stdio: ['ignore', 'ignore', 'pipe'] }));
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  try {
    await waitUntil(() => {
      if (child.exitCode !== null) throw new Error(`strace exited (${child.exitCode}): ${err.trim()}`);
      return err.includes('attached');
    }, 10_000, 'strace to attach', 20);
    const script = countingScript(c.dir, `count-${fixed ? 'fixed' : 'full'}`, n, fixed ? (c.o.latencyConnections * 1000) / c.o.rps : null);
    const requests = await pinnedFor(c, fixed, async () => {
      const w = await wrkUntilCount(c.pin.client, c.port, script, fixed ? c.o.latencyConnections : c.o.connections, 120);
      return w.requests;
    });
    child.kill('SIGINT');
    await exited;
    const calls = parseStraceSummary(readFileSync(out, 'utf8'));
    const perRequest: Record<string, number> = {};
    let total = 0;
    let errors = 0;
    for (const [name, v] of [...calls].sort((x, y) => y[1].calls - x[1].calls)) {
      perRequest[name] = v.calls / requests;
      total += v.calls;
      errors += v.errors;
    }
    return { requests, perRequest, totalPerRequest: total / requests, errorsPerRequest: errors / requests };
  } finally {
    if (child.exitCode === null) {
      child.kill('SIGINT');
      await exited;
    }
  }
}

// ---------------------------------------------------------------- perf

export interface PerfSummary {
  samples: number;
  /** perf stat's software events per request over the same window (page-faults, context-switches, cpu-migrations). */
  eventsPerRequest: Record<string, number>;
  /** Share of the proxy's CPU samples by binary (kernel, node, libc, JIT code...), percent. */
  byObject: Array<{ object: string; percent: number }>;
  /** Kernel paths (call graphs: the share of samples with the function on the stack), percent. */
  kernel: Record<string, number>;
  /** Top native symbols (object, symbol, percent). */
  top: Array<{ object: string; symbol: string; percent: number }>;
}

/**
 * Kernel functions whose call-graph share is reported, by what they stand for. A loopback send
 * runs the receiving side too (softirq: TCP receive, waking the reader) in the sender's context.
 */
const KERNEL_PATHS: Record<string, string> = {
  do_syscall_64: 'all syscalls',
  ksys_write: 'write / sendto',
  __sys_sendto: 'write / sendto',
  ksys_read: 'read / recvfrom',
  __sys_recvfrom: 'read / recvfrom',
  net_rx_action: '  of the sends: loopback receive (softirq)',
  sock_def_readable: '  of which: waking the reader',
  do_epoll_wait: 'epoll_wait',
  asm_exc_page_fault: 'page faults',
};

/** `perf record -g -e cpu-clock` on every thread of `pid` during `secs` of full load. */
async function perfWindow(c: LoadCtx, secs: number): Promise<PerfSummary> {
  const data = join(c.dir, `perf-${c.pid}.data`);
  const rec = track(spawn('perf', ['record', '-q', '-g', '-e', 'cpu-clock', '-F', '2999', '-p', String(c.pid), '-o', data, '--', 'sleep', String(secs)], { stdio: ['ignore', 'ignore', 'pipe'] }));
  let err = '';
  rec.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<number | null>((r) => rec.once('exit', (code) => r(code)));
  const statOut = join(c.dir, `perf-stat-${c.pid}.csv`);
  const stat = track(spawn('perf', ['stat', '-x', ',', '-o', statOut, '-e', 'page-faults,context-switches,cpu-migrations', '-p', String(c.pid), '--', 'sleep', String(secs)], { stdio: 'ignore' }));
  const statDone = new Promise<number | null>((r) => stat.once('exit', (code) => r(code)));
  const requests = await load(c, false, secs);
  const code = await done;
  if (code !== 0) throw new Error(`perf record exited with ${code}: ${err.trim()}`);
  const eventsPerRequest: Record<string, number> = {};
  if ((await statDone) === 0) {
    for (const line of readFileSync(statOut, 'utf8').split('\n')) {
      const f = line.split(',');
      if (f.length > 3 && /^\d+$/.test(f[0] as string)) eventsPerRequest[f[2] as string] = Number(f[0]) / requests;
    }
  }
  const report = (sort: string) => execFileSync('perf', ['report', '-i', data, '--stdio', '--no-children', '-g', 'none', '--sort', sort, '--percent-limit', '0.3'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, stdio: ['ignore', 'pipe', 'ignore'] });
  const byDso = report('dso');
  // perf rounds the header ("# Samples: 12K of event 'cpu-clock'"): the figure is approximate.
  const sm = /# Samples: (\d+)([KM]?)/.exec(byDso);
  const samples = sm === null ? NaN : Number(sm[1]) * (sm[2] === 'K' ? 1000 : sm[2] === 'M' ? 1e6 : 1);
  const byObject: PerfSummary['byObject'] = [];
  for (const line of byDso.split('\n')) {
    const m = /^\s+([\d.]+)%\s+(.+?)\s*$/.exec(line);
    if (m !== null) byObject.push({ object: objectName(m[2] as string), percent: Number(m[1]) });
  }
  const top: PerfSummary['top'] = [];
  for (const line of report('dso,sym').split('\n')) {
    const m = /^\s+([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.+?)\s*$/.exec(line);
    if (m !== null && top.length < 15) top.push({ object: objectName(m[2] as string), symbol: (m[4] as string).slice(0, 70), percent: Number(m[1]) });
  }
  // The kernel's work by path: "children" shares (samples with the function anywhere on the stack).
  const kernel: Record<string, number> = {};
  const children = execFileSync('perf', ['report', '-i', data, '--stdio', '--children', '--sort', 'sym', '-g', 'none', '--percent-limit', '0'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, stdio: ['ignore', 'pipe', 'ignore'] });
  for (const line of children.split('\n')) {
    const m = /^\s+([\d.]+)%\s+[\d.]+%\s+\[k\]\s+(\S+)\s*$/.exec(line);
    if (m === null) continue;
    const path = KERNEL_PATHS[m[2] as string];
    if (path !== undefined) kernel[path] = Math.max(kernel[path] ?? 0, Number(m[1]));
  }
  return { samples, eventsPerRequest, byObject, kernel, top };
}

/** perf's name of a mapping, with JIT code (no symbol map: [unknown] or an anonymous mapping) named as such. */
function objectName(o: string): string {
  if (o === '[unknown]' || o.startsWith('[JIT]') || o.startsWith('//anon') || o.startsWith('perf-')) return 'JIT code (JS, WebAssembly)';
  return o;
}

// ---------------------------------------------------------------- the CPU profile

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface CpuProfile {
  nodes: Array<{ id: number; callFrame: CallFrame }>;
  samples: number[];
  timeDeltas: number[];
}

interface GcEntry {
  gcType: string;
  cost: number;
  beforeGC: { heapStatistics: { usedHeapSize: number } };
  afterGC: { heapStatistics: { usedHeapSize: number } };
}

export interface JsProfile {
  requests: number;
  /** Sampled time of the main thread that was not idle, per request (µs). */
  busyUs: number;
  buckets: Array<{ bucket: string; us: number; percent: number }>;
  top: Array<{ fn: string; where: string; bucket: string; us: number; percent: number }>;
  /** Bytes allocated on V8's heap per request; GCs in the window by kind; their time per request (µs). */
  allocBytesPerRequest: number;
  gcs: Record<string, number>;
  gcUsPerRequest: number;
}

const DIST = join(ROOT, 'dist');
const maps = new Map<string, SourceMap | null>();

/** file:line of a frame: TypeScript (source maps) for our code, the module for Node's, the package for dependencies. */
function whereOf(f: CallFrame): string {
  const line = f.lineNumber + 1;
  if (f.url.startsWith('file://')) {
    const file = fileURLToPath(f.url);
    let map = maps.get(file);
    if (map === undefined) {
      map = null;
      try {
        map = new SourceMap(JSON.parse(readFileSync(`${file}.map`, 'utf8')) as ConstructorParameters<typeof SourceMap>[0]);
      } catch {
        /* no map */
      }
      maps.set(file, map);
    }
    if (map !== null && f.lineNumber >= 0) {
      const e = map.findEntry(f.lineNumber, Math.max(0, f.columnNumber));
      if ('originalSource' in e) return `${relative(ROOT, resolve(dirname(file), e.originalSource))}:${e.originalLine + 1}`;
    }
    const nm = file.lastIndexOf('node_modules/');
    return `${nm >= 0 ? file.slice(nm + 'node_modules/'.length) : relative(ROOT, file)}:${line}`;
  }
  if (f.url === '') return '(native)';
  return `${f.url}:${line}`;
}

/** Which bucket a frame's self time goes to. */
export function bucketOf(f: CallFrame): string {
  const fn = f.functionName;
  if (fn === '(garbage collector)') return 'GC (main thread)';
  if (fn === '(program)') return 'native, outside any JS frame (libuv, Node C++, syscalls)';
  if (fn === '(idle)' || fn === '(root)') return 'idle';
  if (f.url.startsWith('wasm://') || /^\$?llhttp|^wasm-function/.test(fn)) return 'llhttp (WebAssembly)';
  if (f.url === '') return 'native functions called from JS (bindings, V8 builtins)';
  if (f.url.startsWith('node:')) {
    const m = f.url.slice(5);
    if (m.includes('streams/') || m === 'stream') return 'node JS: streams';
    if (m === 'net' || m.includes('stream_base_commons')) return 'node JS: net, stream_base_commons';
    if (m.includes('timers')) return 'node JS: timers';
    if (m.includes('perf_hooks') || m.includes('perf/')) return 'node JS: perf_hooks';
    if (m === 'events' || m.includes('events/')) return 'node JS: events';
    return 'node JS: other';
  }
  const nm = f.url.lastIndexOf('/node_modules/');
  if (nm >= 0) return `dependency: ${f.url.slice(nm + 14).split('/')[0] as string}`;
  if (f.url.startsWith('file://')) {
    const rel = relative(DIST, fileURLToPath(f.url));
    const parts = rel.split('/');
    if (parts[0] === 'src') return `skein: src/${parts[1] === 'proxy' && parts[2] === 'http1' ? 'proxy/http1' : parts[1]}`;
    return `skein: ${parts[0]}`;
  }
  return 'other';
}

/** Self time per bucket and per function, per request. */
export function summarizeProfile(p: CpuProfile, requests: number): Pick<JsProfile, 'busyUs' | 'buckets' | 'top'> {
  const byId = new Map(p.nodes.map((n) => [n.id, n.callFrame] as const));
  const self = new Map<number, number>();
  // timeDeltas[i] is the time since the previous sample: the gap after sample i is sample i's.
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i + 1] ?? 0;
    const id = p.samples[i] as number;
    self.set(id, (self.get(id) ?? 0) + dt);
  }
  const buckets = new Map<string, number>();
  const fns = new Map<string, { fn: string; where: string; bucket: string; us: number }>();
  let busy = 0;
  for (const [id, us] of self) {
    const f = byId.get(id) as CallFrame;
    const b = bucketOf(f);
    if (b === 'idle') continue;
    busy += us;
    buckets.set(b, (buckets.get(b) ?? 0) + us);
    const where = whereOf(f);
    const key = `${f.functionName}@${where}`;
    const e = fns.get(key) ?? { fn: f.functionName === '' ? '(anonymous)' : f.functionName, where, bucket: b, us: 0 };
    e.us += us;
    fns.set(key, e);
  }
  const pct = (us: number) => (busy > 0 ? (us / busy) * 100 : NaN);
  return {
    busyUs: busy / requests,
    buckets: [...buckets].sort((a, b) => b[1] - a[1]).map(([bucket, us]) => ({ bucket, us: us / requests, percent: pct(us) })),
    top: [...fns.values()].sort((a, b) => b.us - a.us).slice(0, 25).map((e) => ({ ...e, us: e.us / requests, percent: pct(e.us) })),
  };
}

/** Bytes allocated in the window: what each GC found in use minus what the one before left, plus what was added after the last. */
export function allocatedBytes(usedAtStart: number, usedAtEnd: number, gcs: GcEntry[]): number {
  let prev = usedAtStart;
  let total = 0;
  for (const g of gcs) {
    total += g.beforeGC.heapStatistics.usedHeapSize - prev;
    prev = g.afterGC.heapStatistics.usedHeapSize;
  }
  return total + usedAtEnd - prev;
}

/** One probe window: SIGUSR2, the load, SIGUSR2, then the file the probe wrote. */
async function probeWindow(c: LoadCtx, fixed: boolean, n: number, profileDir: string): Promise<{ js: JsProfile; cpu: CpuSplit }> {
  process.kill(c.pid, 'SIGUSR2');
  const { requests, a, b } = await pinnedFor(c, fixed, async () => {
    const a = threadTimes(c.pid);
    const requests = await load(c, fixed);
    return { requests, a, b: threadTimes(c.pid) };
  });
  process.kill(c.pid, 'SIGUSR2');
  const file = join(profileDir, `window-${n}.json`);
  await waitUntil(() => existsSync(file), 30_000, `the probe's ${file}`, 50);
  const w = JSON.parse(readFileSync(file, 'utf8')) as { profile: CpuProfile & { error?: string }; gc: { statistics: GcEntry[] }; usedAtStart: number; usedAtEnd: number };
  if (w.profile.error !== undefined) throw new Error(`the probe's CPU profile failed: ${w.profile.error}`);
  const gcs: Record<string, number> = {};
  let gcUs = 0;
  for (const g of w.gc.statistics) {
    gcs[g.gcType] = (gcs[g.gcType] ?? 0) + 1;
    gcUs += g.cost;
  }
  return {
    js: { requests, ...summarizeProfile(w.profile, requests), allocBytesPerRequest: allocatedBytes(w.usedAtStart, w.usedAtEnd, w.gc.statistics) / requests, gcs, gcUsPerRequest: gcUs / requests },
    cpu: cpuSplit(c.pid, a, b, requests),
  };
}

// ---------------------------------------------------------------- starting the paths

// ---------------------------------------------------------------- main

interface PathResult {
  path: PathName;
  clean: Measure<PathName>;
  full: { cpu: CpuSplit; js: JsProfile | null };
  fixed: { cpu: CpuSplit; js: JsProfile | null };
  perf: PerfSummary | null;
  syscalls: { full: Syscalls; fixed: Syscalls };
}

async function main(): Promise<void> {
  const o = options();
  const perf = o.perf && hasTool('perf');
  requireTools(['wrk', 'nginx', 'strace', ...(o.paths.includes('haproxy') ? ['haproxy'] : [])]);
  const info = machine();
  warnIfBusy(info);
  const pin = pinning(argv.pin);
  const dir = tempDir('skein-bench-profile-');
  const say = (s: string) => process.stdout.write(s + '\n');
  say(`proxy profile on ${info.cpus} x ${info.cpuModel}, node ${info.node}, load average ${info.loadavg1}; ${pin.text}`);
  say(`windows of ${o.duration}s: wrk -t1 -c${o.connections} (full load) and paced wrk at ${o.rps} req/s over ${o.latencyConnections} connections; strace over ${o.straceRequests} and ${o.straceFixedRequests} requests; profiler interval ${o.intervalUs} µs${perf ? '' : '; perf: not used'}`);
  const scripts = writeWrkScripts(dir.path, o);
  const started: Array<{ child: Started['child'] }> = [];
  const controls: Control[] = [];
  const results: PathResult[] = [];
  try {
    const backend = await startApp(join(dir.path, 'backend'), pin.backend);
    started.push(backend);
    const backendPid = backend.child.pid as number;
    for (const name of o.paths) {
      let s: Started;
      const profileDir = join(dir.path, `probe-${name}`);
      if (name === 'skein') {
        execFileSync('mkdir', ['-p', profileDir]);
        // The probe is loaded into the proxy (not the control plane) through NODE_OPTIONS.
        const probe = join(DIST, 'bench', 'proxy-profile-probe.js');
        const sk = await startSkeinService(pin, backend.port, argv['proxy-log-level'], null, [], {
          NODE_OPTIONS: `${process.env['NODE_OPTIONS'] ?? ''} --import=${probe}`.trim(),
          SKEIN_PROFILE_DIR: profileDir,
          SKEIN_PROFILE_INTERVAL_US: String(o.intervalUs),
        });
        controls.push(sk.control);
        s = sk;
      } else {
        s = await startHaproxy(dir.path, 'haproxy', pin.proxy, (port) => `frontend bench\n  bind 127.0.0.1:${port}\n  default_backend backend\n\nbackend backend\n  http-reuse always\n  server b1 127.0.0.1:${backend.port}\n`);
      }
      started.push(s);
      const pid = s.child.pid as number;
      const c: LoadCtx = { pin, backendPid, port: s.port, pid, o, dir: dir.path, scripts };
      process.stdout.write(`${name}: CPU per request (bench/proxy.ts's measure) ... `);
      const clean = await measure({ name, port: s.port, pids: [pid] }, 0, { pin, backendPid, ourRoots: () => [...roots], scripts, o });
      say(`${r1(clean.proxyCpuUsPerReq)} µs at full load (${Math.round(clean.rps)} req/s), ${r1(clean.proxyCpuUsPerReqFixed)} µs at ${o.rps} req/s`);
      const windows: Array<{ cpu: CpuSplit; js: JsProfile | null }> = [];
      for (const fixed of [false, true]) {
        process.stdout.write(`${name}: ${name === 'skein' ? 'CPU profile, allocation and ' : ''}user/kernel split, ${fixed ? `${o.rps} req/s` : 'full load'} ... `);
        if (name === 'skein') windows.push(await probeWindow(c, fixed, windows.length, profileDir));
        else {
          const r = await pinnedFor(c, fixed, async () => {
            const a = threadTimes(pid);
            const requests = await load(c, fixed);
            return cpuSplit(pid, a, threadTimes(pid), requests);
          });
          windows.push({ cpu: r, js: null });
        }
        const w = windows[windows.length - 1] as (typeof windows)[number];
        say(`user ${r1(w.cpu.userUs)} + kernel ${r1(w.cpu.sysUs)} µs per request`);
      }
      let perfResult: PerfSummary | null = null;
      if (perf) {
        process.stdout.write(`${name}: perf record at full load ... `);
        perfResult = await perfWindow(c, Math.min(o.duration, 4));
        say(`${perfResult.samples} samples`);
      }
      process.stdout.write(`${name}: strace -c -f over ${o.straceRequests} requests at full load, ${o.straceFixedRequests} at ${o.rps} req/s ... `);
      const full = await straceWindow(c, false, o.straceRequests);
      const fixedCalls = await straceWindow(c, true, o.straceFixedRequests);
      say(`${r1(full.totalPerRequest)} and ${r1(fixedCalls.totalPerRequest)} syscalls per request`);
      results.push({ path: name, clean, full: windows[0] as PathResult['full'], fixed: windows[1] as PathResult['fixed'], perf: perfResult, syscalls: { full, fixed: fixedCalls } });
    }
    report(o, info, results);
  } finally {
    for (const s of started.reverse()) await stopTree(s.child, 10_000);
    for (const c of controls) await stopControl(c);
    dir.remove();
  }
}

function hasTool(t: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- reporting

const LABEL: Record<PathName, string> = { skein: 'skein proxy', haproxy: 'HAProxy' };
const n2 = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? '-' : v >= 10 ? String(r1(v)) : String(r2(v)));

function report(o: Options, info: ReturnType<typeof machine>, results: PathResult[]): void {
  const md: string[] = ['', 'Markdown for docs/benchmarks.md:', ''];
  /** A table on the console and in markdown; the first `text` columns are left-aligned there. */
  const both = (rows: Array<Array<string | number>>, title: string, header: string[], text = 1) => {
    table(title, header, rows);
    const align = header.map((_, i) => (i < text ? ' --- |' : ' ---: |')).join('');
    md.push(`**${title}**`, '', `| ${header.join(' | ')} |`, `|${align}`, ...rows.map((r) => `| ${r.join(' | ')} |`), '');
  };

  both(
    results.map((r) => [
      LABEL[r.path],
      Math.round(r.clean.rps),
      n2(r.clean.proxyCpuUsPerReq),
      n2(r.clean.proxyCpuUsPerReqFixed),
      `${n2(r.full.cpu.userUs)} / ${n2(r.full.cpu.sysUs)}`,
      `${n2(r.fixed.cpu.userUs)} / ${n2(r.fixed.cpu.sysUs)}`,
      Object.entries(r.full.cpu.byThread).filter(([, us]) => us >= 0.05).sort((a, b) => b[1] - a[1]).map(([t, us]) => `${t} ${n2(us)}`).join(', '),
      `${n2(r.full.cpu.minorFaults)} / ${n2(r.fixed.cpu.minorFaults)}`,
      r.perf === null ? '-' : `${n2(r.perf.eventsPerRequest['context-switches'])} / ${n2(r.perf.eventsPerRequest['cpu-migrations'])}`,
      n2(r.clean.peakRssMB),
    ]),
    'CPU per request (µs)',
    ['path', 'req/s', 'CPU µs/req, full load', `CPU µs/req @${o.rps}`, 'user / kernel, full', `user / kernel @${o.rps}`, 'by thread, full (µs/req)', `page faults/req, full / @${o.rps}`, 'context switches / migrations per req, full', 'peak RSS MB'],
  );

  const names = new Set<string>();
  for (const r of results) for (const w of [r.syscalls.full, r.syscalls.fixed]) for (const [s, v] of Object.entries(w.perRequest)) if (v >= 0.01) names.add(s);
  const sys = (r: PathResult | undefined, w: 'full' | 'fixed', s: string) => n2(r?.syscalls[w].perRequest[s] ?? 0);
  const sk = results.find((r) => r.path === 'skein');
  const ha = results.find((r) => r.path === 'haproxy');
  const rank = (s: string) => -Math.max(...results.map((r) => r.syscalls.full.perRequest[s] ?? 0));
  both(
    [
      ...[...names].sort((a, b) => rank(a) - rank(b)).map((s) => [s, sys(sk, 'full', s), sys(ha, 'full', s), sys(sk, 'fixed', s), sys(ha, 'fixed', s)]),
      ['total', n2(sk?.syscalls.full.totalPerRequest), n2(ha?.syscalls.full.totalPerRequest), n2(sk?.syscalls.fixed.totalPerRequest), n2(ha?.syscalls.fixed.totalPerRequest)],
      ['of which failed (EAGAIN...)', n2(sk?.syscalls.full.errorsPerRequest), n2(ha?.syscalls.full.errorsPerRequest), n2(sk?.syscalls.fixed.errorsPerRequest), n2(ha?.syscalls.fixed.errorsPerRequest)],
    ],
    `Syscalls per request (strace -c -f over ${o.straceRequests} requests at full load, ${o.straceFixedRequests} at ${o.rps} req/s)`,
    ['syscall', 'skein, full', 'HAProxy, full', `skein @${o.rps}`, `HAProxy @${o.rps}`],
  );

  if (sk?.full.js != null && sk.fixed.js != null) {
    const f = sk.full.js;
    const x = sk.fixed.js;
    const bucketNames = [...new Set([...f.buckets.map((b) => b.bucket), ...x.buckets.map((b) => b.bucket)])];
    const get = (j: JsProfile, b: string) => j.buckets.find((e) => e.bucket === b);
    both(
      [
        ...bucketNames.map((b) => [b, n2(get(f, b)?.us), n2(get(f, b)?.percent), n2(get(x, b)?.us), n2(get(x, b)?.percent)]),
        ['main thread busy (sampled)', n2(f.busyUs), '100', n2(x.busyUs), '100'],
      ],
      `skein: the main thread's CPU profile by bucket (self time; ${o.intervalUs} µs sampling)`,
      ['bucket', 'µs/req, full', '% full', `µs/req @${o.rps}`, `% @${o.rps}`],
    );
    both(
      f.top.map((t, i) => [String(i + 1), `\`${t.fn}\``, `\`${t.where}\``, t.bucket, n2(t.us), n2(t.percent)]),
      'skein: top 25 functions by self time, full load',
      ['#', 'function', 'where', 'bucket', 'µs/req', '%'],
      4,
    );
    both(
      [
        ['bytes allocated per request (V8 heap)', Math.round(f.allocBytesPerRequest), Math.round(x.allocBytesPerRequest)],
        ['GCs in the window', Object.entries(f.gcs).map(([k, v]) => `${k} ${v}`).join(', '), Object.entries(x.gcs).map(([k, v]) => `${k} ${v}`).join(', ')],
        ['GC time per request (µs)', n2(f.gcUsPerRequest), n2(x.gcUsPerRequest)],
        ['requests in the window', f.requests, x.requests],
      ],
      'skein: allocation and GC',
      ['measure', 'full load', `@${o.rps}`],
      1,
    );
  }
  for (const r of results) {
    if (r.perf === null) continue;
    both(
      r.perf.byObject.slice(0, 8).map((b) => [b.object, n2(b.percent)]),
      `${LABEL[r.path]}: perf record -e cpu-clock at full load, share of its CPU by object (${r.perf.samples} samples)`,
      ['object', '%'],
    );
    const cpu = r.clean.proxyCpuUsPerReq;
    const paths = [...new Set(Object.values(KERNEL_PATHS))];
    both(
      paths.map((k) => [k, n2(r.perf?.kernel[k] ?? 0), n2(((r.perf?.kernel[k] ?? 0) / 100) * cpu)]),
      `${LABEL[r.path]}: the kernel's work by path (perf call graphs: share of samples with it on the stack; µs/req = share x ${n2(cpu)} µs)`,
      ['path', '%', 'µs/req'],
    );
    both(
      r.perf.top.map((t) => [t.object, `\`${t.symbol}\``, n2(t.percent)]),
      `${LABEL[r.path]}: top native symbols (perf)`,
      ['object', 'symbol', '%'],
      2,
    );
  }
  process.stdout.write(md.join('\n') + '\n');
  const result = { machine: info, options: o, results };
  if (argv.json !== undefined) {
    writeFileSync(argv.json, JSON.stringify(result, null, 2) + '\n');
    process.stdout.write(`results written to ${argv.json}\n`);
  }
  printResult('proxy-profile', result);
}

// Run as a program (not when a test imports the functions above).
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) runMain(main);
