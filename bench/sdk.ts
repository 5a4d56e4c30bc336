/**
 * The SDK's cost (issue 17): requests/s and CPU per request of a Node client (this process) that
 * calls one HTTP backend (a node:http child process) three ways, side by side in one run:
 *
 *   direct  an undici Pool to the one endpoint (the floor: no mesh)
 *   sdk     undici requests to http://bench-svc/ through createMeshDispatcher (the engine in-process)
 *   proxy   an undici Pool to a `skein proxy`'s outbound listener (Host: bench-svc)
 *
 * For each: requests/s at a fixed concurrency, the client's CPU per request (this process's
 * process.cpuUsage), and for the proxy its own CPU per request (from /proc): what the SDK costs the
 * app against what the proxy costs the host. Rounds alternate the modes; medians are printed.
 *
 *   node dist/bench/sdk.js [--duration 5s] [--concurrency 32] [--rounds 3]
 */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { Pool, request, type Dispatcher } from 'undici';
import { adminTokenOf, api, machine, printResult, processCpuSeconds, round, runMain, startControl, table, tempDir, track, waitUntil, warnIfBusy } from './lib.js';
import { posInt, seconds, startSkeinProxy } from './proxy-lib.js';
import { createMeshDispatcher } from '../src/sdk/index.js';

const BACKEND = `
const http = require('node:http');
const s = http.createServer((req, res) => { req.resume(); req.on('end', () => res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 6 }).end('hello\\n')); });
s.keepAliveTimeout = 60000;
s.listen(0, '127.0.0.1', () => console.log(s.address().port));
`;

function flag(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  return i < 0 ? dflt : (process.argv[i + 1] ?? dflt);
}

interface Phase {
  rps: number;
  clientUs: number;
  proxyUs: number | null;
}

/** `concurrency` loops of `send` for `ms`: requests/s and CPU µs per request (this process, and `pid`'s). */
async function phase(ms: number, concurrency: number, send: () => Promise<void>, pid: number | null): Promise<Phase> {
  let n = 0;
  const end = performance.now() + ms;
  const cpu0 = process.cpuUsage();
  const other0 = pid === null ? 0 : processCpuSeconds(pid);
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        await send();
        n++;
      }
    }),
  );
  const s = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const clientUs = (cpu.user + cpu.system) / n;
  const proxyUs = pid === null ? null : ((processCpuSeconds(pid) - other0) * 1e6) / n;
  return { rps: n / s, clientUs, proxyUs };
}

async function drain(res: Dispatcher.ResponseData): Promise<void> {
  if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode}: ${await res.body.text()}`);
  await res.body.dump();
}

runMain(async () => {
  const durationMs = seconds(flag('--duration', '5s'), '--duration') * 1000;
  const concurrency = posInt(flag('--concurrency', '32'), '--concurrency');
  const rounds = posInt(flag('--rounds', '3'), '--rounds');
  const info = machine();
  warnIfBusy(info);
  const dir = tempDir('skein-bench-sdk-');
  const control = await startControl({ dataDir: dir.path });
  const backend = track(spawn(process.execPath, ['-e', BACKEND], { stdio: ['ignore', 'pipe', 'inherit'] }));
  const port = await new Promise<number>((resolve) => backend.stdout?.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
  const token = await adminTokenOf(control.url);
  const auth: Record<string, string> = token === null ? {} : { authorization: `Bearer ${token}` };
  await api(control.url, 'PUT', '/v1/services/bench-svc', { balancer: { kind: 'round-robin' } }, auth);
  await api(control.url, 'PUT', '/v1/services/bench-svc/instances/b-1', { address: '127.0.0.1', port }, auth);
  const proxy = await startSkeinProxy(null, ['--control', control.url, '--workload', 'name=client,outbound=127.0.0.1:0'], 'info');
  const outbound = proxy.workloads[0]?.outbound ?? '';
  const sdk = createMeshDispatcher({ control: control.url, service: 'client' });
  await sdk.ready();
  await waitUntil(() => sdk.mesh.endpoints('bench-svc').size === 1, 10_000, 'the SDK to see bench-svc');
  const direct = new Pool(`http://127.0.0.1:${port}`, { connections: concurrency });
  const viaProxy = new Pool(`http://${outbound}`, { connections: concurrency });
  const modes: Record<string, { send: () => Promise<void>; pid: number | null }> = {
    direct: { send: async () => drain(await direct.request({ path: '/', method: 'GET' })), pid: null },
    sdk: { send: async () => drain(await request('http://bench-svc/', { dispatcher: sdk })), pid: null },
    proxy: { send: async () => drain(await viaProxy.request({ path: '/', method: 'GET', headers: { host: 'bench-svc' } })), pid: proxy.child.pid ?? null },
  };
  // Warm-up: connections, JIT.
  for (const m of Object.values(modes)) await phase(1000, concurrency, m.send, null);
  const results: Record<string, Phase[]> = { direct: [], sdk: [], proxy: [] };
  for (let r = 0; r < rounds; r++) for (const [name, m] of Object.entries(modes)) results[name]?.push(await phase(durationMs, concurrency, m.send, m.pid));
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const out: Record<string, { rps: number; clientUsPerRequest: number; proxyUsPerRequest: number | null }> = {};
  for (const [name, ps] of Object.entries(results)) {
    const proxyUs = ps.every((p) => p.proxyUs !== null) ? median(ps.map((p) => p.proxyUs as number)) : null;
    out[name] = { rps: round(median(ps.map((p) => p.rps))), clientUsPerRequest: round(median(ps.map((p) => p.clientUs)), 1), proxyUsPerRequest: proxyUs === null ? null : round(proxyUs, 1) };
  }
  const d = out['direct'] as (typeof out)[string];
  table(
    `SDK against direct and the proxy: ${concurrency} concurrent requests, ${durationMs / 1000} s x ${rounds} rounds (medians), 1-byte-ish GET`,
    ['path', 'req/s', 'client CPU µs/req', 'proxy CPU µs/req', 'mesh CPU over direct µs/req'],
    Object.entries(out).map(([name, o]) => [name, o.rps, o.clientUsPerRequest, o.proxyUsPerRequest ?? '-', round(o.clientUsPerRequest + (o.proxyUsPerRequest ?? 0) - d.clientUsPerRequest, 1)]),
  );
  printResult('sdk', { concurrency, durationMs, rounds, loadavg1: info.loadavg1, ...out });
  await direct.close();
  await viaProxy.close();
  await sdk.close();
  await control.stop();
  dir.remove();
});
