/**
 * gRPC unary calls through Skein, side by side with the same calls direct and through HAProxy in
 * h2 mode (issue 17, "Targets": "gRPC unary: requests/s and CPU per request against direct and
 * HAProxy"):
 *
 *   node dist/bench/grpc.js [--concurrency 32] [--seconds 5] [--rounds 3]
 *
 * The backend is the grpc-js Echo server of test/fixtures/grpc-server.mjs (its own process). Skein
 * is `skein proxy --no-control` with an inbound listener in front of it (the HTTP/2 driver; the
 * calls' authority is the service, `app`); HAProxy has `proto h2` on its bind and its server and
 * runs one thread. The client is @grpc/grpc-js in this process: one channel per side, a closed
 * loop of unary `Say` calls with CONCURRENCY calls in flight for SECONDS. Rounds run the three
 * sides in turn (the order rotated each round); figures are medians over rounds:
 * - requests/s (calls that succeeded per second of the loop);
 * - the proxy's CPU per call (user + system of its process tree, from /proc);
 * - this process's CPU per call (the client: if it is near one core's worth, the client is the
 *   bottleneck, not the proxy), and the backend's (the same for every side: a check too);
 * - p50 and p99 of the calls' latency;
 * - requests/s as a ratio to direct, and CPU per call as a ratio to HAProxy.
 * Nothing is pinned. Prints the load average at the start and the end, a table, and one JSON line
 * (`{"bench":"grpc",...}`).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { ROOT, percentile, printResult, round, runMain, table, track } from './lib.js';
import { dash, firstJsonLine, posInt, r1, r2, requireTools, roots, startHaproxyH2, startSkeinInbound, stopTree, thousands, treeCpuSeconds } from './proxy-lib.js';

const o = parseArgs({ options: { concurrency: { type: 'string', default: '32' }, seconds: { type: 'string', default: '5' }, rounds: { type: 'string', default: '3' } } }).values;
const CONCURRENCY = posInt(o.concurrency, '--concurrency');
const SECONDS = posInt(o.seconds, '--seconds');
const ROUNDS = posInt(o.rounds, '--rounds');
/** The service the calls name (their authority); Skein's inbound workload is its instance. */
const SERVICE = 'app';
/** Calls on each channel before each round's loop (connection up, JIT warm). */
const WARMUP_CALLS = 500;

const fixture: any = await import(join(ROOT, 'test', 'fixtures', 'grpc-server.mjs'));
const grpc: any = (await import('@grpc/grpc-js')).default;
const Echo = fixture.echoPackage().Echo;

interface Side {
  name: 'direct' | 'skein' | 'haproxy';
  client: any;
  /** The proxy's root pid (null: direct). */
  pid: number | null;
}

interface Round {
  side: Side['name'];
  round: number;
  calls: number;
  errors: number;
  rps: number;
  proxyCpuUs: number;
  clientCpuUs: number;
  backendCpuUs: number;
  p50Ms: number;
  p99Ms: number;
}

/** One unary Say; resolves with the error (null on success). */
function say(client: any): Promise<Error | null> {
  return new Promise((resolve) => client.Say({ text: 'hello' }, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (e: Error | null) => resolve(e ?? null)));
}

const cpuSecondsOfThisProcess = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

/** A closed loop: CONCURRENCY callers, each starting its next call when the last one ends, for SECONDS. */
async function closedLoop(s: Side, roundNo: number, backendPid: number): Promise<Round> {
  for (let i = 0; i < WARMUP_CALLS; i += CONCURRENCY) {
    const errs = (await Promise.all(Array.from({ length: Math.min(CONCURRENCY, WARMUP_CALLS - i) }, () => say(s.client)))).filter((e) => e !== null);
    if (errs.length > 0) throw new Error(`${s.name}: warm-up call failed: ${errs[0]?.message}`);
  }
  const lat: number[] = [];
  let errors = 0;
  let firstError = null as Error | null;
  const proxyCpu = () => (s.pid === null ? 0 : treeCpuSeconds(s.pid));
  const p0 = proxyCpu();
  const b0 = treeCpuSeconds(backendPid);
  const c0 = cpuSecondsOfThisProcess();
  const t0 = performance.now();
  const end = t0 + SECONDS * 1000;
  const caller = async () => {
    while (performance.now() < end) {
      const t = performance.now();
      const e = await say(s.client);
      if (e === null) lat.push(performance.now() - t);
      else {
        errors++;
        firstError ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, caller));
  const elapsed = (performance.now() - t0) / 1000;
  const clientCpu = cpuSecondsOfThisProcess() - c0;
  const pCpu = proxyCpu() - p0;
  const bCpu = treeCpuSeconds(backendPid) - b0;
  if (lat.length === 0) throw new Error(`${s.name}: every call failed, the first with: ${firstError?.message}`);
  const n = lat.length;
  return {
    side: s.name,
    round: roundNo,
    calls: n,
    errors,
    rps: n / elapsed,
    proxyCpuUs: s.pid === null ? NaN : (pCpu / n) * 1e6,
    clientCpuUs: (clientCpu / n) * 1e6,
    backendCpuUs: (bCpu / n) * 1e6,
    p50Ms: percentile(lat, 50),
    p99Ms: percentile(lat, 99),
  };
}

const load = () => loadavg().map((v) => round(v, 2));

async function main(): Promise<void> {
  requireTools(['haproxy']);
  const loadStart = load();
  console.log(`load average at start: ${loadStart.join(' ')}`);
  const dir = mkdtempSync(join(tmpdir(), 'skein-bench-grpc-'));
  const stops: Array<() => Promise<void>> = [];
  try {
    // The backend: its own process, a group leader (so stopTree reaches it), exiting when its stdin closes.
    const backend = track(spawn(process.execPath, [join(ROOT, 'test', 'fixtures', 'grpc-server.mjs'), 'echo'], { stdio: ['pipe', 'pipe', 'inherit'], detached: true }));
    if (backend.pid !== undefined) roots.add(backend.pid);
    stops.push(() => stopTree(backend));
    const bport = await firstJsonLine(backend, (j) => (typeof j['port'] === 'number' ? j['port'] : null));
    const proxy = await startSkeinInbound(null, bport, SERVICE);
    stops.push(() => stopTree(proxy.child));
    const ha = await startHaproxyH2(dir, null, bport);
    stops.push(() => stopTree(ha.child));
    const channel = (port: number) => new Echo(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': SERVICE });
    const sides: Side[] = [
      { name: 'direct', client: channel(bport), pid: null },
      { name: 'skein', client: channel(proxy.port), pid: proxy.child.pid ?? null },
      { name: 'haproxy', client: channel(ha.port), pid: ha.child.pid ?? null },
    ];
    for (const s of sides) stops.push(async () => s.client.close());
    const all: Round[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      for (let i = 0; i < sides.length; i++) {
        const s = sides[(r + i) % sides.length] as Side;
        const m = await closedLoop(s, r, backend.pid as number);
        all.push(m);
        console.log(`round ${r + 1}/${ROUNDS} ${s.name}: ${thousands(m.rps)} calls/s, proxy ${dash(m.proxyCpuUs, Math.round)} us/call, client ${Math.round(m.clientCpuUs)} us/call, backend ${Math.round(m.backendCpuUs)} us/call, p50 ${r2(m.p50Ms)} ms, p99 ${r2(m.p99Ms)} ms${m.errors > 0 ? `, ${m.errors} errors` : ''}`);
      }
    }
    const med = (name: Side['name'], f: (m: Round) => number) => percentile(all.filter((m) => m.side === name).map(f), 50);
    const rows = sides.map((s) => ({
      side: s.name,
      rps: med(s.name, (m) => m.rps),
      proxyCpuUs: med(s.name, (m) => m.proxyCpuUs),
      clientCpuUs: med(s.name, (m) => m.clientCpuUs),
      backendCpuUs: med(s.name, (m) => m.backendCpuUs),
      p50Ms: med(s.name, (m) => m.p50Ms),
      p99Ms: med(s.name, (m) => m.p99Ms),
      errors: all.filter((m) => m.side === s.name).reduce((n, m) => n + m.errors, 0),
    }));
    const direct = rows.find((x) => x.side === 'direct');
    const haproxy = rows.find((x) => x.side === 'haproxy');
    const out = rows.map((x) => ({
      ...x,
      rps: Math.round(x.rps),
      proxyCpuUs: r1(x.proxyCpuUs),
      clientCpuUs: r1(x.clientCpuUs),
      backendCpuUs: r1(x.backendCpuUs),
      p50Ms: r2(x.p50Ms),
      p99Ms: r2(x.p99Ms),
      rpsVsDirect: r2(x.rps / (direct?.rps ?? NaN)),
      cpuVsHaproxy: x.side === 'direct' ? NaN : r2(x.proxyCpuUs / (haproxy?.proxyCpuUs ?? NaN)),
    }));
    const loadEnd = load();
    table(
      `gRPC unary Say, ${CONCURRENCY} calls in flight over one channel, ${SECONDS} s per side and round, medians of ${ROUNDS} rounds`,
      ['side', 'calls/s', 'x direct', 'proxy CPU us/call', 'x haproxy', 'client CPU us/call', 'backend CPU us/call', 'p50 ms', 'p99 ms', 'errors'],
      out.map((x) => [x.side, thousands(x.rps), dash(x.rpsVsDirect, r2), dash(x.proxyCpuUs), dash(x.cpuVsHaproxy, r2), dash(x.clientCpuUs), dash(x.backendCpuUs), dash(x.p50Ms, r2), dash(x.p99Ms, r2), x.errors]),
    );
    console.log(`load average at start: ${loadStart.join(' ')}; at end: ${loadEnd.join(' ')}`);
    // NaN (no proxy on the direct side) prints as null in the JSON line.
    printResult('grpc', { options: { concurrency: CONCURRENCY, seconds: SECONDS, rounds: ROUNDS }, loadStart, loadEnd, rows: out, rounds: all.map((m) => ({ ...m, rps: Math.round(m.rps), proxyCpuUs: r1(m.proxyCpuUs), clientCpuUs: r1(m.clientCpuUs), backendCpuUs: r1(m.backendCpuUs), p50Ms: r2(m.p50Ms), p99Ms: r2(m.p99Ms) })) });
  } finally {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

runMain(main);
