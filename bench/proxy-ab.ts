/**
 * Two builds of `skein proxy` side by side: the CPU each spends per request, in alternating rounds
 * against the same backend, with the same client. For a change to the proxy's request path:
 *
 *   git worktree add /tmp/old <commit> && (cd /tmp/old && npm ci && npx tsc -p tsconfig.json)
 *   node dist/bench/proxy-ab.js --old /tmp/old [--requests 20000] [--rounds 4] [--concurrency 16]
 *
 * Each proxy has an inbound listener in front of a small node:http app (no control plane needed);
 * the client keeps `concurrency` requests in flight over keep-alive connections. CPU is the
 * proxy process's user + system time (/proc/PID/stat) over a round. Prints each round and the
 * ratio new / old of the medians.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(fileURLToPath(import.meta.url), '..', '..', '..');

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? (process.argv[i + 1] as string) : dflt;
}

const OLD = arg('old', '');
const REQUESTS = Number(arg('requests', '20000'));
const ROUNDS = Number(arg('rounds', '4'));
const CONCURRENCY = Number(arg('concurrency', '16'));
if (OLD === '' || !Number.isInteger(REQUESTS) || REQUESTS < 100 || !Number.isInteger(ROUNDS) || ROUNDS < 1 || !Number.isInteger(CONCURRENCY) || CONCURRENCY < 1) {
  console.error('usage: node dist/bench/proxy-ab.js --old DIR [--requests N>=100] [--rounds N>=1] [--concurrency N>=1]');
  process.exit(2);
}

const TICK = 100; // USER_HZ on Linux

function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return ((Number(f[11]) + Number(f[12])) * 1000) / TICK;
}

async function startProxy(root: string, appPort: number): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [join(root, 'bin', 'skein.js'), 'proxy', '--no-control', '--admin', '127.0.0.1:0', '--workload', `name=app-1,service=app,inbound=127.0.0.1:0,app=127.0.0.1:${appPort}`, '--log-level', 'info', '--access-log', 'off'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((res, rej) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (l) => {
      try {
        const j = JSON.parse(l) as { msg?: string; workloads?: Array<{ inbound: string }> };
        if (j.msg === 'proxy ready') res(Number(j.workloads?.[0]?.inbound.split(':').pop()));
      } catch {
        /* not JSON */
      }
    });
    child.once('exit', (c) => rej(new Error(`proxy in ${root} exited with ${c}`)));
  });
  return { child, port };
}

async function load(port: number, n: number): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  let sent = 0;
  const one = (): Promise<void> =>
    new Promise((res, rej) => {
      http
        .get({ port, agent, path: `/api/v1/items/${sent}?q=1`, headers: { host: 'app' } }, (r) => {
          r.resume();
          r.on('end', res);
        })
        .on('error', rej);
    });
  const worker = async () => {
    while (sent < n) {
      sent++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  agent.destroy();
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

const app = http.createServer((_req, res) => res.end('ok'));
await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
const appPort = (app.address() as { port: number }).port;
const builds = { old: await startProxy(resolve(OLD), appPort), new: await startProxy(ROOT, appPort) };
const perReq: Record<'old' | 'new', number[]> = { old: [], new: [] };
try {
  for (const b of ['old', 'new'] as const) await load(builds[b].port, 2000); // warm-up
  for (let r = 0; r < ROUNDS; r++) {
    for (const b of r % 2 === 0 ? (['old', 'new'] as const) : (['new', 'old'] as const)) {
      const pid = builds[b].child.pid as number;
      const c0 = cpuMs(pid);
      await load(builds[b].port, REQUESTS);
      const us = ((cpuMs(pid) - c0) * 1000) / REQUESTS;
      perReq[b].push(us);
      console.log(`round ${r + 1} ${b}: ${us.toFixed(1)} µs CPU per request`);
    }
  }
  const o = median(perReq.old);
  const n = median(perReq.new);
  console.log(`median: old ${o.toFixed(1)} µs, new ${n.toFixed(1)} µs per request; new/old ${(n / o).toFixed(2)}x`);
} finally {
  for (const b of Object.values(builds)) b.child.kill('SIGTERM');
  app.close();
}
