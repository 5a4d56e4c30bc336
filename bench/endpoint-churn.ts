/**
 * Endpoint churn: how many registry changes per second one proxy absorbs while it routes to a
 * service of 1,000, 10,000 and 50,000 instances (issue 11 §6), and what that does to the latency
 * of the requests it proxies meanwhile.
 *
 * Each run is a child process holding a real `Proxy` (its WatchClient over HTTP, its per-service
 * balancer, traffic state and outlier detector), a stand-in control plane that serves
 * `GET /v1/watch` (a snapshot of N healthy instances of `churn`, then whatever the run writes) and
 * an upstream on loopback. Once a request has gone through (so the proxy keeps state for the
 * service), the run writes K changes in one go (an instance added, the oldest removed, in turn,
 * so the service stays at N) and times how long the proxy takes to apply the last one (K is sized
 * by two short bursts first so this takes about `--seconds`; CPU per change is the process's CPU time
 * over the burst / K). Then it sends `--pace` changes/s (default 1,000, about a quarter of what a
 * bare control plane takes) for `--seconds` while one client sends requests through the proxy back
 * to back: their latency, the pace actually sent (the stand-in shares the proxy's process, so a
 * proxy that blocks its event loop also slows the sending), and how many changes the proxy is
 * behind at the end.
 *
 * `--baseline DIR` runs the same children against the build in DIR (a checkout with its own dist/,
 * e.g. a `git worktree` of the commit before a change) and prints both side by side with ratios.
 * Speed is printed, never asserted.
 *
 *   npm run build && node dist/bench/endpoint-churn.js [--sizes 1000,10000,50000] [--kinds peak-ewma]
 *     [--seconds 4] [--pace 1000] [--baseline /tmp/skein-before]
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { ROOT, machine, percentile, printResult, round, runMain, sleep, table, track, waitUntil, warnIfBusy } from './lib.js';

const { values: argv } = parseArgs({
  options: {
    sizes: { type: 'string', default: '1000,10000,50000' },
    kinds: { type: 'string', default: 'peak-ewma' },
    seconds: { type: 'string', default: '4' },
    pace: { type: 'string', default: '1000' },
    baseline: { type: 'string' },
    // Internal: one run, in this process.
    child: { type: 'boolean', default: false },
    dist: { type: 'string' },
    size: { type: 'string' },
    kind: { type: 'string' },
  },
});

const SERVICE = 'churn';
const PACE = Number(argv.pace);

interface RunResult {
  size: number;
  kind: string;
  changes: number;
  seconds: number;
  changesPerSecond: number;
  cpuMicrosPerChange: number;
  /** The paced phase: changes sent per second, and how many the proxy had not applied at its end. */
  paced: { changesPerSecond: number; behind: number };
  /** Requests proxied during the paced phase, and their latency. */
  requests: number;
  latencyMs: { p50: number; p99: number; max: number };
}

// ---------------------------------------------------------------- one run (child process)

/** Every instance is the one upstream on loopback (distinct ids, one address). */
let upstreamPort = 0;

function instance(i: number, revision: number): Record<string, unknown> {
  return { id: `i${i}`, service: SERVICE, address: '127.0.0.1', port: upstreamPort, weight: 1, zone: '', version: '', labels: {}, status: 'healthy', reason: '', since: new Date(0).toISOString(), revision, check: null };
}

/** A stand-in control plane: the snapshot, then lines written by `send`. */
async function fakeControl(size: number, definition: unknown): Promise<{ url: string; send: (lines: string) => void; streams: () => number; close: () => void }> {
  let stream: http.ServerResponse | null = null;
  let streams = 0;
  const server = http.createServer((req, res) => {
    if (!req.url?.startsWith('/v1/watch')) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    const instances = Array.from({ length: size }, (_, i) => instance(i, 1));
    res.write(JSON.stringify({ type: 'snapshot', revision: 1, service: null, instances, services: [{ name: SERVICE, definition }] }) + '\n');
    stream = res;
    streams++;
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    /** Watch streams opened: more than one means the proxy lost the stream and came back. */
    streams: () => streams,
    send: (lines) => {
      if (stream === null) throw new Error('the proxy has not opened the watch stream');
      stream.write(lines);
    },
    close: () => {
      stream?.destroy();
      server.close();
      server.closeAllConnections();
    },
  };
}

/** Lines for changes [from, from + k): an instance added and the oldest removed, in turn. */
function churnLines(size: number, from: number, k: number, firstRevision: number): string {
  const out: string[] = [];
  for (let j = from; j < from + k; j++) {
    const rev = firstRevision + (j - from);
    const pair = j >> 1;
    out.push(
      j % 2 === 0
        ? JSON.stringify({ type: 'add', revision: rev, service: SERVICE, instance: instance(size + pair, rev) })
        : JSON.stringify({ type: 'remove', revision: rev, service: SERVICE, instance: instance(pair, rev) }),
    );
  }
  return out.join('\n') + '\n';
}

async function child(): Promise<void> {
  const dist = argv.dist as string;
  const size = Number(argv.size);
  const kind = argv.kind as string;
  const seconds = Number(argv.seconds);
  const mod = (p: string) => import(pathToFileURL(join(dist, 'dist', p)).href);
  const [{ Proxy }, { parseService }] = (await Promise.all([mod('src/proxy/proxy.js'), mod('src/api/parse.js')])) as [
    { Proxy: new (o: object) => { addWorkload(s: object): Promise<{ outbound: string }>; start(): void; stop(g?: number): Promise<void>; ready: boolean; watch: { revision: number | null; endpoints(s: string): { size: number } } } },
    { parseService: (raw: unknown) => unknown },
  ];
  const upstream = http.createServer((_req, res) => res.end('ok'));
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  upstreamPort = (upstream.address() as AddressInfo).port;
  // The hashing kinds take their key from a header the client varies per request.
  const hashing = kind === 'ring-hash' || kind === 'maglev';
  const control = await fakeControl(size, parseService({ name: SERVICE, balancer: hashing ? { kind, hashKey: { type: 'header', name: 'x-user' } } : { kind } }));
  const proxy = new Proxy({ controlUrl: control.url, requestMetrics: true });
  const { outbound } = await proxy.addWorkload({ name: 'bench', outbound: { host: '127.0.0.1', port: 0 } });
  proxy.start();
  await waitUntil(() => proxy.ready && proxy.watch.endpoints(SERVICE).size === size, 120_000, 'the snapshot');
  const [host, port] = [outbound.slice(0, outbound.lastIndexOf(':')), Number(outbound.slice(outbound.lastIndexOf(':') + 1))];
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const call = () =>
    new Promise<number>((resolve, reject) => {
      const t0 = performance.now();
      const req = http.request({ host, port, path: '/', agent, headers: { host: SERVICE, 'x-user': `u${Math.floor(Math.random() * 1e9)}` } }, (res) => {
        if (res.statusCode !== 200) reject(new Error(`proxied request: HTTP ${res.statusCode}`));
        res.resume();
        res.on('end', () => resolve(performance.now() - t0));
      });
      req.on('error', reject);
      req.end();
    });
  await call();

  let next = 0;
  let revision = 1;
  const burst = async (k: number) => {
    const target = revision + k;
    control.send(churnLines(size, next, k, revision + 1));
    next += k;
    revision = target;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await waitUntil(() => proxy.watch.revision === target || control.streams() > 1, 600_000, `revision ${target}`, 2);
    if (control.streams() > 1) throw new Error(`the proxy lost its watch stream (liveness timeout?) before revision ${target}`);
    const cpu = process.cpuUsage(c0);
    return { ms: performance.now() - t0, cpuMicros: cpu.user + cpu.system };
  };
  // A small first burst: a proxy that takes seconds per 100 changes stays under the watch
  // stream's 45 s liveness timeout (past it, it drops the stream and this stand-in cannot resume).
  const sized = (k: number, ms: number, s: number) => Math.max(20, Math.min(200_000, Math.round(((k / ms) * 1000 * s) / 2) * 2));
  const probe = await burst(20);
  // A second probe of about half a second, past the compiler's warm-up, sizes the measured burst.
  const k1 = sized(20, probe.ms, 0.5);
  const warm = await burst(k1);
  const k = sized(k1, warm.ms, seconds);
  const run = await burst(k);

  // Paced: PACE changes/s (in steps of 20 ms) for `seconds`, one client calling back to back.
  const latencies: number[] = [];
  let calling = true;
  let callStarted = 0;
  const caller = (async () => {
    while (calling) {
      callStarted = performance.now();
      latencies.push(await call());
      callStarted = 0;
    }
  })();
  const step = Math.max(2, Math.round((PACE / 50) / 2) * 2);
  const t0 = performance.now();
  const from = revision;
  while (performance.now() - t0 < seconds * 1000) {
    control.send(churnLines(size, next, step, revision + 1));
    next += step;
    revision += step;
    await sleep(20);
  }
  const sentSeconds = (performance.now() - t0) / 1000;
  calling = false;
  // A call still waiting counts with what it has waited so far; a proxy far behind is not waited for.
  if (callStarted !== 0) latencies.push(performance.now() - callStarted);
  caller.catch(() => undefined);
  const applied = (proxy.watch.revision ?? 0) - from;
  const result: RunResult = {
    size,
    kind,
    changes: k,
    seconds: round(run.ms / 1000, 2),
    changesPerSecond: round((k / run.ms) * 1000),
    cpuMicrosPerChange: round(run.cpuMicros / k),
    paced: { changesPerSecond: round((revision - from) / sentSeconds), behind: revision - from - applied },
    requests: latencies.length,
    latencyMs: { p50: round(percentile(latencies, 50)), p99: round(percentile(latencies, 99)), max: round(Math.max(...latencies)) },
  };
  // A proxy far behind would take long to catch up: the process just ends (runMain exits).
  agent.destroy();
  process.stdout.write(JSON.stringify({ run: result }) + '\n');
}

// ---------------------------------------------------------------- the parent

function runChild(dist: string, size: number, kind: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const args = [join(ROOT, 'dist', 'bench', 'endpoint-churn.js'), '--child', '--dist', dist, '--size', String(size), '--kind', kind, '--seconds', String(argv.seconds), '--pace', String(PACE)];
    const c = track(spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] }));
    let out = '';
    c.stdout?.setEncoding('utf8');
    c.stdout?.on('data', (s: string) => (out += s));
    c.once('exit', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('{"run":'));
      if (code !== 0 || line === undefined) reject(new Error(`run ${kind} x ${size} in ${dist} exited with ${code}:\n${out.slice(-2000)}`));
      else resolve((JSON.parse(line) as { run: RunResult }).run);
    });
  });
}

async function main(): Promise<void> {
  if (argv.child) return child();
  const info = machine();
  warnIfBusy(info);
  const sizes = String(argv.sizes).split(',').map(Number);
  const kinds = String(argv.kinds).split(',');
  const baseline = argv.baseline;
  const rows: Array<Array<string | number>> = [];
  const results: Array<{ size: number; kind: string; current: RunResult; baseline: RunResult | null }> = [];
  for (const kind of kinds) {
    for (const size of sizes) {
      // Interleaved: the baseline run right before the current one, on the same machine state.
      const before = baseline === undefined ? null : await runChild(baseline, size, kind);
      if (before !== null) process.stdout.write(`baseline ${kind} x ${size}: ${JSON.stringify(before)}\n`);
      const now = await runChild(ROOT, size, kind);
      process.stdout.write(`current  ${kind} x ${size}: ${JSON.stringify(now)}\n`);
      results.push({ size, kind, current: now, baseline: before });
      const ratio = before === null ? '-' : `${round(now.changesPerSecond / before.changesPerSecond, 1)}x`;
      const lat = (r: RunResult | null) => (r === null ? '-' : `${r.latencyMs.p50} / ${r.latencyMs.p99} / ${r.latencyMs.max}`);
      const paced = (r: RunResult | null) => (r === null ? '-' : `${r.paced.changesPerSecond} (${r.paced.behind})`);
      rows.push([
        kind,
        size,
        now.changesPerSecond,
        before?.changesPerSecond ?? '-',
        ratio,
        now.cpuMicrosPerChange,
        before?.cpuMicrosPerChange ?? '-',
        lat(now),
        lat(before),
        paced(now),
        paced(before),
      ]);
    }
  }
  table(
    `Endpoint churn: changes/s one proxy absorbs; proxied latency and backlog at ${PACE} changes/s (on ${info.cpus} x ${info.cpuModel})`,
    ['balancer', 'instances', 'changes/s', 'baseline', 'ratio', 'CPU us/change', 'baseline', 'proxied ms p50 / p99 / max', 'baseline', 'paced: sent/s (behind)', 'baseline'],
    rows,
  );
  printResult('endpoint-churn', { machine: info, baseline: baseline ?? null, results });
}

runMain(main);
