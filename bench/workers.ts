/**
 * `skein proxy --workers 1` against `--workers 2` (issue 16, "every core"), side by side in one
 * run, in alternating rounds, in front of the same node:http app, with bench/load.ts's closed loop:
 *
 *   node dist/bench/workers.js [--rounds 3] [--requests 30000] [--concurrency 32] [--fresh 1000] [--workers 2]
 *                              [--rate 2000] [--seconds 5]
 *
 * Each round and layout: a fresh proxy (`--no-control`, one inbound listener), a warm-up, then
 * - a closed loop of --requests over --concurrency keep-alive connections: requests/s and the
 *   proxy's CPU per request (all its threads: /proc/PID/task/* /schedstat, bench/lib.ts), and
 *   the connections per worker (GET /debug/endpoints);
 * - --fresh requests on fresh connections (one request each, 16 at a time): the connections per
 *   worker again, enough of them for the kernel's spread to show;
 * - an open loop at --rate requests/s for --seconds (bench/load.ts `openLoop`): the proxy's CPU
 *   per request where the machine has room to spare, which a closed loop on a machine without a
 *   free core cannot show (the second event loop only takes turns with the first there), and the
 *   p99 latency.
 * Prints each round, then the medians as a table and a JSON line. No assertions: the figures
 * and the machine go to docs/benchmarks.md ("Workers (issue 16)").
 */
import http from 'node:http';
import { parseArgs } from 'node:util';
import { closedLoop, openLoop, startOkBackend } from './load.js';
import { portOf, posInt, startSkeinProxy, stopTree, type SkeinProxy } from './proxy-lib.js';
import { machine, otherCpuMeter, printResult, processCpuSeconds, round, runMain, stopChild, table, track, warnIfBusy } from './lib.js';

const { values: o } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    requests: { type: 'string', default: '30000' },
    concurrency: { type: 'string', default: '32' },
    fresh: { type: 'string', default: '1000' },
    workers: { type: 'string', default: '2' },
    rate: { type: 'string', default: '2000' },
    seconds: { type: 'string', default: '5' },
  },
  strict: true,
});
/** A flag's value, or one line saying what was wrong and exit 2. */
function flag(v: string, name: string, min = 1): number {
  try {
    return posInt(v, name, min);
  } catch (e) {
    process.stderr.write(`workers: ${(e as Error).message}\n`);
    process.exit(2);
  }
}
const ROUNDS = flag(o.rounds, '--rounds');
const REQUESTS = flag(o.requests, '--requests');
const CONCURRENCY = flag(o.concurrency, '--concurrency');
const FRESH = flag(o.fresh, '--fresh');
const WORKERS = flag(o.workers, '--workers', 2);
const RATE = flag(o.rate, '--rate');
const SECONDS = flag(o.seconds, '--seconds');

/** `skein proxy --no-control --workers N` with one inbound listener in front of the app. */
async function startProxy(workers: number, appPort: number): Promise<SkeinProxy & { port: number }> {
  const p = await startSkeinProxy(null, ['--no-control', '--workers', String(workers), '--workload', `name=app-1,service=app,inbound=127.0.0.1:0,app=127.0.0.1:${appPort}`, '--access-log', 'off'], 'info');
  return { ...p, port: portOf(p.workloads[0]?.inbound ?? '') };
}

/** Connections each worker accepted so far ([] for a proxy without worker threads: it took them all). */
async function acceptedPerWorker(admin: string): Promise<number[]> {
  const d = (await (await fetch(`http://${admin}/debug/endpoints`)).json()) as { workers?: Array<{ connectionsAccepted: number }> };
  return d.workers?.map((w) => w.connectionsAccepted) ?? [];
}

/** `n` requests, each on a fresh connection (`agent: false`), `lanes` at a time; the errors. */
async function freshConnections(port: number, n: number, lanes = 16): Promise<number> {
  let next = 0;
  let errors = 0;
  const one = () =>
    new Promise<void>((resolve) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/fresh', agent: false, headers: { host: 'app' } }, (res) => {
        if (res.statusCode !== 200) errors++;
        res.resume();
        res.once('end', resolve);
      });
      req.once('error', () => {
        errors++;
        resolve();
      });
    });
  await Promise.all(
    Array.from({ length: lanes }, async () => {
      while (next++ < n) await one();
    }),
  );
  return errors;
}

interface Row {
  workers: number;
  reqPerSec: number;
  cpuUs: number;
  /** Keep-alive connections of the closed loop per worker. */
  loopSplit: number[];
  /** Fresh connections per worker. */
  freshSplit: number[];
  /** The open loop at --rate: the proxy's CPU per request and the p99 latency (from each request's due time). */
  pacedCpuUs: number;
  pacedP99Ms: number;
  otherCpuPct: number;
}

const split = (xs: number[]) => {
  const total = xs.reduce((a, b) => a + b, 0);
  return xs.map((x) => Math.round((x / total) * 1000) / 10);
};
/** The largest deviation of a worker's share from an even one, in % of the even share. */
const spreadPct = (xs: number[]) => {
  const total = xs.reduce((a, b) => a + b, 0);
  const even = total / xs.length;
  return Math.round(Math.max(...xs.map((x) => Math.abs(x - even) / even)) * 1000) / 10;
};

runMain(async () => {
  const info = machine();
  warnIfBusy(info);
  const backend = await startOkBackend();
  const app = track(backend.child);
  const layouts = [1, WORKERS];
  const rows: Row[] = [];
  try {
    const run = async (workers: number): Promise<Row> => {
      const p = await startProxy(workers, backend.port);
      try {
        await closedLoop(p.port, 4000, CONCURRENCY); // warm-up (JIT, pools)
        const pid = p.child.pid as number;
        const other = otherCpuMeter([process.pid, app.pid as number, pid]);
        const a0 = await acceptedPerWorker(p.admin);
        const c0 = processCpuSeconds(pid);
        const t0 = performance.now();
        const errors = await closedLoop(p.port, REQUESTS, CONCURRENCY);
        const secs = (performance.now() - t0) / 1000;
        const c1 = processCpuSeconds(pid);
        const a1 = await acceptedPerWorker(p.admin);
        const freshErrors = await freshConnections(p.port, FRESH);
        const f1 = await acceptedPerWorker(p.admin);
        const c2 = processCpuSeconds(pid);
        const paced = await openLoop(p.port, RATE, SECONDS);
        const c3 = processCpuSeconds(pid);
        const otherCpuPct = other.stop();
        const sorted = [...paced.latency].sort((a, b) => a - b);
        if (errors + freshErrors + paced.errors > 0) process.stdout.write(`WARNING: ${errors + freshErrors + paced.errors} requests failed (--workers ${workers})\n`);
        return {
          workers,
          reqPerSec: REQUESTS / secs,
          cpuUs: ((c1 - c0) * 1e6) / REQUESTS,
          loopSplit: workers === 1 ? [CONCURRENCY] : a1.map((x, i) => x - (a0[i] as number)),
          freshSplit: workers === 1 ? [FRESH] : f1.map((x, i) => x - (a1[i] as number)),
          pacedCpuUs: ((c3 - c2) * 1e6) / (RATE * SECONDS),
          pacedP99Ms: sorted[Math.floor(sorted.length * 0.99)] ?? NaN,
          otherCpuPct,
        };
      } finally {
        await stopTree(p.child, 10_000);
      }
    };
    for (let r = 1; r <= ROUNDS; r++) {
      for (const workers of r % 2 === 1 ? layouts : [...layouts].reverse()) {
        const x = await run(workers);
        rows.push(x);
        process.stdout.write(
          `round ${r} --workers ${workers}: ${round(x.reqPerSec)} req/s, ${round(x.cpuUs)} µs CPU/req; connections per worker: keep-alive ${x.loopSplit.join('/')}, fresh ${x.freshSplit.join('/')} (${split(x.freshSplit).join('/')}%); at ${RATE}/s ${round(x.pacedCpuUs)} µs CPU/req, p99 ${round(x.pacedP99Ms)} ms; other procs ${round(x.otherCpuPct)}% of a core\n`,
        );
      }
    }
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
    const summary = layouts.map((workers) => {
      const rs = rows.filter((x) => x.workers === workers);
      const fresh = rs[0]!.freshSplit.map((_, i) => rs.reduce((n, x) => n + (x.freshSplit[i] ?? 0), 0));
      return {
        workers,
        reqPerSec: round(med(rs.map((x) => x.reqPerSec))),
        cpuUs: round(med(rs.map((x) => x.cpuUs))),
        pacedCpuUs: round(med(rs.map((x) => x.pacedCpuUs))),
        pacedP99Ms: round(med(rs.map((x) => x.pacedP99Ms))),
        freshSplitPct: split(fresh),
        freshSpreadPct: spreadPct(fresh),
        loopSpreadPct: round(med(rs.map((x) => spreadPct(x.loopSplit)))),
      };
    });
    const [one, many] = summary as [(typeof summary)[number], (typeof summary)[number]];
    const ratios = { cpuPerRequest: round(many.cpuUs / one.cpuUs, 3), reqPerSec: round(many.reqPerSec / one.reqPerSec, 3), cpuPerRequestPaced: round(many.pacedCpuUs / one.pacedCpuUs, 3) };
    table(
      `Medians of ${ROUNDS} round(s), ${REQUESTS} requests over ${CONCURRENCY} keep-alive connections, ${FRESH} fresh connections, ${info.cpus} CPUs, Node ${process.version}`,
      ['layout', 'req/s', 'CPU µs/req', `CPU µs/req at ${RATE}/s`, `p99 ms at ${RATE}/s`, 'fresh conns per worker', 'spread (fresh)', 'spread (keep-alive)'],
      summary.map((s) => [`--workers ${s.workers}`, s.reqPerSec, s.cpuUs, s.pacedCpuUs, s.pacedP99Ms, s.freshSplitPct.map((p) => `${p}%`).join(' / '), `±${s.freshSpreadPct}%`, `±${s.loopSpreadPct}%`]),
    );
    process.stdout.write(`--workers ${WORKERS} / --workers 1: CPU per request ${ratios.cpuPerRequest}x (closed loop), ${ratios.cpuPerRequestPaced}x at ${RATE}/s (target: within 10%), requests/s ${ratios.reqPerSec}x\n`);
    printResult('workers', { machine: info, options: { rounds: ROUNDS, requests: REQUESTS, concurrency: CONCURRENCY, fresh: FRESH, workers: WORKERS, rate: RATE, seconds: SECONDS }, summary, ratios, rounds: rows });
  } finally {
    await stopChild(app, 5000);
  }
});
