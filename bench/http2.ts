/**
 * HTTP/2 through Skein, side by side with the same load direct and through HAProxy in h2 mode
 * (`proto h2` on its bind and its server), in one run (issue 17, "Targets"):
 *
 *   node dist/bench/http2.js [--requests 20000] [--rate 1000] [--seconds 5]
 *
 * The backend is an h2c server (Node's http2, its own process). Skein is `skein proxy --no-control`
 * with an inbound listener in front of it (the HTTP/2 driver, to an h2c app); HAProxy runs one
 * thread. For each of direct / skein / haproxy:
 * - closed loop: h2load -n REQUESTS -c 4 -m 10: the proxy's CPU per request (user + system);
 * - open loop: h2load --rps at RATE over 4 connections for SECONDS: p50 and p99 latency (from
 *   h2load's per-request log) and the proxy's CPU per request at that rate;
 * - memory (Skein and HAProxy), first, on the fresh process: its RSS idle, its peak RSS while one
 *   client reads one 256 MiB response (flow control must bound it), then with 100 concurrent
 *   streams of 1 MiB each (RSS is a high-water mark: each figure includes the one before).
 * Prints a table and one JSON line (`{"bench":"http2",...}`).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { firstJsonLine, posInt, requireTools, startHaproxyH2, startSkeinInbound, stopTree, treeCpuSeconds, treeMemory } from './proxy-lib.js';

const o = parseArgs({ options: { requests: { type: 'string', default: '20000' }, rate: { type: 'string', default: '1000' }, seconds: { type: 'string', default: '5' } } }).values;
const REQUESTS = posInt(o.requests, '--requests', 100);
const RATE = posInt(o.rate, '--rate', 10);
const SECONDS = posInt(o.seconds, '--seconds', 1);

/** The h2c backend: / answers "ok", /mb 1 MiB, /big 256 MiB (written with back-pressure). */
const BACKEND = `
import http2 from 'node:http2';
const MB = Buffer.alloc(1024 * 1024, 120);
const s = http2.createServer({ settings: { maxConcurrentStreams: 1000, initialWindowSize: 1 << 20 } });
s.on('stream', (st, h) => {
  st.on('error', () => {});
  const p = h[':path'];
  if (p === '/mb') { st.respond({ ':status': 200 }); st.end(MB); return; }
  if (p === '/big') {
    st.respond({ ':status': 200 });
    let left = 256;
    const more = () => { while (left > 0) { left--; if (!st.write(MB)) { st.once('drain', more); return; } } st.end(); };
    more();
    return;
  }
  st.respond({ ':status': 200, 'content-type': 'text/plain' });
  st.end('ok');
});
s.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: s.address().port })));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
`;

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (out += d.toString()));
    c.on('error', reject);
    c.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}:\n${out.slice(-2000)}`))));
  });
}

function succeeded(out: string, expect: number, what: string): void {
  const m = /(\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out);
  if (m === null || Number(m[1]) !== expect) throw new Error(`${what}: not every request succeeded:\n${out.slice(-1500)}`);
}

const pct = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] ?? 0;

interface Side {
  name: string;
  port: number;
  pid: number | null;
}

async function measure(s: Side, dir: string) {
  const cpu = () => (s.pid === null ? 0 : treeCpuSeconds(s.pid));
  const url = (p: string) => `http://127.0.0.1:${s.port}${p}`;
  // Memory first, on a fresh process: RSS is a high-water mark.
  let rss100 = 0;
  let rssBig = 0;
  const rssIdle = s.pid === null ? 0 : Math.round(treeMemory(s.pid).rss / 1024 / 1024);
  if (s.pid !== null) {
    const pid = s.pid;
    const peak = async (work: Promise<unknown>) => {
      let max = 0;
      const t = setInterval(() => (max = Math.max(max, treeMemory(pid).rss)), 20);
      await work;
      clearInterval(t);
      return Math.max(max, treeMemory(pid).rss) / 1024 / 1024;
    };
    // The one big stream first: RSS is a high-water mark (freed memory is kept by the process).
    rssBig = await peak(run('curl', ['-sS', '--http2-prior-knowledge', '-o', '/dev/null', url('/big')]));
    rss100 = await peak(run('h2load', ['-n', '1000', '-c', '1', '-m', '100', url('/mb')]));
  }
  // Warm-up.
  succeeded(await run('h2load', ['-n', '2000', '-c', '4', '-m', '10', url('/')]), 2000, s.name);
  let c0 = cpu();
  succeeded(await run('h2load', ['-n', String(REQUESTS), '-c', '4', '-m', '10', url('/')]), REQUESTS, s.name);
  const cpuClosedUs = ((cpu() - c0) / REQUESTS) * 1e6;
  const log = join(dir, `${s.name}.log`);
  const n = RATE * SECONDS;
  c0 = cpu();
  // --rps is per client: 4 clients at RATE/4 each.
  succeeded(await run('h2load', ['-n', String(n), '-c', '4', '-m', '10', `--rps=${Math.max(1, Math.round(RATE / 4))}`, '--log-file', log, url('/')]), n, s.name);
  const cpuOpenUs = ((cpu() - c0) / n) * 1e6;
  const lat = readFileSync(log, 'utf8')
    .trim()
    .split('\n')
    .map((l) => Number(l.split('\t')[2]) / 1000)
    .sort((a, b) => a - b);
  return { side: s.name, cpuClosedUs: Math.round(cpuClosedUs), cpuOpenUs: Math.round(cpuOpenUs), p50ms: +pct(lat, 50).toFixed(2), p99ms: +pct(lat, 99).toFixed(2), rssIdleMB: rssIdle, rss100MB: Math.round(rss100), rssBig256MB: Math.round(rssBig) };
}

async function main(): Promise<void> {
  requireTools(['h2load', 'haproxy', 'curl']);
  const dir = mkdtempSync(join(tmpdir(), 'skein-bench-h2-'));
  const stops: Array<() => Promise<void>> = [];
  try {
    const backend = spawn(process.execPath, ['--input-type=module', '-e', BACKEND], { stdio: ['pipe', 'pipe', 'inherit'] });
    stops.push(() => stopTree(backend));
    const bport = await firstJsonLine(backend, (j) => (typeof j['port'] === 'number' ? j['port'] : null));
    const proxy = await startSkeinInbound(null, bport, 'app');
    stops.push(() => stopTree(proxy.child));
    const sport = proxy.port;
    const ha = await startHaproxyH2(dir, null, bport);
    stops.push(() => stopTree(ha.child));
    const sides: Side[] = [
      { name: 'direct', port: bport, pid: null },
      { name: 'skein', port: sport, pid: proxy.child.pid ?? null },
      { name: 'haproxy', port: ha.port, pid: ha.child.pid ?? null },
    ];
    const rows = [];
    for (const s of sides) rows.push(await measure(s, dir));
    console.log(`load ${readFileSync('/proc/loadavg', 'utf8').trim()}`);
    console.log('side      cpu/req closed  cpu/req open  p50 ms  p99 ms  rss idle  rss 256MiB  rss 100x1MiB');
    for (const r of rows) console.log(`${r.side.padEnd(9)} ${String(r.cpuClosedUs).padStart(10)} us ${String(r.cpuOpenUs).padStart(10)} us ${String(r.p50ms).padStart(7)} ${String(r.p99ms).padStart(7)} ${String(r.rssIdleMB).padStart(6)} MB ${String(r.rssBig256MB).padStart(8)} MB ${String(r.rss100MB).padStart(10)} MB`);
    console.log(JSON.stringify({ bench: 'http2', options: { requests: REQUESTS, rate: RATE, seconds: SECONDS }, rows }));
  } finally {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
