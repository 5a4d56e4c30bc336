/**
 * Does `reusePort` (SO_REUSEPORT, Node 22.12+/24) help the proxy? One `skein proxy` on a port
 * against two on the same port (each started with bench/reuse-port-preload.ts, which adds
 * `reusePort: true` to its listeners; the kernel spreads connections between them), in alternating
 * rounds, in front of the same node:http app:
 *
 *   node dist/bench/reuse-port.js [--rounds 3] [--requests 30000] [--concurrency 32] [--rate 1000] [--seconds 5]
 *
 * Each round and layout: a closed loop (requests/s and the proxies' CPU per request) and an open
 * loop at --rate (p50/p99 from the schedule), with bench/load.ts. Prints each round, then medians.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { closedLoop, openLoop, startOkBackend } from './load.js';
import { ROOT, machine, otherCpuMeter, percentile, printResult, processCpuSeconds, round, runMain, stopChild, table, track, warnIfBusy } from './lib.js';

const { values: o } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    requests: { type: 'string', default: '30000' },
    concurrency: { type: 'string', default: '32' },
    rate: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '5' },
  },
  strict: true,
});
function int(v: string, flag: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) {
    process.stderr.write(`reuse-port: ${flag} must be a positive integer, got "${v}"\n`);
    process.exit(2);
  }
  return n;
}
const ROUNDS = int(o.rounds, '--rounds');
const REQUESTS = int(o.requests, '--requests');
const CONCURRENCY = int(o.concurrency, '--concurrency');
const RATE = int(o.rate, '--rate');
const SECONDS = int(o.seconds, '--seconds');
const PRELOAD = join(ROOT, 'dist', 'bench', 'reuse-port-preload.js');

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function lineOf(child: ChildProcess, pick: (l: string) => string | null, what: string): Promise<string> {
  return new Promise((res, rej) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (l) => {
      const v = pick(l);
      if (v !== null) res(v);
    });
    child.once('exit', (c) => rej(new Error(`${what} exited with ${c}`)));
  });
}

async function startProxy(port: number, appPort: number): Promise<ChildProcess> {
  const child = track(
    spawn(process.execPath, ['--import', PRELOAD, join(ROOT, 'bin', 'skein.js'), 'proxy', '--no-control', '--admin', '127.0.0.1:0', '--workload', `name=app-1,service=app,inbound=127.0.0.1:${port},app=127.0.0.1:${appPort}`, '--log-level', 'info', '--access-log', 'off'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    }),
  );
  await lineOf(child, (l) => (l.includes('"proxy ready"') ? l : null), 'a proxy');
  return child;
}

interface Row {
  layout: string;
  reqPerSec: number;
  cpuUs: number;
  p50Us: number;
  p99Us: number;
  split: string;
  otherCpuPct: number;
}

runMain(async () => {
  const info = machine();
  warnIfBusy(info);
  const backend = await startOkBackend();
  const app = track(backend.child);
  const appPort = backend.port;
  const port = await freePort();
  const first = await startProxy(port, appPort);
  let second: ChildProcess | null = null;
  const layouts = ['one proxy', 'two proxies, one port'] as const;
  const rows: Row[] = [];
  try {
    const run = async (name: (typeof layouts)[number]): Promise<Row> => {
      // The second proxy runs only for its layout: a listener in the reuseport group takes its
      // share of new connections whether or not its process is scheduled.
      if (name !== 'one proxy') {
        second = await startProxy(port, appPort);
        await closedLoop(port, 4000, CONCURRENCY); // warm-up of the newcomer
      }
      const active = second === null ? [first] : [first, second];
      const pids = active.map((c) => c.pid as number);
      const other = otherCpuMeter([process.pid, app.pid as number, ...pids]);
      const c0 = pids.map(processCpuSeconds);
      const t0 = performance.now();
      const errors = await closedLoop(port, REQUESTS, CONCURRENCY);
      const secs = (performance.now() - t0) / 1000;
      const c1 = pids.map(processCpuSeconds);
      const ol = await openLoop(port, RATE, SECONDS);
      const otherCpuPct = other.stop();
      if (second !== null) {
        await stopChild(second, 5000);
        second = null;
      }
      const used = c1.map((c, i) => c - (c0[i] as number));
      const total = used.reduce((a, b) => a + b, 0);
      if (errors + ol.errors > 0) process.stdout.write(`WARNING: ${errors + ol.errors} requests failed (${name})\n`);
      return {
        layout: name,
        reqPerSec: REQUESTS / secs,
        cpuUs: (total * 1e6) / REQUESTS,
        p50Us: percentile(ol.latency, 50) * 1000,
        p99Us: percentile(ol.latency, 99) * 1000,
        split: used.map((u) => `${Math.round((u / total) * 100)}%`).join('/'),
        otherCpuPct,
      };
    };
    await closedLoop(port, 4000, CONCURRENCY); // warm-up
    for (let r = 1; r <= ROUNDS; r++) {
      for (const name of r % 2 === 1 ? layouts : [...layouts].reverse()) {
        const x = await run(name);
        rows.push(x);
        process.stdout.write(`round ${r} ${name}: ${round(x.reqPerSec)} req/s, ${round(x.cpuUs)} µs CPU/req (split ${x.split}), p50 ${round(x.p50Us)} µs, p99 ${round(x.p99Us)} µs at ${RATE}/s; other procs ${round(x.otherCpuPct)}% of a core\n`);
      }
    }
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
    const summary = layouts.map((name) => {
      const rs = rows.filter((x) => x.layout === name);
      return { layout: name, reqPerSec: round(med(rs.map((x) => x.reqPerSec))), cpuUs: round(med(rs.map((x) => x.cpuUs))), p50Us: round(med(rs.map((x) => x.p50Us))), p99Us: round(med(rs.map((x) => x.p99Us))) };
    });
    table(`Medians of ${ROUNDS} round(s), ${CONCURRENCY} connections, Node ${process.version}`, ['layout', 'req/s', 'CPU µs/req', `p50 µs @${RATE}`, `p99 µs @${RATE}`], summary.map((s) => [s.layout, s.reqPerSec, s.cpuUs, s.p50Us, s.p99Us]));
    printResult('reuse-port', { machine: info, options: { rounds: ROUNDS, requests: REQUESTS, concurrency: CONCURRENCY, rate: RATE, seconds: SECONDS }, summary, rounds: rows });
  } finally {
    if (second !== null) await stopChild(second, 5000);
    await stopChild(first, 5000);
    await stopChild(app, 5000);
  }
});
