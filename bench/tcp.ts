/**
 * Raw TCP (issue 17, "Targets"): connections/s and throughput of an opaque stream, side by side in
 * one run:
 *
 *   direct    the backend alone
 *   skein     one `skein proxy` (--mtls off), a pinned outbound listener of protocol tcp to a
 *             service whose one instance is the backend (one hop, as HAProxy's)
 *   haproxy   HAProxy `mode tcp`, one thread, to the backend
 *
 * The backend is a child process (node:net): on each connection it echoes; a connection whose
 * first byte is "D" gets --mib MiB sent to it and closed (a download). From this process:
 *
 *   connections/s  --concurrency loops for --duration, each: connect, write one byte, read its
 *                  echo, close. The proxy's CPU (its process tree, from /proc) per connection.
 *   throughput     one connection reading --mib MiB as fast as it can, MB/s, --rounds times.
 *
 * Paths run in turn, their order reversed every other round; figures are medians over rounds.
 *
 *   node dist/bench/tcp.js [--duration 5s] [--concurrency 16] [--mib 256] [--rounds 3]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createConnection } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { adminTokenOf, startControl } from './lib.js';
import { posInt, seconds, startHaproxy, startSkeinProxy, stopTree, treeCpuSeconds, waitListening, tailOf } from './proxy-lib.js';

const BACKEND = `
const net = require('node:net');
const chunk = Buffer.alloc(256 * 1024, 97);
const mib = Number(process.env.MIB);
net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
  s.on('error', () => s.destroy());
  s.once('data', (d) => {
    if (d[0] !== 68) { s.write(d); s.pipe(s); return; }
    let left = mib * 1024 * 1024;
    const pump = () => { while (left > 0) { left -= chunk.length; if (!s.write(chunk)) { s.once('drain', pump); return; } } s.end(); };
    pump();
  });
}).listen(Number(process.env.PORT), '127.0.0.1', () => console.log('listening'));
`;

function flag(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? def) : def;
}

const durationS = seconds(flag('duration', '5s'), '--duration');
const concurrency = posInt(flag('concurrency', '16'), '--concurrency');
const mib = posInt(flag('mib', '256'), '--mib');
const rounds = posInt(flag('rounds', '3'), '--rounds');

/** One connection: connect, one byte, its echo, close. */
function oneConnection(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ host: '127.0.0.1', port, noDelay: true });
    s.once('connect', () => s.write('x'));
    s.once('data', () => s.destroy());
    s.once('error', reject);
    s.once('close', () => resolve());
  });
}

async function connectionsPerSecond(port: number, pid: number | null): Promise<{ rate: number; cpuUsPerConn: number | null }> {
  const cpu0 = pid === null ? 0 : treeCpuSeconds(pid);
  const end = performance.now() + durationS * 1000;
  let n = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        await oneConnection(port);
        n++;
      }
    }),
  );
  const s = (performance.now() - t0) / 1000;
  return { rate: n / s, cpuUsPerConn: pid === null ? null : ((treeCpuSeconds(pid) - cpu0) * 1e6) / n };
}

function download(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let got = 0;
    const s = createConnection({ host: '127.0.0.1', port });
    s.once('connect', () => s.write('D'));
    s.on('data', (d: Buffer) => (got += d.length));
    s.once('error', reject);
    s.once('close', () => {
      if (got !== mib * 1024 * 1024) reject(new Error(`downloaded ${got} bytes, not ${mib} MiB`));
      else resolve(got / 1e6 / ((performance.now() - t0) / 1000));
    });
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'skein-bench-tcp-'));
  const stops: Array<() => Promise<unknown>> = [];
  try {
    const backendPort = 20000 + Math.floor(Math.random() * 20000);
    const backend: ChildProcess = spawn(process.execPath, ['-e', BACKEND], { env: { ...process.env, PORT: String(backendPort), MIB: String(mib) }, stdio: ['ignore', 'pipe', 'pipe'] });
    stops.push(() => stopTree(backend));
    await waitListening(backendPort, backend, 'backend', tailOf(backend));
    const control = await startControl({ dataDir: 'none' });
    stops.push(() => control.stop());
    const skein = await startSkeinProxy(null, ['--control', control.url, '--mtls', 'off', '--workload', 'name=echo-port,service=bench,outbound=127.0.0.1:0,pin=echo,protocol=tcp'], 'info');
    stops.push(() => stopTree(skein.child));
    const token = await adminTokenOf(control.url);
    const put = await fetch(`${control.url}/v1/services/echo/instances/echo-1`, { method: 'PUT', headers: { 'content-type': 'application/json', ...(token === null ? {} : { authorization: `Bearer ${token}` }) }, body: JSON.stringify({ address: '127.0.0.1', port: backendPort }) });
    if (put.status >= 300) throw new Error(`registering the backend: ${put.status} ${await put.text()}`);
    const skeinPort = Number((skein.workloads[0]?.outbound as string).split(':').pop());
    const haproxy = await startHaproxy(
      dir,
      'haproxy-tcp',
      null,
      (port) => `frontend f\n  mode tcp\n  bind 127.0.0.1:${port}\n  default_backend b\n\nbackend b\n  mode tcp\n  server s1 127.0.0.1:${backendPort}\n`,
      'listening',
    );
    stops.push(() => stopTree(haproxy.child));
    // Until skein routes (its view of the echo service comes from the watch).
    for (let i = 0; ; i++) {
      try {
        await oneConnection(skeinPort);
        break;
      } catch (e) {
        if (i > 100) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const paths = [
      { name: 'direct', port: backendPort, pid: null as number | null },
      { name: 'skein', port: skeinPort, pid: skein.child.pid ?? null },
      { name: 'haproxy', port: haproxy.port, pid: haproxy.child.pid ?? null },
    ];
    const results = new Map<string, { rate: number[]; cpu: number[]; mbps: number[] }>(paths.map((p) => [p.name, { rate: [], cpu: [], mbps: [] }]));
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? paths : [...paths].reverse();
      for (const p of order) {
        const c = await connectionsPerSecond(p.port, p.pid);
        const t = await download(p.port);
        const res = results.get(p.name)!;
        res.rate.push(c.rate);
        if (c.cpuUsPerConn !== null) res.cpu.push(c.cpuUsPerConn);
        res.mbps.push(t);
      }
    }
    const direct = results.get('direct')!;
    const haproxyR = results.get('haproxy')!;
    console.log(`TCP (issue 17): ${rounds} rounds, ${durationS} s of connections at concurrency ${concurrency}, ${mib} MiB downloads; load ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    console.log('| path | connections/s | vs direct | vs haproxy | proxy CPU µs/connection | download MB/s | vs direct | vs haproxy |');
    console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const p of paths) {
      const x = results.get(p.name)!;
      const rate = median(x.rate);
      const mbps = median(x.mbps);
      console.log(
        `| ${p.name} | ${rate.toFixed(0)} | ${(rate / median(direct.rate)).toFixed(2)} | ${(rate / median(haproxyR.rate)).toFixed(2)} | ${x.cpu.length === 0 ? '-' : median(x.cpu).toFixed(0)} | ${mbps.toFixed(0)} | ${(mbps / median(direct.mbps)).toFixed(2)} | ${(mbps / median(haproxyR.mbps)).toFixed(2)} |`,
      );
    }
  } finally {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
