/**
 * Taps that never read (issue 11 §5): what 300 taps on one proxy that never read their stream
 * (`/tap?service=web&headers=1&bodies=1`), fed 1,200 POSTs of 4 KiB, add to the proxy's memory.
 * Side by side in one run, each on a fresh proxy process:
 *
 *   - `no taps`: the same 1,200 POSTs without any tap (what the traffic alone adds);
 *   - `defaults`: 300 taps asked for, the proxy's defaults (32 taps, 256 KiB each);
 *   - `--max-taps 300`: all 300 accepted, each bounded by its 256 KiB buffer;
 *   - `baseline` (with `--baseline BIN`): another build's `skein proxy`, e.g. the one before the
 *     bounds (`git archive <rev> | tar -x -C /tmp/base`, built there), given its bin/skein.js.
 *
 *   npm run build && node dist/bench/taps.js [--taps 300] [--posts 1200] [--body 4096] [--baseline /tmp/base/bin/skein.js]
 *
 * The app (an echo server) and the clients run in this process; the control plane and each proxy
 * are child processes. A tap that never reads is a TCP connection that sends its request, reads
 * the response head and then stops reading. The proxy's RSS (VmRSS) is read from /proc before
 * the taps open, after they opened, and once it has settled after the POSTs (no change over 1 s,
 * at most 15 s); its peak (VmHWM) too. Every process is stopped at the end.
 */
import { spawn } from 'node:child_process';
import http from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { SKEIN_BIN, api, machine, printResult, round, runMain, sleep, startControl, stopChild, table, track, waitUntil, warnIfBusy, type Control } from './lib.js';

const { values: argv } = parseArgs({
  options: {
    taps: { type: 'string', default: '300' },
    posts: { type: 'string', default: '1200' },
    body: { type: 'string', default: '4096' },
    baseline: { type: 'string' },
  },
});
const TAPS = Number(argv.taps);
const POSTS = Number(argv.posts);
const BODY = 'b'.repeat(Number(argv.body));
const MiB = 1024 * 1024;

interface Config {
  name: string;
  bin: string;
  taps: number;
  args: string[];
}

interface Outcome {
  name: string;
  tapsAsked: number;
  tapsOpen: number;
  tapsRefused: number;
  rssBeforeMiB: number;
  rssTapsOpenMiB: number;
  rssAfterMiB: number;
  growthMiB: number;
  peakGrowthMiB: number;
  postSeconds: number;
  droppedLines: number | null;
}

function memory(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** The echo app behind the proxy's inbound listener. */
function startApp(): Promise<http.Server> {
  const s = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
      res.end(body);
    });
  });
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve(s)));
}

interface ProxyChild {
  pid: number;
  admin: string;
  outbound: number;
  inbound: number;
  stop(): Promise<unknown>;
}

/** `skein proxy` with an outbound workload "client" and an inbound one in front of the app (instance web-1 of "web"). */
async function startProxy(cfg: Config, control: Control, appPort: number): Promise<ProxyChild> {
  const argv = [cfg.bin, 'proxy', '--control', control.url, '--admin', '127.0.0.1:0', '--workload', 'name=client,outbound=127.0.0.1:0', '--workload', `name=web-1,service=web,inbound=127.0.0.1:0,app=127.0.0.1:${appPort}`, '--log-level', 'info', ...cfg.args];
  const child = track(spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] }));
  const tail: string[] = [];
  child.stderr?.resume();
  const ready = await new Promise<{ admin: string; workloads: Array<{ name: string; outbound: string | null; inbound: string | null }> }>((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      tail.push(line);
      if (!line.includes('proxy ready')) return;
      resolve(JSON.parse(line) as never);
    });
    child.once('exit', (code) => reject(new Error(`skein proxy (${cfg.name}) exited with ${code}:\n${tail.slice(-20).join('\n')}`)));
  });
  const port = (hp: string | null | undefined) => Number(hp?.slice(hp.lastIndexOf(':') + 1));
  const w = (name: string) => ready.workloads.find((x) => x.name === name);
  return { pid: child.pid as number, admin: `http://${ready.admin}`, outbound: port(w('client')?.outbound), inbound: port(w('web-1')?.inbound), stop: () => stopChild(child) };
}

/** A POST through the outbound listener to "web". */
function post(agent: http.Agent, port: number, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/tapped', agent, headers: { host: 'web', 'content-length': Buffer.byteLength(body), 'x-api-key': 'k' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function postAll(port: number, n: number): Promise<number> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  let next = 0;
  let failed = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      if ((await post(agent, port, BODY)) !== 200) failed++;
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  agent.destroy();
  return failed;
}

/** A tap that reads its response head and then never reads again; resolves with the status. */
function holdTap(admin: string): Promise<{ socket: Socket; status: number }> {
  const u = new URL(`${admin}/tap?service=web&headers=1&bodies=1`);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(u.port), u.hostname, () => socket.write(`GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\n\r\n`));
    socket.once('data', (chunk: Buffer) => {
      socket.pause();
      resolve({ socket, status: Number(/^HTTP\/1\.1 (\d{3})/.exec(chunk.toString('latin1'))?.[1] ?? 0) });
    });
    socket.once('error', reject);
  });
}

/** Waits until the RSS has not changed by more than 1 MiB over a second (at most 15 s). */
async function settle(pid: number): Promise<void> {
  const deadline = Date.now() + 15_000;
  let last = memory(pid).rss;
  while (Date.now() < deadline) {
    await sleep(1000);
    const now = memory(pid).rss;
    if (Math.abs(now - last) < MiB) return;
    last = now;
  }
}

async function runConfig(cfg: Config, control: Control, appPort: number): Promise<Outcome> {
  const proxy = await startProxy(cfg, control, appPort);
  try {
    const reg = await api(control.url, 'PUT', '/v1/services/web/instances/web-1', { address: '127.0.0.1', port: proxy.inbound });
    if (reg.status >= 300) throw new Error(`registering web-1: ${reg.status} ${JSON.stringify(reg.body)}`);
    await waitUntil(async () => (await post(new http.Agent(), proxy.outbound, 'warm').catch(() => 0)) === 200, 20_000, `web through the ${cfg.name} proxy`, 100);
    await postAll(proxy.outbound, 100); // warm-up: pools, JIT
    await settle(proxy.pid);
    const before = memory(proxy.pid);
    const taps = [];
    for (let i = 0; i < cfg.taps; i++) taps.push(await holdTap(proxy.admin));
    const open = taps.filter((t) => t.status === 200).length;
    for (const t of taps) if (t.status !== 200) t.socket.destroy();
    const tapsOpen = memory(proxy.pid);
    const t0 = performance.now();
    const failed = await postAll(proxy.outbound, POSTS);
    const postSeconds = (performance.now() - t0) / 1000;
    if (failed > 0) process.stdout.write(`note: ${failed} of ${POSTS} POSTs failed (${cfg.name})\n`);
    await settle(proxy.pid);
    const after = memory(proxy.pid);
    const stats = await api(proxy.admin, 'GET', '/debug/taps').catch(() => ({ status: 0, body: null }));
    for (const t of taps) t.socket.destroy();
    return {
      name: cfg.name,
      tapsAsked: cfg.taps,
      tapsOpen: open,
      tapsRefused: cfg.taps - open,
      rssBeforeMiB: round(before.rss / MiB, 1),
      rssTapsOpenMiB: round(tapsOpen.rss / MiB, 1),
      rssAfterMiB: round(after.rss / MiB, 1),
      growthMiB: round((after.rss - before.rss) / MiB, 1),
      peakGrowthMiB: round((after.hwm - before.rss) / MiB, 1),
      postSeconds: round(postSeconds, 2),
      droppedLines: stats.status === 200 ? (stats.body as { dropped: number }).dropped : null,
    };
  } finally {
    await proxy.stop();
  }
}

async function main(): Promise<void> {
  const info = machine();
  warnIfBusy(info);
  const configs: Config[] = [
    { name: 'no taps', bin: SKEIN_BIN, taps: 0, args: [] },
    { name: 'defaults', bin: SKEIN_BIN, taps: TAPS, args: [] },
    { name: `--max-taps ${TAPS}`, bin: SKEIN_BIN, taps: TAPS, args: ['--max-taps', String(TAPS)] },
  ];
  if (argv.baseline !== undefined) configs.push({ name: 'baseline', bin: argv.baseline, taps: TAPS, args: [] });
  const control = await startControl({ dataDir: 'none' });
  const app = await startApp();
  const appPort = (app.address() as AddressInfo).port;
  const outcomes: Outcome[] = [];
  try {
    for (const cfg of configs) {
      process.stdout.write(`${cfg.name}: ${cfg.taps} taps that never read, ${POSTS} POSTs of ${BODY.length} bytes...\n`);
      outcomes.push(await runConfig(cfg, control, appPort));
    }
  } finally {
    await control.stop();
    app.close();
  }
  const ref = outcomes.find((o) => o.name === 'baseline');
  table(
    `proxy memory, ${TAPS} taps that never read, ${POSTS} POSTs of ${BODY.length} bytes (headers and bodies tapped)`,
    ['config', 'taps open', 'refused', 'RSS before MiB', 'taps open MiB', 'after MiB', 'growth MiB', 'peak growth MiB', 'POSTs s', 'dropped lines', ...(ref ? ['growth / baseline'] : [])],
    outcomes.map((o) => [o.name, o.tapsOpen, o.tapsRefused, o.rssBeforeMiB, o.rssTapsOpenMiB, o.rssAfterMiB, o.growthMiB, o.peakGrowthMiB, o.postSeconds, o.droppedLines ?? '-', ...(ref ? [round(o.growthMiB / ref.growthMiB, 3)] : [])]),
  );
  printResult('taps', { machine: info, taps: TAPS, posts: POSTS, bodyBytes: BODY.length, outcomes });
}

runMain(main);
