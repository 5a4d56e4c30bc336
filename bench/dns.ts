/**
 * DNS benchmark: Skein's DnsServer against BIND9 serving the same records, measured with dnsperf
 * side by side in one run.
 *
 *   node dist/bench/dns.js [--services 100] [--instances 4] [--duration 10] [--rounds 3] [--clients 4] [--outstanding 100] [--profile DIR]
 *
 * Skein runs in a child process (`--serve` mode: a registry over a MemoryStore and a DnsServer)
 * so the benchmark's own event loop never competes with it; BIND runs `named -g` over a static
 * zone file written from the same data set. Each server gets a short warm-up run, then measured
 * runs in alternating rounds (medians reported, with each server's CPU use). Both are killed at
 * the end, also on errors. `--profile DIR` writes a V8 CPU
 * profile of the Skein child into DIR.
 */
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { cpuPercent, machine, percentile, printResult, procSample, runMain, stopChild, table, tempDir, track, waitUntil, warnIfBusy } from './lib.js';
import { addressHex } from '../src/control/dns/zone.js';
import { DnsServer } from '../src/control/dns/server.js';
import { Registry } from '../src/control/registry/registry.js';
import { MemoryStore } from '../src/control/store/store.js';
import { parseInstance } from '../src/api/parse.js';
import { systemClock } from '../src/core/clock.js';

interface Dataset {
  services: Array<{ name: string; instances: Array<{ id: string; address: string; port: number }> }>;
}

/** S services of M instances each, on distinct IPv4 addresses. */
function dataset(services: number, instances: number): Dataset {
  return {
    services: Array.from({ length: services }, (_, s) => ({
      name: `svc-${s}`,
      instances: Array.from({ length: instances }, (_, i) => ({ id: `i${i}`, address: `10.${s >> 8}.${s & 255}.${i + 1}`, port: 8000 + i })),
    })),
  };
}

/** Queries dnsperf cycles through: A and SRV of every service, and an NXDOMAIN name for every fifth. */
function queryFile(ds: Dataset): string {
  const lines: string[] = [];
  ds.services.forEach((s, i) => {
    lines.push(`${s.name}.service.skein A`, `${s.name}.service.skein SRV`);
    if (i % 5 === 0) lines.push(`nosuch-${i}.service.skein A`);
  });
  return lines.join('\n') + '\n';
}

/** The same records as a BIND zone file (what Skein answers, weight 1 and priority 1). */
function zoneFile(ds: Dataset, ttl: number): string {
  const lines = [`$TTL ${ttl}`, `@ IN SOA ns.skein. hostmaster.skein. 1 3600 600 86400 ${ttl}`, '@ IN NS ns.skein.', 'ns IN A 127.0.0.1'];
  const targets = new Map<string, string>();
  for (const s of ds.services) {
    for (const inst of s.instances) {
      const hex = addressHex(inst.address);
      lines.push(`${s.name}.service IN A ${inst.address}`, `${s.name}.service IN SRV 1 1 ${inst.port} ${hex}.addr`);
      targets.set(hex, inst.address);
    }
  }
  for (const [hex, address] of targets) lines.push(`${hex}.addr IN A ${address}`);
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------- --serve: the Skein side

/** Serves until SIGTERM (bench/lib.ts exits on it; --cpu-prof still writes its profile). */
async function serve(services: number, instances: number): Promise<void> {
  const registry = await Registry.open({ clock: systemClock, store: new MemoryStore() });
  for (const s of dataset(services, instances).services) {
    for (const inst of s.instances) await registry.register(parseInstance({ service: s.name, ...inst }));
  }
  const server = new DnsServer({ registry, host: '127.0.0.1', port: 0 });
  const { port } = await server.start();
  process.stdout.write(JSON.stringify({ port }) + '\n');
}

// ---------------------------------------------------------------- the driver

/** A port free for both UDP and TCP right now (BIND needs it in its config file). */
async function freePort(): Promise<number> {
  for (;;) {
    const udp = createSocket('udp4');
    const port = await new Promise<number>((resolve) => udp.bind(0, '127.0.0.1', () => resolve(udp.address().port)));
    const tcp = createServer();
    const ok = await new Promise<boolean>((resolve) => {
      tcp.once('error', () => resolve(false));
      tcp.listen(port, '127.0.0.1', () => resolve(true));
    });
    await new Promise<void>((resolve) => udp.close(() => resolve()));
    if (ok) {
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
      return port;
    }
  }
}

/** Runs a command to its end, collecting its output. */
function runCmd(cmd: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = track(spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, out }));
  });
}

async function answersSoa(port: number): Promise<boolean> {
  const r = await runCmd('dig', ['@127.0.0.1', '-p', String(port), '+time=1', '+tries=1', '+short', 'skein', 'SOA']);
  return r.code === 0 && r.out.includes('ns.skein.');
}

interface PerfResult {
  qps: number;
  avgLatencyMs: number;
  lostPercent: number;
}

interface Run extends PerfResult {
  /** The server's CPU use during the run, in percent of one core. */
  cpuPercent: number;
}

async function dnsperf(port: number, file: string, seconds: number, clients: number, outstanding: number): Promise<PerfResult> {
  const args = ['-s', '127.0.0.1', '-p', String(port), '-d', file, '-l', String(seconds), '-c', String(clients), '-q', String(outstanding)];
  const r = await runCmd('dnsperf', args);
  const num = (re: RegExp) => Number(re.exec(r.out)?.[1] ?? NaN);
  const qps = num(/Queries per second:\s+([\d.]+)/);
  if (r.code !== 0 || Number.isNaN(qps)) throw new Error(`dnsperf failed (exit ${r.code}):\n${r.out}`);
  return { qps, avgLatencyMs: num(/Average Latency \(s\):\s+([\d.]+)/) * 1000, lostPercent: num(/Queries lost:\s+\d+ \(([\d.]+)%\)/) };
}

const { values } = parseArgs({
  options: {
    serve: { type: 'boolean', default: false },
    services: { type: 'string', default: '100' },
    instances: { type: 'string', default: '4' },
    duration: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
    clients: { type: 'string', default: '4' },
    outstanding: { type: 'string', default: '100' },
    profile: { type: 'string' },
  },
});
const services = Number(values.services);
const instances = Number(values.instances);

async function main(): Promise<void> {
  const seconds = Number(values.duration);
  const rounds = Number(values.rounds);
  const clients = Number(values.clients);
  const outstanding = Number(values.outstanding);
  const info = machine();
  warnIfBusy(info);
  const dir = tempDir('skein-bench-dns-');
  const ds = dataset(services, instances);
  const queries = join(dir.path, 'queries.txt');
  writeFileSync(queries, queryFile(ds));

  // BIND9: authoritative only, same records, same TTL, glue in the additional section like ours.
  const bindPort = await freePort();
  writeFileSync(join(dir.path, 'skein.zone'), zoneFile(ds, 5));
  writeFileSync(
    join(dir.path, 'named.conf'),
    `options {
  directory "${dir.path}";
  pid-file none;
  listen-on port ${bindPort} { 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  allow-query { any; };
  minimal-responses no-auth;
  dnssec-validation no;
  notify no;
};
controls { };
zone "skein" { type primary; file "${join(dir.path, 'skein.zone')}"; };
`,
  );
  const bind = track(spawn('/usr/sbin/named', ['-g', '-c', join(dir.path, 'named.conf')], { stdio: ['ignore', 'ignore', 'pipe'] }));
  let bindLog = '';
  bind.stderr?.on('data', (d: Buffer) => (bindLog = (bindLog + d.toString()).slice(-4000)));

  const nodeArgs = values.profile === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${values.profile}`];
  const skein = track(
    spawn(process.execPath, [...nodeArgs, fileURLToPath(import.meta.url), '--serve', '--services', String(services), '--instances', String(instances)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    }),
  );
  const skeinPort = await new Promise<number>((resolve, reject) => {
    createInterface({ input: skein.stdout as NodeJS.ReadableStream }).once('line', (l) => resolve((JSON.parse(l) as { port: number }).port));
    skein.once('exit', (code) => reject(new Error(`skein --serve exited with ${code}`)));
  });

  try {
    await waitUntil(() => answersSoa(bindPort), 20_000, `named to answer on port ${bindPort}`, 100).catch((e: Error) => {
      throw new Error(`${e.message}\n${bindLog}`);
    });
    await waitUntil(() => answersSoa(skeinPort), 20_000, 'skein to answer', 100);

    const servers = { bind9: { port: bindPort, pid: bind.pid as number }, skein: { port: skeinPort, pid: skein.pid as number } };
    for (const { port } of Object.values(servers)) await dnsperf(port, queries, 2, clients, outstanding); // warm-up (JIT, caches)
    // Alternating rounds, so that a change in the machine's other load hits both sides alike.
    const runs: Record<keyof typeof servers, Run[]> = { bind9: [], skein: [] };
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? (['bind9', 'skein'] as const) : (['skein', 'bind9'] as const);
      for (const name of order) {
        const { port, pid } = servers[name];
        const before = procSample(pid);
        const perf = await dnsperf(port, queries, seconds, clients, outstanding);
        runs[name].push({ ...perf, cpuPercent: cpuPercent(before, procSample(pid)) });
      }
    }
    const summary = (list: Run[]) => {
      const med = (f: (r: Run) => number) => percentile(list.map(f), 50);
      return { qps: med((r) => r.qps), minQps: Math.min(...list.map((r) => r.qps)), maxQps: Math.max(...list.map((r) => r.qps)), avgLatencyMs: med((r) => r.avgLatencyMs), lostPercent: med((r) => r.lostPercent), cpuPercent: med((r) => r.cpuPercent) };
    };
    const bindR = summary(runs.bind9);
    const skeinR = summary(runs.skein);
    const ratio = skeinR.qps / bindR.qps;
    const row = (name: string, r: ReturnType<typeof summary>) => [name, r.qps, `${Math.round(r.minQps)}-${Math.round(r.maxQps)}`, r.avgLatencyMs, r.cpuPercent, r.lostPercent];
    table(
      `DNS over UDP: dnsperf -l ${seconds} -c ${clients} -q ${outstanding}, ${rounds} alternating rounds (medians); ${services} services x ${instances} instances, A/SRV/NXDOMAIN mix; ${info.cpus} cores (${info.cpuModel})`,
      ['server', 'queries/s', 'range', 'avg latency ms', 'server CPU %', 'lost %'],
      [row('BIND9 (named)', bindR), row('Skein DnsServer', skeinR), ['Skein / BIND9', Math.round(ratio * 100) / 100, '', '', '', '']],
    );
    printResult('dns', { machine: info, services, instances, seconds, rounds, clients, outstanding, bind9: bindR, skein: skeinR, ratio, runs });
  } finally {
    await Promise.all([stopChild(skein), stopChild(bind)]);
    dir.remove();
  }
}

if (values.serve) {
  serve(services, instances).catch((e: unknown) => {
    process.stderr.write(`dns bench server failed: ${String(e)}\n`);
    process.exit(1);
  });
} else {
  runMain(main);
}
