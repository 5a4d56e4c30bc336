/**
 * Two builds of `skein proxy` side by side, in one run, in alternating rounds against the same
 * backend: the CPU each spends per request, and its latency at a fixed, open-loop rate. For a
 * change to the proxy's request path (issue 12 §7: before and after, on the same Node, then the
 * old build on its old Node against the new build on the new one):
 *
 *   git worktree add /tmp/old <commit> && (cd /tmp/old && npm ci && npx tsc -p tsconfig.json)
 *   SKEIN_BENCH_BIN=/tmp/old/bin/skein.js node dist/bench/proxy-ab.js [--rounds 6]
 *   SKEIN_BENCH_BIN=/tmp/old/bin/skein.js SKEIN_BENCH_NODE_OLD=/usr/bin/node node dist/bench/proxy-ab.js
 *
 * The sides:
 * - old: `SKEIN_BENCH_BIN` (a skein.js) or `--old DIR` (a checkout; its bin/skein.js);
 * - new: this checkout's bin/skein.js, or `--new DIR`;
 * - the Node each runs on: `SKEIN_BENCH_NODE_OLD`, `SKEIN_BENCH_NODE_NEW` (paths to a node binary;
 *   default the one running this benchmark), with extra flags in `SKEIN_BENCH_NODE_ARGS_OLD`,
 *   `SKEIN_BENCH_NODE_ARGS_NEW` (space-separated, e.g. `--max-semi-space-size=16`).
 *
 * Each proxy has an inbound listener in front of the same small node:http app (its own process; no
 * control plane needed). Each round measures each side twice:
 * - closed loop: `--requests` requests with `--concurrency` in flight over keep-alive connections,
 *   as fast as they go: the proxy's CPU per request (user + system, every thread, from schedstat);
 * - open loop: `--rate` requests/s for `--seconds`, each request started on a fixed schedule
 *   (request i at t0 + i/rate) whether or not earlier ones have answered (a new connection is
 *   opened when all are busy, up to 256, then requests wait), and its latency counted from its
 *   scheduled start, so a stall of the proxy delays every request scheduled during it and shows in
 *   the percentiles instead of slowing the generator down (no coordinated omission). Also the
 *   proxy's CPU per request at that rate, and how late the generator itself sent (its own timer
 *   lateness is part of every latency, on both sides alike).
 * With `--gc`, both proxies run with `--trace-gc` and the time V8 paused them for garbage
 * collection is summed over both loops of each round. Other processes' CPU use during each round
 * is printed (the machine may be shared). Prints every round, then medians per side and the
 * ratios new / old with the per-round spread, and one JSON line (`{"bench":"proxy-ab",...}`;
 * `--json FILE` writes it too).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { closedLoop, openLoop, startOkBackend } from './load.js';
import { ROOT, machine, otherCpuMeter, percentile, printResult, processCpuSeconds, round, runMain, stopChild, table, track, warnIfBusy } from './lib.js';

const USAGE = `usage: [SKEIN_BENCH_BIN=OLD/bin/skein.js] [SKEIN_BENCH_NODE_OLD=node] [SKEIN_BENCH_NODE_NEW=node]
       node dist/bench/proxy-ab.js [--old DIR] [--new DIR] [--rounds 4] [--requests 20000] [--concurrency 16]
                                   [--rate 1000] [--seconds 10] [--gc] [--json FILE]`;

function usage(msg: string): never {
  process.stderr.write(`proxy-ab: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

function intOpt(v: string, flag: string, min: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) usage(`${flag} must be an integer >= ${min}, got "${v}"`);
  return n;
}

const { values: o } = (() => {
  try {
    return parseArgs({
      options: {
        old: { type: 'string' },
        new: { type: 'string' },
        rounds: { type: 'string', default: '4' },
        requests: { type: 'string', default: '20000' },
        concurrency: { type: 'string', default: '16' },
        rate: { type: 'string', default: '1000' },
        seconds: { type: 'string', default: '10' },
        gc: { type: 'boolean', default: false },
        json: { type: 'string' },
      },
      strict: true,
    });
  } catch (e) {
    usage((e as Error).message);
  }
})();

const ROUNDS = intOpt(o.rounds, '--rounds', 1);
const REQUESTS = intOpt(o.requests, '--requests', 100);
const CONCURRENCY = intOpt(o.concurrency, '--concurrency', 1);
const RATE = intOpt(o.rate, '--rate', 1);
const SECONDS = intOpt(o.seconds, '--seconds', 1);

interface Side {
  readonly name: 'old' | 'new';
  readonly bin: string;
  readonly node: string;
  readonly nodeArgs: string[];
  readonly nodeVersion: string;
}

function executable(path: string, what: string): void {
  try {
    accessSync(path, constants.X_OK);
  } catch {
    usage(`${what} is "${path}", which is not an executable file`);
  }
}

function side(name: 'old' | 'new', bin: string, binSource: string): Side {
  if (!existsSync(bin)) usage(`${binSource} names "${bin}", which does not exist`);
  const envNode = `SKEIN_BENCH_NODE_${name.toUpperCase()}`;
  const node = process.env[envNode] ?? process.execPath;
  executable(node, envNode);
  const nodeArgs = (process.env[`SKEIN_BENCH_NODE_ARGS_${name.toUpperCase()}`] ?? '').split(' ').filter((a) => a !== '');
  const nodeVersion = execFileSync(node, ['--version'], { encoding: 'utf8' }).trim();
  return { name, bin, node, nodeArgs, nodeVersion };
}

const envOld = process.env['SKEIN_BENCH_BIN'];
if (envOld !== undefined && o.old !== undefined) usage('name the old build once: SKEIN_BENCH_BIN=.../bin/skein.js or --old DIR, not both');
if (envOld === undefined && o.old === undefined) usage('name the old build: SKEIN_BENCH_BIN=/path/to/old/bin/skein.js (or --old DIR)');
const SIDES: readonly Side[] = [
  envOld !== undefined ? side('old', resolve(envOld), 'SKEIN_BENCH_BIN') : side('old', join(resolve(o.old as string), 'bin', 'skein.js'), '--old'),
  side('new', join(o.new !== undefined ? resolve(o.new) : ROOT, 'bin', 'skein.js'), o.new !== undefined ? '--new' : 'this checkout'),
];

// ---------------------------------------------------------------- processes

/** V8's pause per collection in a --trace-gc line: "... 4.4 (7.0) MB, [pooled: 0 MB, ]0.62 / 0.00 ms ...". */
const GC_LINE = /ms: (Scavenge|Mark-Compact|Minor Mark-Compact|Mark-Sweep|Mark-sweep)\b.*? MB, (?:pooled: [\d.]+ MB, )?([\d.]+) \/ [\d.]+ ms/;

interface GcCounters {
  ms: number;
  scavenges: number;
  fullGcs: number;
}

interface Proxy {
  readonly side: Side;
  readonly child: ChildProcess;
  readonly port: number;
  readonly gc: GcCounters;
}

async function startProxy(s: Side, appPort: number): Promise<Proxy> {
  const args = [...s.nodeArgs, ...(o.gc ? ['--trace-gc'] : []), s.bin, 'proxy', '--no-control', '--admin', '127.0.0.1:0', '--workload', `name=app-1,service=app,inbound=127.0.0.1:0,app=127.0.0.1:${appPort}`, '--log-level', 'info', '--access-log', 'off'];
  const child = track(spawn(s.node, args, { stdio: ['ignore', 'pipe', 'inherit'] }));
  const gc: GcCounters = { ms: 0, scavenges: 0, fullGcs: 0 };
  const port = await new Promise<number>((res, rej) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (l) => {
      const m = GC_LINE.exec(l);
      if (m !== null) {
        gc.ms += Number(m[2]);
        if (m[1] === 'Scavenge') gc.scavenges++;
        else gc.fullGcs++;
        return;
      }
      try {
        const j = JSON.parse(l) as { msg?: string; workloads?: Array<{ inbound: string }> };
        if (j.msg === 'proxy ready') res(Number(j.workloads?.[0]?.inbound.split(':').pop()));
      } catch {
        /* not JSON */
      }
    });
    child.once('exit', (c) => rej(new Error(`the ${s.name} proxy (${s.node} ${s.bin}) exited with ${c} before it was ready`)));
  });
  return { side: s, child, port, gc };
}

// ---------------------------------------------------------------- measuring

interface RoundResult {
  round: number;
  side: 'old' | 'new';
  /** Closed loop: CPU µs per request. */
  cpuUs: number;
  /** Open loop at --rate: CPU µs per request. */
  cpuUsAtRate: number;
  p50Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
  p99FromSendUs: number;
  lateP99Us: number;
  achievedRate: number;
  errors: number;
  connections: number;
  gcMsPer1000: number | null;
  scavenges: number | null;
  otherCpuPct: number;
}

async function measure(p: Proxy, round: number, bench: number[]): Promise<RoundResult> {
  const pid = p.child.pid as number;
  const other = otherCpuMeter([...bench, pid]);
  const c0 = processCpuSeconds(pid);
  const gc0 = { ...p.gc };
  const errors0 = await closedLoop(p.port, REQUESTS, CONCURRENCY);
  const c1 = processCpuSeconds(pid);
  const ol = await openLoop(p.port, RATE, SECONDS);
  const c2 = processCpuSeconds(pid);
  const n = ol.latency.length;
  const us = (ms: number) => ms * 1000;
  return {
    round,
    side: p.side.name,
    cpuUs: ((c1 - c0) * 1e6) / REQUESTS,
    cpuUsAtRate: ((c2 - c1) * 1e6) / n,
    p50Us: us(percentile(ol.latency, 50)),
    p99Us: us(percentile(ol.latency, 99)),
    p999Us: us(percentile(ol.latency, 99.9)),
    maxUs: us(percentile(ol.latency, 100)),
    p99FromSendUs: us(percentile(ol.fromSend, 99)),
    lateP99Us: us(percentile(ol.lateness, 99)),
    achievedRate: n / ol.seconds,
    errors: errors0 + ol.errors,
    connections: ol.connections,
    // Both phases: the proxy's --trace-gc lines reach us a little after the collection, so a
    // boundary between the phases would misplace some.
    gcMsPer1000: o.gc ? ((p.gc.ms - gc0.ms) * 1000) / (REQUESTS + n) : null,
    scavenges: o.gc ? p.gc.scavenges - gc0.scavenges : null, // both loops
    otherCpuPct: other.stop(),
  };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

runMain(async () => {
  const info = machine();
  warnIfBusy(info);
  for (const s of SIDES) process.stdout.write(`${s.name}: ${s.node} (${s.nodeVersion})${s.nodeArgs.length > 0 ? ` ${s.nodeArgs.join(' ')}` : ''} ${s.bin}\n`);
  const app = await startOkBackend();
  track(app.child);
  const proxies: Proxy[] = [];
  try {
    for (const s of SIDES) proxies.push(await startProxy(s, app.port));
    const bench = [process.pid, app.child.pid as number];
    for (const p of proxies) {
      // Warm-up: the JIT, the connection pools, the first GCs.
      await closedLoop(p.port, 2000, CONCURRENCY);
      await openLoop(p.port, RATE, 1);
    }
    const results: RoundResult[] = [];
    for (let r = 1; r <= ROUNDS; r++) {
      for (const p of r % 2 === 1 ? proxies : [...proxies].reverse()) {
        const x = await measure(p, r, bench);
        results.push(x);
        const gc = x.gcMsPer1000 === null ? '' : `, GC ${round(x.gcMsPer1000)} ms per 1000 req (${x.scavenges} scavenges)`;
        process.stdout.write(
          `round ${r} ${x.side}: ${round(x.cpuUs)} µs CPU/req closed loop, ${round(x.cpuUsAtRate)} µs at ${RATE}/s; p50 ${round(x.p50Us)} µs, p99 ${round(x.p99Us)} µs, p99.9 ${round(x.p999Us)} µs, max ${round(x.maxUs)} µs${gc}; other procs ${round(x.otherCpuPct)}% of a core${x.errors > 0 ? `; ${x.errors} ERRORS` : ''}\n`,
        );
      }
    }
    const of = (s: 'old' | 'new', k: keyof RoundResult) => results.filter((x) => x.side === s).map((x) => x[k] as number);
    const keys = ['cpuUs', 'cpuUsAtRate', 'p50Us', 'p99Us', 'p999Us', 'maxUs', 'p99FromSendUs', 'lateP99Us', 'achievedRate', ...(o.gc ? (['gcMsPer1000'] as const) : [])] as const;
    const med = (s: 'old' | 'new') => Object.fromEntries(keys.map((k) => [k, round(median(of(s, k)))])) as Record<(typeof keys)[number], number>;
    const m = { old: med('old'), new: med('new') };
    // Per round, new / old of the same round: their spread says how far to trust the medians' ratio.
    const perRound = (k: keyof RoundResult) => {
      const o2 = of('old', k);
      const n2 = of('new', k);
      return o2.map((v, i) => (n2[i] as number) / v);
    };
    const ratio = (k: (typeof keys)[number]) => {
      const pr = perRound(k);
      return { median: round(m.new[k] / m.old[k], 3), roundMin: round(Math.min(...pr), 3), roundMax: round(Math.max(...pr), 3) };
    };
    const label: Record<(typeof keys)[number], string> = {
      cpuUs: 'CPU µs/req (closed loop)',
      cpuUsAtRate: `CPU µs/req at ${RATE}/s`,
      p50Us: `p50 µs at ${RATE}/s`,
      p99Us: `p99 µs at ${RATE}/s`,
      p999Us: `p99.9 µs at ${RATE}/s`,
      maxUs: `max µs at ${RATE}/s`,
      p99FromSendUs: 'p99 µs from the send',
      lateP99Us: 'generator lateness p99 µs',
      achievedRate: 'achieved req/s',
      gcMsPer1000: 'GC pause ms per 1000 req (both loops)',
    };
    table(
      `Medians of ${ROUNDS} round(s): old ${SIDES[0]?.nodeVersion}, new ${SIDES[1]?.nodeVersion}`,
      ['', 'old', 'new', 'new / old', 'per round'],
      keys.map((k) => {
        const r = ratio(k);
        return [label[k], m.old[k], m.new[k], `${r.median.toFixed(2)}x`, `${r.roundMin.toFixed(2)}-${r.roundMax.toFixed(2)}x`];
      }),
    );
    const errors = results.reduce((n, x) => n + x.errors, 0);
    if (errors > 0) process.stdout.write(`WARNING: ${errors} requests failed or got a status other than 200; the figures are not comparable\n`);
    const other = results.map((x) => x.otherCpuPct);
    process.stdout.write(`other processes used ${round(Math.min(...other))}-${round(Math.max(...other))}% of a core during the phases\n`);
    const result = {
      machine: info,
      sides: SIDES.map((s) => ({ name: s.name, node: s.nodeVersion, nodeArgs: s.nodeArgs, bin: s.bin })),
      options: { rounds: ROUNDS, requests: REQUESTS, concurrency: CONCURRENCY, rate: RATE, seconds: SECONDS, gc: o.gc },
      medians: m,
      ratios: Object.fromEntries(keys.map((k) => [k, ratio(k)])),
      errors,
      rounds: results.map((x) => Object.fromEntries(Object.entries(x).map(([k, v]) => [k, typeof v === 'number' ? round(v) : v]))),
    };
    printResult('proxy-ab', result);
    if (o.json !== undefined) writeFileSync(o.json, JSON.stringify({ bench: 'proxy-ab', ...result }, null, 2) + '\n');
  } finally {
    for (const p of proxies) await stopChild(p.child, 5000);
    await stopChild(app.child, 5000);
  }
});
