/**
 * The proxy's memory (issue 16: peak RSS under load with one workload <= 70 MB, each further
 * workload <= +2 MB): `skein proxy` (bin/skein.js, so with its 4 MB semi-spaces) with 1, 10 and 50
 * workloads, each path in a fresh proxy:
 *
 *   npm run build && node dist/bench/proxy-memory.js [--workloads 1,10,50] [--paths inbound,mesh]
 *       [--duration 3s] [--connections 32] [--concurrent 8] [--json out.json]
 *
 * - `inbound`: `--no-control`, workload i an inbound listener in front of the app (one nginx
 *   worker); wrk at each inbound listener.
 * - `mesh`: a control plane (in-memory store) where service svc-i has one endpoint, workload i's
 *   inbound listener; workload i has an outbound listener too, and wrk sends `Host: svc-i` to it:
 *   every request goes outbound -> the control plane's endpoint -> inbound -> app, through the
 *   watch stream's view, with the proxy announced to the control plane (which scrapes it).
 *
 * For each: RSS at rest (every route answered once, then 1 s idle), then every workload under load
 * (--concurrent workloads at a time, one `wrk -t1` each, --connections in all, for --duration per
 * batch), then the peak (VmHWM: the whole life of the process) and the RSS after. Anonymous and
 * file-backed RSS are printed apart (RssAnon: heaps and buffers; RssFile: node's code). The
 * per-workload increment is (peak(N) - peak(1)) / (N - 1), against the targets with
 * verdicts. SKEIN_BENCH_BIN runs another build's proxy (side by side: run it twice).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { api, machine, printResult, round, runMain, sleep, startControl, table, tempDir, waitUntil, warnIfBusy, type Control } from './lib.js';
import { BODY, DONE_LUA, portOf, posInt, requireTools, roots, run, seconds, startApp, startSkeinProxy, stopControl, stopTree, type SkeinProxy, type WrkOut } from './proxy-lib.js';

/** Issue 16's memory targets. */
export const MEMORY_TARGETS = { peakOneWorkloadMb: 70, perWorkloadMb: 2 } as const;

export type MemoryPath = 'inbound' | 'mesh';
export const MEMORY_PATHS: readonly MemoryPath[] = ['inbound', 'mesh'];

/** What /proc/PID/status says of a process's memory, in kB. */
export interface ProcMemory {
  /** VmRSS: resident now. */
  readonly rssKb: number;
  /** VmHWM: the peak of VmRSS over the process's life. */
  readonly hwmKb: number;
  /** RssAnon: heaps, stacks, buffers. */
  readonly anonKb: number;
  /** RssFile: mapped files (node's own code, shared libraries). */
  readonly fileKb: number;
}

/** Reads /proc/PID/status's memory lines; throws naming the line that is missing. */
export function parseProcStatus(text: string): ProcMemory {
  const kb = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(text);
    if (m === null) throw new Error(`/proc/PID/status has no "${name}: N kB" line`);
    return Number(m[1]);
  };
  return { rssKb: kb('VmRSS'), hwmKb: kb('VmHWM'), anonKb: kb('RssAnon'), fileKb: kb('RssFile') };
}

/**
 * The workloads put under load together: batches of at most `concurrent` workload indexes (0-based),
 * each workload with its share of `connections` (at least 1), so that every batch holds about
 * `connections` connections whatever the number of workloads.
 */
export function loadBatches(workloads: number, concurrent: number, connections: number): Array<Array<{ readonly index: number; readonly connections: number }>> {
  if (!Number.isInteger(workloads) || workloads < 1) throw new Error(`workloads must be a whole number of at least 1, got ${workloads}`);
  if (!Number.isInteger(concurrent) || concurrent < 1) throw new Error(`--concurrent must be a whole number of at least 1, got ${concurrent}`);
  const out: Array<Array<{ index: number; connections: number }>> = [];
  for (let start = 0; start < workloads; start += concurrent) {
    const size = Math.min(concurrent, workloads - start);
    const each = Math.max(1, Math.floor(connections / size));
    out.push(Array.from({ length: size }, (_, k) => ({ index: start + k, connections: each })));
  }
  return out;
}

/** One proxy's figures: a path with N workloads. */
export interface MemoryRow {
  readonly path: MemoryPath;
  readonly workloads: number;
  /** In MB: /proc's kB / 1000 (as docs/benchmarks.md's other RSS figures). */
  readonly restMb: number;
  readonly peakMb: number;
  readonly afterMb: number;
  readonly restAnonMb: number;
  readonly restFileMb: number;
  readonly requests: number;
  readonly errors: number;
}

export interface MemoryVerdict {
  readonly path: MemoryPath;
  readonly workloads: number;
  readonly peakMb: number;
  /** (peak(N) - peak(1)) / (N - 1); null for N = 1. */
  readonly perWorkloadPeakMb: number | null;
  /** The same at rest. */
  readonly perWorkloadRestMb: number | null;
  /** What is checked, e.g. "peak <= 70 MB" or "+<= 2 MB per workload". */
  readonly target: string;
  readonly ok: boolean;
}

/**
 * The targets' verdicts for every row: one workload's peak against 70 MB, N workloads' increment
 * per workload over the same path's one-workload row against 2 MB. Throws when a path with several
 * workloads has no one-workload row to compare with.
 */
export function memoryVerdicts(rows: readonly MemoryRow[], targets: { readonly peakOneWorkloadMb: number; readonly perWorkloadMb: number } = MEMORY_TARGETS): MemoryVerdict[] {
  return rows.map((r) => {
    if (r.workloads === 1) {
      return { path: r.path, workloads: 1, peakMb: r.peakMb, perWorkloadPeakMb: null, perWorkloadRestMb: null, target: `peak <= ${targets.peakOneWorkloadMb} MB`, ok: r.peakMb <= targets.peakOneWorkloadMb };
    }
    const one = rows.find((o) => o.path === r.path && o.workloads === 1);
    if (one === undefined) throw new Error(`${r.path} with ${r.workloads} workloads: no run with 1 workload on that path to compare with (include 1 in --workloads)`);
    const perPeak = (r.peakMb - one.peakMb) / (r.workloads - 1);
    const perRest = (r.restMb - one.restMb) / (r.workloads - 1);
    return { path: r.path, workloads: r.workloads, peakMb: r.peakMb, perWorkloadPeakMb: perPeak, perWorkloadRestMb: perRest, target: `<= +${targets.perWorkloadMb} MB per workload`, ok: perPeak <= targets.perWorkloadMb };
  });
}

/** `1,10,50` -> [1, 10, 50] (distinct, ascending); throws naming the flag. */
export function parseWorkloadCounts(text: string): number[] {
  const parts = text.split(',').map((s) => s.trim());
  const ns = parts.map(Number);
  const bad = parts.find((s, i) => !/^\d{1,4}$/.test(s) || (ns[i] as number) < 1 || (ns[i] as number) > 500);
  if (bad !== undefined) throw new Error(`--workloads: "${bad}" is not a whole number from 1 to 500 (give e.g. 1,10,50)`);
  return [...new Set(ns)].sort((a, b) => a - b);
}

// ---------------------------------------------------------------- running it

const mb = (kb: number) => round(kb / 1000, 1);

function memoryOf(pid: number): ProcMemory {
  return parseProcStatus(readFileSync(`/proc/${pid}/status`, 'utf8'));
}

/** One GET with `Host: host` on a fresh connection: status and body. */
function get(port: number, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', agent: false, headers: { host, connection: 'close' }, timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

interface Target {
  readonly port: number;
  readonly host: string;
}

async function serving(targets: readonly Target[], proxy: SkeinProxy): Promise<void> {
  for (const t of targets) {
    let last = '';
    await waitUntil(
      async () => {
        if (proxy.child.exitCode !== null) throw new Error(`skein proxy exited:\n${proxy.tail()}`);
        const r = await get(t.port, t.host).catch((e: Error) => ({ status: 0, body: e.message }));
        last = `${r.status} ${r.body.slice(0, 200)}`;
        return r.status === 200 && r.body === BODY;
      },
      30_000,
      `127.0.0.1:${t.port} (Host: ${t.host}) to answer like the app (last: ${last})`,
      50,
    );
  }
}

async function wrkAt(t: Target, connections: number, secs: number, script: string): Promise<WrkOut> {
  const out = await run(null, 'wrk', ['-t1', `-c${connections}`, `-d${secs}s`, '--timeout', '5s', '-s', script, '-H', `Host: ${t.host}`, `http://127.0.0.1:${t.port}/`]);
  const line = out.split('\n').find((l) => l.startsWith('SKEIN_WRK '));
  if (line === undefined) throw new Error(`wrk printed no result:\n${out}`);
  return JSON.parse(line.slice('SKEIN_WRK '.length)) as WrkOut;
}

interface Options {
  readonly secs: number;
  readonly connections: number;
  readonly concurrent: number;
  readonly appPort: number;
  readonly script: string;
}

async function measureOne(path: MemoryPath, n: number, o: Options): Promise<MemoryRow> {
  const names = Array.from({ length: n }, (_, i) => `w-${i + 1}`);
  let control: Control | null = null;
  let proxy: SkeinProxy | null = null;
  try {
    const args: string[] = ['--access-log', 'off'];
    if (path === 'mesh') {
      control = await startControl({ dataDir: 'none' });
      roots.add(control.pid);
      args.push('--control', control.url);
      names.forEach((name, i) => args.push('--workload', `name=${name},service=svc-${i + 1},outbound=127.0.0.1:0,inbound=127.0.0.1:0,app=127.0.0.1:${o.appPort}`));
    } else {
      args.push('--no-control');
      for (const name of names) args.push('--workload', `name=${name},inbound=127.0.0.1:0,app=127.0.0.1:${o.appPort}`);
    }
    proxy = await startSkeinProxy(null, args, 'info');
    const p = proxy;
    const targets: Target[] = names.map((name, i) => {
      const w = p.workloads.find((x) => x.name === name);
      const at = path === 'mesh' ? w?.outbound : w?.inbound;
      if (at == null) throw new Error(`the proxy reported no ${path === 'mesh' ? 'outbound' : 'inbound'} listener for ${name}:\n${p.tail()}`);
      return { port: portOf(at), host: path === 'mesh' ? `svc-${i + 1}` : 'app' };
    });
    if (control !== null) {
      // Service svc-i's one endpoint: workload i's inbound listener (the proxy learns it from its watch stream).
      for (const [i, name] of names.entries()) {
        const inbound = p.workloads.find((x) => x.name === name)?.inbound;
        if (inbound == null) throw new Error(`the proxy reported no inbound listener for ${name}:\n${p.tail()}`);
        const reg = await api(control.url, 'PUT', `/v1/services/svc-${i + 1}/instances/${name}`, { address: '127.0.0.1', port: portOf(inbound) });
        if (reg.status !== 201 && reg.status !== 200) throw new Error(`registering svc-${i + 1}: HTTP ${reg.status} ${JSON.stringify(reg.body)}`);
      }
    }
    await serving(targets, p);
    await sleep(1000); // at rest: every route has answered once
    const pid = p.child.pid as number;
    const rest = memoryOf(pid);
    let requests = 0;
    let errors = 0;
    for (const batch of loadBatches(n, o.concurrent, o.connections)) {
      const outs = await Promise.all(batch.map((b) => wrkAt(targets[b.index] as Target, b.connections, o.secs, o.script)));
      for (const w of outs) {
        requests += w.requests;
        errors += w.errors.connect + w.errors.read + w.errors.write + w.errors.status + w.errors.timeout;
      }
    }
    const after = memoryOf(pid);
    return { path, workloads: n, restMb: mb(rest.rssKb), peakMb: mb(after.hwmKb), afterMb: mb(after.rssKb), restAnonMb: mb(rest.anonKb), restFileMb: mb(rest.fileKb), requests, errors };
  } finally {
    if (proxy !== null) await stopTree(proxy.child);
    if (control !== null) await stopControl(control);
  }
}

async function main(): Promise<void> {
  const { values: v } = parseArgs({
    options: {
      workloads: { type: 'string', default: '1,10,50' },
      paths: { type: 'string', default: MEMORY_PATHS.join(',') },
      duration: { type: 'string', default: '3s' },
      connections: { type: 'string', default: '32' },
      concurrent: { type: 'string', default: '8' },
      json: { type: 'string' },
    },
    strict: true,
  });
  const counts = parseWorkloadCounts(v.workloads);
  if (!counts.includes(1)) throw new Error('--workloads must include 1 (the increments per workload are measured against it)');
  const paths = v.paths.split(',').map((s) => s.trim());
  const badPath = paths.find((p) => !(MEMORY_PATHS as readonly string[]).includes(p));
  if (badPath !== undefined) throw new Error(`--paths: "${badPath}" is not one of ${MEMORY_PATHS.join(', ')}`);
  requireTools(['nginx', 'wrk']);
  const info = machine();
  warnIfBusy(info);
  const dir = tempDir('skein-bench-memory-');
  const app = await startApp(join(dir.path, 'app'), null, 'the app (nginx)');
  roots.add(app.child.pid as number);
  const script = join(dir.path, 'done.lua');
  writeFileSync(script, DONE_LUA);
  const o: Options = { secs: seconds(v.duration, '--duration'), connections: posInt(v.connections, '--connections'), concurrent: posInt(v.concurrent, '--concurrent'), appPort: app.port, script };
  const rows: MemoryRow[] = [];
  try {
    for (const path of paths as MemoryPath[]) {
      for (const n of counts) {
        process.stdout.write(`${path}, ${n} workload${n === 1 ? '' : 's'}: `);
        const r = await measureOne(path, n, o);
        process.stdout.write(`rest ${r.restMb} MB, peak ${r.peakMb} MB, after ${r.afterMb} MB, ${r.requests} requests, ${r.errors} errors (load average ${round(machine().loadavg1, 2)})\n`);
        rows.push(r);
      }
    }
  } finally {
    await stopTree(app.child);
  }
  const verdicts = memoryVerdicts(rows);
  table(
    `skein proxy's memory (MB = 1000 kB of /proc/PID/status; ${info.node}, ${info.cpus} CPUs, load average at the start ${info.loadavg1})`,
    ['path', 'workloads', 'rest', 'rest anon/file', 'peak', 'after', 'per workload: rest', 'per workload: peak', 'target', 'verdict', 'requests', 'errors'],
    rows.map((r, i) => {
      const vd = verdicts[i] as MemoryVerdict;
      return [r.path, r.workloads, r.restMb, `${r.restAnonMb} / ${r.restFileMb}`, r.peakMb, r.afterMb, vd.perWorkloadRestMb === null ? '-' : `+${round(vd.perWorkloadRestMb, 2)}`, vd.perWorkloadPeakMb === null ? '-' : `+${round(vd.perWorkloadPeakMb, 2)}`, vd.target, vd.ok ? 'met' : 'NOT met', r.requests, r.errors];
    }),
  );
  const result = { machine: info, options: { durationS: o.secs, connections: o.connections, concurrent: o.concurrent }, targets: MEMORY_TARGETS, rows, verdicts };
  if (v.json !== undefined) writeFileSync(v.json, JSON.stringify({ bench: 'proxy-memory', ...result }, null, 2) + '\n');
  printResult('proxy-memory', result);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) runMain(main);
